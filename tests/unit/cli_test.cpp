// The command-line programs, run as a user runs them.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <array>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <new>
#include <string>

#include "base/error.h"
#include "base/files.h"
#include "base/signals.h"
#include "cli/convert.h"
#include "cli/error_message.h"
#include "cli/merge.h"
#include "flux_files.h"
#include "io/checkpoint.h"
#include "io/safetensors.h"
#include "test_util.h"
#include "wan_shapes.h"

using kinora::test::fixture;
using kinora::test::TempDir;
using kinora::test::write_raw;
using ::testing::HasSubstr;

namespace {
using kinora::test::Run;
Run run(const std::string& args) {
  return kinora::test::sh(std::string(KINORA_BIN_DIR) + "/" + args);
}
}  // namespace

TEST(KinoraCli, HelpAndVersion) {
  auto r = run("kinora --help");
  EXPECT_EQ(r.code, 0);
  EXPECT_THAT(r.out, HasSubstr("info"));
  r = run("kinora --version");
  EXPECT_EQ(r.code, 0);
  EXPECT_THAT(r.out, HasSubstr("Kinora "));
  EXPECT_THAT(r.out, HasSubstr("LibTorch"));
  r = run("kinora frobnicate");
  EXPECT_NE(r.code, 0);
}

TEST(KinoraCli, SamplersAreListed) {
  const auto r = run("kinora samplers");
  EXPECT_EQ(r.code, 0);
  EXPECT_THAT(r.out, HasSubstr("flow_unipc"));
  EXPECT_THAT(r.out, HasSubstr("flow_dpmpp_2m"));
  EXPECT_THAT(r.out, HasSubstr("flow_euler"));
  // Grouped by the kind of model: the noise-prediction ones after their title.
  const auto noise = r.out.find("Noise-prediction models");
  ASSERT_NE(noise, std::string::npos) << r.out;
  EXPECT_GT(r.out.find("dpmpp_2m_karras"), noise);
  EXPECT_GT(r.out.find("euler_ancestral (also euler_a)"), noise);
  EXPECT_LT(r.out.find("flow_unipc"), noise);
}

// Output that standard output did not take (a full disk behind `>`) fails
// the command, so that `kinora restore x.mp4 > p.json && …` stops there.
TEST(KinoraCli, AnOutputStandardOutputDidNotTakeFailsTheCommand) {
  for (const char* args : {"samplers", "--help"}) {
    const auto r = kinora::test::sh("{ " + std::string(KINORA_BIN_DIR) + "/kinora " + args +
                                    " > /dev/full; }");
    EXPECT_EQ(r.code, 1) << args << ": " << r.out;
    EXPECT_THAT(r.out, HasSubstr("could not write to standard output (No space left on device)"))
        << args;
  }
}

// Training options that cannot work are refused before anything is read or
// written, in the command line's words (exit 2).
TEST(KinoraCli, TrainingOptionsThatCannotWorkAreRefusedUpFront) {
  TempDir dir;
  for (const auto& [args, said] : std::vector<std::pair<std::string, std::string>>{
           {"train vae --save-every 0", "--save-every 0: expected a whole number of 1 or more"},
           {"train dit --time-patch 0", "--time-patch 0: expected a whole number of 1 or more"},
           {"train vae --frames 4", "--frames 4: expected 1 + 4k frames"},
           {"train vae --seed -1", "--seed '-1': expected a whole number from 0"}}) {
    const auto r = run("kinora " + args + " --run " + (dir / "run").string());
    EXPECT_EQ(r.code, 2) << args << ": " << r.out;
    EXPECT_THAT(r.out, HasSubstr(said)) << args;
  }
  EXPECT_FALSE(std::filesystem::exists(dir / "run"));
}

// A refused <lora:…> tag stops the render without the prompt-form note first.
TEST(KinoraCli, ARefusedPromptTagIsSaidWithoutTheNote) {
  TempDir dir;
  const auto tag =
      run("kinora generate -p 'a red circle moving left on a blue background "
          "<lora:kinora-tiny-big:101>' --out " +
          (dir / "z.mp4").string());
  EXPECT_EQ(tag.code, 1) << tag.out;
  EXPECT_THAT(tag.out, HasSubstr("the strength must be a number from -100 to 100"));
  EXPECT_THAT(tag.out, ::testing::Not(HasSubstr("note:")));
}

TEST(KinoraCli, DevicesAreListedAndAMissingOneIsAClearError) {
  const auto r = run("kinora devices");
  EXPECT_EQ(r.code, 0);
  EXPECT_THAT(r.out, HasSubstr("cpu    CPU, "));
  const auto gen = run("kinora generate -p x --device cuda:9 --out /tmp/never.mp4");
  EXPECT_EQ(gen.code, 1);
  EXPECT_THAT(gen.out, ::testing::AnyOf(HasSubstr("sees no CUDA device"), HasSubstr("cuda:0 …")));
  EXPECT_THAT(gen.out, ::testing::Not(HasSubstr("step 1/")));
  EXPECT_THAT(run("kinora generate -p x --device gpu --out /tmp/never.mp4").out,
              HasSubstr("--device must be"));
}

