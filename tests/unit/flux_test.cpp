// FLUX.1: the DiT's configuration from names and shapes in every layout, the
// image variants it refuses, the autoencoder's tiled decode, CLIP's BPE
// tokenizer on a hand-written vocabulary, and text to image end to end on tiny
// random-weight FLUX, T5 and CLIP files through the CLI.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <fstream>
#include <nlohmann/json.hpp>
#include <regex>

#include "diffusion/flux_dit.h"
#include "flux_files.h"
#include "fp8_files.h"
#include "io/checkpoint.h"
#include "io/safetensors.h"
#include "poisoned_files.h"
#include "test_util.h"
#include "text/clip.h"
#include "text/clip_tokenizer.h"
#include "vae/kl_autoencoder.h"

using kinora::test::error_of;
using kinora::test::fixture;
using kinora::test::sh;
using kinora::test::TempDir;
using kinora::test::write_clip_tokenizer;
using kinora::test::write_tiny_flux;
using ::testing::HasSubstr;
namespace fs = std::filesystem;

namespace {

using Tensors = std::vector<std::pair<std::string, torch::Tensor>>;

Tensors tensors_of(const kinora::io::Checkpoint& ck, const std::string& prefix = "") {
  Tensors t;
  for (const auto& n : ck.names()) t.emplace_back(prefix + n, ck.get(n).clone());
  return t;
}

double rel_err(const torch::Tensor& a, const torch::Tensor& b) {
  return ((a.to(torch::kFloat64) - b.to(torch::kFloat64)).norm() / b.to(torch::kFloat64).norm())
      .item<double>();
}

torch::Tensor run_case(const fs::path& weights, const std::string& case_name) {
  const auto c = kinora::io::Checkpoint::open(fixture(case_name));
  auto m = kinora::diffusion::FluxModel::load(weights);
  return m.forward(c.get("input.img"), c.get("input.img_ids"), c.get("input.txt"),
                   c.get("input.txt_ids"), c.get("input.timesteps"), c.get("input.y"),
                   c.contains("input.guidance") ? c.get("input.guidance") : torch::Tensor());
}

std::string kinora_bin() {
  // Appended, not `std::string + "…"`: GCC 12 warns falsely on that here
  // (-Warray-bounds, its bug 105651).
  std::string bin = KINORA_BIN_DIR;
  return bin.append("/kinora");
}

}  // namespace

TEST(Flux, ConfigurationFromNamesAndShapesInEveryLayout) {
  TempDir dir;
  const auto ref =
      kinora::io::Checkpoint::open(fixture("flux1_dev_dit.case.safetensors")).get("output.pred");
  // The original file without its metadata, and under ComfyUI's prefix.
  const auto orig = kinora::io::Checkpoint::open(fixture("flux1_dev_tiny.safetensors"));
  kinora::io::save_safetensors(dir / "bare.safetensors", tensors_of(orig));
  kinora::io::save_safetensors(dir / "comfy.safetensors",
                               tensors_of(orig, "model.diffusion_model."));
  const auto diff = kinora::io::Checkpoint::open(fixture("flux1_dev_tiny.diffusers.safetensors"));
  kinora::io::save_safetensors(dir / "diffusers.safetensors", tensors_of(diff));
  for (const char* f : {"bare.safetensors", "comfy.safetensors", "diffusers.safetensors"}) {
    const auto ck = kinora::io::Checkpoint::open(dir / f);
    const auto c = kinora::diffusion::FluxConfig::from_checkpoint(ck);
    EXPECT_EQ(c.num_heads, 2) << f;
    EXPECT_EQ(c.axes_dim, (std::vector<int64_t>{16, 16, 16})) << f;
    EXPECT_TRUE(c.guidance_embed) << f;
    EXPECT_LT(rel_err(run_case(dir / f, "flux1_dev_dit.case.safetensors"), ref), 1e-4) << f;
  }
  // schnell: no guidance input.
  const auto sch = kinora::io::Checkpoint::open(fixture("flux1_schnell_tiny.safetensors"));
  kinora::io::save_safetensors(dir / "schnell.safetensors", tensors_of(sch));
  EXPECT_FALSE(kinora::diffusion::FluxConfig::from_checkpoint(
                   kinora::io::Checkpoint::open(dir / "schnell.safetensors"))
                   .guidance_embed);
}

