// Wan's flow-matching UniPC (the Wan 2.1/2.2 default sampler): multistep
// predictor (UniP) and corrector (UniC), order 2, B(h) = expm1(−h) ("bh2"),
// x0-prediction, lower order on the first and last steps, final σ = 0.
// Reference: Wan2.1 wan/utils/fm_solvers_unipc.py.
#include "schedulers/flow_math.h"
#include "schedulers/sigma_schedules.h"
#include "schedulers/solvers.h"

namespace kinora::schedulers {
namespace {
using detail::f32;
using detail::lambda_of;

class FlowUniPC final : public Scheduler {
 public:
  std::string name() const override { return "flow_unipc"; }

 protected:
  void build_schedule(int steps, const ScheduleOptions& o) override {
    std::vector<double> s;
    if (o.mu) {
      s = np_linspace(wan_unipc_sigmas(steps, 1.0).front(), 0.0, steps + 1);
      s.pop_back();
      for (auto& v : s) v = std::exp(*o.mu) / (std::exp(*o.mu) + (1.0 / v - 1.0));
    } else {
      s = wan_unipc_sigmas(steps, o.shift);
    }
    detail::wan_schedule(s, sigmas_, timesteps_);
  }

  void reset_history() override {
    history_.clear();
    last_sample_ = torch::Tensor();
    lower_order_nums_ = 0;
    this_order_ = 0;
  }

  torch::Tensor solve(const torch::Tensor& v, int i, const torch::Tensor& sample) override {
    const auto sigma = sigmas_[i];
    const auto m = sample - sigma * v;  // x0 prediction at the uncorrected sample
    auto x = sample;
    if (i > 0 && last_sample_.defined()) x = correct(m, last_sample_, sample, i, this_order_);
    history_.push(m);
    this_order_ = std::min({2, steps_ - i, lower_order_nums_ + 1});
    last_sample_ = x;
    auto next = predict(x, i, this_order_);
    lower_order_nums_ = std::min(lower_order_nums_ + 1, 2);
    return next;
  }

 private:
  // UniP: x_{i+1} from the corrected x_i and the history (newest = m_i).
  torch::Tensor predict(const torch::Tensor& x, int i, int order) const {
    const auto& m0 = history_.newest;
    const auto sigma_t = sigmas_[i + 1], sigma_s0 = sigmas_[i];
    // Final step (σ = 0, λ = +∞): the update reduces to the x0 prediction.
    if (sigma_t.item<float>() == 0.0f) return m0.clone();
    const auto alpha_t = 1 - sigma_t;
    const auto h = lambda_of(sigma_t) - lambda_of(sigma_s0);
    const auto hh = -h;  // x0-prediction
    const auto h_phi_1 = torch::expm1(hh);
    const auto B_h = torch::expm1(hh);  // bh2
    auto x_t = sigma_t / sigma_s0 * x - alpha_t * h_phi_1 * m0;
    if (order == 2) {
      const auto rk = (lambda_of(sigmas_[i - 1]) - lambda_of(sigma_s0)) / h;
      const auto D1 = (history_.older - m0) / rk;
      x_t = x_t - alpha_t * B_h * (0.5 * D1);  // order 2 uses ρ = 0.5
    }
    return x_t;
  }

  // UniC: refines x_i with the new x0 prediction m_i (no extra model call).
  // History still ends at m_{i−1} here.
  torch::Tensor correct(const torch::Tensor& model_t, const torch::Tensor& last_sample,
                        const torch::Tensor& this_sample, int i, int order) const {
    const auto& m0 = history_.newest;  // m_{i-1}
    const auto sigma_t = sigmas_[i], sigma_s0 = sigmas_[i - 1];
    const auto alpha_t = 1 - sigma_t;
    const auto h = lambda_of(sigma_t) - lambda_of(sigma_s0);
    const auto hh = -h;
    const auto h_phi_1 = torch::expm1(hh);
    const auto B_h = torch::expm1(hh);
    const auto x_t_ = sigma_t / sigma_s0 * last_sample - alpha_t * h_phi_1 * m0;
    const auto D1_t = model_t - m0;
    if (order == 1) return x_t_ - alpha_t * B_h * (0.5 * D1_t);

    // Order 2: solve [[1, 1], [r, 1]]·ρ = [g1/B, 2·g2/B].
    const auto rk = (lambda_of(sigmas_[i - 2]) - lambda_of(sigma_s0)) / h;
    const auto D1 = (history_.older - m0) / rk;
    auto h_phi_k = h_phi_1 / hh - 1;
    const auto b1 = h_phi_k * 1 / B_h;
    h_phi_k = h_phi_k / hh - 0.5;
    const auto b2 = h_phi_k * 2 / B_h;
    const double r = rk.item<double>(), B1 = b1.item<float>(), B2 = b2.item<float>();
    const double det = 1.0 - r;  // det [[1, 1], [r, 1]]
    const auto rho0 = f32((B1 - B2) / det);
    const auto rho1 = f32((B2 - r * B1) / det);
    const auto corr_res = rho0 * D1;
    return x_t_ - alpha_t * B_h * (corr_res + rho1 * D1_t);
  }

  detail::History history_;
  torch::Tensor last_sample_;
  int lower_order_nums_ = 0;
  int this_order_ = 0;
};
}  // namespace

std::unique_ptr<Scheduler> make_flow_unipc() {
  return std::make_unique<FlowUniPC>();
}

}  // namespace kinora::schedulers