TEST(KinoraCli, InfoNamesFamilyAndLayoutOfFixtureWeights) {
  const std::pair<const char*, const char*> expected[] = {
      {"wan21_dit_tiny.comfy.safetensors", "Wan DiT"},
      {"wan21_vae_tiny.diffusers.safetensors", "Wan VAE"},
      {"umt5_enc_tiny.hf.safetensors", "umT5"},
      {"t5_enc_tiny.safetensors", "T5 encoder"},
      {"clip_l_tiny.safetensors", "CLIP"},
      {"flux1_dev_tiny.safetensors", "FLUX DiT"},
      {"flux1_ae_tiny.safetensors", "image autoencoder"},
      {"sdxl_vae_tiny.diffusers.safetensors", "image autoencoder"},
      {"sdxl_unet_tiny.safetensors", "SD/SDXL UNet"},
      {"sdxl_unet_tiny.diffusers.safetensors", "SD/SDXL UNet"},
      {"clip_g_tiny.safetensors", "OpenCLIP"}};
  for (const auto& [file, family] : expected) {
    const auto r = run("kinora info " + fixture(file));
    EXPECT_EQ(r.code, 0) << r.out;
    EXPECT_THAT(r.out, HasSubstr(std::string("family:   ") + family)) << r.out;
    EXPECT_THAT(r.out, HasSubstr("layout:   ")) << r.out;
    EXPECT_THAT(r.out, HasSubstr("tensors:  ")) << r.out;
    EXPECT_THAT(r.out, HasSubstr("dtypes:   F32")) << r.out;
  }
  // A LoRA is named as one, with what it holds.
  const auto lora = run("kinora info " + fixture("../../assets/loras/kinora-tiny-big.safetensors"));
  EXPECT_EQ(lora.code, 0) << lora.out;
  EXPECT_THAT(lora.out, HasSubstr("family:   LoRA ("));
  EXPECT_THAT(lora.out, HasSubstr("kinora lora inspect"));
  {
    // A LoRA that cannot be used (NaN in it) is named as a LoRA, with why.
    TempDir dir;
    kinora::io::save_safetensors(
        dir / "nan.safetensors",
        {{"blocks.0.self_attn.q.lora_down.weight", torch::full({4, 128}, NAN)},
         {"blocks.0.self_attn.q.lora_up.weight", torch::ones({128, 4})}});
    const auto bad = run("kinora info " + (dir / "nan.safetensors").string());
    EXPECT_THAT(bad.out,
                HasSubstr("family:   LoRA, not usable: tensor "
                          "'blocks.0.self_attn.q.lora_down.weight' holds NaN or infinite values"))
        << bad.out;
  }
  // lora inspect takes a LoRA by name, found as --lora finds it.
  const auto by_name = run("kinora lora inspect kinora-tiny-big");
  EXPECT_EQ(by_name.code, 0) << by_name.out;
  EXPECT_THAT(by_name.out, HasSubstr("kinora-tiny-big.safetensors: original, 42 updates"));
  EXPECT_THAT(run("kinora lora inspect nope").out,
              HasSubstr("lora inspect: LoRA 'nope' not found (looked for nope "));
  const auto r = run("kinora info " + fixture("wan21_dit_tiny.comfy.safetensors"));
  EXPECT_THAT(r.out, HasSubstr("ComfyUI (keys under 'model.diffusion_model.')"));
  EXPECT_THAT(r.out, HasSubstr("layout = wan-comfyui"));  // metadata shown
  // The tokenizers beside the weights are named as such.
  const auto spm = run("kinora info " + fixture("spm_tiny.model"));
  EXPECT_EQ(spm.code, 0) << spm.out;
  EXPECT_THAT(spm.out, HasSubstr("family:   SentencePiece tokenizer, "));
  TempDir dir;
  kinora::test::write_clip_tokenizer(dir.path() / "tok");
  const auto clip = run("kinora info " + (dir / "tok").string());
  EXPECT_EQ(clip.code, 0) << clip.out;
  EXPECT_THAT(clip.out, HasSubstr("family:   CLIP tokenizer"));
  const auto folder = run("kinora info " + dir.path().string());
  EXPECT_EQ(folder.code, 1) << folder.out;
  EXPECT_THAT(folder.out, HasSubstr(dir.path().string() + ": a folder;"));
}

// A number option given empty (a script's unset variable) or in hexadecimal
// is refused, naming the option, rather than read as 0 or 16.
TEST(KinoraCli, EmptyAndHexadecimalNumbersAreRefused) {
  for (const char* args : {"generate -p x --guidance ''", "generate -p x --steps 0x10"}) {
    const auto r = run("kinora " + std::string(args));
    EXPECT_EQ(r.code, 2) << args << ": " << r.out;
    EXPECT_THAT(r.out, HasSubstr("': expected a decimal number")) << args;
  }
  // An empty seed is not a random one.
  const auto seed = run("kinora generate -p x --seed '' -o x.mp4");
  EXPECT_EQ(seed.code, 1) << seed.out;
  EXPECT_THAT(seed.out, HasSubstr("--seed must be an integer"));
  const auto m = fixture("t5_enc_tiny.safetensors");
  const auto r = run("kinora merge " + m + " " + m + " -r '' -o x.safetensors");
  EXPECT_EQ(r.code, 2) << r.out;
  EXPECT_THAT(r.out, HasSubstr("--ratio '': expected a decimal number"));
}

// A thread count that is no number is said, once, and the idle CPUs are used.
TEST(KinoraCli, AThreadCountThatIsNoNumberIsSaid) {
  const auto r = kinora::test::sh("KINORA_THREADS=abc " + std::string(KINORA_BIN_DIR) +
                                  "/kinora info " + fixture("t5_enc_tiny.safetensors"));
  EXPECT_EQ(r.code, 0) << r.out;
  EXPECT_THAT(r.out, HasSubstr("KINORA_THREADS='abc' is not a thread count"));
  EXPECT_THAT(r.out, HasSubstr("family:   T5 encoder"));
}