// FP8 FLUX files (common: flux1-dev-fp8): Linear weights stay as bytes and are
// widened on use, in the BFL layout and in diffusers' (whose split q/k/v are
// fused from the FP8 parts); both equal the float32 model of the same values.
TEST(Flux, Fp8CheckpointsInBothLayoutsMatchTheirDequantisedValues) {
  TempDir dir;
  const auto c = kinora::io::Checkpoint::open(fixture("flux1_dev_dit.case.safetensors"));
  for (const char* f : {"flux1_dev_tiny.safetensors", "flux1_dev_tiny.diffusers.safetensors"}) {
    const auto fp8 = dir / "fp8" / f, f32 = dir / "f32" / f;
    fs::create_directories(dir / "fp8");
    fs::create_directories(dir / "f32");
    ASSERT_GT(kinora::test::write_fp8_copy(fixture(f), fp8, f32), 10) << f;
    auto a = kinora::diffusion::FluxModel::load(fp8);
    auto b = kinora::diffusion::FluxModel::load(f32);
    bool bytes_kept = false;
    for (const auto& p : a.module().named_parameters())
      if (p.key() == "double_blocks.0.img_mlp.0.weight")
        bytes_kept = p.value().scalar_type() == torch::kUInt8;
    EXPECT_TRUE(bytes_kept) << f;
    auto run = [&](kinora::diffusion::FluxModel& m) {
      return m.forward(c.get("input.img"), c.get("input.img_ids"), c.get("input.txt"),
                       c.get("input.txt_ids"), c.get("input.timesteps"), c.get("input.y"),
                       c.get("input.guidance"));
    };
    EXPECT_LT(rel_err(run(a), run(b)), 1e-6) << f;
  }
}

// CLIP-L as transformers saves a whole CLIPTextModel: under text_model.
TEST(Clip, TheTextModelPrefixIsReadAsTheBareNames) {
  TempDir dir;
  const auto ck = kinora::io::Checkpoint::open(fixture("clip_l_tiny.safetensors"));
  kinora::io::save_safetensors(dir / "clip.safetensors", tensors_of(ck, "text_model."),
                               ck.metadata());
  const auto c = kinora::io::Checkpoint::open(fixture("clip_l_text.case.safetensors"));
  auto m = kinora::text::CLIPTextModel::load(dir / "clip.safetensors");
  const auto out = m.forward(c.get("input.ids"));
  EXPECT_LT(rel_err(out.pooled[0], c.get("output.pooled")), 1e-4);
  EXPECT_LT(rel_err(out.last_hidden[0], c.get("output.last_hidden")), 1e-4);
}

TEST(Flux, ImageConditionedVariantsAreRefusedByName) {
  TempDir dir;
  auto t = tensors_of(kinora::io::Checkpoint::open(fixture("flux1_dev_tiny.safetensors")));
  for (auto& [name, tensor] : t)  // FLUX.1 Fill's input: 384 channels
    if (name == "img_in.weight") tensor = torch::zeros({tensor.size(0), 384});
  kinora::io::save_safetensors(dir / "fill.safetensors", t);
  const auto msg = error_of([&] { kinora::diffusion::FluxModel::load(dir / "fill.safetensors"); });
  EXPECT_THAT(msg, HasSubstr("fill.safetensors"));
  EXPECT_THAT(msg, HasSubstr("Fill"));
}

// The LDM/BFL autoencoder names → diffusers' (levels: 4), as diffusers'
// converter writes them; attention weights squeezed to [C, C].
std::string to_diffusers_ae(const std::string& k) {
  std::smatch m;
  auto resnet = [](std::string rest) {
    return rest.rfind("nin_shortcut.", 0) == 0 ? "conv_shortcut." + rest.substr(13) : rest;
  };
  if (std::regex_match(k, m, std::regex(R"(encoder\.down\.(\d)\.block\.(\d)\.(.*))")))
    return "encoder.down_blocks." + m[1].str() + ".resnets." + m[2].str() + "." + resnet(m[3]);
  if (std::regex_match(k, m, std::regex(R"(encoder\.down\.(\d)\.downsample\.conv\.(.*))")))
    return "encoder.down_blocks." + m[1].str() + ".downsamplers.0.conv." + m[2].str();
  if (std::regex_match(k, m, std::regex(R"(decoder\.up\.(\d)\.block\.(\d)\.(.*))")))
    return "decoder.up_blocks." + std::to_string(3 - std::stoi(m[1])) + ".resnets." + m[2].str() +
           "." + resnet(m[3]);
  if (std::regex_match(k, m, std::regex(R"(decoder\.up\.(\d)\.upsample\.conv\.(.*))")))
    return "decoder.up_blocks." + std::to_string(3 - std::stoi(m[1])) + ".upsamplers.0.conv." +
           m[2].str();
  if (std::regex_match(k, m, std::regex(R"((\w+)\.mid\.block_(\d)\.(.*))")))
    return m[1].str() + ".mid_block.resnets." + (m[2] == "1" ? "0" : "1") + "." + resnet(m[3]);
  if (std::regex_match(k, m, std::regex(R"((\w+)\.mid\.attn_1\.(\w+)\.(.*))"))) {
    const std::string n = m[2] == "norm"       ? "group_norm"
                          : m[2] == "proj_out" ? "to_out.0"
                                               : "to_" + m[2].str();
    return m[1].str() + ".mid_block.attentions.0." + n + "." + m[3].str();
  }
  if (std::regex_match(k, m, std::regex(R"((\w+)\.norm_out\.(.*))")))
    return m[1].str() + ".conv_norm_out." + m[2].str();
  return k;
}

