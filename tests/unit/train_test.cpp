// The embedded model's training stages, at toy sizes: each writes a model that
// the inference loaders read back, resumes from its checkpoint, logs its loss.
#include <gtest/gtest.h>
#include <sys/resource.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cmath>
#include <csignal>
#include <fstream>
#include <map>

#include "base/error.h"
#include "base/files.h"
#include "diffusion/wan_dit.h"
#include "io/checkpoint.h"
#include "io/safetensors.h"
#include "test_util.h"
#include "text/spm_bpe.h"
#include "text/t5.h"
#include "text/tokenizer.h"
#include "training/probe.h"
#include "training/train.h"
#include "vae/wan_vae.h"

namespace kinora::training {
namespace {

int lines(const std::filesystem::path& p) {
  std::ifstream f(p);
  std::string s;
  int n = 0;
  while (std::getline(f, s)) ++n;
  return n;
}

// The folder of a stage's current checkpoint: the one its state.json names.
std::filesystem::path checkpoint_of(const std::filesystem::path& state) {
  std::ifstream f(state / "state.json");
  const std::string js((std::istreambuf_iterator<char>(f)), {});
  const auto at = js.find("\"checkpoint\": \"");
  if (at == std::string::npos) return {};
  const auto from = at + 15;
  return state / js.substr(from, js.find('"', from) - from);
}

// train_dit(o) must refuse: throw an Error whose message holds `why`.
void expect_refused(const DitOptions& o, const std::string& why) {
  try {
    train_dit(o);
    ADD_FAILURE() << "accepted, though it should be refused with: " << why;
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(why), std::string::npos) << e.what();
  }
}

// A VAE stage at toy size: width 4, 32×32×9 clips, one step, a checkpoint and a
// log line at every step.
VaeOptions toy_vae(const std::filesystem::path& run_dir) {
  VaeOptions v;
  v.run_dir = run_dir;
  v.dim = 4, v.batch = 1, v.crop = 0, v.train_frames = 5;
  v.steps = 1, v.save_every = 1, v.log_every = 1, v.stats_clips = 2, v.warmup = 1;
  v.clip = {32, 32, 9};
  return v;
}

// A DiT and umT5 small enough to train for a step or two in a test.
DitOptions toy_dit(const std::filesystem::path& run_dir) {
  DitOptions d;
  d.run_dir = run_dir;
  d.dataset = 2, d.batch = 2, d.steps = 1, d.warmup = 1, d.sample_every = 0;
  d.dim = 64, d.ffn_dim = 128, d.num_heads = 1, d.num_layers = 1, d.text_dim = 32;
  d.text_ffn = 64, d.text_heads = 2, d.text_layers = 1, d.text_len = 16;
  d.clip = {32, 32, 9};
  return d;
}

TEST(Training, TokenizerKnowsTheGrammar) {
  test::TempDir dir;
  train_tokenizer(dir.path());
  const auto tok = text::Tokenizer::load(dir / kTokenizerFile);
  const auto t = tok.encode("a green triangle moving up on a white background", 32);
  EXPECT_EQ(t.length, 10);  // a piece per word, and </s>
  // Every word of the grammar is known: no <unk> (id 2).
  for (int64_t i = 0; i < t.length; ++i) EXPECT_NE(t.ids[0][i].item<int64_t>(), 2);
  EXPECT_EQ(grammar_captions().size(), 6u * 5 * 3 * 4 - 14);  // 14 held-out combinations
}

// The embedded tokenizer is BPE, applied without libsentencepiece where the
// text is printable ASCII (text/spm_bpe.h): the same ids as the library's for
// every caption, and for text the grammar never saw. A second model with a
// small vocabulary splits words into several pieces and meets characters it
// has no piece for (one <unk> for a run of them, as the library gives), and
// merges of equal score ("aa" in "aaa": the leftmost first).
TEST(Tokenizer, BpeWithoutTheLibraryMatchesIt) {
  test::TempDir dir;
  train_tokenizer(dir.path());
  std::vector<std::string> texts = grammar_captions();
  for (const char* extra :
       {"", " ", "a", "a  red   circle ", "redcircle moving", "a red circle moving diagonally",
        "Zebra 42!", "~~~ ???", "a purple hexagon on a grey background", "background background",
        "xyzzy qqq a red", "e", "ee ee eee", "aaa aaaaa baaa aaab"})
    texts.emplace_back(extra);
  const auto small = dir / "small.model";
  text::Tokenizer::train(
      {"the cat sat on the mat", "a red circle moving left", "the red cat moving on a blue mat",
       "circles and squares", "aa baa aab aa"},
      small, 40);
  for (const auto& path : {dir / kTokenizerFile, small}) {
    SCOPED_TRACE(path.string());
    ASSERT_TRUE(text::SpmBpe::from_file(path).has_value()) << "not read as a BPE model";
    const auto native = text::Tokenizer::load(path);
    const auto library = text::Tokenizer::load(path, text::Tokenizer::Backend::Library);
    EXPECT_EQ(native.vocab_size(), library.vocab_size());
    int64_t multi_piece_words = 0;
    for (const auto& t : texts) {
      const auto a = native.encode(t, 64), b = library.encode(t, 64);
      EXPECT_TRUE(torch::equal(a.ids, b.ids)) << "\"" << t << "\": " << a.ids.slice(1, 0, a.length)
                                              << " vs " << b.ids.slice(1, 0, b.length);
      multi_piece_words += a.length > static_cast<int64_t>(std::count(t.begin(), t.end(), ' ')) + 2;
    }
    if (path == small) {
      EXPECT_GT(multi_piece_words, 10);  // the merges were exercised
    }
  }
  // Text beyond printable ASCII is left to the library.
  EXPECT_FALSE(text::SpmBpe::from_file(dir / kTokenizerFile)->encode("caf\xC3\xA9").has_value());
}

// The DiT's noise levels follow the sampler's shifted schedule: with shift s a
// uniform draw u becomes su / (1 + (s − 1)u), so the median moves from 1/2 to
// s/(s + 1) and a quarter of the draws lie above 0.9 for s = 3 (u > 3/4).
TEST(Training, NoiseLevelsFollowTheShiftedSchedule) {
  DitOptions o;
  auto share_above = [](const torch::Tensor& s, double x) {
    return (s > x).to(torch::kDouble).mean().item<double>();
  };
  torch::manual_seed(3);
  o.sigma = SigmaDraw::Uniform, o.shift = 1;
  auto s = draw_sigmas(o, 40000);
  EXPECT_NEAR(s.median().item<double>(), 0.5, 0.01);
  EXPECT_NEAR(share_above(s, 0.9), 0.1, 0.01);
  o.shift = 3;
  s = draw_sigmas(o, 40000);
  EXPECT_GE(s.min().item<double>(), 0.0);
  EXPECT_LE(s.max().item<double>(), 1.0);
  EXPECT_NEAR(s.median().item<double>(), 0.75, 0.01);
  EXPECT_NEAR(share_above(s, 0.9), 0.25, 0.01);
  // Logit-normal (SD3): few draws near 1 unless shifted; P(N(0,1) > logit 0.9) ≈ 1.4%.
  o.sigma = SigmaDraw::LogitNormal, o.shift = 1;
  s = draw_sigmas(o, 40000);
  EXPECT_NEAR(s.median().item<double>(), 0.5, 0.01);
  EXPECT_NEAR(share_above(s, 0.9), 0.014, 0.004);
}

TEST(Training, GivenFrameIsNoisedLessAndLeftOutOfTheLoss) {
  torch::manual_seed(5);
  const int64_t b = 4000, f = 5;
  const auto x0 = torch::randn({b, 2, f, 1, 1});
  const auto noise = torch::randn({b, 2, f, 1, 1});
  const auto sigma = torch::rand({b}) * 0.5 + 0.5;
  const auto s = sigma.view({-1, 1, 1, 1, 1});
  const auto plain = (1 - s) * x0 + s * noise;
  // None given: the plain flow-matching input, every frame weighing 1.
  const auto none = noise_batch(x0, sigma, noise, 0);
  EXPECT_TRUE(torch::equal(none.xt, plain));
  EXPECT_EQ(none.weight.sizes(), (std::vector<int64_t>{b, 1, f, 1, 1}));
  EXPECT_EQ(none.weight.sum().item<double>(), static_cast<double>(b * f));
  // Half given: in those clips exactly one frame weighs 0, and only that frame
  // differs from the plain input, noised at σ·u, u uniform (mean σ/2).
  const auto half = noise_batch(x0, sigma, noise, 0.5);
  const auto given = half.weight.view({b, f}) == 0;
  const auto per_clip = given.sum(1);
  EXPECT_EQ(per_clip.max().item<int64_t>(), 1);
  EXPECT_NEAR(per_clip.to(torch::kDouble).mean().item<double>(), 0.5, 0.03);
  const auto changed = (half.xt - plain).abs().amax({1, 3, 4}) > 1e-6;  // [B, F]
  EXPECT_TRUE(torch::equal(changed, given & changed));  // nothing outside the given frames
  // The given frame's level, recovered from x_σ = x0 + σ'·(ε − x0), against σ.
  const auto gx = half.xt.permute({0, 2, 1, 3, 4}).reshape({b, f, 2});
  const auto d = (noise - x0).permute({0, 2, 1, 3, 4}).reshape({b, f, 2});
  const auto x = x0.permute({0, 2, 1, 3, 4}).reshape({b, f, 2});
  const auto level = ((gx - x) * d).sum(2) / d.pow(2).sum(2);  // [B, F]
  const auto ratio =
      level.masked_select(given) / sigma.view({-1, 1}).expand({b, f}).masked_select(given);
  EXPECT_GE(ratio.min().item<double>(), -1e-4);
  EXPECT_LE(ratio.max().item<double>(), 1 + 1e-4);
  EXPECT_NEAR(ratio.mean().item<double>(), 0.5, 0.03);
  // Every frame can be the given one.
  EXPECT_EQ((given.sum(0) > 0).sum().item<int64_t>(), f);
  EXPECT_THROW(noise_batch(x0, sigma.slice(0, 0, 3), noise, 0.5), Error);
}

TEST(Training, ObjectWeightsCoverTheObjectAndItsEdge) {
  // Two clips, 16 channels, 2 frames of 8×8: a background of its own per
  // channel, plus small noise, and in clip 0's frame 0 an object at rows 3–4,
  // columns 5–6; clip 1 is background alone.
  torch::manual_seed(2);
  auto x0 = torch::randn({2, 16, 1, 1, 1}).expand({2, 16, 2, 8, 8}).clone() +
            0.05 * torch::randn({2, 16, 2, 8, 8});
  x0.index_put_(
      {0, torch::indexing::Slice(), 0, torch::indexing::Slice(3, 5), torch::indexing::Slice(5, 7)},
      x0.index({0, torch::indexing::Slice(), 0, torch::indexing::Slice(3, 5),
                torch::indexing::Slice(5, 7)}) +
          1.5);
  const auto w = object_weights(x0, 4);
  ASSERT_EQ(w.sizes(), (std::vector<int64_t>{2, 1, 2, 8, 8}));
  auto expected = torch::ones({2, 1, 2, 8, 8});
  expected.index_put_({0, 0, 0, torch::indexing::Slice(2, 6), torch::indexing::Slice(4, 8)}, 5);
  EXPECT_TRUE(torch::equal(w, expected)) << w[0][0][0];
  // No weight: every cell 1.
  EXPECT_TRUE(torch::equal(object_weights(x0, 0), torch::ones({2, 1, 2, 8, 8})));
  EXPECT_THROW(object_weights(x0[0], 4), Error);
}

TEST(Training, StagesWriteLoadableModelsAndResume) {
  test::TempDir dir;
  train_tokenizer(dir.path());
  auto v = toy_vae(dir.path());
  v.crop = 16, v.time_compression = 1;
  train_vae(v);
  ASSERT_TRUE(std::filesystem::exists(dir / kVaeFile));
  v.steps = 2;  // resume: one more step from the checkpoint
  train_vae(v);
  EXPECT_EQ(lines(dir / "vae-state" / "loss.csv"), 3);  // header + steps 1, 2
  auto vae = vae::WanVAE::load(dir / kVaeFile);
  EXPECT_EQ(vae.config().dim, 4);
  EXPECT_EQ(vae.config().time_compression(), 1);
  const auto z = vae.encode(torch::rand({1, 3, 9, 32, 32}) * 2 - 1);
  EXPECT_EQ(z.sizes(), (std::vector<int64_t>{1, 16, 9, 4, 4}));
  // Without temporal downsampling one pass equals the chunked, cached decode.
  std::vector<torch::Tensor> chunks;
  const auto whole = vae.decode(z);
  const auto chunked = vae.decode(z, [&](const torch::Tensor& f) { chunks.push_back(f); });
  EXPECT_EQ(chunks.size(), 9u);
  EXPECT_LT((whole - chunked).abs().max().item<double>(), 1e-4);

  auto d = toy_dit(dir.path());
  d.dataset = 4, d.steps = 2, d.save_every = 1, d.log_every = 1;
  d.sample_every = DitOptions{}.sample_every;
  train_dit(d);
  auto dit = diffusion::WanModel::load(dir / kDitFile);
  EXPECT_EQ(dit.config().dim, 64);
  EXPECT_EQ(dit.config().text_len, 16);
  auto te = text::T5Encoder::load(dir / kTextEncoderFile);
  EXPECT_EQ(te.config().dim, 32);
  {
    // The encoder reads word order from its first step: the words both
    // captions share, in the same places, come out different because the
    // colours around them traded places. (Begun with position biases of
    // std 0.02 it was nearly a bag of words: differences below 1e-3 here, and
    // in the first embedded-model run cosine 1.0000 after 5000 steps.)
    const auto tok = text::Tokenizer::load(dir / kTokenizerFile);
    torch::NoGradGuard g;
    auto encode = [&](const std::string& s) {
      const auto t = tok.encode(s, 16);
      return std::pair{te.forward(t.ids, t.mask)[0], t.ids[0]};
    };
    const auto [a, ids_a] = encode("a red circle moving left on a blue background");
    const auto [b, ids_b] = encode("a blue circle moving left on a red background");
    int same_word = 0;
    double most = 0;
    for (int64_t i = 0; i < ids_a.size(0); ++i) {
      if (ids_a[i].item<int64_t>() != ids_b[i].item<int64_t>() || ids_a[i].item<int64_t>() == 0)
        continue;
      ++same_word;
      const double rel = ((a[i] - b[i]).norm() / a[i].norm()).item<double>();
      EXPECT_GT(rel, 1e-3) << "token " << i;
      most = std::max(most, rel);
    }
    EXPECT_GE(same_word, 6);
    EXPECT_GT(most, 1e-2);
  }
  const auto out =
      dit.forward(torch::randn({1, 16, 3, 4, 4}), torch::tensor({500.0}), torch::randn({1, 5, 32}));
  EXPECT_EQ(out.sizes(), (std::vector<int64_t>{1, 16, 3, 4, 4}));
  EXPECT_EQ(lines(dir / "dit-state" / "loss.csv"), 3);
  // What the EMA weights draw when the stage completes: four clips, five frames each.
  EXPECT_FALSE(std::filesystem::exists(dir / "dit-state" / "samples-1.ppm"));
  {
    std::ifstream ppm(dir / "dit-state" / "samples-2.ppm", std::ios::binary);
    std::string magic;
    int w = 0, h = 0;
    ppm >> magic >> w >> h;
    EXPECT_EQ(magic, "P6");
    EXPECT_EQ(w, 5 * 32);
    EXPECT_EQ(h, 4 * 32);
  }
  // With the sheet, how much each word moves the loss, and the x₀ error at
  // each noise level: one line per sheet.
  EXPECT_EQ(lines(dir / "dit-state" / "word-gaps.csv"), 2);
  EXPECT_EQ(lines(dir / "dit-state" / "direction-given-frame.csv"), 2);
  EXPECT_EQ(lines(dir / "dit-state" / "denoise.csv"), 2);
  train_dit(d);  // run again when complete: nothing trained, nothing logged twice
  EXPECT_EQ(lines(dir / "dit-state" / "loss.csv"), 3);
  EXPECT_EQ(lines(dir / "dit-state" / "word-gaps.csv"), 2);
  EXPECT_EQ(lines(dir / "dit-state" / "direction-given-frame.csv"), 2);
  EXPECT_EQ(lines(dir / "dit-state" / "denoise.csv"), 2);
  {
    // Those numbers come from word_gaps(). This toy DiT has had two steps and
    // barely reads its caption, so its cross-attention is made louder first:
    // then swapping a word moves the loss; with that output at zero, a DiT
    // that cannot hear its caption, every gap is exactly 0.
    const auto tok = text::Tokenizer::load(dir / kTokenizerFile);
    const std::vector<std::string> caps = {"a red circle moving left on a blue background",
                                           "a white square moving up on a black background",
                                           "a green triangle moving down on a yellow background"};
    torch::manual_seed(3);
    const auto latents = torch::randn({3, 16, 3, 4, 4});
    auto scale_cross_attention_output = [&](double f) {
      torch::NoGradGuard ng;
      for (auto& p : dit.module().named_parameters())
        if (p.key().find("cross_attn.o.") != std::string::npos) p.value().set_data(p.value() * f);
    };
    scale_cross_attention_output(1000);
    const auto g = word_gaps(dit, te, tok, latents, caps, d);
    double largest = 0;
    for (double gap : {g.object, g.background, g.shape, g.direction, g.direction_given_frame}) {
      EXPECT_TRUE(std::isfinite(gap));
      largest = std::max(largest, std::abs(gap));
    }
    EXPECT_GT(largest, 1e-4);  // 0.0026% here: identical contexts would give exactly 0
    scale_cross_attention_output(0);
    const auto deaf = word_gaps(dit, te, tok, latents, caps, d);
    EXPECT_EQ(deaf.object, 0.0);
    EXPECT_EQ(deaf.background, 0.0);
    EXPECT_EQ(deaf.shape, 0.0);
    EXPECT_EQ(deaf.direction, 0.0);
    EXPECT_EQ(deaf.direction_given_frame, 0.0);
    // The x₀ error at each noise level, from denoise_errors(): with the output
    // head at zero the DiT predicts v = 0, so its x₀ estimate is x_σ and the
    // error is σ²·|ε − x₀|², the same noise at every σ.
    const auto trained = denoise_errors(dit, te, tok, latents, caps, d, {0.5, 0.9});
    EXPECT_GT(trained[0], 0.0);
    {
      torch::NoGradGuard ng;
      for (auto& p : dit.module().named_parameters())
        if (p.key().starts_with("head.head.")) p.value().zero_();
    }
    const std::vector<double> sigmas = {0.3, 0.6, 0.9};
    const auto blind = denoise_errors(dit, te, tok, latents, caps, d, sigmas);
    ASSERT_EQ(blind.size(), 3u);
    for (std::size_t i = 0; i < 3; ++i)
      EXPECT_NEAR(blind[i] / (sigmas[i] * sigmas[i]), blind[0] / 0.09, 1e-4 * blind[0] / 0.09);
    EXPECT_NEAR(blind[0] / 0.09, 2.0, 0.3);  // |ε − x₀|² per element, both N(0, 1) here
    EXPECT_THROW(denoise_errors(dit, te, tok, latents, {caps[0]}, d, sigmas), Error);
    try {
      word_gaps(dit, te, tok, latents, {caps[0], caps[1], "a red circle"}, d);
      ADD_FAILURE() << "a caption outside the grammar was measured";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("\"a red circle\""), std::string::npos) << e.what();
    }
  }
  {
    // A fresh run started from a trained model's files, in bf16 as shipped:
    // with the learning rate at 0 its first step changes nothing, so the
    // model it exports is those weights exactly (bf16 widens to float32
    // without loss). A model of another config is refused by name.
    const auto from = dir / "from", run = dir / "init";
    std::filesystem::create_directories(from);
    std::filesystem::create_directories(run);
    for (const char* f : {kTokenizerFile, kVaeFile}) std::filesystem::copy_file(dir / f, run / f);
    for (const char* f : {kDitFile, kTextEncoderFile}) {
      const auto ck = io::Checkpoint::open(dir / f);
      std::vector<std::pair<std::string, torch::Tensor>> half;
      for (const auto& name : ck.names())
        half.emplace_back(name, ck.get(name).to(torch::kBFloat16));
      io::save_safetensors(from / f, half, ck.metadata());
    }
    auto n = d;
    n.run_dir = run, n.init_from = from, n.steps = 1, n.lr = 0, n.sample_every = 0;
    train_dit(n);
    for (const char* f : {kDitFile, kTextEncoderFile}) {
      const auto want = io::Checkpoint::open(from / f), got = io::Checkpoint::open(run / f);
      ASSERT_EQ(got.names(), want.names()) << f;
      for (const auto& name : want.names())
        EXPECT_TRUE(torch::equal(got.get(name), want.get(name).to(torch::kFloat32)))
            << f << " " << name;
    }
    // Without it, the same run starts elsewhere (a new run: it may replace
    // the files the one before wrote only when told to).
    std::filesystem::remove_all(run / "dit-state");
    n.init_from.clear();
    expect_refused(n, (run / kDitFile).string() + ": exists, and this stage starts afresh");
    n.overwrite = true;
    train_dit(n);
    EXPECT_FALSE(torch::equal(
        io::Checkpoint::open(run / kDitFile).get("head.head.weight"),
        io::Checkpoint::open(from / kDitFile).get("head.head.weight").to(torch::kFloat32)));
    std::filesystem::remove_all(run / "dit-state");
    n.init_from = from, n.ffn_dim = 96;  // a model of another feed-forward width
    expect_refused(n, "its config has ffn_dim = 128; this run's is 96");
    // Refused before the clips were encoded: nothing written.
    EXPECT_FALSE(std::filesystem::exists(run / "dit-state"));
    std::filesystem::remove_all(run);
  }
  // Resumed on windows of 2 latent frames (this VAE's latent frames are frames).
  // Its sheets come on their own schedule: step 3 is no checkpoint (every 10).
  // Half its clips with a frame given, which the loss leaves out.
  d.steps = 4, d.window = 2, d.save_every = 10, d.sample_every = 3, d.given_frame = 0.5;
  train_dit(d);
  d.given_frame = 0;
  EXPECT_EQ(lines(dir / "dit-state" / "loss.csv"), 5);
  EXPECT_TRUE(std::filesystem::exists(dir / "dit-state" / "samples-3.ppm"));
  EXPECT_TRUE(std::filesystem::exists(dir / "dit-state" / "samples-4.ppm"));
  EXPECT_EQ(lines(dir / "dit-state" / "word-gaps.csv"), 4);
  EXPECT_EQ(lines(dir / "dit-state" / "direction-given-frame.csv"), 4);
  EXPECT_EQ(lines(dir / "dit-state" / "denoise.csv"), 4);
  d.save_every = 1, d.sample_every = 1000;
  d.steps = 5, d.window = 10;  // longer than the clips' 9 latent frames
  expect_refused(d, "--window 10");
  // A width that cannot carry a token's latent values is refused, naming both.
  d.window = 0, d.patch = 4;
  expect_refused(d, "--dim 64 is narrower than a token's 256");
  // ... and leaves nothing behind in a new run.
  const auto fresh = dir / "fresh";
  {
    std::filesystem::create_directories(fresh);
    for (const char* f : {kTokenizerFile, kVaeFile}) std::filesystem::copy_file(dir / f, fresh / f);
    auto n = d;
    n.run_dir = fresh;
    EXPECT_THROW(train_dit(n), Error);
    EXPECT_FALSE(std::filesystem::exists(fresh / "dit-state"));
  }
  d.patch = 2;
  {
    // Tokens of several latent frames: refused where they do not divide the
    // clips' 9 latent frames, or with heads that look a frame back; with 3 a
    // token holds 3 frames and the exported DiT says so.
    auto n = d;
    n.run_dir = fresh, n.steps = 1, n.dim = 192, n.num_heads = 4;
    auto refused = [&](const DitOptions& bad, const std::string& why) {
      expect_refused(bad, why);
      EXPECT_FALSE(std::filesystem::exists(fresh / "dit-state"));
    };
    n.time_patch = 2;
    refused(n, "--time-patch 2 must divide the clips' 9 latent frames");
    n.time_patch = 3, n.motion_heads = 4;
    refused(n, "with --time-patch 3 a token holds 3 latent frames");
    n.motion_heads = 0, n.dim = 128;
    refused(n, "--dim 128 is narrower than a token's 192");
    n.dim = 192;
    train_dit(n);
    const auto patched = diffusion::WanModel::load(fresh / kDitFile);
    EXPECT_EQ(patched.config().patch_t, 3);
    EXPECT_EQ(patched.config().patch_h, 2);
    std::filesystem::remove_all(fresh);
  }
  // Resumed on centred clips: the cached latents are of clips placed anywhere,
  // so they are encoded anew, and the cache and the DiT say which they hold.
  d.clip.placement = Placement::Centred;
  std::vector<std::string> said;
  d.on_message = [&](const std::string& m) { said.push_back(m); };
  d.locality_heads = 1;  // started once on a run that had none, and recorded
  train_dit(d);
  EXPECT_EQ(lines(dir / "dit-state" / "loss.csv"), 6);
  bool anew = false, started = false;
  for (const auto& m : said) started |= m.find("same place in every frame") != std::string::npos;
  EXPECT_TRUE(started);
  {
    std::ifstream f(dir / "dit-state" / "state.json");
    const std::string js((std::istreambuf_iterator<char>(f)), {});
    EXPECT_NE(js.find("\"locality_heads\": 1"), std::string::npos) << js;
  }
  d.locality_heads = 2;  // this DiT has one head
  expect_refused(d, "at most the DiT's 1 heads");
  d.locality_heads = 0, d.motion_heads = 4;  // four kernels need four heads
  expect_refused(d, "--motion-heads 4");
  d.motion_heads = 0;
  for (const auto& m : said) anew |= m.find("encoding anew") != std::string::npos;
  EXPECT_TRUE(anew);
  const auto cache = io::Checkpoint::open(dir / "dit-state" / "latents.safetensors");
  EXPECT_EQ(cache.metadata().at("placement"), "centred");
  const auto meta = io::Checkpoint::open(dir / kDitFile).metadata().at("kinora");
  EXPECT_NE(meta.find("\"placement\":\"centred\""), std::string::npos) << meta;
}