TEST(KinoraCli, InfoRefusesMalformedFilesWithNameAndReason) {
  TempDir dir;
  const std::string one = R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})";
  write_raw(dir / "truncated.safetensors", one, std::string(3, '\0'));
  write_raw(dir / "badjson.safetensors", "{\"a\":", "");
  write_raw(dir / "huge.safetensors", one, std::string(8, '\0'), int64_t{5} << 30);
  write_raw(dir / "dtype.safetensors", R"({"a":{"dtype":"Q4","shape":[2],"data_offsets":[0,8]}})",
            std::string(8, '\0'));
  const std::pair<const char*, const char*> cases[] = {
      {"truncated.safetensors", "outside the data section"},
      {"badjson.safetensors", "not valid JSON"},
      {"huge.safetensors", "limit"},
      {"dtype.safetensors", "unknown dtype 'Q4'"}};
  for (const auto& [file, reason] : cases) {
    const auto r = run("kinora info " + (dir / file).string());
    EXPECT_NE(r.code, 0) << file;
    EXPECT_THAT(r.out, HasSubstr((dir / file).string()));
    EXPECT_THAT(r.out, HasSubstr(reason));
  }
}

// A float32 checkpoint stored as bf16: every float tensor rounded, integer
// tensors and metadata untouched, and the result still recognised; an output
// that exists, or FP8 input, is refused with the file named.
TEST(KinoraCli, ConvertStoresFloatTensorsInBf16AndKeepsEverythingElse) {
  TempDir dir;
  const auto src = dir / "model.safetensors";
  const auto w = torch::randn({8, 4});
  const auto steps = torch::arange(5, torch::kLong);
  kinora::io::save_safetensors(src, {{"blocks.0.weight", w}, {"steps", steps}},
                               {{"config", "{\"dim\": 4}"}});
  const auto out = dir / "model.bf16.safetensors";
  auto r = run("kinora convert " + src.string() + " " + out.string());
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_THAT(r.out, HasSubstr("2 tensors, 1 stored as bf16"));
  const auto ck = kinora::io::Checkpoint::open(out);
  EXPECT_EQ(ck.info("blocks.0.weight").dtype, kinora::io::DType::BF16);
  EXPECT_TRUE(torch::equal(ck.get("blocks.0.weight"), w.to(torch::kBFloat16)));
  EXPECT_EQ(ck.info("steps").dtype, kinora::io::DType::I64);
  EXPECT_TRUE(torch::equal(ck.get("steps"), steps));
  EXPECT_EQ(ck.metadata().at("config"), "{\"dim\": 4}");

  const auto dit = dir / "dit.bf16.safetensors";
  ASSERT_EQ(
      run("kinora convert " + fixture("wan21_dit_tiny.comfy.safetensors") + " " + dit.string())
          .code,
      0);
  r = run("kinora info " + dit.string());
  EXPECT_THAT(r.out, HasSubstr("dtypes:   BF16")) << r.out;
  EXPECT_THAT(r.out, HasSubstr("ComfyUI (keys under 'model.diffusion_model.')")) << r.out;

  r = run("kinora convert " + src.string() + " " + out.string());
  EXPECT_NE(r.code, 0);
  EXPECT_THAT(r.out, HasSubstr(out.string() + ": exists"));
  r = run("kinora convert " + src.string() + " " + src.string());
  EXPECT_NE(r.code, 0);
  EXPECT_THAT(r.out, HasSubstr("is an input"));

  const auto fp8 = dir / "fp8.safetensors";
  write_raw(fp8, R"({"a":{"dtype":"F8_E4M3","shape":[2],"data_offsets":[0,2]}})",
            std::string(2, '\0'));
  r = run("kinora convert " + fp8.string() + " " + (dir / "x.safetensors").string());
  EXPECT_NE(r.code, 0);
  EXPECT_THAT(r.out, HasSubstr(fp8.string() + ": tensor 'a' is F8_E4M3"));
  EXPECT_FALSE(std::filesystem::exists(dir / "x.safetensors"));
}