void write_diffusers_ae(const fs::path& path) {
  const auto ck = kinora::io::Checkpoint::open(fixture("flux1_ae_tiny.safetensors"));
  Tensors t;
  for (const auto& n : ck.names()) {
    auto v = ck.get(n).clone();
    const auto d = to_diffusers_ae(n);
    if (d.find(".attentions.0.to_") != std::string::npos && v.dim() == 4) v = v.flatten(1);
    t.emplace_back(d, v);
  }
  kinora::io::save_safetensors(path, t);
}

TEST(Flux, AutoencoderInDiffusersLayoutDecodesTheSame) {
  TempDir dir;
  write_diffusers_ae(dir / "ae.safetensors");
  const auto c = kinora::io::Checkpoint::open(fixture("flux1_ae_decode.case.safetensors"));
  auto ae = kinora::vae::KLAutoencoder::load(dir / "ae.safetensors");
  EXPECT_EQ(ae.config().ch_mult, (std::vector<int64_t>{1, 1, 2, 2}));
  EXPECT_LT(rel_err(ae.decode_image(c.get("input.latent")), c.get("output.image")), 1e-4);
  const auto e = kinora::io::Checkpoint::open(fixture("flux1_ae_encode.case.safetensors"));
  EXPECT_LT(rel_err(ae.encode_image(e.get("input.image")), e.get("output.latent")), 1e-4);
}

TEST(Flux, PackingRoundTripsAndIdsAreRowsAndColumns) {
  const auto x = torch::randn({2, 16, 6, 8});
  const auto packed = kinora::diffusion::flux_pack(x);
  EXPECT_EQ(packed.sizes(), (std::vector<int64_t>{2, 12, 64}));
  // Token (row 1, col 2), channel c·4 + ph·2 + pw.
  EXPECT_EQ(packed[0][1 * 4 + 2][3 * 4 + 1 * 2 + 0].item<float>(), x[0][3][3][4].item<float>());
  EXPECT_TRUE(torch::equal(kinora::diffusion::flux_unpack(packed, 6, 8), x));
  const auto ids = kinora::diffusion::flux_image_ids(1, 6, 8);
  EXPECT_EQ(ids[0][5][1].item<float>(), 1);  // row 1
  EXPECT_EQ(ids[0][5][2].item<float>(), 1);  // col 1
  EXPECT_EQ(ids[0][5][0].item<float>(), 0);
}

TEST(Flux, TiledDecodeHasNoSeamsAndMatchesTheWholeDecode) {
  auto ae = kinora::vae::KLAutoencoder::load(fixture("flux1_ae_tiny.safetensors"));
  // A smooth latent, as sampled latents are, 24×32 cells decoded in tiles of 16
  // overlapping by 6.
  torch::manual_seed(3);
  const auto z = torch::nn::functional::interpolate(torch::randn({1, 16, 6, 8}),
                                                    torch::nn::functional::InterpolateFuncOptions()
                                                        .size(std::vector<int64_t>{24, 32})
                                                        .mode(torch::kBilinear)
                                                        .align_corners(false));
  const auto whole = ae.decode_image(z);
  int64_t tiles = 0;
  const auto tiled = ae.decode_tiled(z, 16, 6, [&](int64_t, int64_t total) { tiles = total; });
  EXPECT_EQ(tiles, 6);  // 2 rows × 3 columns
  ASSERT_EQ(tiled.sizes(), whole.sizes());
  // GroupNorm sees each tile's own statistics (as in diffusers' tiled decode),
  // so the two differ everywhere, most with this tiny random autoencoder
  // (one channel per group); a seam would show as a jump across the tile borders larger than
  // the image's own steps between neighbouring pixels.
  const auto corr =
      torch::stack({tiled.flatten(), whole.flatten()}).corrcoef()[0][1].item<double>();
  EXPECT_GT(corr, 0.85);  // 0.91 here: the tiny autoencoder normalises per channel
  const auto dx = (tiled.slice(3, 1) - tiled.slice(3, 0, -1)).abs().mean({0, 1, 2});  // per column
  const auto typical = dx.median().item<float>();
  for (int64_t border : {10 * 8, 16 * 8, 20 * 8})  // where tiles start and end
    EXPECT_LT(dx[border - 1].item<float>(), 3 * typical) << "column " << border;
}