// Random weights of unit-size rows, the same for every model of one config
// (seed 3): 1-D parameters (norm gains, biases) small, matrices N(0, 1/fan_in).
void random_weights(diffusion::WanModel& m) {
  torch::NoGradGuard g;
  torch::manual_seed(3);
  for (auto& p : m.module().parameters())
    p.dim() == 1 ? p.normal_(0, 0.05) : p.normal_(0, 1 / std::sqrt(double(p.size(-1))));
}

// One head's attention weights [query, key] in block 0 of a DiT over a 5×H×W
// token grid of random content, and the grid [3, L] (t, h, w). Computed from the
// parameters the way the Wan DiT computes them (q/k RMSNorm over the whole
// width, interleaved 3D RoPE with t : h : w = d − 4⌊d/6⌋ : 2⌊d/6⌋ : 2⌊d/6⌋,
// scores / √d).
std::pair<torch::Tensor, torch::Tensor> head_weights(torch::nn::Module& m, int64_t heads,
                                                     int64_t head, int64_t H = 4, int64_t W = 4) {
  torch::NoGradGuard g;
  auto p = m.named_parameters();
  const int64_t F = 5, L = F * H * W;
  torch::manual_seed(7);
  const auto x = torch::randn({L, p["blocks.0.self_attn.q.weight"].size(1)});
  auto qk = [&](const std::string& which) {
    const std::string at = "blocks.0.self_attn.";
    auto y = torch::nn::functional::linear(x, p[at + which + ".weight"], p[at + which + ".bias"]);
    y = y * torch::rsqrt(y.pow(2).mean(-1, true) + 1e-6) * p[at + "norm_" + which + ".weight"];
    return y.view({L, heads, -1}).select(1, head);  // [L, d]
  };
  const auto q = qk("q"), k = qk("k");
  const int64_t d = q.size(1), d6 = d / 6;
  const auto grid =
      torch::stack(torch::meshgrid({torch::arange(F), torch::arange(H), torch::arange(W)}, "ij"))
          .view({3, L})
          .to(torch::kDouble);  // [3, L]: t, h, w of each token
  std::vector<torch::Tensor> angles;
  const int64_t dims[3] = {d - 4 * d6, 2 * d6, 2 * d6};
  for (int a = 0; a < 3; ++a) {
    const auto inv = torch::pow(
        10000.0, -torch::arange(0, dims[a], 2).to(torch::kDouble) / static_cast<double>(dims[a]));
    angles.push_back(torch::outer(grid[a], inv));
  }
  const auto ang = torch::cat(angles, 1);  // [L, d/2]
  auto rope = [&](const torch::Tensor& t) {
    const auto v = t.to(torch::kDouble).view({L, -1, 2});
    const auto a = v.select(-1, 0), b = v.select(-1, 1);
    return torch::stack({a * ang.cos() - b * ang.sin(), a * ang.sin() + b * ang.cos()}, -1)
        .view({L, d});
  };
  return {torch::softmax(torch::mm(rope(q), rope(k).t()) / std::sqrt(double(d)), 1), grid};
}

