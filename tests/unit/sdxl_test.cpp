// SDXL end to end: `kinora generate` from tiny random-weight files, as four
// separate files and as one single-file checkpoint assembled from them; the
// configuration a real file gives; the wrong combinations refused by name.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <fstream>
#include <nlohmann/json.hpp>

#include "diffusion/sdxl_unet.h"
#include "flux_files.h"
#include "io/checkpoint.h"
#include "io/layout.h"
#include "sdxl_files.h"
#include "sdxl_shapes.h"
#include "test_util.h"

using kinora::test::error_of;
using kinora::test::fixture;
using kinora::test::sh;
using kinora::test::TempDir;
using ::testing::HasSubstr;
using ::testing::Not;
namespace fs = std::filesystem;

namespace {

// With a fixed thread count: the default follows the cores idle at the
// moment, and another count sums matmuls in another order, so renders that
// must give the same pixels run with the same one.
std::string kinora_bin() {
  std::string bin = "KINORA_THREADS=2 ";
  return bin.append(KINORA_BIN_DIR).append("/kinora");
}

std::string rgb_of(const fs::path& image) {
  return sh("ffmpeg -v error -i '" + image.string() + "' -f rawvideo -pix_fmt rgb24 -").out;
}

class SdxlCli : public ::testing::Test {
 protected:
  void SetUp() override {
    f = kinora::test::write_tiny_sdxl(dir.path());
    tok = kinora::test::write_clip_tokenizer(dir / "clip_tokenizer");
  }
  std::string separate() const {
    return " --model " + f.unet.string() + " --vae " + f.vae.string() + " --clip " +
           f.clip_l.string() + " --text-encoder " + f.clip_g.string() + " --clip-tokenizer " +
           tok.string();
  }
  std::string base(const std::string& prompt = "a red fox") const {
    return kinora_bin() + " generate -p '" + prompt +
           "' --seed 5 --width 64 --height 64 --steps 3 --precision fp32";
  }
  TempDir dir;
  kinora::test::TinySdxlFiles f;
  fs::path tok;
};

}  // namespace

TEST(SdxlUNet, ConfigurationFromTheNamesAndShapesOfAFileWithoutMetadata) {
  TempDir dir;
  const auto files = kinora::test::write_tiny_sdxl(dir.path());
  for (const auto& file : {files.unet, files.checkpoint}) {
    const auto ck = kinora::io::Checkpoint::open(file);
    const auto c = kinora::diffusion::SDXLUNetConfig::from_checkpoint(ck);
    const auto want = kinora::test::tiny_sdxl_unet_config();
    EXPECT_EQ(c.model_channels, want.model_channels);
    EXPECT_EQ(c.channel_mult, want.channel_mult);
    EXPECT_EQ(c.num_res_blocks, want.num_res_blocks);
    EXPECT_EQ(c.transformer_depth, want.transformer_depth);
    EXPECT_EQ(c.transformer_depth_middle, want.transformer_depth_middle);
    EXPECT_EQ(c.transformer_depth_output, want.transformer_depth_output);
    EXPECT_EQ(c.context_dim, 128);
    EXPECT_EQ(c.adm_in_channels, 64 + 6 * 256);
    EXPECT_EQ(c.pooled_dim(), 64);
    EXPECT_EQ(c.groups, 32);
    EXPECT_EQ(c.heads_at(1, 64), 1);  // 64-wide heads
  }
  // The real SDXL base: the default configuration is its.
  EXPECT_EQ(kinora::diffusion::SDXLUNetConfig().variant(), "SDXL");
  // A single-file checkpoint shows every part.
  const auto parts =
      kinora::io::detect_parts(kinora::io::Checkpoint::open(files.checkpoint).shapes());
  std::vector<kinora::io::Family> families;
  for (const auto& p : parts) families.push_back(p.family);
  EXPECT_THAT(families, ::testing::UnorderedElementsAre(
                            kinora::io::Family::UNet, kinora::io::Family::KLAutoencoder,
                            kinora::io::Family::CLIP, kinora::io::Family::OpenCLIP));
}

