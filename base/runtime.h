#pragma once
// Process-wide set-up of LibTorch, done once by each program's main().
#include <string>

namespace kinora {

// LibTorch starts with one intra-op thread on some machines (Debian's build
// does here). Use every core unless KINORA_THREADS says otherwise.
// Returns the thread count in force.
int configure_threads();

// "Kinora 0.1.0, LibTorch 1.13.0 (CPU)" — for --version and embedded metadata.
std::string version_string();
std::string torch_version();

}  // namespace kinora
