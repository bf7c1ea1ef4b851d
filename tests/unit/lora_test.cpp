// LoRA: every file format built here from known low-rank deltas on the fixture
// models, merged and at run time, stacked, removed, and refused when it does
// not fit; and through the CLI.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <fstream>
#include <nlohmann/json.hpp>

#include "chain_preset.h"
#include "diffusion/flux_dit.h"
#include "diffusion/wan_dit.h"
#include "io/checkpoint.h"
#include "io/safetensors.h"
#include "layers/linear.h"
#include "lora/lora.h"
#include "pipeline/family.h"
#include "pipeline/lora_check.h"
#include "pipeline/pipeline.h"
#include "test_util.h"
#include "tiny_preset.h"

using kinora::test::error_of;
using kinora::test::fixture;
using kinora::test::sh;
using kinora::test::TempDir;
using ::testing::HasSubstr;
using ::testing::Not;
namespace fs = std::filesystem;
using namespace kinora;

namespace {

using Tensors = std::vector<std::pair<std::string, torch::Tensor>>;

torch::Tensor weight_of(layers::Model& m, const std::string& module) {
  for (const auto& item : m.module().named_modules("", false))
    if (item.key() == module)
      return item.value()->as<layers::LinearImpl>()->weight_as(torch::kFloat32).clone();
  ADD_FAILURE() << "no module " << module;
  return {};
}

lora::DiffusersNames names_of(const std::string& family, const pipeline::LoadedModels& m) {
  return pipeline::family_named(family).lora_names(m);
}

// A known update: ΔW = (alpha / rank)·up·down on one module of the Wan tiny DiT.
struct Known {
  torch::Tensor down, up;
  double alpha = 4;
  torch::Tensor delta() const { return torch::matmul(up, down) * (alpha / down.size(0)); }
};

Known known_for(int64_t out, int64_t in, int64_t rank = 2, uint64_t seed = 1) {
  torch::manual_seed(seed);
  return {torch::randn({rank, in}) * 0.1, torch::randn({out, rank}) * 0.1, 4};
}

// A LoRA file of one update, to `m`'s blocks.0.self_attn.q, its factors
// scaled by `scale`.
void write_q_lora(const std::filesystem::path& path, layers::Model& m, double scale) {
  const auto q = weight_of(m, "blocks.0.self_attn.q");
  const auto k = known_for(q.size(0), q.size(1));
  io::save_safetensors(path, {{"blocks.0.self_attn.q.lora_down.weight", k.down * scale},
                              {"blocks.0.self_attn.q.lora_up.weight", k.up * scale}});
}

}  // namespace

class WanLora : public ::testing::Test {
 protected:
  void SetUp() override {
    model = std::make_unique<diffusion::WanModel>(
        diffusion::WanModel::load(fixture("wan21_dit_tiny.safetensors")));
    models.denoiser = std::shared_ptr<diffusion::Denoiser>(model.get(), [](auto*) {});
    q = weight_of(*model, "blocks.0.self_attn.q");
    k = known_for(q.size(0), q.size(1));
  }
  lora::Resolved resolve(const fs::path& f) {
    return lora::resolve(f, *model, names_of("wan", models));
  }
  torch::Tensor forward() {
    torch::manual_seed(9);
    const auto x = torch::randn({1, 16, 2, 4, 6});
    const auto ctx = torch::randn({1, 5, 64});
    return model->forward(x, torch::tensor({600.0}), ctx);
  }
  TempDir dir;
  std::unique_ptr<diffusion::WanModel> model;
  pipeline::LoadedModels models;
  torch::Tensor q;
  Known k;
};

TEST_F(WanLora, EveryFormatOfOneDeltaMergesToTheSameWeights) {
  const std::string o = "blocks.0.self_attn.q";
  const auto alpha = torch::tensor(k.alpha);
  const std::vector<std::pair<std::string, Tensors>> files = {
      {"original",
       {{"diffusion_model." + o + ".lora_down.weight", k.down},
        {"diffusion_model." + o + ".lora_up.weight", k.up},
        {"diffusion_model." + o + ".alpha", alpha}}},
      {"original-AB",
       {{o + ".lora_A.weight", k.down}, {o + ".lora_B.weight", k.up}, {o + ".alpha", alpha}}},
      {"kohya",
       {{"lora_unet_blocks_0_self_attn_q.lora_down.weight", k.down},
        {"lora_unet_blocks_0_self_attn_q.lora_up.weight", k.up},
        {"lora_unet_blocks_0_self_attn_q.alpha", alpha}}},
      {"diffusers",
       {{"transformer.blocks.0.attn1.to_q.lora_A.weight", k.down},
        {"transformer.blocks.0.attn1.to_q.lora_B.weight", k.up},
        {"transformer.blocks.0.attn1.to_q.alpha", alpha}}},
      {"diff", {{"diffusion_model." + o + ".diff", k.delta()}}},
  };
  const double s = 0.7;
  const auto expected = q + s * k.delta();
  for (const auto& [name, tensors] : files) {
    const auto path = dir / (name + ".safetensors");
    io::save_safetensors(path, tensors);
    const auto r = resolve(path);
    EXPECT_EQ(r.report.matched, 1) << name;
    lora::Applied a;
    a.apply(*model, {{&r, s}}, lora::Mode::Merged);
    EXPECT_TRUE(torch::allclose(weight_of(*model, o), expected, 1e-6, 1e-7)) << name;
    a.clear();
    EXPECT_TRUE(torch::equal(weight_of(*model, o), q)) << name << ": not restored bit for bit";
  }
}

TEST_F(WanLora, LoHaAndLoKrGiveTheirDeltas) {
  const std::string o = "lycoris_blocks_0_self_attn_q";
  const int64_t out = q.size(0), in = q.size(1);
  torch::manual_seed(3);
  const auto w1a = torch::randn({out, 2}) * 0.1, w1b = torch::randn({2, in}) * 0.1;
  const auto w2a = torch::randn({out, 2}) * 0.1, w2b = torch::randn({2, in}) * 0.1;
  io::save_safetensors(dir / "loha.safetensors", {{o + ".hada_w1_a", w1a},
                                                  {o + ".hada_w1_b", w1b},
                                                  {o + ".hada_w2_a", w2a},
                                                  {o + ".hada_w2_b", w2b},
                                                  {o + ".alpha", torch::tensor(1.0)}});
  const auto loha = torch::matmul(w1a, w1b) * torch::matmul(w2a, w2b) * 0.5;
  // LoKr: kron(w1 [4, 4] full, w2 = w2a·w2b [out/4, in/4] decomposed, dim 2).
  const auto k1 = torch::randn({4, 4}) * 0.1;
  const auto k2a = torch::randn({out / 4, 2}) * 0.1, k2b = torch::randn({2, in / 4}) * 0.1;
  io::save_safetensors(dir / "lokr.safetensors",
                       {{"lora_unet_blocks_0_self_attn_q.lokr_w1", k1},
                        {"lora_unet_blocks_0_self_attn_q.lokr_w2_a", k2a},
                        {"lora_unet_blocks_0_self_attn_q.lokr_w2_b", k2b},
                        {"lora_unet_blocks_0_self_attn_q.alpha", torch::tensor(3.0)}});
  const auto lokr = torch::kron(k1, torch::matmul(k2a, k2b)) * 1.5;
  // Alpha 0 reads as no alpha (scale 1), as LyCORIS and kohya read it.
  io::save_safetensors(dir / "loha0.safetensors", {{o + ".hada_w1_a", w1a},
                                                   {o + ".hada_w1_b", w1b},
                                                   {o + ".hada_w2_a", w2a},
                                                   {o + ".hada_w2_b", w2b},
                                                   {o + ".alpha", torch::tensor(0.0)}});
  io::save_safetensors(dir / "lokr0.safetensors",
                       {{"lora_unet_blocks_0_self_attn_q.lokr_w1", k1},
                        {"lora_unet_blocks_0_self_attn_q.lokr_w2_a", k2a},
                        {"lora_unet_blocks_0_self_attn_q.lokr_w2_b", k2b},
                        {"lora_unet_blocks_0_self_attn_q.alpha", torch::tensor(0.0)}});
  for (const auto& [file, delta] : {std::pair<const char*, torch::Tensor>{"loha.safetensors", loha},
                                    {"lokr.safetensors", lokr},
                                    {"loha0.safetensors", loha * 2},
                                    {"lokr0.safetensors", lokr / 1.5}}) {
    const auto r = resolve(dir / file);
    lora::Applied a;
    a.apply(*model, {{&r, 1.0}}, lora::Mode::Merged);
    EXPECT_TRUE(torch::allclose(weight_of(*model, "blocks.0.self_attn.q"), q + delta, 1e-6, 1e-7))
        << file;
  }
  // Without a model, the same kinds and ranks as with it.
  for (const auto& [file, format] :
       {std::pair<const char*, const char*>{"loha.safetensors", "lycoris, LoHa"},
        {"lokr.safetensors", "kohya, LoKr"}}) {
    const auto d = lora::describe(dir / file);
    EXPECT_EQ(d.format, format) << file;
    EXPECT_EQ(d.format, resolve(dir / file).report.format) << file;
    EXPECT_EQ(d.rank_and_alpha(), resolve(dir / file).report.rank_and_alpha()) << file;
    EXPECT_EQ(d.rank, 2) << file;
  }
}