// Weighted sum (and past B), add difference and a dtype change, checked value
// by value; integer tensors and A's metadata kept, the recipe recorded; a
// checkpoint of another model, an output that exists or is an input, refused
// with the files named and nothing written.
TEST(KinoraCli, MergeCombinesCheckpointsTensorByTensor) {
  TempDir dir;
  const auto w1 = torch::randn({6, 4}), w2 = torch::randn({6, 4}), w3 = torch::randn({6, 4});
  const auto steps = torch::arange(3, torch::kLong);
  const auto a = dir / "a" / "m.safetensors", b = dir / "b" / "m.safetensors",
             c = dir / "c.safetensors";
  std::filesystem::create_directories(a.parent_path());
  std::filesystem::create_directories(b.parent_path());
  kinora::io::save_safetensors(a, {{"w", w1}, {"steps", steps}}, {{"config", "{\"dim\": 4}"}});
  kinora::io::save_safetensors(b, {{"w", w2}, {"steps", steps}}, {{"config", "other"}});
  kinora::io::save_safetensors(c, {{"w", w3}, {"steps", steps}});

  const auto ws = dir / "ws.safetensors";
  auto r = run("kinora merge " + a.string() + " " + b.string() + " -r 0.25 -o " + ws.string());
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_THAT(r.out, HasSubstr("2 tensors, 1 merged as A + r·(B − A) with r 0.25")) << r.out;
  auto ck = kinora::io::Checkpoint::open(ws);
  EXPECT_TRUE(torch::allclose(ck.get("w"), 0.75 * w1 + 0.25 * w2, 1e-6, 1e-6));
  EXPECT_TRUE(torch::equal(ck.get("steps"), steps));
  EXPECT_EQ(ck.metadata().at("config"), "{\"dim\": 4}");
  EXPECT_THAT(ck.metadata().at("kinora.merge"), HasSubstr("\"b\":\"b/m.safetensors\""));

  const auto past = dir / "past.safetensors";
  r = run("kinora merge " + a.string() + " " + b.string() + " --ratio 2 --dtype bf16 -o " +
          past.string());
  ASSERT_EQ(r.code, 0) << r.out;
  ck = kinora::io::Checkpoint::open(past);
  EXPECT_EQ(ck.info("w").dtype, kinora::io::DType::BF16);
  EXPECT_TRUE(torch::equal(ck.get("w"), (2 * w2 - w1).to(torch::kBFloat16)));
  EXPECT_EQ(ck.info("steps").dtype, kinora::io::DType::I64);

  const auto diff = dir / "diff.safetensors";
  r = run("kinora merge " + a.string() + " " + b.string() + " --subtract " + c.string() +
          " -r 0.5 -o " + diff.string());
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_THAT(r.out, HasSubstr("A + r·(B − C)"));
  ck = kinora::io::Checkpoint::open(diff);
  EXPECT_TRUE(torch::allclose(ck.get("w"), w1 + 0.5 * (w2 - w3), 1e-6, 1e-6));
  EXPECT_THAT(ck.metadata().at("kinora.merge"), HasSubstr("a + ratio * (b - c)"));

  // A real layout merges into a checkpoint that still loads as that model.
  const auto dit = dir / "dit.safetensors";
  const auto fx = fixture("wan21_dit_tiny.comfy.safetensors");
  ASSERT_EQ(run("kinora merge " + fx + " " + fx + " -o " + dit.string()).code, 0);
  r = run("kinora info " + dit.string());
  EXPECT_THAT(r.out, HasSubstr("ComfyUI (keys under 'model.diffusion_model.')")) << r.out;

  // One model in its original names and in ComfyUI's: matched by the
  // prefix, written in A's.
  const auto orig = fixture("wan21_dit_tiny.safetensors");
  const auto mixed = dir / "mixed.safetensors";
  r = run("kinora merge " + orig + " " + fx + " -r 0.5 -o " + mixed.string());
  ASSERT_EQ(r.code, 0) << r.out;
  ck = kinora::io::Checkpoint::open(mixed);
  const auto o = kinora::io::Checkpoint::open(orig), f = kinora::io::Checkpoint::open(fx);
  EXPECT_EQ(ck.names().size(), o.names().size());
  const std::string n = "blocks.0.self_attn.q.weight";
  EXPECT_TRUE(torch::allclose(ck.get(n), 0.5 * o.get(n) + 0.5 * f.get("model.diffusion_model." + n),
                              1e-6, 1e-6));
  r = run("kinora merge " + fx + " " + orig + " -o " + (dir / "mixed2.safetensors").string());
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_TRUE(kinora::io::Checkpoint::open(dir / "mixed2.safetensors")
                  .contains("model.diffusion_model." + n));

  const auto x = dir / "x.safetensors";
  r = run("kinora merge " + a.string() + " " + fx + " -o " + x.string());
  EXPECT_NE(r.code, 0);
  EXPECT_THAT(r.out, HasSubstr(fx + ": has no tensor 'steps', which " + a.string() + " holds"));
  kinora::io::save_safetensors(c, {{"w", torch::randn({4, 6})}, {"steps", steps}});
  r = run("kinora merge " + a.string() + " " + b.string() + " --subtract " + c.string() + " -o " +
          x.string());
  EXPECT_NE(r.code, 0);
  EXPECT_THAT(r.out,
              HasSubstr("tensor 'w' is [4, 6] in " + c.string() + " and [6, 4] in " + a.string()));
  kinora::io::save_safetensors(c, {{"w", w3}, {"steps", steps + 1}});
  r = run("kinora merge " + a.string() + " " + c.string() + " -o " + x.string());
  EXPECT_NE(r.code, 0);
  EXPECT_THAT(r.out, HasSubstr(c.string() + ": integer tensor 'steps' differs"));
  EXPECT_FALSE(std::filesystem::exists(x));

  r = run("kinora merge " + a.string() + " " + b.string() + " -o " + ws.string());
  EXPECT_NE(r.code, 0);
  EXPECT_THAT(r.out, HasSubstr(ws.string() + ": exists"));
  r = run("kinora merge " + a.string() + " " + b.string() + " -o " + b.string());
  EXPECT_NE(r.code, 0);
  EXPECT_THAT(r.out, HasSubstr(b.string() + ": is an input"));
}

