#pragma once
// T5 v1.1 and umT5 encoders (encoder only): Wan's text encoder (umT5-XXL,
// a relative-bias table per layer) and FLUX's (T5-XXL v1.1, one shared table).
// Reference: Wan2.1 wan/modules/t5.py.
#include <torch/torch.h>

#include <filesystem>
#include <memory>

#include "io/checkpoint.h"
#include "layers/linear.h"
#include "layers/model.h"

namespace kinora::text {

struct T5Config {
  int64_t vocab = 256384;
  int64_t dim = 4096;
  int64_t dim_attn = 4096;
  int64_t dim_ffn = 10240;
  int64_t num_heads = 64;
  int64_t num_layers = 24;
  int64_t num_buckets = 32;
  int64_t max_distance = 128;
  bool shared_pos = false;  // false: umT5 (a table per layer); true: T5 v1.1
  double eps = 1e-6;

  // From the file's metadata "config" when present, else from names and shapes
  // (Wan or HF layout). Throws kinora::Error naming the file.
  static T5Config from_checkpoint(const io::Checkpoint& ck);
  // The metadata "config" that from_checkpoint() reads back.
  std::string to_json() const;
};

class T5EncoderImpl;

class T5Encoder : public layers::Model {
 public:
  explicit T5Encoder(const T5Config& config);
  ~T5Encoder() override;
  T5Encoder(T5Encoder&&) noexcept;
  T5Encoder& operator=(T5Encoder&&) noexcept;

  // Loads any layout (Wan `blocks.N.attn.q`, HF `encoder.block.N.layer.0…`).
  static T5Encoder load(const std::filesystem::path& path,
                        layers::Precision precision = layers::Precision::F32);

  const T5Config& config() const;
  // ids [B, L] int64, mask [B, L] (1 = real token) → hidden [B, L, dim] float32.
  torch::Tensor forward(const torch::Tensor& ids, const torch::Tensor& mask);

 private:
  void on_precision(layers::Precision p) override;
  std::shared_ptr<T5EncoderImpl> impl_;
};

}  // namespace kinora::text
