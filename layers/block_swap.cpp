#include "layers/block_swap.h"

#include <c10/core/Event.h>
#include <c10/core/Stream.h>
#include <c10/core/StreamGuard.h>
#include <c10/core/impl/VirtualGuardImpl.h>

#include <algorithm>

#include "base/error.h"
#include "base/torch_compat.h"

namespace kinora::layers {

std::vector<torch::Tensor> tensors_of(const torch::nn::Module& m) {
  auto all = m.parameters(/*recurse=*/true);
  for (auto& b : m.buffers(/*recurse=*/true)) all.push_back(b);
  return all;
}

int64_t tensor_bytes(const torch::nn::Module& m) {
  int64_t n = 0;
  for (const auto& t : tensors_of(m)) n += static_cast<int64_t>(t.nbytes());
  return n;
}

// A host block's stay on the device: the module's tensors, the host data they
// return to, and the device copies (made ahead on the copy stream, `ready` when
// that copy is done, or made in order on the compute stream).
struct BlockSwap::Visit {
  std::vector<torch::Tensor> slots, host, device;
  std::unique_ptr<c10::Event> ready;
  bool visiting = false;
  bool unpinnable = false;  // the driver refused: copies from pageable memory
};

namespace {
// Host tensor `h` copied into page-locked memory of its exact size, so that
// copies from it run asynchronously; undefined where it cannot pin.
torch::Tensor pinned_copy(const torch::Tensor& h) {
  auto buffer = compat::pinned_host_bytes(static_cast<int64_t>(h.nbytes()));
  if (!buffer.defined()) return {};
  auto p = buffer.view(h.scalar_type()).view(h.sizes());
  p.copy_(h);
  return p;
}
// The stream work on `device` is queued on now (the forward's).
c10::Stream current_stream(const torch::Device& device) {
  return c10::impl::VirtualGuardImpl(device.type()).getStream(device);
}
// Tensors below this stay in pageable memory: their copies take as long
// either way.
constexpr std::size_t kPinFrom = std::size_t{1} << 16;
}  // namespace

struct BlockSwap::Streams {
  c10::Stream copy;
};

BlockSwap::BlockSwap(std::vector<std::shared_ptr<torch::nn::Module>> blocks, int64_t swapped,
                     torch::Device device)
    : blocks_(std::move(blocks)),
      swapped_(static_cast<std::size_t>(
          std::clamp<int64_t>(swapped, 0, static_cast<int64_t>(blocks_.size())))),
      device_(device) {
  for (std::size_t i = 0; i < swapped_; ++i) {
    for (const auto& t : tensors_of(*blocks_[i]))
      if (!t.is_cpu())
        throw Error("block swap: block " + std::to_string(i) + " is not in host memory");
    visits_.push_back(std::make_unique<Visit>());
  }
  if (device_.is_cuda()) {
    const c10::impl::VirtualGuardImpl impl(device_.type());
    streams_ = std::make_unique<Streams>(Streams{impl.getStreamFromGlobalPool(device_)});
  }
}

BlockSwap::~BlockSwap() {
  try {
    release();
  } catch (...) {
    // A device error while tearing down: the module keeps what it has.
  }
}

void BlockSwap::bring(std::size_t i, bool ahead) {
  torch::NoGradGuard no_grad;
  auto& v = *visits_[i];
  v.slots = tensors_of(*blocks_[i]);
  v.host.clear();
  v.device.clear();
  v.ready.reset();
  for (auto& t : v.slots) {
    auto h = t.data();
    // Pinned on its first visit (a weight a LoRA replaced, on the next).
    if (streams_ && !v.unpinnable && h.nbytes() >= kPinFrom && !pinned_.count(h.data_ptr())) {
      if (auto p = pinned_copy(h); p.defined()) {
        t.set_data(p);
        h = p;
        pinned_.insert(h.data_ptr());
      } else {
        v.unpinnable = true;
      }
    }
    v.host.push_back(h);
  }
  if (!streams_) {  // the CPU: plain copies
    for (const auto& h : v.host) v.device.push_back(h.clone());
    return;
  }
  // Allocated in the compute stream's order: the copy stream waits until the
  // work queued before it, which may have used that memory last, is done.
  const auto compute = current_stream(device_);
  for (const auto& h : v.host)
    v.device.push_back(torch::empty(h.sizes(), h.options().device(device_)));
  if (!ahead) {
    for (std::size_t k = 0; k < v.host.size(); ++k) v.device[k].copy_(v.host[k], true);
    return;
  }
  c10::Event allocated(device_.type());
  allocated.record(compute);
  allocated.block(streams_->copy);
  {
    const c10::StreamGuard on_copy(streams_->copy);
    for (std::size_t k = 0; k < v.host.size(); ++k) v.device[k].copy_(v.host[k], true);
  }
  v.ready = std::make_unique<c10::Event>(device_.type());
  v.ready->record(streams_->copy);
}

void BlockSwap::before(std::size_t i) {
  if (i < swapped_) {
    torch::NoGradGuard no_grad;
    auto& v = *visits_[i];
    // A copy made ahead counts only while the block still holds the data it was
    // made from (a LoRA merged since replaces it).
    bool current = !v.device.empty();
    if (current) {
      const auto now = tensors_of(*blocks_[i]);
      current = now.size() == v.host.size();
      for (std::size_t k = 0; current && k < now.size(); ++k)
        current = now[k].data_ptr() == v.host[k].data_ptr();
    }
    // The forward waits for a copy made ahead (and a stale one's memory is
    // not reused before that copy ends).
    if (v.ready) v.ready->block(current_stream(device_));
    v.ready.reset();
    if (!current) bring(i, /*ahead=*/false);
    for (std::size_t k = 0; k < v.slots.size(); ++k) v.slots[k].set_data(v.device[k]);
    v.visiting = true;
  }
  // The next host block, copied while this one computes (after the last block,
  // the first one, for the next forward).
  if (swapped_ == 0) return;
  const std::size_t next = i + 1 < swapped_ ? i + 1 : 0;
  auto& n = *visits_[next];
  if (!n.visiting && n.device.empty()) bring(next, /*ahead=*/true);
}

void BlockSwap::after(std::size_t i) {
  if (i >= swapped_) return;
  torch::NoGradGuard no_grad;
  auto& v = *visits_[i];
  if (!v.visiting) return;
  // The device copies go back to the allocator in the compute stream's order.
  for (std::size_t k = 0; k < v.slots.size(); ++k) v.slots[k].set_data(v.host[k]);
  v.device.clear();
  v.visiting = false;
}

void BlockSwap::release() {
  torch::NoGradGuard no_grad;
  for (std::size_t i = 0; i < visits_.size(); ++i) {
    auto& v = *visits_[i];
    // Memory a copy is still writing is not handed back before the copy ends.
    if (v.ready) v.ready->block(current_stream(device_));
    v.ready.reset();
    if (v.visiting) after(i);
    v.device.clear();
  }
}

int64_t BlockSwap::on_device() const {
  return std::count_if(visits_.begin(), visits_.end(),
                       [](const auto& v) { return !v->device.empty(); });
}

int64_t blocks_to_swap(int64_t model_bytes, int64_t block_bytes, int64_t blocks,
                       int64_t budget_bytes) {
  if (model_bytes <= budget_bytes || blocks <= 0 || block_bytes <= 0) return 0;
  // With s blocks on the host, s − 2 are away at any time (one visits, the
  // next is being copied): the model takes model − (s − 2)·block.
  const int64_t over = model_bytes - budget_bytes;
  const int64_t s = (over + block_bytes - 1) / block_bytes + 2;
  return std::min(s, blocks);
}

}  // namespace kinora::layers
