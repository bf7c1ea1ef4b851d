#pragma once
// The CLIP text transformer (text model only): FLUX's pooled vector (CLIP-L),
// and SDXL's two encoders (OpenAI's CLIP-L and OpenCLIP's ViT-bigG). Pre-LN
// layers under a causal mask, quick-GELU (OpenAI's CLIP) or exact GELU
// (OpenCLIP), a final LayerNorm; the pooled output is the final-norm state at
// the first end token (at argmax(ids) for OpenCLIP, which is the same token when
// the padding is the end token or 0), and, when the model has a text projection,
// that state projected. Modules under the Hugging Face names
// (encoder.layers.N.self_attn.q_proj …, text_projection), read from:
//   - transformers' CLIPTextModel / CLIPTextModelWithProjection (diffusers'
//     text_encoder/ and text_encoder_2/), with or without `text_model.`, and
//     single-file checkpoints' CLIP-L under
//     conditioner.embedders.0.transformer.text_model.;
//   - OpenCLIP's own names (transformer.resblocks.N.attn.in_proj_weight …),
//     bare or under conditioner.embedders.1.model. (SDXL) or
//     cond_stage_model.model. (SD 2.x): q/k/v split from in_proj, and
//     `text_projection` [width, proj] (applied as x·P) held as P transposed.
// Facts: the FLUX spec §4.1; generative-models' FrozenOpenCLIPEmbedder2.
#include <torch/torch.h>

#include <filesystem>
#include <memory>
#include <string>

#include "io/checkpoint.h"
#include "io/layout.h"
#include "layers/model.h"
#include "layers/precision.h"

namespace kinora::text {

struct CLIPTextConfig {
  int64_t vocab_size = 49408;
  int64_t hidden_size = 768;
  int64_t intermediate_size = 3072;
  int64_t num_hidden_layers = 12;
  int64_t num_attention_heads = 12;
  int64_t max_position_embeddings = 77;
  bool quick_gelu = true;  // OpenAI's CLIP-L; false: exact GELU (OpenCLIP bigG)
  double layer_norm_eps = 1e-5;
  int64_t bos_token_id = 49406, eos_token_id = 49407;
  int64_t projection_dim = 0;   // the text projection's width; 0: none
  bool pool_at_argmax = false;  // OpenCLIP: pooled at argmax(ids), not the first end token

  // Names and shapes (heads of width 64, quick-GELU at width 768 and exact GELU
  // otherwise, the last two vocabulary entries as start and end tokens), then
  // the file's metadata "config" when the encoder has the file to itself (a
  // single-file checkpoint's describes the whole model): transformers' JSON
  // (num_attention_heads, hidden_act, layer_norm_eps, bos/eos_token_id) or
  // OpenCLIP's (heads, act or quick_gelu, ln_eps, sot/eot_token; flat or under
  // text_cfg). A config whose width or depth is not the tensors' is an error.
  // `prefer`: as CLIPTextModel::load.
  static CLIPTextConfig from_checkpoint(const io::Checkpoint& ck,
                                        io::Family prefer = io::Family::CLIP);
};

struct CLIPTextOutput {
  torch::Tensor last_hidden;       // [B, L, D] after the final norm
  torch::Tensor penultimate;       // [B, L, D] entering the last layer (SDXL's), no norm
  torch::Tensor pooled;            // [B, D] the final-norm state at the end token
  torch::Tensor pooled_projected;  // [B, projection_dim] pooled·P, undefined without projection
};

class CLIPTextModelImpl;

class CLIPTextModel : public layers::Model {
 public:
  explicit CLIPTextModel(const CLIPTextConfig& config);
  ~CLIPTextModel() override;
  CLIPTextModel(CLIPTextModel&&) noexcept;
  CLIPTextModel& operator=(CLIPTextModel&&) noexcept;

  // Any of the layouts above; throws kinora::Error naming the file. From a
  // file that holds both of SDXL's encoders (a single-file checkpoint), the one
  // in `prefer`'s names: io::Family::CLIP for CLIP-L
  // (conditioner.embedders.0.transformer.text_model.), io::Family::OpenCLIP
  // for bigG (conditioner.embedders.1.model.); a file with one text model
  // gives that one, whatever `prefer` says (diffusers' text_encoder_2/ holds
  // bigG in transformers' names).
  static CLIPTextModel load(const std::filesystem::path& path,
                            layers::Precision precision = layers::Precision::F32,
                            io::Family prefer = io::Family::CLIP);
  const CLIPTextConfig& config() const;
  // ids [B, L ≤ max positions] int64 → the states, float32.
  CLIPTextOutput forward(const torch::Tensor& ids);

 private:
  std::shared_ptr<CLIPTextModelImpl> impl_;
};

}  // namespace kinora::text