// The weights of head_weights() on a 5×4×4 grid, averaged by offset:
// [Δt + 4, |Δh| + |Δw|] for Δt = key frame − query frame in −4..4 and spatial
// distance 0..2.
torch::Tensor weights_by_offset(torch::nn::Module& m, int64_t heads, int64_t head) {
  const auto [w, grid] = head_weights(m, heads, head);
  const int64_t F = 5;
  const auto dt = grid[0].unsqueeze(0) - grid[0].unsqueeze(1);  // [query, key]: key − query
  const auto ds = (grid[1].unsqueeze(1) - grid[1].unsqueeze(0)).abs() +
                  (grid[2].unsqueeze(1) - grid[2].unsqueeze(0)).abs();
  auto out = torch::zeros({2 * F - 1, 3}, torch::kDouble);
  for (int64_t t = -(F - 1); t < F; ++t)
    for (int64_t s = 0; s < 3; ++s)
      out[t + F - 1][s] = w.masked_select((dt == t) & (ds == s)).mean();
  return out;
}

TEST(Training, LocalityHeadsAttendToTheSamePlace) {
  const int64_t heads = 4;
  diffusion::WanConfig c;
  c.dim = 256, c.ffn_dim = 64, c.num_heads = heads, c.num_layers = 2, c.text_dim = 32;
  c.text_len = 8, c.patch_h = c.patch_w = 4;
  diffusion::WanModel plain(c), local(c);
  for (auto* m : {&plain, &local}) random_weights(*m);
  init_locality_heads(local.module(), heads, 1, 6.0);
  auto at = [](const torch::Tensor& w, int64_t dt, int64_t s) {
    return w[dt + 4][s].item<double>();
  };
  // Head 0: most weight at the same place, whatever the frame.
  const auto every = weights_by_offset(local.module(), heads, 0);
  for (int64_t t = -4; t <= 4; ++t) {
    EXPECT_GT(at(every, t, 0), 10 * at(every, t, 1)) << "Δt " << t;
    EXPECT_NEAR(at(every, t, 0) / at(every, 0, 0), 1.0, 0.35) << "Δt " << t;
  }
  // Without it, the weights hardly depend on the offset.
  const auto before = weights_by_offset(plain.module(), heads, 0);
  EXPECT_LT(at(before, 0, 0), 2 * at(before, 0, 1));
  // The other heads and blocks past the last one are untouched; a second block is started too.
  auto pp = plain.module().named_parameters(), lp = local.module().named_parameters();
  EXPECT_TRUE(torch::equal(pp["blocks.0.self_attn.q.weight"].narrow(0, 64, 192),
                           lp["blocks.0.self_attn.q.weight"].narrow(0, 64, 192)));
  EXPECT_FALSE(torch::equal(pp["blocks.1.self_attn.k.bias"], lp["blocks.1.self_attn.k.bias"]));
  // Heads 1 and 2 added later: the same place in the frame before / after. (The
  // queries of the first frame, which has no frame before, put their weight on
  // their own frame, so for head 1 the Δt = 0 bin is not small.)
  init_locality_heads(local.module(), heads, 3, 6.0, 1);
  const auto still = weights_by_offset(local.module(), heads, 0);
  for (int64_t t = -4; t <= 4; ++t) EXPECT_GT(at(still, t, 0), 10 * at(still, t, 1)) << "Δt " << t;
  for (const auto& [head, peak] : {std::pair{1, -1}, {2, 1}}) {
    const auto w = weights_by_offset(local.module(), heads, head);
    for (int64_t t = -4; t <= 4; ++t)
      if (t != peak) {
        EXPECT_GT(at(w, peak, 0), 2 * at(w, t, 0)) << "head " << head << " Δt " << t;
      }
    EXPECT_GT(at(w, peak, 0), 4 * at(w, peak, 1)) << "head " << head;
  }
  EXPECT_THROW(init_locality_heads(local.module(), heads, 4, 6.0, 3), Error);
}