// A UNet narrower than one 64-wide head (the tiny test UNet) needs the heads
// its configuration gives; without it the file is refused saying so.
TEST(SdxlUNet, ANarrowUNetWithoutItsConfigurationIsRefusedSayingWhy) {
  TempDir dir;
  const auto ck = kinora::io::Checkpoint::open(fixture("sdxl_unet_tiny.safetensors"));
  std::vector<std::pair<std::string, torch::Tensor>> tensors;
  for (const auto& name : ck.names()) tensors.emplace_back(name, ck.get(name));
  const auto bare = dir / "unet.safetensors";
  kinora::io::save_safetensors(bare, tensors);
  try {
    kinora::diffusion::SDXLUNetConfig::from_checkpoint(kinora::io::Checkpoint::open(bare));
    ADD_FAILURE() << "a 32-wide level without configured heads was taken";
  } catch (const kinora::Error& e) {
    EXPECT_THAT(e.what(), HasSubstr("unet.safetensors"));
    EXPECT_THAT(e.what(), HasSubstr("width 32 at level 1 is no whole number of 64-wide heads"));
    EXPECT_THAT(e.what(), HasSubstr("no configuration"));
    EXPECT_THAT(e.what(), Not(HasSubstr("0 heads")));
  }
}

TEST(SdxlUNet, TheSizeConditioningAndTheKeyMaskChangeTheOutputAsTheyShould) {
  kinora::diffusion::SDXLUNet m(kinora::test::tiny_sdxl_unet_config());
  torch::NoGradGuard g;
  {
    auto t = kinora::test::tiny_sdxl_unet();
    auto params = m.module().named_parameters();
    for (auto& [k, v] : t) params[k].set_data(v);
  }
  torch::manual_seed(0);
  const auto x = torch::randn({1, 4, 8, 8}), ctx = torch::randn({1, 77, 128}),
             pooled = torch::randn({1, 64}), t = torch::full({1}, 500.0);
  const auto ids = torch::tensor({{64.f, 64.f, 0.f, 0.f, 64.f, 64.f}});
  const auto out = m.forward(x, t, ctx, pooled, ids);
  // Other size numbers, another output.
  const auto ids2 = torch::tensor({{128.f, 128.f, 0.f, 0.f, 64.f, 64.f}});
  EXPECT_GT((m.forward(x, t, ctx, pooled, ids2) - out).abs().max().item<double>(), 1e-6);
  // A context padded with zeros whose padding is masked out: the same output
  // as the unpadded one (a guided batch's shorter prompt).
  const auto padded = torch::cat({ctx, torch::zeros({1, 77, 128})}, 1);
  auto mask = torch::cat({torch::ones({1, 77}), torch::zeros({1, 77})}, 1);
  const auto masked = m.forward(x, t, padded, pooled, ids, mask);
  EXPECT_LT((masked - out).abs().max().item<double>(), 1e-5);
  EXPECT_GT((m.forward(x, t, padded, pooled, ids) - out).abs().max().item<double>(), 1e-5);
  // The denoiser gives the size conditioning of a fresh 64×64 image.
  kinora::layers::Conditioning c;
  c.context = ctx;
  c.pooled = pooled;
  const auto d = m.denoise(x.unsqueeze(2), t, c);
  EXPECT_LT((d.squeeze(2) - out).abs().max().item<double>(), 1e-6);
}

