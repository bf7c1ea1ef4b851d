#pragma once
// A model family (Wan, and the FLUX and SDXL families to come) as the pipeline
// sees it: which files it needs, what its defaults and rules are, how it is
// guided, and how its files load into the three parts every family has, a
// denoiser, an autoencoder and a text conditioner. The sampling loop
// (pipeline/pipeline.h) is written once for all of them; adding a family is
// one Family and its model classes, registered here.
#include <torch/torch.h>

#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "diffusion/denoiser.h"
#include "io/checkpoint.h"
#include "io/layout.h"
#include "layers/precision.h"
#include "lora/lora.h"
#include "pipeline/preset.h"
#include "schedulers/scheduler.h"
#include "text/conditioner.h"
#include "vae/autoencoder.h"

namespace kinora::pipeline {

// How a family is guided: classifier-free (a second, unconditional row in the
// same batch, mixed by the guidance scale), a distilled guidance input the
// denoiser takes (FLUX-dev), or none (a scale of 1, or a distilled model).
enum class GuidanceStrategy { ClassifierFree, Distilled, None };

// The files of one render, resolved (ModelFiles of a preset: resolve_models).
struct ModelFiles {
  std::filesystem::path model, model2, vae, text_encoder, tokenizer, clip, clip_tokenizer;
};

// A family's parts, loaded: the denoiser (and for a pair of experts, the
// second and the timestep below which it takes over), the autoencoder and the
// text conditioner.
struct LoadedModels {
  std::shared_ptr<diffusion::Denoiser> denoiser, denoiser2;
  double switch_timestep = 0;  // denoiser2 serves timesteps below this
  std::shared_ptr<vae::Autoencoder> autoencoder;
  std::shared_ptr<text::TextConditioner> conditioner;
};

// A linear map from latent channels to RGB for the live preview: [C, 3] and [3],
// applied to the un-normalised latent.
struct PreviewMap {
  torch::Tensor factors, bias;
};

class Family {
 public:
  virtual ~Family() = default;

