#pragma once
// `kinora merge`: two checkpoints of the same model combined tensor by tensor,
// as the checkpoint mergers of other studios do:
//   weighted sum     A + r·(B − A)   (r 0.5: the average; r above 1 goes on past B,
//                                      along the way A's weights took to B's)
//   add difference   A + r·(B − C)   (what B learned from its base C, added to A)
// Names, shapes, integer tensors and A's metadata are kept, so the result loads
// wherever A did; the recipe is recorded in the metadata under "kinora.merge".
#include <filesystem>
#include <optional>
#include <string>

namespace kinora::cli {

struct MergeSpec {
  std::filesystem::path a, b;
  std::optional<std::filesystem::path> subtract;  // C: add difference instead of weighted sum
  double ratio = 0.5;
  std::string dtype = "keep";  // "keep" (A's dtypes), "bf16", "fp16" or "fp32"
  bool overwrite = false;      // replace an existing output file
};

struct MergeReport {
  std::size_t tensors = 0, merged = 0;  // merged: the float tensors combined
  uint64_t bytes_out = 0;
  // Root-mean-square change of the float tensors against A, relative to A's RMS.
  double relative_change = 0;
};

// The checkpoints (single files or *.safetensors.index.json) must hold the same
// tensor names with the same shapes (a checkpoint of another model or layout is
// refused, naming both files and the first tensor that differs); integer
// tensors must be equal in all of them. Float tensors are combined in float32
// (float64 ones in float64) and stored as `dtype`. FP8 inputs, an output that
// exists and an output that is an input are refused. The whole result is held
// in memory, then written under a temporary name and renamed when complete.
// Throws kinora::Error.
MergeReport merge_checkpoints(const MergeSpec& spec, const std::filesystem::path& out);

}  // namespace kinora::cli
