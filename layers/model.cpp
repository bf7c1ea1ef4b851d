#include "layers/model.h"

#include <algorithm>

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

namespace {
std::vector<torch::Tensor> tensors_of(torch::nn::Module& m) {
  auto all = m.parameters(/*recurse=*/true);
  for (auto& b : m.buffers(/*recurse=*/true)) all.push_back(b);
  return all;
}
}  // namespace

void Model::to(torch::Device device, bool keep_host) {
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
    module().to(device);
  }
  device_ = device;
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
