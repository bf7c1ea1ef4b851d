// The text-to-video pipeline on the fixture chain (random weights: the video is
// noise, everything else is real), in process.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <fstream>
#include <functional>

#include "diffusion/wan_dit.h"
#include "embedded/model.h"
#include "io/checkpoint.h"
#include "io/safetensors.h"
#include "layers/precision.h"
#include "media/output.h"
#include "pipeline/pipeline.h"
#include "poisoned_files.h"
#include "render/render.h"
#include "test_util.h"
#include "text/t5_conditioner.h"
#include "tiny_preset.h"

using namespace kinora;
using kinora::test::error_of;
using kinora::test::fixture;
using kinora::test::TempDir;
using pipeline::Preset;
using ::testing::Contains;
using ::testing::HasSubstr;

namespace {
Preset tiny(const std::string& out = "") {
  return test::tiny_wan_preset(out);
}
}  // namespace

TEST(Pipeline, SameSeedSameFramesOtherSeedOtherFrames) {
  pipeline::Pipeline pipe;
  const auto a = pipe.generate(tiny()), b = pipe.generate(tiny());
  EXPECT_EQ(a.frames.sizes(), (std::vector<int64_t>{9, 48, 64, 3}));
  EXPECT_EQ(a.frames.scalar_type(), torch::kUInt8);
  EXPECT_TRUE(torch::equal(a.frames, b.frames));
  auto p = tiny();
  p.seed = 12;
  EXPECT_FALSE(torch::equal(pipe.generate(p).frames, a.frames));
  // Every sampler runs the loop; unguided (guidance 1) too.
  for (const char* s : {"flow_euler", "flow_dpmpp_2m"}) {
    p.sampler = s;
    p.guidance = 1.0;
    EXPECT_EQ(pipe.generate(p).frames.size(0), 9) << s;
  }
}

// Wan's conditioner encodes the real tokens only: their states are those the
// reference's padded 512-token sequence gives them (padding masked out).
TEST(Pipeline, PromptStatesAreThoseOfThePaddedSequence) {
  auto cond = text::T5Conditioner::load(fixture("umt5_enc_tiny.safetensors"),
                                        fixture("spm_tiny.model"), 512);
  const auto tok = text::Tokenizer::load(fixture("spm_tiny.model"));
  for (const char* prompt : {"a red fox running through fresh snow", "x", ""}) {
    const auto t = tok.encode(prompt, 512);
    ASSERT_LT(t.length, 512);
    const auto padded = cond.encoder().forward(t.ids, t.mask).slice(1, 0, t.length);
    const auto trimmed = cond.encode(prompt, nullptr).context;
    ASSERT_EQ(trimmed.sizes(), padded.sizes()) << prompt;
    EXPECT_TRUE(torch::allclose(trimmed, padded, 1e-5, 1e-5)) << prompt;
  }
}

// A tokenizer with more tokens than the encoder has rows is refused at load,
// naming both files, not at the first prompt that reaches past the table.
TEST(Pipeline, ATokenizerOfAnotherTextEncoderIsRefusedByName) {
  const auto encoder = fixture("../../assets/kinora-tiny-umt5.safetensors");  // 96 tokens
  const auto msg =
      error_of([&] { text::T5Conditioner::load(encoder, fixture("spm_tiny.model"), 32); });  // 171
  EXPECT_THAT(msg, HasSubstr("spm_tiny.model: a tokenizer of 171 tokens, but the text encoder"));
  EXPECT_THAT(msg, HasSubstr("kinora-tiny-umt5.safetensors has 96"));
}

// The files a render reads include a sharded model's shards: an output named
// like one (a.mp4) is refused, even with overwrite.
TEST(Pipeline, AShardOfAShardedModelIsAnInputNoOutputReplaces) {
  test::TempDir dir;
  const auto ck = io::Checkpoint::open(test::fixture("wan21_dit_tiny.safetensors"));
  std::vector<std::pair<std::string, torch::Tensor>> first, second;
  nlohmann::json map;
  for (const auto& name : ck.names()) {
    auto& part = first.size() <= second.size() ? first : second;
    part.emplace_back(name, ck.get(name));
    map[name] = &part == &first ? "a.mp4" : "b.png";
  }
  io::save_safetensors(dir / "a.mp4", first, ck.metadata());
  io::save_safetensors(dir / "b.png", second);
  std::ofstream(dir / "m.safetensors.index.json")
      << nlohmann::json{{"metadata", nlohmann::json::object()}, {"weight_map", map}}.dump();
  auto p = test::tiny_wan_preset((dir / "a.mp4").string());
  p.model = (dir / "m.safetensors.index.json").string();
  const auto inputs = pipeline::input_files(p);
  EXPECT_NE(std::find(inputs.begin(), inputs.end(), dir / "a.mp4"), inputs.end());
  EXPECT_NE(std::find(inputs.begin(), inputs.end(), dir / "b.png"), inputs.end());
  try {
    render::check_output_name(p);
    ADD_FAILURE() << "a shard taken as the output";
  } catch (const Error& e) {
    EXPECT_THAT(e.what(), ::testing::HasSubstr("a.mp4: is a file this render reads"));
  }
}

