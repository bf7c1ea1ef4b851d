// SDXL cases: the UNet's forward with the added size and text conditioning,
// and the SD/SDXL autoencoder's encode (the posterior mean, and the latent the
// UNet sees) and decode.
#include "conformance/components.h"
#include "diffusion/sdxl_unet.h"
#include "vae/kl_autoencoder.h"

namespace kinora::conformance {
namespace {

Outputs run_unet(const Case& k, const std::filesystem::path& weights, const RunOptions& o) {
  auto unet = diffusion::SDXLUNet::load(weights, o.precision);
  unet.to(o.device);
  return {{"eps", unet.forward(o.in(k, "x"), o.in(k, "timestep"), o.in(k, "context"),
                               o.in(k, "text_embeds"), o.in(k, "time_ids"))}};
}

Outputs run_vae_encode(const Case& k, const std::filesystem::path& weights, const RunOptions& o) {
  auto ae = vae::KLAutoencoder::load(weights, o.precision);
  ae.to(o.device);
  const auto latent = ae.encode_image(o.in(k, "image"));
  return {{"latent", latent},
          {"mean", latent / ae.config().scale_factor + ae.config().shift_factor}};
}

Outputs run_vae_decode(const Case& k, const std::filesystem::path& weights, const RunOptions& o) {
  auto ae = vae::KLAutoencoder::load(weights, o.precision);
  ae.to(o.device);
  return {{"image", ae.decode_image(o.in(k, "latent"))}};
}

}  // namespace

void add_sdxl_components(std::map<std::string, Component>& out) {
  out["sdxl.unet"] = {"sdxl.unet", true, run_unet};
  out["sdxl.vae.encode"] = {"sdxl.vae.encode", true, run_vae_encode};
  out["sdxl.vae.decode"] = {"sdxl.vae.decode", true, run_vae_decode};
}

}  // namespace kinora::conformance
