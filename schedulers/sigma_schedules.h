#pragma once
// Sigma schedules as pure functions (no solver state), in float64 unless noted.
#include <cstdint>
#include <vector>

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

}  // namespace kinora::schedulers