TEST_F(SdxlCli, SeparateFilesAndTheSingleFileCheckpointRenderTheSameRestorablePng) {
  const auto a = dir / "a.png";
  const auto r = sh(base() + separate() + " --out " + a.string());
  ASSERT_EQ(r.code, 0) << r.out;
  ASSERT_TRUE(fs::is_regular_file(a)) << r.out;
  const auto restored = sh(kinora_bin() + " restore " + a.string());
  ASSERT_EQ(restored.code, 0) << restored.out;
  const auto j = nlohmann::json::parse(restored.out);
  EXPECT_EQ(j["family"], "sdxl");
  EXPECT_EQ(j["sampler"], "dpmpp_2m_karras");  // SDXL's defaults where none was given
  EXPECT_EQ(j["guidance"], 6.0);
  EXPECT_EQ(j["steps"], 3);
  EXPECT_EQ(j["frames"], 1);

  // The same four parts in one file: the same pixels.
  const auto b = dir / "b.png";
  const auto one = sh(base() + " --model " + f.checkpoint.string() + " --clip-tokenizer " +
                      tok.string() + " --out " + b.string());
  ASSERT_EQ(one.code, 0) << one.out;
  EXPECT_THAT(one.out, HasSubstr("SDXL checkpoint"));
  ASSERT_EQ(rgb_of(a).size(), 64u * 64u * 3u);
  EXPECT_TRUE(rgb_of(a) == rgb_of(b));

  // Its restored preset renders again from the checkpoint's own name under
  // models_dir/checkpoints/.
  fs::create_directories(dir / "models" / "checkpoints");
  fs::copy_file(f.checkpoint, dir / "models" / "checkpoints" / "tiny.safetensors");
  auto p = nlohmann::json::parse(sh(kinora_bin() + " restore " + b.string()).out);
  p["model"] = "tiny";
  p["models_dir"] = (dir / "models").string();
  p["clip_tokenizer"] = tok.string();
  p["output"] = "again.png";
  std::ofstream(dir / "again.json") << p.dump(2);
  const auto again = sh(kinora_bin() + " render " + (dir / "again.json").string());
  ASSERT_EQ(again.code, 0) << again.out;
  EXPECT_TRUE(rgb_of(b) == rgb_of(dir / "again.png"));

  // A separate VAE overrides the checkpoint's.
  auto other_vae = kinora::test::tiny_sdxl_vae();
  for (auto& [k, v] : other_vae)
    if (k.rfind("decoder.conv_out", 0) == 0) v = v * -1;
  kinora::io::save_safetensors(dir / "other_vae.safetensors", other_vae);
  const auto c = dir / "c.png";
  const auto vae =
      sh(base() + " --model " + f.checkpoint.string() + " --clip-tokenizer " + tok.string() +
         " --vae " + (dir / "other_vae.safetensors").string() + " --out " + c.string());
  ASSERT_EQ(vae.code, 0) << vae.out;
  EXPECT_TRUE(rgb_of(c) != rgb_of(b));
  EXPECT_EQ(nlohmann::json::parse(sh(kinora_bin() + " restore " + c.string()).out)["vae"],
            "other_vae.safetensors");
}

TEST_F(SdxlCli, EverySamplerRendersAndFlowSamplersAreRefused) {
  std::map<std::string, std::string> pixels;
  for (const char* s : {"euler", "euler_ancestral", "dpmpp_2m", "dpmpp_2m_karras"}) {
    const auto out = dir / (std::string(s) + ".png");
    const auto r = sh(base() + separate() + " --sampler " + s + " --out " + out.string());
    ASSERT_EQ(r.code, 0) << s << ": " << r.out;
    pixels[s] = rgb_of(out);
  }
  EXPECT_TRUE(pixels["euler"] != pixels["euler_ancestral"]);
  EXPECT_TRUE(pixels["dpmpp_2m"] != pixels["dpmpp_2m_karras"]);
  // Euler ancestral's noise comes from the seed: the same image again.
  const auto again = dir / "again.png";
  ASSERT_EQ(sh(base() + separate() + " --sampler euler_a --out " + again.string()).code, 0);
  EXPECT_TRUE(rgb_of(again) == pixels["euler_ancestral"]);
  const auto flow =
      sh(base() + separate() + " --sampler flow_unipc --out " + (dir / "flow.png").string());
  EXPECT_NE(flow.code, 0);
  EXPECT_THAT(flow.out, HasSubstr("flow_unipc"));
  EXPECT_FALSE(fs::exists(dir / "flow.png"));
}

TEST_F(SdxlCli, LongPromptsAndWeightsAreReadAndANegativePromptChangesTheImage) {
  std::string long_prompt;
  for (int i = 0; i < 30; ++i) long_prompt += "red fox, ";
  const auto r = sh(base(long_prompt) + separate() + " --out " + (dir / "long.png").string());
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_THAT(r.out, HasSubstr("chunks"));
  ASSERT_EQ(sh(base("a (red:1.5) fox") + separate() + " --out " + (dir / "w.png").string()).code,
            0);
  ASSERT_EQ(sh(base("a red fox") + separate() + " --out " + (dir / "p.png").string()).code, 0);
  EXPECT_TRUE(rgb_of(dir / "w.png") != rgb_of(dir / "p.png"));
  ASSERT_EQ(
      sh(base("a red fox") + separate() + " --negative 'rer' --out " + (dir / "n.png").string())
          .code,
      0);
  EXPECT_TRUE(rgb_of(dir / "n.png") != rgb_of(dir / "p.png"));
}

