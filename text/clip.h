#pragma once
// The CLIP text transformer (text model only): FLUX's pooled vector (CLIP-L),
// and the first of SDXL's two encoders. Pre-LN layers under a causal mask,
// quick-GELU (OpenAI's CLIP) or exact GELU, a final LayerNorm; the pooled
// output is the final-norm state at the first end token. Modules under the
// Hugging Face names (encoder.layers.N.self_attn.q_proj …), read with or
// without the `text_model.` prefix. Facts: the FLUX spec §4.1.
#include <torch/torch.h>

#include <filesystem>
#include <memory>
#include <string>

#include "io/checkpoint.h"
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

  // The transformers config as JSON in the file's metadata "config" when it has
  // one, else names and shapes (heads of width 64, quick-GELU at width 768,
  // the last vocabulary entry as the end token).
  static CLIPTextConfig from_checkpoint(const io::Checkpoint& ck);
};

struct CLIPTextOutput {
  torch::Tensor last_hidden;  // [B, L, D] after the final norm
  torch::Tensor penultimate;  // [B, L, D] entering the last layer (SDXL's), no norm
  torch::Tensor pooled;       // [B, D] the final-norm state at the first end token
};

class CLIPTextModelImpl;

class CLIPTextModel : public layers::Model {
 public:
  explicit CLIPTextModel(const CLIPTextConfig& config);
  ~CLIPTextModel() override;
  CLIPTextModel(CLIPTextModel&&) noexcept;
  CLIPTextModel& operator=(CLIPTextModel&&) noexcept;

  static CLIPTextModel load(const std::filesystem::path& path,
                            layers::Precision precision = layers::Precision::F32);
  const CLIPTextConfig& config() const;
  // ids [B, L ≤ max positions] int64 → the states, float32.
  CLIPTextOutput forward(const torch::Tensor& ids);

 private:
  std::shared_ptr<CLIPTextModelImpl> impl_;
};

}  // namespace kinora::text
