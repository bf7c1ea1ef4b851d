#include "cli/convert.h"

#include <utility>
#include <vector>

#include "base/error.h"
#include "base/files.h"
#include "io/checkpoint.h"

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

ConvertReport convert_checkpoint(const std::filesystem::path& in, const std::filesystem::path& out,
                                 const std::string& dtype, bool overwrite) {
  const auto to = parse_float_dtype(dtype, "convert");
  std::error_code ec;
  if (std::filesystem::exists(out, ec) && std::filesystem::equivalent(in, out, ec))
    throw Error(out.string() + ": is the input; write the converted checkpoint elsewhere");
  check_can_write_file(out, overwrite, "checkpoint");
  const auto ck = io::Checkpoint::open(in);
  ConvertReport r;
  std::vector<std::pair<std::string, torch::Tensor>> tensors;
  for (const auto& name : ck.names()) {
    const auto& info = ck.info(name);
    if (io::is_fp8(info.dtype))
      throw Error(in.string() + ": tensor '" + name + "' is " + io::dtype_name(info.dtype) +
                  "; FP8 checkpoints are not converted (their scales differ by format)");
    auto t = ck.get(name);
    if (is_float_dtype(info.dtype) && t.scalar_type() != to) {
      t = t.to(to);
      ++r.converted;
    }
    r.bytes_in += info.nbytes();
    r.bytes_out += static_cast<uint64_t>(t.numel()) * t.element_size();
    tensors.emplace_back(name, std::move(t));
  }
  r.tensors = tensors.size();
  io::save_safetensors(out, tensors, ck.metadata(), overwrite);
  return r;
}

}  // namespace kinora::cli