TEST(Pipeline, NoiseIsDrawnOnTheCpuFromTheSeed) {
  const auto a = pipeline::initial_noise(5, {1, 16, 2, 3, 4}),
             b = pipeline::initial_noise(5, {1, 16, 2, 3, 4});
  EXPECT_TRUE(torch::equal(a, b));
  EXPECT_FALSE(torch::equal(a, pipeline::initial_noise(6, {1, 16, 2, 3, 4})));
  EXPECT_NEAR(pipeline::initial_noise(1, {100000}).std().item<double>(), 1.0, 0.02);
}

TEST(Pipeline, AutoPrecisionIsWhatTheDeviceComputesAndIsRecorded) {
  // /proc/cpuinfo flags of an AVX2-only EPYC, a Zen 4 and a Sapphire Rapids (abridged).
  EXPECT_FALSE(layers::cpu_flags_have_native_bf16("flags\t: fpu sse2 avx2 fma bmi2 sha_ni"));
  EXPECT_TRUE(layers::cpu_flags_have_native_bf16("flags\t: avx2 avx512f avx512_bf16 avx512_vnni"));
  EXPECT_TRUE(layers::cpu_flags_have_native_bf16("flags\t: avx512f amx_bf16 amx_tile amx_int8"));
  EXPECT_FALSE(layers::cpu_flags_have_native_bf16("flags\t: avx512f avx512_vnni avx512_fp16"));
  const bool native = layers::cpu_has_native_bf16();
  const auto on_cpu = native ? layers::Precision::BF16 : layers::Precision::F32;
  EXPECT_EQ(layers::resolve_precision("auto", torch::kCPU), on_cpu);
  // CUDA: bf16 from Ampere on. Without CUDA there is nothing to compute it.
  const torch::Device cuda(torch::kCUDA);
  if (torch::cuda::is_available()) {
    const bool ampere = layers::cuda_has_native_bf16(cuda);
    EXPECT_EQ(layers::resolve_precision("auto", cuda),
              ampere ? layers::Precision::BF16 : layers::Precision::F32);
    EXPECT_EQ(layers::precision_warning(layers::Precision::BF16, cuda).empty(), ampere);
  } else {
    EXPECT_FALSE(layers::cuda_has_native_bf16(cuda));
    EXPECT_EQ(layers::resolve_precision("auto", cuda), layers::Precision::F32);
  }
  EXPECT_EQ(layers::resolve_precision("fp32", torch::Device(torch::kCUDA)), layers::Precision::F32);
  EXPECT_EQ(layers::resolve_precision("bf16", torch::kCPU), layers::Precision::BF16);

  // A preset says "auto" unless told; the result (and so the output's parameters) says what ran.
  EXPECT_EQ(Preset().precision, "auto");
  pipeline::Pipeline pipe;
  std::vector<std::string> msgs;
  pipeline::RunCallbacks cb;
  cb.on_message = [&](const std::string& m) { msgs.push_back(m); };
  const auto a = pipe.generate(tiny(), cb);
  EXPECT_EQ(a.preset.precision, native ? "bf16" : "fp32");
  EXPECT_TRUE(msgs.empty());
  auto p = tiny();
  p.precision = layers::precision_name(on_cpu);
  EXPECT_TRUE(torch::equal(pipe.generate(p).frames, a.frames));
  // bf16 asked for on a CPU that emulates it: rendered, with a warning.
  p.precision = "bf16";
  const auto b = pipe.generate(p, cb);
  EXPECT_EQ(b.preset.precision, "bf16");
  if (native) {
    EXPECT_TRUE(msgs.empty());
  } else {
    ASSERT_EQ(msgs.size(), 1u);
    EXPECT_THAT(msgs[0], HasSubstr("bf16 on a CPU without bf16 arithmetic"));
  }
}

// LibTorch's failures as the user reads them: the first line, and for memory
// what to change, on a GPU its own remedies.
TEST(Pipeline, LibTorchFailuresSayWhatToChange) {
  pipeline::Preset p;
  p.width = 832, p.height = 480, p.frames = 81;
  const auto cpu = pipeline::libtorch_failure_message(
      "[enforce fail at alloc_cpu.cpp:75] . DefaultCPUAllocator: can't allocate memory: you tried "
      "to allocate 123 bytes. Error code 12 (Cannot allocate memory)\nbacktrace…",
      p);
  EXPECT_EQ(cpu.rfind("out of memory rendering 832×480×81: can't allocate memory", 0), 0u) << cpu;
  EXPECT_NE(cpu.find("--precision bf16"), std::string::npos);
  EXPECT_EQ(cpu.find("backtrace"), std::string::npos);
  EXPECT_EQ(cpu.find("--block-swap"), std::string::npos);
  const std::string cuda =
      "CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0 has a total capacity of 23.6 GiB";
  const auto gpu = pipeline::libtorch_failure_message(cuda, p, true, true);
  EXPECT_EQ(gpu.rfind("out of memory on the GPU rendering 832×480×81: CUDA out of memory.", 0), 0u)
      << gpu;
  EXPECT_NE(gpu.find("--block-swap N; the studio's \"Blocks in host memory\""), std::string::npos);
  EXPECT_NE(gpu.find("--fp8; the studio's \"Multiply in FP8\""), std::string::npos);
  EXPECT_EQ(gpu.find("--precision"), std::string::npos);  // bf16 already (auto)
  // Only the remedies that apply: every block swapped already, FP8 on or
  // absent from the family; bf16 where the preset asks for fp32.
  p.precision = "fp32";
  const auto bare = pipeline::libtorch_failure_message(cuda, p);
  EXPECT_EQ(bare.find("--block-swap"), std::string::npos) << bare;
  EXPECT_EQ(bare.find("--fp8"), std::string::npos);
  EXPECT_NE(bare.find("a smaller size (or batch), --precision bf16, or a GPU with more memory; "
                      "nothing was written"),
            std::string::npos)
      << bare;
  p.frames = 1;
  const auto other = pipeline::libtorch_failure_message("shape mismatch\nmore", p);
  EXPECT_EQ(other, "LibTorch: shape mismatch; nothing was written");
  EXPECT_NE(pipeline::libtorch_failure_message("CUDA out of memory.", p).find(" 832×480: "),
            std::string::npos);
}

