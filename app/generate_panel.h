#pragma once
// The parameters dock: prompt, models, LoRAs, sampler settings, seed, size,
// output format. It reads and writes pipeline::Preset, the same object the CLI
// renders, so "use these settings" and preset files restore every parameter.
#include <QWidget>

#include <map>
#include <string>
#include <utility>
#include <vector>

class QCheckBox;

#include "pipeline/preset.h"

class QComboBox;
class QDoubleSpinBox;
class QLabel;
class QPlainTextEdit;
class QSpinBox;
class QTableWidget;

namespace kinora::app {

// Why `file` cannot be the `role` ("vae", "text_encoder" or "clip") of a
// model of `family` ("wan", "flux", "sdxl"): the role, the file, what its
// tensors say it is and what the family takes ("VAE ae.safetensors is an
// image autoencoder (FLUX: …); a Wan model takes a Wan VAE"). "" when it fits,
// and when what it holds cannot be read or recognised (the render says why).
// Each file is read once while its size and time stay the same.
QString wrong_part(const std::string& family, const std::string& role, const QString& file);

class GeneratePanel : public QWidget {
  Q_OBJECT
 public:
  explicit GeneratePanel(QWidget* parent = nullptr);

  // Lists the models under `dir` (ComfyUI's diffusion_models/, then the
  // single-file checkpoints of checkpoints/, vae/, text_encoders/, loras/),
  // the embedded model first.
  void set_models_dir(const QString& dir);
  const QString& models_dir() const { return models_dir_; }

  // The form as a preset (seed −1 when "random"; output left empty).
  pipeline::Preset preset() const;
  // Fills every field from `p` (models not in the lists are added to them).
  void set_preset(const pipeline::Preset& p);

  void set_last_seed(int64_t seed) { last_seed_ = seed; }
  int64_t last_seed() const { return last_seed_; }

 public Q_SLOTS:
  void randomise_seed();
  void reuse_last_seed();
  void add_lora(const QString& path = {});

 private:
  void model_changed();
  // The fields of family_: which apply (tokenizer, CLIP, frames, shift), the
  // size step, the sampler list of the family's kind (selecting `sampler`,
  // else the family's default) and what a single-file checkpoint holds.
  void apply_family(const std::string& sampler);
  // The VAE, text encoder and CLIP pickers list the files of the models
  // folder that fit family_ (by what their tensors hold); the file chosen for
  // this family before comes back, else the only one that fits is chosen.
  // Restoring a preset keeps its files as it names them.
  void list_parts();
  // Marks LoRA row `row` as fitting the selected model or not (tooltip, colour).
  void check_lora(int row);
  void snap();
  // The family of the selected model file ("wan" for the embedded model and
  // for files no family recognises: the render says what is wrong).
  std::string family_of_model() const;
  QPlainTextEdit *prompt_, *negative_;
  QComboBox *model_, *vae_, *text_encoder_, *tokenizer_, *clip_, *sampler_, *format_, *precision_,
      *device_;
  QTableWidget* loras_;
  QSpinBox *steps_, *width_, *height_, *frames_, *fps_, *seed_, *block_swap_;
  QDoubleSpinBox *shift_, *guidance_;
  QCheckBox* fp8_;
  QLabel* hint_;
  QString models_dir_;
  // The files of the models folder's vae/ and text_encoders/ (name, path).
  std::vector<std::pair<QString, QString>> vae_files_, encoder_files_;
  std::string listed_for_;                 // the family the pickers list
  std::map<std::string, QString> chosen_;  // "family/role" → the file last chosen
  std::string family_;                     // of the selected model: "wan", "flux" or "sdxl"
  // Which of the parts a "—" VAE, CLIP and text encoder stand for the model
  // file holds (an SDXL single-file checkpoint).
  bool holds_vae_ = false, holds_clip_ = false, holds_text_encoder_ = false;
  std::string clip_tokenizer_;  // kept from a preset (found beside CLIP when empty)
  int64_t last_seed_ = -1;
  bool restoring_ = false;
  QObject* wheel_guard_ = nullptr;
};

}  // namespace kinora::app
