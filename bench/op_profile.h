#pragma once
// Where a run's time goes, operator by operator: LibTorch's operators timed by
// RecordFunction callbacks on the calling thread (their self time: each one's
// less the operators it called), and what remains of the wall time outside
// every operator (Kinora's own CPU loops and kernels, the glue). On a CUDA
// device each operator's time is the GPU's: a CUDA event recorded on the
// stream that was current when the profile began, as the operator is entered
// and another as it is left, read once the run has ended (the kernels it
// queued between the two, and any time the GPU waited for the host in
// between). Operators queued on another stream (block swap's copies ahead)
// overlap that one's and are left out. LibTorch's own profiler is not used:
// its C++ interface changed between 1.13 and 2.x.
#include <ATen/record_function.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <torch/torch.h>

#ifdef KINORA_CUDA
#include <ATen/cuda/CUDAContext.h>
#include <ATen/cuda/CUDAEvent.h>
#include <c10/cuda/CUDAException.h>
#endif

namespace kinora::bench {

class OpProfile {
 public:
  // `device`: where the operators run; on a CUDA device (in a CUDA build)
  // they are timed on its current stream, elsewhere by the host's clock.
  explicit OpProfile(torch::Device device = torch::kCPU) {
    state().clear();
#ifdef KINORA_CUDA
    if (device.is_cuda()) {
      state().gpu = true;
      state().stream = at::cuda::getCurrentCUDAStream(device.index());
      state().first = state().event();
    }
#else
    (void)device;
#endif
    handle_ = at::addThreadLocalCallback(
        at::RecordFunctionCallback(&OpProfile::enter, &OpProfile::leave).needsInputs(false));
    t0_ = Clock::now();
  }
  ~OpProfile() {
    stop();
  }
  OpProfile(const OpProfile&) = delete;
  OpProfile& operator=(const OpProfile&) = delete;

  void stop() {
    if (!running_) return;
    wall_ = seconds(Clock::now() - t0_);
    at::removeCallback(handle_);
    running_ = false;
#ifdef KINORA_CUDA
    // The GPU's times, read now that the run's work is queued: each call's
    // span, its operator's self time that less its callees' spans.
    auto& s = state();
    if (!s.gpu) return;
    const int last = s.event();
    // Every stream's work done (a copy queued ahead on another stream too).
    C10_CUDA_CHECK(cudaDeviceSynchronize());
    wall_ = s.span(s.first, last);
    std::vector<double> span(s.calls.size()), inner(s.calls.size(), 0.0);
    for (std::size_t i = 0; i < s.calls.size(); ++i) {
      const auto& c = s.calls[i];
      if (c.end < 0) continue;  // not left before the profile stopped
      span[i] = s.span(c.start, c.end);
      if (c.parent >= 0) inner[c.parent] += span[i];
    }
    for (std::size_t i = 0; i < s.calls.size(); ++i) {
      if (s.calls[i].end < 0) continue;
      auto& e = s.ops[s.calls[i].name];
      ++e.calls;
      e.self += span[i] - inner[i];
    }
    s.calls.clear();
    s.events.clear();
#endif
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
    int call = -1;  // on a GPU: its entry in State::calls
  };
  struct State {
    std::map<std::string, Entry> ops;
    std::vector<Frame> stack;
#ifdef KINORA_CUDA
    // On a GPU: each call's events (indices into `events`) and its caller.
    struct Call {
      std::string name;
      int start = -1, end = -1, parent = -1;
    };
    bool gpu = false;
    std::optional<at::cuda::CUDAStream> stream;  // the stream timed
    int first = -1;
    std::vector<Call> calls;
    std::vector<std::unique_ptr<at::cuda::CUDAEvent>> events;
    // A timing event recorded on the current stream now; its index.
    int event() {
      events.push_back(std::make_unique<at::cuda::CUDAEvent>(cudaEventDefault));
      events.back()->record(*stream);
      return static_cast<int>(events.size()) - 1;
    }
    // Whether work queued now goes to the stream timed.
    bool on_stream() const {
      return at::cuda::getCurrentCUDAStream(stream->device_index()) == *stream;
    }
    double span(int a, int b) const {
      return events[a]->elapsed_time(*events[b]) / 1e3;
    }
    void clear() {
      ops.clear(), stack.clear(), calls.clear(), events.clear();
      gpu = false, stream.reset();
    }
#else
    void clear() {
      ops.clear(), stack.clear();
    }
#endif
  };
  static State& state() {
    thread_local State s;
    return s;
  }
  static double seconds(Clock::duration d) {
    return std::chrono::duration<double>(d).count();
  }

  static std::unique_ptr<at::ObserverContext> enter(const at::RecordFunction& fn) {
    auto& s = state();
#ifdef KINORA_CUDA
    if (s.gpu) {
      if (!s.on_stream()) {  // another stream's: not timed
        s.stack.push_back({fn.name(), Clock::now(), 0, -1});
        return nullptr;
      }
      const int parent = s.stack.empty() ? -1 : s.stack.back().call;
      s.calls.push_back({fn.name(), s.event(), -1, parent});
      s.stack.push_back({fn.name(), Clock::now(), 0, static_cast<int>(s.calls.size()) - 1});
      return nullptr;
    }
#endif
    s.stack.push_back({fn.name(), Clock::now(), 0, -1});
    return nullptr;
  }
  static void leave(const at::RecordFunction&, at::ObserverContext*) {
    auto& s = state();
    if (s.stack.empty()) return;
    const Frame f = std::move(s.stack.back());
    s.stack.pop_back();
#ifdef KINORA_CUDA
    if (s.gpu) {
      if (f.call >= 0 && f.call < static_cast<int>(s.calls.size())) s.calls[f.call].end = s.event();
      return;
    }
#endif
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