// convert, merge and lora merge write over no shard of a sharded input, stop
// at a cancel (Ctrl-C, SIGTERM) with nothing written, remove what a killed run
// left in the output folder, and say why fp16 cannot hold a merge.
TEST(KinoraCli, CheckpointToolsSpareShardsStopWhenCancelledAndCleanUp) {
  TempDir dir;
  const auto w = torch::randn({6, 4}), v = torch::randn({3});
  const auto s1 = dir / "m-00001-of-00002.safetensors", s2 = dir / "m-00002-of-00002.safetensors";
  kinora::io::save_safetensors(s1, {{"w", w}});
  kinora::io::save_safetensors(s2, {{"v", v}});
  const auto index = dir / "m.safetensors.index.json";
  std::ofstream(index) << R"({"metadata": {}, "weight_map": {"w": "m-00001-of-00002.safetensors",
                                                            "v": "m-00002-of-00002.safetensors"}})";
  const auto shard = kinora::test::read_bytes(s2);
  auto r = run("kinora convert " + index.string() + " " + s2.string() + " --overwrite");
  EXPECT_NE(r.code, 0);
  EXPECT_THAT(r.out, HasSubstr(s2.string() + ": is a shard of the input " + index.string()));
  r = run("kinora merge " + index.string() + " " + index.string() + " -o " + s1.string() +
          " --overwrite");
  EXPECT_THAT(r.out, HasSubstr(s1.string() + ": is a shard of the input"));
  EXPECT_EQ(kinora::test::read_bytes(s2), shard);

  // A temporary a killed convert left (its PID no longer runs) is removed by
  // the next one writing there.
  const auto out = dir / "out.safetensors";
  auto dead = kinora::temp_beside(out).string();
  dead.replace(dead.rfind('-') + 1, std::string::npos, "999999999.safetensors");
  std::ofstream(dead) << "half a checkpoint";
  r = run("kinora convert " + index.string() + " " + out.string());
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_FALSE(std::filesystem::exists(dead));

  // Cancelled (the token a signal sets): nothing written, no temporary.
  kinora::cancel_requested() = true;
  const auto cancelled = dir / "cancelled.safetensors";
  EXPECT_THROW(kinora::cli::convert_checkpoint(index, cancelled, "bf16", false), kinora::Cancelled);
  kinora::cli::MergeSpec spec;
  spec.a = spec.b = index;
  EXPECT_THROW(kinora::cli::merge_checkpoints(spec, cancelled), kinora::Cancelled);
  kinora::cancel_requested() = false;
  EXPECT_EQ(std::distance(std::filesystem::directory_iterator(dir.path()), {}), 4);

  // Values past fp16's range: said so, whatever the ratio.
  const auto big = dir / "big.safetensors";
  kinora::io::save_safetensors(big, {{"big", torch::tensor({1e6f, -1e6f, 1e-9f})}});
  r = run("kinora merge " + big.string() + " " + big.string() + " -r 0 --dtype fp16 -o " +
          (dir / "bb.safetensors").string());
  EXPECT_NE(r.code, 0);
  EXPECT_THAT(r.out, HasSubstr("its values pass the range of fp16 (65504); bf16 or fp32 keep "
                               "them (--dtype)"));
}

// `kinora score` runs the semantic test's judgement (the test itself runs the
// same code, render::score_semantics, on the embedded model); here, that a
// folder without the model files and bad settings are refused by name.
TEST(KinoraCli, ScoreRefusesAFolderWithoutTheModelAndBadSettings) {
  TempDir dir;
  auto r = run("kinora score --model-dir " + dir.path().string());
  EXPECT_EQ(r.code, 1);
  EXPECT_THAT(r.out, HasSubstr(dir.path().string() +
                               ": --model-dir lacks kinora-tiny-wan-dit.safetensors"));
  EXPECT_THAT(r.out, ::testing::Not(HasSubstr("--model:")));
  r = run("kinora score --model-dir " + (dir / "none").string());
  EXPECT_NE(r.code, 0);
  EXPECT_THAT(r.out, HasSubstr("--model-dir '" + (dir / "none").string() + "': no such folder"));
  r = run("kinora score --guidance 2 --steps 0");
  EXPECT_EQ(r.code, 1);
  EXPECT_THAT(r.out, HasSubstr("kinora: --steps must be between 1 and 1000, got 0"));
  std::ofstream(dir / "notes.txt") << "mine";
  r = run("kinora score --keep " + (dir / "notes.txt").string());
  EXPECT_EQ(r.code, 1);
  EXPECT_THAT(r.out, HasSubstr("notes.txt: --keep names a file; give a folder"));
  EXPECT_EQ(kinora::test::read_bytes(dir / "notes.txt"), "mine");
  // --overwrite replaces an earlier score's MP4s, not a user's file of that name.
  std::filesystem::create_directories(dir / "kept");
  std::ofstream(dir / "kept" / "prompt0.mp4") << "my video";
  r = run("kinora score --prompts 1 --steps 1 --keep " + (dir / "kept").string() + " --overwrite");
  EXPECT_EQ(r.code, 1);
  EXPECT_THAT(r.out, HasSubstr("prompt0.mp4: exists and is not a render an earlier score kept"));
  EXPECT_EQ(kinora::test::read_bytes(dir / "kept" / "prompt0.mp4"), "my video");
  // Nor a Kinora render of the user's copied there.
  r = run("kinora generate -p 'a fox' --seed 3 --width 32 --height 32 --frames 5 --steps 1" +
          std::string(" --model ") + fixture("wan21_dit_tiny.safetensors") + " --vae " +
          fixture("wan21_vae_tiny.safetensors") + " --text-encoder " +
          fixture("umt5_enc_tiny.safetensors") + " --tokenizer " + fixture("spm_tiny.model") +
          " --out " + (dir / "mine.mp4").string());
  ASSERT_EQ(r.code, 0) << r.out;
  std::filesystem::copy_file(dir / "mine.mp4", dir / "kept" / "prompt0.mp4",
                             std::filesystem::copy_options::overwrite_existing);
  const auto mine = kinora::test::read_bytes(dir / "mine.mp4");
  r = run("kinora score --prompts 1 --steps 1 --keep " + (dir / "kept").string() + " --overwrite");
  EXPECT_EQ(r.code, 1);
  EXPECT_THAT(r.out, HasSubstr("is not a render an earlier score kept"));
  EXPECT_EQ(kinora::test::read_bytes(dir / "kept" / "prompt0.mp4"), mine);
}

