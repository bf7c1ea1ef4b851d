// Wan's flow-matching DPM-Solver++ 2M (midpoint), x0-prediction, first and last
// steps of order 1, final σ = 0. Reference: Wan2.1 wan/utils/fm_solvers.py with
// the sigmas of get_sampling_sigmas().
#include "schedulers/flow_math.h"
#include "schedulers/sigma_schedules.h"
#include "schedulers/solvers.h"

namespace kinora::schedulers {
namespace {
using detail::lambda_of;

class FlowDpmpp2M final : public Scheduler {
 public:
  std::string name() const override { return "flow_dpmpp_2m"; }

 protected:
  void build_schedule(int steps, const ScheduleOptions& o) override {
    auto s = wan_dpmpp_sigmas(steps, o.mu ? 1.0 : o.shift);
    if (o.mu)
      for (auto& v : s) v = v > 0 ? std::exp(*o.mu) / (std::exp(*o.mu) + (1.0 / v - 1.0)) : 0.0;
    detail::wan_schedule(s, sigmas_, timesteps_);
  }

  void reset_history() override {
    history_.clear();
    lower_order_nums_ = 0;
  }

  torch::Tensor solve(const torch::Tensor& v, int i, const torch::Tensor& x) override {
    const auto sigma_s0 = sigmas_[i], sigma_t = sigmas_[i + 1];
    history_.push(x - sigma_s0 * v);  // x0 prediction
    const bool last = i == steps_ - 1;
    torch::Tensor out;
    if (sigma_t.item<float>() == 0.0f) {
      out = history_.newest.clone();  // σ_t = 0: the update is the x0 prediction
    } else {
      const auto alpha_t = 1 - sigma_t;
      const auto h = lambda_of(sigma_t) - lambda_of(sigma_s0);
      const auto coef = alpha_t * (torch::exp(-h) - 1.0);
      out = sigma_t / sigma_s0 * x - coef * history_.newest;
      if (lower_order_nums_ >= 1 && !last) {
        const auto h_0 = lambda_of(sigma_s0) - lambda_of(sigmas_[i - 1]);
        const auto r0 = h_0 / h;
        const auto D1 = (1.0 / r0) * (history_.newest - history_.older);
        out = out - 0.5 * coef * D1;
      }
    }
    lower_order_nums_ = std::min(lower_order_nums_ + 1, 2);
    return out;
  }

 private:
  detail::History history_;
  int lower_order_nums_ = 0;
};
}  // namespace

std::unique_ptr<Scheduler> make_flow_dpmpp_2m() {
  return std::make_unique<FlowDpmpp2M>();
}

}  // namespace kinora::schedulers
