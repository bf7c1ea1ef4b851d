#include "pipeline/family.h"

#include <cctype>
#include <cmath>
#include <mutex>

#include "base/error.h"
#include "io/checkpoint.h"
#include "io/layout.h"
#include "lora/lora.h"
#include "pipeline/flux_family.h"
#include "pipeline/pipeline.h"
#include "pipeline/sdxl_family.h"
#include "pipeline/wan_family.h"
#include "schedulers/registry.h"
#include "text/clip_tokenizer.h"

namespace kinora::pipeline {
namespace fs = std::filesystem;

namespace {
struct Registry {
  std::mutex mutex;
  std::vector<std::shared_ptr<const Family>> families;
};
Registry& registry() {
  static Registry* r = [] {
    auto* reg = new Registry;
    reg->families.push_back(std::make_shared<WanFamily>());
    reg->families.push_back(std::make_shared<FluxFamily>());
    reg->families.push_back(std::make_shared<SDXLFamily>());
    return reg;
  }();
  return *r;
}
}  // namespace

void snap_size_to_16(Preset& p, const std::string& why, std::vector<std::string>& msgs) {
  for (auto [v, name] : {std::pair<int*, const char*>{&p.width, "width"}, {&p.height, "height"}}) {
    const int snapped = std::max(16, 16 * static_cast<int>(std::lround(*v / 16.0)));
    if (snapped != *v) {
      msgs.push_back(std::string(name) + " " + std::to_string(*v) + " → " +
                     std::to_string(snapped) + " (" + why + ")");
      *v = snapped;
    }
  }
}

schedulers::Space sampler_space(const Family& family) {
  const std::string d = family.defaults().sampler;
  for (const auto& e : schedulers::available_schedulers())
    if (e.name == d) return e.space;
  return schedulers::Space::Flow;
}

fs::path resolve_clip_tokenizer(const Preset& p, const fs::path& clip) {
  const fs::path models_dir = models_dir_path(p);
  fs::path given;
  if (!p.clip_tokenizer.empty()) {
    const fs::path e = p.clip_tokenizer;
    given = e.is_absolute() ? e : p.base_dir / e;
    // A name under models_dir when it is not a path from here.
    std::error_code ec;
    if (!fs::exists(given, ec) && !models_dir.empty() && !e.is_absolute())
      for (const fs::path& c : {models_dir / "text_encoders" / e, models_dir / e})
        if (fs::exists(c, ec)) {
          given = c;
          break;
        }
  }
  return text::find_clip_tokenizer(given, clip, models_dir);
}

std::string file_label(const fs::path& file) {
  const auto folder = file.parent_path().parent_path();
  std::error_code ec;
  if (!folder.empty() && fs::is_regular_file(folder / "model_index.json", ec))
    return (folder.filename() / file.parent_path().filename() / file.filename()).string();
  return file.filename().string();
}

namespace {
io::Detection detect_in(const io::Checkpoint& ck, std::initializer_list<io::Family> wanted) {
  const auto& shapes = ck.shapes();
  auto d = io::detect_layout(shapes, wanted);
  for (const auto f : wanted)
    if (d.family == f) return d;
  return io::detect_layout(shapes);
}
}  // namespace

io::Detection detect_file(const fs::path& file, std::initializer_list<io::Family> wanted) {
  return detect_in(io::Checkpoint::open(file), wanted);
}

OpenedPart expect_kind(const fs::path& file, std::initializer_list<io::Family> wanted,
                       const std::string& what) {
  OpenedPart part{io::Checkpoint::open(file), {}};
  part.detection = detect_in(part.checkpoint, wanted);
  const auto& d = part.detection;
  for (const auto f : wanted)
    if (d.family == f) return part;
  std::string kinds;
  for (const auto f : wanted) kinds.append(kinds.empty() ? "" : " or ").append(io::family_name(f));
  std::string msg = file.string();
  msg.append(": given as the ").append(what).append(", but it is ");
  const auto a = [](const std::string& noun) {
    const char first = static_cast<char>(std::tolower(static_cast<unsigned char>(noun[0])));
    return (std::string("aeiou").find(first) == std::string::npos ? "a " : "an ") + noun;
  };
  msg.append(d.family == io::Family::Unknown ? std::string("no model Kinora recognises")
                                             : a(io::family_name(d.family)));
  msg.append(", not ").append(a(kinds));
  throw Error(msg);
}

void register_family(std::shared_ptr<const Family> family) {
  auto& r = registry();
  std::lock_guard lock(r.mutex);
  for (auto& f : r.families)
    if (f->name() == family->name()) {
      f = std::move(family);  // a family registered again replaces the first
      return;
    }
  r.families.push_back(std::move(family));
}

std::vector<std::shared_ptr<const Family>> families() {
  auto& r = registry();
  std::lock_guard lock(r.mutex);
  return r.families;
}

const Family& family_named(const std::string& name) {
  std::string known;
  for (const auto& f : families()) {
    if (f->name() == name) return *f;
    known += (known.empty() ? "" : ", ") + f->name();
  }
  throw Error("no model family named '" + name + "' (the families: " + known + ")");
}

const Family& family_for(const Preset& p) {
  if (!p.family.empty()) return family_named(p.family);
  if (p.uses_embedded_model()) return family_named("wan");
  // The model file decides: the first family that recognises it. Resolved as
  // every family resolves its model (diffusion_models/).
  const auto model = resolve_dit_file(p);
  const auto all = families();
  for (const auto& f : all)
    if (f->recognises(model)) return *f;
  // A part given as the model: named, with the option that takes it.
  const auto held = io::detect_layout(io::Checkpoint::open(model).shapes()).family;
  const char* option = nullptr;
  switch (held) {
    case io::Family::WanVAE:
    case io::Family::Wan22VAE:
    case io::Family::KLAutoencoder:
      option = "--vae (preset key 'vae')";
      break;
    case io::Family::UMT5:
    case io::Family::T5:
    case io::Family::OpenCLIP:
      option = "--text-encoder (preset key 'text_encoder')";
      break;
    case io::Family::CLIP:
      option = "--clip (preset key 'clip')";
      break;
    default:
      break;
  }
  const std::string models =
      "; the model is a Wan or FLUX.1 DiT, or an SDXL UNet or single-file checkpoint";
  if (option) {
    const std::string name = io::family_name(held);
    const bool vowel = std::string("aeioAEIO").find(name[0]) != std::string::npos;
    throw Error(model.string() + (vowel ? ": an " : ": a ") + name +
                ", not a denoiser: give it with " + option + models);
  }
  bool lora = false;
  try {
    lora::describe(model);
    lora = true;
  } catch (const Error&) {
    // not a LoRA either
  }
  if (lora)
    throw Error(model.string() + ": a LoRA, not a model: give it with --lora (preset key " +
                "'loras')" + models);
  std::string known;
  for (const auto& f : all) known += (known.empty() ? "" : ", ") + f->name();
  throw Error(model.string() + ": no model family recognises this file (" + known +
              "; `kinora info` shows what it holds)");
}

}  // namespace kinora::pipeline