// lora inspect without --model names LoHa, LoKr and full deltas and their
// rank; SD's original UNet names are not taken for diffusers'; the hint to
// list the updates not applied appears only where it lists something more.
TEST_F(WanLora, InspectNamesTheKindOfUpdateAndItsFormat) {
  const std::string o = "lycoris_blocks_0_self_attn_q";
  io::save_safetensors(dir / "loha.safetensors", {{o + ".hada_w1_a", k.up},
                                                  {o + ".hada_w1_b", k.down},
                                                  {o + ".hada_w2_a", k.up},
                                                  {o + ".hada_w2_b", k.down},
                                                  {o + ".alpha", torch::tensor(4.0)}});
  io::save_safetensors(dir / "full.safetensors", {{"blocks.0.self_attn.q.diff", k.delta()}});
  const std::string inspect = std::string(KINORA_BIN_DIR) + "/kinora lora inspect ";
  EXPECT_THAT(sh(inspect + (dir / "loha.safetensors").string()).out,
              HasSubstr("loha.safetensors: lycoris, LoHa, 1 updates, rank 2, alpha 4"));
  EXPECT_THAT(sh(inspect + (dir / "full.safetensors").string()).out,
              HasSubstr("full.safetensors: original, full deltas, 1 updates"));
  // SDXL's original names hold transformer_blocks and attn1 too.
  io::save_safetensors(
      dir / "sdxl.safetensors",
      {{"diffusion_model.input_blocks.4.1.transformer_blocks.0.attn1.to_q.lora_down.weight",
        k.down},
       {"diffusion_model.input_blocks.4.1.transformer_blocks.0.attn1.to_q.lora_up.weight", k.up}});
  EXPECT_EQ(lora::describe(dir / "sdxl.safetensors").format, "original");
  io::save_safetensors(
      dir / "sdxl_diffusers.safetensors",
      {{"unet.down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q.lora_A.weight", k.down},
       {"unet.down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q.lora_B.weight", k.up}});
  EXPECT_EQ(lora::describe(dir / "sdxl_diffusers.safetensors").format, "diffusers");
  // One update applied, one not: the hint says -v, and -v lists it without the hint.
  io::save_safetensors(dir / "part.safetensors", {{"blocks.0.self_attn.q.lora_down.weight", k.down},
                                                  {"blocks.0.self_attn.q.lora_up.weight", k.up},
                                                  {"blocks.0.nonsense.lora_down.weight", k.down},
                                                  {"blocks.0.nonsense.lora_up.weight", k.up}});
  const std::string with_model = inspect + (dir / "part.safetensors").string() + " --model " +
                                 fixture("wan21_dit_tiny.safetensors");
  const auto plain = sh(with_model);
  EXPECT_THAT(plain.out,
              HasSubstr("(1 not: 1 no module of that name in this model; -v lists them)"));
  EXPECT_THAT(plain.out, Not(HasSubstr("--model MODEL")));
  const auto verbose = sh(with_model + " -v");
  EXPECT_THAT(verbose.out, HasSubstr("(1 not: 1 no module of that name in this model)"));
  EXPECT_THAT(verbose.out, HasSubstr("not matched: blocks.0.nonsense: no module"));
  // The render's report names the command that lists them.
  EXPECT_THAT(resolve(dir / "part.safetensors").report.line(),
              HasSubstr("`kinora lora inspect FILE --model MODEL -v` lists them)"));
}

TEST_F(WanLora, RunTimeEqualsMergedAndStacksWithStrengths) {
  const auto base = forward();
  io::save_safetensors(dir / "a.safetensors",
                       {{"blocks.0.self_attn.q.lora_down.weight", k.down},
                        {"blocks.0.self_attn.q.lora_up.weight", k.up},
                        {"blocks.0.self_attn.q.alpha", torch::tensor(k.alpha)}});
  const auto f = weight_of(*model, "blocks.1.ffn.0");
  const auto k2 = known_for(f.size(0), f.size(1), 3, 2);
  io::save_safetensors(dir / "b.safetensors",
                       {{"lora_unet_blocks_1_ffn_0.lora_down.weight", k2.down},
                        {"lora_unet_blocks_1_ffn_0.lora_up.weight", k2.up}});
  const auto a = resolve(dir / "a.safetensors"), b = resolve(dir / "b.safetensors");
  EXPECT_EQ(b.report.format, "kohya");
  EXPECT_EQ(b.report.rank, 3);
  lora::Applied applied;
  applied.apply(*model, {{&a, 0.8}, {&b, -0.5}}, lora::Mode::Merged);
  const auto merged = forward();
  applied.apply(*model, {{&a, 0.8}, {&b, -0.5}}, lora::Mode::RunTime);
  const auto run_time = forward();
  EXPECT_LT((merged - run_time).abs().max().item<double>(), 1e-5);
  EXPECT_GT((merged - base).abs().max().item<double>(), 1e-4);  // it does something
  applied.clear();
  EXPECT_TRUE(torch::equal(forward(), base));
}

// A file that mixes ranks and alphas (kohya's block-wise dims do) is reported
// as ranges, by resolve() and by describe(); one rank and alpha as before.
TEST_F(WanLora, MixedRanksAndAlphasAreReportedAsRanges) {
  const auto f = weight_of(*model, "blocks.1.ffn.0");
  const auto k2 = known_for(f.size(0), f.size(1), 4, 2);
  io::save_safetensors(dir / "mixed.safetensors",
                       {{"blocks.0.self_attn.q.lora_down.weight", k.down},
                        {"blocks.0.self_attn.q.lora_up.weight", k.up},
                        {"blocks.0.self_attn.q.alpha", torch::tensor(1.0)},
                        {"blocks.1.ffn.0.lora_down.weight", k2.down},
                        {"blocks.1.ffn.0.lora_up.weight", k2.up},
                        {"blocks.1.ffn.0.alpha", torch::tensor(8.0)}});
  const auto r = resolve(dir / "mixed.safetensors");
  EXPECT_EQ(r.report.rank, 4);
  EXPECT_THAT(r.report.line(), HasSubstr("ranks 2 to 4, alphas 1 to 8"));
  EXPECT_EQ(lora::describe(dir / "mixed.safetensors").rank_and_alpha(),
            ", ranks 2 to 4, alphas 1 to 8");
  io::save_safetensors(dir / "one.safetensors",
                       {{"blocks.0.self_attn.q.lora_down.weight", k.down},
                        {"blocks.0.self_attn.q.lora_up.weight", k.up},
                        {"blocks.0.self_attn.q.alpha", torch::tensor(1.0)}});
  EXPECT_EQ(lora::describe(dir / "one.safetensors").rank_and_alpha(), ", rank 2, alpha 1");
  // A negative alpha is applied (alpha / rank scales the update) and said.
  io::save_safetensors(dir / "negative.safetensors",
                       {{"blocks.0.self_attn.q.lora_down.weight", k.down},
                        {"blocks.0.self_attn.q.lora_up.weight", k.up},
                        {"blocks.0.self_attn.q.alpha", torch::tensor(-2.0)}});
  const std::string reversed =
      ", rank 2, alpha -2 (negative: the update is applied reversed, as at a negative strength)";
  EXPECT_EQ(lora::describe(dir / "negative.safetensors").rank_and_alpha(), reversed);
  EXPECT_THAT(resolve(dir / "negative.safetensors").report.line(), HasSubstr(reversed));
}

