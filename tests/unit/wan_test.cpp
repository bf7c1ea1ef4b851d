// The Wan models beyond the reference cases: configuration from real shapes,
// loading errors, the image branch, the VAE's chunking, the tokenizer.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "diffusion/wan_dit.h"
#include "fp8_files.h"
#include "io/checkpoint.h"
#include "io/safetensors.h"
#include "test_util.h"
#include "text/tokenizer.h"
#include "vae/wan_vae.h"
#include "wan_shapes.h"

#include <nlohmann/json.hpp>

using namespace kinora;
using kinora::test::error_of;
using kinora::test::fixture;
using kinora::test::TempDir;
using ::testing::HasSubstr;

struct RealWan {
  const char* name;
  int64_t dim, ffn, in_dim, out_dim;
  int layers;
  bool i2v;
  const char* variant;
};

// gtest prints a parameter with this (else as its raw bytes).
void PrintTo(const RealWan& w, std::ostream* os) {
  *os << w.variant;
}

class RealShapes : public ::testing::TestWithParam<RealWan> {};

TEST_P(RealShapes, ConfigurationIsReadOffNamesAndShapes) {
  TempDir dir;
  const auto& w = GetParam();
  for (const std::string prefix : {"", "model.diffusion_model."}) {
    const auto path = dir / (std::string(w.name) + ".safetensors");
    test::write_sparse(
        path, test::wan_original_keys(w.dim, w.ffn, w.in_dim, w.out_dim, w.layers, w.i2v, prefix));
    const auto ck = io::Checkpoint::open(path);
    const auto c = diffusion::WanConfig::from_checkpoint(ck);
    EXPECT_EQ(c.dim, w.dim);
    EXPECT_EQ(c.ffn_dim, w.ffn);
    EXPECT_EQ(c.in_dim, w.in_dim);
    EXPECT_EQ(c.out_dim, w.out_dim);
    EXPECT_EQ(c.num_layers, w.layers);
    EXPECT_EQ(c.num_heads, w.dim / 128);
    EXPECT_EQ(c.text_dim, 4096);
    EXPECT_EQ(c.freq_dim, 256);
    EXPECT_EQ(c.model_type, w.i2v ? "i2v" : "t2v");
    EXPECT_EQ(c.variant(), w.variant);
  }
}

INSTANTIATE_TEST_SUITE_P(
    Wan, RealShapes,
    ::testing::Values(RealWan{"t2v_1_3B", 1536, 8960, 16, 16, 30, false, "Wan 2.1 T2V 1.3B"},
                      RealWan{"t2v_14B", 5120, 13824, 16, 16, 40, false,
                              "Wan 2.1 T2V 14B / Wan 2.2 T2V-A14B expert"},
                      RealWan{"i2v_14B", 5120, 13824, 36, 16, 40, true, "Wan 2.1 I2V 14B"},
                      RealWan{"i2v_A14B", 5120, 13824, 36, 16, 40, false,
                              "Wan 2.2 I2V-A14B expert"},
                      RealWan{"ti2v_5B", 3072, 14336, 48, 48, 30, false, "Wan 2.2 TI2V 5B"}),
    [](const auto& test_param) { return std::string(test_param.param.name); });

// The whole 1.3B module tree loads from a file with the real key list and shapes:
// every parameter is found by name and matches its shape (and costs no memory:
// the weights are views of a sparse mapping).
TEST(WanModel, LoadsARealShape13BCheckpoint) {
  TempDir dir;
  const auto path = dir / "wan2.1_t2v_1.3B_bf16.safetensors";
  test::write_sparse(path, test::wan_original_keys(1536, 8960, 16, 16, 30, false));
  auto model = diffusion::WanModel::load(path);
  EXPECT_EQ(model.config().num_layers, 30);
  int64_t params = 0;
  for (const auto& p : model.module().parameters()) params += p.numel();
  EXPECT_NEAR(static_cast<double>(params), 1.419e9, 0.001e9);  // spec: 1.419 B
  for (const auto& p : model.module().parameters()) EXPECT_EQ(p.scalar_type(), torch::kBFloat16);
}

TEST(WanModel, BadCheckpointsAreRefusedWithTheReason) {
  TempDir dir;
  auto keys = test::wan_original_keys(256, 512, 16, 16, 2, false);
  // A missing tensor.
  auto missing = keys;
  missing.erase(missing.begin() + 20);
  test::write_sparse(dir / "missing.safetensors", missing);
  EXPECT_THAT(error_of([&] { diffusion::WanModel::load(dir / "missing.safetensors"); }),
              HasSubstr("missing tensor for '" + keys[20].first + "'"));
  // A wrong shape.
  auto wrong = keys;
  wrong[30].second = {7, 7};
  test::write_sparse(dir / "wrong.safetensors", wrong);
  const auto msg = error_of([&] { diffusion::WanModel::load(dir / "wrong.safetensors"); });
  EXPECT_THAT(msg, HasSubstr("wrong.safetensors"));
  EXPECT_THAT(msg, HasSubstr("has shape [7, 7]"));
  // Another model's file.
  EXPECT_THAT(error_of([&] { diffusion::WanModel::load(fixture("wan21_vae_tiny.safetensors")); }),
              HasSubstr("not a Wan DiT checkpoint (recognised as Wan VAE)"));
  EXPECT_THAT(error_of([&] { vae::WanVAE::load(fixture("wan21_dit_tiny.safetensors")); }),
              HasSubstr("not a Wan VAE checkpoint (recognised as Wan DiT)"));
}

