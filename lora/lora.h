#pragma once
// LoRA and its relatives on a loaded model's Linear layers: the file formats
// people share (original-key, kohya / musubi-tuner, diffusers / PEFT, full
// deltas, LyCORIS LoHa and LoKr), detected from the keys and resolved against
// the model's real module names; stacked with strengths; merged into copies of
// only the weights they touch (the originals kept, so removing every LoRA
// restores them bit for bit) or applied at run time (the low-rank product added
// in the forward, weights untouched). Facts: the Wan spec §5, the FLUX spec §6.
#include <torch/torch.h>

#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "layers/model.h"

namespace kinora::lora {

// Where a LoRA key's update lands: a Linear module of the model (its name as
// the model registers it), and the rows of its weight (a slice of a fused
// q/k/v, or all of them).
struct Target {
  std::string module;
  int64_t row0 = 0, rows = -1;  // rows −1: every row
};

// How a family names its modules in other layouts: a key stem (no
// ".weight") in diffusers' naming → the model's module (or a row slice of a
// fused one); nullopt when the name is not the family's.
using DiffusersNames = std::function<std::optional<Target>(const std::string& stem)>;

// One module's update from one file.
struct Patch {
  std::string stem;  // the key's stem in the file
  std::string kind;  // "lora", "loha", "lokr", "diff"
  Target target;
  // lora: ΔW = scale·up·down; scale = alpha / rank (1 without alpha).
  torch::Tensor down, up;
  double scale = 1;
  // loha, lokr, diff: the full ΔW (alpha / rank folded in), float32.
  torch::Tensor delta;
  torch::Tensor bias_delta;  // diff_b, or undefined
  // The update [rows, in] in float32, without the strength.
  torch::Tensor full_delta() const;
};

// Why an update of a file is not applied to a model.
enum class NotApplied {
  locon,         // a convolution or other layer that is not linear (LoCon)
  text_encoder,  // a text encoder's, and this resolve is the denoiser's
  unsupported,   // a kind of update Kinora does not apply (DoRA, …)
  no_module,     // the model has no module of that name
  other_shape,   // the module exists but the update does not fit it
  malformed,     // its tensors do not go together (a file with one is refused)
};

// An update that is not applied: its stem, why (the kind, and in full), and
// for a text encoder's update the encoder it was resolved against.
struct Unmatched {
  std::string stem;
  NotApplied reason = NotApplied::malformed;
  std::string why;
  std::string where;
  std::string text() const;  // "STEM: WHY", then " (WHERE)"
};

// One update of a file, as describe() lists them: its stem and kind ("lora",
// "loha", "lokr", "diff", "other").
struct Update {
  std::string stem, kind;
};

struct Report {
  std::filesystem::path file;
  std::string format;                      // "original", "kohya", "diffusers", "lycoris", …
  int64_t rank = 0;                        // the largest rank among its low-rank updates
  int64_t rank_min = 0;                    // and the smallest (a file may mix ranks)
  std::optional<double> alpha, alpha_max;  // the smallest and largest alpha
  void add_rank(int64_t r);
  void add_alpha(double a);
  // ", rank 16, alpha 8"; a file that mixes them: ", ranks 4 to 16, alphas
  // 1 to 8"; a negative alpha said to reverse its update. Empty for a file
  // with neither.
  std::string rank_and_alpha() const;
  int matched = 0, total = 0;        // updates (modules) matched / in the file
  std::vector<Unmatched> unmatched;  // resolve(): those not applied
  std::vector<Update> updates;       // describe(): all of them
  // One line for the CLI. Where updates are not applied, their reasons are
  // counted and `lists_them` named as what lists them (not when it is "").
  std::string line(
      const std::string& lists_them = "`kinora lora inspect FILE --model MODEL -v`") const;
};

struct Resolved {
  std::vector<Patch> patches;
  Report report;
};

// What a LoRA file holds, without a model: format, rank, alpha, its updates
// (total, and each in `updates`). Throws like
// resolve() for a file that is no LoRA, holds NaN or a damaged update.
Report describe(const std::filesystem::path& file);

// Which of a file's updates a model takes. By default the denoiser's: a
// text encoder's updates (kohya's lora_te_ / lora_te1_ / lora_te2_,
// diffusers' text_encoder. / text_encoder_2.) are reported as not applied,
// or, with `text_elsewhere`, left to the text encoders' own resolves and not
// counted. With `text_prefixes`, a text encoder's: only the updates whose
// stems start with one of them, the prefix and a following text_model.
// stripped, against the encoder's transformers names.
struct Scope {
  std::vector<std::string> text_prefixes;
  bool text_elsewhere = false;
};
// True for a stem that addresses a text encoder.
bool is_text_encoder_stem(const std::string& stem);

// Reads a LoRA file and resolves its updates against `model`'s Linear modules.
// Throws kinora::Error naming the file for a file that is no LoRA (no LoRA
// keys), holds NaN or infinite values, holds a damaged update (a half of a
// pair missing, factors whose shapes do not multiply: named by their keys),
// or matches none of the model's modules
// (a LoRA for another family or size: the report's reasons in the message).
// In a text encoder's scope, or with text_elsewhere, a file with no update in
// the scope resolves to nothing (total 0) rather than an error.
Resolved resolve(const std::filesystem::path& file, const layers::Model& model,
                 const DiffusersNames& diffusers_names = {}, const Scope& scope = {});

// A LoRA file's updates read and checked once (keys, NaN, shapes), to resolve
// against several models: a denoiser and the text encoders it comes with.
class Updates {
 public:
  // Throws as resolve() does for the file.
  static Updates read(const std::filesystem::path& file);
  const std::filesystem::path& file() const { return file_; }
  const void* groups() const { return groups_.get(); }  // lora.cpp's own

 private:
  std::filesystem::path file_;
  std::shared_ptr<const void> groups_;
};
// As resolve(file, …), from updates already read.
Resolved resolve(const Updates& updates, const layers::Model& model,
                 const DiffusersNames& diffusers_names = {}, const Scope& scope = {});

// The LoRAs applied to one model, and how. Merged: each touched weight
// replaced by a copy W + Σ strength·ΔW (in the weight's stored dtype; FP8
// weights become bf16); run time: each Linear adds Σ strength·scale·up(down(x)).
// Reapplying with other strengths re-merges only the touched weights; clear()
// (or a destructor) puts the original tensors back.
enum class Mode { Merged, RunTime };

class Applied {
 public:
  Applied() = default;
  ~Applied();
  Applied(const Applied&) = delete;
  Applied& operator=(const Applied&) = delete;

  // `loras` may have been resolved against another model of the same
  // architecture (a pair's other expert); an update that does not fit `model`
  // is a kinora::Error naming its file, and nothing is applied.
  void apply(layers::Model& model, const std::vector<std::pair<const Resolved*, double>>& loras,
             Mode mode);
  void clear();

 private:
  struct Original;
  layers::Model* model_ = nullptr;
  std::vector<std::shared_ptr<Original>> originals_;
};

}  // namespace kinora::lora