TEST(ClipTokenizer, HandWrittenVocabularyGivesKnownIds) {
  TempDir dir;
  const auto tok = kinora::text::ClipTokenizer::load(write_clip_tokenizer(dir / "tok"));
  EXPECT_EQ(tok.bos(), 998);
  EXPECT_EQ(tok.eos(), 999);
  // Lower-cased, split into words and punctuation, merged by rank.
  EXPECT_EQ(tok.tokenize("a  Red,\tRED!"),
            (std::vector<int64_t>{256 + 'a', 601, 256 + ',', 601, 256 + '!'}));
  // Contractions and digits split as CLIP's pattern does; bytes beyond ASCII
  // by GPT-2's byte characters.
  EXPECT_EQ(kinora::text::ClipTokenizer::pre_tokenize("it's 42 caf\xC3\xA9!?"),
            (std::vector<std::string>{"it", "'s", "4", "2", "caf\xC3\xA9", "!?"}));
  EXPECT_EQ(tok.tokenize("Caf\xC3\xA9"), (std::vector<int64_t>{'c', 'a', 'f', 195, 256 + 169}));
  const auto e = tok.encode("red", 8);
  EXPECT_TRUE(torch::equal(e.ids, torch::tensor({{998, 601, 999, 999, 999, 999, 999, 999}})));
  EXPECT_EQ(e.length, 3);
  const auto cut = tok.encode("a b c d e f g h", 6);
  EXPECT_TRUE(cut.truncated);
  EXPECT_EQ(cut.ids[0][5].item<int64_t>(), 999);
}

TEST(ClipTokenizer, MissingFilesNameWhereItLooked) {
  TempDir dir;
  fs::create_directories(dir / "text_encoders");
  const auto msg = error_of([&] {
    kinora::text::find_clip_tokenizer({}, dir / "text_encoders" / "clip_l.safetensors", dir.path());
  });
  EXPECT_THAT(msg, HasSubstr((dir / "text_encoders").string()));
  EXPECT_THAT(msg, HasSubstr("--clip-tokenizer"));
  // Each folder once, though the encoder's folder is also models_dir's text_encoders/.
  const std::string once = " " + (dir / "text_encoders" / "tokenizer").string() + " ";
  EXPECT_NE(msg.find(once), std::string::npos) << msg;
  EXPECT_EQ(msg.find(once), msg.rfind(once)) << msg;
  // A folder named after the encoder's file, beside it, is found.
  fs::create_directories(dir / "text_encoders" / "clip_l");
  std::ofstream(dir / "text_encoders" / "clip_l" / "vocab.json") << "{}";
  std::ofstream(dir / "text_encoders" / "clip_l" / "merges.txt") << "";
  EXPECT_EQ(kinora::text::find_clip_tokenizer({}, dir / "text_encoders" / "clip_l.safetensors",
                                              dir.path()),
            dir / "text_encoders" / "clip_l");
  // Without an encoder file (a single-file SDXL checkpoint holds it), the
  // same folder under models_dir's text_encoders/.
  EXPECT_EQ(kinora::text::find_clip_tokenizer({}, {}, dir.path()),
            dir / "text_encoders" / "clip_l");
  // ComfyUI's own copy, comfy/sd1_tokenizer/ beside its models/ folder.
  const fs::path comfy = dir / "ComfyUI";
  fs::create_directories(comfy / "models");
  fs::create_directories(comfy / "comfy" / "sd1_tokenizer");
  std::ofstream(comfy / "comfy" / "sd1_tokenizer" / "vocab.json") << "{}";
  std::ofstream(comfy / "comfy" / "sd1_tokenizer" / "merges.txt") << "";
  EXPECT_EQ(kinora::text::find_clip_tokenizer({}, {}, comfy / "models/"),
            comfy / "comfy" / "sd1_tokenizer");
  std::ofstream(dir / "vocab.json") << "{}";
  EXPECT_THAT(error_of([&] { kinora::text::ClipTokenizer::load(dir / "vocab.json"); }),
              HasSubstr("merges.txt"));
}

class FluxCli : public ::testing::Test {
 protected:
  void SetUp() override {
    flux = write_tiny_flux(dir.path());
    clip_tok = write_clip_tokenizer(dir / "clip_tokenizer");
  }
  std::string files(const std::string& vae = fixture("flux1_ae_tiny.safetensors"),
                    const std::string& clip = fixture("clip_l_tiny.safetensors")) const {
    return " --model " + flux.string() + " --vae " + vae + " --text-encoder " +
           fixture("t5_enc_tiny.safetensors") + " --tokenizer " + fixture("spm_tiny.model") +
           " --clip " + clip + " --clip-tokenizer " + clip_tok.string();
  }
  TempDir dir;
  fs::path flux, clip_tok;
};

