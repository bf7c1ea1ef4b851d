#pragma once
// An FP8 (E4M3) copy of a checkpoint, as ComfyUI ships them: every 2D
// `.weight` stored as the nearest E4M3 code (NaN codes excluded), the rest as
// float32; and a float32 copy holding the same dequantised values, which a
// model loading the FP8 file must match.
#include <torch/torch.h>

#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>

#include "io/checkpoint.h"
#include "io/safetensors.h"
#include "test_util.h"

namespace kinora::test {

// Returns the number of tensors stored as FP8.
inline int write_fp8_copy(const std::filesystem::path& src, const std::filesystem::path& fp8,
                          const std::filesystem::path& f32) {
  const auto ck = io::Checkpoint::open(src);
  const auto table = io::widen_fp8(torch::arange(256, torch::kInt32).to(torch::kUInt8),
                                   io::DType::F8_E4M3, torch::kFloat32);
  const auto finite = torch::isfinite(table);
  nlohmann::json header;
  header["__metadata__"] = ck.metadata();
  std::string data;
  std::vector<std::pair<std::string, torch::Tensor>> dequantised;
  int fp8_tensors = 0;
  for (const auto& name : ck.names()) {
    const auto w = ck.get(name).to(torch::kFloat32).contiguous();
    const bool linear =
        w.dim() == 2 && name.size() > 7 && name.compare(name.size() - 7, 7, ".weight") == 0;
    std::string bytes;
    std::string dtype = "F32";
    if (linear) {
      const auto dist =
          (w.reshape({-1, 1}) - table.view({1, -1})).abs().masked_fill(~finite.view({1, -1}), 1e30);
      const auto codes = dist.argmin(1).to(torch::kUInt8).contiguous();
      bytes.assign(reinterpret_cast<const char*>(codes.data_ptr()),
                   static_cast<std::size_t>(codes.numel()));
      dequantised.emplace_back(name,
                               table.index_select(0, codes.to(torch::kInt64)).view(w.sizes()));
      dtype = "F8_E4M3";
      ++fp8_tensors;
    } else {
      bytes.assign(reinterpret_cast<const char*>(w.data_ptr()),
                   static_cast<std::size_t>(w.numel()) * 4);
      dequantised.emplace_back(name, w);
    }
    header[name] = {{"dtype", dtype},
                    {"shape", w.sizes().vec()},
                    {"data_offsets", {data.size(), data.size() + bytes.size()}}};
    data += bytes;
  }
  write_raw(fp8, header.dump(), data);
  io::save_safetensors(f32, dequantised, ck.metadata());
  return fp8_tensors;
}

}  // namespace kinora::test