TEST(Training, MotionHeadsAttendAlongThePaths) {
  // The embedded DiT's layout: width 192, 8 heads of 24, a clip of 5 × 8 × 8 tokens.
  const int64_t heads = 8;
  diffusion::WanConfig c;
  c.dim = 192, c.ffn_dim = 64, c.num_heads = heads, c.num_layers = 2, c.text_dim = 32;
  c.text_len = 8;
  diffusion::WanModel plain(c), four(c), eight(c);
  for (auto* m : {&plain, &four, &eight}) random_weights(*m);
  const double depth = 6.0;
  init_motion_heads(eight.module(), heads, 0, 8, depth);
  init_locality_heads(four.module(), heads, 1, 6.0);
  init_motion_heads(four.module(), heads, 1, 4, depth);
  EXPECT_THROW(init_motion_heads(four.module(), heads, 1, 2, depth), Error);  // 4 or 8
  EXPECT_THROW(init_motion_heads(four.module(), heads, 1, 8, depth), Error);  // 9 heads
  // Where an object moving left / right / up / down was a latent frame before
  // (key − query: Δt, Δh, Δw), then where it will be a latent frame on.
  const std::array<int64_t, 3> came_from[4] = {{-1, 0, 1}, {-1, 0, -1}, {-1, 1, 0}, {-1, -1, 0}};
  for (int64_t head = 0; head < 8; ++head) {
    auto want = came_from[head % 4];
    if (head >= 4)
      for (auto& v : want) v = -v;
    const auto [w, grid] = head_weights(eight.module(), heads, head, 8, 8);
    const auto diff = grid.unsqueeze(1) - grid.unsqueeze(2);  // [3, query, key]: key − query
    const auto at = (diff[0] == want[0]) & (diff[1] == want[1]) & (diff[2] == want[2]);
    // Queries that have that key: nearly all of them put most weight on it.
    const auto has = at.any(1);
    const auto on = (w * at).sum(1).masked_select(has);
    const auto strongest = at.gather(1, w.argmax(1, true)).squeeze(1).masked_select(has);
    const double share = on.mean().item<double>(),
                 right = strongest.to(torch::kDouble).mean().item<double>();
    EXPECT_GT(right, 0.95) << "motion head " << head;
    EXPECT_GT(share, 0.4) << "motion head " << head;
    EXPECT_LT(share, 0.9) << "motion head " << head << ": too sharp to learn from";
  }
  // Untouched heads weigh the keys about alike; heads 5-7 of the model with
  // one locality and four motion heads are as they were.
  const auto [flat, fgrid] = head_weights(plain.module(), heads, 0, 8, 8);
  EXPECT_LT(flat.max().item<double>(), 0.1);
  auto pp = plain.module().named_parameters(), fp = four.module().named_parameters();
  EXPECT_TRUE(torch::equal(pp["blocks.1.self_attn.k.weight"].narrow(0, 5 * 24, 72),
                           fp["blocks.1.self_attn.k.weight"].narrow(0, 5 * 24, 72)));
  EXPECT_FALSE(torch::equal(pp["blocks.1.self_attn.k.bias"].narrow(0, 24, 96),
                            fp["blocks.1.self_attn.k.bias"].narrow(0, 24, 96)));
}

TEST(Training, PoolHeadsAverageAroundTheirPlace) {
  const int64_t heads = 8;
  diffusion::WanConfig c;
  c.dim = 192, c.ffn_dim = 64, c.num_heads = heads, c.num_layers = 1, c.text_dim = 32;
  c.text_len = 8;
  diffusion::WanModel m(c);
  random_weights(m);
  init_motion_heads(m.module(), heads, 0, 4, 6.0);
  init_pool_heads(m.module(), heads, 4, 4, 6.0);
  EXPECT_THROW(init_pool_heads(m.module(), heads, 5, 4, 6.0), Error);  // 9 heads
  EXPECT_THROW(init_pool_heads(m.module(), heads, 4, 3, 6.0), Error);
  for (int64_t i = 0; i < 4; ++i) {
    const auto [w, grid] = head_weights(m.module(), heads, 4 + i, 8, 8);
    const auto diff = grid.unsqueeze(1) - grid.unsqueeze(2);  // [3, query, key]
    const auto dist = diff[1].abs().maximum(diff[2].abs());   // tokens apart in the frame
    auto mean_at = [&](const torch::Tensor& where) {
      return w.masked_select(where).mean().item<double>();
    };
    const bool same_frame = i < 2;
    const double spread = i % 2 == 0 ? 1.0 : 2.0;
    // Broad: the tokens a spread away keep a good share of the own place's
    // weight, and weight falls with distance.
    const auto here = mean_at((diff[0] == 0) & (dist == 0));
    const auto one = mean_at((diff[0] == 0) & (dist == 1));
    const auto three = mean_at((diff[0] == 0) & (dist == 3));
    EXPECT_GT(one, (spread == 1.0 ? 0.3 : 0.6) * here) << "pool head " << i;
    EXPECT_LT(one, here) << "pool head " << i;
    EXPECT_LT(three, one) << "pool head " << i;
    // In time: the own frame only, or every frame alike.
    const auto next_frame = mean_at((diff[0] == 1) & (dist == 0));
    if (same_frame)
      EXPECT_LT(next_frame, 0.1 * here) << "pool head " << i;
    else
      EXPECT_NEAR(next_frame / here, 1.0, 0.25) << "pool head " << i;
  }
}

TEST(Training, VaeWithFourfoldSpatialCompression) {
  test::TempDir dir;
  auto v = toy_vae(dir.path());
  v.spatial_compression = 4;
  train_vae(v);
  auto vae = vae::WanVAE::load(dir / kVaeFile);
  EXPECT_EQ(vae.config().spatial_compression(), 4);
  EXPECT_EQ(vae.config().time_compression(), 4);
  const auto z = vae.encode(torch::rand({1, 3, 9, 32, 32}) * 2 - 1);
  EXPECT_EQ(z.sizes(), (std::vector<int64_t>{1, 16, 3, 8, 8}));
  EXPECT_EQ(vae.decode(z).sizes(), (std::vector<int64_t>{1, 3, 9, 32, 32}));
  // The stage ends by measuring its reconstructions the way the semantic test does.
  std::ifstream report(dir / "vae-report.json");
  ASSERT_TRUE(report.good());
  const std::string text((std::istreambuf_iterator<char>(report)), {});
  EXPECT_NE(text.find("\"shape_pct\""), std::string::npos);
  EXPECT_NE(text.find("\"originals_all_pct\""), std::string::npos) << text;

  v.spatial_compression = 2;
  EXPECT_THROW(train_vae(v), Error);
  // A refused run leaves nothing behind in a new run folder.
  test::TempDir refused;
  auto r = toy_vae(refused.path() / "run");
  r.inflate_from = dir.path() / "not-there.safetensors";
  EXPECT_THROW(train_vae(r), Error);
  r.inflate_from.clear(), r.time_compression = 3;
  EXPECT_THROW(train_vae(r), Error);
  EXPECT_FALSE(std::filesystem::exists(refused.path() / "run"));
}

// The shape probe on a toy model: its rows in order (the clips themselves
// first, read right), counts and fills in range,
// the same numbers twice, a redraw from a σ₀ too small to change anything equal
// to the plain reconstruction, and a folder without the model refused by name.
TEST(Training, ShapeProbeOfAToyModel) {
  test::TempDir dir;
  train_tokenizer(dir.path());
  auto v = toy_vae(dir.path());
  v.time_compression = 1;
  train_vae(v);
  auto d = toy_dit(dir.path());
  train_dit(d);

  ProbeOptions o;
  o.model_dir = dir.path();
  o.clips_per_shape = 2, o.steps = 4, o.clip = {32, 32, 9};
  o.noise_levels = {0, 0.5};
  o.redraw_sigmas = {1e-6, 1.0};
  o.fit_steps = 6, o.fit_lr = 0.05;
  const auto rows = probe_shapes(o);
  ASSERT_EQ(rows.size(), 11u);
  const char* kinds[] = {"clip",      "noise",  "noise",  "first",   "fit",    "first+noise",
                         "fit+noise", "redraw", "redraw", "swapped", "swapped"};
  const double levels[] = {0, 0, 0.5, 0, 6, 0.5, 0.5, 1e-6, 1.0, 1e-6, 1.0};
  for (std::size_t i = 0; i < rows.size(); ++i) {
    EXPECT_EQ(rows[i].kind, kinds[i]);
    EXPECT_EQ(rows[i].level, levels[i]);
    for (int s = 0; s < 3; ++s) {
      EXPECT_GE(rows[i].right[s], 0);
      EXPECT_LE(rows[i].right[s], 2);
      EXPECT_GE(rows[i].fill[s], 0);
      EXPECT_LE(rows[i].fill[s], 1);
    }
  }
  // The clips themselves, with no VAE, read as their own shapes: the ceiling.
  EXPECT_EQ(rows[0].right, (std::array<int, 3>{2, 2, 2}));
  EXPECT_GT(rows[0].fill[1], 0.9);   // squares
  EXPECT_LT(rows[0].fill[2], 0.65);  // triangles
  // The first frames' latents moved through the frozen decoder reconstruct them
  // better than the encoder's own; only those two rows carry an L1.
  EXPECT_GT(rows[3].l1, 0);
  EXPECT_LT(rows[4].l1, rows[3].l1 - 1e-3);
  for (std::size_t i : {0, 1, 2, 5, 6, 7, 8, 9, 10}) EXPECT_EQ(rows[i].l1, -1) << i;
  // σ₀ 1e-6: one Euler step of 1e-6 from (nearly) the clean latent, whatever the caption.
  for (int s = 0; s < 3; ++s) {
    EXPECT_NEAR(rows[7].fill[s], rows[1].fill[s], 1e-3) << "shape " << s;
    EXPECT_NEAR(rows[9].fill[s], rows[1].fill[s], 1e-3) << "shape " << s;
  }
  const auto again = probe_shapes(o);
  for (std::size_t i = 0; i < rows.size(); ++i) {
    EXPECT_EQ(again[i].right, rows[i].right) << i;
    EXPECT_EQ(again[i].fill, rows[i].fill) << i;
  }
  const auto table = probe_table(rows, 2);
  EXPECT_NE(table.find("| swapped | 1.00 |"), std::string::npos) << table;
  EXPECT_NE(table.find("| fit | 6.00 |"), std::string::npos) << table;
  auto bad = o;
  bad.fit_steps = -1;
  EXPECT_THROW(probe_shapes(bad), Error);
  bad.fit_steps = 1, bad.fit_frames = 4;  // not 1 + 4k
  EXPECT_THROW(probe_shapes(bad), Error);

  std::filesystem::remove(dir / kDitFile);
  try {
    probe_shapes(o);
    ADD_FAILURE() << "a folder without its DiT was probed";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find((dir / kDitFile).string() + ": no such file"),
              std::string::npos)
        << e.what();
  }
}

