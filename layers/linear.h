#pragma once
// A linear layer whose weight stays in the dtype the checkpoint stores it in.
//
// The weight is widened (or narrowed) per call to the compute dtype, so a bf16
// or FP8 checkpoint is never copied whole to float32. FP8 weights are held as
// their raw bytes and widened exactly on use; ComfyUI's "scaled fp8" files add a
// per-tensor `scale_weight` that multiplies the widened weight. With
// `fp8_matmul` (layers/fp8.h) an E4M3 weight is multiplied as FP8 instead, the
// input quantized per call.
#include <torch/torch.h>

#include <optional>

#include "io/safetensors.h"
#include "layers/precision.h"

namespace kinora::layers {

// An update added to a Linear's output at run time (a LoRA applied without
// merging): scale·up(down(x)) for a low-rank one, scale·(x·deltaᵀ) for a full
// one, into output rows [row0, row0 + rows).
struct LinearAdapter {
  torch::Tensor down, up, delta, bias;
  double scale = 1;
  int64_t row0 = 0, rows = 0;
};

class LinearImpl : public torch::nn::Module {
 public:
  LinearImpl(int64_t in_features, int64_t out_features, bool bias);

  // x [..., in] → [..., out] in matmul_dtype(precision).
  torch::Tensor forward(const torch::Tensor& x);
  // Whether the layer is one product of the input with its weight (no run-time
  // adapter, no FP8 product): what the partial forms below need.
  bool plain() const;
  // GELU (tanh form) of output features [row0, row0 + rows) of a plain layer
  // (all of them by default): gelu_tanh(forward(x)) there. On a GPU in
  // inference, in the matmul: cuBLASLt's epilogue adds the bias and applies
  // the GELU before the product is written (LibTorch's _addmm_activation, whose
  // GELU is the tanh form on CUDA), one pass over the output fewer; elsewhere
  // the two in turn. A layer that is not plain computes forward(x) first.
  torch::Tensor forward_gelu_tanh(const torch::Tensor& x, int64_t row0 = 0, int64_t rows = -1);
  // Output features [row0, row0 + rows) of a plain layer, computing only those.
  torch::Tensor forward_rows(const torch::Tensor& x, int64_t row0, int64_t rows);
  // forward(cat(parts, -1)) of a plain layer without the concatenation: each
  // part's product with its columns of the weight summed into one output
  // (in the compute dtype, so in bf16 the partial sum is rounded once more).
  // In bf16 on the CPU, the concatenation after all (see linear.cpp).
  torch::Tensor forward_cat(const std::vector<torch::Tensor>& parts);
  // The weight as `dtype` [out, in] (widened from FP8 when stored so).
  torch::Tensor weight_as(torch::ScalarType dtype) const;
  // Rows [row0, row0 + rows) of it, only those widened.
  torch::Tensor weight_rows_as(torch::ScalarType dtype, int64_t row0, int64_t rows) const;

  int64_t in_features, out_features;
  torch::Tensor weight, bias;
  std::optional<io::DType> fp8;  // set when `weight` holds FP8 bytes (uint8, [out, in])
  std::optional<float> scale;    // ComfyUI scaled-fp8 weight scale
  bool fp8_matmul = false;       // E4M3 weight × E4M3 input (layers/fp8.h's fp8_linear)
  Precision precision = Precision::F32;
  std::vector<LinearAdapter> adapters;  // run-time LoRAs (lora/lora.h)

 private:
  // Output features [row0, row0 + rows), with the tanh-GELU if `gelu`.
  torch::Tensor forward_part(const torch::Tensor& x, int64_t row0, int64_t rows, bool gelu);
};
TORCH_MODULE(Linear);

// Marks every parameter under `root` as trained (gradients recorded) or not.
void set_trainable(torch::nn::Module& root, bool trainable);

// Sets the compute precision of every Linear under `root`.
void set_precision(torch::nn::Module& root, Precision p);

}  // namespace kinora::layers

namespace kinora::layers {
// The parameters of a norm layer (`weight`, optional `bias`), registered under the
// checkpoint's names; the computation is rms_norm()/layer_norm() in ops.h.
struct NormParamsImpl : torch::nn::Module {
  NormParamsImpl(int64_t dim, bool with_bias) {
    weight = register_parameter("weight", torch::ones({dim}), false);
    if (with_bias) bias = register_parameter("bias", torch::zeros({dim}), false);
  }
  torch::Tensor weight, bias;
};
TORCH_MODULE(NormParams);
}  // namespace kinora::layers
