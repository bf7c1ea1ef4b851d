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
// CPU's flags allow. It leaves OpenBLAS's own choice of any later core alone,
// and it leaves everything alone where OPENBLAS_CORETYPE is set (the user's
// choice) or the BLAS is not a run-time-dispatching OpenBLAS (MKL, a build
// for one core).
#include <string>

namespace kinora {

struct CpuBlas {
  std::string library;   // "OpenBLAS 0.3.21" (openblas_get_config), empty when not OpenBLAS
  std::string detected;  // the kernels OpenBLAS picked when it loaded ("Prescott")
  std::string core;      // the kernels in use now
  bool chosen = false;   // whether choose_cpu_blas_kernels() replaced `detected`
};

// Does the replacement, once per process (later calls return the first one's
// result). It must run before any other thread calls into the BLAS: each
// program's main() calls it through configure_threads().
const CpuBlas& choose_cpu_blas_kernels();

// The OpenBLAS kernel set for a CPU with these /proc/cpuinfo flags ("flags :
// fpu … avx512f …"): "Cooperlake" (AVX-512 with bf16), "SkylakeX" (AVX-512),
// "Haswell" (AVX2 and FMA), "Sandybridge" (AVX), else "" (keep what it has).
std::string blas_core_for_flags(const std::string& flags_line);

// "OpenBLAS 0.3.21, kernels Cooperlake (it picked Prescott)" for benchmark
// headers; "" where the BLAS is not OpenBLAS.
std::string cpu_blas_description();

}  // namespace kinora
