// SDXL's text side: OpenCLIP bigG in CLIPTextModel (every layout it ships in),
// the web UI's emphasis syntax, and SDXLConditioner against the two encoders
// run by hand on ids built by hand.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <nlohmann/json.hpp>

#include "io/checkpoint.h"
#include "io/safetensors.h"
#include "test_util.h"
#include "text/clip.h"
#include "text/clip_tokenizer.h"
#include "text/prompt_weights.h"
#include "text/sdxl_conditioner.h"

namespace kinora {
namespace {

using test::fixture;
using test::TempDir;
using text::CLIPTextModel;
using text::parse_emphasis;
using text::WeightedText;

double rel_err(const torch::Tensor& a, const torch::Tensor& b) {
  return ((a.to(torch::kFloat64) - b.to(torch::kFloat64)).abs().max() /
          b.to(torch::kFloat64).abs().max())
      .item<double>();
}

// ---------------------------------------------------------------- emphasis

WeightedText piece(const std::string& s, double w) {
  return {s, w, false};
}
WeightedText brk() {
  return {"", 1.0, true};
}

void expect_pieces(const std::string& prompt, const std::vector<WeightedText>& want) {
  const auto got = parse_emphasis(prompt);
  ASSERT_EQ(got.size(), want.size()) << prompt;
  for (std::size_t i = 0; i < got.size(); ++i) {
    EXPECT_EQ(got[i].text, want[i].text) << prompt << " piece " << i;
    EXPECT_DOUBLE_EQ(got[i].weight, want[i].weight) << prompt << " piece " << i;
    EXPECT_EQ(got[i].is_break, want[i].is_break) << prompt << " piece " << i;
  }
}

TEST(Emphasis, PlainTextIsOnePieceOfWeightOne) {
  expect_pieces("a red cat", {piece("a red cat", 1)});
  expect_pieces("", {piece("", 1)});
}

TEST(Emphasis, RoundBracketsMultiplyBy1_1) {
  expect_pieces("a (red) cat", {piece("a ", 1), piece("red", 1.1), piece(" cat", 1)});
  expect_pieces("((red))", {piece("red", 1.1 * 1.1)});
  EXPECT_DOUBLE_EQ(parse_emphasis("((red))")[0].weight, 1.21);
  expect_pieces("(((red)))", {piece("red", 1.331)});
}

TEST(Emphasis, SquareBracketsDivideBy1_1) {
  expect_pieces("a [red] cat", {piece("a ", 1), piece("red", 1 / 1.1), piece(" cat", 1)});
  expect_pieces("[[red]]", {piece("red", 1 / 1.21)});
}

TEST(Emphasis, ExplicitWeightsAndNesting) {
  expect_pieces("(red:1.5)", {piece("red", 1.5)});
  expect_pieces("(red: 0.5 )", {piece("red", 0.5)});
  expect_pieces("(red:.5)", {piece("red", 0.5)});
  expect_pieces("(red:+2)", {piece("red", 2)});
  // The inner weight, then the outer bracket's 1.1.
  expect_pieces("((red:1.5))", {piece("red", 1.65)});
  expect_pieces("(a (b:2) c)", {piece("a ", 1.1), piece("b", 2.2), piece(" c", 1.1)});
  expect_pieces("[a (b:1.5)]", {piece("a ", 1 / 1.1), piece("b", 1.5 / 1.1)});
  expect_pieces("(a:1.2) (b:0.8)", {piece("a", 1.2), piece(" ", 1), piece("b", 0.8)});
}

TEST(Emphasis, EscapesAreText) {
  expect_pieces("\\(red\\) \\[cat\\]", {piece("(red) [cat]", 1)});
  expect_pieces("a \\\\ b", {piece("a \\ b", 1)});
  // A backslash before anything else is dropped.
  expect_pieces("a\\b", {piece("ab", 1)});
  expect_pieces("(\\(red\\))", {piece("(red)", 1.1)});
}

TEST(Emphasis, UnbalancedBrackets) {
  // Opened and never closed: to the end.
  expect_pieces("a (red cat", {piece("a ", 1), piece("red cat", 1.1)});
  expect_pieces("a [red (cat", {piece("a ", 1), piece("red ", 1 / 1.1), piece("cat", 1.1 / 1.1)});
  // Closed and never opened: text.
  expect_pieces("a) b]", {piece("a) b]", 1)});
  expect_pieces("a:1.5) b", {piece("a:1.5) b", 1)});
  expect_pieces("time: 12:30", {piece("time: 12:30", 1)});
}

TEST(Emphasis, EqualNeighboursMerge) {
  expect_pieces("(a)(b)", {piece("ab", 1.1)});
  expect_pieces("(a:1.5)(b:1.5) c", {piece("ab", 1.5), piece(" c", 1)});
  expect_pieces("()a", {piece("a", 1)});
}

TEST(Emphasis, Break) {
  expect_pieces("a BREAK b", {piece("a", 1), brk(), piece("b", 1)});
  expect_pieces("a  BREAK\nb", {piece("a", 1), brk(), piece("b", 1)});
  expect_pieces("BREAK b", {brk(), piece("b", 1)});
  expect_pieces("a BREAK", {piece("a", 1), brk()});
  expect_pieces("a BREAK BREAK b", {piece("a", 1), brk(), brk(), piece("b", 1)});
  expect_pieces("(a) BREAK (b)", {piece("a", 1.1), brk(), piece("b", 1.1)});
  // A word only, upper case only.
  expect_pieces("BREAKING break aBREAK BREAK_", {piece("BREAKING break aBREAK BREAK_", 1)});
  expect_pieces("a,BREAK,b", {piece("a,", 1), brk(), piece(",b", 1)});
}

TEST(Emphasis, AWeightThatIsNotANumberIsAnError) {
  try {
    parse_emphasis("(red:1.2.3)");
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("1.2.3"), std::string::npos) << e.what();
  }
  EXPECT_THROW(parse_emphasis("(red:.)"), Error);
}

// ---------------------------------------------------------------- bigG

void save(const std::filesystem::path& path, const std::map<std::string, torch::Tensor>& tensors,
          const std::map<std::string, std::string>& metadata = {}) {
  std::vector<std::pair<std::string, torch::Tensor>> t;
  for (const auto& [k, v] : tensors) t.emplace_back(k, v.contiguous());
  io::save_safetensors(path, t, metadata);
}

std::map<std::string, torch::Tensor> tensors_of(const std::filesystem::path& path,
                                                const std::string& prefix = "") {
  const auto ck = io::Checkpoint::open(path);
  std::map<std::string, torch::Tensor> out;
  for (const auto& k : ck.names()) out[prefix + k] = ck.get(k).clone();
  return out;
}

struct GCase {
  torch::Tensor ids, penultimate, pooled;
};
GCase clip_g_case() {
  const auto ck = io::Checkpoint::open(fixture("clip_g_text.case.safetensors"));
  return {ck.get("input.ids").clone(), ck.get("output.penultimate").clone(),
          ck.get("output.pooled").clone()};
}

void expect_matches_case(CLIPTextModel& m) {
  const auto k = clip_g_case();
  const auto out = m.forward(k.ids);
  ASSERT_TRUE(out.pooled_projected.defined());
  EXPECT_LT(rel_err(out.penultimate, k.penultimate), 1e-4);
  EXPECT_LT(rel_err(out.pooled_projected, k.pooled), 1e-4);
}

TEST(OpenCLIP, ReadsTheFixtureWithItsConfig) {
  auto m = CLIPTextModel::load(fixture("clip_g_tiny.safetensors"));
  const auto& c = m.config();
  EXPECT_EQ(c.hidden_size, 32);
  EXPECT_EQ(c.num_attention_heads, 4);
  EXPECT_EQ(c.num_hidden_layers, 3);
  EXPECT_EQ(c.intermediate_size, 128);
  EXPECT_EQ(c.projection_dim, 24);
  EXPECT_FALSE(c.quick_gelu);
  EXPECT_TRUE(c.pool_at_argmax);
  EXPECT_EQ(c.bos_token_id, 998);
  EXPECT_EQ(c.eos_token_id, 999);
  expect_matches_case(m);
}

TEST(OpenCLIP, ReadsOpenClipsNestedTextConfig) {
  TempDir dir;
  nlohmann::json cfg = {{"embed_dim", 24},
                        {"quick_gelu", false},
                        {"text_cfg", {{"width", 32}, {"heads", 4}, {"layers", 3}}}};
  save(dir / "g.safetensors", tensors_of(fixture("clip_g_tiny.safetensors")),
       {{"config", cfg.dump()}});
  auto m = CLIPTextModel::load(dir / "g.safetensors");
  EXPECT_EQ(m.config().num_attention_heads, 4);
  expect_matches_case(m);
}

TEST(OpenCLIP, AConfigForAnotherWidthIsAnError) {
  TempDir dir;
  save(dir / "g.safetensors", tensors_of(fixture("clip_g_tiny.safetensors")),
       {{"config", R"({"width": 64, "heads": 4})"}});
  try {
    CLIPTextModel::load(dir / "g.safetensors");
    FAIL() << "no error";
  } catch (const Error& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("g.safetensors"), std::string::npos) << msg;
    EXPECT_NE(msg.find("width 64"), std::string::npos) << msg;
  }
}

