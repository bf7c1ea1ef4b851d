// Sweeps (render/sweep.h): the axes a user types, the cells and their names,
// the contact sheet, and whole sweeps on the fixture chain (random weights)
// whose cells are the files single renders make.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <fstream>
#include <set>

#include "io/safetensors.h"
#include "media/output.h"
#include "pipeline/pipeline.h"
#include "render/render.h"
#include "render/sweep.h"
#include "test_util.h"

using namespace kinora;
using kinora::test::error_of;
using kinora::test::fixture;
using kinora::test::read_bytes;
using kinora::test::TempDir;
using pipeline::Preset;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
namespace fs = std::filesystem;

namespace {
Preset tiny_image(const fs::path& out) {
  Preset p;
  p.prompt = "a red circle moving left on a blue background";
  p.model = fixture("wan21_dit_tiny.safetensors");
  p.vae = fixture("wan21_vae_tiny.safetensors");
  p.text_encoder = fixture("umt5_enc_tiny.safetensors");
  p.tokenizer = fixture("spm_tiny.model");
  p.width = 32, p.height = 32, p.frames = 1, p.steps = 2, p.seed = 11, p.guidance = 2;
  p.output = out.string();
  return Preset::from_json(p.to_json(), "test");
}
}  // namespace

TEST(Sweep, AxesAreParsedAsTyped) {
  auto a = render::parse_sweep_axis("seed=1,2, 3");
  EXPECT_EQ(a.key, "seed");
  EXPECT_THAT(a.values, ElementsAre("1", "2", "3"));
  // A LoRA axis gets its no-LoRA column first, unless it has one.
  EXPECT_THAT(render::parse_sweep_axis("lora=0.5,1").values, ElementsAre("off", "0.5", "1"));
  EXPECT_THAT(render::parse_sweep_axis("lora=0,1").values, ElementsAre("0", "1"));
  EXPECT_THAT(render::parse_sweep_axis("lora:style=1,off").values, ElementsAre("1", "off"));
  // A LoRA axis is labelled by its LoRA, so two read apart.
  EXPECT_EQ(render::parse_sweep_axis("lora:style=1").label, "style");
  EXPECT_EQ(render::parse_sweep_axis("lora:loras/x.safetensors=1").label, "x");
  EXPECT_EQ(render::parse_sweep_axis("lora=1").label, "lora");
  // Prompts hold commas: their values are split at '|'.
  EXPECT_THAT(render::parse_sweep_axis("prompt=a cat, sitting|a dog").values,
              ElementsAre("a cat, sitting", "a dog"));
  EXPECT_THAT(error_of([] { render::parse_sweep_axis("width=64,128"); }),
              HasSubstr("'width' cannot be swept"));
  EXPECT_THAT(error_of([] { render::parse_sweep_axis("seed=1,1"); }), HasSubstr("given twice"));
  // The same number written otherwise is the same value; prompts are text.
  EXPECT_THAT(error_of([] { render::parse_sweep_axis("guidance=1,1.0"); }),
              HasSubstr("'1.0' is given twice (as '1')"));
  EXPECT_THAT(error_of([] { render::parse_sweep_axis("lora:x=0.5,.5"); }),
              HasSubstr("given twice"));
  EXPECT_EQ(render::parse_sweep_axis("prompt=1|1.0").values.size(), 2u);
  EXPECT_THAT(error_of([] { render::parse_sweep_axis("seed=1,,2"); }), HasSubstr("empty value"));
  EXPECT_THAT(error_of([] { render::parse_sweep_axis("seed"); }), HasSubstr("KEY=V1,V2"));
  EXPECT_THAT(error_of([] { render::parse_sweep_axis("lora=1,strong"); }),
              HasSubstr("not a strength"));
  EXPECT_THAT(error_of([] { render::parse_sweep_axis("lora=1e9"); }), HasSubstr("not a strength"));
}