// Of two text encoders, the one with NaN weights is named, not both.
TEST_F(FluxCli, ATextEncoderWithNanWeightsIsNamed) {
  kinora::test::write_poisoned("clip_l_tiny.safetensors", dir / "clip_nan.safetensors",
                               [](const std::string& n) { return n.find("layer_norm") != n.npos; });
  const auto r =
      sh(kinora_bin() + " generate -p 'a red fox' --seed 3 --width 64 --height 48" + " --steps 1" +
         files(fixture("flux1_ae_tiny.safetensors"), (dir / "clip_nan.safetensors").string()) +
         " --out " + (dir / "nan.png").string());
  EXPECT_NE(r.code, 0);
  EXPECT_THAT(r.out, HasSubstr((dir / "clip_nan.safetensors").string() + ": its weight "));
  EXPECT_THAT(r.out, Not(HasSubstr("t5_enc_tiny.safetensors: its weight"))) << r.out;
  EXPECT_THAT(r.out, Not(HasSubstr("t5_enc_tiny.safetensors,"))) << r.out;
  EXPECT_FALSE(fs::exists(dir / "nan.png"));
}

TEST_F(FluxCli, GenerateWritesAPngWithFluxDefaultsAndItRestores) {
  const auto out = dir / "fox.png";
  const auto r = sh(kinora_bin() + " generate -p 'a red fox' --seed 3 --width 64 --height 48" +
                    " --steps 2" + files() + " --out " + out.string());
  ASSERT_EQ(r.code, 0) << r.out;
  ASSERT_TRUE(fs::is_regular_file(out)) << r.out;
  EXPECT_THAT(r.out, Not(HasSubstr("is not used"))) << r.out;
  // A shift has no effect on FLUX: said, not silently recorded.
  const auto shifted =
      sh(kinora_bin() + " generate -p 'a red fox' --seed 3 --width 64 --height 48" +
         " --steps 1 --shift 2" + files() + " --out " + (dir / "s.png").string());
  ASSERT_EQ(shifted.code, 0) << shifted.out;
  EXPECT_THAT(shifted.out, HasSubstr("kinora: shift 2.0 is not used: FLUX.1-")) << shifted.out;
  const auto restored = sh(kinora_bin() + " restore " + out.string());
  ASSERT_EQ(restored.code, 0) << restored.out;
  const auto j = nlohmann::json::parse(restored.out);
  EXPECT_EQ(j["family"], "flux");
  EXPECT_EQ(j["frames"], 1);
  EXPECT_EQ(j["steps"], 2);
  EXPECT_EQ(j["sampler"], "flow_euler");  // FLUX's defaults where the command line set none
  EXPECT_EQ(j["guidance"], 3.5);
  EXPECT_EQ(j["clip"], "clip_l_tiny.safetensors");
  // The same render again from the restored preset, next to its files.
  auto preset = j;
  preset["model"] = flux.string();
  preset["vae"] = fixture("flux1_ae_tiny.safetensors");
  preset["text_encoder"] = fixture("t5_enc_tiny.safetensors");
  preset["tokenizer"] = fixture("spm_tiny.model");
  preset["clip"] = fixture("clip_l_tiny.safetensors");
  preset["clip_tokenizer"] = clip_tok.string();
  preset["output"] = "again.png";
  std::ofstream(dir / "again.json") << preset.dump(2);
  const auto again = sh(kinora_bin() + " render " + (dir / "again.json").string());
  ASSERT_EQ(again.code, 0) << again.out;
  // The same pixels: same seed, same files (the parameters differ in the name).
  auto pixels = [](const fs::path& png) {
    return sh("ffmpeg -v error -i '" + png.string() + "' -f md5 -").out;
  };
  EXPECT_EQ(pixels(out), pixels(dir / "again.png"));
  EXPECT_THAT(pixels(out), HasSubstr("MD5="));
}

// Raw RGB bytes of an image, by FFmpeg's own decoder.
std::string rgb_of(const fs::path& image) {
  return sh("ffmpeg -v error -i '" + image.string() + "' -f rawvideo -pix_fmt rgb24 -").out;
}