TEST(OpenCLIP, ReadsTransformersCLIPTextModelWithProjection) {
  // diffusers' text_encoder_2/: text_model.* and text_projection.weight [proj, width].
  auto g = CLIPTextModel::load(fixture("clip_g_tiny.safetensors"));
  std::map<std::string, torch::Tensor> hf;
  for (const auto& p : g.module().named_parameters())
    hf[p.key().rfind("text_projection.", 0) == 0 ? p.key() : "text_model." + p.key()] =
        p.value().clone();
  ASSERT_EQ(hf.at("text_projection.weight").sizes(), (std::vector<int64_t>{24, 32}));
  const auto oc = tensors_of(fixture("clip_g_tiny.safetensors"));
  EXPECT_TRUE(torch::equal(hf.at("text_projection.weight"), oc.at("text_projection").t()));
  EXPECT_TRUE(torch::equal(hf.at("text_model.encoder.layers.1.self_attn.k_proj.weight"),
                           oc.at("transformer.resblocks.1.attn.in_proj_weight").slice(0, 32, 64)));
  TempDir dir;
  save(dir / "te2.safetensors", hf,
       {{"config", R"({"hidden_size": 32, "num_attention_heads": 4, "hidden_act": "gelu",
                       "bos_token_id": 998, "eos_token_id": 999, "projection_dim": 24})"}});
  auto m = CLIPTextModel::load(dir / "te2.safetensors");
  EXPECT_EQ(m.config().projection_dim, 24);
  EXPECT_FALSE(m.config().pool_at_argmax);
  expect_matches_case(m);
}

TEST(OpenCLIP, CLIPLHasNoProjection) {
  auto m = CLIPTextModel::load(fixture("clip_l_tiny.safetensors"));
  EXPECT_EQ(m.config().projection_dim, 0);
  EXPECT_FALSE(m.forward(torch::tensor({{998, 5, 999}})).pooled_projected.defined());
}

// Random encoders of width 128 (two heads of 64, as names and shapes say
// without a config) in one SDXL single-file checkpoint.
TEST(OpenCLIP, PicksEitherEncoderOfASingleFileCheckpoint) {
  torch::manual_seed(3);
  text::CLIPTextConfig lc;
  lc.vocab_size = 1000;
  lc.hidden_size = 128;
  lc.intermediate_size = 256;
  lc.num_hidden_layers = 2;
  lc.num_attention_heads = 2;
  CLIPTextModel l(lc);
  std::map<std::string, torch::Tensor> lt;
  for (const auto& p : l.module().named_parameters())
    lt[p.key()] = torch::randn(p.value().sizes()) * 0.1;
  std::map<std::string, torch::Tensor> gt;
  gt["token_embedding.weight"] = torch::randn({1000, 128}) * 0.1;
  gt["positional_embedding"] = torch::randn({77, 128}) * 0.1;
  gt["ln_final.weight"] = 1 + torch::randn({128}) * 0.1;
  gt["ln_final.bias"] = torch::randn({128}) * 0.1;
  gt["text_projection"] = torch::randn({128, 40}) * 0.1;
  gt["logit_scale"] = torch::ones({});
  for (int i = 0; i < 2; ++i) {
    const std::string b = "transformer.resblocks." + std::to_string(i) + ".";
    gt[b + "attn.in_proj_weight"] = torch::randn({384, 128}) * 0.1;
    gt[b + "attn.in_proj_bias"] = torch::randn({384}) * 0.1;
    gt[b + "attn.out_proj.weight"] = torch::randn({128, 128}) * 0.1;
    gt[b + "attn.out_proj.bias"] = torch::randn({128}) * 0.1;
    for (const char* n : {"ln_1.", "ln_2."}) {
      gt[b + n + "weight"] = 1 + torch::randn({128}) * 0.1;
      gt[b + n + "bias"] = torch::randn({128}) * 0.1;
    }
    gt[b + "mlp.c_fc.weight"] = torch::randn({512, 128}) * 0.1;
    gt[b + "mlp.c_fc.bias"] = torch::randn({512}) * 0.1;
    gt[b + "mlp.c_proj.weight"] = torch::randn({128, 512}) * 0.1;
    gt[b + "mlp.c_proj.bias"] = torch::randn({128}) * 0.1;
  }
  TempDir dir;
  save(dir / "l.safetensors", lt);
  save(dir / "g.safetensors", gt);
  std::map<std::string, torch::Tensor> all;
  for (const auto& [k, v] : lt) all["conditioner.embedders.0.transformer.text_model." + k] = v;
  for (const auto& [k, v] : gt) all["conditioner.embedders.1.model." + k] = v;
  all["model.diffusion_model.out.2.bias"] = torch::zeros({4});
  save(dir / "sdxl.safetensors", all, {{"config", R"({"width": 4096})"}});

  const auto ids = torch::tensor({{998, 5, 7, 999, 0, 0}, {998, 9, 999, 999, 999, 999}});
  auto bare_l = CLIPTextModel::load(dir / "l.safetensors");
  auto bare_g = CLIPTextModel::load(dir / "g.safetensors");
  auto one_l =
      CLIPTextModel::load(dir / "sdxl.safetensors", layers::Precision::F32, io::Family::CLIP);
  auto one_g =
      CLIPTextModel::load(dir / "sdxl.safetensors", layers::Precision::F32, io::Family::OpenCLIP);
  auto first = CLIPTextModel::load(dir / "sdxl.safetensors");
  EXPECT_EQ(one_l.config().hidden_size, 128);
  EXPECT_EQ(one_l.config().num_attention_heads, 2);
  EXPECT_TRUE(one_l.config().quick_gelu == false);
  EXPECT_EQ(one_l.config().projection_dim, 0);
  EXPECT_EQ(one_g.config().projection_dim, 40);
  EXPECT_TRUE(one_g.config().pool_at_argmax);
  const auto a = bare_l.forward(ids), b = one_l.forward(ids), c = first.forward(ids);
  EXPECT_TRUE(torch::equal(a.penultimate, b.penultimate));
  EXPECT_TRUE(torch::equal(a.pooled, b.pooled));
  EXPECT_TRUE(torch::equal(a.penultimate, c.penultimate));
  const auto x = bare_g.forward(ids), y = one_g.forward(ids);
  EXPECT_TRUE(torch::equal(x.penultimate, y.penultimate));
  EXPECT_TRUE(torch::equal(x.pooled_projected, y.pooled_projected));
  // Pooled at argmax(ids): the first 999 of each row.
  EXPECT_TRUE(torch::equal(y.pooled[1], y.last_hidden[1][2]));
  // A file holding only bigG gives it whatever `prefer` says.
  auto g_as_l =
      CLIPTextModel::load(dir / "g.safetensors", layers::Precision::F32, io::Family::CLIP);
  EXPECT_EQ(g_as_l.config().projection_dim, 40);
}

// ---------------------------------------------------------------- conditioner

// vocab.json and merges.txt fitting the tiny encoders (1000 ids, 998 and 999
// start and end): a printable ASCII byte is its own id, 256 + it with `</w>`;
// "re" and "red</w>" merged. `extra_id` adds a token past the vocabulary.
text::ClipTokenizer tiny_tokenizer(int64_t extra_id = -1) {
  nlohmann::json v = nlohmann::json::object();
  for (int b = 33; b <= 126; ++b) {
    v[std::string(1, static_cast<char>(b))] = b;
    v[std::string(1, static_cast<char>(b)) + "</w>"] = 256 + b;
  }
  v["re"] = 600;
  v["red</w>"] = 601;
  v["<|startoftext|>"] = 998;
  v["<|endoftext|>"] = 999;
  if (extra_id >= 0) v["zz</w>"] = extra_id;
  return text::ClipTokenizer::from_strings(v.dump(), "#version: 0.2\nr e\nre d</w>\n",
                                           "tiny-tokenizer");
}

constexpr int64_t kBos = 998, kEos = 999;

// [1, 77]: BOS, tokens, EOS, `pad`.
torch::Tensor row(const std::vector<int64_t>& tokens, int64_t pad) {
  auto ids = torch::full({1, 77}, pad, torch::kInt64);
  ids[0][0] = kBos;
  for (std::size_t i = 0; i < tokens.size(); ++i) ids[0][static_cast<int64_t>(i) + 1] = tokens[i];
  ids[0][static_cast<int64_t>(tokens.size()) + 1] = kEos;
  return ids;
}

struct Fixture {
  CLIPTextModel l = CLIPTextModel::load(fixture("clip_l_tiny.safetensors"));
  CLIPTextModel g = CLIPTextModel::load(fixture("clip_g_tiny.safetensors"));
  text::SDXLConditioner cond{CLIPTextModel::load(fixture("clip_l_tiny.safetensors")),
                             CLIPTextModel::load(fixture("clip_g_tiny.safetensors")),
                             tiny_tokenizer()};

  // The chunk's states as the two encoders give them, joined: [1, 77, 96].
  torch::Tensor direct(const std::vector<int64_t>& tokens) {
    return torch::cat(
        {l.forward(row(tokens, kEos)).penultimate, g.forward(row(tokens, 0)).penultimate}, -1);
  }
};

// "ab " n times: 2n tokens (a = 97, b</w> = 256 + 98).
std::string words(int n) {
  std::string s;
  for (int i = 0; i < n; ++i) s += "ab ";
  return s;
}
std::vector<int64_t> word_tokens(int n) {
  std::vector<int64_t> t;
  for (int i = 0; i < n; ++i) {
    t.push_back(97);
    t.push_back(256 + 98);
  }
  return t;
}

TEST(SDXLConditioner, Dimensions) {
  Fixture f;
  EXPECT_EQ(f.cond.context_dim(), 64 + 32);
  EXPECT_EQ(f.cond.pooled_dim(), 24);
}

TEST(SDXLConditioner, OneChunkIsBothEncodersPenultimateStatesJoined) {
  Fixture f;
  std::vector<std::string> notes;
  const auto c = f.cond.encode("a red cat", [&](const std::string& s) { notes.push_back(s); });
  // a</w>, red</w>, c a t</w>
  const std::vector<int64_t> tokens = {256 + 'a', 601, 'c', 'a', 256 + 't'};
  ASSERT_EQ(c.context.sizes(), (std::vector<int64_t>{1, 77, 96}));
  EXPECT_LT(rel_err(c.context, f.direct(tokens)), 1e-6);
  EXPECT_TRUE(torch::equal(c.mask, torch::ones({1, 77}, torch::kInt64)));
  EXPECT_EQ(c.context.scalar_type(), torch::kFloat32);
  EXPECT_TRUE(notes.empty());
  // The pooled vector: bigG's projected pooled vector of that chunk.
  ASSERT_EQ(c.pooled.sizes(), (std::vector<int64_t>{1, 24}));
  EXPECT_LT(rel_err(c.pooled, f.g.forward(row(tokens, 0)).pooled_projected), 1e-6);
}

TEST(SDXLConditioner, TwoChunksFollowEachOther) {
  Fixture f;
  std::vector<std::string> notes;
  const auto c = f.cond.encode(words(60), [&](const std::string& s) { notes.push_back(s); });
  const auto t = word_tokens(60);  // 120 tokens: 75 + 45
  const std::vector<int64_t> first(t.begin(), t.begin() + 75), second(t.begin() + 75, t.end());
  ASSERT_EQ(c.context.sizes(), (std::vector<int64_t>{1, 154, 96}));
  EXPECT_LT(rel_err(c.context.slice(1, 0, 77), f.direct(first)), 1e-6);
  EXPECT_LT(rel_err(c.context.slice(1, 77, 154), f.direct(second)), 1e-6);
  EXPECT_TRUE(torch::equal(c.mask, torch::ones({1, 154}, torch::kInt64)));
  // Pooled from the first chunk only.
  EXPECT_LT(rel_err(c.pooled, f.g.forward(row(first, 0)).pooled_projected), 1e-6);
  ASSERT_EQ(notes.size(), 1u);
  EXPECT_EQ(notes[0], "prompt is 120 tokens: 2 chunks of 75");
}

TEST(SDXLConditioner, ChunkBoundaries) {
  Fixture f;
  const auto empty = f.cond.chunk("");
  ASSERT_EQ(empty.chunks(), 1);
  EXPECT_TRUE(torch::equal(empty.ids_l, row({}, kEos)));
  EXPECT_TRUE(torch::equal(empty.ids_g, row({}, 0)));
  EXPECT_EQ(f.cond.encode("", {}).context.size(1), 77);
  // 75 tokens fill one chunk; the 76th opens the next.
  const auto full = f.cond.chunk(words(37) + "a");
  EXPECT_EQ(full.tokens, 75);
  EXPECT_EQ(full.chunks(), 1);
  EXPECT_EQ(full.ids_l[0][76].item<int64_t>(), kEos);
  EXPECT_EQ(f.cond.chunk(words(38)).chunks(), 2);
}

TEST(SDXLConditioner, BreakStartsANewChunk) {
  Fixture f;
  std::vector<std::string> notes;
  const auto c = f.cond.encode("red BREAK ab", [&](const std::string& s) { notes.push_back(s); });
  ASSERT_EQ(c.context.sizes(), (std::vector<int64_t>{1, 154, 96}));
  EXPECT_LT(rel_err(c.context.slice(1, 0, 77), f.direct({601})), 1e-6);
  EXPECT_LT(rel_err(c.context.slice(1, 77, 154), f.direct({97, 256 + 98})), 1e-6);
  ASSERT_EQ(notes.size(), 1u);
  EXPECT_EQ(notes[0], "prompt is 3 tokens: 2 chunks of 75 (split at BREAK)");
  // A BREAK first gives an empty chunk; a BREAK last gives none.
  const auto lead = f.cond.chunk("BREAK red");
  ASSERT_EQ(lead.chunks(), 2);
  EXPECT_TRUE(torch::equal(lead.ids_g[0], row({}, 0)[0]));
  EXPECT_EQ(f.cond.chunk("red BREAK").chunks(), 1);
  // After a full chunk, a BREAK opens no empty one.
  EXPECT_EQ(f.cond.chunk(words(37) + "a BREAK red").chunks(), 2);
}

TEST(SDXLConditioner, WeightsScaleTokensAndKeepTheChunkMean) {
  Fixture f;
  const auto c = f.cond.encode("a (red:1.5) [cat]", {});
  const std::vector<int64_t> tokens = {256 + 'a', 601, 'c', 'a', 256 + 't'};
  // BOS, a, red, c, a, t, EOS and padding.
  std::vector<double> w(77, 1.0);
  w[2] = 1.5;
  w[3] = w[4] = w[5] = 1 / 1.1;
  auto weighted = [&](const torch::Tensor& z) {  // z [1, 77, D]
    const auto zd = z.to(torch::kFloat64);
    const auto wt = torch::tensor(w, torch::kFloat64).view({1, 77, 1});
    const double before = zd.sum().item<double>();
    const double after = (zd * wt).sum().item<double>();
    return zd * wt * (before / after);
  };
  const auto want = torch::cat({weighted(f.l.forward(row(tokens, kEos)).penultimate),
                                weighted(f.g.forward(row(tokens, 0)).penultimate)},
                               -1);
  EXPECT_LT(rel_err(c.context, want), 1e-5);
  // The same prompt unweighted differs, and its mean per encoder is kept.
  const auto plain = f.direct(tokens);
  EXPECT_GT(rel_err(c.context, plain), 1e-3);
  EXPECT_NEAR(c.context.slice(2, 0, 64).mean().item<double>(),
              plain.slice(2, 0, 64).mean().item<double>(), 1e-6);
  EXPECT_NEAR(c.context.slice(2, 64, 96).mean().item<double>(),
              plain.slice(2, 64, 96).mean().item<double>(), 1e-6);
  // The pooled vector is not weighted.
  EXPECT_LT(rel_err(c.pooled, f.g.forward(row(tokens, 0)).pooled_projected), 1e-6);
  // Weights in one chunk leave the next alone.
  const auto two = f.cond.encode("(red:1.5) BREAK red", {});
  EXPECT_LT(rel_err(two.context.slice(1, 77, 154), f.direct({601})), 1e-6);
}

TEST(SDXLConditioner, BadCombinationsAreErrors) {
  auto message = [](const std::function<void()>& make) {
    try {
      make();
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  // CLIP-L in bigG's place: no projection, no pooled vector.
  auto msg = message([] {
    text::SDXLConditioner(CLIPTextModel::load(fixture("clip_l_tiny.safetensors")),
                          CLIPTextModel::load(fixture("clip_l_tiny.safetensors")),
                          tiny_tokenizer());
  });
  EXPECT_NE(msg.find("no text projection"), std::string::npos) << msg;
  EXPECT_NE(msg.find("bigG"), std::string::npos) << msg;
  // A tokenizer with ids the encoders cannot embed.
  msg = message([] {
    text::SDXLConditioner(CLIPTextModel::load(fixture("clip_l_tiny.safetensors")),
                          CLIPTextModel::load(fixture("clip_g_tiny.safetensors")),
                          tiny_tokenizer(1500));
  });
  EXPECT_NE(msg.find("tiny-tokenizer"), std::string::npos) << msg;
  EXPECT_NE(msg.find("1500"), std::string::npos) << msg;
  EXPECT_NE(msg.find("CLIP-L"), std::string::npos) << msg;
  // An encoder that reads fewer than 77 positions.
  msg = message([] {
    text::CLIPTextConfig short_config;
    short_config.vocab_size = 1000;
    short_config.hidden_size = 32;
    short_config.num_attention_heads = 4;
    short_config.intermediate_size = 64;
    short_config.num_hidden_layers = 1;
    short_config.max_position_embeddings = 16;
    short_config.projection_dim = 8;
    text::SDXLConditioner(CLIPTextModel::load(fixture("clip_l_tiny.safetensors")),
                          CLIPTextModel(short_config), tiny_tokenizer());
  });
  EXPECT_NE(msg.find("16 positions"), std::string::npos) << msg;
  EXPECT_NE(msg.find("bigG"), std::string::npos) << msg;
}

}  // namespace
}  // namespace kinora