TEST(Sweep, CellsAreEveryCombinationNamedByTheirValues) {
  TempDir dir;
  const auto base = tiny_image(dir / "fox.png");
  const auto plan = render::plan_sweep(
      base, {render::parse_sweep_axis("guidance=1,2,3"), render::parse_sweep_axis("seed=5,6")});
  EXPECT_EQ(plan.columns, 3);
  EXPECT_EQ(plan.rows, 2);
  ASSERT_EQ(plan.cells.size(), 6u);
  EXPECT_EQ(plan.sheet, dir / "fox-sweep-guidance-seed.png");
  // The first axis runs fastest (along a row).
  EXPECT_EQ(fs::path(plan.cells[0].preset.output), dir / "fox-guidance=1-seed=5.png");
  EXPECT_EQ(fs::path(plan.cells[4].preset.output), dir / "fox-guidance=2-seed=6.png");
  EXPECT_EQ(plan.cells[4].preset.guidance, 2);
  EXPECT_EQ(plan.cells[4].preset.seed, 6);
  EXPECT_EQ(plan.cells[4].preset.steps, base.steps);
  // A value the preset refuses names the axis.
  EXPECT_THAT(error_of([&] { render::plan_sweep(base, {render::parse_sweep_axis("steps=2,0")}); }),
              HasSubstr("sweep axis steps: key 'steps'"));
  EXPECT_THAT(error_of([&] { render::plan_sweep(base, {render::parse_sweep_axis("lora=1")}); }),
              HasSubstr("exactly one LoRA"));
  EXPECT_THAT(error_of([&] {
                render::plan_sweep(base, {render::parse_sweep_axis("seed=1,2"),
                                          render::parse_sweep_axis("seed=3")});
              }),
              HasSubstr("given twice"));
  // lora:NAME adds a LoRA the preset lacks; "off" leaves it out.
  const auto lp = render::plan_sweep(base, {render::parse_sweep_axis("lora:style=0.5")});
  ASSERT_EQ(lp.cells.size(), 2u);
  EXPECT_TRUE(lp.cells[0].preset.loras.empty());
  ASSERT_EQ(lp.cells[1].preset.loras.size(), 1u);
  EXPECT_EQ(lp.cells[1].preset.loras[0].path, "style");
  EXPECT_EQ(lp.cells[1].preset.loras[0].strength, 0.5);
  EXPECT_EQ(fs::path(lp.cells[0].preset.output), dir / "fox-style=off.png");
  // A LoRA the preset has twice: its "off" column would keep the other on.
  auto twice = base;
  twice.loras = {{"ink", 0.5}, {"ink", -0.3}};
  EXPECT_THAT(
      error_of([&] { render::plan_sweep(twice, {render::parse_sweep_axis("lora:ink=0.2")}); }),
      HasSubstr("the preset has that LoRA 2 times (ink at 0.5, ink at -0.3)"));
  // Two LoRAs, each swept: an axis finds its own after the other's "off";
  // "lora" names the preset's one LoRA, so with a second axis on it it is
  // the same LoRA twice.
  auto two = base;
  two.loras = {{"ink", 0.5}, {"sun", 0.7}};
  const auto both = render::plan_sweep(
      two, {render::parse_sweep_axis("lora:ink=1"), render::parse_sweep_axis("lora:sun=0.2")});
  ASSERT_EQ(both.cells.size(), 4u);
  ASSERT_EQ(both.cells[0].preset.loras.size(), 0u);  // ink off, sun off
  ASSERT_EQ(both.cells[3].preset.loras.size(), 2u);
  EXPECT_EQ(both.cells[3].preset.loras[0].strength, 1);
  EXPECT_EQ(both.cells[3].preset.loras[1].strength, 0.2);
  ASSERT_EQ(both.cells[2].preset.loras.size(), 1u);  // ink off, sun 0.2
  EXPECT_EQ(both.cells[2].preset.loras[0].path, "sun");
  EXPECT_EQ(both.cells[2].preset.loras[0].strength, 0.2);
  auto one = base;
  one.loras = {{"ink", 0.5}};
  EXPECT_THAT(error_of([&] {
                render::plan_sweep(one, {render::parse_sweep_axis("lora:ink=1"),
                                         render::parse_sweep_axis("lora=0.5")});
              }),
              HasSubstr("two axes name the LoRA ink"));
  // The same file named two ways ("ink", "ink.safetensors", a path to it):
  // one LoRA, so two axes on it are refused too, and an axis by another name
  // sweeps the preset's entry rather than adding the file again.
  fs::create_directories(dir / "loras");
  const auto ink = dir / "loras" / "ink.safetensors";
  io::save_safetensors(ink, {{"x.lora_down.weight", torch::ones({1, 1})},
                             {"x.lora_up.weight", torch::ones({1, 1})}});
  auto found = one;
  found.models_dir = dir.path().string();
  EXPECT_THAT(error_of([&] {
                render::plan_sweep(found, {render::parse_sweep_axis("lora:ink=1"),
                                           render::parse_sweep_axis("lora:ink.safetensors=0")});
              }),
              HasSubstr("two axes name the LoRA ink"));
  const auto by_path =
      render::plan_sweep(found, {render::parse_sweep_axis("lora:" + ink.string() + "=0.2")});
  ASSERT_EQ(by_path.cells.size(), 2u);
  EXPECT_TRUE(by_path.cells[0].preset.loras.empty()) << "off is off";
  ASSERT_EQ(by_path.cells[1].preset.loras.size(), 1u);
  EXPECT_EQ(by_path.cells[1].preset.loras[0].strength, 0.2);
  found.loras.clear();
  EXPECT_THAT(error_of([&] {
                render::plan_sweep(found,
                                   {render::parse_sweep_axis("lora:ink=1"),
                                    render::parse_sweep_axis("lora:" + ink.string() + "=1")});
              }),
              HasSubstr("two axes name the LoRA " + ink.string()));
  // Values a file name cannot hold apart (cut, or other characters) still get
  // names of their own.
  const auto pp = render::plan_sweep(
      base,
      {render::parse_sweep_axis("prompt=a red circle moving left on a blue background today|"
                                "a red circle moving left on a blue background tonight|红|蓝")});
  std::set<std::string> names;
  for (const auto& c : pp.cells) names.insert(c.preset.output);
  EXPECT_EQ(names.size(), 4u);
  // More than 256 cells: refused, saying how many.
  EXPECT_THAT(error_of([&] {
                render::plan_sweep(
                    base,
                    {render::parse_sweep_axis("seed=1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17"),
                     render::parse_sweep_axis("steps=1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16")});
              }),
              HasSubstr("272 cells"));
  // A preset read from a relative folder: the cells land beside its output,
  // the folder not added twice.
  auto rel = base;
  rel.base_dir = "sw";
  rel.output = "p.png";
  const auto rp = render::plan_sweep(rel, {render::parse_sweep_axis("seed=1,2")});
  EXPECT_EQ(rp.cells[0].preset.output_path(), fs::path("sw") / "p-seed=1.png");
  EXPECT_EQ(rp.sheet, fs::path("sw") / "p-sweep-seed.png");
}

