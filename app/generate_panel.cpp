#include "app/generate_panel.h"

#include <QAbstractSpinBox>
#include <QCheckBox>
#include <QComboBox>
#include <QDir>
#include <QDoubleSpinBox>
#include <QFileDialog>
#include <QFileInfo>
#include <QFormLayout>
#include <QHBoxLayout>
#include <QHeaderView>
#include <QLabel>
#include <QPlainTextEdit>
#include <QPushButton>
#include <QRegularExpression>
#include <QSignalBlocker>
#include <QSlider>
#include <QSpinBox>
#include <QTableWidget>
#include <QToolButton>
#include <QVBoxLayout>

#include <algorithm>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <tuple>
#include <utility>

#include "base/device.h"
#include "embedded/model.h"
#include "io/checkpoint.h"
#include "io/layout.h"
#include "lora/lora.h"
#include "pipeline/family.h"
#include "pipeline/lora_check.h"
#include "pipeline/pipeline.h"
#include "schedulers/registry.h"

namespace kinora::app {
using pipeline::Preset;

namespace {
const char* kEmbedded = "Kinora tiny (embedded, 64×64)";

// Calls `each` with the files of `dir` matching `patterns` and those of its
// subfolders down to `levels` below it, links to folders followed as the
// command line follows them, each folder once (a link loop, or a link to a
// folder beside it, is not walked again). The walk stops at that depth rather
// than reading a deep tree whole.
void walk(const QDir& dir, const QStringList& patterns, int levels,
          const std::function<void(const QFileInfo&)>& each, std::set<QString>& seen) {
  if (!seen.insert(dir.canonicalPath()).second) return;
  for (const auto& f : dir.entryInfoList(patterns, QDir::Files, QDir::Name)) each(f);
  if (levels > 0)
    for (const auto& d : dir.entryInfoList(QDir::Dirs | QDir::NoDotAndDotDot, QDir::Name))
      walk(QDir(d.filePath()), patterns, levels - 1, each, seen);
}
void walk(const QDir& dir, const QStringList& patterns, int levels,
          const std::function<void(const QFileInfo&)>& each) {
  std::set<QString> seen;
  walk(dir, patterns, levels, each, seen);
}

// The files of `dir` matching `patterns`, and those of its subfolders (four
// levels, as the command line finds models by name), by their path inside
// `dir`, sorted; none inside the folders of `skip` (diffusers folders).
std::vector<std::pair<QString, QString>> files_in(const QString& dir, const QStringList& patterns,
                                                  const QStringList& skip = {}) {
  std::vector<std::pair<QString, QString>> out;
  if (dir.isEmpty() || !QDir(dir).exists()) return out;
  const QDir root(dir);
  walk(root, patterns, 4, [&](const QFileInfo& f) {
    const QString path = f.absoluteFilePath();
    const bool inside = std::any_of(skip.begin(), skip.end(), [&](const QString& folder) {
      return path.startsWith(folder + "/");
    });
    if (!inside) out.emplace_back(root.relativeFilePath(path), path);
  });
  std::sort(out.begin(), out.end());
  return out;
}

void fill(QComboBox* box, const QString& dir, const QStringList& patterns, bool none_item) {
  const QString keep = box->currentData().toString();
  box->clear();
  if (none_item) box->addItem("—", QString());
  for (const auto& [name, path] : files_in(dir, patterns)) box->addItem(name, path);
  const int i = box->findData(keep);
  if (i >= 0) box->setCurrentIndex(i);
}

// What one model a file holds is: its family, the latent channels of an
// image autoencoder (16: FLUX's, 4: SD/SDXL's), and the detection's summary.
struct PartKind {
  io::Family family;
  int64_t latent;
  std::string summary;
};

// The models `file` holds (a single-file checkpoint: several), read once
// while its size and time stay the same; none when it cannot be read.
std::vector<PartKind> kinds_of(const QString& file) {
  static std::mutex lock;
  static std::map<QString, std::pair<QString, std::vector<PartKind>>> cache;
  const QFileInfo info(file);
  if (!info.isFile()) return {};
  const QString stamp =
      QString::number(info.size()) + "@" + QString::number(info.lastModified().toMSecsSinceEpoch());
  {
    const std::lock_guard<std::mutex> hold(lock);
    if (auto it = cache.find(file); it != cache.end() && it->second.first == stamp)
      return it->second.second;
  }
  std::vector<PartKind> kinds;
  try {
    const auto shapes = io::Checkpoint::open(file.toStdString()).shapes();
    for (const auto& d : io::detect_parts(shapes)) {
      PartKind k{d.family, 0, d.summary};
      if (d.family == io::Family::KLAutoencoder) {
        const auto own = io::strip_prefix(shapes, d.prefix);
        const auto conv = own.find("decoder.conv_in.weight");
        if (conv != own.end() && conv->second.size() == 4) k.latent = conv->second[1];
      }
      kinds.push_back(k);
    }
  } catch (const std::exception&) {
    // Unreadable: nothing is said here; the render says why.
  }
  const std::lock_guard<std::mutex> hold(lock);
  cache[file] = {stamp, kinds};
  return kinds;
}

// What a family takes as a role: the kinds that fit (latent channels 0: any),
// and how the message names them.
struct Wanted {
  std::vector<std::pair<io::Family, int64_t>> kinds;
  const char* what;
};
std::optional<Wanted> wanted(const std::string& family, const std::string& role) {
  using F = io::Family;
  if (family == "wan") {
    if (role == "vae") return Wanted{{{F::WanVAE, 0}}, "a Wan VAE"};
    if (role == "text_encoder") return Wanted{{{F::UMT5, 0}}, "a umT5 text encoder"};
  } else if (family == "flux") {
    if (role == "vae")
      return Wanted{{{F::KLAutoencoder, 16}}, "FLUX's autoencoder (16 latent channels)"};
    if (role == "text_encoder") return Wanted{{{F::T5, 0}}, "a T5-XXL text encoder"};
    if (role == "clip") return Wanted{{{F::CLIP, 0}}, "a CLIP-L text encoder"};
  } else if (family == "sdxl") {
    if (role == "vae") return Wanted{{{F::KLAutoencoder, 4}}, "an SD/SDXL VAE (4 latent channels)"};
    // bigG in OpenCLIP's names, or in the CLIP names of transformers.
    if (role == "text_encoder")
      return Wanted{{{F::OpenCLIP, 0}, {F::CLIP, 0}}, "the OpenCLIP bigG text encoder"};
    if (role == "clip") return Wanted{{{F::CLIP, 0}}, "a CLIP-L text encoder"};
  }
  return std::nullopt;
}

QString family_label(const std::string& family) {
  return family == "wan" ? "Wan" : family == "flux" ? "FLUX" : family == "sdxl" ? "SDXL" : "this";
}
QString role_label(const std::string& role) {
  return role == "vae" ? "VAE" : role == "clip" ? "CLIP" : "Text encoder";
}

// The kind of sampler a family's models take (flow or noise): its default
// sampler's.
schedulers::Space space_of(const std::string& family) {
  try {
    return pipeline::sampler_space(pipeline::family_named(family));
  } catch (const std::exception&) {
    // No such family: the render names the known ones.
  }
  return schedulers::Space::Flow;
}

// Selects the sampler `name` (or an alias) of `space` in `box`; false when it
// names none of that space.
bool select_sampler(QComboBox* box, const std::string& name, schedulers::Space space) {
  try {
    const int i =
        box->findText(QString::fromStdString(schedulers::canonical_scheduler_name(name, space)));
    if (i < 0) return false;
    box->setCurrentIndex(i);
    return true;
  } catch (const std::exception&) {
    return false;
  }
}

// Wheel turns over a combo box, spin box or slider that does not have the
// keyboard focus scroll the form instead of changing the value under the
// pointer; a click (or Tab) focuses it first.
class WheelGuard : public QObject {
 public:
  using QObject::QObject;
  bool eventFilter(QObject* watched, QEvent* e) override {
    if (e->type() != QEvent::Wheel) return false;
    const auto* w = qobject_cast<QWidget*>(watched);
    if (!w || w->hasFocus()) return false;
    e->ignore();  // on to the scroll area
    return true;
  }
};

void guard_wheel(QWidget* w, QObject* guard) {
  w->setFocusPolicy(Qt::StrongFocus);
  w->installEventFilter(guard);
}

// Selects `value` in `box`, adding it when absent.
void select(QComboBox* box, const QString& value) {
  int i = box->findData(value);
  // A restored preset names its models by file name, or by their path inside
  // their folder (wan/t2v/dit.safetensors): the entry of that name or path.
  if (i < 0 && !value.isEmpty() && !QDir::isAbsolutePath(value))
    for (int k = 0; k < box->count() && i < 0; ++k) {
      const QString data = box->itemData(k).toString();
      if (data.isEmpty()) continue;
      if (value.contains('/') ? data.endsWith("/" + value) : QFileInfo(data).fileName() == value)
        i = k;
    }
  if (i < 0 && !value.isEmpty()) {
    box->addItem(QFileInfo(value).fileName(), value);
    i = box->count() - 1;
  }
  box->setCurrentIndex(std::max(0, i));
}

// Which of the role's kinds `file` is, by its place in wanted()'s list (the
// one a role prefers first: SDXL's bigG in OpenCLIP's names before a CLIP
// model, which may be CLIP-L); -1 when it is none of them or cannot be read.
int kind_rank(const std::string& family, const std::string& role, const QString& file) {
  const auto want = wanted(family, role);
  if (!want) return -1;
  int best = -1;
  for (const auto& k : kinds_of(file))
    for (std::size_t r = 0; r < want->kinds.size(); ++r)
      if (k.family == want->kinds[r].first &&
          (want->kinds[r].second == 0 || k.latent == want->kinds[r].second) &&
          (best < 0 || static_cast<int>(r) < best))
        best = static_cast<int>(r);
  return best;
}
}  // namespace

QString wrong_part(const std::string& family, const std::string& role, const QString& file) {
  const auto want = wanted(family, role);
  if (!want || file.isEmpty()) return {};
  const auto kinds = kinds_of(file);
  if (kinds.empty()) return {};
  QStringList held;
  for (const auto& k : kinds) {
    for (const auto& [f, latent] : want->kinds)
      if (k.family == f && (latent == 0 || k.latent == latent)) return {};
    if (k.family != io::Family::Unknown)
      held << QString("%1 (%2)").arg(io::family_name(k.family), QString::fromStdString(k.summary));
  }
  if (held.isEmpty()) return {};
  const QString an = held[0].contains(QRegularExpression("^([aeiouAEIOU]|SD)")) ? "an " : "a ";
  return QString("%1 %2 is %3%4; a %5 model takes %6")
      .arg(role_label(role), QFileInfo(file).fileName(), an, held.join(" and "),
           family_label(family), QString(want->what));
}

GeneratePanel::GeneratePanel(QWidget* parent) : QWidget(parent) {
  prompt_ = new QPlainTextEdit(this);
  prompt_->setObjectName("prompt");
  prompt_->setTabChangesFocus(true);  // Tab moves on, as in the other fields
  negative_ = new QPlainTextEdit(this);
  negative_->setObjectName("negative");
  negative_->setTabChangesFocus(true);
  negative_->setPlaceholderText("negative prompt (empty: the model's default)");
  negative_->setMaximumHeight(60);
  model_ = new QComboBox(this);
  model_->setObjectName("model");
  vae_ = new QComboBox(this);
  vae_->setObjectName("vae");
  vae_->setToolTip("SDXL: a single-file checkpoint's own when left at —");
  text_encoder_ = new QComboBox(this);
  text_encoder_->setObjectName("text_encoder");
  text_encoder_->setToolTip(
      "Wan: umT5-XXL; FLUX: T5-XXL; SDXL: OpenCLIP bigG (clip_g.safetensors), a single-file "
      "checkpoint's own when left at —");
  tokenizer_ = new QComboBox(this);
  tokenizer_->setObjectName("tokenizer");
  tokenizer_->setToolTip(
      "The SentencePiece model of the T5 / umT5 text encoder (Wan, FLUX); SDXL does not use one");
  clip_ = new QComboBox(this);
  clip_->setObjectName("clip");
  clip_->setToolTip(
      "FLUX: CLIP-L; SDXL: CLIP-L, a single-file checkpoint's own when left at — "
      "(clip_l.safetensors). The tokenizer (vocab.json and merges.txt) is found beside it or "
      "under text_encoders/");
  sampler_ = new QComboBox(this);
  sampler_->setObjectName("sampler");
  sampler_->setToolTip(
      "The samplers of the selected model's kind: flow-matching (Wan, FLUX) or "
      "noise-prediction (SDXL)");
  precision_ = new QComboBox(this);
  precision_->addItems({"auto", "bf16", "fp32"});
  precision_->setToolTip(
      "auto: bf16 on GPUs from Ampere on and on CPUs with bf16 arithmetic (AVX512-BF16, AMX); "
      "fp32 on older GPUs and other CPUs, where bf16 is slower (emulated on such CPUs, many "
      "times slower)");
  // Where it computes: auto, then every device LibTorch sees, with its memory.
  device_ = new QComboBox(this);
  device_->setObjectName("device");
  device_->addItem("Auto (the first GPU, else the CPU)", "auto");
  for (const auto& d : available_devices())
    device_->addItem(QString::fromStdString(d.name + " — " + d.description),
                     QString::fromStdString(d.name));
  device_->setToolTip("Noise is drawn on the CPU, so a seed gives the same video on every device");
  // Block swap: -1 shows as "auto".
  block_swap_ = new QSpinBox(this);
  block_swap_->setObjectName("block_swap");
  block_swap_->setRange(-1, 9999);
  block_swap_->setSpecialValueText("auto");
  block_swap_->setValue(-1);
  block_swap_->setToolTip(
      "On a GPU: how many of the model's transformer blocks stay in host memory and visit the "
      "GPU in turn, so that a model larger than the card runs on it (Wan 14B on 24 GB). auto: "
      "only as many as the card's free memory needs. The video is the same; the CPU ignores it");
  fp8_ = new QCheckBox("Multiply in FP8", this);
  fp8_->setObjectName("fp8");
  fp8_->setToolTip(
      "The Wan or FLUX model's block layers multiply 8-bit (E4M3) weights and inputs: on GPUs "
      "with FP8 tensor cores (Ada, Hopper: twice their bf16 matrix rate) in one FP8 product, "
      "with half the weight memory of bf16. Elsewhere the same numbers in bf16 or fp32. Frames "
      "differ slightly from a render without it");
  format_ = new QComboBox(this);
  format_->addItem("Default (one frame: PNG, else MP4)", "");
  format_->addItem("PNG image", "png");
  format_->addItem("MP4 (H.264)", "mp4");
  format_->addItem("MP4 (H.265)", "mp4-h265");
  format_->addItem("WebM (VP9)", "webm");
  format_->addItem("MOV (ProRes)", "mov");
  format_->addItem("PNG sequence", "png-seq");
  steps_ = new QSpinBox(this);
  steps_->setObjectName("steps");
  steps_->setRange(1, 1000);
  shift_ = new QDoubleSpinBox(this);
  shift_->setObjectName("shift");
  shift_->setRange(0.01, 100);
  shift_->setSingleStep(0.5);
  shift_->setToolTip(
      "Wan: the flow schedule's shift. FLUX (dev: from the image size) and SDXL do not use it");
  guidance_ = new QDoubleSpinBox(this);
  guidance_->setObjectName("guidance");
  guidance_->setRange(0, 30);
  guidance_->setSingleStep(0.5);
  seed_ = new QSpinBox(this);
  seed_->setObjectName("seed");
  seed_->setToolTip("random (-1): a new seed for each job queued");
  seed_->setRange(-1, std::numeric_limits<int>::max());
  seed_->setSpecialValueText("random");
  width_ = new QSpinBox(this);
  width_->setObjectName("width");
  width_->setRange(16, 4096);
  width_->setSingleStep(16);
  height_ = new QSpinBox(this);
  height_->setObjectName("height");
  height_->setRange(16, 4096);
  height_->setSingleStep(16);
  frames_ = new QSpinBox(this);
  frames_->setObjectName("frames");
  frames_->setRange(1, 1025);
  frames_->setSingleStep(4);
  fps_ = new QSpinBox(this);
  fps_->setRange(1, 240);
  hint_ = new QLabel(this);
  hint_->setObjectName("hint");
  hint_->setWordWrap(true);
  hint_->setStyleSheet("color: gray");

  loras_ = new QTableWidget(0, 3, this);
  loras_->setHorizontalHeaderLabels({"LoRA", "Strength", ""});
  loras_->horizontalHeader()->setSectionResizeMode(0, QHeaderView::Stretch);
  loras_->setMaximumHeight(110);
  auto* add_lora_btn = new QPushButton("Add LoRA…", this);
  connect(add_lora_btn, &QPushButton::clicked, this, [this] { add_lora(); });

  auto* dice = new QToolButton(this);
  dice->setText("Random");
  dice->setToolTip("A new random seed for each job queued (-1)");
  connect(dice, &QToolButton::clicked, this, &GeneratePanel::randomise_seed);
  auto* recycle = new QToolButton(this);
  recycle->setText("Last");
  recycle->setToolTip("Reuse the last seed");
  connect(recycle, &QToolButton::clicked, this, &GeneratePanel::reuse_last_seed);
  auto* seed_row = new QHBoxLayout;
  seed_row->addWidget(seed_, 1);
  seed_row->addWidget(dice);
  seed_row->addWidget(recycle);
  auto* size_row = new QHBoxLayout;
  size_row->addWidget(width_);
  size_row->addWidget(new QLabel("×"));
  size_row->addWidget(height_);

  auto* form = new QFormLayout;
  form->addRow("Model", model_);
  form->addRow("VAE", vae_);
  form->addRow("Text encoder", text_encoder_);
  form->addRow("Tokenizer", tokenizer_);
  form->addRow("CLIP", clip_);
  form->addRow("Sampler", sampler_);
  form->addRow("Steps", steps_);
  form->addRow("Shift", shift_);
  form->addRow("Guidance", guidance_);
  form->addRow("Seed", seed_row);
  form->addRow("Size", size_row);
  form->addRow("Frames", frames_);
  form->addRow("FPS", fps_);
  form->addRow("Device", device_);
  form->addRow("Blocks in host memory", block_swap_);
  form->addRow("Precision", precision_);
  form->addRow("FP8", fp8_);
  form->addRow("Format", format_);
  auto* layout = new QVBoxLayout(this);
  layout->addWidget(new QLabel("Prompt"));
  layout->addWidget(prompt_, 2);
  layout->addWidget(new QLabel("Negative prompt"));
  layout->addWidget(negative_);
  layout->addLayout(form);
  layout->addWidget(hint_);
  layout->addWidget(new QLabel("LoRAs"));
  layout->addWidget(loras_);
  layout->addWidget(add_lora_btn);

  for (auto* s : {width_, height_, frames_})
    connect(s, &QSpinBox::editingFinished, this, &GeneratePanel::snap);
  connect(model_, &QComboBox::currentIndexChanged, this, &GeneratePanel::model_changed);
  connect(prompt_, &QPlainTextEdit::textChanged, this, &GeneratePanel::snap);
  // The hint says which parts a single-file checkpoint gives.
  for (auto* b : {vae_, clip_, text_encoder_})
    connect(b, &QComboBox::currentIndexChanged, this, [this] {
      if (!restoring_) snap();
    });
  wheel_guard_ = new WheelGuard(this);
  for (auto* w : findChildren<QComboBox*>()) guard_wheel(w, wheel_guard_);
  for (auto* w : findChildren<QAbstractSpinBox*>()) guard_wheel(w, wheel_guard_);
  set_models_dir({});
  set_preset(Preset::embedded_defaults());
}

void GeneratePanel::set_models_dir(const QString& dir) {
  models_dir_ = dir;
  restoring_ = true;
  const QString keep = model_->currentData().toString();
  model_->clear();
  model_->addItem(kEmbedded, QString());
  // Diffusers pipeline folders (model_index.json) in diffusion_models/ and
  // diffusers/, then the model files outside them.
  QStringList pipelines;
  if (!dir.isEmpty())
    for (const QString sub : {"diffusion_models", "diffusers"}) {
      const QDir root(dir + "/" + sub);
      if (!root.exists()) continue;
      walk(root, {"model_index.json"}, 4, [&](const QFileInfo& f) {
        const QString folder = f.absolutePath();
        pipelines << folder;
        model_->addItem(sub + "/" + root.relativeFilePath(folder) + "/", folder);
      });
    }
  if (!dir.isEmpty())
    for (const auto& [name, path] : files_in(
             dir + "/diffusion_models", {"*.safetensors", "*.safetensors.index.json"}, pipelines))
      model_->addItem(name, path);
  // Single-file checkpoints (SDXL), named by their folder: a name may be in both.
  if (!dir.isEmpty())
    for (const auto& f :
         QDir(dir + "/checkpoints").entryInfoList({"*.safetensors"}, QDir::Files, QDir::Name))
      model_->addItem("checkpoints/" + f.fileName(), f.absoluteFilePath());
  for (int i = 1; i < model_->count(); ++i)
    model_->setItemData(i, model_->itemData(i), Qt::ToolTipRole);
  select(model_, keep);
  // The VAE, text encoder and CLIP pickers list those that fit the model
  // (list_parts, from model_changed).
  vae_files_ = files_in(dir.isEmpty() ? QString() : dir + "/vae", {"*.safetensors"});
  encoder_files_ = files_in(dir.isEmpty() ? QString() : dir + "/text_encoders", {"*.safetensors"});
  listed_for_.clear();
  fill(tokenizer_, dir.isEmpty() ? QString() : dir + "/text_encoders", {"*.model"}, true);
  restoring_ = false;
  model_changed();
}

std::string GeneratePanel::family_of_model() const {
  Preset probe;
  probe.model = model_->currentData().toString().toStdString();
  if (probe.model.empty()) return "wan";
  try {
    return pipeline::family_for(probe).name();
  } catch (const std::exception&) {
    return "wan";
  }
}

void GeneratePanel::model_changed() {
  const std::string before = family_;
  const std::string chosen = sampler_->currentText().toStdString();
  family_ = family_of_model();
  const bool embedded = model_->currentData().toString().isEmpty();
  // The model's own defaults: the embedded model was trained at 64×64×17
  // (and so was a DiT Kinora trained); a FLUX file's are FLUX's (dev's or
  // schnell's), an SDXL file's SDXL's.
  const Preset d = embedded ? Preset::embedded_defaults()
                            : pipeline::family_named(family_).defaults_for(
                                  model_->currentData().toString().toStdString());
  // From one Wan model to another the chosen sampler stays; another family
  // starts from its own.
  apply_family(restoring_ || (family_ == "wan" && before == "wan") ? chosen : d.sampler);
  if (!restoring_) {
    width_->setValue(d.width), height_->setValue(d.height), frames_->setValue(d.frames);
    fps_->setValue(d.fps), steps_->setValue(d.steps), shift_->setValue(d.shift);
    guidance_->setValue(d.guidance);
    precision_->setCurrentText(QString::fromStdString(d.precision));
  }
  for (int r = 0; r < loras_->rowCount(); ++r) check_lora(r);
  snap();
}

void GeneratePanel::apply_family(const std::string& sampler) {
  const QString model = model_->currentData().toString();
  const bool embedded = model.isEmpty(), sdxl = family_ == "sdxl",
             image = family_ == "flux" || sdxl;
  vae_->setEnabled(!embedded);
  text_encoder_->setEnabled(!embedded);
  tokenizer_->setEnabled(!embedded && !sdxl);  // SDXL's encoders are CLIPs
  clip_->setEnabled(family_ == "flux" || sdxl);
  frames_->setEnabled(!image);
  fps_->setEnabled(!image);
  shift_->setEnabled(family_ == "wan");  // FLUX's and SDXL's schedules take no shift
  for (auto* s : {width_, height_}) s->setSingleStep(sdxl ? 32 : 16);
  // An example, said to be one: the prompt is empty until written.
  prompt_->setPlaceholderText(QString("Describe what to make (empty: not queued). For example: ") +
                              (sdxl ? "a lighthouse at dusk, (oil painting:1.2)"
                               : family_ == "flux"
                                   ? "a lighthouse at dusk, oil painting"
                                   : "a red circle moving right on a blue background"));
  negative_->setPlaceholderText(sdxl ? "negative prompt (empty: none)"
                                : family_ == "flux"
                                    ? "negative prompt (FLUX does not use one)"
                                    : "negative prompt (empty: the model's default)");

  // What a "—" VAE, CLIP and text encoder stand for: the checkpoint's own parts.
  holds_vae_ = holds_clip_ = holds_text_encoder_ = false;
  if (sdxl && !embedded) try {
      for (const auto& part : io::detect_parts(io::Checkpoint::open(model.toStdString()).shapes()))
        switch (part.family) {
          case io::Family::KLAutoencoder:
            holds_vae_ = true;
            break;
          case io::Family::CLIP:
            holds_clip_ = true;
            break;
          case io::Family::OpenCLIP:
            holds_text_encoder_ = true;
            break;
          default:
            break;
        }
    } catch (const std::exception&) {
      // Unreadable: the render says why.
    }
  list_parts();
  for (auto [box, held] :
       {std::pair{vae_, holds_vae_}, {clip_, holds_clip_}, {text_encoder_, holds_text_encoder_}})
    if (box->count() > 0 && box->itemData(0).toString().isEmpty())
      box->setItemText(0, held ? "— (the checkpoint's)" : "—");

  // The samplers of the family's kind, `sampler` selected when it is one.
  const auto space = space_of(family_);
  sampler_->clear();
  for (const auto& e : schedulers::available_schedulers())
    if (e.space == space) {
      sampler_->addItem(QString::fromStdString(e.name));
      sampler_->setItemData(sampler_->count() - 1, QString::fromStdString(e.description),
                            Qt::ToolTipRole);
    }
  if (!select_sampler(sampler_, sampler, space)) {
    Preset d;
    try {
      d = pipeline::family_named(family_).defaults();
    } catch (const std::exception&) {
      // No such family: Wan's sampler.
    }
    select_sampler(sampler_, d.sampler, space);
  }
}

void GeneratePanel::list_parts() {
  const bool embedded = model_->currentData().toString().isEmpty();
  const std::string listing = embedded ? "embedded" : family_;
  for (auto [box, files, role, held] :
       {std::tuple{vae_, &vae_files_, "vae", holds_vae_},
        {text_encoder_, &encoder_files_, "text_encoder", holds_text_encoder_},
        {clip_, &encoder_files_, "clip", holds_clip_}}) {
    const QString current = box->currentData().toString();
    if (!listed_for_.empty() && !current.isEmpty()) chosen_[listed_for_ + "/" + role] = current;
    const bool applies = !embedded && wanted(family_, role).has_value();
    const QSignalBlocker quiet(box);
    box->clear();
    box->addItem("—", QString());
    if (applies) {
      // The files that fit, of the kind the role prefers where there are
      // several (a folder with clip_g and clip_l lists bigG for SDXL's).
      std::vector<std::tuple<QString, QString, int>> fitting;
      for (const auto& [name, path] : *files)
        if (wrong_part(family_, role, path).isEmpty())
          fitting.emplace_back(name, path, kind_rank(family_, role, path));
      int best = -1;
      for (const auto& f : fitting)
        if (const int r = std::get<2>(f); r >= 0 && (best < 0 || r < best)) best = r;
      for (const auto& [name, path, rank] : fitting)
        if (rank == best || rank < 0) box->addItem(name, path);
    }
    int i = -1;
    if (restoring_) {
      // A preset's file stays as it names it (a wrong one is refused when queued).
      if (!current.isEmpty()) i = box->findData(current);
      if (i < 0 && !current.isEmpty()) {
        box->addItem(QFileInfo(current).fileName(), current);
        i = box->count() - 1;
      }
    } else if (applies) {
      if (!current.isEmpty() && (listed_for_ == listing || listed_for_.empty()))
        i = box->findData(current);
      if (i < 0) {
        const auto before = chosen_.find(listing + "/" + role);
        if (before != chosen_.end()) i = box->findData(before->second);
      }
      // The only file that fits, unless the checkpoint holds its own.
      if (i < 0 && box->count() == 2 && !held) i = 1;
    }
    box->setCurrentIndex(std::max(0, i));
  }
  // The T5 tokenizer: none for the embedded model and SDXL; else the only
  // SentencePiece model there is, when none is chosen.
  if (!restoring_) {
    if (embedded || family_ == "sdxl")
      tokenizer_->setCurrentIndex(0);
    else if (tokenizer_->currentIndex() <= 0 && tokenizer_->count() == 2)
      tokenizer_->setCurrentIndex(1);
  }
  listed_for_ = listing;
}

void GeneratePanel::snap() {
  // The family's rules (frames, and sizes to multiples of 16, or 32 for SDXL),
  // for the selected model (the embedded one takes 17, 37, 57 … frames).
  Preset p = preset();
  try {
    pipeline::family_named(family_).snap(p);
  } catch (const std::exception&) {
    pipeline::family_named("wan").snap(p);
  }
  QStringList notes;
  if (p.frames != frames_->value()) {
    notes << QString("frames %1 → %2").arg(frames_->value()).arg(p.frames);
    frames_->setValue(p.frames);
  }
  for (auto [box, v] : {std::pair{width_, p.width}, {height_, p.height}})
    if (v != box->value()) {
      notes << QString("%1 → %2").arg(box->value()).arg(v);
      box->setValue(v);
    }
  QString hint =
      family_ == "sdxl"
          ? "SDXL makes one image; sizes are multiples of 32; guidance is classifier-free, with "
            "the negative prompt; by default DPM++ 2M Karras, 25 steps, guidance 6. The prompt "
            "takes emphasis, (word:1.2), and BREAK to start a new 75-token chunk."
      : family_ == "flux"
          ? "FLUX makes one image; sizes are multiples of 16; guidance is its distilled guidance "
            "(3.5), and the negative prompt is not used."
          : "Wan makes 4k+1 frames (4 per latent frame after the first); sizes are multiples of "
            "16.";
  if (family_ == "sdxl" && !model_->currentData().toString().isEmpty()) {
    // The parts left at "—": the checkpoint's own, or missing.
    QStringList own, missing;
    for (auto [box, held, what] : {std::tuple{vae_, holds_vae_, "VAE"},
                                   {clip_, holds_clip_, "CLIP (CLIP-L)"},
                                   {text_encoder_, holds_text_encoder_, "Text encoder (bigG)"}})
      if (box->currentData().toString().isEmpty()) (held ? own : missing) << what;
    if (!own.isEmpty()) hint += " From the checkpoint: " + own.join(", ") + ".";
    if (!missing.isEmpty()) hint += " Not in this file, to pick: " + missing.join(", ") + ".";
  }
  if (!notes.isEmpty()) hint += " Snapped: " + notes.join(", ") + ".";
  // The embedded model: its sentence form, and the same note the command line
  // prints when the prompt is outside it (the render still goes ahead).
  if (model_->currentData().toString().isEmpty()) {
    const QString prompt = prompt_->toPlainText();  // as preset() passes it on
    const auto note =
        prompt.trimmed().isEmpty() ? std::nullopt : embedded::prompt_note(prompt.toStdString());
    hint += note ? " Note: " + QString::fromStdString(*note) + "."
                 : QString(
                       " The embedded model draws \"a COLOUR SHAPE moving DIRECTION on a "
                       "COLOUR background\" at 64×64, 17 frames.");
  }
  hint_->setText(hint);
}

void GeneratePanel::randomise_seed() {
  seed_->setValue(-1);  // "random": each job draws its own when it is queued
}

void GeneratePanel::reuse_last_seed() {
  if (last_seed_ >= 0) seed_->setValue(static_cast<int>(last_seed_));
}

void GeneratePanel::add_lora(const QString& given) {
  QString path = given;
  if (path.isEmpty())
    path = QFileDialog::getOpenFileName(this, "Add a LoRA",
                                        models_dir_.isEmpty() ? QString() : models_dir_ + "/loras",
                                        "LoRA (*.safetensors)");
  if (path.isEmpty()) return;
  const int row = loras_->rowCount();
  loras_->insertRow(row);
  auto* item = new QTableWidgetItem(QFileInfo(path).fileName());
  item->setData(Qt::UserRole, path);
  item->setFlags(item->flags() | Qt::ItemIsUserCheckable);
  item->setCheckState(Qt::Checked);
  loras_->setItem(row, 0, item);
  auto* strength = new QWidget(loras_);
  auto* slider = new QSlider(Qt::Horizontal, strength);
  slider->setObjectName("lora_strength_slider");
  slider->setRange(-200, 200);
  slider->setValue(100);
  slider->setMinimumWidth(80);
  auto* spin = new QDoubleSpinBox(strength);
  spin->setObjectName("lora_strength");
  spin->setRange(-2, 2);
  spin->setDecimals(2);
  spin->setSingleStep(0.05);
  spin->setValue(1.0);
  // The slider follows the spin box without answering it: a value written
  // back into the spin box while it is being typed ("0" of "0.75") would
  // replace the text being typed.
  connect(slider, &QSlider::valueChanged, spin, [spin](int v) {
    if (std::lround(spin->value() * 100) != v) spin->setValue(v / 100.0);
  });
  connect(spin, &QDoubleSpinBox::valueChanged, slider, [slider](double v) {
    const QSignalBlocker quiet(slider);
    slider->setValue(static_cast<int>(std::lround(v * 100)));
  });
  guard_wheel(slider, wheel_guard_);
  guard_wheel(spin, wheel_guard_);
  auto* l = new QHBoxLayout(strength);
  l->setContentsMargins(0, 0, 0, 0);
  l->addWidget(slider, 1);
  l->addWidget(spin);
  loras_->setCellWidget(row, 1, strength);
  auto* remove = new QToolButton(loras_);
  remove->setText("✕");
  connect(remove, &QToolButton::clicked, this, [this, item] { loras_->removeRow(item->row()); });
  loras_->setCellWidget(row, 2, remove);
  check_lora(row);
}

void GeneratePanel::check_lora(int row) {
  auto* item = loras_->item(row, 0);
  const auto path = item->data(Qt::UserRole).toString().toStdString();
  // What the file holds, at a glance; and whether it fits the selected model
  // (the matches, or why not: no LoRA, another family or size), in red when
  // it does not. The job is refused on queueing for the same reason.
  QString tip;
  bool fits = true;
  try {
    const auto r = lora::describe(path);
    tip = QString("%1: %2 updates%3")
              .arg(QString::fromStdString(r.format))
              .arg(r.total)
              .arg(QString::fromStdString(r.rank_and_alpha()));
    Preset p = preset();
    p.prompt.clear();
    p.loras = {{path, 1.0}};
    const auto reports = pipeline::check_loras(p);
    tip += QString("\n%1 of %2 updates match %3")
               .arg(reports.at(0).matched)
               .arg(reports.at(0).total)
               .arg(model_->currentText());
  } catch (const std::exception& e) {
    tip += (tip.isEmpty() ? "" : "\n") + QString::fromStdString(e.what());
    fits = false;
  }
  item->setToolTip(tip);
  item->setForeground(fits ? palette().text() : QBrush(Qt::red));
}

Preset GeneratePanel::preset() const {
  Preset p = model_->currentData().toString().isEmpty() ? Preset::embedded_defaults() : Preset();
  p.prompt = prompt_->toPlainText().toStdString();
  p.negative_prompt = negative_->toPlainText().toStdString();
  p.seed = seed_->value();
  p.width = width_->value(), p.height = height_->value(), p.frames = frames_->value();
  p.fps = fps_->value(), p.steps = steps_->value();
  p.sampler = sampler_->currentText().toStdString();
  p.shift = shift_->value(), p.guidance = guidance_->value();
  p.precision = precision_->currentText().toStdString();
  p.device = device_->currentData().toString().toStdString();
  p.block_swap = block_swap_->value() < 0 ? "auto" : std::to_string(block_swap_->value());
  p.fp8 = fp8_->isChecked();
  p.model = model_->currentData().toString().toStdString();
  if (!p.model.empty()) {
    // "—" is "" (for SDXL: the checkpoint's own part).
    p.vae = vae_->currentData().toString().toStdString();
    p.text_encoder = text_encoder_->currentData().toString().toStdString();
    if (family_ != "sdxl")  // SDXL's encoders are CLIPs, with the CLIP tokenizer
      p.tokenizer = tokenizer_->currentData().toString().toStdString();
    if (family_ == "flux" || family_ == "sdxl") {
      p.family = family_;
      p.clip = clip_->currentData().toString().toStdString();
      p.clip_tokenizer = clip_tokenizer_;
    }
  }
  // LoRAs named in the prompt (<lora:NAME>) are looked up in the models
  // folder's loras/, as `kinora generate --models-dir` and a queued preset
  // look them up; and a checkpoint's CLIP, which has no tokenizer beside it,
  // takes the models folder's.
  p.models_dir = models_dir_.toStdString();
  p.format = format_->currentData().toString().toStdString();
  for (int r = 0; r < loras_->rowCount(); ++r) {
    const auto* item = loras_->item(r, 0);
    if (item->checkState() != Qt::Checked) continue;
    const auto* spin = loras_->cellWidget(r, 1)->findChild<QDoubleSpinBox*>();
    p.loras.push_back({item->data(Qt::UserRole).toString().toStdString(), spin->value()});
  }
  return p;
}

void GeneratePanel::set_preset(const Preset& p) {
  restoring_ = true;
  prompt_->setPlainText(QString::fromStdString(p.prompt));
  negative_->setPlainText(QString::fromStdString(p.negative_prompt));
  select(model_, QString::fromStdString(p.model));
  select(vae_, QString::fromStdString(p.vae));
  select(text_encoder_, QString::fromStdString(p.text_encoder));
  select(tokenizer_, QString::fromStdString(p.tokenizer));
  select(clip_, QString::fromStdString(p.clip));
  clip_tokenizer_ = p.clip_tokenizer;
  family_ = p.family.empty() ? family_of_model() : p.family;
  apply_family(p.sampler);
  if (!p.sampler.empty() && !select_sampler(sampler_, p.sampler, space_of(family_))) {
    // Another kind's sampler: kept as the preset says, and refused by the
    // render naming this model's.
    sampler_->addItem(QString::fromStdString(p.sampler));
    sampler_->setCurrentIndex(sampler_->count() - 1);
  }
  seed_->setValue(static_cast<int>(std::min<int64_t>(p.seed, std::numeric_limits<int>::max())));
  width_->setValue(p.width), height_->setValue(p.height), frames_->setValue(p.frames);
  fps_->setValue(p.fps), steps_->setValue(p.steps);
  shift_->setValue(p.shift), guidance_->setValue(p.guidance);
  precision_->setCurrentText(QString::fromStdString(p.precision));
  {  // a device this machine lacks (a preset from elsewhere) falls back to auto
    const int d = device_->findData(QString::fromStdString(p.device));
    device_->setCurrentIndex(std::max(0, d));
  }
  const auto swap = pipeline::block_swap_count(p.block_swap, "block_swap");
  block_swap_->setValue(swap ? static_cast<int>(*swap) : -1);
  fp8_->setChecked(p.fp8);
  const int f = format_->findData(QString::fromStdString(p.format));
  format_->setCurrentIndex(std::max(0, f));
  loras_->setRowCount(0);
  for (const auto& l : p.loras) {
    add_lora(QString::fromStdString(l.path));
    loras_->cellWidget(loras_->rowCount() - 1, 1)
        ->findChild<QDoubleSpinBox*>()
        ->setValue(l.strength);
  }
  restoring_ = false;
  snap();
}

}  // namespace kinora::app
