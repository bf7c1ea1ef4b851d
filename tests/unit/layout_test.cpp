#include <gtest/gtest.h>

#include "io/checkpoint.h"
#include "io/layout.h"
#include "test_util.h"

using namespace kinora::io;

struct FixtureLayout {
  const char* file;
  Family family;
  Layout layout;
};

// gtest prints a parameter with this (else as its raw bytes).
void PrintTo(const FixtureLayout& f, std::ostream* os) {
  *os << f.file << " (" << family_name(f.family) << ", " << layout_name(f.layout) << ")";
}

class FixtureWeights : public ::testing::TestWithParam<FixtureLayout> {};

TEST_P(FixtureWeights, FamilyAndLayoutAreReadFromNamesAndShapes) {
  const auto& p = GetParam();
  const auto ck = Checkpoint::open(kinora::test::fixture(p.file));
  const auto d = detect_layout(ck.shapes());
  EXPECT_EQ(d.family, p.family) << family_name(d.family);
  EXPECT_EQ(d.layout, p.layout) << layout_name(d.layout);
  EXPECT_FALSE(d.summary.empty());
}

INSTANTIATE_TEST_SUITE_P(
    Layout, FixtureWeights,
    ::testing::Values(
        FixtureLayout{"wan21_dit_tiny.safetensors", Family::WanDiT, Layout::Original},
        FixtureLayout{"wan21_dit_tiny.comfy.safetensors", Family::WanDiT, Layout::ComfyUI},
        FixtureLayout{"wan21_dit_tiny.diffusers.safetensors", Family::WanDiT, Layout::Diffusers},
        FixtureLayout{"wan21_vae_tiny.safetensors", Family::WanVAE, Layout::Original},
        FixtureLayout{"wan21_vae_tiny.diffusers.safetensors", Family::WanVAE, Layout::Diffusers},
        FixtureLayout{"umt5_enc_tiny.safetensors", Family::UMT5, Layout::Original},
        FixtureLayout{"umt5_enc_tiny.hf.safetensors", Family::UMT5, Layout::HF},
        FixtureLayout{"t5_enc_tiny.safetensors", Family::T5, Layout::Original},
        FixtureLayout{"t5_enc_tiny.hf.safetensors", Family::T5, Layout::HF},
        FixtureLayout{"clip_l_tiny.safetensors", Family::CLIP, Layout::HF},
        FixtureLayout{"flux1_dev_tiny.safetensors", Family::FluxDiT, Layout::Original},
        FixtureLayout{"flux1_dev_tiny.diffusers.safetensors", Family::FluxDiT, Layout::Diffusers},
        FixtureLayout{"flux1_schnell_tiny.safetensors", Family::FluxDiT, Layout::Original},
        FixtureLayout{"flux1_schnell_tiny.diffusers.safetensors", Family::FluxDiT,
                      Layout::Diffusers},
        FixtureLayout{"flux1_ae_tiny.safetensors", Family::KLAutoencoder, Layout::Original},
        FixtureLayout{"sdxl_vae_tiny.safetensors", Family::KLAutoencoder, Layout::Original},
        FixtureLayout{"sdxl_vae_tiny.diffusers.safetensors", Family::KLAutoencoder,
                      Layout::Diffusers},
        FixtureLayout{"sdxl_unet_tiny.safetensors", Family::UNet, Layout::Original},
        FixtureLayout{"sdxl_unet_tiny.diffusers.safetensors", Family::UNet, Layout::Diffusers},
        FixtureLayout{"clip_g_tiny.safetensors", Family::OpenCLIP, Layout::Original}),
    [](const auto& test_param) {
      std::string n = test_param.param.file;
      for (auto& c : n)
        if (!std::isalnum(static_cast<unsigned char>(c))) c = '_';
      return n;
    });

// Real checkpoints are recognised from their shapes alone: a shape map with the
// names and shapes of Wan 2.1 1.3B.
ShapeMap wan_shapes(int64_t dim, int64_t ffn, int64_t in_dim, int layers,
                    const std::string& prefix = "") {
  ShapeMap m;
  m[prefix + "patch_embedding.weight"] = {dim, in_dim, 1, 2, 2};
  m[prefix + "patch_embedding.bias"] = {dim};
  m[prefix + "text_embedding.0.weight"] = {dim, 4096};
  m[prefix + "head.head.weight"] = {64, dim};
  for (int i = 0; i < layers; ++i) {
    const auto b = prefix + "blocks." + std::to_string(i) + ".";
    m[b + "self_attn.q.weight"] = {dim, dim};
    m[b + "ffn.0.weight"] = {ffn, dim};
    m[b + "modulation"] = {1, 6, dim};
  }
  return m;
}

