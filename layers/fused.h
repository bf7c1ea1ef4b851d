#pragma once
// Fused elementwise passes of the DiT blocks (and the Wan VAE's norm): each
// reads its inputs and writes its result once, where the composition of
// tensor ops it replaces makes several passes over memory (and as many
// temporaries). On a CUDA device they run as the kernels of
// layers/fused_kernels.cu (the CUDA build); on the CPU the same computation
// runs row by row on the CPU threads, vectorised, the twin that the tests
// compare with the unfused forms (and, on a GPU, with the kernels). The two
// sum a row's statistics in different orders.
//
// Every row's statistics are computed in float32; results are rounded once,
// to the dtype they are returned in (and where the composed form rounds).
#include <torch/torch.h>

namespace kinora::layers {

// Whether a model computing its matmuls in `compute` on `device` uses these
// passes: in inference only (they work in place and record no gradient), and
// by default on CUDA, and on the CPU in bf16 (float32 on the CPU keeps the
// composed ops, the reference's own arithmetic). KINORA_FUSED=0 in the
// environment turns them off, KINORA_FUSED=1 on everywhere; set_fused()
// overrides both (tests, benchmarks).
enum class Fused { Auto, Off, On };
bool use_fused(const torch::Device& device, torch::ScalarType compute);
void set_fused(Fused mode);

// LayerNorm (no affine) of x [B, L, D] over D, then · (1 + scale) + shift,
// with shift and scale [B, 1, D]; float32 in, `out` dtype out (the dtype the
// next matmul takes). As layer_norm(x) · (1 + scale) + shift.
torch::Tensor modulated_layer_norm(const torch::Tensor& x, const torch::Tensor& shift,
                                   const torch::Tensor& scale, double eps, torch::ScalarType out);

// x += y · gate, in place: x [B, L, D] float32, y [B, L, D] float32 or bf16,
// gate [B, 1, D] float32; an undefined gate is 1 (x += y).
void gated_add_(torch::Tensor& x, const torch::Tensor& y, const torch::Tensor& gate);

// The q/k path of Wan's attention: y [B, L, D] (a projection's output, float32
// or bf16) divided by its RMS over D, times `weight` [D], then each head's
// interleaved pairs (x₂ⱼ, x₂ⱼ₊₁) rotated by the angles whose cos and sin are
// [L, D / heads / 2] (float32) → [B, L, heads, D / heads] in y's dtype. As
// rope(rms_norm(y).to(y's dtype) · weight), rounding where that does. With
// cos and sin undefined the pairs are not rotated (the cross-attention's q/k).
torch::Tensor rms_norm_rope(const torch::Tensor& y, const torch::Tensor& weight, int64_t heads,
                            const torch::Tensor& cos, const torch::Tensor& sin, double eps);

// The Wan VAE's norm: x [B, C, ...] (float32 or bf16, contiguous or not)
// divided by its L2 norm over C (at least 1e-12), times `scale` and
// gamma [C], rounded to x's dtype, then SiLU if `silu` (rounded again):
// silu((x / max(‖x‖_C, 1e-12) · scale · gamma).to(x's dtype)). The composed
// form widens x, and makes a pass over memory for each of its eight ops. An x
// with its channels innermost (channels-last) gives a result laid out alike;
// any other, a contiguous one (on a GPU, always a contiguous one).
torch::Tensor channel_rms_norm(const torch::Tensor& x, const torch::Tensor& gamma, double scale,
                               bool silu);

// GELU, tanh form, of a contiguous bf16 tensor on the CPU: x·σ(2√(2/π)(x +
// 0.044715x³)) (the same function as 0.5x(1 + tanh(…))) in float32 with an
// exponential accurate to a few float32 ulps, vectorised for the CPU it runs
// on; LibTorch 1.13's bf16 tanh-GELU is several times slower on the CPU.
torch::Tensor gelu_tanh_bf16_cpu(const torch::Tensor& x);

}  // namespace kinora::layers