TEST_F(WanLora, BadFilesAreRefusedByName) {
  // No LoRA keys at all.
  io::save_safetensors(dir / "none.safetensors", {{"something.weight", torch::zeros({2, 2})}});
  EXPECT_THAT(error_of([&] { resolve(dir / "none.safetensors"); }), HasSubstr("no LoRA keys"));
  // A FLUX LoRA on Wan: matches nothing.
  io::save_safetensors(dir / "flux.safetensors",
                       {{"double_blocks.0.img_attn.qkv.lora_A.weight", torch::zeros({2, 96})},
                        {"double_blocks.0.img_attn.qkv.lora_B.weight", torch::zeros({288, 2})}});
  const auto msg = error_of([&] { resolve(dir / "flux.safetensors"); });
  EXPECT_THAT(msg, HasSubstr("flux.safetensors"));
  EXPECT_THAT(msg, HasSubstr("another model family or size"));
  // Only a text encoder's updates: of a kind not applied here, not "another
  // family"; beside a matching update, the report line says why one is not.
  io::save_safetensors(
      dir / "te.safetensors",
      {{"lora_te1_text_model_encoder_layers_0_mlp_fc1.lora_down.weight", torch::zeros({2, 64})},
       {"lora_te1_text_model_encoder_layers_0_mlp_fc1.lora_up.weight", torch::zeros({128, 2})}});
  const auto te = error_of([&] { resolve(dir / "te.safetensors"); });
  EXPECT_THAT(te, HasSubstr("none of its updates is of a kind applied to this model"));
  EXPECT_THAT(te, Not(HasSubstr("another model family")));
  io::save_safetensors(
      dir / "mixed.safetensors",
      {{"blocks.0.self_attn.q.lora_down.weight", k.down},
       {"blocks.0.self_attn.q.lora_up.weight", k.up},
       {"lora_te1_text_model_encoder_layers_0_mlp_fc1.lora_down.weight", torch::zeros({2, 64})},
       {"lora_te1_text_model_encoder_layers_0_mlp_fc1.lora_up.weight", torch::zeros({128, 2})}});
  EXPECT_THAT(resolve(dir / "mixed.safetensors").report.line(),
              HasSubstr("1 of 2 updates matched (1 not: 1 a text encoder's, not applied to this "
                        "model; `kinora lora inspect"));
  // Another size: the shapes do not fit.
  io::save_safetensors(dir / "big.safetensors",
                       {{"blocks.0.self_attn.q.lora_down.weight", torch::zeros({2, 5120})},
                        {"blocks.0.self_attn.q.lora_up.weight", torch::zeros({5120, 2})}});
  EXPECT_THAT(error_of([&] { resolve(dir / "big.safetensors"); }), HasSubstr("does not fit"));
  // NaN.
  auto nan = k.down.clone();
  nan[0][0] = std::numeric_limits<float>::quiet_NaN();
  io::save_safetensors(dir / "nan.safetensors", {{"blocks.0.self_attn.q.lora_down.weight", nan},
                                                 {"blocks.0.self_attn.q.lora_up.weight", k.up}});
  EXPECT_THAT(error_of([&] { resolve(dir / "nan.safetensors"); }), HasSubstr("NaN"));
  // Whole numbers where weights go; an integer alpha is a number like another.
  io::save_safetensors(dir / "int.safetensors",
                       {{"blocks.0.self_attn.q.lora_down.weight", k.down.to(torch::kInt32)},
                        {"blocks.0.self_attn.q.lora_up.weight", k.up}});
  EXPECT_THAT(error_of([&] { resolve(dir / "int.safetensors"); }),
              HasSubstr("is I32: a LoRA's weights are floating point"));
  io::save_safetensors(dir / "int_alpha.safetensors",
                       {{"blocks.0.self_attn.q.lora_down.weight", k.down},
                        {"blocks.0.self_attn.q.lora_up.weight", k.up},
                        {"blocks.0.self_attn.q.alpha", torch::tensor(4, torch::kInt64)}});
  EXPECT_NO_THROW(resolve(dir / "int_alpha.safetensors"));
  // Shapes that do not make an update: a scalar "matrix", LoHa factors that
  // do not multiply (the fuzzer's first finding).
  io::save_safetensors(dir / "scalar.safetensors",
                       {{"blocks.0.self_attn.q.lora_down.weight", torch::tensor(1.0f)},
                        {"blocks.0.self_attn.q.lora_up.weight", k.up}});
  EXPECT_THAT(error_of([&] { resolve(dir / "scalar.safetensors"); }), HasSubstr("not a matrix"));
  io::save_safetensors(dir / "badloha.safetensors",
                       {{"blocks.0.self_attn.q.hada_w1_a", torch::ones({128, 2})},
                        {"blocks.0.self_attn.q.hada_w1_b", torch::ones({3, 128})},
                        {"blocks.0.self_attn.q.hada_w2_a", torch::ones({128, 2})},
                        {"blocks.0.self_attn.q.hada_w2_b", torch::ones({2, 128})}});
  EXPECT_THAT(error_of([&] { resolve(dir / "badloha.safetensors"); }),
              HasSubstr("badloha.safetensors: a damaged LoRA: 'blocks.0.self_attn.q.hada_w1_a' "
                        "[128, 2] and 'blocks.0.self_attn.q.hada_w1_b' [3, 128] do not multiply"));
  // Resolved against this model, applied to another architecture: refused, nothing applied.
  io::save_safetensors(dir / "q.safetensors", {{"blocks.0.self_attn.q.lora_down.weight", k.down},
                                               {"blocks.0.self_attn.q.lora_up.weight", k.up}});
  const auto rq = resolve(dir / "q.safetensors");
  auto flux = diffusion::FluxModel::load(fixture("flux1_dev_tiny.safetensors"));
  lora::Applied other;
  EXPECT_THAT(error_of([&] {
                other.apply(flux, {{&rq, 1.0}}, lora::Mode::Merged);
              }),
              HasSubstr("does not fit this model's module"));
  // Partly matching: reported, not refused.
  io::save_safetensors(dir / "part.safetensors",
                       {{"blocks.0.self_attn.q.lora_down.weight", k.down},
                        {"blocks.0.self_attn.q.lora_up.weight", k.up},
                        {"blocks.0.nonsense.lora_down.weight", k.down},
                        {"blocks.0.nonsense.lora_up.weight", k.up},
                        {"lora_te1_text_model_encoder_layers_0_mlp_fc1.lora_down.weight", k.down},
                        {"lora_te1_text_model_encoder_layers_0_mlp_fc1.lora_up.weight", k.up}});
  const auto r = resolve(dir / "part.safetensors");
  EXPECT_EQ(r.report.matched, 1);
  EXPECT_EQ(r.report.total, 3);
  ASSERT_EQ(r.report.unmatched.size(), 2u);
  EXPECT_THAT(r.report.line(), HasSubstr("1 of 3"));
}

// A damaged update (a half of a pair missing, shapes that do not multiply)
// refuses the whole file, by its keys, with or without a model; what real
// trainers write alone (an alpha of a module they skipped, DoRA's scale) does
// not.
TEST_F(WanLora, DamagedUpdatesRefuseTheFileByKey) {
  auto write_with = [&](const std::string& name, Tensors extra) {
    Tensors t = {{"blocks.0.self_attn.k.lora_down.weight", k.down},
                 {"blocks.0.self_attn.k.lora_up.weight", k.up}};
    for (auto& e : extra) t.push_back(std::move(e));
    io::save_safetensors(dir / name, t);
    return dir / name;
  };
  const auto ranks = write_with("ranks.safetensors",
                                {{"blocks.0.self_attn.q.lora_down.weight", torch::ones({3, 128})},
                                 {"blocks.0.self_attn.q.lora_up.weight", torch::ones({128, 4})}});
  const std::string ranks_why =
      "ranks.safetensors: a damaged LoRA: 'blocks.0.self_attn.q.lora_up.weight' [128, 4] and "
      "'blocks.0.self_attn.q.lora_down.weight' [3, 128] do not multiply (ranks 4 and 3)";
  EXPECT_THAT(error_of([&] { resolve(ranks); }), HasSubstr(ranks_why));
  EXPECT_THAT(error_of([&] { lora::describe(ranks); }), HasSubstr(ranks_why));
  const auto half =
      write_with("half.safetensors", {{"blocks.0.self_attn.q.lora_A.weight", k.down},
                                      {"blocks.0.self_attn.q.alpha", torch::tensor(4.0)}});
  EXPECT_THAT(error_of([&] { resolve(half); }),
              HasSubstr("half.safetensors: a damaged LoRA: 'blocks.0.self_attn.q.lora_A.weight' "
                        "has no 'blocks.0.self_attn.q.lora_B.weight' beside it"));
  const auto loha = write_with("loha.safetensors", {{"blocks.0.self_attn.q.hada_w1_a", k.up},
                                                    {"blocks.0.self_attn.q.hada_w1_b", k.down},
                                                    {"blocks.0.self_attn.q.hada_w2_a", k.up}});
  EXPECT_THAT(error_of([&] { lora::describe(loha); }),
              HasSubstr("'blocks.0.self_attn.q.hada_w1_a' has no 'blocks.0.self_attn.q.hada_w2_b' "
                        "beside it"));
  const auto lokr = write_with("lokr.safetensors", {{"blocks.0.self_attn.q.lokr_w1", k.up},
                                                    {"blocks.0.self_attn.q.lokr_w2_a", k.up}});
  EXPECT_THAT(error_of([&] { lora::describe(lokr); }),
              HasSubstr("'blocks.0.self_attn.q.lokr_w2_a' has no 'blocks.0.self_attn.q.lokr_w2_b' "
                        "beside it"));
  // Several: counted, the first three named.
  Tensors many;
  for (int b = 0; b < 2; ++b)
    for (const char* m : {"q", "k", "v", "o"})
      many.push_back(
          {"blocks." + std::to_string(b) + ".self_attn." + m + ".lora_down.weight", k.down});
  io::save_safetensors(dir / "many.safetensors", many);
  const auto msg = error_of([&] { resolve(dir / "many.safetensors"); });
  EXPECT_THAT(msg, HasSubstr("a damaged LoRA (8 updates): "));
  EXPECT_THAT(msg, HasSubstr("; and 5 more"));
  // Legitimate lone keys: an alpha without its pair, DoRA's scale beside a pair.
  const auto lone =
      write_with("lone.safetensors", {{"blocks.1.self_attn.q.alpha", torch::tensor(4.0)},
                                      {"blocks.0.self_attn.q.lora_down.weight", k.down},
                                      {"blocks.0.self_attn.q.lora_up.weight", k.up},
                                      {"blocks.0.self_attn.q.dora_scale", torch::ones({1, 128})}});
  const auto r = resolve(lone);
  EXPECT_EQ(r.report.matched, 1);
  EXPECT_EQ(r.report.total, 2);
  EXPECT_THAT(r.report.line(), HasSubstr("1 of a kind not supported"));
  EXPECT_EQ(lora::describe(lone).total, 2);
  // PEFT's DoRA keeps its magnitudes beside lora_A/lora_B: not applied as a
  // plain LoRA, said to be of a kind not supported.
  for (const std::string key : {"lora_magnitude_vector", "lora_magnitude_vector.weight"}) {
    const auto dora =
        write_with("dora.safetensors", {{"blocks.0.self_attn.q.lora_A.weight", k.down},
                                        {"blocks.0.self_attn.q.lora_B.weight", k.up},
                                        {"blocks.0.self_attn.q." + key, torch::ones({128})}});
    const auto d = resolve(dora);
    EXPECT_EQ(d.report.matched, 1) << key << ": " << d.report.line();  // k's update
    EXPECT_THAT(d.report.line(), HasSubstr("1 of 2 updates matched (1 not: 1 of a kind not "
                                           "supported"))
        << key;
  }
}

