#include "schedulers/sigma_schedules.h"

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

}  // namespace kinora::schedulers