TEST(Pipeline, SizesAreSnappedWithAMessage) {
  auto p = tiny();
  p.frames = 10, p.width = 70, p.height = 40;
  std::vector<std::string> msgs;
  pipeline::RunCallbacks cb;
  cb.on_message = [&](const std::string& m) { msgs.push_back(m); };
  pipeline::Pipeline pipe;
  const auto r = pipe.generate(p, cb);
  EXPECT_EQ(r.preset.frames, 9);
  EXPECT_EQ(r.preset.width, 64);
  EXPECT_EQ(r.preset.height, 48);
  EXPECT_EQ(r.frames.sizes(), (std::vector<int64_t>{9, 48, 64, 3}));
  ASSERT_EQ(msgs.size(), 3u);
  EXPECT_THAT(msgs[0], HasSubstr("frames 10 → 9"));
}

TEST(Pipeline, FrameCountsAreSnappedToFillTheDitsTimePatches) {
  // The fixture DiT made to take 3 latent frames per token (random weights).
  TempDir dir;
  auto c = diffusion::WanModel::load(fixture("wan21_dit_tiny.safetensors")).config();
  c.patch_t = 3;
  diffusion::WanModel m(c);
  std::vector<std::pair<std::string, torch::Tensor>> tensors;
  torch::manual_seed(0);  // small random weights (a new module's memory is not initialised)
  for (const auto& p : m.module().named_parameters())
    tensors.emplace_back(p.key(), torch::randn_like(p.value()) * 0.02);
  io::save_safetensors(dir / "dit.safetensors", tensors, {{"config", c.to_json()}});
  pipeline::Pipeline pipe;
  auto p = tiny();
  p.model = dir / "dit.safetensors";
  EXPECT_EQ(pipe.generate(p).frames.size(0), 9);  // 3 latent frames: one token deep
  // 4 latent frames → 3, 5 → 6: the nearest whole tokens, with a message.
  std::vector<std::string> msgs;
  pipeline::RunCallbacks cb;
  cb.on_message = [&](const std::string& s) { msgs.push_back(s); };
  p.frames = 13;
  EXPECT_EQ(pipe.generate(p, cb).preset.frames, 9);
  EXPECT_THAT(msgs,
              Contains(HasSubstr(
                  "frames 13 → 9 (this DiT takes 3 latent frames per token: 9, 21, 33 … frames)")));
  p.frames = 17;
  EXPECT_EQ(pipe.generate(p, cb).frames.size(0), 21);
}

TEST(Pipeline, StepCallbackAndPreview) {
  pipeline::RunCallbacks cb;
  cb.want_preview = true;
  std::vector<int> steps;
  cb.on_step = [&](const pipeline::StepEvent& e) {
    steps.push_back(e.step);
    EXPECT_EQ(e.total, 3);
    EXPECT_GE(e.seconds_per_step, 0.0);
    EXPECT_EQ(e.preview.sizes(),
              (std::vector<int64_t>{3, 6, 8, 3}));  // latent frames × h × w × RGB
    EXPECT_EQ(e.preview.scalar_type(), torch::kUInt8);
  };
  pipeline::Pipeline pipe;
  pipe.generate(tiny(), cb);
  EXPECT_EQ(steps, (std::vector<int>{1, 2, 3}));
}

TEST(Pipeline, CancelStopsWithinAStepAndLeavesNoFile) {
  TempDir dir;
  std::atomic<bool> cancel{false};
  pipeline::RunCallbacks cb;
  cb.cancel = &cancel;
  int seen = 0;
  cb.on_step = [&](const pipeline::StepEvent&) {
    ++seen;
    cancel = true;
  };
  pipeline::Pipeline pipe;
  EXPECT_THROW(render::render(pipe, tiny((dir / "out.mp4").string()), cb), Cancelled);
  EXPECT_EQ(seen, 1);
  EXPECT_EQ(std::distance(std::filesystem::directory_iterator(dir.path()), {}), 0);
}

