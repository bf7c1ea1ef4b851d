#include "base/cpu_blas.h"

#include <dlfcn.h>

#include <cstdlib>
#include <fstream>
#include <mutex>
#include <set>
#include <sstream>

namespace kinora {

namespace {

// The kernel sets OpenBLAS falls back to for a CPU it does not recognise
// (Intel: Prescott; AMD: Barcelona) or takes for one without AVX; a CPU whose
// flags allow more gets those replaced.
bool is_fallback(const std::string& core) {
  return core == "Prescott" || core == "Barcelona" || core == "Core2" || core == "Nehalem" ||
         core == "Unknown";
}

std::string cpu_flags_line() {
  std::ifstream in("/proc/cpuinfo");
  for (std::string line; std::getline(in, line);)
    if (line.rfind("flags", 0) == 0) return line;  // as every core
  return "";
}

// OpenBLAS's entry points for its run-time dispatch (exported by its
// DYNAMIC_ARCH builds); null where the process has no such OpenBLAS.
struct OpenBlasDispatch {
  using Name = char* (*)();
  using Void = void (*)();
  Name corename = nullptr, config = nullptr;
  Void init = nullptr, quit = nullptr;
  OpenBlasDispatch() {
    corename = reinterpret_cast<Name>(::dlsym(RTLD_DEFAULT, "gotoblas_corename"));
    config = reinterpret_cast<Name>(::dlsym(RTLD_DEFAULT, "openblas_get_config"));
    init = reinterpret_cast<Void>(::dlsym(RTLD_DEFAULT, "gotoblas_dynamic_init"));
    quit = reinterpret_cast<Void>(::dlsym(RTLD_DEFAULT, "gotoblas_dynamic_quit"));
  }
  bool dispatches() const { return corename && init && quit; }
};

}  // namespace

std::string blas_core_for_flags(const std::string& flags_line) {
  std::set<std::string> flags;
  std::istringstream words(flags_line);
  for (std::string w; words >> w;) flags.insert(w);
  const auto has = [&](std::initializer_list<const char*> names) {
    for (const char* n : names)
      if (!flags.count(n)) return false;
    return true;
  };
  if (has({"avx512f", "avx512cd", "avx512bw", "avx512dq", "avx512vl"}))
    return has({"avx512_bf16"}) ? "Cooperlake" : "SkylakeX";
  if (has({"avx2", "fma"})) return "Haswell";
  if (has({"avx"})) return "Sandybridge";
  return "";
}

const CpuBlas& choose_cpu_blas_kernels() {
  static CpuBlas result;
  static std::once_flag once;
  std::call_once(once, [] {
    const OpenBlasDispatch blas;
    if (blas.config) {  // "OpenBLAS 0.3.21 NO_LAPACKE DYNAMIC_ARCH …": its name and version
      std::istringstream words(blas.config());
      std::string name, version;
      words >> name >> version;
      result.library = name + " " + version;
    }
    if (!blas.dispatches()) return;
    result.detected = result.core = blas.corename();
    if (std::getenv("OPENBLAS_CORETYPE") || !is_fallback(result.detected)) return;
    const auto better = blas_core_for_flags(cpu_flags_line());
    if (better.empty()) return;
    // gotoblas_dynamic_init() reads OPENBLAS_CORETYPE and, once quit has
    // cleared its choice, sets the named kernels up (their block sizes
    // included); the work buffers it allocates later are sized for any core.
    ::setenv("OPENBLAS_CORETYPE", better.c_str(), 1);
    blas.quit();
    blas.init();
    ::unsetenv("OPENBLAS_CORETYPE");
    result.core = blas.corename();
    result.chosen = result.core != result.detected;
  });
  return result;
}

std::string cpu_blas_description() {
  const auto& b = choose_cpu_blas_kernels();
  if (b.library.empty() && b.core.empty()) return "";
  std::string s = b.library.empty() ? "OpenBLAS" : b.library;
  if (!b.core.empty()) s += ", kernels " + b.core;
  if (b.chosen) s += " (it picked " + b.detected + ")";
  return s;
}

}  // namespace kinora