TEST(ConformanceCli, PassesSamplerCasesAndCountsSkipsAsFailures) {
  auto r = run("kinora-conformance " + fixture("sched_wan_unipc_20.case.safetensors"));
  EXPECT_EQ(r.code, 0) << r.out;
  EXPECT_THAT(r.out, HasSubstr("PASS  sched_wan_unipc_20.case.safetensors  -  "));
  EXPECT_THAT(r.out, HasSubstr("1 passed, 0 failed"));

  // A component not implemented is SKIP, and a failure unless --allow-skip.
  const std::string dit = fixture("wan21_dit_video.case.safetensors");
  r = run("kinora-conformance " + dit);
  if (r.out.find("SKIP") != std::string::npos) {
    EXPECT_EQ(r.code, 1) << r.out;
    EXPECT_THAT(r.out, HasSubstr("0 passed, 1 failed"));
    r = run("kinora-conformance --allow-skip " + dit);
    EXPECT_EQ(r.code, 0) << r.out;
    EXPECT_THAT(r.out, HasSubstr("0 passed, 0 failed, 1 skipped"));
  }

  // Said as the other tools say an error: the program's name first.
  r = run("kinora-conformance /nonexistent/folder");
  EXPECT_EQ(r.code, 2);
  EXPECT_THAT(r.out, HasSubstr("kinora-conformance: /nonexistent/folder: no such file or folder"));
  TempDir empty;
  r = run("kinora-conformance " + empty.path().string());
  EXPECT_EQ(r.code, 2);
  EXPECT_THAT(r.out, HasSubstr("kinora-conformance: no *.case.safetensors found in " +
                               empty.path().string()));
}

TEST(ConformanceCli, AFailingCaseFailsTheRun) {
  // The same sampler case with its expected trajectory altered by 1% must FAIL.
  TempDir dir;
  const auto f = kinora::io::SafetensorsFile::open(fixture("sched_wan_dpmpp_25.case.safetensors"));
  std::vector<std::pair<std::string, torch::Tensor>> tensors;
  for (const auto& t : f->tensors())
    tensors.emplace_back(t.name,
                         t.name == "output.trajectory" ? f->get(t.name) * 1.01 : f->get(t.name));
  kinora::io::save_safetensors(dir / "altered.case.safetensors", tensors, f->metadata());
  const auto r = run("kinora-conformance " + (dir / "altered.case.safetensors").string());
  EXPECT_EQ(r.code, 1) << r.out;
  EXPECT_THAT(r.out, HasSubstr("FAIL  altered.case.safetensors  -  0.0099"));
  EXPECT_THAT(r.out, HasSubstr("trajectory: relative error"));
}

// Real checkpoints, recognised from files with their real names and shapes.
TEST(KinoraCli, InfoRecognisesEveryWanVariantFromRealShapes) {
  TempDir dir;
  std::filesystem::create_directories(dir / "Wan2.2-T2V-A14B" / "high_noise_model");
  std::filesystem::create_directories(dir / "Wan2.2-T2V-A14B" / "low_noise_model");
  const std::tuple<std::string, kinora::test::KeyShapes, std::string> cases[] = {
      {"wan2.1_t2v_1.3B_bf16.safetensors",
       kinora::test::wan_original_keys(1536, 8960, 16, 16, 30, false),
       "Wan 2.1 T2V 1.3B, 12 heads × 128, t2v"},
      {"wan2.1_t2v_14B_bf16.safetensors",
       kinora::test::wan_original_keys(5120, 13824, 16, 16, 40, false, "model.diffusion_model."),
       "Wan 2.1 T2V 14B / Wan 2.2 T2V-A14B expert, 40 heads × 128"},
      {"wan2.2_ti2v_5B_fp16.safetensors",
       kinora::test::wan_original_keys(3072, 14336, 48, 48, 30, false),
       "Wan 2.2 TI2V 5B, 24 heads × 128, ti2v"},
      {"wan2.1_i2v_480p_14B_bf16.safetensors",
       kinora::test::wan_original_keys(5120, 13824, 36, 16, 40, true),
       "Wan 2.1 I2V 14B, 40 heads × 128, i2v"},
      // Image-to-video without the 2.1 image cross-attention: the image's
      // latents beside the noise (36 channels in).
      {"wan2.2_i2v_high_noise_14B_fp16.safetensors",
       kinora::test::wan_original_keys(5120, 13824, 36, 16, 40, false),
       "Wan 2.2 I2V-A14B expert, 40 heads × 128, i2v"},
      {"Wan2.2-T2V-A14B/high_noise_model/diffusion_pytorch_model.safetensors",
       kinora::test::wan_original_keys(5120, 13824, 16, 16, 40, false), "A14B high-noise expert"},
      {"Wan2.2-T2V-A14B/low_noise_model/diffusion_pytorch_model.safetensors",
       kinora::test::wan_original_keys(5120, 13824, 16, 16, 40, false), "A14B low-noise expert"},
  };
  for (const auto& [file, keys, expected] : cases) {
    kinora::test::write_sparse(dir / file, keys);
    const auto r = run("kinora info " + (dir / file).string());
    EXPECT_EQ(r.code, 0) << r.out;
    EXPECT_THAT(r.out, HasSubstr("family:   Wan DiT")) << file;
    EXPECT_THAT(r.out, HasSubstr(expected)) << r.out;
  }
}