TEST(Pipeline, ModelErrorsNameTheKeyOrFile) {
  pipeline::Pipeline pipe;
  auto p = tiny();
  p.model = "/no/such/model.safetensors";
  EXPECT_THAT(error_of([&] { pipe.generate(p); }), HasSubstr("key 'model'"));
  p = tiny();
  p.models_dir = "/tmp";
  p.vae = "not_there";
  EXPECT_THAT(error_of([&] { pipe.generate(p); }), HasSubstr("/tmp/vae"));
  p = tiny();
  p.vae = fixture("wan21_dit_tiny.safetensors");  // a DiT is not a VAE
  EXPECT_THAT(error_of([&] { pipe.generate(p); }),
              HasSubstr("wan21_dit_tiny.safetensors: given as the Wan VAE for "
                        "wan21_dit_tiny.safetensors, but it is a Wan DiT, not a Wan VAE"));
  p = tiny();
  p.loras.push_back({"x.safetensors", 1.0});
  EXPECT_THAT(error_of([&] { pipe.generate(p); }), HasSubstr("loras"));
}

// A prompt outside the embedded model's grammar gets a note naming the form.
TEST(Pipeline, PromptsOutsideTheEmbeddedGrammarGetANote) {
  EXPECT_FALSE(embedded::prompt_note("a red circle moving left on a blue background"));
  EXPECT_FALSE(embedded::prompt_note("a  white triangle moving up on a black background"));
  for (const char* p :
       {"a fox running through snow", "A red circle moving left on a blue background",
        "a red circle moving left on a red background", ""}) {
    const auto note = embedded::prompt_note(p);
    ASSERT_TRUE(note) << p;
    EXPECT_THAT(*note, HasSubstr("a COLOUR SHAPE moving DIRECTION on a COLOUR background"));
    EXPECT_THAT(*note, HasSubstr(std::string("\"") + p + "\" is not one"));
  }
}

TEST(Presets, RoundTripAndValidation) {
  auto p = tiny("x.mp4");
  const auto back = Preset::from_json(p.to_json());
  EXPECT_EQ(back.to_json(), p.to_json());
  const std::pair<const char*, const char*> bad[] = {
      {R"({"promt": "typo"})", "key 'promt' is not a preset key"},
      {R"({"steps": "20"})", "key 'steps' must be an integer"},
      {R"({"steps": 0})", "key 'steps' must be between 1 and 1000, got 0"},
      {R"({"guidance": -1})", "key 'guidance' must be between"},
      {R"({"sampler": "ddim"})", "key 'sampler' names unknown sampler 'ddim'"},
      {R"({"precision": "fp8"})", "key 'precision'"},
      {R"({"format": "avi"})", "key 'format'"},
      {R"({"schema_version": 9})", "key 'schema_version' is 9: a preset of a newer Kinora"},
      {R"({"schema_version": 0})", "key 'schema_version' must be between 1 and"},
      {R"({"loras": [{"path": "a", "colour": 1}]})",
       "key 'loras[0].colour' is not a key of a LoRA (path or file, strength, strength_low)"},
      {R"({"loras": [{"strength": 1}]})", "key 'loras[0]'"},
      {R"([1, 2])", "must be a JSON object"}};
  for (const auto& [text, expected] : bad) {
    const auto msg =
        error_of([&, t = text] { Preset::from_json(nlohmann::json::parse(t), "my.json"); });
    EXPECT_THAT(msg, HasSubstr("my.json")) << text;
    EXPECT_THAT(msg, HasSubstr(expected)) << text;
  }
  // --set: typed values, strings kept as strings.
  p.set("steps=20");
  p.set("prompt=a cat");
  p.set("model=123");
  EXPECT_EQ(p.steps, 20);
  EXPECT_EQ(p.prompt, "a cat");
  EXPECT_EQ(p.model, "123");
  EXPECT_THAT(error_of([&] { p.set("steps=-3"); }), HasSubstr("key 'steps'"));
  EXPECT_THAT(error_of([&] { p.set("nokey"); }), HasSubstr("not key=value"));
}

// Pointing Kinora at a ComfyUI models folder: models by name, not path.
TEST(Pipeline, FindsModelsByNameInAComfyUIFolder) {
  TempDir dir;
  for (const char* sub : {"diffusion_models", "vae", "text_encoders"})
    std::filesystem::create_directories(dir / sub);
  std::filesystem::create_symlink(fixture("wan21_dit_tiny.safetensors"),
                                  dir / "diffusion_models/wan_tiny.safetensors");
  std::filesystem::create_symlink(fixture("wan21_vae_tiny.safetensors"),
                                  dir / "vae/wan_vae.safetensors");
  std::filesystem::create_symlink(fixture("umt5_enc_tiny.safetensors"),
                                  dir / "text_encoders/umt5.safetensors");
  std::filesystem::create_symlink(fixture("spm_tiny.model"), dir / "text_encoders/spiece.model");
  auto p = tiny();
  p.models_dir = dir.path().string();
  p.model = "wan_tiny";  // the extension may be left out
  p.vae = "wan_vae.safetensors";
  p.text_encoder = "umt5";
  p.tokenizer = "spiece.model";
  const auto paths = pipeline::resolve_models(p, pipeline::family_for(p));
  EXPECT_EQ(paths.model, dir / "diffusion_models/wan_tiny.safetensors");
  pipeline::Pipeline pipe;
  EXPECT_TRUE(torch::equal(pipe.generate(p).frames, pipe.generate(tiny()).frames));
}