TEST_F(SdxlCli, WrongCombinationsAreRefusedNamingBothFilesBeforeSampling) {
  auto with = [&](const std::string& flag, const fs::path& file) {
    auto s = separate();
    const auto at = s.find(" " + flag + " ");
    const auto end = s.find(' ', at + flag.size() + 2);
    return s.substr(0, at) + " " + flag + " " + file.string() +
           (end == std::string::npos ? "" : s.substr(end));
  };
  // The FLUX autoencoder with the SDXL UNet.
  const auto flux_ae = sh(base() + with("--vae", fixture("flux1_ae_tiny.safetensors")) + " --out " +
                          (dir / "a.png").string());
  EXPECT_NE(flux_ae.code, 0);
  EXPECT_THAT(flux_ae.out, HasSubstr("flux1_ae_tiny.safetensors"));
  EXPECT_THAT(flux_ae.out, HasSubstr("sdxl_unet.safetensors"));
  EXPECT_THAT(flux_ae.out, Not(HasSubstr("step 1")));
  // A CLIP-L (SD 1.5's encoder) where bigG goes.
  const auto clip_as_g =
      sh(base() + with("--text-encoder", f.clip_l) + " --out " + (dir / "b.png").string());
  EXPECT_NE(clip_as_g.code, 0);
  EXPECT_THAT(clip_as_g.out, HasSubstr("clip_l.safetensors"));
  EXPECT_THAT(clip_as_g.out, HasSubstr("sdxl_unet.safetensors"));
  // Encoders of another width than the UNet takes.
  const auto narrow = sh(base() + with("--text-encoder", fixture("clip_g_tiny.safetensors")) +
                         " --out " + (dir / "c.png").string());
  EXPECT_NE(narrow.code, 0);
  EXPECT_THAT(narrow.out, HasSubstr("sdxl_unet.safetensors"));
  EXPECT_THAT(narrow.out, HasSubstr("clip_g_tiny.safetensors"));
  // A UNet alone, with nothing for its VAE.
  const auto alone = sh(base() + " --model " + f.unet.string() + " --clip-tokenizer " +
                        tok.string() + " --out " + (dir / "d.png").string());
  EXPECT_NE(alone.code, 0);
  EXPECT_THAT(alone.out, HasSubstr("sdxl_unet.safetensors holds no VAE"));
  EXPECT_THAT(alone.out, HasSubstr("--vae"));
  // Wan's second expert.
  const auto m2 = sh(base() + separate() + " --model2 " + f.unet.string() + " --out " +
                     (dir / "e.png").string());
  EXPECT_NE(m2.code, 0);
  EXPECT_THAT(m2.out, HasSubstr("model2"));
  for (const char* o : {"a.png", "b.png", "c.png", "d.png", "e.png"})
    EXPECT_FALSE(fs::exists(dir / o)) << o;
}

namespace {
// A kohya-style LoRA of rank 2 on the given modules ("lora_unet_…" etc.:
// stem → [out, in]), seeded.
void write_lora(const fs::path& path, const std::map<std::string, std::pair<int, int>>& stems,
                const char* down = ".lora_down.weight", const char* up = ".lora_up.weight") {
  torch::manual_seed(21);
  kinora::test::Tensors t;
  for (const auto& [stem, shape] : stems) {
    t.emplace_back(stem + down, torch::randn({2, shape.second}) * 0.5);
    t.emplace_back(stem + up, torch::randn({shape.first, 2}) * 0.5);
  }
  kinora::io::save_safetensors(path, t);
}
}  // namespace

