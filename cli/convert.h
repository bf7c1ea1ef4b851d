#pragma once
// `kinora convert`: a checkpoint's floating-point tensors stored in another
// precision (float32 → bf16 halves a file), names, shapes and metadata kept,
// so the result loads wherever the original did.
#include <torch/torch.h>

#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include "io/safetensors.h"

namespace kinora::cli {

// "bf16", "fp16" or "fp32" as a torch dtype; anything else is an Error that
// names `command`'s --dtype option.
torch::ScalarType parse_float_dtype(const std::string& d, const std::string& command);
// F64, F32, F16 or BF16 (FP8 and integer tensors are not).
bool is_float_dtype(io::DType d);

// Where convert and merge write: a .safetensors name in a folder that exists,
// not one of `inputs`, and replacing an existing file only with `overwrite`.
// Throws kinora::Error naming `out` before any work is done.
void check_checkpoint_output(const std::filesystem::path& out,
                             const std::vector<std::filesystem::path>& inputs, bool overwrite);

struct ConvertReport {
  std::size_t tensors = 0, converted = 0;
  uint64_t bytes_in = 0, bytes_out = 0;
};

// io::save_safetensors that stops at a cancel (Ctrl-C, SIGTERM) between
// tensors while it writes, leaving nothing behind (kinora::Cancelled).
void save_checkpoint_cancellable(const std::filesystem::path& out,
                                 const std::vector<std::pair<std::string, torch::Tensor>>& tensors,
                                 const std::map<std::string, std::string>& metadata,
                                 bool overwrite);

// `dtype` is "bf16", "fp16" or "fp32". A sharded checkpoint (its index.json)
// becomes one file. FP8 checkpoints are refused (their scales are per-format);
// so are an output that exists and an output that is the input. The output is
// written under a temporary name and renamed when complete. Throws kinora::Error.
ConvertReport convert_checkpoint(const std::filesystem::path& in, const std::filesystem::path& out,
                                 const std::string& dtype, bool overwrite = false);

}  // namespace kinora::cli