// A LoRA with finite values whose merged weight is not finite is named, with
// the layer, merged or at run time; nothing of it stays applied.
TEST_F(WanLora, AnOverflowingUpdateNamesItsLoraAndLayer) {
  io::save_safetensors(dir / "huge.safetensors",
                       {{"blocks.0.self_attn.k.lora_down.weight", k.down},
                        {"blocks.0.self_attn.k.lora_up.weight", k.up},
                        {"blocks.0.self_attn.q.lora_down.weight", k.down * 1e20},
                        {"blocks.0.self_attn.q.lora_up.weight", k.up * 1e20}});
  const auto r = resolve(dir / "huge.safetensors");
  const auto kw = weight_of(*model, "blocks.0.self_attn.k");
  for (const auto mode : {lora::Mode::Merged, lora::Mode::RunTime}) {
    lora::Applied a;
    EXPECT_THAT(error_of([&] {
                  a.apply(*model, {{&r, 1.0}}, mode);
                }),
                HasSubstr("huge.safetensors: its update for blocks.0.self_attn.q at strength 1 "
                          "makes that layer's weight NaN or infinite (the model's weight is "
                          "finite)"));
    EXPECT_TRUE(torch::equal(weight_of(*model, "blocks.0.self_attn.k"), kw));
    EXPECT_TRUE(torch::equal(forward(), forward()));  // no adapter left behind
  }
  // Finite in float32, not in float16: the dtype is named.
  io::save_safetensors(dir / "big.safetensors",
                       {{"blocks.0.self_attn.q.lora_down.weight", k.down},
                        {"blocks.0.self_attn.q.lora_up.weight", k.up * 1e7}});
  for (const auto& item : model->module().named_modules("", false))
    if (item.key() == "blocks.0.self_attn.q") {
      auto* l = item.value()->as<layers::LinearImpl>();
      l->weight.set_data(l->weight.to(torch::kHalf));  // a weight stored in float16
    }
  const auto rb = resolve(dir / "big.safetensors");
  lora::Applied a;
  EXPECT_THAT(error_of([&] {
                a.apply(*model, {{&rb, 1.0}}, lora::Mode::Merged);
              }),
              HasSubstr("makes that layer's weight NaN or infinite in float16, the dtype it is "
                        "stored in"));
}

TEST(PromptLoras, TagsAreTakenOutOfTheText) {
  const auto t = pipeline::prompt_loras("a fox <lora:ink:0.6> in snow <lora:grain>");
  EXPECT_EQ(t.text, "a fox in snow");
  ASSERT_EQ(t.loras.size(), 2u);
  EXPECT_EQ(t.loras[0].path, "ink");
  EXPECT_EQ(t.loras[0].strength, 0.6);
  EXPECT_EQ(t.loras[1].path, "grain");
  EXPECT_EQ(t.loras[1].strength, 1.0);
  EXPECT_THAT(error_of([] { pipeline::prompt_loras("x <lora:a:lots>"); }), HasSubstr("number"));
  // The range and the notation of --lora and a preset's "strength".
  for (const char* bad : {"500", "-100.5", "0x10", "1e30", "inf", "nan", " 1"})
    EXPECT_THAT(error_of([&] { pipeline::prompt_loras(std::string("x <lora:a:") + bad + ">"); }),
                HasSubstr("the strength must be a number from -100 to 100"))
        << bad;
  EXPECT_EQ(pipeline::prompt_loras("x <lora:a:-1.5e1>").loras[0].strength, -15.0);
  EXPECT_EQ(pipeline::prompt_loras("no tags here").text, "no tags here");
  EXPECT_THAT(error_of([] { pipeline::prompt_loras("a fox <lora:style:0.8"); }),
              HasSubstr("not complete"));
  EXPECT_THAT(error_of([] { pipeline::prompt_loras("a fox <lora:>"); }), HasSubstr("not complete"));
}

// A LoRA by name: a folder found where it is looked for is said to be one;
// a name with its extension is not tried with a second one.
TEST(PromptLoras, ALoraNameFoundAsAFolderOrNotAtAllIsSaidSo) {
  TempDir dir;
  fs::create_directories(dir / "models" / "loras" / "adir.safetensors");
  pipeline::Preset p;
  p.models_dir = (dir / "models").string();
  p.base_dir = dir.path();
  p.source = "--lora";
  const auto folder = (dir / "models" / "loras" / "adir.safetensors").string();
  for (const char* name : {"adir", "adir.safetensors"})
    EXPECT_THAT(error_of([&] { pipeline::resolve_lora_file(p, name); }),
                HasSubstr("--lora: LoRA '" + std::string(name) + "': " + folder +
                          " is a folder, not a LoRA file"));
  const auto missing = error_of([&] { pipeline::resolve_lora_file(p, "only_here.safetensors"); });
  EXPECT_THAT(missing, HasSubstr("not found (looked for"));
  EXPECT_THAT(missing, Not(HasSubstr(".safetensors.safetensors"))) << missing;
  EXPECT_THAT(error_of([&] { pipeline::resolve_lora_file(p, "only_here"); }),
              HasSubstr((dir / "models" / "loras" / "only_here.safetensors").string()));
  // A prompt's <lora:…> tag is said the same way.
  EXPECT_THAT(error_of([&] { pipeline::resolve_lora_tag(p, "adir"); }),
              HasSubstr("prompt: <lora:adir>: " + folder + " is a folder, not a LoRA file"));
  EXPECT_THAT(error_of([&] { pipeline::resolve_lora_tag(p, "only_here"); }),
              HasSubstr("prompt: <lora:only_here>: not found in"));
}

TEST(PromptLoras, PresetEntriesAreCheckedLikeTheCommandLine) {
  using pipeline::Preset;
  const auto j = [](const char* text) { return nlohmann::json::parse(text); };
  EXPECT_THAT(error_of([&] {
                Preset::from_json(j(R"({"loras": [{"path": "a", "strength": 1e9}]})"), "p.json");
              }),
              HasSubstr("p.json: key 'loras[0].strength'"));
  EXPECT_THAT(error_of([&] {
                Preset::from_json(j(R"({"loras": [{"path": "a", "strenght": 0.5}]})"), "p.json");
              }),
              HasSubstr("'loras[0].strenght' is not a key of a LoRA"));
  // "file", as an output's list of applied LoRAs names it, reads as "path".
  EXPECT_EQ(
      Preset::from_json(j(R"({"loras": [{"file": "ink.safetensors", "strength": 0.5}]})"), "p.json")
          .loras[0]
          .path,
      "ink.safetensors");
  EXPECT_THAT(error_of([&] {
                Preset::from_json(j(R"({"loras": [{"path": "a", "file": "b"}]})"), "p.json");
              }),
              HasSubstr("has both \"path\" and \"file\""));
}

