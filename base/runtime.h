#pragma once
// Process-wide set-up of LibTorch, done once by each program's main().
#include <filesystem>
#include <set>
#include <string>

namespace kinora {

// The CPUs this process may use: its affinity mask, capped by a cgroup CPU
// quota (a container's or a Slurm job's limit).
int usable_cpus();
// How many of them other work is not using now: usable_cpus() less the other
// runnable tasks on the machine (sampled from /proc/stat), at least 1.
int idle_cpus();

// The intra-op thread count: KINORA_THREADS when set, else idle_cpus(). On a
// machine shared with busy processes, more threads than idle CPUs do not add
// speed, they take it: each parallel region waits at its barrier for a thread
// another process has preempted, and OpenMP's waiting workers spin (the
// README's main command beside two busy processes on two cores: 45 s with two
// threads, 3.1 s with the one this picks; 1.5 s alone; bench/contention.sh).
// Called by each program's main() and again before each render (the load
// changes between the jobs of a batch or the studio's queue). Returns the
// thread count in force. The first call also picks the BLAS library's float32
// kernels (base/cpu_blas.h) and installs the CPU tensor cache
// (base/cpu_memory.h).
int configure_threads();

// The CPU's feature flags, /proc/cpuinfo's first "flags" line ("flags\t: fpu
// … avx512f …"; every core lists the same); "" where there is none.
std::string cpu_flags_line();
// The flags of such a line, as words ("avx512f", …; the "flags" key and its
// colon among them).
std::set<std::string> cpu_flag_words(const std::string& flags_line);

// "Kinora 0.1.0, LibTorch 1.13.0 (CPU)" — for --version and embedded metadata.
std::string version_string();
std::string torch_version();

// The folder of the running program (from /proc/self/exe; empty if unknown):
// where the shim library and an installed program's share/ are found.
std::filesystem::path executable_dir();

}  // namespace kinora