TEST(Sweep, ContactSheetPlacesEveryCellAndDrawsTheLabels) {
  TempDir dir;
  const auto plan = render::plan_sweep(
      tiny_image(dir / "x.png"),
      {render::parse_sweep_axis("seed=1,2"), render::parse_sweep_axis("guidance=1,2,3")});
  std::vector<torch::Tensor> clips;
  for (int i = 0; i < 6; ++i)
    clips.push_back(torch::full({2, 32, 32, 3}, 40 * i + 10, torch::kUInt8));
  const auto sheet = render::contact_sheet(plan, clips);
  ASSERT_EQ(sheet.dim(), 4);
  EXPECT_EQ(sheet.size(0), 2);
  EXPECT_EQ(sheet.size(1) % 2, 0);
  EXPECT_EQ(sheet.size(2) % 2, 0);
  // Every cell's value appears once as a solid 32×32 block.
  for (int i = 0; i < 6; ++i) {
    const auto hits = (sheet[0].select(2, 0) == 40 * i + 10).sum().item<int64_t>();
    EXPECT_EQ(hits, 32 * 32) << "cell " << i;
  }
  // Labels: light pixels outside the cells.
  EXPECT_GT((sheet[0] >= 200).sum().item<int64_t>(), 30);
  EXPECT_THAT(error_of([&] { render::contact_sheet(plan, {clips[0]}); }), HasSubstr("one clip"));
}