  // The name presets use (key "family") and outputs record.
  virtual std::string name() const = 0;
  // Whether the denoiser has FP8 products (the preset's fp8; layers/fp8.h).
  virtual bool has_fp8_path() const { return false; }
  // Whether the model file of a preset is one of this family's (read from its
  // names and shapes, io::detect_layout).
  virtual bool recognises(const std::filesystem::path& model) const = 0;
  // The preset keys whose files it needs ("model", "vae", "text_encoder",
  // "tokenizer", "clip"; "model2" optional), and the ComfyUI subfolder of each.
  // ("clip_tokenizer", a folder, the family finds itself.)
  struct Role {
    const char* key;
    const char* subfolder;
    bool required;
  };
  virtual std::vector<Role> roles() const = 0;
  // Files the roles do not cover (FLUX: the CLIP tokenizer folder, unless a
  // diffusers folder gave it), resolved into `files` with the preset's other
  // models; an Error naming where it looked.
  virtual void resolve_extra(const Preset& p, ModelFiles& files) const {}
  // The files of a preset that names none: a model the family ships (Wan: the
  // embedded model), or nullopt.
  virtual std::optional<ModelFiles> default_files() const { return std::nullopt; }
  // Its defaults, over which a preset's keys apply (size, frames, steps,
  // sampler, shift, guidance).
  virtual Preset defaults() const = 0;
  // The defaults for this model file (FLUX: dev's or schnell's); defaults()
  // unless the family's variants differ.
  virtual Preset defaults_for(const std::filesystem::path& model) const { return defaults(); }
  // The sampler's schedule for `p` at `image_tokens` latent tokens: the
  // preset's shift by default (FLUX-dev: BFL's resolution-dependent μ).
  virtual schedulers::ScheduleOptions schedule(const Preset& p, int64_t image_tokens,
                                               const LoadedModels& models) const {
    return {.shift = p.shift, .mu = std::nullopt};
  }
  // Settings of `p` these models do not use, one message each ("shift 2 is
  // not used: …"); the render goes on without them. None by default.
  virtual std::vector<std::string> unused_settings(const Preset& p,
                                                   const LoadedModels& models) const {
    return {};
  }
  // Sizes and frame counts to what the family makes, with a message for each
  // change ("frames 18 → 17 (…)").
  virtual std::vector<std::string> snap(Preset& p) const = 0;
  virtual GuidanceStrategy guidance(const Preset& p) const = 0;
  // The negative prompt when a preset gives none.
  virtual std::string default_negative_prompt(const ModelFiles& files) const = 0;
  // Loads the parts (models computing in `precision`) into host memory, the
  // weights mapped from their files; the pipeline then places them on the
  // render's device (with block swap where a denoiser does not fit). `say`
  // receives what is being loaded.
  virtual LoadedModels load(const ModelFiles& files, layers::Precision precision,
                            const std::function<void(const std::string&)>& say) const = 0;
  // Refuses, naming the files, a combination that cannot render `p` (a DiT and
  // a VAE of other latent widths, a size the patches do not divide).
  virtual void check(const LoadedModels& models, const Preset& p,
                     const ModelFiles& files) const = 0;
  // The same from the files' headers alone, before anything loads (a batch's
  // and the studio's checks before rendering, and a render's first): each
  // file is of the kind its role needs, and the parts fit together (latent
  // channels, text widths, a pair's experts). Throws a kinora::Error naming
  // the file and what it is; returns notes on what renders but may not be
  // meant (a Wan 2.2 expert without its pair). Nothing by default.
  virtual std::vector<std::string> check_files(const ModelFiles& files) const { return {}; }
  virtual PreviewMap preview(const LoadedModels& models) const = 0;
  // How LoRA files in diffusers' naming map onto this family's modules (a
  // fused q/k/v's row slices included); none by default.
  virtual lora::DiffusersNames lora_names(const LoadedModels& models) const { return {}; }
  // The text encoders a LoRA's text updates apply to, with the key prefixes
  // that address each (SDXL: CLIP-L by lora_te1_ / text_encoder., bigG by
  // lora_te2_ / text_encoder_2.); none by default, and such updates are then
  // reported as not applied.
  struct LoraTextEncoder {
    std::string name;
    layers::Model* model;
    std::vector<std::string> prefixes;
  };
  virtual std::vector<LoraTextEncoder> lora_text_encoders(const LoadedModels& models) const {
    return {};
  }
};

// Width and height to the nearest multiple of 16 (at least 16), a message for
// each change ("width 70 → 64 (why)"), for a family's snap().
void snap_size_to_16(Preset& p, const std::string& why, std::vector<std::string>& msgs);

// The CLIP tokenizer folder of a preset (FLUX's and SDXL's): its
// clip_tokenizer key (a path, or a name under models_dir or its
// text_encoders/), else text::find_clip_tokenizer beside `clip` or under
// models_dir; a kinora::Error naming where it looked.
std::filesystem::path resolve_clip_tokenizer(const Preset& p, const std::filesystem::path& clip);

// A model file as a family's messages name it: its file name, or for a part
// of a diffusers pipeline folder the folder's name before it
// ("FLUX.1-dev/transformer/diffusion_pytorch_model.safetensors"), since every
// folder's parts have the same names.
std::string file_label(const std::filesystem::path& file);

// What the checkpoint `file` is, from its header: the first of `wanted` it
// holds (under any known prefix), else what it is recognised as.
io::Detection detect_file(const std::filesystem::path& file,
                          std::initializer_list<io::Family> wanted);
// Refuses `file` for the role `what` ("VAE for the Wan DiT x.safetensors")
// unless detect_file finds one of `wanted` in it; else the file, opened (its
// header read once for every check of it), and which of `wanted` it holds.
struct OpenedPart {
  io::Checkpoint checkpoint;
  io::Detection detection;
};
OpenedPart expect_kind(const std::filesystem::path& file, std::initializer_list<io::Family> wanted,
                       const std::string& what);
// The kind of sampler a family's models take (flow-matching or
// noise-prediction): that of its default sampler.
schedulers::Space sampler_space(const Family& family);

// The families, in the order they are asked to recognise a model file.
void register_family(std::shared_ptr<const Family> family);
std::vector<std::shared_ptr<const Family>> families();
const Family& family_named(const std::string& name);  // throws kinora::Error listing the names
// The family of a preset: its "family" key when set, the embedded model's
// (Wan) when it names no model, else the first that recognises its model file.
const Family& family_for(const Preset& p);

}  // namespace kinora::pipeline
