#pragma once
// A checkpoint as one name → tensor table, whether it is a single safetensors
// file or a sharded one (`*.safetensors.index.json` beside its shards).
#include <torch/torch.h>

#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "io/safetensors.h"

namespace kinora::io {

class Checkpoint {
 public:
  // `path` is a .safetensors file or a .safetensors.index.json. Throws kinora::Error.
  static Checkpoint open(const std::filesystem::path& path);

  const std::filesystem::path& path() const { return path_; }
  bool sharded() const { return shards_.size() > 1 || is_index_; }
  const std::vector<std::shared_ptr<SafetensorsFile>>& shards() const { return shards_; }

  // Tensor names in sorted order.
  std::vector<std::string> names() const;
  std::size_t size() const { return where_.size(); }
  bool contains(const std::string& name) const { return where_.count(name) != 0; }
  const TensorInfo& info(const std::string& name) const;
  torch::Tensor get(const std::string& name) const;
  const SafetensorsFile& file_of(const std::string& name) const;
  // __metadata__ of a single file; for an index, its "metadata" object (values
  // as strings) over the first shard's __metadata__.
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  // Sum of the tensors' stored bytes.
  uint64_t total_bytes() const;
  // name → shape, for layout detection and configuration inference.
  std::map<std::string, std::vector<int64_t>> shapes() const;
  // SafetensorsFile::prefetch() / release_resident() of every shard.
  void prefetch() const;
  bool release_resident() const;

 private:
  std::filesystem::path path_;
  bool is_index_ = false;
  std::vector<std::shared_ptr<SafetensorsFile>> shards_;
  std::map<std::string, std::size_t> where_;  // name → shard
  std::map<std::string, std::string> metadata_;
};

// The shard files a `*.safetensors.index.json` names; empty for anything else
// and for an index that cannot be read (Checkpoint::open says why, where it
// is read).
std::vector<std::filesystem::path> shard_files(const std::filesystem::path& path);

}  // namespace kinora::io