// The fixture chain, one frame: two seeds by two guidance scales. Each cell is
// the file a single render of its preset makes; the sheet holds them all; a
// sweep run again reuses the cells; a foreign file where a cell goes stops it
// before anything is rendered.
TEST(Sweep, CellsAreTheFilesSingleRendersMakeAndAreReused) {
  TempDir dir;
  const auto base = tiny_image(dir / "fox.png");
  const auto plan = render::plan_sweep(
      base, {render::parse_sweep_axis("seed=1,2"), render::parse_sweep_axis("guidance=1,3")});
  pipeline::Pipeline pipe;
  auto r = render::run_sweep(pipe, plan);
  EXPECT_EQ(r.rendered, 4);
  ASSERT_EQ(r.cells.size(), 4u);
  const auto sheet = media::read_frames(r.sheet);
  ASSERT_EQ(sheet.size(0), 1);
  EXPECT_GT(sheet.size(2), 2 * 32);
  // Cell 3 (seed 2, guidance 3) as `kinora render` of its restored preset makes it.
  auto again = Preset::restored(media::read_embedded_parameters(r.cells[3]), "cell");
  EXPECT_EQ(again.seed, 2);
  EXPECT_EQ(again.guidance, 3);
  again.model = base.model, again.vae = base.vae, again.text_encoder = base.text_encoder;
  again.tokenizer = base.tokenizer;
  again.output = (dir / "single.png").string();
  render::render(pipe, again);
  EXPECT_TRUE(torch::equal(media::read_frames(dir / "single.png"), media::read_frames(r.cells[3])));
  // The sheet restores to a preset too, and records the sweep.
  const auto meta = media::read_embedded_parameters(r.sheet);
  EXPECT_EQ(meta["sweep"]["cells"].size(), 4u);
  EXPECT_TRUE(media::is_kinora_parameters(meta));

  // Run again: every cell reused, the sweep's own sheet made anew.
  r = render::run_sweep(pipe, plan);
  EXPECT_EQ(r.rendered, 0);
  EXPECT_EQ(r.reused, 4);
  EXPECT_TRUE(fs::exists(r.sheet));
  // A sweep of the preset over other keys has a sheet of its own; one over
  // the same keys with other values would write this sheet's name: refused,
  // and the sheet left as it was.
  const auto sheet_bytes = read_bytes(r.sheet);
  EXPECT_EQ(r.sheet, dir / "fox-sweep-seed-guidance.png");
  const auto seeds_only = render::plan_sweep(base, {render::parse_sweep_axis("seed=1,2")});
  EXPECT_EQ(seeds_only.sheet, dir / "fox-sweep-seed.png");
  const auto other_values = render::plan_sweep(
      base, {render::parse_sweep_axis("seed=1,2"), render::parse_sweep_axis("guidance=1,5")});
  EXPECT_THAT(error_of([&] { render::run_sweep(pipe, other_values); }),
              HasSubstr("fox-sweep-seed-guidance.png"));
  EXPECT_EQ(read_bytes(r.sheet), sheet_bytes);
  // A file of the sheet's name that is not a sweep's sheet: refused.
  fs::remove(r.sheet), fs::remove(r.sheet.string() + ".json");
  { std::ofstream(r.sheet) << "mine"; }
  EXPECT_THAT(error_of([&] { render::run_sweep(pipe, plan); }),
              HasSubstr("fox-sweep-seed-guidance.png"));
  fs::remove(r.sheet);

  // A preset without a seed resumes with the seed its cells were made with.
  auto unseeded = base;
  unseeded.seed = pipeline::kRandomSeed;
  unseeded.output = (dir / "free.png").string();
  const auto first = render::plan_sweep(unseeded, {render::parse_sweep_axis("guidance=1,3")});
  render::run_sweep(pipe, first);
  const auto resumed = render::plan_sweep(unseeded, {render::parse_sweep_axis("guidance=1,3")});
  EXPECT_EQ(resumed.cells[0].preset.seed, first.cells[0].preset.seed);
  EXPECT_EQ(render::run_sweep(pipe, resumed).reused, 2);
  // Its cells deleted and its sheet left: the seed the sheet records, the
  // cells made again and the sweep's own sheet replaced.
  for (const auto& c : resumed.cells)
    fs::remove(c.preset.output_path()), fs::remove(c.preset.output_path().string() + ".json");
  const auto from_sheet = render::plan_sweep(unseeded, {render::parse_sweep_axis("guidance=1,3")});
  EXPECT_EQ(from_sheet.cells[0].preset.seed, first.cells[0].preset.seed);
  EXPECT_EQ(render::run_sweep(pipe, from_sheet).rendered, 2);

  // The same cells asked for with FP8 products are not those renders; an FP8
  // axis sweeps the two side by side.
  auto fp8 = plan;
  for (auto& c : fp8.cells) c.preset.fp8 = true;
  EXPECT_THAT(error_of([&] { render::run_sweep(pipe, fp8); }),
              HasSubstr("does not hold this cell's render"));
  TempDir both;
  const auto by_fp8 = render::plan_sweep(tiny_image(both / "fox.png"),
                                         {render::parse_sweep_axis("fp8=false,true")});
  r = render::run_sweep(pipe, by_fp8);
  EXPECT_EQ(r.rendered, 2);
  EXPECT_FALSE(Preset::restored(media::read_embedded_parameters(r.cells[0]), "c").fp8);
  EXPECT_TRUE(Preset::restored(media::read_embedded_parameters(r.cells[1]), "c").fp8);
  EXPECT_FALSE(torch::equal(media::read_frames(r.cells[0]), media::read_frames(r.cells[1])));
  EXPECT_EQ(render::run_sweep(pipe, by_fp8).reused, 2);

  // A model file saved again under its name since the cells were made: its
  // cells are not reused, and not replaced unasked.
  TempDir changed;
  fs::copy_file(base.model, changed / "dit.safetensors");
  auto mine = tiny_image(changed / "fox.png");
  mine.model = (changed / "dit.safetensors").string();
  const auto by_seed = render::plan_sweep(mine, {render::parse_sweep_axis("seed=1")});
  EXPECT_EQ(render::run_sweep(pipe, by_seed).rendered, 1);
  EXPECT_EQ(render::run_sweep(pipe, by_seed).reused, 1);
  fs::copy_file(kinora::test::fixture("wan21_dit_tiny.comfy.safetensors"),
                changed / "dit.safetensors", fs::copy_options::overwrite_existing);
  EXPECT_THAT(error_of([&] { render::run_sweep(pipe, by_seed); }),
              HasSubstr("was rendered from another " + (changed / "dit.safetensors").string()));
  EXPECT_EQ(render::run_sweep(pipe, by_seed, {}, true).rendered, 1);

  // A file that is not this cell's render: refused before anything is rendered.
  TempDir other;
  const auto plan2 =
      render::plan_sweep(tiny_image(other / "fox.png"), {render::parse_sweep_axis("seed=1,2")});
  { std::ofstream(plan2.cells[1].preset.output) << "mine"; }
  EXPECT_THAT(error_of([&] { render::run_sweep(pipe, plan2); }), HasSubstr("fox-seed=2.png"));
  EXPECT_FALSE(fs::exists(plan2.cells[0].preset.output));
  EXPECT_FALSE(fs::exists(plan2.sheet));
}