// FLUX: diffusers' separate q/k/v onto row slices of the fused qkv and of a
// single block's linear1.
TEST(FluxLora, SplitQkvLandsOnTheFusedRows) {
  TempDir dir;
  auto m = diffusion::FluxModel::load(fixture("flux1_dev_tiny.safetensors"));
  pipeline::LoadedModels models;
  models.denoiser = std::shared_ptr<diffusion::Denoiser>(&m, [](auto*) {});
  const int64_t h = m.config().hidden_size;
  const auto qkv = weight_of(m, "double_blocks.0.img_attn.qkv");
  const auto lin1 = weight_of(m, "single_blocks.1.linear1");
  const auto kk = known_for(h, h, 2, 5);
  const auto kmlp = known_for(m.config().mlp_hidden, h, 2, 6);
  io::save_safetensors(
      dir / "split.safetensors",
      {{"transformer.transformer_blocks.0.attn.to_k.lora_A.weight", kk.down},
       {"transformer.transformer_blocks.0.attn.to_k.lora_B.weight", kk.up},
       {"transformer.transformer_blocks.0.attn.to_k.alpha", torch::tensor(kk.alpha)},
       {"transformer.single_transformer_blocks.1.proj_mlp.lora_A.weight", kmlp.down},
       {"transformer.single_transformer_blocks.1.proj_mlp.lora_B.weight", kmlp.up},
       {"transformer.single_transformer_blocks.1.proj_mlp.alpha", torch::tensor(kmlp.alpha)}});
  const auto r = lora::resolve(dir / "split.safetensors", m, names_of("flux", models));
  EXPECT_EQ(r.report.matched, 2);
  lora::Applied a;
  a.apply(m, {{&r, 1.0}}, lora::Mode::Merged);
  auto want = qkv.clone();
  want.narrow(0, h, h) += kk.delta();
  EXPECT_TRUE(torch::allclose(weight_of(m, "double_blocks.0.img_attn.qkv"), want, 1e-6, 1e-7));
  auto want1 = lin1.clone();
  want1.narrow(0, 3 * h, m.config().mlp_hidden) += kmlp.delta();
  EXPECT_TRUE(torch::allclose(weight_of(m, "single_blocks.1.linear1"), want1, 1e-6, 1e-7));
}