TEST_F(SdxlCli, LorasApplyToTheUNetAndToBothTextEncoders) {
  const auto plain = dir / "plain.png";
  ASSERT_EQ(sh(base() + separate() + " --out " + plain.string()).code, 0);
  // A shift (FLUX's and Wan's setting) is said not to be used, and changes nothing.
  const auto shifted = sh(base() + separate() + " --shift 3 --out " + (dir / "s.png").string());
  EXPECT_THAT(shifted.out, HasSubstr("shift 3.0 is not used: SDXL")) << shifted.out;
  EXPECT_TRUE(rgb_of(dir / "s.png") == rgb_of(plain));
  auto render = [&](const fs::path& lora, const std::string& strength, const std::string& name) {
    const auto out = dir / name;
    const auto r = sh(base() + separate() + " --lora " + lora.string() + ":" + strength +
                      " --out " + out.string());
    EXPECT_EQ(r.code, 0) << r.out;
    return std::make_pair(rgb_of(out), r.out);
  };
  // The UNet (original names, as kohya writes SDXL LoRAs) and both encoders.
  const auto all = dir / "all.safetensors";
  write_lora(all, {{"lora_unet_input_blocks_3_1_transformer_blocks_0_attn2_to_k", {64, 128}},
                   {"lora_te1_text_model_encoder_layers_0_self_attn_q_proj", {64, 64}},
                   {"lora_te2_text_model_encoder_layers_0_mlp_fc1", {128, 64}}});
  const auto [with_all, said] = render(all, "1", "all.png");
  EXPECT_TRUE(with_all != rgb_of(plain));
  EXPECT_THAT(said, HasSubstr("3 of 3"));
  EXPECT_TRUE(render(all, "0", "zero.png").first == rgb_of(plain));
  // `lora inspect` against the UNet alone leaves the encoders' updates
  // unchecked, saying so; with the encoders' files, all three match.
  const auto inspect =
      kinora_bin() + " lora inspect " + all.string() + " --model " + f.unet.string();
  const auto alone = sh(inspect);
  EXPECT_EQ(alone.code, 0) << alone.out;
  EXPECT_THAT(alone.out, HasSubstr("1 of 1 updates matched"));
  EXPECT_THAT(alone.out, HasSubstr("2 text encoder updates not checked: give --clip"));
  const auto both =
      sh(inspect + " --clip " + f.clip_l.string() + " --text-encoder " + f.clip_g.string());
  EXPECT_EQ(both.code, 0) << both.out;
  EXPECT_THAT(both.out, HasSubstr("3 of 3 updates matched"));
  EXPECT_THAT(both.out, Not(HasSubstr("not checked")));
  // The encoders by name under --models-dir, as --model and generate find them.
  const auto models = dir / "models";
  fs::create_directories(models / "text_encoders");
  fs::copy_file(f.clip_l, models / "text_encoders" / "clip_l.safetensors");
  fs::copy_file(f.clip_g, models / "text_encoders" / "clip_g.safetensors");
  const auto by_name =
      sh(inspect + " --clip clip_l --text-encoder clip_g --models-dir " + models.string());
  EXPECT_EQ(by_name.code, 0) << by_name.out;
  EXPECT_THAT(by_name.out, HasSubstr("3 of 3 updates matched")) << by_name.out;
  const auto no_clip =
      sh(inspect + " --clip clip_x --text-encoder clip_g --models-dir " + models.string());
  EXPECT_NE(no_clip.code, 0);
  EXPECT_THAT(no_clip.out, HasSubstr("lora inspect --clip: key 'clip': 'clip_x' not found"))
      << no_clip.out;
  // Each text encoder alone changes the image: its update is applied.
  for (const char* stem : {"lora_te1_text_model_encoder_layers_0_self_attn_v_proj",
                           "lora_te2_text_model_encoder_layers_0_self_attn_out_proj"}) {
    const auto te = dir / (std::string(stem).substr(0, 9) + ".safetensors");
    write_lora(te, {{stem, {64, 64}}});
    EXPECT_TRUE(render(te, "1", std::string(stem).substr(0, 9) + ".png").first != rgb_of(plain))
        << stem;
  }
  // diffusers / PEFT names: the UNet's diffusers names and text_encoder_2.
  const auto peft = dir / "peft.safetensors";
  write_lora(peft,
             {{"unet.down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q", {64, 64}},
              {"text_encoder_2.text_model.encoder.layers.1.self_attn.k_proj", {64, 64}}},
             ".lora_A.weight", ".lora_B.weight");
  const auto [with_peft, peft_said] = render(peft, "1", "peft.png");
  EXPECT_TRUE(with_peft != rgb_of(plain));
  EXPECT_THAT(peft_said, HasSubstr("2 of 2"));
  // An SD 1.5 text-encoder LoRA (lora_te_, one encoder) holds nothing for SDXL.
  const auto sd15 = dir / "sd15.safetensors";
  write_lora(sd15, {{"lora_te_text_model_encoder_layers_0_self_attn_q_proj", {64, 64}}});
  const auto r = sh(base() + separate() + " --lora " + sd15.string() + " --out " +
                    (dir / "sd15.png").string());
  EXPECT_NE(r.code, 0);
  EXPECT_THAT(r.out, HasSubstr("sd15.safetensors"));
  EXPECT_FALSE(fs::exists(dir / "sd15.png"));
}

