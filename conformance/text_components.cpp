// Text-encoder cases: ids and mask in, the final-norm output trimmed to the real
// tokens out.
#include "conformance/components.h"
#include "text/t5.h"

namespace kinora::conformance {
namespace {

Outputs run_encoder(const Case& k, const std::filesystem::path& weights, const RunOptions& o) {
  auto enc = text::T5Encoder::load(weights, o.precision);
  const auto& ids = k.input("ids");
  const auto& mask = k.input("mask");
  const auto hidden = enc.forward(ids, mask);  // [1, L, dim]
  const auto real = mask[0].sum().item<int64_t>();
  return {{"hidden", hidden[0].slice(0, 0, real)}};
}

}  // namespace

void add_text_components(std::map<std::string, Component>& out) {
  out["umt5.encoder"] = {"umt5.encoder", true, run_encoder};
  out["t5.encoder"] = {"t5.encoder", true, run_encoder};
}

}  // namespace kinora::conformance