// Models and LoRAs sorted into subfolders, as ComfyUI users keep them, are
// found by their bare names (what a restored preset records); a name in two
// subfolders is an error naming both.
TEST(Pipeline, FindsModelsAndLorasByNameInSubfolders) {
  TempDir dir;
  namespace fs = std::filesystem;
  for (const char* sub : {"diffusion_models/wan/t2v", "vae", "text_encoders", "loras/wan/style"})
    fs::create_directories(dir / sub);
  fs::create_symlink(fixture("wan21_dit_tiny.safetensors"),
                     dir / "diffusion_models/wan/t2v/sub_dit.safetensors");
  fs::create_symlink(fixture("wan21_vae_tiny.safetensors"), dir / "vae/wan_vae.safetensors");
  fs::create_symlink(fixture("umt5_enc_tiny.safetensors"), dir / "text_encoders/umt5.safetensors");
  fs::create_symlink(fixture("spm_tiny.model"), dir / "text_encoders/spiece.model");
  io::save_safetensors(dir / "loras/wan/style/ink.safetensors",
                       {{"lora_unet_blocks_0_self_attn_q.lora_down.weight", torch::ones({4, 128})},
                        {"lora_unet_blocks_0_self_attn_q.lora_up.weight", torch::ones({128, 4})}});
  auto p = tiny();
  p.models_dir = dir.path().string();
  p.model = "sub_dit";
  p.vae = "wan_vae";
  p.text_encoder = "umt5";
  p.tokenizer = "spiece.model";
  EXPECT_EQ(pipeline::resolve_models(p, pipeline::family_for(p)).model,
            dir / "diffusion_models/wan/t2v/sub_dit.safetensors");
  EXPECT_EQ(pipeline::resolve_lora_file(p, "ink"), dir / "loras/wan/style/ink.safetensors");
  EXPECT_EQ(pipeline::resolve_lora_tag(p, "ink"), dir / "loras/wan/style/ink.safetensors");
  {
    // A folder of that name beside the preset does not hide the LoRA; a
    // name found only as a folder is said to be one.
    auto beside = p;
    beside.base_dir = dir.path();
    fs::create_directories(dir / "ink");
    EXPECT_EQ(pipeline::resolve_lora_file(beside, "ink"), dir / "loras/wan/style/ink.safetensors");
    EXPECT_THAT(error_of([&] { pipeline::resolve_lora_file(beside, "vae"); }),
                HasSubstr((dir / "vae").string() + " is a folder, not a LoRA file"));
    fs::remove(dir / "ink");
  }
  // A path inside the folder that is not there (another machine's layout,
  // as its outputs record it): the one file of its name. Outside: not found.
  EXPECT_EQ(pipeline::resolve_lora_file(p, "other/ink"), dir / "loras/wan/style/ink.safetensors");
  EXPECT_EQ(pipeline::resolve_lora_tag(p, "other/ink.safetensors"),
            dir / "loras/wan/style/ink.safetensors");
  auto elsewhere = p;
  elsewhere.model = "wan/i2v/sub_dit.safetensors";
  EXPECT_EQ(pipeline::resolve_models(elsewhere, pipeline::family_for(p)).model,
            dir / "diffusion_models/wan/t2v/sub_dit.safetensors");
  EXPECT_THAT(error_of([&] { pipeline::resolve_lora_file(p, "../elsewhere/ink"); }),
              HasSubstr("not found"));
  {
    // One name for files in two of models_dir's folders is refused, naming
    // both; the path inside models_dir picks one.
    fs::create_directories(dir / "checkpoints");
    fs::create_symlink(fixture("wan21_dit_tiny.comfy.safetensors"),
                       dir / "checkpoints/sub_dit.safetensors");
    const auto both = error_of([&] { pipeline::resolve_models(p, pipeline::family_for(p)); });
    EXPECT_THAT(both, HasSubstr("'sub_dit' names more than one file under"));
    EXPECT_THAT(both, HasSubstr("checkpoints/sub_dit.safetensors"));
    EXPECT_THAT(both, HasSubstr("diffusion_models/wan/t2v/sub_dit.safetensors"));
    auto chosen = p;
    chosen.model = "checkpoints/sub_dit.safetensors";
    EXPECT_EQ(pipeline::resolve_models(chosen, pipeline::family_for(chosen)).model,
              dir / "checkpoints/sub_dit.safetensors");
    chosen.model = "wan/t2v/sub_dit";
    EXPECT_EQ(pipeline::resolve_models(chosen, pipeline::family_for(chosen)).model,
              dir / "diffusion_models/wan/t2v/sub_dit.safetensors");
    fs::remove(dir / "checkpoints/sub_dit.safetensors");
    // A name that is a pipe, not a file, is said to be one.
    auto piped = p;
    piped.vae = "pipe";
    ASSERT_EQ(::mkfifo((dir / "vae/pipe.safetensors").c_str(), 0600), 0);
    EXPECT_THAT(error_of([&] { pipeline::resolve_models(piped, pipeline::family_for(piped)); }),
                HasSubstr("pipe.safetensors is not a regular file"));
    fs::remove(dir / "vae/pipe.safetensors");
  }
  // A folder linked into itself: the one file, reached by several paths.
  fs::create_directory_symlink(dir / "loras/wan", dir / "loras/wan/style/up");
  EXPECT_EQ(fs::weakly_canonical(pipeline::resolve_lora_file(p, "ink")),
            fs::weakly_canonical(dir / "loras/wan/style/ink.safetensors"));
  // The same name twice.
  fs::create_directories(dir / "loras/flux");
  fs::copy_file(dir / "loras/wan/style/ink.safetensors", dir / "loras/flux/ink.safetensors");
  const auto twice = error_of([&] { pipeline::resolve_lora_file(p, "ink"); });
  EXPECT_THAT(twice, HasSubstr("'ink' is in more than one subfolder"));
  EXPECT_THAT(twice, HasSubstr("flux/ink.safetensors, wan/style/ink.safetensors"));
  // The embedded model's own LoRAs are found with a models folder too (after
  // its loras/, which wins for a name in both).
  if (const auto embedded_dir = embedded::model_dir()) {
    auto e = pipeline::Preset::embedded_defaults();
    e.models_dir = dir.path().string();
    const auto own = *embedded_dir / "loras" / "kinora-tiny-big.safetensors";
    EXPECT_EQ(pipeline::resolve_lora_tag(e, "kinora-tiny-big"), own);
    EXPECT_EQ(pipeline::resolve_lora_file(e, "kinora-tiny-big"), own);
    fs::copy_file(dir / "loras/wan/style/ink.safetensors",
                  dir / "loras/kinora-tiny-big.safetensors");
    EXPECT_EQ(pipeline::resolve_lora_tag(e, "kinora-tiny-big"),
              dir / "loras/kinora-tiny-big.safetensors");
    EXPECT_EQ(pipeline::resolve_lora_file(e, "kinora-tiny-big"),
              dir / "loras/kinora-tiny-big.safetensors");
    fs::remove(dir / "loras/kinora-tiny-big.safetensors");
    EXPECT_THAT(error_of([&] { pipeline::resolve_lora_tag(e, "nowhere"); }),
                HasSubstr("not found in " + (dir / "loras").string() + " or " +
                          (*embedded_dir / "loras").string()));
  }
  // A prompt's tag picks one by its path inside loras/; nothing outside it.
  EXPECT_EQ(pipeline::resolve_lora_tag(p, "flux/ink"), dir / "loras/flux/ink.safetensors");
  for (const char* outside : {"../vae/wan_vae.safetensors", "/etc/passwd", "flux/../../x"})
    EXPECT_THAT(error_of([&] { pipeline::resolve_lora_tag(p, outside); }),
                HasSubstr("not a path elsewhere"))
        << outside;
  // An output records each file by its path inside its folder, which finds
  // that one file again; a file at the top of its folder by its name.
  p.output = (dir / "sub.mp4").string();
  p.loras = {{"wan/style/ink", 0.01}};
  pipeline::Pipeline pipe;
  render::render(pipe, p);
  const auto meta = media::read_embedded_parameters(dir / "sub.mp4");
  EXPECT_EQ(meta["preset"]["model"], "wan/t2v/sub_dit.safetensors");
  EXPECT_EQ(meta["preset"]["vae"], "wan_vae");
  EXPECT_EQ(meta["preset"]["loras"][0]["path"], "wan/style/ink.safetensors");
  auto again = Preset::restored(meta, (dir / "sub.mp4").string());
  again.models_dir = dir.path().string();
  EXPECT_EQ(pipeline::resolve_models(again, pipeline::family_for(again)).model,
            dir / "diffusion_models/wan/t2v/sub_dit.safetensors");
  EXPECT_EQ(pipeline::resolve_lora_file(again, again.loras.at(0).path),
            dir / "loras/wan/style/ink.safetensors");
}