// An image VAE inflated into a video VAE encodes each frame of a clip as the
// image model encodes it alone; training the decoder alone keeps the encoder.
TEST(Training, InflatedImageVaeAndDecoderOnly) {
  test::TempDir images, video;
  auto v = toy_vae(images.path());
  v.batch = 2, v.train_frames = 1, v.spatial_compression = 4, v.time_compression = 1;
  v.clip = {32, 32, 5};
  train_vae(v);
  v.run_dir = video.path(), v.steps = 0, v.inflate_from = images / kVaeFile;
  train_vae(v);

  const auto src = io::Checkpoint::open(images / kVaeFile);
  const auto dst = io::Checkpoint::open(video / kVaeFile);
  const auto k_src = src.get("encoder.conv1.weight"), k_dst = dst.get("encoder.conv1.weight");
  ASSERT_EQ(k_dst.size(2), 3);  // causal 3×3×3
  EXPECT_EQ(k_dst.slice(2, 0, 2).abs().max().item<double>(), 0.0);
  EXPECT_TRUE(torch::equal(k_dst.select(2, 2), k_src.select(2, 2)));

  auto vae = vae::WanVAE::load(video / kVaeFile);
  torch::manual_seed(3);
  const auto clip = torch::rand({1, 3, 5, 32, 32}) * 2 - 1;
  const auto z = vae.encode(clip);
  for (int64_t f : {0, 2, 4}) {
    const auto alone = vae.encode(clip.slice(2, f, f + 1));
    EXPECT_LT((z.slice(2, f, f + 1) - alone).abs().max().item<double>(), 1e-4) << "frame " << f;
  }

  // Inflated into a VAE that compresses time 4×: latent frame k starts as the
  // image model's latent of frame 4k, and each decodes to four equal frames.
  test::TempDir video4;
  auto v4 = v;
  v4.run_dir = video4.path(), v4.time_compression = 4;
  train_vae(v4);
  auto vae4 = vae::WanVAE::load(video4 / kVaeFile);
  const auto clip9 = torch::rand({1, 3, 9, 32, 32}) * 2 - 1;
  const auto z4 = vae4.encode(clip9);
  ASSERT_EQ(z4.size(2), 3);
  for (int64_t k : {0, 1, 2}) {
    const auto alone = vae4.encode(clip9.slice(2, 4 * k, 4 * k + 1));
    EXPECT_LT((z4.slice(2, k, k + 1) - alone).abs().max().item<double>(), 1e-4) << "latent " << k;
  }
  const auto rec = vae4.decode(z4);
  ASSERT_EQ(rec.size(2), 9);
  for (int64_t f = 1; f < 9; ++f) {
    const int64_t k = (f + 3) / 4;
    const auto alone = vae4.decode(z4.slice(2, k, k + 1));
    EXPECT_LT((rec.slice(2, f, f + 1) - alone).abs().max().item<double>(), 1e-4) << "frame " << f;
  }

  v.steps = 1, v.decoder_only = true;
  train_vae(v);
  const auto after = io::Checkpoint::open(checkpoint_of(video / "vae-state") / "vae.safetensors");
  for (const auto& name : after.names()) {
    const bool encoder = name.starts_with("encoder.") || name.starts_with("conv1.");
    if (encoder) {
      EXPECT_TRUE(torch::equal(after.get(name), dst.get(name))) << name;
    }
  }
  EXPECT_FALSE(torch::equal(after.get("decoder.head.2.weight"), dst.get("decoder.head.2.weight")));
}

// A fresh decoder-only run started from a trained VAE file (as from assets/):
// the file's weights to begin with, its encoder and its latent statistics kept
// to the end (also across a resume), the decoder trained; a file of another
// architecture, or two starts at once, refused before anything is written.
TEST(Training, DecoderOnlyRunFromATrainedVae) {
  test::TempDir base, fine;
  auto v = toy_vae(base.path());
  train_vae(v);
  // Statistics that the run's own clips would not give: kept means kept.
  auto trained = vae::WanVAE::load(base / kVaeFile);
  const std::vector<double> mean(16, 0.25), spread(16, 2.0);
  trained.set_latent_statistics(mean, spread);
  const auto src_path = base.path() / "stats.safetensors";
  {
    const auto ck = io::Checkpoint::open(base / kVaeFile);
    std::vector<std::pair<std::string, torch::Tensor>> tensors;
    for (const auto& n : ck.names()) tensors.emplace_back(n, ck.get(n));
    io::save_safetensors(src_path, tensors, {{"config", trained.config().to_json()}});
  }
  const auto src = io::Checkpoint::open(src_path);

  auto f = toy_vae(fine.path());
  f.init_from = src_path, f.decoder_only = true, f.steps = 2, f.save_every = 1;
  // Stopped after one step and resumed: the statistics survive the state.
  std::atomic<bool> stop{false};
  f.cancel = &stop;
  f.on_message = [&](const std::string& m) {
    if (m.find("vae step 1/") != std::string::npos) stop = true;
  };
  train_vae(f);
  ASSERT_FALSE(std::filesystem::exists(fine / kVaeFile));
  f.cancel = nullptr, f.on_message = nullptr;
  train_vae(f);

  const auto out = io::Checkpoint::open(fine / kVaeFile);
  const auto cfg = vae::WanVAEConfig::from_checkpoint(out);
  EXPECT_EQ(cfg.latents_mean, mean);
  EXPECT_EQ(cfg.latents_std, spread);
  for (const auto& name : out.names()) {
    const bool encoder = name.starts_with("encoder.") || name.starts_with("conv1.");
    if (encoder) {
      EXPECT_TRUE(torch::equal(out.get(name), src.get(name))) << name;
    }
  }
  EXPECT_FALSE(torch::equal(out.get("decoder.head.2.weight"), src.get("decoder.head.2.weight")));
  // The same latents from the source file and the fine-tuned one.
  auto a = vae::WanVAE::load(src_path), b = vae::WanVAE::load(fine / kVaeFile);
  torch::manual_seed(5);
  const auto clip = torch::rand({1, 3, 9, 32, 32}) * 2 - 1;
  EXPECT_TRUE(torch::equal(a.encode(clip), b.encode(clip)));

  // Another base width: refused by name, nothing written.
  test::TempDir refused;
  auto r = toy_vae(refused.path() / "run");
  r.init_from = src_path, r.dim = 8;
  try {
    train_vae(r);
    ADD_FAILURE() << "a VAE of another width was started from";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(src_path.string()), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("dim"), std::string::npos) << e.what();
  }
  r.dim = 4, r.inflate_from = src_path;
  EXPECT_THROW(train_vae(r), Error);
  EXPECT_FALSE(std::filesystem::exists(refused.path() / "run"));
}

// A decoder taken from another file of the same architecture: the encoder and
// statistics stay init_from's, the decoder starts as the other file's; refused
// outside a decoder-only run that starts from a file.
TEST(Training, DecoderOnlyRunWithAnotherFilesDecoder) {
  test::TempDir a_dir, b_dir, run;
  auto a = toy_vae(a_dir.path());
  train_vae(a);
  auto b = toy_vae(b_dir.path());
  b.seed = 7;
  train_vae(b);
  const auto fa = io::Checkpoint::open(a_dir / kVaeFile),
             fb = io::Checkpoint::open(b_dir / kVaeFile);
  ASSERT_FALSE(torch::equal(fa.get("decoder.head.2.weight"), fb.get("decoder.head.2.weight")));

  auto f = toy_vae(run.path());
  f.init_from = a_dir / kVaeFile, f.decoder_from = b_dir / kVaeFile, f.decoder_only = true;
  f.steps = 0;  // the spliced file as it starts
  train_vae(f);
  const auto out = io::Checkpoint::open(run / kVaeFile);
  int decoder = 0;
  for (const auto& name : out.names()) {
    const bool dec = name.starts_with("decoder.") || name.starts_with("conv2.");
    decoder += dec;
    EXPECT_TRUE(torch::equal(out.get(name), (dec ? fb : fa).get(name))) << name;
  }
  EXPECT_GT(decoder, 10);
  const auto ca = vae::WanVAEConfig::from_checkpoint(fa),
             co = vae::WanVAEConfig::from_checkpoint(out);
  EXPECT_EQ(co.latents_mean, ca.latents_mean);
  EXPECT_EQ(co.latents_std, ca.latents_std);

  test::TempDir refused;
  auto r = toy_vae(refused.path() / "run");
  r.init_from = a_dir / kVaeFile, r.decoder_from = b_dir / kVaeFile;  // not decoder-only
  EXPECT_THROW(train_vae(r), Error);
  r.decoder_only = true, r.init_from.clear();
  EXPECT_THROW(train_vae(r), Error);
  EXPECT_FALSE(std::filesystem::exists(refused.path() / "run"));
}

void write_text(const std::filesystem::path& p, const std::string& text) {
  std::ofstream(p, std::ios::binary) << text;
}

// The files in `dir` whose names hold ".tmp-": temporaries left behind.
std::vector<std::string> temporaries(const std::filesystem::path& dir) {
  std::vector<std::string> out;
  for (const auto& e : std::filesystem::recursive_directory_iterator(dir))
    if (e.path().filename().string().find(".tmp-") != std::string::npos)
      out.push_back(e.path().string());
  return out;
}