// Through the CLI on the fixture chain: strength 0 changes nothing, another
// strength changes the video, and the output records the LoRA.
TEST(LoraCli, GenerateWithALoraRecordsItAndStrengthZeroIsTheBase) {
  TempDir dir;
  auto m = diffusion::WanModel::load(fixture("wan21_dit_tiny.safetensors"));
  const auto w = weight_of(m, "blocks.0.self_attn.q");
  const auto k = known_for(w.size(0), w.size(1));
  fs::create_directories(dir / "models" / "loras");
  io::save_safetensors(dir / "models" / "loras" / "style.safetensors",
                       {{"lora_unet_blocks_0_self_attn_q.lora_down.weight", k.down * 30},
                        {"lora_unet_blocks_0_self_attn_q.lora_up.weight", k.up * 30}});
  const std::string base =
      std::string(KINORA_BIN_DIR) + "/kinora generate -p 'a fox' --seed 2" + " --model " +
      fixture("wan21_dit_tiny.safetensors") + " --vae " + fixture("wan21_vae_tiny.safetensors") +
      " --text-encoder " + fixture("umt5_enc_tiny.safetensors") + " --tokenizer " +
      fixture("spm_tiny.model") + " --width 64 --height 48 --frames 5 --steps 2 --precision fp32" +
      " --models-dir " + (dir / "models").string() + " --format png-seq";
  auto run = [&](const std::string& extra, const std::string& out) {
    const auto r = sh(base + extra + " --out " + (dir / out).string());
    EXPECT_EQ(r.code, 0) << r.out;
    return r;
  };
  run("", "plain");
  run(" --lora style:0", "zero");
  const auto with = run(" --lora style:1.5", "styled");
  EXPECT_THAT(with.out, HasSubstr("1 of 1 updates matched"));
  auto frame = [&](const std::string& out) {
    return sh("ffmpeg -v error -i '" + (dir / out / "frame_00001.png").string() +
              "' -f rawvideo -pix_fmt rgb24 - | md5sum")
        .out;  // pixels: the embedded parameters differ
  };
  EXPECT_EQ(frame("plain"), frame("zero"));
  EXPECT_NE(frame("plain"), frame("styled"));
  const auto j = nlohmann::json::parse(std::ifstream(dir / "styled" / "kinora.json"));
  ASSERT_EQ(j["loras"].size(), 1u);
  EXPECT_EQ(j["loras"][0]["file"], "style.safetensors");
  EXPECT_EQ(j["loras"][0]["strength"], 1.5);
  EXPECT_TRUE(j["loras"][0].contains("sha256_first_last_mib"));
  // The same LoRA named in the prompt: same pixels, and not part of the text.
  auto prompted = [&](const std::string& prompt) {
    auto b = base;
    return b.replace(b.find("-p 'a fox'"), 10, "-p '" + prompt + "'");
  };
  const auto tagged =
      sh(prompted("a fox <lora:style:1.5>") + " --out " + (dir / "tagged").string());
  EXPECT_EQ(tagged.code, 0) << tagged.out;
  EXPECT_EQ(frame("tagged"), frame("styled"));
  // `restore --models-dir` says which files found there are not the ones the
  // output was made with: none, until the LoRA is saved again under its name;
  // and which it does not find (the model, given by a path elsewhere).
  const std::string restore = "{ " + std::string(KINORA_BIN_DIR) + "/kinora restore " +
                              (dir / "styled").string() + " --models-dir " +
                              (dir / "models").string() + " 2>&1 >/dev/null; }";  // stderr only
  const auto unchanged = sh(restore).out;
  EXPECT_THAT(unchanged, Not(HasSubstr("is not the file"))) << unchanged;
  EXPECT_THAT(unchanged, Not(HasSubstr("LoRA"))) << unchanged;
  EXPECT_THAT(unchanged, HasSubstr("not found in " + (dir / "models").string() + ": " +
                                   (dir / "styled").string() + ": key 'model'"));
  const auto lora_file = dir / "models" / "loras" / "style.safetensors";
  const auto original = kinora::test::read_bytes(lora_file);
  io::save_safetensors(lora_file, {{"lora_unet_blocks_0_self_attn_q.lora_down.weight", k.down * 31},
                                   {"lora_unet_blocks_0_self_attn_q.lora_up.weight", k.up * 30}});
  EXPECT_THAT(sh(restore).out, HasSubstr("style.safetensors is not the file " +
                                         (dir / "styled").string() + " was made with"));
  fs::remove(lora_file);  // gone: said so too
  EXPECT_THAT(sh(restore).out, HasSubstr("LoRA 'style' not found"));
  std::ofstream(lora_file, std::ios::binary) << original;
  // A prompt's LoRA is a name in loras/, never a path.
  const auto escape = sh(prompted("a fox <lora:../../x>") + " --out " + (dir / "e").string());
  EXPECT_NE(escape.code, 0);
  EXPECT_THAT(escape.out, HasSubstr("not a path"));
  EXPECT_FALSE(fs::exists(dir / "e"));
  // `lora merge`: the exact weights, recorded, and the same pixels as the
  // LoRA at run time of the render.
  const auto merged = dir / "merged.safetensors";
  const auto mr = sh(std::string(KINORA_BIN_DIR) + "/kinora lora merge --model " +
                     fixture("wan21_dit_tiny.safetensors") + " --lora " +
                     (dir / "models" / "loras" / "style.safetensors").string() + ":1.5 --out " +
                     merged.string());
  ASSERT_EQ(mr.code, 0) << mr.out;
  const auto mck = io::Checkpoint::open(merged);
  const auto orig = io::Checkpoint::open(fixture("wan21_dit_tiny.safetensors"));
  EXPECT_TRUE(torch::allclose(mck.get("blocks.0.self_attn.q.weight"),
                              w + 1.5 * torch::matmul(k.up * 30, k.down * 30), 1e-6, 1e-6));
  EXPECT_TRUE(torch::equal(mck.get("blocks.1.ffn.0.weight"), orig.get("blocks.1.ffn.0.weight")));
  EXPECT_EQ(mck.names(), orig.names());
  ASSERT_TRUE(mck.metadata().count("kinora.lora_merge"));
  EXPECT_THAT(mck.metadata().at("kinora.lora_merge"), HasSubstr("style.safetensors"));
  // Merged again: the record keeps the first merge, then the second.
  const auto twice = dir / "twice.safetensors";
  ASSERT_EQ(sh(std::string(KINORA_BIN_DIR) + "/kinora lora merge --model " + merged.string() +
               " --lora " + (dir / "models" / "loras" / "style.safetensors").string() +
               ":-0.5 --out " + twice.string())
                .code,
            0);
  const auto record =
      nlohmann::json::parse(io::Checkpoint::open(twice).metadata().at("kinora.lora_merge"));
  ASSERT_EQ(record.size(), 2u) << record.dump();
  EXPECT_EQ(record[0]["strength"], 1.5);
  EXPECT_EQ(record[1]["strength"], -0.5);
  // By name, from the loras/ folder beside the model, as generate finds it.
  fs::copy_file(fixture("wan21_dit_tiny.safetensors"), dir / "models" / "dit.safetensors");
  const auto by_name = dir / "by_name.safetensors";
  const auto bn = sh(std::string(KINORA_BIN_DIR) + "/kinora lora merge --model " +
                     (dir / "models" / "dit.safetensors").string() + " --lora style:1.5 --out " +
                     by_name.string());
  ASSERT_EQ(bn.code, 0) << bn.out;
  EXPECT_TRUE(torch::equal(io::Checkpoint::open(by_name).get("blocks.0.self_attn.q.weight"),
                           mck.get("blocks.0.self_attn.q.weight")));
  EXPECT_THAT(bn.out, Not(HasSubstr("more than once")));
  // The same LoRA twice (by name and by path): merged twice, and said.
  const auto dup = sh(std::string(KINORA_BIN_DIR) + "/kinora lora merge --model " +
                      (dir / "models" / "dit.safetensors").string() + " --lora style:0.5 --lora " +
                      (dir / "models" / "loras" / "style.safetensors").string() + ":1 --out " +
                      (dir / "dup.safetensors").string());
  ASSERT_EQ(dup.code, 0) << dup.out;
  EXPECT_THAT(dup.out, HasSubstr("LoRA style.safetensors is given more than once: each is "
                                 "merged, so their strengths add up"));
  EXPECT_TRUE(torch::allclose(
      io::Checkpoint::open(dir / "dup.safetensors").get("blocks.0.self_attn.q.weight"),
      mck.get("blocks.0.self_attn.q.weight"), 1e-5, 1e-5));
  // A model elsewhere (ComfyUI's diffusion_models/): the LoRA by name from
  // --models-dir's loras/; without it, the message says to give it.
  fs::create_directories(dir / "comfy" / "diffusion_models");
  const auto elsewhere = dir / "comfy" / "diffusion_models" / "dit.safetensors";
  fs::copy_file(fixture("wan21_dit_tiny.safetensors"), elsewhere);
  const auto via_dir = dir / "via_dir.safetensors";
  const std::string merge_elsewhere = std::string(KINORA_BIN_DIR) + "/kinora lora merge --model " +
                                      elsewhere.string() + " --lora style:1.5 --out " +
                                      via_dir.string();
  const auto lost = sh(merge_elsewhere);
  EXPECT_NE(lost.code, 0);
  EXPECT_THAT(lost.out, HasSubstr("LoRA 'style' not found")) << lost.out;
  EXPECT_THAT(lost.out, HasSubstr("--models-dir")) << lost.out;
  EXPECT_FALSE(fs::exists(via_dir));
  const auto vd = sh(merge_elsewhere + " --models-dir " + (dir / "models").string());
  ASSERT_EQ(vd.code, 0) << vd.out;
  // A LoRA given as the model: named as one.
  const auto lora_as_model =
      sh(std::string(KINORA_BIN_DIR) + "/kinora lora merge --model " +
         (dir / "models" / "loras" / "style.safetensors").string() + " --lora " +
         (dir / "models" / "loras" / "style.safetensors").string() + " --out " +
         (dir / "never.safetensors").string());
  EXPECT_NE(lora_as_model.code, 0);
  EXPECT_THAT(lora_as_model.out,
              HasSubstr("(a LoRA, not a model: give the model its updates apply to)"))
      << lora_as_model.out;
  EXPECT_TRUE(torch::equal(io::Checkpoint::open(via_dir).get("blocks.0.self_attn.q.weight"),
                           mck.get("blocks.0.self_attn.q.weight")));
  auto from_merged = base;
  from_merged.replace(from_merged.find(fixture("wan21_dit_tiny.safetensors")),
                      fixture("wan21_dit_tiny.safetensors").size(), merged.string());
  const auto fm = sh(from_merged + " --out " + (dir / "frommerged").string());
  ASSERT_EQ(fm.code, 0) << fm.out;
  EXPECT_EQ(frame("frommerged"), frame("styled"));
  // inspect, with and without the model.
  const auto ins = sh(std::string(KINORA_BIN_DIR) + "/kinora lora inspect " +
                      (dir / "models" / "loras" / "style.safetensors").string());
  EXPECT_THAT(ins.out, HasSubstr("kohya, 1 updates, rank 2"));
  const auto insm = sh(std::string(KINORA_BIN_DIR) + "/kinora lora inspect -v " +
                       (dir / "models" / "loras" / "style.safetensors").string() + " --model " +
                       fixture("wan21_dit_tiny.safetensors"));
  EXPECT_THAT(insm.out, HasSubstr("→ blocks.0.self_attn.q"));
  // The model by name under --models-dir, as generate finds it.
  fs::create_directories(dir / "models" / "diffusion_models");
  fs::copy_file(fixture("wan21_dit_tiny.safetensors"),
                dir / "models" / "diffusion_models" / "tiny.safetensors");
  const auto model_by_name =
      sh(std::string(KINORA_BIN_DIR) + "/kinora lora inspect style --model tiny" +
         " --models-dir " + (dir / "models").string());
  EXPECT_EQ(model_by_name.code, 0) << model_by_name.out;
  EXPECT_THAT(model_by_name.out, HasSubstr("1 of 1 updates matched")) << model_by_name.out;
  const auto no_model = sh(std::string(KINORA_BIN_DIR) + "/kinora lora merge --model nomodel" +
                           " --lora style --models-dir " + (dir / "models").string() + " --out " +
                           (dir / "never.safetensors").string());
  EXPECT_NE(no_model.code, 0);
  EXPECT_THAT(no_model.out, HasSubstr("lora merge --model: key 'model': 'nomodel' not found"))
      << no_model.out;
  // A LoRA that is not there is named with where it was looked for.
  const auto missing = sh(base + " --lora nothere --out " + (dir / "x").string());
  EXPECT_NE(missing.code, 0);
  EXPECT_THAT(missing.out, HasSubstr("nothere"));
  EXPECT_FALSE(fs::exists(dir / "x"));
}

// A damaged LoRA is refused by the render, the checks before a batch or a
// studio job, lora merge and lora inspect, with and without the model.
TEST(LoraCli, ADamagedLoraIsRefusedByEveryCommand) {
  TempDir dir;
  auto m = diffusion::WanModel::load(fixture("wan21_dit_tiny.safetensors"));
  const auto w = weight_of(m, "blocks.0.self_attn.q");
  const auto k = known_for(w.size(0), w.size(1));
  const auto bad = dir / "bad.safetensors";
  io::save_safetensors(bad, {{"blocks.0.self_attn.k.lora_down.weight", k.down},
                             {"blocks.0.self_attn.k.lora_up.weight", k.up},
                             {"blocks.0.self_attn.q.lora_down.weight", k.down}});
  const std::string why =
      "bad.safetensors: a damaged LoRA: 'blocks.0.self_attn.q.lora_down.weight' has no "
      "'blocks.0.self_attn.q.lora_up.weight' beside it";
  const std::string bin = KINORA_BIN_DIR;
  const std::string model = " --model " + fixture("wan21_dit_tiny.safetensors");
  for (const std::string& cmd :
       {"/kinora lora inspect " + bad.string(), "/kinora lora inspect " + bad.string() + model,
        "/kinora lora merge" + model + " --lora " + bad.string() + " --out " +
            (dir / "merged.safetensors").string(),
        "/kinora generate -p 'a fox'" + model + " --vae " + fixture("wan21_vae_tiny.safetensors") +
            " --text-encoder " + fixture("umt5_enc_tiny.safetensors") + " --tokenizer " +
            fixture("spm_tiny.model") + " --width 32 --height 32 --frames 1 --steps 1 --lora " +
            bad.string() + " --out " + (dir / "out.png").string()}) {
    const auto r = sh(bin + cmd);
    EXPECT_NE(r.code, 0) << cmd << "\n" << r.out;
    EXPECT_THAT(r.out, HasSubstr(why)) << cmd;
  }
  EXPECT_FALSE(fs::exists(dir / "merged.safetensors"));
  EXPECT_FALSE(fs::exists(dir / "out.png"));
  auto p = kinora::test::tiny_wan_preset();
  p.prompt = "a fox";
  p.loras = {{bad.string(), 1.0}};
  EXPECT_THAT(error_of([&] { pipeline::check_loras(p); }), HasSubstr(why));
}