// The output is what its name says: one frame into an .mp4 is a one-frame
// video (not a .png beside it), and nine frames are not squeezed into a .png.
TEST(Pipeline, TheOutputIsWhatItsNameSays) {
  TempDir dir;
  auto p = tiny((dir / "still.mp4").string());
  p.frames = 1;
  pipeline::Pipeline pipe;
  const auto r = render::render(pipe, p);
  EXPECT_EQ(r.output, dir / "still.mp4");
  EXPECT_EQ(media::read_frames(dir / "still.mp4").size(0), 1);
  EXPECT_EQ(media::read_embedded_parameters(dir / "still.mp4")["preset"]["frames"], 1);
  p.output = (dir / "nine.png").string();
  p.frames = 9;
  EXPECT_THAT(error_of([&] { render::render(pipe, p); }), HasSubstr("a .png holds one image"));
  EXPECT_FALSE(std::filesystem::exists(dir / "nine.png"));
}

// Latents gone bad stop the render at that step, instead of decoding NaN
// into a black video; a model file with NaN weights is named, with the
// weight; a text encoder's, before sampling.
TEST(Pipeline, NonFiniteLatentsStopTheRenderNamingTheFileAtFault) {
  TempDir dir;
  test::write_poisoned("wan21_dit_tiny.safetensors", dir / "nan.safetensors",
                       [](const std::string& n) { return n == "head.head.bias"; });
  auto p = tiny((dir / "nan.mp4").string());
  p.model = (dir / "nan.safetensors").string();
  pipeline::Pipeline pipe;
  auto msg = error_of([&] { render::render(pipe, p); });
  EXPECT_THAT(msg, HasSubstr("nan.safetensors: its weight head.head.bias holds NaN or infinite "
                             "values (the latents did at step 1)"));
  EXPECT_FALSE(std::filesystem::exists(dir / "nan.mp4"));
  test::write_poisoned("umt5_enc_tiny.safetensors", dir / "nan_te.safetensors",
                       [](const std::string& n) { return n == "norm.weight"; });
  p = tiny((dir / "nan.mp4").string());
  p.text_encoder = (dir / "nan_te.safetensors").string();
  msg = error_of([&] { render::render(pipe, p); });
  EXPECT_THAT(msg, HasSubstr((dir / "nan_te.safetensors").string() + ": its weight "));
  EXPECT_THAT(msg, HasSubstr("holds NaN or infinite values (so did the text encodings)"));
  EXPECT_FALSE(std::filesystem::exists(dir / "nan.mp4"));
}

