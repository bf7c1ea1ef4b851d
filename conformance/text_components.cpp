// Text-encoder cases: ids and mask in, the final-norm output trimmed to the real
// tokens out.
#include "base/error.h"
#include "conformance/components.h"
#include "text/clip.h"
#include "text/t5.h"

namespace kinora::conformance {
namespace {

Outputs run_encoder(const Case& k, const std::filesystem::path& weights, const RunOptions& o) {
  auto enc = text::T5Encoder::load(weights, o.precision);
  enc.to(o.device);
  const auto ids = o.in(k, "ids");
  const auto mask = o.in(k, "mask");
  const auto hidden = enc.forward(ids, mask);  // [1, L, dim]
  const auto real = mask[0].sum().item<int64_t>();
  return {{"hidden", hidden[0].slice(0, 0, real)}};
}

// CLIP: ids [1, 77] → the final-norm states and the pooled vector, or the
// states entering the last layer.
Outputs run_clip(const Case& k, const std::filesystem::path& weights, const RunOptions& o) {
  auto enc = text::CLIPTextModel::load(weights, o.precision);
  enc.to(o.device);
  const auto out = enc.forward(o.in(k, "ids"));
  return {{"last_hidden", out.last_hidden[0]},
          {"pooled", out.pooled[0]},
          {"penultimate", out.penultimate}};
}

// OpenCLIP bigG (SDXL's second encoder): ids [B, 77] → the states entering the
// last block and the projected pooled vector, as generative-models'
// FrozenOpenCLIPEmbedder2 returns them.
Outputs run_clip_g(const Case& k, const std::filesystem::path& weights, const RunOptions& o) {
  // bigG from a single-file checkpoint too, not the CLIP-L beside it.
  auto enc = text::CLIPTextModel::load(weights, o.precision, io::Family::OpenCLIP);
  enc.to(o.device);
  const auto out = enc.forward(o.in(k, "ids"));
  if (!out.pooled_projected.defined())
    fail_file(weights, "the OpenCLIP text encoder has no text_projection");
  return {{"penultimate", out.penultimate}, {"pooled", out.pooled_projected}};
}

}  // namespace

void add_text_components(std::map<std::string, Component>& out) {
  out["umt5.encoder"] = {"umt5.encoder", true, run_encoder};
  out["t5.encoder"] = {"t5.encoder", true, run_encoder};
  out["clip.text"] = {"clip.text", true, run_clip};
  out["clip_l.penultimate"] = {"clip_l.penultimate", true, run_clip};
  out["clip_g.text"] = {"clip_g.text", true, run_clip_g};
}

}  // namespace kinora::conformance
