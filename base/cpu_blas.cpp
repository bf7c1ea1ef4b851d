#include "base/cpu_blas.h"

#include "base/runtime.h"

#include <dlfcn.h>

#include <cstdlib>
#include <initializer_list>
#include <mutex>
#include <sstream>

namespace kinora {

namespace {

// The kernel sets OpenBLAS gives a CPU it does not recognise (Prescott on
// x86-64) or one without AVX; a CPU whose flags allow more gets those
// replaced.
bool is_fallback(const std::string& core) {
  return core == "Prescott" || core == "Barcelona" || core == "Core2" || core == "Nehalem" ||
         core == "Unknown";
}

// Whether this process may run the instructions of `core`'s kernels: the CPU
// has them and the system saves their registers (GCC's check; a kernel set
// named in OPENBLAS_CORETYPE gets no such check from OpenBLAS).
bool process_runs(const std::string& core) {
#if defined(__x86_64__) && defined(__GNUC__)
  if (core == "SkylakeX")
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512cd") &&
           __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512dq") &&
           __builtin_cpu_supports("avx512vl");
  if (core == "Haswell") return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  if (core == "Sandybridge") return __builtin_cpu_supports("avx");
#endif
  return false;
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
  const auto flags = cpu_flag_words(flags_line);
  const auto has = [&](std::initializer_list<const char*> names) {
    for (const char* n : names)
      if (!flags.count(n)) return false;
    return true;
  };
  // OpenBLAS's Cooperlake set adds bf16 BLAS routines LibTorch does not call;
  // its float32 kernels are SkylakeX's (and 0.3.21 does not accept the name).
  if (has({"avx512f", "avx512cd", "avx512bw", "avx512dq", "avx512vl"})) return "SkylakeX";
  if (has({"avx2", "fma"})) return "Haswell";
  if (has({"avx"})) return "Sandybridge";
  return "";
}

std::string blas_core_to_choose(const std::string& detected, const std::string& flags_line,
                                bool coretype_in_environment) {
  if (coretype_in_environment || !is_fallback(detected)) return "";
  return blas_core_for_flags(flags_line);
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
    const auto better = blas_core_to_choose(result.detected, cpu_flags_line(),
                                            std::getenv("OPENBLAS_CORETYPE") != nullptr);
    if (better.empty() || !process_runs(better)) return;
    // gotoblas_dynamic_quit() forgets the kernels picked at load;
    // gotoblas_dynamic_init() then sets up those OPENBLAS_CORETYPE names (its
    // block sizes included). The work buffers OpenBLAS allocates are one size
    // for every kernel set.
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
