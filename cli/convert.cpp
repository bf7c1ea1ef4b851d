#include "cli/convert.h"

#include <algorithm>
#include <utility>
#include <vector>

#include "base/cpu_memory.h"
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

namespace {

// Elements converted per pass: bounds what a tensor's conversion holds beside
// its result (the input pages read, the range check's flags).
constexpr int64_t kConvertChunk = int64_t{1} << 24;

// Tensor `name` of `ck` stored as `to`, converted a chunk at a time, each
// chunk's input pages released from memory once read. Values the input holds
// finite that `to` cannot (past fp16's 65504) are an Error naming `out`.
torch::Tensor convert_tensor(const io::Checkpoint& ck, const std::string& name,
                             torch::ScalarType to, const std::string& dtype,
                             const std::filesystem::path& out) {
  const auto& file = ck.file_of(name);
  const auto& info = file.info(name);
  const auto in = file.get(name).reshape({-1});
  auto result = torch::empty(info.shape, torch::TensorOptions().dtype(to));
  auto flat = result.view({-1});
  const auto in_size = static_cast<uint64_t>(in.element_size());
  // Whether `to` can take values the input holds that it cannot (fp32 holds
  // every bf16 and fp16 value, bf16 every fp16 one).
  const auto from = in.scalar_type();
  const bool narrows = !(to == torch::kFloat32 && from != torch::kFloat64) &&
                       !(to == torch::kBFloat16 && from == torch::kFloat16);
  for (int64_t at = 0; at < in.numel(); at += kConvertChunk) {
    throw_if_cancelled(&cancel_requested());
    const int64_t n = std::min(kConvertChunk, in.numel() - at);
    const auto src = in.narrow(0, at, n);
    auto dst = flat.narrow(0, at, n);
    dst.copy_(src);
    if (narrows && !torch::isfinite(dst).all().item<bool>() &&
        torch::isfinite(src).all().item<bool>())
      fail_file(out, "tensor '" + name + "' holds values past " +
                         std::string(to == torch::kFloat16 ? "fp16's range (65504)" : "the range") +
                         " of --dtype " + dtype + "; nothing was written (bf16 or fp32 keep them)");
    file.release_resident(name, static_cast<uint64_t>(at) * in_size,
                          static_cast<uint64_t>(n) * in_size);
  }
  return result;
}

}  // namespace

ConvertReport convert_checkpoint(const std::filesystem::path& in, const std::filesystem::path& out,
                                 const std::string& dtype, bool overwrite) {
  const auto to = parse_float_dtype(dtype, "convert");
  check_checkpoint_output(out, {in}, overwrite);
  const auto ck = io::Checkpoint::open(in);
  // The output's header from the input's: every name, its shape and its new
  // dtype are known before a byte of data is read.
  ConvertReport r;
  const auto names = ck.names();
  std::vector<io::TensorSpec> specs;
  std::vector<bool> change;
  specs.reserve(names.size());
  for (const auto& name : names) {
    const auto& info = ck.info(name);
    if (io::is_fp8(info.dtype))
      throw Error(in.string() + ": tensor '" + name + "' is " + io::dtype_name(info.dtype) +
                  "; FP8 checkpoints are not converted (their scales differ by format)");
    const auto stored = io::torch_dtype(info.dtype);
    change.push_back(is_float_dtype(info.dtype) && stored != to);
    specs.push_back({name, info.shape, change.back() ? to : stored});
    r.converted += change.back() ? 1 : 0;
    r.bytes_in += info.nbytes();
    r.bytes_out += static_cast<uint64_t>(info.numel()) *
                   io::dtype_size(change.back() ? io::from_torch(to) : info.dtype);
  }
  r.tensors = names.size();
  // Tensor by tensor from the mapped input to the output's temporary: what is
  // resident at a time is about one tensor (its result, or the input pages it
  // is written from, released once written).
  std::size_t previous = names.size();
  const auto release_previous = [&] {
    if (previous < names.size()) ck.file_of(names[previous]).release_resident(names[previous]);
    // The result written last goes back to the system, not to the CPU cache.
    release_cpu_memory_cache();
  };
  io::save_safetensors(
      out, specs,
      [&](std::size_t i) {
        throw_if_cancelled(&cancel_requested());  // Ctrl-C, SIGTERM: nothing written
        release_previous();
        previous = i;
        return change[i] ? convert_tensor(ck, names[i], to, dtype, out) : ck.get(names[i]);
      },
      ck.metadata(), overwrite);
  release_previous();
  // A cancel after the last tensor is handed over (while the file is flushed
  // and renamed into place) is not seen: the command then reports success.
  return r;
}

}  // namespace kinora::cli