// A render whose LoRA overflows a weight names the LoRA and the layer, not the
// model file; one that diverges with finite weights names the LoRAs applied.
TEST(LoraPipeline, AnOverflowingLoraIsBlamedNotTheModel) {
  TempDir dir;
  auto m = diffusion::WanModel::load(fixture("wan21_dit_tiny.safetensors"));
  write_q_lora(dir / "huge.safetensors", m, 1e20);
  // Finite weights (each ΔW near 1e18), activations past float32's range.
  Tensors steep;
  for (const char* ffn : {"blocks.0.ffn.0", "blocks.0.ffn.2", "blocks.1.ffn.0", "blocks.1.ffn.2"}) {
    const auto w = weight_of(m, ffn);
    const auto k = known_for(w.size(0), w.size(1));
    steep.push_back({std::string(ffn) + ".lora_down.weight", k.down * 1e10});
    steep.push_back({std::string(ffn) + ".lora_up.weight", k.up * 1e10});
  }
  io::save_safetensors(dir / "steep.safetensors", steep);
  auto p = kinora::test::tiny_wan_preset();
  p.prompt = "a fox";
  p.width = 32, p.height = 32, p.frames = 1, p.steps = 1, p.precision = "fp32";
  pipeline::Pipeline pipe;
  for (const std::string mode : {"merged", "runtime"}) {
    p.lora_mode = mode;
    p.loras = {{(dir / "huge.safetensors").string(), 1.0}};
    const auto msg = error_of([&] { pipe.generate(p); });
    EXPECT_THAT(msg,
                HasSubstr("huge.safetensors: its update for blocks.0.self_attn.q at strength 1 "
                          "makes that layer's weight NaN or infinite"))
        << mode;
    EXPECT_THAT(msg, Not(HasSubstr("wan21_dit_tiny"))) << mode;
    p.loras = {{(dir / "steep.safetensors").string(), 1.0}};
    EXPECT_THAT(error_of([&] { pipe.generate(p); }),
                HasSubstr("(its weights are finite, with the LoRAs steep.safetensors at 1.0 " +
                          std::string(mode == "runtime" ? "applied at run time" : "merged") +
                          ": render without them to see whether one is the cause)"))
        << mode;
  }
  // The model is whole again for the next render.
  p.loras.clear();
  EXPECT_NO_THROW(pipe.generate(p));
}

// Each render says what its LoRAs match, one that reuses the LoRAs applied for
// the render before it too (a studio queue's second job, a sweep's next cell),
// and says a LoRA at strength 0 is not applied.
TEST(LoraPipeline, EveryRenderReportsItsLorasAndThoseOff) {
  TempDir dir;
  auto m = diffusion::WanModel::load(fixture("wan21_dit_tiny.safetensors"));
  write_q_lora(dir / "style.safetensors", m, 1);
  auto p = kinora::test::tiny_wan_preset();
  p.prompt = "a fox";
  p.width = 32, p.height = 32, p.frames = 1, p.steps = 1, p.precision = "fp32";
  p.loras = {{(dir / "style.safetensors").string(), 1.0}};
  pipeline::Pipeline pipe;
  auto notes = [&](const pipeline::Preset& preset) {
    std::string out;
    pipeline::RunCallbacks cb;
    cb.on_message = [&](const std::string& note) { out.append(note).append("\n"); };
    pipe.generate(preset, cb);
    return out;
  };
  const std::string matched = "LoRA style.safetensors: original, rank 2; 1 of 1 updates matched";
  EXPECT_THAT(notes(p), HasSubstr(matched + "\n"));
  EXPECT_THAT(notes(p), HasSubstr(matched + "\n"));  // the same LoRAs, still on the model
  p.loras[0].strength = 0;
  EXPECT_THAT(notes(p), HasSubstr(matched + "; strength 0: not applied\n"));
  EXPECT_THAT(notes(p), HasSubstr(matched + "; strength 0: not applied\n"));
  // A pair's experts: off on one, or on both.
  fs::copy_file(fixture("wan21_dit_tiny.safetensors"), dir / "high_noise.safetensors");
  fs::copy_file(fixture("wan21_dit_tiny.safetensors"), dir / "low_noise.safetensors");
  p.model = (dir / "high_noise.safetensors").string();
  p.model2 = (dir / "low_noise.safetensors").string();
  p.loras = {{(dir / "style.safetensors").string(), 1.0, 0.0}};
  EXPECT_THAT(notes(p), HasSubstr("; strength 0 on the low-noise expert: not applied to it\n"));
  p.loras = {{(dir / "style.safetensors").string(), 0.0, 0.0}};
  EXPECT_THAT(notes(p), HasSubstr(matched + "; strength 0: not applied\n"));
}

// One program renders job after job (a batch, the studio's queue): a job on
// another model after one with LoRAs, and a job after one whose second LoRA
// was refused, render as a fresh program renders them.
TEST(LoraPipeline, AJobAfterOneWithLorasRendersAsAFreshProgramDoes) {
  TempDir dir;
  auto m = diffusion::WanModel::load(fixture("wan21_dit_tiny.safetensors"));
  write_q_lora(dir / "style.safetensors", m, 1);
  const auto k = known_for(8, 8);
  io::save_safetensors(dir / "bad.safetensors",
                       {{"blocks.0.self_attn.q.lora_down.weight", k.down}});
  fs::copy_file(fixture("wan21_dit_tiny.safetensors"), dir / "other.safetensors");
  auto with_lora = kinora::test::tiny_wan_preset();
  with_lora.prompt = "a fox";
  with_lora.width = 32, with_lora.height = 32, with_lora.frames = 1, with_lora.steps = 1;
  with_lora.precision = "fp32";
  with_lora.seed = 3;
  with_lora.loras = {{(dir / "style.safetensors").string(), 1.0}};
  auto other = with_lora;
  other.model = (dir / "other.safetensors").string();
  other.loras.clear();
  auto fresh = [](const pipeline::Preset& p) { return pipeline::Pipeline().generate(p).frames; };
  for (const std::string mode : {"merged", "runtime"}) {
    with_lora.lora_mode = other.lora_mode = mode;
    pipeline::Pipeline pipe;
    pipe.generate(with_lora);
    EXPECT_TRUE(torch::equal(pipe.generate(other).frames, fresh(other))) << mode;
    auto other_lora = other;
    other_lora.loras = with_lora.loras;
    EXPECT_TRUE(torch::equal(pipe.generate(other_lora).frames, fresh(other_lora))) << mode;
    // The second LoRA refused: the job fails, and the next has only its own.
    auto two = with_lora;
    two.loras.push_back({(dir / "bad.safetensors").string(), 1.0});
    EXPECT_THAT(error_of([&] { pipe.generate(two); }), HasSubstr("bad.safetensors: a damaged LoRA"))
        << mode;
    auto plain = with_lora;
    plain.loras.clear();
    EXPECT_TRUE(torch::equal(pipe.generate(plain).frames, fresh(plain))) << mode;
    EXPECT_TRUE(torch::equal(pipe.generate(with_lora).frames, fresh(with_lora))) << mode;
  }
}

// A batch's output is stale, not done, when its preset changed since, and
// when a LoRA it was made with was saved again under its name (trained
// again): skipped, saying why, and listed so by --status.
TEST(LoraCli, ABatchOutputOfALoraSavedAgainIsStale) {
  TempDir dir;
  auto m = diffusion::WanModel::load(fixture("wan21_dit_tiny.safetensors"));
  write_q_lora(dir / "style.safetensors", m, 1);
  auto list = kinora::test::chain_list(dir.path(), 3);
  list[1]["loras"] = {{{"path", (dir / "style.safetensors").string()}, {"strength", 1.0}}};
  std::ofstream(dir / "list.json") << list.dump();
  const std::string batch =
      std::string(KINORA_BIN_DIR) + "/kinora batch " + (dir / "list.json").string();
  auto r = sh(batch);
  ASSERT_EQ(r.code, 0) << r.out;
  list[2]["prompt"] = "another";
  std::ofstream(dir / "list.json") << list.dump();
  write_q_lora(dir / "style.safetensors", m, 2);
  r = sh(batch);
  EXPECT_EQ(r.code, 0) << r.out;
  EXPECT_THAT(r.out, HasSubstr("out0.png (exists)"));
  EXPECT_THAT(r.out, HasSubstr("out1.png (exists, " + (dir / "style.safetensors").string() +
                               " is not the file it was made with (its contents differ): delete "
                               "it and its .json to render it again)"));
  EXPECT_THAT(r.out, HasSubstr("out2.png (exists, made from other settings than the preset's now"));
  r = sh(batch + " --status");
  EXPECT_THAT(r.out, HasSubstr("1 done, 0 missing, 0 failed, 0 invalid, 2 stale")) << r.out;
  EXPECT_THAT(r.out, HasSubstr("style.safetensors is not the file it was made with"));
}