// A decoder with NaN weights: the render stops naming the VAE file, instead
// of writing a black video.
TEST(Pipeline, NonFiniteDecodedFramesStopTheRenderNamingTheVae) {
  TempDir dir;
  test::write_poisoned(
      "wan21_vae_tiny.safetensors", dir / "nan_vae.safetensors", [](const std::string& n) {
        return n.rfind("decoder.head.", 0) == 0 && n.find("weight") != std::string::npos;
      });
  auto p = tiny((dir / "nan.mp4").string());
  p.vae = (dir / "nan_vae.safetensors").string();
  pipeline::Pipeline pipe;
  const auto msg = error_of([&] { render::render(pipe, p); });
  EXPECT_THAT(msg, HasSubstr("nan_vae.safetensors: the decoded frames hold NaN or infinite"));
  EXPECT_FALSE(std::filesystem::exists(dir / "nan.mp4"));
}

TEST(Presets, PathsSeedsAndTextFromElsewhere) {
  // Relative paths resolve against the preset's folder.
  auto p = tiny("clip.mp4");
  p.base_dir = "/presets";
  EXPECT_EQ(p.output_path(), std::filesystem::path("/presets/clip.mp4"));
  p.output = "/abs/clip.mp4";
  EXPECT_EQ(p.output_path(), std::filesystem::path("/abs/clip.mp4"));
  // An output folder keeps outputs inside it.
  TempDir dir;
  p.output = "sub/../clip.mp4";
  p.place_output_in(dir.path(), "x.json");
  EXPECT_EQ(p.output, (dir / "clip.mp4").string());
  for (const char* out : {"../clip.mp4", "/etc/clip.mp4", "a/../../clip.mp4"}) {
    p.output = out;
    EXPECT_THAT(error_of([&] { p.place_output_in(dir.path(), "x.json"); }),
                HasSubstr("x.json: key 'output'"))
        << out;
  }
  std::filesystem::create_directory_symlink("/tmp", dir / "link");
  p.output = "link/clip.mp4";
  EXPECT_THAT(error_of([&] { p.place_output_in(dir.path(), "x.json"); }),
              HasSubstr("through a link"));
  // Seeds: one rule.
  EXPECT_EQ(pipeline::parse_seed("0", "s"), 0);
  EXPECT_EQ(pipeline::parse_seed("-1", "s"), pipeline::kRandomSeed);
  EXPECT_EQ(pipeline::parse_seed("9007199254740992", "s"), pipeline::kMaxSeed);
  for (const char* bad : {"9007199254740993", "-2", "", "1e3", "18446744073709551616"})
    EXPECT_THAT(error_of([&] { pipeline::parse_seed(bad, "s"); }),
                HasSubstr(std::string("s must be an integer from 0 to 9007199254740992")))
        << bad;
  EXPECT_EQ(Preset::from_json(nlohmann::json::object()).seed, pipeline::kRandomSeed);
  EXPECT_NE(pipeline::resolve_seed(pipeline::kRandomSeed), pipeline::kRandomSeed);
  EXPECT_EQ(pipeline::resolve_seed(7), 7);
  // Text must be UTF-8, named by key and byte.
  nlohmann::json j = {{"prompt", std::string("ok \xc3\x28")}};
  EXPECT_THAT(error_of([&] { Preset::from_json(j, "p.json"); }),
              HasSubstr("p.json: key 'prompt' is not valid UTF-8 (byte 3 of 5)"));
  // A render's parameters restored: names, not paths; no output.
  auto made = tiny("/home/someone/videos/clip.mp4");
  made.models_dir = "/home/someone/models";
  const auto r =
      Preset::restored({{"kinora", {{"version", "Kinora x"}}}, {"preset", made.to_json()}}, "c");
  EXPECT_EQ(r.model, "wan21_dit_tiny.safetensors");
  EXPECT_EQ(r.models_dir, "");
  // A path inside a models folder is kept; one that leaves it is a name.
  made.model = "wan/t2v/dit.safetensors";
  made.vae = "../vae/x.safetensors";
  made.loras = {{"styles/ink.safetensors", 1.0}, {"a/./b.safetensors", 1.0}};
  const auto sub =
      Preset::restored({{"kinora", {{"version", "Kinora x"}}}, {"preset", made.to_json()}}, "c");
  EXPECT_EQ(sub.model, "wan/t2v/dit.safetensors");
  EXPECT_EQ(sub.vae, "x.safetensors");
  EXPECT_EQ(sub.loras.at(0).path, "styles/ink.safetensors");
  EXPECT_EQ(sub.loras.at(1).path, "b.safetensors");
  EXPECT_EQ(r.output, "");
  EXPECT_EQ(r.prompt, made.prompt);
}