// f() must throw an Error whose message holds every one of `parts`.
template <class F>
void expect_error(F&& f, const std::vector<std::string>& parts) {
  try {
    f();
    ADD_FAILURE() << "accepted, though it should be refused with: " << parts.front();
  } catch (const Error& e) {
    for (const auto& part : parts)
      EXPECT_NE(std::string(e.what()).find(part), std::string::npos) << e.what();
  }
}

// A stage never replaces (or appends to) outputs another run wrote: a fresh
// start where they exist, or a resume over a file copied in, is refused by
// name and changes nothing, unless `overwrite`; its own files it resumes over.
TEST(Training, OutputsOfAnotherRunAreNotReplaced) {
  test::TempDir dir;
  // The tokenizer: the same options give the same bytes (no temporary name
  // of the training inside), in any folder; another file there is kept.
  ASSERT_TRUE(train_tokenizer(dir / "a"));
  EXPECT_FALSE(train_tokenizer(dir / "a"));  // already this tokenizer
  ASSERT_TRUE(train_tokenizer(dir / "b"));
  const auto tokenizer = test::read_bytes(dir / "a" / kTokenizerFile);
  EXPECT_EQ(tokenizer, test::read_bytes(dir / "b" / kTokenizerFile));
  EXPECT_EQ(tokenizer.find(".spm-train"), std::string::npos);
  ASSERT_TRUE(train_tokenizer(dir / "c", 80));
  const auto other = test::read_bytes(dir / "c" / kTokenizerFile);
  ASSERT_NE(other, tokenizer);
  expect_error([&] { train_tokenizer(dir / "c"); },
               {(dir / "c" / kTokenizerFile).string(), "--overwrite"});
  EXPECT_EQ(test::read_bytes(dir / "c" / kTokenizerFile), other);
  EXPECT_TRUE(train_tokenizer(dir / "c", 96, true));
  EXPECT_EQ(test::read_bytes(dir / "c" / kTokenizerFile), tokenizer);
  EXPECT_TRUE(temporaries(dir.path()).empty());

  // The VAE: a folder with a user's VAE, report and log, no state.
  const auto user = dir / "user";
  std::filesystem::create_directories(user / "vae-state");
  auto v = toy_vae(dir / "a");
  train_vae(v);  // a VAE of another run, to stand for the user's
  std::filesystem::copy_file(dir / "a" / kVaeFile, user / kVaeFile);
  write_text(user / "vae-report.json", "{\"mine\": 1}\n");
  write_text(user / "vae-state" / "loss.csv", "1,2,3\n");
  auto u = toy_vae(user);
  expect_error([&] { train_vae(u); }, {(user / kVaeFile).string(), "--overwrite"});
  EXPECT_EQ(test::read_bytes(user / kVaeFile), test::read_bytes(dir / "a" / kVaeFile));
  EXPECT_EQ(test::read_bytes(user / "vae-report.json"), "{\"mine\": 1}\n");
  EXPECT_EQ(test::read_bytes(user / "vae-state" / "loss.csv"), "1,2,3\n");
  EXPECT_FALSE(std::filesystem::exists(user / "vae-state" / "state.json"));
  u.overwrite = true;  // told to: a new run, its log begun anew
  train_vae(u);
  EXPECT_NE(test::read_bytes(user / kVaeFile), test::read_bytes(dir / "a" / kVaeFile));
  EXPECT_EQ(test::read_bytes(user / "vae-state" / "loss.csv").rfind("step,loss,", 0), 0u);
  EXPECT_EQ(lines(user / "vae-state" / "loss.csv"), 2);
  // Resumed, its own files go on; a file copied over its output is refused.
  u.overwrite = false, u.steps = 2;
  train_vae(u);
  EXPECT_EQ(lines(user / "vae-state" / "loss.csv"), 3);
  std::filesystem::copy_file(dir / "a" / kVaeFile, user / kVaeFile,
                             std::filesystem::copy_options::overwrite_existing);
  u.steps = 3;
  expect_error([&] { train_vae(u); }, {(user / kVaeFile).string(), "not written by this run"});
  EXPECT_EQ(test::read_bytes(user / kVaeFile), test::read_bytes(dir / "a" / kVaeFile));
  EXPECT_EQ(lines(user / "vae-state" / "loss.csv"), 3);

  // The DiT: a folder holding a model (as assets/ does) is refused before
  // anything is encoded; told to, a run replaces it.
  const auto model = dir / "model";
  std::filesystem::create_directories(model);
  std::filesystem::copy_file(dir / "a" / kTokenizerFile, model / kTokenizerFile);
  std::filesystem::copy_file(dir / "a" / kVaeFile, model / kVaeFile);
  write_text(model / kDitFile, "shipped");
  write_text(model / kTextEncoderFile, "shipped");
  auto d = toy_dit(model);
  expect_refused(d, (model / kDitFile).string() + ": exists, and this stage starts afresh");
  EXPECT_FALSE(std::filesystem::exists(model / "dit-state"));
  EXPECT_EQ(test::read_bytes(model / kDitFile), "shipped");
  d.overwrite = true;
  train_dit(d);
  EXPECT_EQ(diffusion::WanModel::load(model / kDitFile).config().dim, 64);
  EXPECT_TRUE(temporaries(dir.path()).empty());
}

// A stage's options on their own, refused in the command line's words before
// anything is written (`kinora train` exits with status 2 on these).
TEST(Training, BadOptionsAreRefusedByTheirNames) {
  test::TempDir dir;
  const auto run = dir / "run";
  auto vae_refused = [&](auto change, const std::string& why) {
    auto v = toy_vae(run);
    change(v);
    EXPECT_NE(options_problem(v).find(why), std::string::npos) << options_problem(v);
    expect_error([&] { train_vae(v); }, {why});
  };
  vae_refused([](VaeOptions& v) { v.save_every = 0; }, "--save-every 0: expected");
  vae_refused([](VaeOptions& v) { v.log_every = 0; }, "--log-every 0: expected");
  vae_refused([](VaeOptions& v) { v.lr = -1; }, "--lr -1: expected");
  vae_refused([](VaeOptions& v) { v.batch = 0; }, "--batch 0: expected");
  vae_refused([](VaeOptions& v) { v.train_frames = 4; }, "--frames 4: expected 1 + 4k");
  vae_refused([](VaeOptions& v) { v.crop = 7; }, "--crop 7: expected 0 (whole frames) or");
  vae_refused([](VaeOptions& v) { v.crop = 12, v.spatial_compression = 8; }, "--crop 12");
  EXPECT_EQ(options_problem(toy_vae(run)), "");
  auto d = toy_dit(run);
  EXPECT_EQ(options_problem(d), "");
  d.batch = 0;
  EXPECT_NE(options_problem(d).find("--batch 0"), std::string::npos);
  expect_refused(d, "--batch 0: expected a whole number from 1 to 4096");
  d.batch = 2, d.sample_every = -1;
  expect_refused(d, "--sample-every -1");
  d.sample_every = 0, d.dim = 60, d.num_heads = 8;
  expect_refused(d, "--dim 60: expected a multiple of --heads (8)");
  LoraOptions l;
  l.run_dir = run, l.model_dir = run, l.batch = 0;
  EXPECT_NE(options_problem(l).find("--batch 0"), std::string::npos);
  l.batch = 2, l.save_every = 0;
  EXPECT_NE(options_problem(l).find("--save-every 0"), std::string::npos);
  expect_error([&] { train_lora(l); }, {"--save-every 0"});
  EXPECT_FALSE(std::filesystem::exists(run));
}

// Messages name what a user types: the command that makes a missing file,
// the option that asked for something (not the library's field names).
TEST(Training, MessagesNameCommandsAndOptions) {
  test::TempDir dir;
  auto d = toy_dit(dir.path());
  expect_refused(d, "`kinora train tokenizer` writes into the same --run folder");
  train_tokenizer(dir.path());
  expect_refused(d, "`kinora train vae` writes");
  train_vae(toy_vae(dir.path()));
  auto n = d;
  n.init_from = dir / "nowhere";
  expect_refused(n, "--init-from wants a trained model's folder");
  if (!torch::cuda::is_available()) {
    n = d;
    n.device = torch::Device(torch::kCUDA);
    expect_refused(n, "--device cuda: this LibTorch sees no CUDA device");
  }
  EXPECT_FALSE(std::filesystem::exists(dir / "dit-state"));
}

// A run resumed with another architecture is told what it was started with,
// before any weight is read.
TEST(Training, ResumeWithAnotherArchitectureNamesTheOption) {
  test::TempDir dir;
  train_tokenizer(dir.path());
  train_vae(toy_vae(dir.path()));
  auto d = toy_dit(dir.path());
  train_dit(d);
  d.steps = 2, d.dim = 128;
  expect_refused(d, "this run was started with --dim 64 (now 128)");
  d.dim = 64, d.num_layers = 2;
  expect_refused(d, "this run was started with --layers 1");
  auto v = toy_vae(dir.path());
  v.steps = 2, v.dim = 8;
  expect_error([&] { train_vae(v); }, {"this run was started with --dim 4 (now 8)"});
}

// Writes that fail (a full disk, here a file-size limit) end in an Error that
// names the file, not in an abort; the checkpoint stays wholly the step
// before, no temporary is left, and the stage resumes from it.
TEST(Training, AFailedCheckpointLeavesThePreviousOneWhole) {
  test::TempDir dir;
  train_tokenizer(dir.path());
  train_vae(toy_vae(dir.path()));
  auto d = toy_dit(dir.path());
  d.steps = 1, d.save_every = 1, d.log_every = 1;
  train_dit(d);
  const auto state = dir / "dit-state";
  const auto before = checkpoint_of(state);
  ASSERT_FALSE(before.empty());
  std::map<std::string, std::string> bytes;
  for (const auto& e : std::filesystem::directory_iterator(before))
    bytes[e.path().filename().string()] = test::read_bytes(e.path());
  ASSERT_EQ(bytes.size(), 6u);  // live and EMA DiT and umT5, the optimizer, run.json
  const auto state_json = test::read_bytes(state / "state.json");
  // Large enough for a weights file, too small for the optimizer's state.
  const auto limit = std::filesystem::file_size(before / "dit.safetensors") + 4096;
  ASSERT_GT(std::filesystem::file_size(before / "optimizer.pt"), limit);
  d.steps = 3;
  {
    const auto old_handler = std::signal(SIGXFSZ, SIG_IGN);
    rlimit old{};
    ::getrlimit(RLIMIT_FSIZE, &old);
    rlimit lower = old;
    lower.rlim_cur = limit;
    ::setrlimit(RLIMIT_FSIZE, &lower);
    std::string what;
    try {
      train_dit(d);
    } catch (const Error& e) {
      what = e.what();
    }
    ::setrlimit(RLIMIT_FSIZE, &old);
    std::signal(SIGXFSZ, old_handler);
    EXPECT_NE(what.find("optimizer.pt"), std::string::npos) << what;
  }
  EXPECT_EQ(test::read_bytes(state / "state.json"), state_json);
  EXPECT_EQ(checkpoint_of(state), before);
  for (const auto& [name, content] : bytes)
    EXPECT_TRUE(test::read_bytes(before / name) == content) << name;
  EXPECT_TRUE(temporaries(dir.path()).empty());
  std::vector<std::string> folders;
  for (const auto& e : std::filesystem::directory_iterator(state))
    if (e.is_directory()) folders.push_back(e.path().filename().string());
  EXPECT_EQ(folders, std::vector<std::string>{before.filename().string()});
  // Resumed from step 1: the log cut back to it, and on to 3.
  std::vector<std::string> said;
  d.on_message = [&](const std::string& m) { said.push_back(m); };
  train_dit(d);
  EXPECT_NE(std::find(said.begin(), said.end(), "dit: resuming at step 1"), said.end());
  EXPECT_EQ(lines(state / "loss.csv"), 4);  // header + steps 1, 2, 3
  EXPECT_EQ(checkpoint_of(state).filename(), "checkpoint-3");
  EXPECT_FALSE(std::filesystem::exists(before));
}

