// Wan 2.1 cases: the DiT forward and the VAE's encode and decode.
#include "conformance/components.h"
#include "diffusion/wan_dit.h"
#include "layers/fp8.h"
#include "vae/wan_vae.h"

namespace kinora::conformance {
namespace {

Outputs run_dit(const Case& k, const std::filesystem::path& weights, const RunOptions& o) {
  auto model = diffusion::WanModel::load(weights, o.precision);
  if (o.fp8) layers::use_fp8_matmuls(model, o.device);
  model.to(o.device);
  const auto out = model.forward(o.in(k, "x").unsqueeze(0), o.in(k, "t").reshape({1}),
                                 o.in(k, "context").unsqueeze(0));
  return {{"x", out[0]}};
}

Outputs run_vae_encode(const Case& k, const std::filesystem::path& weights, const RunOptions& o) {
  auto vae = vae::WanVAE::load(weights, o.precision);
  vae.to(o.device);
  return {{"latent", vae.encode(o.in(k, "video"))}};
}

Outputs run_vae_decode(const Case& k, const std::filesystem::path& weights, const RunOptions& o) {
  auto vae = vae::WanVAE::load(weights, o.precision);
  vae.to(o.device);
  return {{"video", vae.decode(o.in(k, "latent"))}};
}

}  // namespace

void add_wan_components(std::map<std::string, Component>& out) {
  out["wan21.dit"] = {"wan21.dit", true, run_dit, /*fp8=*/true};
  out["wan21.vae.encode"] = {"wan21.vae.encode", true, run_vae_encode};
  out["wan21.vae.decode"] = {"wan21.vae.decode", true, run_vae_decode};
}

}  // namespace kinora::conformance