// lora merge writes what a render applies: a text encoder's update that a
// FLUX render leaves out is reported, not refused (SDXL's, which a render
// applies, is refused); a LoRA at strength 0 is not merged nor recorded, and
// with every LoRA at 0 nothing is written.
TEST(LoraCli, MergeLeavesOutWhatARenderLeavesOut) {
  TempDir dir;
  const std::string merge = std::string(KINORA_BIN_DIR) + "/kinora lora merge --model ";
  auto flux = diffusion::FluxModel::load(fixture("flux1_dev_tiny.safetensors"));
  const int64_t h = flux.config().hidden_size;
  const auto kk = known_for(h, h, 2, 5);
  const auto clip = known_for(8, 8);
  io::save_safetensors(
      dir / "flux.safetensors",
      {{"double_blocks.0.img_attn.proj.lora_down.weight", kk.down},
       {"double_blocks.0.img_attn.proj.lora_up.weight", kk.up},
       {"lora_te1_text_model_encoder_layers_0_mlp_fc1.lora_down.weight", clip.down},
       {"lora_te1_text_model_encoder_layers_0_mlp_fc1.lora_up.weight", clip.up}});
  const auto fm = sh(merge + fixture("flux1_dev_tiny.safetensors") + " --lora " +
                     (dir / "flux.safetensors").string() + " --out " +
                     (dir / "flux_merged.safetensors").string());
  EXPECT_EQ(fm.code, 0) << fm.out;
  EXPECT_THAT(fm.out, HasSubstr("1 of 2 updates matched (1 not: 1 a text encoder's, not applied "
                                "to this model"));
  const auto sm = sh(merge + fixture("sdxl_unet_tiny.safetensors") + " --lora " +
                     (dir / "flux.safetensors").string() + " --out " +
                     (dir / "sdxl_merged.safetensors").string());
  EXPECT_NE(sm.code, 0) << sm.out;
  EXPECT_THAT(sm.out, HasSubstr("1 of its updates are for text encoders, which lora merge does "
                                "not write"));
  EXPECT_FALSE(fs::exists(dir / "sdxl_merged.safetensors"));
  // Strength 0.
  auto wan = diffusion::WanModel::load(fixture("wan21_dit_tiny.safetensors"));
  const auto q = weight_of(wan, "blocks.0.self_attn.q");
  const auto k = known_for(q.size(0), q.size(1));
  io::save_safetensors(dir / "a.safetensors", {{"blocks.0.self_attn.q.lora_down.weight", k.down},
                                               {"blocks.0.self_attn.q.lora_up.weight", k.up}});
  io::save_safetensors(dir / "b.safetensors", {{"blocks.0.self_attn.k.lora_down.weight", k.down},
                                               {"blocks.0.self_attn.k.lora_up.weight", k.up}});
  const std::string wan_merge = merge + fixture("wan21_dit_tiny.safetensors") + " --lora " +
                                (dir / "a.safetensors").string() + ":0";
  const auto off = sh(wan_merge + " --out " + (dir / "off.safetensors").string());
  EXPECT_NE(off.code, 0);
  EXPECT_THAT(off.out, HasSubstr("every LoRA is at strength 0, so the model would be written "
                                 "unchanged; nothing was written"));
  EXPECT_FALSE(fs::exists(dir / "off.safetensors"));
  const auto one = sh(wan_merge + " --lora " + (dir / "b.safetensors").string() + " --out " +
                      (dir / "one.safetensors").string());
  ASSERT_EQ(one.code, 0) << one.out;
  EXPECT_THAT(one.out, HasSubstr("a.safetensors: original, rank 2; 1 of 1 updates matched; "
                                 "strength 0: not merged"));
  const auto out = io::Checkpoint::open(dir / "one.safetensors");
  EXPECT_TRUE(torch::equal(out.get("blocks.0.self_attn.q.weight"), q));
  const auto record = nlohmann::json::parse(out.metadata().at("kinora.lora_merge"));
  ASSERT_EQ(record.size(), 1u) << record.dump();
  EXPECT_EQ(record[0]["file"], "b.safetensors");
}

// Through the pipeline on the fixture chain as a Wan 2.2 pair (the tiny DiT as
// both experts): each expert takes its own strength, a LoRA at 0 on one is left
// out of it, strength_low needs a pair, and lora_mode runtime gives the frames
// merged gives.
TEST(LoraPipeline, PairExpertsTakeTheirOwnStrengthsAndRunTimeEqualsMerged) {
  TempDir dir;
  fs::copy_file(fixture("wan21_dit_tiny.safetensors"), dir / "high_noise.safetensors");
  fs::copy_file(fixture("wan21_dit_tiny.safetensors"), dir / "low_noise.safetensors");
  auto m = diffusion::WanModel::load(fixture("wan21_dit_tiny.safetensors"));
  const auto w = weight_of(m, "blocks.0.self_attn.q");
  const auto k = known_for(w.size(0), w.size(1));
  io::save_safetensors(dir / "style.safetensors",
                       {{"lora_unet_blocks_0_self_attn_q.lora_down.weight", k.down * 30},
                        {"lora_unet_blocks_0_self_attn_q.lora_up.weight", k.up * 30}});
  pipeline::Preset p;
  p.prompt = "a fox";
  p.model = (dir / "high_noise.safetensors").string();
  p.model2 = (dir / "low_noise.safetensors").string();
  p.vae = fixture("wan21_vae_tiny.safetensors");
  p.text_encoder = fixture("umt5_enc_tiny.safetensors");
  p.tokenizer = fixture("spm_tiny.model");
  p.width = 32, p.height = 32, p.frames = 5, p.steps = 4, p.seed = 3, p.precision = "fp32";
  p.shift = 1;  // the steps on both sides of the experts' boundary
  pipeline::Pipeline pipe;
  auto frames = [&](std::vector<pipeline::LoraRef> loras, const std::string& mode = "merged") {
    auto q = p;
    q.loras = std::move(loras);
    q.lora_mode = mode;
    return pipe.generate(pipeline::Preset::from_json(q.to_json(), "test")).frames;
  };
  const auto plain = frames({});
  const auto both = frames({{(dir / "style.safetensors").string(), 1.5}});
  const auto high_only = frames({{(dir / "style.safetensors").string(), 1.5, 0.0}});
  const auto low_only = frames({{(dir / "style.safetensors").string(), 0.0, 1.5}});
  EXPECT_FALSE(torch::equal(plain, both));
  EXPECT_FALSE(torch::equal(both, high_only));
  EXPECT_FALSE(torch::equal(both, low_only));
  EXPECT_FALSE(torch::equal(high_only, low_only));
  // Off on both experts is the base model, bit for bit.
  EXPECT_TRUE(torch::equal(plain, frames({{(dir / "style.safetensors").string(), 0.0, 0.0}})));
  // Run time: the same frames, up to float rounding of a pixel level.
  const auto rt = frames({{(dir / "style.safetensors").string(), 1.5, 0.5}}, "runtime");
  const auto mg = frames({{(dir / "style.safetensors").string(), 1.5, 0.5}}, "merged");
  EXPECT_LE((rt.to(torch::kInt) - mg.to(torch::kInt)).abs().max().item<int>(), 1);
  // strength_low needs a pair.
  auto single = p;
  single.model2.clear();
  single.loras = {{(dir / "style.safetensors").string(), 1.0, 0.5}};
  EXPECT_THAT(error_of([&] { pipe.generate(single); }), HasSubstr("strength_low"));
  // The preset's keys round-trip; a bad lora_mode is refused by name.
  auto j = single.to_json();
  EXPECT_EQ(pipeline::Preset::from_json(j, "t").loras[0].strength_low, 0.5);
  j["lora_mode"] = "lazy";
  EXPECT_THAT(error_of([&] { pipeline::Preset::from_json(j, "t.json"); }), HasSubstr("lora_mode"));
}
