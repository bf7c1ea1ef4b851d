#include "cli/convert.h"

#include <utility>
#include <vector>

#include "base/error.h"
#include "base/files.h"
#include "base/signals.h"
#include "io/checkpoint.h"
#include "io/safetensors.h"

namespace kinora::cli {

torch::ScalarType parse_float_dtype(const std::string& d, const std::string& command) {
  if (d == "bf16") return torch::kBFloat16;
  if (d == "fp16") return torch::kFloat16;
  if (d == "fp32") return torch::kFloat32;
  throw Error(command + ": --dtype must be bf16, fp16 or fp32, got \"" + d + "\"");
}

bool is_float_dtype(io::DType d) {
  return d == io::DType::F64 || d == io::DType::F32 || d == io::DType::F16 || d == io::DType::BF16;
}

void check_checkpoint_output(const std::filesystem::path& out,
                             const std::vector<std::filesystem::path>& inputs, bool overwrite) {
  namespace fs = std::filesystem;
  if (out.empty()) throw Error("no output name given");
  if (out.extension() != ".safetensors")
    fail_file(out, "the output is a safetensors checkpoint: name it NAME.safetensors");
  std::error_code ec;
  const fs::path folder = out.parent_path().empty() ? fs::path(".") : out.parent_path();
  if (!fs::is_directory(folder, ec))
    fail_file(out, "the folder " + folder.string() +
                       (fs::exists(folder, ec) ? " is not a folder" : " does not exist"));
  if (fs::exists(out, ec))
    for (const auto& in : inputs) {
      if (fs::equivalent(in, out, ec))
        fail_file(out, "is an input; write the new checkpoint elsewhere");
      for (const auto& shard : io::shard_files(in))
        if (fs::equivalent(shard, out, ec))
          fail_file(out, "is a shard of the input " + in.string() +
                             "; write the new checkpoint elsewhere");
    }
  check_can_write_file(out, overwrite, "checkpoint");
  // What a convert or merge killed there (SIGKILL, a power cut) left behind.
  remove_stale_temporaries(folder);
}

void save_checkpoint_cancellable(const std::filesystem::path& out,
                                 const std::vector<std::pair<std::string, torch::Tensor>>& tensors,
                                 const std::map<std::string, std::string>& metadata,
                                 bool overwrite) {
  std::vector<io::TensorSpec> specs;
  for (const auto& [name, t] : tensors) specs.push_back({name, t.sizes().vec(), t.scalar_type()});
  io::save_safetensors(
      out, specs,
      [&](std::size_t i) {
        throw_if_cancelled(&cancel_requested());
        return tensors[i].second;
      },
      metadata, overwrite);
  // A cancel after the last tensor is handed over (while the file is flushed
  // and renamed into place) is not seen: the command then reports success.
}

ConvertReport convert_checkpoint(const std::filesystem::path& in, const std::filesystem::path& out,
                                 const std::string& dtype, bool overwrite) {
  const auto to = parse_float_dtype(dtype, "convert");
  check_checkpoint_output(out, {in}, overwrite);
  const auto ck = io::Checkpoint::open(in);
  ConvertReport r;
  std::vector<std::pair<std::string, torch::Tensor>> tensors;
  for (const auto& name : ck.names()) {
    throw_if_cancelled(&cancel_requested());  // Ctrl-C, SIGTERM: nothing written
    const auto& info = ck.info(name);
    if (io::is_fp8(info.dtype))
      throw Error(in.string() + ": tensor '" + name + "' is " + io::dtype_name(info.dtype) +
                  "; FP8 checkpoints are not converted (their scales differ by format)");
    auto t = ck.get(name);
    if (is_float_dtype(info.dtype) && t.scalar_type() != to) {
      const auto wide = t.to(torch::kFloat64);
      t = t.to(to);
      // Values past the new type's range would be stored as infinities.
      if (!torch::isfinite(t).all().item<bool>() && torch::isfinite(wide).all().item<bool>())
        fail_file(out,
                  "tensor '" + name + "' holds values past " +
                      std::string(to == torch::kFloat16 ? "fp16's range (65504)" : "the range") +
                      " of --dtype " + dtype + "; nothing was written (bf16 or fp32 keep them)");
      ++r.converted;
    }
    r.bytes_in += info.nbytes();
    r.bytes_out += static_cast<uint64_t>(t.numel()) * t.element_size();
    tensors.emplace_back(name, std::move(t));
  }
  r.tensors = tensors.size();
  save_checkpoint_cancellable(out, tensors, ck.metadata(), overwrite);
  return r;
}

}  // namespace kinora::cli