// The released SDXL base checkpoint's names and shapes (a sparse file): every
// part recognised and configured as SDXL's, from the shapes alone.
TEST(SdxlShapes, TheReleasedCheckpointsPartsAreRecognisedAndConfigured) {
  TempDir dir;
  const auto path = dir / "sd_xl_base_1.0.safetensors";
  kinora::test::write_sparse(path, kinora::test::sdxl_checkpoint_keys(), "F16");
  const auto ck = kinora::io::Checkpoint::open(path);
  const auto d = kinora::io::detect_layout(ck.shapes());
  EXPECT_EQ(d.family, kinora::io::Family::UNet);
  EXPECT_EQ(d.layout, kinora::io::Layout::ComfyUI);
  EXPECT_THAT(d.summary, HasSubstr("SDXL: channels 320"));
  EXPECT_EQ(kinora::io::detect_parts(ck.shapes()).size(), 4u);

  const auto u = kinora::diffusion::SDXLUNetConfig::from_checkpoint(ck);
  const kinora::diffusion::SDXLUNetConfig sdxl;
  EXPECT_EQ(u.variant(), "SDXL");
  EXPECT_EQ(u.channel_mult, sdxl.channel_mult);
  EXPECT_EQ(u.transformer_depth, sdxl.transformer_depth);
  EXPECT_EQ(u.transformer_depth_middle, 10);
  EXPECT_EQ(u.transformer_depth_output, sdxl.transformer_depth_output);
  EXPECT_EQ(u.num_res_blocks, 2);
  EXPECT_EQ(u.context_dim, 2048);
  EXPECT_EQ(u.adm_in_channels, 2816);
  EXPECT_EQ(u.pooled_dim(), 1280);
  EXPECT_EQ(u.heads_at(2, 1280), 20);
  EXPECT_EQ(u.groups, 32);

  const auto v = kinora::vae::KLAutoencoderConfig::from_checkpoint(ck);
  EXPECT_EQ(v.z_channels, 4);
  EXPECT_EQ(v.ch, 128);
  EXPECT_EQ(v.ch_mult, (std::vector<int64_t>{1, 2, 4, 4}));
  EXPECT_TRUE(v.quant_conv);
  EXPECT_DOUBLE_EQ(v.scale_factor, 0.13025);

  const auto l = kinora::text::CLIPTextConfig::from_checkpoint(ck, kinora::io::Family::CLIP);
  EXPECT_EQ(l.hidden_size, 768);
  EXPECT_EQ(l.num_hidden_layers, 12);
  EXPECT_EQ(l.num_attention_heads, 12);
  EXPECT_TRUE(l.quick_gelu);
  EXPECT_EQ(l.projection_dim, 0);
  const auto g = kinora::text::CLIPTextConfig::from_checkpoint(ck, kinora::io::Family::OpenCLIP);
  EXPECT_EQ(g.hidden_size, 1280);
  EXPECT_EQ(g.num_hidden_layers, 32);
  EXPECT_EQ(g.num_attention_heads, 20);
  EXPECT_FALSE(g.quick_gelu);
  EXPECT_EQ(g.projection_dim, 1280);

  // `kinora info` names every part.
  const auto info = sh(kinora_bin() + " info " + path.string());
  EXPECT_EQ(info.code, 0) << info.out;
  EXPECT_THAT(info.out, HasSubstr("SD/SDXL UNet"));
  EXPECT_THAT(info.out, HasSubstr("also:     image autoencoder under 'first_stage_model.'"));
  EXPECT_THAT(info.out, HasSubstr("also:     OpenCLIP text encoder under"));
  EXPECT_THAT(info.out, HasSubstr("also:     CLIP text encoder under"));
}

// Not a test: writes the tiny SDXL files and a CLIP tokenizer into
// $KINORA_TINY_SDXL_DIR laid out as a ComfyUI models folder, to try the
// command line and the studio by hand:
//   KINORA_TINY_SDXL_DIR=/tmp/models build/bin/test_sdxl
//     --gtest_also_run_disabled_tests --gtest_filter='*WriteTinyModels*'
TEST(SdxlFiles, DISABLED_WriteTinyModels) {
  const char* to = std::getenv("KINORA_TINY_SDXL_DIR");
  ASSERT_NE(to, nullptr) << "set KINORA_TINY_SDXL_DIR";
  const fs::path root = to;
  for (const char* sub : {"checkpoints", "diffusion_models", "vae", "text_encoders"})
    fs::create_directories(root / sub);
  TempDir tmp;
  const auto f = kinora::test::write_tiny_sdxl(tmp.path());
  fs::copy_file(f.checkpoint, root / "checkpoints" / "sdxl_tiny.safetensors",
                fs::copy_options::overwrite_existing);
  fs::copy_file(f.unet, root / "diffusion_models" / "sdxl_tiny_unet.safetensors",
                fs::copy_options::overwrite_existing);
  fs::copy_file(f.vae, root / "vae" / "sdxl_tiny_vae.safetensors",
                fs::copy_options::overwrite_existing);
  fs::copy_file(f.clip_l, root / "text_encoders" / "clip_l_tiny.safetensors",
                fs::copy_options::overwrite_existing);
  fs::copy_file(f.clip_g, root / "text_encoders" / "clip_g_tiny.safetensors",
                fs::copy_options::overwrite_existing);
  kinora::test::write_clip_tokenizer(root / "text_encoders" / "clip_tokenizer");
}

