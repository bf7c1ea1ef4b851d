// Text-encoder cases: ids and mask in, the final-norm output trimmed to the real
// tokens out.
#include "conformance/components.h"
#include "text/clip.h"
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

// CLIP: ids [1, 77] → the final-norm states and the pooled vector, or the
// states entering the last layer.
Outputs run_clip(const Case& k, const std::filesystem::path& weights, const RunOptions& o) {
  auto enc = text::CLIPTextModel::load(weights, o.precision);
  const auto out = enc.forward(k.input("ids"));
  return {{"last_hidden", out.last_hidden[0]},
          {"pooled", out.pooled[0]},
          {"penultimate", out.penultimate}};
}

}  // namespace

void add_text_components(std::map<std::string, Component>& out) {
  out["umt5.encoder"] = {"umt5.encoder", true, run_encoder};
  out["t5.encoder"] = {"t5.encoder", true, run_encoder};
  out["clip.text"] = {"clip.text", true, run_clip};
  out["clip_l.penultimate"] = {"clip_l.penultimate", true, run_clip};
}

}  // namespace kinora::conformance
