#include "layers/model.h"

#include <algorithm>
#include <unordered_set>

#include "base/error.h"
#include "layers/linear.h"

namespace kinora::layers {

Model::Model() = default;
Model::~Model() = default;
Model::Model(Model&&) noexcept = default;
Model& Model::operator=(Model&&) noexcept = default;

void Model::adopt(std::shared_ptr<torch::nn::Module> module,
                  std::shared_ptr<io::Checkpoint> weights) {
  module_ = std::move(module);
  weights_ = std::move(weights);
}

torch::nn::Module& Model::module() {
  if (!module_) throw Error("model: used before it was built");
  return *module_;
}
const torch::nn::Module& Model::module() const {
  if (!module_) throw Error("model: used before it was built");
  return *module_;
}

void Model::set_precision(Precision p) {
  on_precision(p);
  precision_ = p;
}

void Model::on_precision(Precision p) {
  layers::set_precision(module(), p);
}

void Model::to(torch::Device device, bool keep_host) {
  swap_.reset();  // the swapped blocks back to their host tensors
  if (device.is_cpu() && !host_.empty()) {
    torch::NoGradGuard g;
    auto now = tensors_of(module());
    TORCH_CHECK(now.size() == host_.size(), "Model::to: the module changed while on ", device_);
    for (std::size_t i = 0; i < now.size(); ++i) now[i].set_data(host_[i]);
    host_.clear();
  } else {
    if (keep_host && !device.is_cpu() && host_.empty()) {
      for (const auto& t : tensors_of(module())) host_.push_back(t.data());
      if (!std::all_of(host_.begin(), host_.end(), [](const auto& t) { return t.is_cpu(); }))
        host_.clear();  // placed elsewhere already: nothing to come back to
    }
    auto blocks = swap_blocks_ > 0 ? swappable_blocks() : decltype(swappable_blocks()){};
    const auto swapped =
        std::min<std::size_t>(static_cast<std::size_t>(swap_blocks_), blocks.size());
    if (swapped == 0) {
      module().to(device);
    } else {
      // Everything but the swapped blocks' tensors goes to the device.
      torch::NoGradGuard g;
      std::unordered_set<const void*> away;
      for (std::size_t i = 0; i < swapped; ++i)
        for (const auto& t : tensors_of(*blocks[i])) away.insert(t.unsafeGetTensorImpl());
      for (auto& t : tensors_of(module()))
        if (!away.count(t.unsafeGetTensorImpl())) t.set_data(t.data().to(device));
      swap_ = std::make_unique<BlockSwap>(std::move(blocks), static_cast<int64_t>(swapped), device);
    }
  }
  device_ = device;
}

void Model::set_block_swap(int64_t n) {
  if (n < 0) throw Error("block swap: " + std::to_string(n) + " blocks (0 or more)");
  if (n > 0 && trainable_) throw Error("block swap: for inference only (the model is training)");
  swap_blocks_ = n;
}

int64_t Model::weight_bytes() const {
  return tensor_bytes(module());
}

int64_t Model::block_bytes() {
  int64_t most = 0;
  for (const auto& b : swappable_blocks()) most = std::max(most, tensor_bytes(*b));
  return most;
}

int64_t Model::activation_bytes(int64_t rows) {
  const auto blocks = swappable_blocks();
  if (blocks.empty()) return 0;
  int64_t widest = 0, input = 0;
  for (const auto& m : blocks.front()->modules(/*include_self=*/false))
    if (const auto* l = m->as<LinearImpl>()) {
      widest = std::max(widest, l->out_features);
      input = std::max(input, std::min(l->in_features, l->out_features));
    }
  const int64_t element = matmul_dtype(precision_) == torch::kFloat32 ? 4 : 2;
  return rows * (2 * widest + 8 * input) * element;
}

void Model::prefetch() const {
  if (weights_) weights_->prefetch();
}

bool Model::release_resident() const {
  return weights_ && weights_->release_resident();
}

void Model::set_trainable(bool trainable) {
  layers::set_trainable(module(), trainable);
  trainable_ = trainable;
}

}  // namespace kinora::layers
