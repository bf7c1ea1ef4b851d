#pragma once
// What every model facade (the Wan DiT, the Wan VAE, the T5 encoders, and the
// FLUX and SDXL models to come) shares: its torch module, the checkpoint whose
// mapping its weights view, the precision it computes in, the device it is on,
// and whether it trains. A facade derives from Model and registers its module
// with adopt(); its own code is then only its architecture.
#include <torch/torch.h>

#include <memory>

#include "io/checkpoint.h"
#include "layers/block_swap.h"
#include "layers/precision.h"

namespace kinora::layers {

class Model {
 public:
  virtual ~Model();
  Model(Model&&) noexcept;
  Model& operator=(Model&&) noexcept;

  torch::nn::Module& module();
  const torch::nn::Module& module() const;
  // Matmuls and attention in this precision (norms and the time path stay
  // float32); how, each facade says (on_precision).
  void set_precision(Precision p);
  Precision precision() const { return precision_; }
  // Moves the weights (a mapped checkpoint's are copied to the device). With
  // `keep_host`, the CPU tensors are kept while the model is away, and moving
  // back to the CPU returns to them (a mapped checkpoint's views: no copy, and
  // the device's copies are freed); changes made to the weights while away are
  // then not carried back.
  //
  // With block swap set (set_block_swap), the first of swappable_blocks() stay
  // in host memory and visit the device in turn while the model runs there.
  void to(torch::Device device, bool keep_host = false);
  torch::Device device() const { return device_; }
  // Block swap (layers/block_swap.h) from the next to() on: the first `n` of
  // the model's repeated blocks stay in host memory; 0 (the default) moves the
  // whole model. On the CPU, n > 0 runs the same bookkeeping with copies (the
  // tests' twin of a GPU's swap).
  void set_block_swap(int64_t n);
  // The blocks kept in host memory now (0 when not swapping).
  int64_t blocks_swapped() const { return swap_ ? swap_->swapped() : 0; }
  // The swap the forward drives, or null.
  BlockSwap* block_swap() const { return swap_.get(); }
  // The repeated blocks a forward runs in order (a DiT's transformer blocks),
  // which block swap may keep on the host; none by default.
  virtual std::vector<std::shared_ptr<torch::nn::Module>> swappable_blocks() { return {}; }
  // The bytes of the model's tensors, and of the largest of its swappable blocks.
  int64_t weight_bytes() const;
  int64_t block_bytes();
  // A rough bound on the activations of a forward over `rows` tokens (batch ×
  // sequence): the widest of a swappable block's linear outputs twice and its
  // input width eight times per row, in the compute precision; 0 without
  // blocks. Block swap's "auto" keeps it free.
  int64_t activation_bytes(int64_t rows);
  // Training: parameters record gradients and the forward calls build a graph
  // (inference runs without one, the default).
  void set_trainable(bool trainable);
  bool trainable() const { return trainable_; }
  // The checkpoint's io::Checkpoint::prefetch() / release_resident(), when the
  // weights were loaded from one (release_resident: false otherwise).
  void prefetch() const;
  bool release_resident() const;

 protected:
  Model();
  // What set_precision does to the module: by default, every Linear computes
  // in `p`.
  virtual void on_precision(Precision p);
  // The facade's module, and the checkpoint that must outlive its weights
  // (zero-copy views of the file's mapping), if they were loaded.
  void adopt(std::shared_ptr<torch::nn::Module> module,
             std::shared_ptr<io::Checkpoint> weights = nullptr);

 private:
  std::shared_ptr<torch::nn::Module> module_;
  std::shared_ptr<io::Checkpoint> weights_;
  std::vector<torch::Tensor> host_;  // the CPU tensors while on another device
  int64_t swap_blocks_ = 0;
  std::unique_ptr<BlockSwap> swap_;
  Precision precision_ = Precision::F32;
  torch::Device device_ = torch::kCPU;
  bool trainable_ = false;
};

}  // namespace kinora::layers