// convert holds about one tensor at a time: each is converted from the mapped
// input (its pages released once read) and written before the next is read.
// A tensor larger than a conversion chunk is converted whole and its values
// checked in every chunk.
TEST(KinoraCli, ConvertStreamsTensorByTensor) {
  TempDir dir;
  // 16 tensors of 16 MiB in bf16, 32 MiB each in fp32: 512 MiB converted.
  kinora::test::KeyShapes keys;
  for (int i = 0; i < 16; ++i) keys.push_back({"blocks." + std::to_string(i) + ".w", {2048, 4096}});
  const auto src = dir / "big.safetensors";
  kinora::test::write_sparse(src, keys);
  // The peak of this process's resident memory (VmHWM), from now on.
  auto status_kib = [](const std::string& field) -> int64_t {
    std::ifstream status("/proc/self/status");
    for (std::string line; std::getline(status, line);)
      if (line.rfind(field + ":", 0) == 0) return std::stoll(line.substr(field.size() + 1));
    return -1;
  };
  std::ofstream clear("/proc/self/clear_refs");
  if (!(clear << "5" << std::flush)) GTEST_SKIP() << "cannot reset the peak resident memory";
  const int64_t before = status_kib("VmRSS");
  const auto out = dir / "big.fp32.safetensors";
  const auto r = kinora::cli::convert_checkpoint(src, out, "fp32");
  const int64_t peak = status_kib("VmHWM") - before;
  EXPECT_EQ(r.converted, 16u);
  EXPECT_EQ(r.bytes_out, 2 * r.bytes_in);
  // Whole, the output alone is 512 MiB; one tensor and a chunk of its input
  // are 32 + 32 MiB.
  EXPECT_LT(peak, 160 << 10) << peak << " KiB";
  const auto ck = kinora::io::Checkpoint::open(out);
  EXPECT_EQ(ck.size(), 16u);
  EXPECT_EQ(ck.info("blocks.15.w").dtype, kinora::io::DType::F32);
  EXPECT_EQ(ck.info("blocks.15.w").shape, (std::vector<int64_t>{2048, 4096}));
  EXPECT_EQ(ck.get("blocks.7.w").abs().sum().item<double>(), 0.0);
  std::filesystem::remove(out);

  // Past one chunk (2^24 elements): every value converted, and one past fp16's
  // range in the last chunk refused with nothing written.
  auto w = torch::randn({(int64_t{1} << 24) + 3});
  const auto chunky = dir / "chunky.safetensors";
  kinora::io::save_safetensors(chunky, {{"w", w}, {"b", torch::ones({3})}}, {{"k", "v"}});
  const auto bf16 = dir / "chunky.bf16.safetensors";
  kinora::cli::convert_checkpoint(chunky, bf16, "bf16");
  const auto back = kinora::io::Checkpoint::open(bf16);
  EXPECT_TRUE(torch::equal(back.get("w"), w.to(torch::kBFloat16)));
  EXPECT_EQ(back.metadata().at("k"), "v");
  w[w.numel() - 1] = 1e6f;
  kinora::io::save_safetensors(chunky, {{"w", w}});
  const auto fp16 = dir / "chunky.fp16.safetensors";
  EXPECT_THAT(
      kinora::test::error_of([&] { kinora::cli::convert_checkpoint(chunky, fp16, "fp16"); }),
      HasSubstr("tensor 'w' holds values past fp16's range (65504)"));
  EXPECT_FALSE(std::filesystem::exists(fp16));
  EXPECT_EQ(std::distance(std::filesystem::directory_iterator(dir.path()), {}), 3);
}

// Memory that cannot be had is said in a line, "out of memory", with no
// LibTorch backtrace, and nothing is written.
TEST(KinoraCli, OutOfMemoryIsOneLineWithoutABacktrace) {
  TempDir dir;
  // 2 TiB of bf16 (a sparse file), 4 TiB as fp32: no machine gives that.
  const auto src = dir / "huge.safetensors";
  kinora::test::write_sparse(src, {{"w", {int64_t{1} << 20, int64_t{1} << 20}}});
  const auto out = dir / "huge.fp32.safetensors";
  const auto r = run("kinora convert " + src.string() + " " + out.string() + " --dtype fp32");
  EXPECT_EQ(r.code, 1) << r.out;
  EXPECT_THAT(r.out, HasSubstr("kinora: out of memory: 4096.00 GiB could not be allocated; "
                               "nothing was written"));
  EXPECT_THAT(r.out, ::testing::Not(HasSubstr("frame #")));
  EXPECT_EQ(std::count(r.out.begin(), r.out.end(), '\n'), 1) << r.out;
  EXPECT_EQ(std::distance(std::filesystem::directory_iterator(dir.path()), {}), 1);

  // The messages themselves: LibTorch's by its first line, memory as memory.
  auto torch_error = [](const std::string& what) -> std::string {
    try {
      TORCH_CHECK(false, what);
    } catch (const c10::Error& e) {
      EXPECT_THAT(std::string(e.what()), HasSubstr("Exception raised from"));
      return kinora::cli::error_message(e);
    }
    return "";
  };
  EXPECT_EQ(torch_error("can't allocate memory: you tried to allocate 2100297728 bytes. Error "
                        "code 12 (Cannot allocate memory)"),
            "out of memory: 1.96 GiB could not be allocated; nothing was written");
  EXPECT_EQ(torch_error("CUDA out of memory. Tried to allocate 2.00 GiB"),
            "out of memory on the GPU: CUDA out of memory. Tried to allocate 2.00 GiB; nothing was "
            "written");
  EXPECT_EQ(torch_error("shapes differ\nmore"), "LibTorch: shapes differ");
  EXPECT_EQ(kinora::cli::error_message(std::bad_alloc()), "out of memory; nothing was written");
  EXPECT_EQ(kinora::cli::error_message(kinora::Error("x.safetensors: bad")), "x.safetensors: bad");
}

