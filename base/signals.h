#pragma once
// What the command-line programs do on the signals that end a job: Ctrl-C
// (SIGINT), SIGTERM (`timeout`, `kill`, Slurm's preemption and time limit) and
// SIGHUP (a closed terminal). The first asks the running job to stop: the
// token it polls is set, and the job unwinds, removing its temporaries, within
// a step. A second ends the process at once, removing the registered
// temporaries first (base/files.h). SIGXFSZ (the file-size limit of `ulimit -f`)
// is ignored, so that the write that crosses the limit fails like one on a full
// disk and is handled as one, instead of killing the process mid-file.
#include <atomic>

namespace kinora {

// The process's cancel token, set by the first of those signals.
std::atomic<bool>& cancel_requested();

// Installs the handlers; idempotent.
void install_cancel_signals();

// The signal that set the token (0: none), and the exit status a program ends
// with for it: 130 for SIGINT, 143 for SIGTERM, 129 for SIGHUP (128 + signal).
int cancel_signal();
int cancel_exit_status();

}  // namespace kinora
