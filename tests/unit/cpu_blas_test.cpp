// The BLAS kernels chosen for the CPU (base/cpu_blas.h).
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <array>
#include <cmath>
#include <cstdlib>

#include "base/cpu_blas.h"
#include "base/runtime.h"

using namespace kinora;

namespace {
const std::string kEmeraldRapids =
    "flags\t: fpu sse2 avx avx2 fma avx512f avx512dq avx512cd avx512bw avx512vl avx512_bf16 "
    "amx_bf16";
}

TEST(CpuBlas, TheKernelsFollowTheCpuFlags) {
  EXPECT_EQ(blas_core_for_flags(kEmeraldRapids), "SkylakeX");
  EXPECT_EQ(
      blas_core_for_flags("flags\t: avx avx2 fma avx512f avx512cd avx512bw avx512dq avx512vl"),
      "SkylakeX");
  // AVX-512F alone (Knights Landing) lacks the instructions SkylakeX's kernels use.
  EXPECT_EQ(blas_core_for_flags("flags\t: avx avx2 fma avx512f avx512cd"), "Haswell");
  EXPECT_EQ(blas_core_for_flags("flags\t: sse2 avx avx2 fma bmi2"), "Haswell");
  EXPECT_EQ(blas_core_for_flags("flags\t: sse2 avx avx2"), "Sandybridge");
  EXPECT_EQ(blas_core_for_flags("flags\t: fpu sse2 ssse3"), "");
  EXPECT_EQ(blas_core_for_flags(""), "");
}

TEST(CpuBlas, OnlyAFallbackIsReplacedAndNeverTheUsersChoice) {
  EXPECT_EQ(blas_core_to_choose("Prescott", kEmeraldRapids, false), "SkylakeX");
  EXPECT_EQ(blas_core_to_choose("Barcelona", "flags\t: avx avx2 fma", false), "Haswell");
  EXPECT_EQ(blas_core_to_choose("Prescott", kEmeraldRapids, true), "");     // OPENBLAS_CORETYPE
  EXPECT_EQ(blas_core_to_choose("Cooperlake", kEmeraldRapids, false), "");  // OpenBLAS knew it
  EXPECT_EQ(blas_core_to_choose("Zen", kEmeraldRapids, false), "");
  EXPECT_EQ(blas_core_to_choose("Prescott", "flags\t: fpu sse2 sse3", false), "");
}

// On this machine: the kernels in use after main()'s configure_threads().
TEST(CpuBlas, AnOpenBlasFallbackIsReplacedAndStillMultipliesRight) {
  const auto& b = choose_cpu_blas_kernels();  // test_main's configure_threads() ran it
  if (b.core.empty()) GTEST_SKIP() << "the BLAS is not a run-time-dispatching OpenBLAS";
  const auto want =
      blas_core_to_choose(b.detected, cpu_flags_line(), std::getenv("OPENBLAS_CORETYPE"));
  if (!want.empty()) {
    EXPECT_TRUE(b.chosen) << "OpenBLAS kept " << b.detected << " on a CPU with " << want
                          << "'s flags";
    EXPECT_EQ(b.core, want);
  } else {
    EXPECT_FALSE(b.chosen);
  }
  EXPECT_NE(cpu_blas_description().find(b.core), std::string::npos);

  // The kernels set up again still compute: float32 products of odd shapes and
  // transposed operands against a float64 reference.
  torch::manual_seed(0);
  for (const auto& [m, k, n] : {std::array<int64_t, 3>{1, 7, 3}, {37, 4096, 64}, {129, 257, 515}}) {
    const auto a = torch::randn({m, k}), w = torch::randn({n, k});
    const auto want_y = torch::matmul(a.to(torch::kDouble), w.to(torch::kDouble).t());
    const auto bound = 1e-5 * std::sqrt(static_cast<double>(k)) * 4;
    EXPECT_LT((torch::matmul(a, w.t()) - want_y).abs().max().item<double>(), bound)
        << m << "×" << k;
    EXPECT_LT((torch::matmul(w, a.t()).t() - want_y).abs().max().item<double>(), bound)
        << m << "×" << k;
    EXPECT_LT((torch::addmm(torch::ones({n}), a, w.t()) - 1 - want_y).abs().max().item<double>(),
              bound);
  }
}
