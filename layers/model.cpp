#include "layers/model.h"

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

void Model::to(torch::Device device) {
  module().to(device);
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
