// FLUX.1 cases: the DiT forward on packed tokens, the autoencoder's encode and
// decode.
#include "conformance/components.h"
#include "diffusion/flux_dit.h"
#include "layers/fp8.h"
#include "vae/kl_autoencoder.h"

namespace kinora::conformance {
namespace {

Outputs run_dit(const Case& k, const std::filesystem::path& weights, const RunOptions& o) {
  auto model = diffusion::FluxModel::load(weights, o.precision);
  if (o.fp8) layers::use_fp8_matmuls(model, o.device);
  model.to(o.device);
  const torch::Tensor guidance = k.inputs.count("guidance") ? o.in(k, "guidance") : torch::Tensor();
  return {
      {"pred", model.forward(o.in(k, "img"), o.in(k, "img_ids"), o.in(k, "txt"), o.in(k, "txt_ids"),
                             o.in(k, "timesteps"), o.in(k, "y"), guidance)}};
}

Outputs run_ae_encode(const Case& k, const std::filesystem::path& weights, const RunOptions& o) {
  auto ae = vae::KLAutoencoder::load(weights, o.precision);
  ae.to(o.device);
  return {{"latent", ae.encode_image(o.in(k, "image"))}};
}

Outputs run_ae_decode(const Case& k, const std::filesystem::path& weights, const RunOptions& o) {
  auto ae = vae::KLAutoencoder::load(weights, o.precision);
  ae.to(o.device);
  return {{"image", ae.decode_image(o.in(k, "latent"))}};
}

}  // namespace

void add_flux_components(std::map<std::string, Component>& out) {
  out["flux1.dit"] = {"flux1.dit", true, run_dit, /*fp8=*/true};
  out["flux1.ae.encode"] = {"flux1.ae.encode", true, run_ae_encode};
  out["flux1.ae.decode"] = {"flux1.ae.decode", true, run_ae_decode};
}

}  // namespace kinora::conformance