// One shard of a sharded checkpoint is part of a model: info says which part
// and gives the index, or says the index is missing, and describes nothing.
TEST(KinoraCli, InfoOnAShardGivesItsIndex) {
  TempDir dir;
  const auto s1 = dir / "diffusion_pytorch_model-00001-of-00002.safetensors";
  const auto s2 = dir / "diffusion_pytorch_model-00002-of-00002.safetensors";
  kinora::io::save_safetensors(s1, {{"w", torch::ones({2})}});
  kinora::io::save_safetensors(s2, {{"v", torch::ones({2})}});
  const auto index = dir / "diffusion_pytorch_model.safetensors.index.json";
  std::ofstream(index)
      << R"({"weight_map": {"w": "diffusion_pytorch_model-00001-of-00002.safetensors",
                                            "v": "diffusion_pytorch_model-00002-of-00002.safetensors"}})";
  auto r = run("kinora info " + s1.string());
  EXPECT_EQ(r.code, 1) << r.out;
  EXPECT_THAT(r.out, HasSubstr(s1.string() +
                               ": shard 1 of 2 of a sharded checkpoint, part of a "
                               "model; give its index, " +
                               index.string() + ", for the whole model"));
  EXPECT_THAT(r.out, ::testing::Not(HasSubstr("family:")));
  r = run("kinora info " + index.string());
  EXPECT_EQ(r.code, 0) << r.out;
  EXPECT_THAT(r.out, HasSubstr("files:    2 (sharded)"));
  // The index names the shard even when another shard is missing.
  std::filesystem::remove(s2);
  r = run("kinora info " + s1.string());
  EXPECT_THAT(r.out, HasSubstr("give its index, " + index.string())) << r.out;
  std::filesystem::remove(index);
  r = run("kinora info " + s1.string());
  EXPECT_EQ(r.code, 1) << r.out;
  EXPECT_THAT(r.out, HasSubstr(s1.string() + ": shard 1 of 2 of a sharded checkpoint, part of a "
                                             "model; a sharded model is given by its index "
                                             "(diffusion_pytorch_model.safetensors.index.json), "
                                             "which is not beside this shard"));
  // "-00001-of-00001" is a whole model.
  const auto whole = dir / "m-00001-of-00001.safetensors";
  kinora::io::save_safetensors(whole, {{"w", torch::ones({2})}});
  EXPECT_EQ(run("kinora info " + whole.string()).code, 0);
}

// The Wan 2.2 VAE (TI2V-5B's) is named, and said to be unsupported, by info
// and by a render given it.
TEST(KinoraCli, TheWan22VaeIsNamedAndRefused) {
  TempDir dir;
  const auto vae = dir / "wan2.2_vae.safetensors";
  kinora::test::write_sparse(
      vae, {{"conv1.weight", {96, 96, 1, 1, 1}},
            {"conv2.weight", {48, 48, 1, 1, 1}},
            {"encoder.conv1.weight", {160, 12, 3, 3, 3}},
            {"decoder.conv1.weight", {1024, 48, 3, 3, 3}},
            {"decoder.upsamples.0.upsamples.0.residual.0.gamma", {1024, 1, 1, 1}}});
  auto r = run("kinora info " + vae.string());
  EXPECT_EQ(r.code, 0) << r.out;
  EXPECT_THAT(r.out, HasSubstr("family:   Wan 2.2 VAE (48 latent channels, the TI2V-5B's; Kinora "
                               "does not support it yet)"));
  EXPECT_THAT(r.out, HasSubstr("latent channels 48"));
  const auto out = dir / "x.mp4";
  r = run("kinora generate -p 'a cat' --model " + fixture("wan21_dit_tiny.safetensors") +
          " --vae " + vae.string() + " --text-encoder " + fixture("umt5_enc_tiny.safetensors") +
          " --tokenizer " + fixture("spm_tiny.model") + " -o " + out.string());
  EXPECT_EQ(r.code, 1) << r.out;
  EXPECT_THAT(r.out, HasSubstr(vae.string() + ": given as the Wan VAE for wan21_dit_tiny."
                                              "safetensors, but it is a Wan 2.2 VAE (48 latent "
                                              "channels, the TI2V-5B's; Kinora does not support "
                                              "it yet)"));
  EXPECT_FALSE(std::filesystem::exists(out));
}