// A stage resumed after a kill between a log line and its checkpoint logs that
// step once; the DiT's latent cache is encoded anew when the run's VAE
// changed (its encoder or statistics), and kept when only its decoder did.
TEST(Training, LogsAreCutToTheCheckpointAndTheCacheFollowsTheVae) {
  test::TempDir dir;
  train_tokenizer(dir.path());
  auto v = toy_vae(dir.path());
  train_vae(v);
  {
    std::ofstream log(dir / "vae-state" / "loss.csv", std::ios::app);
    log << "2,0.5,0.4,0.1,3,0.0002,1.5\n";  // logged, then killed before the checkpoint
  }
  v.steps = 2;
  train_vae(v);
  {
    std::ifstream log(dir / "vae-state" / "loss.csv");
    std::string line;
    int twos = 0, rows = 0;
    while (std::getline(log, line)) rows++, twos += line.rfind("2,", 0) == 0;
    EXPECT_EQ(rows, 3);
    EXPECT_EQ(twos, 1);
  }
  auto d = toy_dit(dir.path());
  std::vector<std::string> said;
  d.on_message = [&](const std::string& m) { said.push_back(m); };
  train_dit(d);
  const auto cache = dir / "dit-state" / "latents.safetensors";
  const auto first = io::Checkpoint::open(cache).metadata().at("vae");
  // The VAE file replaced by one of another seed: its latents are others.
  test::TempDir other;
  auto o = toy_vae(other.path());
  o.seed = 7;
  train_vae(o);
  std::filesystem::copy_file(other / kVaeFile, dir / kVaeFile,
                             std::filesystem::copy_options::overwrite_existing);
  said.clear();
  d.steps = 2;
  train_dit(d);
  bool anew = false;
  for (const auto& m : said) anew |= m.find("encoded by another VAE") != std::string::npos;
  EXPECT_TRUE(anew);
  EXPECT_NE(io::Checkpoint::open(cache).metadata().at("vae"), first);
  // Its decoder alone changed: the same latents, the cache kept.
  {
    const auto ck = io::Checkpoint::open(dir / kVaeFile);
    std::vector<std::pair<std::string, torch::Tensor>> tensors;
    for (const auto& n : ck.names())
      tensors.emplace_back(n, n.starts_with("decoder.") ? ck.get(n) * 2 : ck.get(n));
    io::save_safetensors(dir / kVaeFile, tensors, ck.metadata());
  }
  said.clear();
  d.steps = 3;
  train_dit(d);
  for (const auto& m : said) EXPECT_EQ(m.find("encoding anew"), std::string::npos) << m;
}

// The LoRA stage checkpoints and resumes as the others do: stopped after a
// step and resumed, it logs each step once and ends where a run straight
// through ends; a file it did not write is refused.
TEST(Training, LoraStageResumes) {
  test::TempDir dir;
  train_tokenizer(dir.path());
  train_vae(toy_vae(dir.path()));
  train_dit(toy_dit(dir.path()));
  LoraOptions l;
  l.model_dir = dir.path(), l.clip = {32, 32, 9};
  l.dataset = 4, l.batch = 2, l.steps = 3, l.warmup = 1, l.rank = 2, l.alpha = 2;
  l.save_every = 100, l.log_every = 1, l.precision = layers::Precision::F32;
  l.run_dir = dir / "straight";
  train_lora(l);
  l.run_dir = dir / "stopped";
  std::atomic<bool> stop{false};
  l.cancel = &stop;
  l.on_message = [&](const std::string& m) {
    if (m.find("lora step 2/") != std::string::npos) stop = true;
  };
  train_lora(l);
  EXPECT_FALSE(std::filesystem::exists(l.run_dir / kBigLoraFile));
  EXPECT_EQ(lines(l.run_dir / "lora-loss.csv"), 3);
  {
    std::ofstream log(l.run_dir / "lora-loss.csv", std::ios::app);
    log << "3,0.5,0.001,1\n";  // a line past the checkpoint, as a kill leaves it
  }
  l.cancel = nullptr, l.on_message = nullptr;
  train_lora(l);
  EXPECT_EQ(lines(l.run_dir / "lora-loss.csv"), 4);  // header + steps 1, 2, 3
  const auto a = io::Checkpoint::open(dir / "straight" / kBigLoraFile);
  const auto b = io::Checkpoint::open(l.run_dir / kBigLoraFile);
  ASSERT_EQ(a.names(), b.names());
  for (const auto& n : a.names())
    EXPECT_TRUE(
        torch::allclose(a.get(n).to(torch::kFloat32), b.get(n).to(torch::kFloat32), 1e-3, 1e-5))
        << n;
  // A fresh run where a LoRA exists (as in assets/loras) is refused by name.
  l.run_dir = dir / "straight";
  std::filesystem::remove_all(l.run_dir / "lora-state");
  expect_error([&] { train_lora(l); }, {(l.run_dir / kBigLoraFile).string(), "--overwrite"});
}

}  // namespace

// Latents fitted through the frozen decoder decode closer to their clips than
// the encoder's, leave the VAE's weights alone, and refine the DiT stage's
// cache, which records it: a cache made otherwise is encoded anew.
TEST(Training, FittedLatentsAndARefinedDitCache) {
  test::TempDir dir;
  train_tokenizer(dir.path());
  auto v = toy_vae(dir.path());
  train_vae(v);
  auto vae = vae::WanVAE::load(dir / kVaeFile);
  const auto clips = clip_batch(11, 2, {32, 32, 9}).first;
  const auto before = vae.module().named_parameters()["decoder.head.2.weight"].clone();

  const auto none = fit_latents(vae, clips, 0, 0.05);
  EXPECT_TRUE(torch::allclose(none.z, vae.posterior(clips).first));
  EXPECT_DOUBLE_EQ(none.l1_fitted, none.l1_encoded);
  std::vector<double> seen;
  const auto fit =
      fit_latents(vae, clips, 8, 0.05, [&](int64_t, double l1) { seen.push_back(l1); });
  ASSERT_EQ(seen.size(), 8u);
  EXPECT_GT(fit.l1_encoded, 0);
  EXPECT_LT(fit.l1_fitted, fit.l1_encoded - 1e-3);
  EXPECT_LT(seen.back(), seen.front());
  EXPECT_FALSE(fit.z.requires_grad());
  EXPECT_EQ(fit.z.sizes(), none.z.sizes());
  EXPECT_TRUE(torch::equal(vae.module().named_parameters()["decoder.head.2.weight"], before));
  for (const auto& p : vae.module().parameters()) EXPECT_FALSE(p.requires_grad());
  EXPECT_THROW(fit_latents(vae, clips, -1, 0.05), Error);
  EXPECT_THROW(fit_latents(vae, clips, 1, 0), Error);
  // A clip lands where it lands whatever is fitted beside it: the batch (the
  // DiT stage's refine_batch) couples no clips. Compared at the same batch
  // shape (beside another clip), so that the convolutions take the same path
  // on every CPU and the only difference is the neighbour: a coupling (a
  // shared normalisation, a loss over the batch) moves the clip by the order
  // of what the fit moves it; without one it stays put to rounding.
  // (Against a batch of one it is not bit for bit: kernels round differently
  // by batch size, and the L1's signs with Adam's normalised steps carry that
  // into the latents by a CPU-dependent part of the movement.)
  const auto others = clip_batch(12, 2, {32, 32, 9}).first;
  for (int64_t i = 0; i < 2; ++i) {
    auto swapped = clips.clone();
    swapped[1 - i] = others[1 - i];
    const auto beside_other = fit_latents(vae, swapped, 8, 0.05).z.slice(0, i, i + 1);
    const auto beside = fit.z.slice(0, i, i + 1);
    const double apart = (beside_other - beside).abs().mean().item<double>();
    const double moved = (beside - none.z.slice(0, i, i + 1)).abs().mean().item<double>();
    EXPECT_LT(apart, 1e-4 * moved) << "clip " << i << ": " << apart << " of " << moved;
  }

  auto d = toy_dit(dir.path());
  train_dit(d);
  const auto cache = dir / "dit-state" / "latents.safetensors";
  const auto plain = io::Checkpoint::open(cache).get("latents").clone();
  EXPECT_EQ(io::Checkpoint::open(cache).metadata().at("refine"), "0");

  std::filesystem::remove_all(dir / "dit-state");
  d.refine_steps = 3, d.refine_lr = 0.05, d.refine_batch = 1;  // each clip alone
  d.overwrite = true;  // a new run over the files of the one before
  std::vector<std::string> said;
  d.on_message = [&](const std::string& m) { said.push_back(m); };
  train_dit(d);
  {
    const auto ck = io::Checkpoint::open(cache);
    EXPECT_EQ(ck.metadata().at("refine"), "3 steps at 0.05");
    const auto refined = ck.get("latents");
    ASSERT_EQ(refined.sizes(), plain.sizes());
    EXPECT_FALSE(torch::allclose(refined, plain, 1e-4, 1e-4));
  }
  bool reported = false;
  for (const auto& m : said)
    reported |= m.find("latents refined (3 steps at 0.05) in ") != std::string::npos;
  EXPECT_TRUE(reported);
  // The same run resumed without refinement: its cache is of other latents.
  said.clear();
  d.refine_steps = 0, d.steps = 2;
  train_dit(d);
  bool anew = false;
  for (const auto& m : said) anew |= m.find("encoding anew") != std::string::npos;
  EXPECT_TRUE(anew);
  EXPECT_TRUE(torch::allclose(io::Checkpoint::open(cache).get("latents"), plain, 1e-5, 1e-5));
}