TEST(Media, VideoEncodingReadsNoByteAfterTheFrames) {
  // The frames end exactly where a page the process may not read begins: the
  // colour conversion's SIMD used to read a few bytes past the last pixel
  // (valgrind: "Invalid read of size 16"), which here is a crash.
  const long page = ::sysconf(_SC_PAGESIZE);
  const int64_t F = 17, H = 64, W = 64, bytes = F * H * W * 3;
  ASSERT_EQ(bytes % page, 0);
  void* mem = ::mmap(nullptr, static_cast<std::size_t>(bytes + page), PROT_READ | PROT_WRITE,
                     MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  ASSERT_NE(mem, MAP_FAILED);
  const std::unique_ptr<void, std::function<void(void*)>> unmap(
      mem, [&](void* m) { ::munmap(m, static_cast<std::size_t>(bytes + page)); });
  auto* base = static_cast<uint8_t*>(mem);
  ASSERT_EQ(::mprotect(base + bytes, static_cast<std::size_t>(page), PROT_NONE), 0);
  auto frames = torch::from_blob(base, {F, H, W, 3}, torch::kUInt8);
  frames.copy_(torch::randint(0, 256, {F, H, W, 3}, torch::kUInt8));
  TempDir dir;
  for (const char* name : {"a.mp4", "a.webm", "a.mov"}) {
    media::write_output(media::prepare_output(dir / name, "", F, false), frames, {});
    EXPECT_EQ(media::read_frames(dir / name).size(0), F) << name;
  }
}

// A long run (the studio's worker, one batch): 250 renders in one process,
// each written to a file, with memory flat: the resident size after the last
// is within 5% of what it was after the 100th. (It settles over the first
// renders: on a loaded machine it can rise and fall until about the 40th.)
TEST(LongRun, TwoHundredFiftyRendersKeepMemoryFlat) {
  auto rss_mib = [] {
    std::ifstream f("/proc/self/status");
    std::string line;
    while (std::getline(f, line))
      if (line.rfind("VmRSS:", 0) == 0) return std::stod(line.substr(6)) / 1024.0;
    return -1.0;
  };
  // One thread throughout: a thread count that follows the machine's load
  // (other tests beside this one) would add threads, and their stacks and
  // buffers, halfway through.
  const char* threads = std::getenv("KINORA_THREADS");
  const std::string saved = threads ? threads : "";
  ::setenv("KINORA_THREADS", "1", 1);
  TempDir dir;
  pipeline::Pipeline pipe;
  double after_settling = 0;
  for (int i = 1; i <= 250; ++i) {
    auto p = tiny((dir / ("clip" + std::to_string(i % 3) + ".mp4")).string());
    p.width = 32, p.height = 32, p.frames = 5, p.steps = 2, p.seed = i;
    render::render(pipe, p, {}, /*overwrite=*/true);
    if (i == 100) after_settling = rss_mib();
  }
  const double after_last = rss_mib();
  if (threads)
    ::setenv("KINORA_THREADS", saved.c_str(), 1);
  else
    ::unsetenv("KINORA_THREADS");
  EXPECT_LT(after_last, after_settling * 1.05)
      << after_settling << " MiB after the 100th render, " << after_last << " MiB after the 250th";
  RecordProperty("rss_after_100th_mib", std::to_string(after_settling));
  RecordProperty("rss_after_250th_mib", std::to_string(after_last));
}

// A model file rewritten while it renders: nothing is written and the error
// names the file (the weights came from the file as it was); the next job
// loads it again.
TEST(Pipeline, AModelFileChangedDuringTheRenderIsNamedAndReloaded) {
  TempDir dir;
  auto p = tiny();
  p.model = (dir / "dit.safetensors").string();
  std::filesystem::copy_file(fixture("wan21_dit_tiny.safetensors"), p.model);
  pipeline::Pipeline pipe;
  pipe.generate(p);
  int loads = 0;
  pipeline::RunCallbacks cb;
  cb.on_progress = [&](const pipeline::Progress& e) {
    loads += e.stage == "load" && !e.what.empty();
  };
  pipe.generate(p, cb);
  EXPECT_EQ(loads, 0);  // kept from the first job
  cb.on_step = [&](const pipeline::StepEvent& e) {
    if (e.step == 1)
      std::filesystem::last_write_time(
          p.model, std::filesystem::last_write_time(p.model) + std::chrono::seconds(5));
  };
  EXPECT_THAT(error_of([&] { pipe.generate(p, cb); }),
              HasSubstr("dit.safetensors: changed on disk during the render"));
  cb.on_step = {};
  loads = 0;
  const auto r = pipe.generate(p, cb);
  EXPECT_GT(loads, 0);
  EXPECT_EQ(r.metadata["model_files"]["model"]["file"], "dit.safetensors");
}