// A video sweep's sheet is made from its cells as their files hold them, so
// running the sweep again leaves the same sheet; a cell deleted (its
// parameters file left) is made again, and one cut short is said to be.
TEST(Sweep, AVideoSweepRunAgainMakesTheSameSheet) {
  TempDir dir;
  auto base = tiny_image(dir / "fox.mp4");
  base.frames = 5;
  const auto plan = render::plan_sweep(base, {render::parse_sweep_axis("guidance=1,3")});
  pipeline::Pipeline pipe;
  auto r = render::run_sweep(pipe, plan);
  EXPECT_EQ(r.rendered, 2);
  EXPECT_FALSE(r.sheet_kept);
  const auto sheet = read_bytes(r.sheet);
  r = render::run_sweep(pipe, plan);
  EXPECT_EQ(r.reused, 2);
  EXPECT_TRUE(r.sheet_kept);
  EXPECT_EQ(read_bytes(r.sheet), sheet);
  // The sheet deleted: made again from the cells, the same.
  fs::remove(r.sheet), fs::remove(r.sheet.string() + ".json");
  r = render::run_sweep(pipe, plan);
  EXPECT_FALSE(r.sheet_kept);
  EXPECT_EQ(read_bytes(r.sheet), sheet);
  // A cell's video deleted, its parameters file left: the cell is made again
  // over its own record, the sheet the same.
  const auto cell = plan.cells[1].preset.output_path();
  fs::remove(cell);
  r = render::run_sweep(pipe, plan);
  EXPECT_EQ(r.rendered, 1);
  EXPECT_EQ(read_bytes(r.sheet), sheet);
  // A cell cut short: said to be, and what to do.
  const auto whole = read_bytes(cell);
  { std::ofstream(cell, std::ios::binary) << whole.substr(0, whole.size() / 2); }
  const auto cut = error_of([&] { render::run_sweep(pipe, plan); });
  EXPECT_THAT(cut, HasSubstr("fox-guidance=3.mp4 does not read as a complete render"));
  EXPECT_THAT(cut, HasSubstr("delete it and its .json"));
  // Another render's parameters file at a deleted cell's: not replaced.
  fs::remove(cell);
  fs::copy_file(plan.cells[0].preset.output_path().string() + ".json", cell.string() + ".json",
                fs::copy_options::overwrite_existing);
  EXPECT_THAT(error_of([&] { render::run_sweep(pipe, plan); }), HasSubstr("fox-guidance=3.mp4"));
}