// A fresh stage refuses to start beside files and folders named like its
// checkpoints or sample sheets that it did not write, and with --overwrite
// leaves them alone; its final checkpoint, at a step the loop has just saved,
// is written once.
TEST(Training, FoldersNamedLikeCheckpointsAreTheUsersOwn) {
  test::TempDir dir;
  const auto state = dir / "vae-state";
  std::filesystem::create_directories(state / "checkpoint-2");
  write_text(state / "checkpoint-2" / "notes.txt", "mine");
  write_text(state / "checkpoint-1", "a plain file");
  write_text(state / "samples-2.ppm", "my picture");
  auto v = toy_vae(dir.path());
  v.steps = 2, v.save_every = 1;
  expect_error([&] { train_vae(v); },
               {"checkpoint-1, checkpoint-2, samples-2.ppm", "give --overwrite"});
  EXPECT_FALSE(std::filesystem::exists(state / "run.json"));
  v.overwrite = true;
  train_vae(v);
  EXPECT_EQ(test::read_bytes(state / "checkpoint-2" / "notes.txt"), "mine");
  EXPECT_EQ(test::read_bytes(state / "checkpoint-1"), "a plain file");
  EXPECT_EQ(test::read_bytes(state / "samples-2.ppm"), "my picture");
  EXPECT_TRUE(std::filesystem::exists(state / "samples-2-2.ppm"));
  EXPECT_EQ(checkpoint_of(state).filename(), "checkpoint-2-2");
  std::vector<std::string> folders;
  for (const auto& e : std::filesystem::directory_iterator(state))
    if (e.is_directory()) folders.push_back(e.path().filename().string());
  std::sort(folders.begin(), folders.end());
  EXPECT_EQ(folders, (std::vector<std::string>{"checkpoint-2", "checkpoint-2-2"}));
  // Resumed and on: the user's folder is still left alone.
  v.overwrite = false, v.steps = 3;
  train_vae(v);
  EXPECT_EQ(checkpoint_of(state).filename(), "checkpoint-3");
  EXPECT_EQ(test::read_bytes(state / "checkpoint-2" / "notes.txt"), "mine");
}

// A stage killed before its first checkpoint (its logs and run.json, no
// state.json) starts afresh over its own files on the next run, and a dead
// process's checkpoint in the making is removed on every start.
TEST(Training, AStageKilledBeforeItsFirstCheckpointStartsAfresh) {
  test::TempDir dir;
  const auto state = dir / "vae-state";
  auto v = toy_vae(dir.path());
  v.steps = 2, v.save_every = 1;
  train_vae(v);
  // What a kill -9 before the first checkpoint leaves.
  std::filesystem::remove(state / "state.json");
  std::filesystem::remove(dir / kVaeFile);
  std::filesystem::remove(dir / "vae-report.json");
  for (const auto& e : std::filesystem::directory_iterator(state))
    if (e.is_directory()) std::filesystem::remove_all(e.path());
  // A checkpoint in the making of a process that no longer runs.
  auto tmp = temp_beside(state / "checkpoint-5").filename().string();
  tmp = tmp.substr(0, tmp.rfind('-') + 1) + "2147480000";
  std::filesystem::create_directories(state / tmp);
  std::vector<std::string> said;
  v.on_message = [&](const std::string& m) { said.push_back(m); };
  train_vae(v);
  EXPECT_NE(std::find(said.begin(), said.end(),
                      "vae: starting afresh over the logs of a run stopped before its first "
                      "checkpoint"),
            said.end());
  EXPECT_EQ(lines(state / "loss.csv"), 3);
  EXPECT_FALSE(std::filesystem::exists(state / tmp));
  EXPECT_EQ(checkpoint_of(state).filename(), "checkpoint-2");
  // A log the run did not write is still refused.
  test::TempDir other;
  std::filesystem::create_directories(other / "vae-state");
  write_text(other / "vae-state" / "loss.csv", "step\n");
  auto w = toy_vae(other.path());
  expect_error([&] { train_vae(w); }, {"loss.csv: exists, and this stage starts afresh"});
}

// Size options have upper bounds (a typo is refused, not run out of memory),
// and the messages state the range that is really allowed.
TEST(Training, SizeOptionsHaveBoundsAndTheirRangesAreSaid) {
  auto v = toy_vae("/nonexistent");
  v.batch = 99999999999;
  EXPECT_EQ(options_problem(v),
            "--batch 99999999999: expected a whole number from 1 to 4096 (clips per step, all "
            "held in memory at once)");
  v.batch = 1, v.steps = 1'000'000'000'000;
  EXPECT_NE(options_problem(v).find("--steps 1000000000000: expected a whole number from 0 to"),
            std::string::npos);
  auto d = toy_dit("/nonexistent");
  d.dataset = 1 << 30;
  EXPECT_NE(options_problem(d).find("--dataset 1073741824: expected a whole number from 1 to"),
            std::string::npos);
  d.dataset = 2, d.time_patch = 0;
  EXPECT_EQ(options_problem(d), "--time-patch 0: expected a whole number of 1 or more");
}

// A cancel during the DiT's latent encoding stops it there, caching nothing;
// --init-from given to a resumed run is said to be ignored.
TEST(Training, CancelWhileEncodingAndInitFromOnAResume) {
  test::TempDir dir;
  train_tokenizer(dir.path());
  auto v = toy_vae(dir.path());
  train_vae(v);
  v.steps = 2, v.init_from = dir / kVaeFile;
  std::vector<std::string> said;
  v.on_message = [&](const std::string& m) { said.push_back(m); };
  train_vae(v);
  EXPECT_NE(
      std::find(said.begin(), said.end(),
                "vae: --init-from is ignored: this run resumes from its checkpoint of step 1"),
      said.end());
  std::atomic<bool> stop{true};
  auto d = toy_dit(dir.path());
  d.cancel = &stop;
  expect_refused(d, "dit: stopped while encoding the clips (0/2)");
  EXPECT_FALSE(std::filesystem::exists(dir / "dit-state" / "latents.safetensors"));
}

// The tokenizer stage takes a file of the same pieces whose trainer options
// record another temporary sentence file (the shipped one) as its own.
TEST(Training, TheSameTokenizerWithAnotherTrainerPathIsKept) {
  test::TempDir dir;
  train_tokenizer(dir.path());
  // A trainer_spec (field 2) naming the sentences' file, as the shipped
  // model's does: protobuf merges it into the one the file has.
  const std::string input = "runs/img/.spm-train-6592.txt";
  std::string spec = "\x0a";
  spec.push_back(static_cast<char>(input.size()));
  spec.append(input);
  auto bytes = test::read_bytes(dir / kTokenizerFile);
  bytes.append("\x12");
  bytes.push_back(static_cast<char>(spec.size()));
  bytes.append(spec);
  write_text(dir / kTokenizerFile, bytes);
  EXPECT_FALSE(train_tokenizer(dir.path()));
  EXPECT_TRUE(test::read_bytes(dir / kTokenizerFile) == bytes);
}

// The shipped tokenizer (whose trainer options name the temporary files of
// the run that made it) is the one this stage makes: left as it is.
TEST(Training, TheShippedTokenizerIsTheOneTheStageMakes) {
  test::TempDir dir;
  const auto shipped = test::read_bytes(test::fixture("../../assets/kinora-tiny-spm.model"));
  ASSERT_FALSE(shipped.empty());
  write_text(dir / kTokenizerFile, shipped);
  EXPECT_FALSE(train_tokenizer(dir.path()));
  EXPECT_TRUE(test::read_bytes(dir / kTokenizerFile) == shipped);
}

// A latent cache that cannot be read is encoded anew, said so.
TEST(Training, AnUnreadableLatentCacheIsEncodedAnew) {
  test::TempDir dir;
  train_tokenizer(dir.path());
  train_vae(toy_vae(dir.path()));
  auto d = toy_dit(dir.path());
  train_dit(d);
  write_text(dir / "dit-state" / "latents.safetensors", std::string(64, '\xff'));
  std::vector<std::string> said;
  d.on_message = [&](const std::string& m) { said.push_back(m); };
  d.steps = 2;
  train_dit(d);
  bool anew = false;
  for (const auto& m : said) anew |= m.find("only a cache: encoding anew") != std::string::npos;
  EXPECT_TRUE(anew);
  EXPECT_NO_THROW(io::Checkpoint::open(dir / "dit-state" / "latents.safetensors"));
}

// `train lora` and `train probe` without --model take the embedded model's
// folder as `kinora generate` finds it (here $KINORA_ASSETS), from any
// working folder; --help says so, and the section it names is in the doc.
TEST(Training, LoraAndProbeFindTheEmbeddedModelWithoutModel) {
  test::TempDir dir;
  std::filesystem::create_directories(dir / "model");
  for (const char* f : {kDitFile, kVaeFile, kTextEncoderFile, kTokenizerFile})
    write_text(dir / "model" / f, "");  // found, then refused when read
  const std::string kinora = std::string(KINORA_BIN_DIR) + "/kinora";
  const std::string in_dir = "cd '" + dir.path().string() + "' && KINORA_ASSETS='" +
                             (dir / "model").string() + "' " + kinora;
  const auto probe = test::sh(in_dir + " train probe --clips 1");
  EXPECT_NE(probe.code, 0);
  EXPECT_NE(probe.out.find((dir / "model").string()), std::string::npos) << probe.out;
  EXPECT_EQ(probe.out.find("assets/"), std::string::npos) << probe.out;
  const auto lora = test::sh(in_dir + " train lora --run run --steps 1");
  EXPECT_NE(lora.code, 0);
  EXPECT_NE(lora.out.find((dir / "model").string()), std::string::npos) << lora.out;
  EXPECT_EQ(lora.out.find("assets/"), std::string::npos) << lora.out;

  for (const char* command : {"lora", "probe"}) {
    const auto help = test::sh(kinora + " train " + command + " --help");
    EXPECT_NE(help.out.find("default: the embedded model's folder"), std::string::npos) << help.out;
    EXPECT_NE(help.out.find("$KINORA_ASSETS"), std::string::npos) << help.out;
  }
  const auto help = test::sh(kinora + " train --help");
  const std::string section = "L: the project's LoRA";
  EXPECT_NE(help.out.find("docs/training.md, \"" + section), std::string::npos) << help.out;
  EXPECT_NE(test::read_bytes(test::fixture("../../docs/training.md")).find("### " + section),
            std::string::npos);
}

}  // namespace kinora::training
