#pragma once
// Where a run's time goes, operator by operator: LibTorch's operators timed by
// RecordFunction callbacks on the calling thread (their self time: each one's
// less the operators it called), and what remains of the wall time outside
// every operator (Kinora's own CPU loops, the glue). LibTorch's own profiler
// is not used: its C++ interface changed between 1.13 and 2.x. On a GPU the
// figures are launch times, so speed_bench profiles CPU runs only.
#include <ATen/record_function.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <map>
#include <string>
#include <vector>

namespace kinora::bench {

class OpProfile {
 public:
  OpProfile() {
    state().clear();
    handle_ = at::addThreadLocalCallback(
        at::RecordFunctionCallback(&OpProfile::enter, &OpProfile::leave).needsInputs(false));
    t0_ = Clock::now();
  }
  ~OpProfile() { stop(); }
  OpProfile(const OpProfile&) = delete;
  OpProfile& operator=(const OpProfile&) = delete;

  void stop() {
    if (!running_) return;
    wall_ = seconds(Clock::now() - t0_);
    at::removeCallback(handle_);
    running_ = false;
  }

  // A markdown table of the `top` operators by self time, then the rest.
  std::string table(int top) {
    stop();
    std::vector<std::pair<std::string, Entry>> ops(state().ops.begin(), state().ops.end());
    std::sort(ops.begin(), ops.end(),
              [](const auto& a, const auto& b) { return a.second.self > b.second.self; });
    double in_ops = 0;
    for (const auto& [name, e] : ops) in_ops += e.self;
    std::string out = "| operator | calls | self s | share |\n|---|---|---|---|\n";
    auto row = [&](const std::string& name, long calls, double s) {
      char buf[96];
      std::snprintf(buf, sizeof buf, " | %.3f | %.1f %% |\n", s, wall_ > 0 ? 100 * s / wall_ : 0.0);
      out += "| " + name + " | " + (calls > 0 ? std::to_string(calls) : "") + buf;
    };
    double listed = 0;
    long rest_calls = 0;
    for (int i = 0; i < static_cast<int>(ops.size()); ++i) {
      if (i < top) {
        row(ops[i].first, ops[i].second.calls, ops[i].second.self);
        listed += ops[i].second.self;
      } else {
        rest_calls += ops[i].second.calls;
      }
    }
    if (static_cast<int>(ops.size()) > top) row("(other operators)", rest_calls, in_ops - listed);
    row("(outside every operator)", 0, std::max(0.0, wall_ - in_ops));
    char buf[64];
    std::snprintf(buf, sizeof buf, "| **wall** | | %.3f | |\n", wall_);
    return out + buf;
  }

 private:
  using Clock = std::chrono::steady_clock;
  struct Entry {
    long calls = 0;
    double self = 0;
  };
  struct Frame {
    std::string name;
    Clock::time_point start;
    double children = 0;
  };
  struct State {
    std::map<std::string, Entry> ops;
    std::vector<Frame> stack;
    void clear() { ops.clear(), stack.clear(); }
  };
  static State& state() {
    thread_local State s;
    return s;
  }
  static double seconds(Clock::duration d) { return std::chrono::duration<double>(d).count(); }

  static std::unique_ptr<at::ObserverContext> enter(const at::RecordFunction& fn) {
    state().stack.push_back({fn.name(), Clock::now(), 0});
    return nullptr;
  }
  static void leave(const at::RecordFunction&, at::ObserverContext*) {
    auto& s = state();
    if (s.stack.empty()) return;
    const Frame f = std::move(s.stack.back());
    s.stack.pop_back();
    const double d = seconds(Clock::now() - f.start);
    auto& e = s.ops[f.name];
    ++e.calls;
    e.self += d - f.children;
    if (!s.stack.empty()) s.stack.back().children += d;
  }

  at::CallbackHandle handle_;
  Clock::time_point t0_;
  double wall_ = 0;
  bool running_ = true;
};

}  // namespace kinora::bench
