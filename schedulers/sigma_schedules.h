#pragma once
// Sigma schedules as pure functions (no solver state), in float64 unless noted.
#include <cstdint>
#include <vector>

#include "schedulers/scheduler.h"

namespace kinora::schedulers {

// numpy.linspace(start, stop, num) with its exact arithmetic (i·step + start,
// endpoint set to stop), so that schedules match the Python references bit for bit.
std::vector<double> np_linspace(double start, double stop, int num);

// σ' = s·σ / (1 + (s−1)·σ)
double static_shift(double sigma, double shift);

// FLUX: μ linear in the image token count, from (256, base) to (4096, max).
double flux_mu(int64_t image_seq_len, double base_shift = 0.5, double max_shift = 1.15);

// Wan's flow UniPC: linspace(σ_max, 0, N+1) without its last entry, with
// σ_max = float32(0.999) as the reference's 1000-step table gives it, shifted.
// Returns the N shifted sigmas (the caller appends the final 0).
std::vector<double> wan_unipc_sigmas(int steps, double shift);

// Wan's flow DPM-Solver++: linspace(1, 0, N+1) without its last entry, shifted.
std::vector<double> wan_dpmpp_sigmas(int steps, double shift);

// ---- Noise-prediction (DDPM) models: SD, SDXL -----------------------------
// The schedules of diffusers' Euler, Euler ancestral and DPM-Solver multistep
// schedulers, with their float32 / float64 arithmetic.

// σ_t = √((1 − ᾱ_t) / ᾱ_t), t = 0 … train_steps − 1, of the "scaled_linear"
// training schedule β = linspace(√β_start, √β_end, train_steps)² (SD and SDXL:
// 0.00085, 0.012, 1000), computed with LibTorch in float32 as the reference is.
// Increasing in t.
std::vector<float> scaled_linear_sigmas(int train_steps = 1000, double beta_start = 0.00085,
                                        double beta_end = 0.012);

// numpy.interp(x, arange(fp.size()), fp) in float64.
double interp_at(double x, const std::vector<float>& fp);

// The timesteps of the Euler schedulers, decreasing: leading
// round(arange(N)·(T div N)) + offset, trailing round(arange(T, 0, −T/N)) − 1,
// linspace linspace(0, T − 1, N); float32.
std::vector<float> euler_timesteps(int steps, TimestepSpacing spacing, int steps_offset,
                                   int train_steps = 1000);
// The timesteps of DPM-Solver multistep, decreasing, int64: leading and
// linspace space N + 1 points and drop the last (leading: T div (N + 1));
// trailing as Euler's.
std::vector<int64_t> dpm_timesteps(int steps, TimestepSpacing spacing, int steps_offset,
                                   int train_steps = 1000);

// Karras et al. 2022, eq. 5: (σ_max^(1/ρ) + r·(σ_min^(1/ρ) − σ_max^(1/ρ)))^ρ for
// r = linspace(0, 1, steps); float64.
std::vector<double> karras_sigmas(double sigma_min, double sigma_max, int steps, double rho = 7.0);

// The fractional training step of σ: log σ interpolated linearly between its
// two neighbours in log_sigmas (increasing, float32), as diffusers'
// _sigma_to_t computes it (float32 weights under NumPy 1's casting rules).
double sigma_to_t(double sigma, const std::vector<float>& log_sigmas);

}  // namespace kinora::schedulers