namespace {
// Fills a model's parameters with seeded random values and saves them with the config.
void save_random(diffusion::WanModel& m, const std::filesystem::path& path,
                 const std::string& config,
                 const std::function<bool(const std::string&)>& keep = {}) {
  torch::manual_seed(7);
  std::vector<std::pair<std::string, torch::Tensor>> ts;
  for (const auto& p : m.module().named_parameters()) {
    if (keep && !keep(p.key())) continue;
    auto t = torch::randn(p.value().sizes()) * 0.1;
    if (p.key().find("v_img") != std::string::npos) t.zero_();  // the image branch adds nothing
    ts.emplace_back(p.key(), t);
  }
  io::save_safetensors(path, ts, {{"config", config}});
}
}  // namespace

// The i2v branch is wired as the reference: with v_img = 0 the image tokens add
// nothing, so the output equals the t2v model's with the same other weights.
TEST(WanModel, ImageCrossAttentionAddsToTheTextBranch) {
  TempDir dir;
  const std::string t2v =
      R"({"model_type":"t2v","in_dim":16,"dim":64,"ffn_dim":128,"text_dim":32,"out_dim":16,"num_heads":2,"num_layers":2})";
  std::string i2v = t2v;
  i2v.replace(i2v.find("t2v"), 3, "i2v");
  diffusion::WanConfig ci;
  ci.model_type = "i2v";
  ci.dim = 64, ci.ffn_dim = 128, ci.text_dim = 32, ci.num_heads = 2, ci.num_layers = 2;
  diffusion::WanModel mi(ci);
  save_random(mi, dir / "i2v.safetensors", i2v);
  // Same tensors without the image ones, as a t2v checkpoint.
  auto ck = io::Checkpoint::open(dir / "i2v.safetensors");
  std::vector<std::pair<std::string, torch::Tensor>> t2v_tensors;
  for (const auto& n : ck.names())
    if (n.find("img") == std::string::npos) t2v_tensors.emplace_back(n, ck.get(n));
  io::save_safetensors(dir / "t2v.safetensors", t2v_tensors, {{"config", t2v}});

  auto a = diffusion::WanModel::load(dir / "i2v.safetensors");
  auto b = diffusion::WanModel::load(dir / "t2v.safetensors");
  EXPECT_EQ(a.config().model_type, "i2v");
  const auto x = torch::randn({1, 16, 2, 4, 4});
  const auto t = torch::tensor({500.0});
  const auto ctx = torch::randn({1, 9, 32});
  const auto clip = torch::randn({1, 257, 1280});
  const auto ya = a.forward(x, t, ctx, clip), yb = b.forward(x, t, ctx);
  EXPECT_LT((ya - yb).abs().max().item<double>(), 1e-5);
  // And with v_img ≠ 0 it does change the result.
  auto params = a.module().named_parameters();  // the dict owns the entries: keep it alive
  auto& v_img = *params.find("blocks.0.cross_attn.v_img.weight");
  v_img.set_data(torch::randn(v_img.sizes()));
  EXPECT_GT((a.forward(x, t, ctx, clip) - yb).abs().max().item<double>(), 1e-3);
}

TEST(WanModel, BatchedForwardMatchesSingle) {
  auto m = diffusion::WanModel::load(fixture("wan21_dit_tiny.safetensors"));
  const auto x = torch::randn({2, 16, 2, 4, 6});
  const auto t = torch::tensor({999.0, 420.0});
  const auto ctx = torch::randn({2, 5, 64});
  const auto both = m.forward(x, t, ctx);
  for (int i = 0; i < 2; ++i) {
    const auto one = m.forward(x.slice(0, i, i + 1), t.slice(0, i, i + 1), ctx.slice(0, i, i + 1));
    EXPECT_LT((both.slice(0, i, i + 1) - one).abs().max().item<double>(), 1e-5);
  }
}

// Decoding runs one latent frame at a time: 1 frame from the first, 4 from each
// later one, so activations never span more than a few frames.
TEST(WanVAE, DecodesInChunksOfOneThenFourFrames) {
  auto vae = vae::WanVAE::load(fixture("wan21_vae_tiny.safetensors"));
  const auto z = torch::randn({1, 16, 4, 4, 6});
  std::vector<int64_t> chunks;
  const auto video = vae.decode(z, [&](const torch::Tensor& f) { chunks.push_back(f.size(2)); });
  EXPECT_EQ(chunks, (std::vector<int64_t>{1, 4, 4, 4}));
  EXPECT_EQ(video.sizes(), (std::vector<int64_t>{1, 3, 13, 32, 48}));
  // Encoding a video of 4k+1 frames gives k+1 latent frames; a wrong count is refused.
  EXPECT_EQ(vae.encode(video.clamp(-1, 1)).sizes(), (std::vector<int64_t>{1, 16, 4, 4, 6}));
  EXPECT_THROW(vae.encode(torch::zeros({1, 3, 6, 32, 48})), c10::Error);
  // The chunks handed to the callback are the video's frames.
  std::vector<torch::Tensor> parts;
  const auto again = vae.decode(z, [&](const torch::Tensor& f) { parts.push_back(f.clone()); });
  EXPECT_TRUE(torch::equal(torch::cat(parts, 2), again));
}

