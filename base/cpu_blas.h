#pragma once
// The float32 matrix kernels of the BLAS library LibTorch calls on the CPU.
//
// Debian's OpenBLAS is built for every x86-64 core and picks its kernels when
// it loads, from the CPU's family and model. A model it does not know gets its
// oldest 64-bit kernels (SSE3, "Prescott"): OpenBLAS 0.3.21 does not know
// Emerald Rapids (family 6, model 207), and a Xeon of that kind then multiplies
// float32 matrices at 20–30 GFLOP/s on two cores instead of the 75–180 its
// AVX-512 kernels reach there (bench/RESULTS.md, "Float32 matrix kernels").
// choose_cpu_blas_kernels() replaces that fallback with the best kernels the
// CPU and the system allow. It leaves OpenBLAS's own choice of any later core
// alone, and it leaves everything alone where OPENBLAS_CORETYPE is set (the
// user's choice) or the BLAS is not a run-time-dispatching OpenBLAS (MKL, a
// build for one core).
#include <string>

namespace kinora {

struct CpuBlas {
  std::string library;   // "OpenBLAS 0.3.21" (openblas_get_config), empty when not OpenBLAS
  std::string detected;  // the kernels OpenBLAS picked when it loaded ("Prescott")
  std::string core;      // the kernels in use now
  bool chosen = false;   // whether choose_cpu_blas_kernels() replaced `detected`
};

// Does the replacement, once per process (later calls return the first one's
// result). It must run before any other thread calls into the BLAS, and
// before other threads may read the environment (it sets OPENBLAS_CORETYPE
// for a moment): each program's main() calls it first, through
// configure_threads().
const CpuBlas& choose_cpu_blas_kernels();

// The OpenBLAS kernel set for a CPU with these /proc/cpuinfo flags ("flags :
// fpu … avx512f …"), by names OpenBLAS 0.3.21 and later accept in
// OPENBLAS_CORETYPE: "SkylakeX" (AVX-512 F, CD, BW, DQ and VL), "Haswell"
// (AVX2 and FMA), "Sandybridge" (AVX), else "" (none better than SSE3).
std::string blas_core_for_flags(const std::string& flags_line);

// What choose_cpu_blas_kernels() decides: the kernels to replace `detected`
// with, or "" to keep it (a kernel set of a later core than the fallbacks,
// OPENBLAS_CORETYPE set by the user, or flags that allow nothing better).
std::string blas_core_to_choose(const std::string& detected, const std::string& flags_line,
                                bool coretype_in_environment);

// "OpenBLAS 0.3.21, kernels SkylakeX (it picked Prescott)" for benchmark
// headers; "" where the BLAS is not OpenBLAS.
std::string cpu_blas_description();

}  // namespace kinora
