#include "schedulers/sigma_schedules.h"

#include <torch/torch.h>

#include <algorithm>
#include <cmath>

namespace kinora::schedulers {

std::vector<double> np_linspace(double start, double stop, int num) {
  std::vector<double> y(static_cast<std::size_t>(num));
  if (num == 1) {
    y[0] = start;
    return y;
  }
  const double step = (stop - start) / static_cast<double>(num - 1);
  for (int i = 0; i < num; ++i)
    y[static_cast<std::size_t>(i)] = static_cast<double>(i) * step + start;
  y.back() = stop;
  return y;
}

double static_shift(double sigma, double shift) {
  return shift * sigma / (1.0 + (shift - 1.0) * sigma);
}

double flux_mu(int64_t image_seq_len, double base_shift, double max_shift) {
  // Same operation order as the reference's get_lin_function.
  const double x1 = 256, x2 = 4096;
  const double m = (max_shift - base_shift) / (x2 - x1);
  const double b = base_shift - m * x1;
  return m * static_cast<double>(image_seq_len) + b;
}

std::vector<double> wan_unipc_sigmas(int steps, double shift) {
  // The reference's training table: alphas = linspace(1, 1/1000, 1000) reversed,
  // sigmas = 1 − alphas as float32; σ_max is its first entry read back as a double.
  const double alpha_min = np_linspace(1.0, 1.0 / 1000.0, 1000).back();
  const double sigma_max = static_cast<double>(static_cast<float>(1.0 - alpha_min));
  auto s = np_linspace(sigma_max, 0.0, steps + 1);
  s.pop_back();
  for (auto& v : s) v = static_shift(v, shift);
  return s;
}

std::vector<double> wan_dpmpp_sigmas(int steps, double shift) {
  auto s = np_linspace(1.0, 0.0, steps + 1);
  s.pop_back();
  for (auto& v : s) v = static_shift(v, shift);
  return s;
}

// ---- Noise-prediction models ---------------------------------------------

std::vector<float> scaled_linear_sigmas(int train_steps, double beta_start, double beta_end) {
  // The reference's tensor operations, in its order: betas = linspace(√β0, √β1)², ᾱ =
  // cumprod(1 − β), σ = ((1 − ᾱ) / ᾱ)^0.5, all float32.
  const auto betas = torch::linspace(std::pow(beta_start, 0.5), std::pow(beta_end, 0.5),
                                     train_steps, torch::kFloat32)
                         .pow(2);
  const auto alphas_cumprod = torch::cumprod(1 - betas, 0);
  const auto sigmas = ((1 - alphas_cumprod) / alphas_cumprod).pow(0.5).contiguous();
  const float* p = sigmas.data_ptr<float>();
  return std::vector<float>(p, p + train_steps);
}

double interp_at(double x, const std::vector<float>& fp) {
  const auto last = static_cast<double>(fp.size() - 1);
  if (x <= 0) return fp.front();
  if (x >= last) return fp.back();
  const double j = std::floor(x);
  const auto k = static_cast<std::size_t>(j);
  if (x == j) return fp[k];
  // numpy's slope·(x − x_j) + y_j, the slope over a unit step
  const double slope = static_cast<double>(fp[k + 1]) - static_cast<double>(fp[k]);
  return slope * (x - j) + static_cast<double>(fp[k]);
}

namespace {
// numpy.arange(T, 0, −T/N).round(): the length is ceil(T / (T/N)), which floating
// point makes N + 1 for some N (61, 103, …); the extra entry rounds to 0 and is
// dropped so that there are N timesteps. numpy fills entry i as T + i·δ with
// δ = (T − T/N) − T.
std::vector<double> trailing_points(int steps, int train_steps) {
  const double start = train_steps, step = -static_cast<double>(train_steps) / steps;
  const double delta = (start + step) - start;
  std::vector<double> out;
  for (int i = 0; i < steps; ++i)
    out.push_back(std::nearbyint(i == 0 ? start : i == 1 ? start + step : start + i * delta));
  return out;
}
}  // namespace

std::vector<float> euler_timesteps(int steps, TimestepSpacing spacing, int steps_offset,
                                   int train_steps) {
  std::vector<float> t;
  switch (spacing) {
    case TimestepSpacing::Leading: {
      const int ratio = train_steps / steps;
      for (int i = steps - 1; i >= 0; --i)
        t.push_back(static_cast<float>(std::nearbyint(static_cast<double>(i) * ratio)) +
                    static_cast<float>(steps_offset));
      break;
    }
    case TimestepSpacing::Trailing:
      for (double v : trailing_points(steps, train_steps))
        t.push_back(static_cast<float>(v) - 1.0f);
      break;
    case TimestepSpacing::Linspace: {
      const auto y = np_linspace(0.0, train_steps - 1, steps);
      for (auto it = y.rbegin(); it != y.rend(); ++it) t.push_back(static_cast<float>(*it));
      break;
    }
  }
  return t;
}

std::vector<int64_t> dpm_timesteps(int steps, TimestepSpacing spacing, int steps_offset,
                                   int train_steps) {
  std::vector<int64_t> t;
  switch (spacing) {
    case TimestepSpacing::Leading: {
      const int ratio = train_steps / (steps + 1);
      for (int i = steps; i >= 1; --i)
        t.push_back(static_cast<int64_t>(std::nearbyint(static_cast<double>(i) * ratio)) +
                    steps_offset);
      break;
    }
    case TimestepSpacing::Trailing:
      for (double v : trailing_points(steps, train_steps)) t.push_back(static_cast<int64_t>(v) - 1);
      break;
    case TimestepSpacing::Linspace: {
      const auto y = np_linspace(0.0, train_steps - 1, steps + 1);
      for (int i = steps; i >= 1; --i)
        t.push_back(static_cast<int64_t>(std::nearbyint(y[static_cast<std::size_t>(i)])));
      break;
    }
  }
  return t;
}

std::vector<double> karras_sigmas(double sigma_min, double sigma_max, int steps, double rho) {
  const double min_inv_rho = std::pow(sigma_min, 1.0 / rho);
  const double max_inv_rho = std::pow(sigma_max, 1.0 / rho);
  auto s = np_linspace(0.0, 1.0, steps);
  for (auto& r : s) r = std::pow(max_inv_rho + r * (min_inv_rho - max_inv_rho), rho);
  return s;
}

double sigma_to_t(double sigma, const std::vector<float>& log_sigmas) {
  const double log_sigma = std::log(std::max(sigma, 1e-10));
  // The last entry at or below log σ (0 when none), at most the second to last.
  std::size_t low = 0;
  for (std::size_t j = 0; j < log_sigmas.size(); ++j)
    if (log_sigma - static_cast<double>(log_sigmas[j]) >= 0) low = j;
  low = std::min(low, log_sigmas.size() - 2);
  const float lo = log_sigmas[low], hi = log_sigmas[low + 1];
  // The reference's neighbours are float32 arrays of one entry, so NumPy 1 keeps
  // (lo − log σ) / (lo − hi) in float32; only the final mix is float64.
  const float w = std::clamp((lo - static_cast<float>(log_sigma)) / (lo - hi), 0.0f, 1.0f);
  return static_cast<double>(1.0f - w) * static_cast<double>(low) +
         static_cast<double>(w) * static_cast<double>(low + 1);
}

}  // namespace kinora::schedulers