TEST(Layout, RealShapesNameTheWanVariant) {
  auto d = detect_layout(wan_shapes(1536, 8960, 16, 30));
  EXPECT_EQ(d.family, Family::WanDiT);
  EXPECT_NE(d.summary.find("width 1536"), std::string::npos) << d.summary;
  EXPECT_NE(d.summary.find("30 layers"), std::string::npos) << d.summary;
  d = detect_layout(wan_shapes(5120, 13824, 16, 40, "model.diffusion_model."));
  EXPECT_EQ(d.layout, Layout::ComfyUI);
  EXPECT_NE(d.summary.find("40 layers"), std::string::npos) << d.summary;
  d = detect_layout(wan_shapes(3072, 14336, 48, 30, "diffusion_model."));
  EXPECT_EQ(d.layout, Layout::ComfyUI);
  EXPECT_NE(d.summary.find("channels 48"), std::string::npos) << d.summary;
}

// Part of a Wan DiT (one shard of a sharded one): what it holds, and "?" for
// what the missing tensors would say, never a made-up number.
TEST(Layout, AnIncompleteWanDiTHasNoMadeUpSizes) {
  auto m = wan_shapes(1536, 8960, 16, 15);
  m.erase("head.head.weight");
  const auto d = detect_layout(m);
  EXPECT_EQ(d.family, Family::WanDiT);
  EXPECT_NE(d.summary.find("channels 16→?"), std::string::npos) << d.summary;
  EXPECT_EQ(d.summary.find("-1"), std::string::npos) << d.summary;
}

// The Wan 2.2 VAE (TI2V-5B's, 48 latent channels; Wan2.2 vae2_2.py's names,
// its stages' blocks nested under "upsamples.N.upsamples.M") is named as
// such, in either layout, and not taken for the Wan 2.1 VAE.
TEST(Layout, TheWan22VaeIsNamedNotTakenForTheWan21One) {
  const ShapeMap original{{"conv1.weight", {96, 96, 1, 1, 1}},
                          {"conv2.weight", {48, 48, 1, 1, 1}},
                          {"encoder.conv1.weight", {160, 12, 3, 3, 3}},
                          {"decoder.conv1.weight", {1024, 48, 3, 3, 3}},
                          {"decoder.upsamples.0.upsamples.0.residual.0.gamma", {1024, 1, 1, 1}},
                          {"decoder.head.2.weight", {12, 256, 3, 3, 3}}};
  auto d = detect_layout(original);
  EXPECT_EQ(d.family, Family::Wan22VAE) << family_name(d.family);
  EXPECT_EQ(d.layout, Layout::Original);
  EXPECT_NE(d.summary.find("latent channels 48"), std::string::npos) << d.summary;
  EXPECT_EQ(detect_layout(original, {Family::WanVAE}).family, Family::Wan22VAE);
  const std::string name = family_name(Family::Wan22VAE);
  EXPECT_NE(name.find("Wan 2.2 VAE"), std::string::npos);
  EXPECT_NE(name.find("does not support it yet"), std::string::npos);

  const ShapeMap diffusers{{"encoder.conv_in.weight", {160, 12, 3, 3, 3}},
                           {"post_quant_conv.weight", {48, 48, 1, 1, 1}},
                           {"decoder.conv_in.weight", {1024, 48, 3, 3, 3}},
                           {"decoder.up_blocks.0.resnets.0.conv1.weight", {1024, 1024, 3, 3, 3}}};
  d = detect_layout(diffusers);
  EXPECT_EQ(d.family, Family::Wan22VAE);
  EXPECT_EQ(d.layout, Layout::Diffusers);
  // The Wan 2.1 VAE stays what it was.
  EXPECT_EQ(
      detect_layout(Checkpoint::open(kinora::test::fixture("wan21_vae_tiny.safetensors")).shapes())
          .family,
      Family::WanVAE);
}

TEST(Layout, UnknownTensorsAreNotGuessed) {
  ShapeMap m{{"foo.weight", {3, 3}}, {"bar.bias", {3}}};
  EXPECT_EQ(detect_layout(m).family, Family::Unknown);
  EXPECT_EQ(detect_layout({}).family, Family::Unknown);
}

TEST(Layout, CountIndexed) {
  ShapeMap m{{"blocks.0.a", {}},
             {"blocks.1.a", {}},
             {"blocks.1.b", {}},
             {"blocks.10.a", {}},
             {"blocksx.3.a", {}}};
  EXPECT_EQ(count_indexed(m, "blocks."), 3);
}
