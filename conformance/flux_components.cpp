// FLUX.1 cases: the DiT forward on packed tokens, the autoencoder's encode and
// decode.
#include "conformance/components.h"
#include "diffusion/flux_dit.h"
#include "vae/kl_autoencoder.h"

namespace kinora::conformance {
namespace {

Outputs run_dit(const Case& k, const std::filesystem::path& weights, const RunOptions& o) {
  auto model = diffusion::FluxModel::load(weights, o.precision);
  const torch::Tensor guidance = k.inputs.count("guidance") ? k.input("guidance") : torch::Tensor();
  return {
      {"pred", model.forward(k.input("img"), k.input("img_ids"), k.input("txt"), k.input("txt_ids"),
                             k.input("timesteps"), k.input("y"), guidance)}};
}

Outputs run_ae_encode(const Case& k, const std::filesystem::path& weights, const RunOptions& o) {
  auto ae = vae::KLAutoencoder::load(weights, o.precision);
  return {{"latent", ae.encode_image(k.input("image"))}};
}

Outputs run_ae_decode(const Case& k, const std::filesystem::path& weights, const RunOptions& o) {
  auto ae = vae::KLAutoencoder::load(weights, o.precision);
  return {{"image", ae.decode_image(k.input("latent"))}};
}

}  // namespace

void add_flux_components(std::map<std::string, Component>& out) {
  out["flux1.dit"] = {"flux1.dit", true, run_dit};
  out["flux1.ae.encode"] = {"flux1.ae.encode", true, run_ae_encode};
  out["flux1.ae.decode"] = {"flux1.ae.decode", true, run_ae_decode};
}

}  // namespace kinora::conformance