// LoRAs of one file name in two folders are two LoRAs; a value naming the
// same sampler or the same "off" as another is refused.
TEST(Sweep, LorasAreToldApartByPathAndRepeatedValuesAreRefused) {
  TempDir dir;
  fs::create_directories(dir / "styles");
  { std::ofstream(dir / "ink.safetensors") << "a"; }
  { std::ofstream(dir / "styles" / "ink.safetensors") << "b"; }
  auto base = tiny_image(dir / "fox.png");
  base.base_dir = dir.path();
  base.loras = {{"ink", 0.5}, {"styles/ink", 0.5}};
  const auto plan = render::plan_sweep(base, {render::parse_sweep_axis("lora:styles/ink=1")});
  ASSERT_EQ(plan.cells.size(), 2u);
  ASSERT_EQ(plan.cells[0].preset.loras.size(), 1u);  // styles/ink off, ink kept
  EXPECT_EQ(plan.cells[0].preset.loras[0].path, "ink");
  EXPECT_EQ(plan.cells[1].preset.loras[1].strength, 1);
  EXPECT_EQ(plan.cells[1].preset.loras[0].strength, 0.5);
  // By its file name alone it names both: said so.
  auto by_name = base;
  by_name.loras = {{"ink.safetensors", 0.5}, {"styles/ink", 0.5}};
  EXPECT_THAT(
      error_of([&] { render::plan_sweep(by_name, {render::parse_sweep_axis("lora:ink=1")}); }),
      HasSubstr("names 2 of the preset's LoRAs"));
  // One axis on each: labelled apart, in the cells' and the sheet's names.
  const auto two = render::plan_sweep(base, {render::parse_sweep_axis("lora:ink=1"),
                                             render::parse_sweep_axis("lora:styles/ink=1")});
  std::set<std::string> names;
  for (const auto& c : two.cells) names.insert(fs::path(c.preset.output).filename().string());
  EXPECT_EQ(names.size(), 4u);
  EXPECT_EQ(two.axes[0].label, "lora:ink");
  EXPECT_EQ(two.axes[1].label, "lora:styles/ink");
  EXPECT_THAT(two.sheet.filename().string(), HasSubstr("fox-sweep-lora_ink~"));
  // The same file twice under two names is one LoRA twice.
  auto twice = base;
  twice.loras = {{"ink.safetensors", 0.5}, {"./ink.safetensors", -0.3}};
  EXPECT_THAT(
      error_of([&] { render::plan_sweep(twice, {render::parse_sweep_axis("lora:ink=1")}); }),
      HasSubstr("the preset has that LoRA 2 times"));
  // "off" and 0, and two names of one sampler, are one value given twice.
  EXPECT_THAT(error_of([] { render::parse_sweep_axis("lora=off,0,1"); }),
              HasSubstr("'0' is given twice (as 'off': a LoRA at strength 0 is off)"));
  EXPECT_THAT(render::parse_sweep_axis("lora=0,1").values, ElementsAre("0", "1"));
  const auto samplers = render::plan_sweep(tiny_image(dir / "s.png"),
                                           {render::parse_sweep_axis("sampler=flow_unipc,unipc")});
  EXPECT_THAT(error_of([&] { render::check_sweep(samplers, false); }),
              HasSubstr("'unipc' and 'flow_unipc' are both the sampler flow_unipc"));
}