TEST_F(FluxCli, ABatchIsItsSeedsRenderedAloneEachRestorable) {
  const std::string base = kinora_bin() + " generate -p 'a red fox' --width 64 --height 48" +
                           " --steps 2 --precision fp32" + files();
  const auto b = sh(base + " --seed 10 --batch-size 3 --out " + (dir / "fox.png").string());
  ASSERT_EQ(b.code, 0) << b.out;
  for (int s : {10, 11, 12})
    ASSERT_TRUE(fs::is_regular_file(dir / ("fox-" + std::to_string(s) + ".png"))) << b.out;
  EXPECT_FALSE(fs::exists(dir / "fox.png"));
  const auto restored = sh(kinora_bin() + " restore " + (dir / "fox-11.png").string());
  ASSERT_EQ(restored.code, 0) << restored.out;
  EXPECT_EQ(nlohmann::json::parse(restored.out)["seed"], 11);
  // Seed 11 alone: the same image (batched matmuls may round differently, so
  // within one level).
  const auto one = sh(base + " --seed 11 --out " + (dir / "alone.png").string());
  ASSERT_EQ(one.code, 0) << one.out;
  const auto a = rgb_of(dir / "alone.png"), c = rgb_of(dir / "fox-11.png");
  ASSERT_EQ(a.size(), 64u * 48u * 3u);
  ASSERT_EQ(a.size(), c.size());
  int worst = 0;
  for (std::size_t i = 0; i < a.size(); ++i)
    worst = std::max(worst, std::abs(static_cast<int>(static_cast<unsigned char>(a[i])) -
                                     static_cast<int>(static_cast<unsigned char>(c[i]))));
  EXPECT_LE(worst, 1);
  EXPECT_NE(rgb_of(dir / "fox-10.png"), c);  // and the seeds differ
  // A second batch over the same names refuses before rendering anything.
  const auto again = sh(base + " --seed 10 --batch-size 3 --out " + (dir / "fox.png").string());
  EXPECT_NE(again.code, 0);
  EXPECT_THAT(again.out, HasSubstr("fox-10.png"));
}

