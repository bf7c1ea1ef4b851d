#pragma once
// Process-wide set-up of LibTorch, done once by each program's main().
#include <filesystem>
#include <string>

namespace kinora {

// LibTorch starts with one intra-op thread on some machines (Debian's build
// does here). Use every core unless KINORA_THREADS says otherwise.
// Returns the thread count in force.
int configure_threads();

// "Kinora 0.1.0, LibTorch 1.13.0 (CPU)" — for --version and embedded metadata.
std::string version_string();
std::string torch_version();

// The folder of the running program (from /proc/self/exe; empty if unknown):
// where the shim library and an installed program's share/ are found.
std::filesystem::path executable_dir();

}  // namespace kinora
