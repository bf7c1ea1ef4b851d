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
#include <cstddef>
#include <string>

namespace kinora {

// The process's cancel token, set by the first of those signals.
std::atomic<bool>& cancel_requested();

// Installs the handlers; idempotent.
void install_cancel_signals();

// The signal that set the token (0: none), and the exit status a program ends
// with for it: 130 for SIGINT, 143 for SIGTERM, 129 for SIGHUP (128 + signal).
int cancel_signal();
int cancel_exit_status();

// Files mapped into memory (io/safetensors.h maps every weight file). Reading a
// page of one that the file no longer has (it was shortened or replaced on
// disk while mapped, or its disk failed) raises SIGBUS, which would end the
// process without a word; for an address in a registered mapping the process
// instead prints "kinora: FILE: could not be read while in use (…)", removes
// the registered temporaries and exits with status 135 (128 + SIGBUS). Other
// SIGBUS faults keep the default action. Registering installs the handler.
void register_mapped_file(const void* begin, std::size_t size, const std::string& path);
void unregister_mapped_file(const void* begin);

}  // namespace kinora