// SD 2.x and inpainting UNets are recognised, and refused by name before any
// module is built.
TEST(SdxlShapes, OtherUNetsOfTheFamilyAreRefusedByName) {
  TempDir dir;
  const auto tok = kinora::test::write_clip_tokenizer(dir / "tok");
  auto sd2 = kinora::test::sdxl_checkpoint_keys();
  kinora::test::KeyShapes kept;
  for (auto [name, shape] : sd2) {
    if (name.find("label_emb") != std::string::npos) continue;
    for (const char* kv : {"attn2.to_k.weight", "attn2.to_v.weight"})
      if (name.size() > std::string(kv).size() &&
          name.compare(name.size() - std::string(kv).size(), std::string::npos, kv) == 0)
        shape[1] = 1024;
    kept.emplace_back(name, shape);
  }
  kinora::test::write_sparse(dir / "sd2.safetensors", kept, "F16");
  const auto d =
      kinora::io::detect_layout(kinora::io::Checkpoint::open(dir / "sd2.safetensors").shapes());
  EXPECT_EQ(d.family, kinora::io::Family::UNet);
  EXPECT_THAT(d.summary, HasSubstr("SD 2.x"));
  const std::string gen = kinora_bin() + " generate -p x --width 64 --height 64 --steps 1" +
                          " --clip-tokenizer " + tok.string() + " --model ";
  const auto r2 =
      sh(gen + (dir / "sd2.safetensors").string() + " --out " + (dir / "a.png").string());
  EXPECT_NE(r2.code, 0);
  EXPECT_THAT(r2.out, HasSubstr("sd2.safetensors: an SD 2.x UNet"));
  EXPECT_THAT(r2.out, HasSubstr("not SD 1.x or 2.x"));

  auto inpaint = kinora::test::sdxl_checkpoint_keys();
  for (auto& [name, shape] : inpaint)
    if (name == "model.diffusion_model.input_blocks.0.0.weight") shape[1] = 9;
  kinora::test::write_sparse(dir / "inpaint.safetensors", inpaint, "F16");
  const auto ri =
      sh(gen + (dir / "inpaint.safetensors").string() + " --out " + (dir / "b.png").string());
  EXPECT_NE(ri.code, 0);
  EXPECT_THAT(ri.out, HasSubstr("9 input channels"));
  EXPECT_THAT(ri.out, HasSubstr("inpainting"));
  EXPECT_FALSE(fs::exists(dir / "a.png"));
  EXPECT_FALSE(fs::exists(dir / "b.png"));
}

