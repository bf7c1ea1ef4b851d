#pragma once
// safetensors: reading through a memory map, writing through a temporary file.
//
// Format: 8-byte little-endian header length N, N bytes of JSON
//   {"name": {"dtype": "F32", "shape": [..], "data_offsets": [begin, end]}, ...,
//    "__metadata__": {"key": "string value"}}
// then the data section; offsets are relative to its start.
//
// The reader validates the whole header before it hands out anything, so a
// malformed file is an Error naming the file and the fault, never a crash, a
// hang or a huge allocation. Tensors are zero-copy views of the mapping where
// dtype and alignment allow; the mapping stays alive while any view does.
#include <torch/torch.h>

#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

namespace kinora::io {

enum class DType { F64, F32, F16, BF16, F8_E4M3, F8_E5M2, I64, I32, I16, I8, U8, BOOL };

const char* dtype_name(DType d);
std::size_t dtype_size(DType d);
bool is_fp8(DType d);
// The torch dtype a tensor of this dtype is handed out as (FP8 is widened to bf16,
// which holds every E4M3 and E5M2 value exactly).
torch::ScalarType torch_dtype(DType d);
// The safetensors dtype of a torch tensor; throws for types safetensors has no name for.
DType from_torch(torch::ScalarType t);

struct TensorInfo {
  std::string name;
  DType dtype;
  std::vector<int64_t> shape;
  uint64_t begin = 0;  // byte offsets in the data section
  uint64_t end = 0;
  int64_t numel() const;
  uint64_t nbytes() const { return end - begin; }
};

class MappedFile;  // read-only private mapping of a whole file

// Largest JSON header accepted; real checkpoints have a few hundred KiB.
inline constexpr uint64_t kMaxHeaderBytes = 100ull << 20;

class SafetensorsFile {
 public:
  // Maps and validates the file. Throws kinora::Error ("PATH: reason").
  static std::shared_ptr<SafetensorsFile> open(const std::filesystem::path& path);

  const std::filesystem::path& path() const { return path_; }
  // Tensors in the order of their data offsets.
  const std::vector<TensorInfo>& tensors() const { return tensors_; }
  bool contains(const std::string& name) const { return index_.count(name) != 0; }
  const TensorInfo& info(const std::string& name) const;
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  uint64_t file_size() const;

  // The tensor as torch_dtype(info.dtype): a zero-copy view of the mapping when the
  // data is aligned for its element type, a copy otherwise; FP8 is widened to bf16.
  torch::Tensor get(const std::string& name) const;
  // The stored bytes as a uint8 view [nbytes], for callers that widen FP8 per layer.
  torch::Tensor raw(const std::string& name) const;
  // True when get(name) returns a view of the mapping (no copy).
  bool is_zero_copy(const std::string& name) const;

  // Starts reading into the page cache what of the file is not there (on a
  // background thread) and returns at once, so that the first use of the
  // weights does not wait for the disk page by page.
  void prefetch() const;
  // Takes the mapping's pages out of this process's resident memory (they stay
  // in the page cache; the next use maps them again), unless one of them was
  // written through a view. Returns whether it did.
  bool release_resident() const;
  // The same for bytes [from, from + length) of tensor `name`'s data (the
  // pages that hold them, which may hold some of its neighbours' too), so
  // that a pass over a file larger than memory keeps about one tensor of it
  // resident.
  bool release_resident(const std::string& name, uint64_t from = 0,
                        uint64_t length = UINT64_MAX) const;

 private:
  SafetensorsFile() = default;
  std::filesystem::path path_;
  std::shared_ptr<MappedFile> map_;
  uint64_t data_start_ = 0;
  std::vector<TensorInfo> tensors_;
  std::map<std::string, std::size_t> index_;
  std::map<std::string, std::string> metadata_;
};

// FP8 bytes (uint8 tensor) widened to `to` (bf16 by default), exactly.
torch::Tensor widen_fp8(const torch::Tensor& bytes, DType fp8,
                        torch::ScalarType to = torch::kBFloat16);

// Writes tensors (any device, contiguous or not) and string metadata. The file is
// written under a temporary name in the same folder and renamed when complete, so
// a failure (a full disk) leaves nothing under `path`. Throws kinora::Error.
void save_safetensors(const std::filesystem::path& path,
                      const std::vector<std::pair<std::string, torch::Tensor>>& tensors,
                      const std::map<std::string, std::string>& metadata = {}, bool replace = true);

// The same file written one tensor at a time: `make(i)` gives tensor i of
// `specs` (its shape and dtype as declared) when its turn comes, so a file
// larger than memory (a random-weight umT5-XXL for a benchmark) can be written.
struct TensorSpec {
  std::string name;
  std::vector<int64_t> shape;
  torch::ScalarType dtype;
};
void save_safetensors(const std::filesystem::path& path, const std::vector<TensorSpec>& specs,
                      const std::function<torch::Tensor(std::size_t)>& make,
                      const std::map<std::string, std::string>& metadata = {}, bool replace = true);

}  // namespace kinora::io
