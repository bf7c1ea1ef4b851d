// The core's seams: a model family defined here, in a few lines, renders
// through the same Pipeline::generate and render() as Wan, without a line of
// pipeline/ knowing it; and the device reaches every render.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <torch/cuda.h>

#include "base/device.h"
#include "io/safetensors.h"
#include "media/output.h"
#include "pipeline/family.h"
#include "pipeline/pipeline.h"
#include "render/render.h"
#include "test_util.h"
#include "wan_shapes.h"

namespace kinora {
namespace {
using pipeline::Preset;
using test::error_of;
using test::TempDir;
using ::testing::HasSubstr;

// ---------------------------------------------------------------- a toy family

// Context: one row per word, each the word's length and a constant.
struct ToyConditioner : text::TextConditioner {
  layers::Conditioning encode(const std::string& prompt,
                              const std::function<void(const std::string&)>&) override {
    std::vector<float> rows;
    std::size_t start = 0;
    do {
      const auto end = std::min(prompt.find(' ', start), prompt.size());
      rows.push_back(static_cast<float>(end - start));
      rows.push_back(1.0f);
      start = end + 1;
    } while (start < prompt.size());
    return {torch::tensor(rows).view({1, -1, 2}), {}, {}, {}};
  }
  int64_t context_dim() const override { return 2; }
  void to(torch::Device) override {}
  int64_t weight_bytes() const override { return 0; }
};

// A velocity that pulls the latent towards the context's mean.
struct ToyDenoiser : diffusion::Denoiser {
  diffusion::Prediction prediction() const override { return diffusion::Prediction::FlowVelocity; }
  torch::Tensor denoise(const torch::Tensor& x, const torch::Tensor& t,
                        const layers::Conditioning& c) override {
    EXPECT_EQ(t.size(0), x.size(0));
    const auto target = c.context.mean({1, 2}).view({-1, 1, 1, 1, 1}) / 4;
    return x - target;
  }
  int64_t latent_channels() const override { return 3; }
  std::array<int64_t, 3> latent_patch() const override { return {1, 1, 1}; }
  int64_t context_dim() const override { return 2; }
  void to(torch::Device) override {}
};

// Pixels are latent cells, twice as large; frames are latent frames.
struct ToyAutoencoder : vae::Autoencoder {
  int64_t latent_channels() const override { return 3; }
  int64_t spatial_compression() const override { return 2; }
  int64_t temporal_compression() const override { return 1; }
  std::vector<double> latents_mean() const override { return {0, 0, 0}; }
  std::vector<double> latents_std() const override { return {1, 1, 1}; }
  torch::Tensor encode(const torch::Tensor& video) override {
    return torch::avg_pool3d(video, {1, 2, 2});
  }
  torch::Tensor decode_video(const torch::Tensor& latent, const FrameProgress& progress) override {
    std::vector<torch::Tensor> frames;
    for (int64_t f = 0; f < latent.size(2); ++f) {
      frames.push_back(latent.slice(2, f, f + 1).repeat_interleave(2, 3).repeat_interleave(2, 4));
      if (progress) progress(f + 1, latent.size(2));
    }
    return torch::cat(frames, 2).tanh();
  }
  void to(torch::Device) override {}
};

struct ToyFamily : pipeline::Family {
  std::string name() const override { return "toy"; }
  bool recognises(const std::filesystem::path&) const override { return false; }
  std::vector<Role> roles() const override { return {}; }  // no files
  Preset defaults() const override {
    Preset p;
    p.width = 8, p.height = 6, p.frames = 3, p.steps = 4, p.sampler = "flow_euler";
    p.shift = 1.0, p.guidance = 2.0, p.precision = "fp32";
    return p;
  }
  std::vector<std::string> snap(Preset& p) const override {
    if (p.width % 2 == 0) return {};
    p.width += 1;
    return {"width → even"};
  }
  pipeline::GuidanceStrategy guidance(const Preset&) const override {
    return pipeline::GuidanceStrategy::ClassifierFree;
  }
  std::string default_negative_prompt(const pipeline::ModelFiles&) const override { return "a"; }
  pipeline::LoadedModels load(const pipeline::ModelFiles&, layers::Precision,
                              const std::function<void(const std::string&)>& say) const override {
    say("toy parts");
    pipeline::LoadedModels m;
    m.denoiser = std::make_shared<ToyDenoiser>();
    m.autoencoder = std::make_shared<ToyAutoencoder>();
    m.conditioner = std::make_shared<ToyConditioner>();
    return m;
  }
  void check(const pipeline::LoadedModels&, const Preset&,
             const pipeline::ModelFiles&) const override {}
  pipeline::PreviewMap preview(const pipeline::LoadedModels&) const override {
    return {torch::eye(3), torch::zeros({3})};
  }
};

Preset toy_preset() {
  pipeline::register_family(std::make_shared<ToyFamily>());
  Preset p = Preset::from_json({{"family", "toy"}, {"prompt", "a longer prompt"}, {"seed", 3}});
  EXPECT_EQ(p.width, 8);  // the family's defaults
  EXPECT_EQ(p.steps, 4);
  return p;
}

TEST(Families, AToyFamilyRendersThroughTheSamePipeline) {
  const Preset p = toy_preset();
  pipeline::Pipeline pipe;
  std::vector<int> steps;
  std::vector<int64_t> decoded;
  std::vector<std::string> said;
  pipeline::RunCallbacks cb;
  cb.want_preview = true;
  cb.on_message = [&](const std::string& m) { said.push_back(m); };
  cb.on_step = [&](const pipeline::StepEvent& e) {
    steps.push_back(e.step);
    EXPECT_EQ(e.preview.sizes(), (std::vector<int64_t>{3, 3, 4, 3}));
  };
  cb.on_progress = [&](const pipeline::Progress& e) {
    if (e.stage == "decode") decoded.push_back(e.done);
    if (e.stage == "load") said.push_back("loading " + e.what);
  };
  const auto r = pipe.generate(p, cb);
  EXPECT_EQ(r.frames.sizes(), (std::vector<int64_t>{3, 6, 8, 3}));
  EXPECT_EQ(steps, (std::vector<int>{1, 2, 3, 4}));
  EXPECT_EQ(decoded, (std::vector<int64_t>{0, 1, 2, 3}));  // 0: decoding begins
  EXPECT_THAT(said, ::testing::Contains("loading toy parts"));
  EXPECT_EQ(r.preset.family, "toy");
  EXPECT_EQ(r.metadata["preset"]["family"], "toy");
  EXPECT_EQ(r.metadata["preset"]["device"], "cpu");
  // Deterministic from the seed; guided (cond and uncond differ in their
  // context), so the scale matters.
  EXPECT_TRUE(torch::equal(pipe.generate(p).frames, r.frames));
  auto unguided = p;
  unguided.guidance = 1.0;
  EXPECT_FALSE(torch::equal(pipe.generate(unguided).frames, r.frames));
  // And to a file, with its parameters, like any other render.
  TempDir dir;
  auto file = p;
  file.output = (dir / "toy.mp4").string();
  render::render(pipe, file);
  EXPECT_EQ(media::read_embedded_parameters(dir / "toy.mp4")["preset"]["family"], "toy");
  EXPECT_EQ(media::read_frames(dir / "toy.mp4").size(0), 3);
}

TEST(Families, TheFamilyComesFromThePresetOrTheModelFile) {
  toy_preset();
  EXPECT_EQ(pipeline::family_for(Preset::embedded_defaults()).name(), "wan");
  // A DiT Kinora trained (a copy of the embedded one here) brings the
  // embedded model's defaults at its own size; another Wan DiT Wan's.
  const auto& wan_family = pipeline::family_named("wan");
  const auto own =
      wan_family.defaults_for(test::fixture("../../assets/kinora-tiny-wan-dit.safetensors"));
  EXPECT_EQ(own.width, 64);
  EXPECT_EQ(own.frames, 17);
  EXPECT_EQ(own.steps, Preset::embedded_defaults().steps);
  EXPECT_EQ(own.shift, 3.0);
  EXPECT_EQ(wan_family.defaults_for(test::fixture("wan21_dit_tiny.safetensors")).width, 832);
  {  // the size and shift its metadata records
    TempDir dir;
    const auto src = io::SafetensorsFile::open(test::fixture("wan21_dit_tiny.safetensors"));
    std::vector<std::pair<std::string, torch::Tensor>> tensors;
    for (const auto& t : src->tensors()) tensors.emplace_back(t.name, src->get(t.name));
    auto meta = src->metadata();
    meta["kinora"] = R"({"width": 96, "height": 48, "frames": 9, "training_shift": 2.5})";
    io::save_safetensors(dir / "trained.safetensors", tensors, meta);
    const auto trained = wan_family.defaults_for(dir / "trained.safetensors");
    EXPECT_EQ(trained.width, 96);
    EXPECT_EQ(trained.height, 48);
    EXPECT_EQ(trained.frames, 9);
    EXPECT_EQ(trained.shift, 2.5);
  }
  Preset wan;
  wan.model = test::fixture("wan21_dit_tiny.safetensors");
  EXPECT_EQ(pipeline::family_for(wan).name(), "wan");
  Preset vae_as_model;
  vae_as_model.model = test::fixture("wan21_vae_tiny.safetensors");
  EXPECT_THAT(error_of([&] { pipeline::family_for(vae_as_model); }),
              HasSubstr("wan21_vae_tiny.safetensors: a Wan VAE, not a denoiser: give it with "
                        "--vae (preset key 'vae')"));
  Preset clip_as_model;
  clip_as_model.model = test::fixture("clip_l_tiny.safetensors");
  EXPECT_THAT(error_of([&] { pipeline::family_for(clip_as_model); }),
              HasSubstr("a CLIP text encoder, not a denoiser: give it with --clip"));
  Preset ae_as_model;
  ae_as_model.model = test::fixture("flux1_ae_tiny.safetensors");
  EXPECT_THAT(error_of([&] { pipeline::family_for(ae_as_model); }),
              HasSubstr(": an image autoencoder, not a denoiser: give it with --vae"));
  Preset lora_as_model;
  lora_as_model.model = test::fixture("../../assets/loras/kinora-tiny-big.safetensors");
  EXPECT_THAT(error_of([&] { pipeline::family_for(lora_as_model); }),
              HasSubstr("kinora-tiny-big.safetensors: a LoRA, not a model: give it with --lora"));
  TempDir dir;
  Preset other;
  other.model = (dir / "other.safetensors").string();
  io::save_safetensors(other.model, std::vector<std::pair<std::string, torch::Tensor>>{
                                        {"encoder.w", torch::zeros({4, 4})}});
  EXPECT_THAT(error_of([&] { pipeline::family_for(other); }),
              HasSubstr("other.safetensors: no model family recognises this file"));
  EXPECT_THAT(error_of([&] {
                Preset::from_json({{"family", "sd9"}}, "p.json");
              }),
              HasSubstr("p.json: key 'family' names no model family named 'sd9' (the families: "
                        "wan, flux, sdxl, toy"));
}

// ---------------------------------------------------------------- devices

TEST(Devices, NamesResolveOrSayWhatThereIs) {
  EXPECT_EQ(resolve_device("cpu"), torch::Device(torch::kCPU));
  EXPECT_EQ(device_name(torch::Device(torch::kCUDA, 1)), "cuda:1");
  EXPECT_EQ(available_devices().front().name, "cpu");
  EXPECT_THAT(error_of([] { resolve_device("gpu"); }), HasSubstr("expected auto, cpu, cuda"));
  if (torch::cuda::is_available()) {
    EXPECT_TRUE(resolve_device("auto").is_cuda());
    EXPECT_THAT(error_of([] { resolve_device("cuda:99"); }), HasSubstr("cuda:0 … cuda:"));
  } else {
    EXPECT_EQ(resolve_device("auto"), torch::Device(torch::kCPU));
    EXPECT_THAT(error_of([] { resolve_device("cuda"); }), HasSubstr("sees no CUDA device"));
    EXPECT_EQ(available_devices().size(), 1u);
  }
  EXPECT_THAT(error_of([] {
                Preset::from_json({{"device", "gpu"}}, "p.json");
              }),
              HasSubstr("p.json: key 'device' must be \"auto\", \"cpu\", \"cuda\" or \"cuda:N\""));
}

// The device a render ran on is recorded; asking for one that is not there
// is an error before anything loads. (The CUDA twin of this runs where a GPU
// is: the same test sees one.)
TEST(Devices, RenderOnTheDeviceAskedAndRecordIt) {
  Preset p = toy_preset();
  pipeline::Pipeline pipe;
  p.device = "cpu";
  EXPECT_EQ(pipe.generate(p).preset.device, "cpu");
  p.device = "auto";
  const auto r = pipe.generate(p);
  EXPECT_EQ(r.preset.device, torch::cuda::is_available() ? "cuda:0" : "cpu");
  if (!torch::cuda::is_available()) {
    p.device = "cuda:0";
    std::vector<std::string> said;
    pipeline::RunCallbacks cb;
    cb.on_message = [&](const std::string& m) { said.push_back(m); };
    p.source = "fox.json";
    EXPECT_THAT(
        error_of([&] { pipe.generate(p, cb); }),
        HasSubstr("fox.json: key 'device' is \"cuda:0\": this LibTorch sees no CUDA device"));
    EXPECT_TRUE(said.empty());  // nothing loaded
  }
}

// Before anything loads, a render (and a batch's check) refuses files that
// cannot render together, from their headers: an image-to-video DiT, a pair
// whose experts differ, are swapped or are one expert twice, a VAE or text
// encoder of another model; a Wan 2.2 expert alone is said.
TEST(Families, WanFilesAreCheckedFromTheirHeaders) {
  TempDir dir;
  const auto& wan = pipeline::family_named("wan");
  namespace fs = std::filesystem;
  const auto sparse = [&](const std::string& name, const test::KeyShapes& keys) {
    fs::create_directories((dir / name).parent_path());
    test::write_sparse(dir / name, keys);
    return dir / name;
  };
  const auto t2v_1_3b = sparse("wan2.1_t2v_1.3B_bf16.safetensors",
                               test::wan_original_keys(1536, 8960, 16, 16, 30, false));
  const auto high = sparse("wan2.2_t2v_high_noise_14B.safetensors",
                           test::wan_original_keys(5120, 13824, 16, 16, 40, false));
  const auto low = sparse("wan2.2_t2v_low_noise_14B.safetensors",
                          test::wan_original_keys(5120, 13824, 16, 16, 40, false));
  const auto i2v = sparse("wan2.1_i2v_480p_14B.safetensors",
                          test::wan_original_keys(5120, 13824, 36, 16, 40, true));
  const auto ti2v =
      sparse("wan2.2_ti2v_5B.safetensors", test::wan_original_keys(3072, 14336, 48, 48, 30, false));
  pipeline::ModelFiles f;
  f.vae = test::fixture("wan21_vae_tiny.safetensors");
  f.text_encoder = test::fixture("umt5_enc_tiny.safetensors");
  f.tokenizer = test::fixture("spm_tiny.model");
  const auto refusal = [&](fs::path model, fs::path model2 = {}) {
    auto files = f;
    files.model = std::move(model);
    files.model2 = std::move(model2);
    return error_of([&] { wan.check_files(files); });
  };
  EXPECT_THAT(refusal(i2v), HasSubstr("wan2.1_i2v_480p_14B.safetensors: an image-to-video model "
                                      "(it takes 36 input channels, the video's 16 and an "
                                      "image's); Kinora renders Wan text to video only"));
  EXPECT_THAT(refusal(high, t2v_1_3b),
              HasSubstr("wan2.1_t2v_1.3B_bf16.safetensors: given as the low-noise expert (model2) "
                        "of wan2.2_t2v_high_noise_14B.safetensors, but it is another model"));
  EXPECT_THAT(refusal(low, high), HasSubstr("is the low-noise expert and model2 "
                                            "wan2.2_t2v_high_noise_14B.safetensors the "
                                            "high-noise one (by their names): swap them"));
  const auto high2 = sparse("copy_high_noise.safetensors",
                            test::wan_original_keys(5120, 13824, 16, 16, 40, false));
  EXPECT_THAT(refusal(high, high2), HasSubstr("are both the high-noise expert (by their names)"));
  EXPECT_THAT(refusal(high, high), HasSubstr("given as both the model and its low-noise expert"));
  // The tiny fixture VAE has 16 channels and the tiny umT5 is narrow.
  EXPECT_THAT(refusal(ti2v), HasSubstr("works on 48 latent channels, but wan21_vae_tiny."
                                       "safetensors has 16 (the TI2V-5B's VAE is the Wan 2.2 "
                                       "VAE, 48 channels, which Kinora does not support yet)"));
  EXPECT_THAT(refusal(high, low), HasSubstr("wan2.2_t2v_high_noise_14B.safetensors expects text "
                                            "of width 4096, but umt5_enc_tiny.safetensors gives"));
  auto other = f;
  other.model = high;
  other.vae = test::fixture("flux1_ae_tiny.safetensors");
  EXPECT_THAT(error_of([&] { wan.check_files(other); }),
              HasSubstr("flux1_ae_tiny.safetensors: given as the Wan VAE for "
                        "wan2.2_t2v_high_noise_14B.safetensors, but it is an image autoencoder, "
                        "not a Wan VAE"));
  // The tiny chain renders; a Wan 2.2 expert alone is said.
  f.model = test::fixture("wan21_dit_tiny.safetensors");
  EXPECT_TRUE(wan.check_files(f).empty());
  fs::copy_file(f.model, dir / "tiny_high_noise.safetensors");
  f.model = dir / "tiny_high_noise.safetensors";
  const auto notes = wan.check_files(f);
  ASSERT_EQ(notes.size(), 1u);
  EXPECT_THAT(notes[0], HasSubstr("tiny_high_noise.safetensors is a Wan 2.2 A14B high-noise "
                                  "expert (by its name), rendered alone"));
}

}  // namespace
}  // namespace kinora