// A VAE whose metadata configuration does not hang together is refused by
// name before anything is decoded (its frame count would be wrong).
TEST(WanVAE, RefusesAConfigurationThatDoesNotHangTogether) {
  const TempDir dir;
  const auto write = [&](const std::string& name, nlohmann::json config) {
    // The tiny VAE's tensors with this configuration.
    const auto ck = io::Checkpoint::open(fixture("wan21_vae_tiny.safetensors"));
    std::vector<std::pair<std::string, torch::Tensor>> tensors;
    for (const auto& n : ck.names()) tensors.emplace_back(n, ck.get(n));
    const auto path = dir.path() / name;
    io::save_safetensors(path, tensors, {{"config", config.dump()}});
    return path;
  };
  auto good = nlohmann::json::parse(vae::WanVAEConfig{}.to_json());
  auto stages = good;
  stages["temperal_downsample"] = {false, true, true, true};
  const auto a = write("stages.safetensors", stages);
  const auto ea = error_of([&] { vae::WanVAE::load(a); });
  EXPECT_THAT(ea, HasSubstr(a.string()));
  EXPECT_THAT(ea, HasSubstr("4 temperal_downsample flags"));
  auto stats = good;
  stats["latents_std"] = {1.0, 2.0};
  const auto b = write("stats.safetensors", stats);
  EXPECT_THAT(error_of([&] { vae::WanVAE::load(b); }), HasSubstr("one value per latent channel"));
}

TEST(Tokenizer, EncodesCleansPadsAndTruncates) {
  const auto tok = text::Tokenizer::load(fixture("spm_tiny.model"));
  const auto t = tok.encode("  a red   circle\n moving left  ");
  EXPECT_EQ(t.ids.sizes(), (std::vector<int64_t>{1, 512}));
  EXPECT_GT(t.length, 2);
  EXPECT_EQ(t.ids[0][t.length - 1].item<int64_t>(), text::Tokenizer::kEos);
  EXPECT_EQ(t.mask.sum().item<int64_t>(), t.length);
  EXPECT_EQ(t.ids.slice(1, t.length).abs().sum().item<int64_t>(), 0);  // padding is 0
  // Cleaning: the same tokens whatever the whitespace and HTML escaping.
  EXPECT_TRUE(torch::equal(tok.encode("a red circle moving left").ids, t.ids));
  EXPECT_EQ(text::Tokenizer::clean("  a &amp;amp; b\t\n c  "), "a & b c");
  EXPECT_EQ(text::Tokenizer::clean("caf&#233;&nbsp;x"), "caf\xC3\xA9 x");
  // Truncated to max_len with </s> kept last.
  const auto s = tok.encode("a red circle moving left on a blue background", 4);
  EXPECT_TRUE(s.truncated);
  EXPECT_EQ(s.length, 4);
  EXPECT_EQ(s.ids[0][3].item<int64_t>(), text::Tokenizer::kEos);
  EXPECT_THAT(error_of([] { text::Tokenizer::load(fixture("t5_enc_tiny.safetensors")); }),
              HasSubstr("a safetensors checkpoint (a text encoder's weights?), not a "
                        "SentencePiece tokenizer model"));
}

// An FP8 (E4M3) checkpoint, as ComfyUI ships them: Linear weights stay as bytes
// and are widened per layer on use. The result equals the float32 model holding
// the same (dequantised) values.
TEST(WanModel, Fp8WeightsAreWidenedPerLayer) {
  TempDir dir;
  ASSERT_GT(test::write_fp8_copy(fixture("wan21_dit_tiny.safetensors"), dir / "fp8.safetensors",
                                 dir / "f32.safetensors"),
            20);
  auto a = diffusion::WanModel::load(dir / "fp8.safetensors");
  auto b = diffusion::WanModel::load(dir / "f32.safetensors");
  for (const auto& p : a.module().named_parameters()) {
    if (p.key() == "blocks.0.self_attn.q.weight") {
      EXPECT_EQ(p.value().scalar_type(), torch::kUInt8);  // bytes kept
    }
  }
  const auto x = torch::randn({1, 16, 2, 4, 6});
  const auto t = torch::tensor({700.0});
  const auto ctx = torch::randn({1, 5, 64});
  EXPECT_LT((a.forward(x, t, ctx) - b.forward(x, t, ctx)).abs().max().item<double>(), 1e-5);
}