// A diffusers pipeline folder as Hugging Face downloads it: --model names the
// folder and every file comes from it (CLIP's tokenizer from tokenizer/).
TEST_F(FluxCli, ADiffusersFolderRendersFromItsName) {
  const auto root = dir / "models" / "diffusion_models" / "FLUX.1-tiny";
  for (const char* sub : {"transformer", "vae", "text_encoder", "text_encoder_2", "tokenizer_2"})
    fs::create_directories(root / sub);
  std::ofstream(root / "model_index.json") << R"({"_class_name": "FluxPipeline"})";
  fs::rename(flux, root / "transformer" / "diffusion_pytorch_model.safetensors");
  write_diffusers_ae(root / "vae" / "diffusion_pytorch_model.safetensors");
  fs::copy_file(fixture("clip_l_tiny.safetensors"), root / "text_encoder" / "model.safetensors");
  fs::copy_file(fixture("t5_enc_tiny.hf.safetensors"),
                root / "text_encoder_2" / "model.safetensors");
  fs::copy_file(fixture("spm_tiny.model"), root / "tokenizer_2" / "spiece.model");
  fs::rename(clip_tok, root / "tokenizer");
  const auto r = sh(kinora_bin() + " generate -p 'a red fox' --seed 1 --width 64 --height 48" +
                    " --steps 2 --models-dir " + (dir / "models").string() +
                    " --model FLUX.1-tiny --out " + (dir / "folder.png").string());
  ASSERT_EQ(r.code, 0) << r.out;
  {
    // A file of the same name beside the folder: which is meant is not said.
    const auto file = dir / "models" / "diffusion_models" / "FLUX.1-tiny.safetensors";
    fs::create_symlink(root / "transformer" / "diffusion_pytorch_model.safetensors", file);
    const auto both = sh(kinora_bin() + " generate -p x --models-dir " + (dir / "models").string() +
                         " --model FLUX.1-tiny --out " + (dir / "both.png").string());
    EXPECT_NE(both.code, 0);
    EXPECT_THAT(both.out, HasSubstr("names both the diffusers folder " + root.string() +
                                    " and the file " + file.string()));
    fs::remove(file);
  }
  const auto restored = sh(kinora_bin() + " restore " + (dir / "folder.png").string());
  const auto j = nlohmann::json::parse(restored.out);
  EXPECT_EQ(j["family"], "flux");
  EXPECT_EQ(j["steps"], 2);
  EXPECT_EQ(j["model"], "FLUX.1-tiny");  // the folder, which finds every part again
  EXPECT_EQ(j["vae"], "");
  // In ComfyUI's models/diffusers/ as well.
  fs::create_directories(dir / "models" / "diffusers");
  fs::rename(root, dir / "models" / "diffusers" / "FLUX.1-tiny");
  const auto moved = sh(kinora_bin() + " generate -p 'a red fox' --seed 1 --width 64 --height 48" +
                        " --steps 2 --models-dir " + (dir / "models").string() +
                        " --model FLUX.1-tiny --out " + (dir / "moved.png").string());
  ASSERT_EQ(moved.code, 0) << moved.out;
  // Named by a preset whose models_dir is relative to it: recorded as the
  // folder still, which a render with --models-dir finds again.
  std::ofstream(dir / "rel.json") << R"({"prompt": "a red fox", "seed": 1, "width": 64, )"
                                  << R"("height": 48, "steps": 2, "model": "FLUX.1-tiny", )"
                                  << R"("models_dir": "models", "output": "rel.png"})";
  ASSERT_EQ(sh(kinora_bin() + " render " + (dir / "rel.json").string()).code, 0);
  const auto rel = nlohmann::json::parse(
      sh(kinora_bin() + " restore " + (dir / "rel.png").string() + " 2>/dev/null").out);
  EXPECT_EQ(rel["model"], "FLUX.1-tiny");
  // In a subfolder, found by its name as model files are.
  fs::create_directories(dir / "models" / "diffusers" / "flux");
  fs::rename(dir / "models" / "diffusers" / "FLUX.1-tiny",
             dir / "models" / "diffusers" / "flux" / "FLUX.1-tiny");
  const auto deeper = sh(kinora_bin() + " generate -p 'a red fox' --seed 1 --width 64 --height 48" +
                         " --steps 2 --models-dir " + (dir / "models").string() +
                         " --model FLUX.1-tiny --out " + (dir / "deeper.png").string());
  ASSERT_EQ(deeper.code, 0) << deeper.out;
  EXPECT_EQ(rgb_of(dir / "deeper.png"), rgb_of(dir / "moved.png"));
  fs::rename(dir / "models" / "diffusers" / "flux" / "FLUX.1-tiny", root);
  // A folder without a transformer is refused by name.
  fs::create_directories(dir / "models" / "diffusion_models" / "empty");
  std::ofstream(dir / "models" / "diffusion_models" / "empty" / "model_index.json") << "{}";
  const auto e = sh(kinora_bin() + " generate -p x --models-dir " + (dir / "models").string() +
                    " --model empty --out " + (dir / "e.png").string());
  EXPECT_NE(e.code, 0);
  EXPECT_THAT(e.out, HasSubstr("transformer/"));
  // A folder that is not a pipeline says so; a broken index is named.
  fs::create_directories(dir / "models" / "diffusion_models" / "plain");
  const auto plain = sh(kinora_bin() + " generate -p x --models-dir " + (dir / "models").string() +
                        " --model plain --out " + (dir / "p.png").string());
  EXPECT_NE(plain.code, 0);
  EXPECT_THAT(plain.out, HasSubstr("is a folder, not a model file"));
  // One that holds a model's weights (a Wan-AI repository's folder): that
  // file is named, a sharded one's index first.
  const auto held = dir / "models" / "diffusion_models" / "plain";
  std::ofstream(held / "diffusion_pytorch_model-00001-of-00002.safetensors") << "";
  std::ofstream(held / "diffusion_pytorch_model.safetensors.index.json") << "{}";
  const auto holds = sh(kinora_bin() + " generate -p x --models-dir " + (dir / "models").string() +
                        " --model plain --out " + (dir / "p.png").string());
  EXPECT_NE(holds.code, 0);
  EXPECT_THAT(
      holds.out,
      HasSubstr("; it holds " + (held / "diffusion_pytorch_model.safetensors.index.json").string() +
                ": give that file"));
  // A part of a pipeline folder: the folder to give is named.
  const auto part = sh(kinora_bin() + " generate -p x --model " + (root / "transformer").string() +
                       " --out " + (dir / "p.png").string());
  EXPECT_NE(part.code, 0);
  EXPECT_THAT(part.out, HasSubstr("a part of the diffusers pipeline folder " + root.string() +
                                  ": give that folder"));
  // Its weights file: the same advice, after what is missing.
  const auto weights = sh(kinora_bin() + " generate -p x --model " +
                          (root / "transformer" / "diffusion_pytorch_model.safetensors").string() +
                          " --out " + (dir / "p.png").string());
  EXPECT_NE(weights.code, 0);
  EXPECT_THAT(weights.out, HasSubstr("is a part of the diffusers pipeline folder " + root.string() +
                                     ": give that folder as the model"))
      << weights.out;
  std::ofstream(root / "model_index.json") << "not json {";
  const auto broken = sh(kinora_bin() + " generate -p x --models-dir " + (dir / "models").string() +
                         " --model FLUX.1-tiny --out " + (dir / "b.png").string());
  EXPECT_NE(broken.code, 0);
  EXPECT_THAT(broken.out, HasSubstr("model_index.json"));
  // Without text_encoder_2/ its tokenizer_2/ still counts; --text-encoder fills the gap.
  std::ofstream(root / "model_index.json") << R"({"_class_name": "FluxPipeline"})";
  fs::rename(root / "text_encoder_2", dir / "t5-elsewhere");
  const auto t5 = sh(kinora_bin() + " generate -p x --seed 1 --width 64 --height 48 --steps 1" +
                     " --models-dir " + (dir / "models").string() + " --model FLUX.1-tiny" +
                     " --text-encoder " + (dir / "t5-elsewhere" / "model.safetensors").string() +
                     " --out " + (dir / "t.png").string());
  EXPECT_EQ(t5.code, 0) << t5.out;
}