// What a first user ran into: a preset without "family" in a batch, a UNet
// found by name in diffusion_models/, bigG given as CLIP-L, a LoRA trained
// again under the same name, a sweep with a sampler of the other kind, lora
// merge of a LoRA with text-encoder updates.
TEST_F(SdxlCli, PresetsBatchesSweepsAndLorasAsAUserMeetsThem) {
  const auto models = dir / "models";
  for (const char* sub : {"checkpoints", "diffusion_models", "loras", "text_encoders"})
    fs::create_directories(models / sub);
  fs::copy_file(f.checkpoint, models / "checkpoints" / "tiny.safetensors");
  fs::copy_file(f.unet, models / "diffusion_models" / "tiny_unet.safetensors");
  fs::rename(tok, models / "text_encoders" / "clip_tokenizer");
  // A batch of a preset with no family and no output: SDXL's defaults, a PNG.
  fs::create_directories(dir / "presets");
  std::ofstream(dir / "presets" / "fox.json")
      << R"({"model": "tiny", "prompt": "a red fox", "width": 64, "height": 64, "seed": 1})";
  const auto b = sh(kinora_bin() + " batch " + (dir / "presets").string() + " --models-dir " +
                    models.string());
  ASSERT_EQ(b.code, 0) << b.out;
  ASSERT_TRUE(fs::is_regular_file(dir / "presets" / "fox.png")) << b.out;
  const auto j = nlohmann::json::parse(
      sh(kinora_bin() + " restore " + (dir / "presets/fox.png").string()).out);
  EXPECT_EQ(j["family"], "sdxl");
  EXPECT_EQ(j["steps"], 25);
  EXPECT_EQ(j["guidance"], 6.0);
  EXPECT_EQ(j["sampler"], "dpmpp_2m_karras");

  const std::string base = kinora_bin() + " generate -p 'a red fox' --seed 2 --width 64" +
                           " --height 64 --steps 2 --precision fp32 --models-dir " +
                           models.string();
  // A UNet by name from diffusion_models/, its parts as files.
  const auto unet =
      sh(base + " --model tiny_unet --vae " + f.vae.string() + " --clip " + f.clip_l.string() +
         " --text-encoder " + f.clip_g.string() + " --out " + (dir / "u.png").string());
  EXPECT_EQ(unet.code, 0) << unet.out;
  // bigG where CLIP-L goes.
  const auto g_as_l =
      sh(base + " --model tiny --clip " + f.clip_g.string() + " --out " + (dir / "g.png").string());
  EXPECT_NE(g_as_l.code, 0);
  EXPECT_THAT(g_as_l.out, HasSubstr("clip_g.safetensors: an OpenCLIP text encoder"));
  EXPECT_FALSE(fs::exists(dir / "g.png"));

  // A text-encoder LoRA trained again under the same name: encoded anew.
  const auto lora = models / "loras" / "style.safetensors";
  write_lora(lora, {{"lora_te1_text_model_encoder_layers_0_self_attn_q_proj", {64, 64}}});
  ASSERT_EQ(sh(base + " --model tiny --lora style --out " + (dir / "l1.png").string()).code, 0);
  {
    torch::manual_seed(99);
    kinora::test::Tensors t = {
        {"lora_te1_text_model_encoder_layers_0_self_attn_q_proj.lora_down.weight",
         torch::randn({2, 64})},
        {"lora_te1_text_model_encoder_layers_0_self_attn_q_proj.lora_up.weight",
         torch::randn({64, 2})}};
    kinora::io::save_safetensors(lora, t);
  }
  const auto l2 = sh(base + " --model tiny --lora style --out " + (dir / "l2.png").string());
  ASSERT_EQ(l2.code, 0) << l2.out;
  EXPECT_TRUE(rgb_of(dir / "l1.png") != rgb_of(dir / "l2.png"));
  // lora merge would drop its text-encoder updates: refused.
  const auto merge = sh(kinora_bin() + " lora merge --model " + f.checkpoint.string() + " --lora " +
                        lora.string() + " --out " + (dir / "m.safetensors").string());
  EXPECT_NE(merge.code, 0);
  EXPECT_THAT(merge.out, HasSubstr("text encoders"));
  EXPECT_FALSE(fs::exists(dir / "m.safetensors"));

  // A family key that is not the model's: said so.
  std::ofstream(dir / "presets" / "flux.json")
      << R"({"family": "flux", "model": "tiny", "prompt": "x", "output": "flux.png", "models_dir": ")"
      << models.string() << "\"}";
  const auto wrong = sh(kinora_bin() + " render " + (dir / "presets" / "flux.json").string());
  EXPECT_NE(wrong.code, 0);
  EXPECT_THAT(wrong.out, HasSubstr("key 'family' is 'flux', but tiny.safetensors is a sdxl model"));
  fs::remove(dir / "presets" / "flux.json");

  // A sweep with a flow sampler: refused before its first cell.
  std::ofstream(dir / "presets" / "sw.json") << R"({"model": "tiny", "prompt": "x", "width": 64,
      "height": 64, "steps": 2, "seed": 1, "output": "sw.png", "models_dir": ")"
                                             << models.string() << "\"}";
  const auto sw = sh(kinora_bin() + " sweep " + (dir / "presets" / "sw.json").string() +
                     " --axis sampler=euler,flow_unipc");
  EXPECT_NE(sw.code, 0);
  EXPECT_THAT(sw.out, HasSubstr("flow_unipc"));
  EXPECT_FALSE(fs::exists(dir / "presets" / "sw-sampler=euler.png"));
}