TEST_F(FluxCli, WrongCombinationsAreRefusedNamingBothFiles) {
  const std::string base = kinora_bin() + " generate -p 'x' --width 64 --height 48 --steps 1";
  const auto wan_vae = sh(base + files(fixture("wan21_vae_tiny.safetensors")) + " --out " +
                          (dir / "a.png").string());
  EXPECT_NE(wan_vae.code, 0);
  EXPECT_THAT(wan_vae.out, HasSubstr("wan21_vae_tiny.safetensors"));
  EXPECT_THAT(wan_vae.out, HasSubstr(flux.filename().string()));
  const auto t5_as_clip =
      sh(base + files(fixture("flux1_ae_tiny.safetensors"), fixture("umt5_enc_tiny.safetensors")) +
         " --out " + (dir / "b.png").string());
  EXPECT_NE(t5_as_clip.code, 0);
  EXPECT_THAT(t5_as_clip.out, HasSubstr("umt5_enc_tiny.safetensors"));
  EXPECT_THAT(t5_as_clip.out, HasSubstr("CLIP"));
  // Wan's parts with a FLUX model: the missing CLIP is said to be FLUX's.
  const auto as_wan =
      sh(base + " --model " + flux.string() + " --vae " + fixture("wan21_vae_tiny.safetensors") +
         " --text-encoder " + fixture("umt5_enc_tiny.safetensors") + " --tokenizer " +
         fixture("spm_tiny.model") + " --out " + (dir / "w.png").string());
  EXPECT_NE(as_wan.code, 0);
  EXPECT_THAT(as_wan.out, HasSubstr("kinora: --clip is empty: a model file or a name under "
                                    "--models-dir is needed; "));
  EXPECT_THAT(as_wan.out, HasSubstr(flux.filename().string() +
                                    " is a model of the 'flux' family, which needs it"));
  // SDXL's bigG is not CLIP-L.
  const auto big_g =
      sh(base + files(fixture("flux1_ae_tiny.safetensors"), fixture("clip_g_tiny.safetensors")) +
         " --out " + (dir / "g.png").string());
  EXPECT_NE(big_g.code, 0);
  EXPECT_THAT(big_g.out, HasSubstr("clip_g_tiny.safetensors: an OpenCLIP text encoder (bigG"));
  // umT5 (Wan's) is not FLUX's T5, though it may be as wide.
  auto umt5 = files();
  umt5.replace(umt5.find("t5_enc_tiny"), 11, "umt5_enc_tiny");
  const auto u = sh(base + umt5 + " --out " + (dir / "c.png").string());
  EXPECT_NE(u.code, 0);
  EXPECT_THAT(u.out, HasSubstr("umT5"));
  // A second expert is Wan's.
  const auto m2 =
      sh(base + files() + " --model2 " + flux.string() + " --out " + (dir / "d.png").string());
  EXPECT_NE(m2.code, 0);
  EXPECT_THAT(m2.out, HasSubstr("model2"));
  // A tokenizer with ids past the encoder's embeddings: refused by name, and a
  // malformed one before any model loads.
  const auto big = write_clip_tokenizer(dir / "big");
  auto v = nlohmann::json::parse(std::ifstream(big / "vocab.json"));
  v["zz</w>"] = 5000;
  std::ofstream(big / "vocab.json") << v.dump();
  auto with_tok = [&](const fs::path& tok) {
    auto f = files();
    f.replace(f.find(clip_tok.string()), clip_tok.string().size(), tok.string());
    return f;
  };
  const auto b5000 = sh(base + with_tok(big) + " --out " + (dir / "e.png").string());
  EXPECT_NE(b5000.code, 0);
  EXPECT_THAT(b5000.out, HasSubstr("5000"));
  EXPECT_THAT(b5000.out, HasSubstr("another CLIP model"));
  EXPECT_THAT(b5000.out, ::testing::Not(HasSubstr("frame #")));
  fs::create_directories(dir / "broken");
  std::ofstream(dir / "broken" / "vocab.json") << "{\"a\": ";
  std::ofstream(dir / "broken" / "merges.txt") << "";
  const auto broken = sh(base + with_tok(dir / "broken") + " --out " + (dir / "f.png").string());
  EXPECT_NE(broken.code, 0);
  EXPECT_THAT(broken.out, HasSubstr("vocab.json"));
  EXPECT_THAT(broken.out, ::testing::Not(HasSubstr("loading")));
  for (const char* f : {"a.png", "b.png", "c.png", "d.png", "e.png", "f.png", "g.png", "w.png"})
    EXPECT_FALSE(fs::exists(dir / f)) << f;
}
