// The studio's parts without a window manager (QT_QPA_PLATFORM=offscreen): the
// queue model and its persistence, the worker's cancel, presets through the
// form, and "use these settings" / drag and drop from a rendered output.
#include <gtest/gtest.h>

#include "../unit/flux_files.h"
#include "../unit/poisoned_files.h"
#include "../unit/sdxl_files.h"
#include "../unit/test_util.h"

#include <QApplication>
#include <QCheckBox>
#include <QComboBox>
#include <QDir>
#include <QDoubleSpinBox>
#include <QElapsedTimer>
#include <QFile>
#include <QImage>
#include <QLabel>
#include <QLineEdit>
#include <QListView>
#include <QMessageBox>
#include <QMimeData>
#include <QPlainTextEdit>
#include <QPushButton>
#include <QSignalSpy>
#include <QSlider>
#include <QSpinBox>
#include <QStatusBar>
#include <QTableWidget>
#include <QTest>
#include <QUrl>
#include <QWheelEvent>

#include <chrono>
#include <filesystem>
#include <fstream>

#include <nlohmann/json.hpp>

#include "app/gallery.h"
#include "app/generate_panel.h"
#include "app/main_window.h"
#include "app/queue_model.h"
#include "app/viewer.h"
#include "app/worker.h"
#include "io/safetensors.h"
#include "media/output.h"
#include "pipeline/pipeline.h"
#include "render/render.h"
#include "schedulers/registry.h"

namespace kinora::app {
namespace {
namespace fs = std::filesystem;
using pipeline::Preset;
using test::fixture;

QApplication& qapp() {
  static int argc = 1;
  static char name[] = "app_test";
  static char* argv[] = {name, nullptr};
  qputenv("QT_QPA_PLATFORM", "offscreen");
  qputenv("QT_MEDIA_BACKEND", "ffmpeg");  // as kinora-studio does
  // Never destroyed: QTest's key events give it an input device that Qt 6.4
  // cannot delete at exit once the GUI is torn down (a crash after the last
  // test, when a QTest::keyClick test runs alone).
  static auto* app = new QApplication(argc, argv);
  return *app;
}

// A scripted studio's options in `dir`: its data folder and an output
// folder, made.
StudioOptions scripted_options(const fs::path& dir) {
  StudioOptions o;
  o.data_dir = QString::fromStdString((dir / "data").string());
  o.output_dir = QString::fromStdString((dir / "out").string());
  fs::create_directories(dir / "out");
  o.quit_when_idle = true;
  return o;
}

// A render with the tiny fixture models (random weights): fast, any size.
Preset fixture_preset(const fs::path& out, int steps = 4) {
  Preset p;
  p.prompt = "a red circle moving right on a blue background";
  p.negative_prompt = "blurry";
  p.seed = 1234;
  p.width = 64, p.height = 48, p.frames = 9, p.fps = 12, p.steps = steps;
  p.sampler = "flow_dpmpp_2m", p.shift = 2.5, p.guidance = 3.5, p.precision = "fp32";
  p.model = fixture("wan21_dit_tiny.safetensors");
  p.vae = fixture("wan21_vae_tiny.safetensors");
  p.text_encoder = fixture("umt5_enc_tiny.safetensors");
  p.tokenizer = fixture("spm_tiny.model");
  p.output = out.string();
  return p;
}

TEST(QueueModel, AddFrontDuplicateRemoveRequeueMove) {
  qapp();
  QueueModel q;
  Preset a, b, c;
  a.prompt = "a", b.prompt = "b", c.prompt = "c";
  const auto ida = q.add(a);
  q.add(b);
  q.set_status(ida, JobStatus::Running);
  q.add(c, /*front=*/true);  // before the pending ones, after the running one
  auto prompts = [&] {
    QStringList s;
    for (int i = 0; i < q.rowCount(); ++i)
      s << q.data(q.index(i), QueueModel::PromptRole).toString();
    return s.join(",");
  };
  EXPECT_EQ(prompts(), "a,c,b");
  q.duplicate(1);
  EXPECT_EQ(prompts(), "a,c,c,b");
  q.remove(0);  // the running job stays
  EXPECT_EQ(q.rowCount(), 4);
  q.remove(2);
  EXPECT_EQ(prompts(), "a,c,b");
  EXPECT_TRUE(q.moveRows({}, 2, 1, {}, 1));
  EXPECT_EQ(prompts(), "a,b,c");
  EXPECT_FALSE(q.requeue(1));  // pending already
  q.set_status(ida, JobStatus::Failed, "boom");
  EXPECT_TRUE(q.requeue(0));
  EXPECT_EQ(q.data(q.index(0), QueueModel::StatusRole).toString(), "pending");
  EXPECT_EQ(q.next_pending(), 0);
}

TEST(QueueModel, DragAndDropReorders) {
  qapp();
  QueueModel q;
  for (const char* s : {"a", "b", "c"}) {
    Preset p;
    p.prompt = s;
    q.add(p);
  }
  std::unique_ptr<QMimeData> m(q.mimeData({q.index(0)}));
  q.dropMimeData(m.get(), Qt::MoveAction, 3, 0, {});
  EXPECT_EQ(q.at(0).preset.prompt, "b");
  EXPECT_EQ(q.at(2).preset.prompt, "a");
}

// A queue file that cannot be written (its folder gone, a full disk): each
// change says so, with the file and the reason, and the jobs stay listed.
TEST(QueueModel, AQueueThatCannotBeSavedSaysSo) {
  qapp();
  test::TempDir tmp;
  std::ofstream(tmp.path() / "afile") << "x";
  QueueModel q(QString::fromStdString((tmp.path() / "afile" / "queue.json").string()));
  QSignalSpy failed(&q, &QueueModel::saveFailed);
  Preset p;
  p.prompt = "kept";
  q.add(p);
  ASSERT_GE(failed.count(), 1);
  const auto message = failed.at(0).at(0).toString().toStdString();
  EXPECT_NE(message.find("afile/queue.json: the queue could not be saved"), std::string::npos)
      << message;
  EXPECT_EQ(q.rowCount(), 1);
}

TEST(QueueModel, PersistsAndMarksTheRunningJobInterrupted) {
  qapp();
  test::TempDir tmp;
  const auto& dir = tmp.path();
  const auto file = QString::fromStdString((dir / "queue.json").string());
  QString running, done;
  {
    QueueModel q(file);
    Preset p;
    p.prompt = "first";
    p.seed = 7;
    running = q.add(p);
    p.prompt = "second";
    done = q.add(p);
    q.add(p);
    q.set_status(running, JobStatus::Running);
    q.set_status(done, JobStatus::Done);
    q.set_output(done, "/x/y.mp4");
  }  // as if the process died here
  QueueModel q(file);
  QString err;
  ASSERT_TRUE(q.load(&err)) << err.toStdString();
  ASSERT_EQ(q.rowCount(), 3);
  EXPECT_EQ(q.job(running)->status, JobStatus::Interrupted);
  EXPECT_EQ(q.job(running)->preset.seed, 7);
  EXPECT_EQ(q.job(done)->status, JobStatus::Done);
  EXPECT_EQ(q.job(done)->output, "/x/y.mp4");
  EXPECT_EQ(q.at(2).status, JobStatus::Pending);
  EXPECT_TRUE(q.requeue(q.row_of(running)));
}

TEST(QueueModel, AMalformedFileIsMovedAsideWithAMessage) {
  qapp();
  test::TempDir tmp;
  const auto& dir = tmp.path();
  const auto file = QString::fromStdString((dir / "queue.json").string());
  {
    QFile f(file);
    ASSERT_TRUE(f.open(QIODevice::WriteOnly));
    f.write("{\"jobs\": [ {\"id\": \"x\", \"preset\": {\"steps\": \"many\"}} ]}");
  }
  QueueModel q(file);
  QString err;
  EXPECT_FALSE(q.load(&err));
  EXPECT_TRUE(err.contains("steps")) << err.toStdString();
  EXPECT_TRUE(QFile::exists(file + ".bad"));
  EXPECT_EQ(q.rowCount(), 0);
}

// A job that cannot be read (a bad value) is left out and the others stay
// queued; one of a status this studio does not know comes back failed (not
// rendered again unasked). Each damaged file is kept whole, none over another.
TEST(QueueModel, AJobThatCannotBeReadLeavesTheOthersAndNoBackupIsReplaced) {
  qapp();
  test::TempDir tmp;
  const auto file = QString::fromStdString((tmp.path() / "queue.json").string());
  const auto write = [&](const QByteArray& bytes) {
    QFile f(file);
    ASSERT_TRUE(f.open(QIODevice::WriteOnly));
    f.write(bytes);
  };
  const QByteArray four =
      R"({"jobs": [ {"id": "a", "status": "done", "preset": {"prompt": "first"}},
                    {"id": "b", "preset": {"steps": "many"}},
                    {"id": "c", "status": "exploded", "preset": {}},
                    {"id": "d", "status": "pending", "preset": {"prompt": "fourth"}} ]})";
  write(four);
  {
    QueueModel q(file);
    QString err;
    EXPECT_FALSE(q.load(&err));
    EXPECT_TRUE(err.contains("1 of 4 jobs")) << err.toStdString();
    EXPECT_TRUE(err.contains("(job b)") && err.contains("steps")) << err.toStdString();
    EXPECT_TRUE(err.contains("kept as " + file + ".bad)")) << err.toStdString();
    ASSERT_EQ(q.rowCount(), 3);
    EXPECT_EQ(q.at(0).preset.prompt, "first");
    EXPECT_EQ(q.at(1).status, JobStatus::Failed);
    EXPECT_TRUE(q.at(1).message.contains("'exploded'")) << q.at(1).message.toStdString();
    EXPECT_EQ(q.at(2).preset.prompt, "fourth");
    EXPECT_EQ(q.at(2).status, JobStatus::Pending);
    EXPECT_EQ(q.next_pending(), 2);
  }
  EXPECT_EQ(test::read_bytes((tmp.path() / "queue.json.bad")), four.toStdString());
  // Two damaged files one after the other: both kept.
  write("{\"jobs\": [");
  EXPECT_FALSE(QueueModel(file).load());
  write("broken");
  QString err;
  EXPECT_FALSE(QueueModel(file).load(&err));
  EXPECT_TRUE(err.contains("queue.json.bad-3")) << err.toStdString();
  EXPECT_EQ(test::read_bytes((tmp.path() / "queue.json.bad")), four.toStdString());
  EXPECT_EQ(test::read_bytes((tmp.path() / "queue.json.bad-2")), "{\"jobs\": [");
  EXPECT_EQ(test::read_bytes((tmp.path() / "queue.json.bad-3")), "broken");
  QueueModel empty(file);
  EXPECT_TRUE(empty.load());  // the file was moved aside: a new, empty queue
  EXPECT_EQ(empty.rowCount(), 0);
}

TEST(Worker, CancelStopsWithinAStepAndLeavesNoFile) {
  qapp();
  test::TempDir tmp;
  const auto& dir = tmp.path();
  const auto out = dir / "cancelled.mp4";
  GenerationWorker w;
  int last_step = 0;
  QObject::connect(&w, &GenerationWorker::progress, &w,
                   [&](const QString&, int step, int, double, double, const QList<QImage>& prev) {
                     last_step = step;
                     EXPECT_FALSE(prev.isEmpty());  // the live preview comes with each step
                     if (step == 2) w.cancel();
                   });
  QSignalSpy cancelled(&w, &GenerationWorker::cancelled);
  QSignalSpy finished(&w, &GenerationWorker::finished);
  w.render("job", QString::fromStdString(fixture_preset(out, 20).to_json().dump()));
  EXPECT_EQ(cancelled.count(), 1);
  EXPECT_EQ(finished.count(), 0);
  EXPECT_EQ(last_step, 2);
  EXPECT_FALSE(fs::exists(out));
  for (const auto& e : fs::directory_iterator(dir)) ADD_FAILURE() << "left behind: " << e.path();
}

TEST(Worker, ErrorsBecomeAMessageNotACrash) {
  qapp();
  GenerationWorker w;
  QSignalSpy failed(&w, &GenerationWorker::failed);
  auto p = fixture_preset("/tmp/never.mp4");
  p.model = "/no/such/model.safetensors";
  w.render("job", QString::fromStdString(p.to_json().dump()));
  ASSERT_EQ(failed.count(), 1);
  EXPECT_TRUE(failed[0][1].toString().contains("/no/such/model.safetensors"));
}

// The LoRA table says what each file holds, and which is no LoRA.
TEST(GeneratePanel, TheLoraTableShowsWhatEachFileHolds) {
  qapp();
  test::TempDir tmp;
  io::save_safetensors(tmp / "style.safetensors",
                       {{"lora_unet_blocks_0_self_attn_q.lora_down.weight", torch::ones({4, 128})},
                        {"lora_unet_blocks_0_self_attn_q.lora_up.weight", torch::ones({128, 4})},
                        {"lora_unet_blocks_0_self_attn_q.alpha", torch::tensor(2.0)}});
  // One for the embedded model's DiT (width 512), the selected model.
  io::save_safetensors(tmp / "fits.safetensors",
                       {{"lora_unet_blocks_0_self_attn_q.lora_down.weight", torch::ones({4, 512})},
                        {"lora_unet_blocks_0_self_attn_q.lora_up.weight", torch::ones({512, 4})}});
  GeneratePanel panel;
  panel.add_lora(QString::fromStdString((tmp / "style.safetensors").string()));
  panel.add_lora(QString::fromStdString(fixture("spm_tiny.model")));
  panel.add_lora(QString::fromStdString((tmp / "fits.safetensors").string()));
  auto* table = panel.findChild<QTableWidget*>();
  ASSERT_TRUE(table);
  ASSERT_EQ(table->rowCount(), 3);
  // A LoRA for another size: what it holds, and why it does not fit, in red.
  const auto tip0 = table->item(0, 0)->toolTip().toStdString();
  EXPECT_EQ(tip0.rfind("kohya: 1 updates, rank 4, alpha 2\n", 0), 0u) << tip0;
  EXPECT_NE(tip0.find("matches none of the model's modules"), std::string::npos) << tip0;
  EXPECT_EQ(table->item(0, 0)->foreground().color(), QColor(Qt::red));
  EXPECT_TRUE(table->item(1, 0)->toolTip().contains("spm_tiny.model"));
  EXPECT_EQ(table->item(1, 0)->foreground().color(), QColor(Qt::red));
  EXPECT_EQ(table->item(2, 0)->toolTip().toStdString().rfind(
                "kohya: 1 updates, rank 4\n1 of 1 updates match Kinora tiny", 0),
            0u)
      << table->item(2, 0)->toolTip().toStdString();
  EXPECT_NE(table->item(2, 0)->foreground().color(), QColor(Qt::red));
}

// A strength typed into a LoRA row's spin box keeps its fraction (the slider
// beside it follows without writing back into the text being typed), and the
// slider still sets the box.
TEST(GeneratePanel, ALorasTypedStrengthKeepsItsFraction) {
  qapp();
  GeneratePanel panel;
  panel.add_lora("/loras/style.safetensors");
  auto* spin = panel.findChild<QDoubleSpinBox*>("lora_strength");
  auto* slider = panel.findChild<QSlider*>("lora_strength_slider");
  ASSERT_TRUE(spin && slider);
  for (const auto& [typed, want] : std::vector<std::pair<QString, double>>{
           {"0.75", 0.75}, {"1.3", 1.3}, {"0.25", 0.25}, {"-1.5", -1.5}}) {
    spin->selectAll();
    QTest::keyClicks(spin, typed);
    QTest::keyClick(spin, Qt::Key_Tab);
    EXPECT_DOUBLE_EQ(spin->value(), want) << typed.toStdString();
    ASSERT_EQ(panel.preset().loras.size(), 1u);
    EXPECT_DOUBLE_EQ(panel.preset().loras[0].strength, want) << typed.toStdString();
    EXPECT_EQ(slider->value(), std::lround(want * 100));
  }
  slider->setValue(40);
  EXPECT_DOUBLE_EQ(spin->value(), 0.4);
}

// The viewer's Loop plays a clip again from its first frame at its end; with
// Loop unticked it stops there.
TEST(Viewer, LoopPlaysTheClipAgain) {
  qapp();
  test::TempDir tmp;
  auto frames = torch::zeros({4, 32, 48, 3}, torch::kUInt8);
  const auto file = tmp.path() / "short.mp4";
  media::WriteOptions o;
  o.fps = 24;
  media::write_output(media::prepare_output(file, "", 4, false), frames, o);
  Viewer v;
  v.open(QString::fromStdString(file.string()), 24);
  auto* loop = v.findChild<QCheckBox*>();
  ASSERT_TRUE(loop);
  EXPECT_TRUE(loop->isChecked());
  QElapsedTimer t;
  t.start();
  while (v.loops() < 2 && t.elapsed() < 15000) QTest::qWait(20);
  EXPECT_GE(v.loops(), 2);
  EXPECT_TRUE(v.playing());
  loop->setChecked(false);
  t.restart();
  while (v.playing() && t.elapsed() < 15000) QTest::qWait(20);
  EXPECT_FALSE(v.playing());
}

// The pickers list models in subfolders (by their path inside the folder)
// and diffusers folders (not the files inside them); a restored preset's
// path inside the folder selects its entry.
TEST(GeneratePanel, PickersListSubfoldersAndDiffusersFolders) {
  qapp();
  test::TempDir tmp;
  const auto models = tmp.path() / "models";
  for (const char* sub :
       {"diffusion_models/wan/t2v", "diffusers/FLUX.1-tiny/transformer", "vae/wan"})
    fs::create_directories(models / sub);
  fs::create_symlink(fixture("wan21_dit_tiny.safetensors"),
                     models / "diffusion_models/wan/t2v/dit.safetensors");
  fs::create_symlink(fixture("wan21_dit_tiny.safetensors"),
                     models / "diffusion_models/top.safetensors");
  fs::create_symlink(fixture("wan21_vae_tiny.safetensors"), models / "vae/wan/vae.safetensors");
  std::ofstream(models / "diffusers/FLUX.1-tiny/model_index.json") << "{}";
  std::ofstream(models / "diffusers/FLUX.1-tiny/transformer/diffusion_pytorch_model.safetensors")
      << "x";
  // A linked folder is listed, as the command line finds it; a link loop
  // lists its files once; a file deeper than four subfolders is not listed.
  fs::create_directories(tmp.path() / "elsewhere/a/b/c/d");
  fs::create_symlink(fixture("wan21_dit_tiny.safetensors"),
                     tmp.path() / "elsewhere/linked.safetensors");
  fs::create_symlink(fixture("wan21_dit_tiny.safetensors"),
                     tmp.path() / "elsewhere/a/b/c/d/deep.safetensors");
  fs::create_directory_symlink(tmp.path() / "elsewhere", models / "diffusion_models/link");
  fs::create_directory_symlink(models / "diffusion_models", models / "diffusion_models/wan/loop");
  GeneratePanel panel;
  panel.set_models_dir(QString::fromStdString(models.string()));
  auto* model = panel.findChild<QComboBox*>("model");
  ASSERT_TRUE(model);
  QStringList names;
  for (int i = 0; i < model->count(); ++i) names << model->itemText(i);
  EXPECT_TRUE(names.contains("wan/t2v/dit.safetensors")) << names.join(", ").toStdString();
  EXPECT_TRUE(names.contains("top.safetensors"));
  EXPECT_TRUE(names.contains("diffusers/FLUX.1-tiny/"));
  EXPECT_TRUE(names.contains("link/linked.safetensors"));
  EXPECT_FALSE(names.contains("link/a/b/c/d/deep.safetensors"));
  EXPECT_EQ(names.count("top.safetensors"), 1);
  for (const auto& n : names) EXPECT_FALSE(n.contains("loop/")) << n.toStdString();
  for (const auto& n : names)
    EXPECT_FALSE(n.contains("diffusion_pytorch_model")) << n.toStdString();
  auto* vae = panel.findChild<QComboBox*>("vae");
  ASSERT_TRUE(vae);
  model->setCurrentIndex(model->findText("top.safetensors"));  // a Wan model: Wan VAEs
  EXPECT_GE(vae->findText("wan/vae.safetensors"), 0);
  // A restored preset's path inside the folder: that entry, not a new one.
  auto p = fixture_preset("");
  p.model = "wan/t2v/dit.safetensors";
  const int before = model->count();
  panel.set_preset(p);
  EXPECT_EQ(model->count(), before);
  EXPECT_EQ(model->currentText(), "wan/t2v/dit.safetensors");
}

TEST(GeneratePanel, PresetRoundTripsThroughTheForm) {
  qapp();
  GeneratePanel panel;
  auto p = fixture_preset("");
  p.output.clear();
  p.format = "webm";
  p.loras = {{"/loras/style.safetensors", 0.65}, {"/loras/motion.safetensors", -0.3}};
  panel.set_preset(p);
  EXPECT_EQ(panel.preset().to_json(), p.to_json());
  // The embedded model: no model keys.
  auto e = Preset::embedded_defaults();
  e.prompt = "a white square moving up on a black background";
  e.seed = 99;
  e.format = "mp4";
  panel.set_preset(e);
  EXPECT_EQ(panel.preset().to_json(), e.to_json());
  EXPECT_TRUE(panel.preset().uses_embedded_model());
  // The device picker: auto, the CPU, and any GPU LibTorch sees; a device this
  // machine lacks falls back to auto.
  auto* device = panel.findChild<QComboBox*>("device");
  ASSERT_TRUE(device);
  EXPECT_EQ(device->itemData(0).toString(), "auto");
  EXPECT_EQ(device->itemData(1).toString(), "cpu");
  e.device = "cpu";
  panel.set_preset(e);
  EXPECT_EQ(panel.preset().device, "cpu");
  e.device = "cuda:7";
  panel.set_preset(e);
  EXPECT_EQ(panel.preset().device, device->count() > 9 ? "cuda:7" : "auto");
  // Block swap: "auto" at the bottom of the count.
  auto* swap = panel.findChild<QSpinBox*>("block_swap");
  ASSERT_TRUE(swap);
  EXPECT_EQ(swap->text(), "auto");
  e.block_swap = "20";
  panel.set_preset(e);
  EXPECT_EQ(swap->value(), 20);
  EXPECT_EQ(panel.preset().block_swap, "20");
  swap->setValue(-1);
  EXPECT_EQ(panel.preset().block_swap, "auto");
  // FP8: a check box, off by default, carried both ways.
  auto* fp8 = panel.findChild<QCheckBox*>("fp8");
  ASSERT_TRUE(fp8);
  EXPECT_FALSE(fp8->isChecked());
  EXPECT_FALSE(panel.preset().fp8);
  e.fp8 = true;
  panel.set_preset(e);
  EXPECT_TRUE(fp8->isChecked());
  EXPECT_TRUE(panel.preset().fp8);
  fp8->setChecked(false);
  EXPECT_FALSE(panel.preset().fp8);
}

TEST(Gallery, ListsAtOnceThenFillsThumbnailsAndPromptsFromAWorker) {
  qapp();
  test::TempDir tmp;
  const auto& dir = tmp.path();
  // Two outputs with Kinora parameters (a red clip, a green one) and a file
  // that only looks like a video.
  auto clip = [&](const char* name, int r, int g, const char* prompt) {
    auto frames = torch::zeros({3, 32, 48, 3}, torch::kUInt8);
    frames.select(3, 0).fill_(r), frames.select(3, 1).fill_(g);
    media::WriteOptions o;
    o.metadata_json =
        nlohmann::json{{"kinora", {{"version", "Kinora test"}}}, {"preset", {{"prompt", prompt}}}}
            .dump();
    media::write_output(media::prepare_output(dir / name, "", 3, false), frames, o);
  };
  clip("red.mp4", 220, 0, "a red square moving up on a black background");
  clip("green.mp4", 0, 220, "a green circle moving left on a white background");
  std::ofstream(dir / "broken.mp4") << "not a video";

  Gallery g;
  QSignalSpy loaded(&g, &Gallery::loaded);
  g.set_folder(QString::fromStdString(dir.string()));
  // Listed at once, nothing read yet: the reading is the worker's, and its
  // results reach the window through the event loop.
  ASSERT_EQ(g.list()->count(), 3);
  for (int i = 0; i < 3; ++i)
    EXPECT_TRUE(g.list()->item(i)->data(Qt::UserRole + 1).toString().isEmpty());
  ASSERT_TRUE(loaded.count() > 0 || loaded.wait(20000));
  EXPECT_EQ(g.pending(), 0);

  auto item = [&](const char* name) -> QListWidgetItem* {
    for (int i = 0; i < g.list()->count(); ++i)
      if (g.list()->item(i)->data(Qt::UserRole).toString().endsWith(name)) return g.list()->item(i);
    return nullptr;
  };
  auto centre = [&](const char* name) {
    const auto img = item(name)->icon().pixmap(128, 128).toImage();
    return img.pixelColor(img.width() / 2, img.height() / 2);
  };
  ASSERT_TRUE(item("red.mp4") && item("green.mp4") && item("broken.mp4"));
  EXPECT_GT(centre("red.mp4").red(), 180);
  EXPECT_LT(centre("red.mp4").green(), 60);
  EXPECT_GT(centre("green.mp4").green(), 180);
  EXPECT_EQ(centre("broken.mp4"), QColor(60, 60, 60));  // the placeholder stays
  EXPECT_EQ(item("red.mp4")->toolTip(), "a red square moving up on a black background");
  // A file without parameters says why on its tooltip.
  EXPECT_TRUE(item("broken.mp4")->toolTip().contains("broken.mp4: not a video FFmpeg can read"))
      << item("broken.mp4")->toolTip().toStdString();

  // The prompts filter.
  g.findChild<QLineEdit*>()->setText("green circle");
  EXPECT_EQ(g.visible_count(), 1);
  EXPECT_FALSE(item("green.mp4")->isHidden());
  g.findChild<QLineEdit*>()->setText("");
  EXPECT_EQ(g.visible_count(), 3);

  // A new output goes first and is read the same way; a refresh while files
  // are being read starts over without losing any.
  clip("blue.mp4", 0, 0, "a blue triangle moving down on a red background");
  g.add(QString::fromStdString((dir / "blue.mp4").string()));
  g.refresh();
  ASSERT_EQ(g.list()->count(), 4);
  ASSERT_TRUE(g.pending() == 0 || loaded.wait(20000));
  while (g.pending() > 0) ASSERT_TRUE(loaded.wait(20000));
  EXPECT_EQ(item("blue.mp4")->toolTip(), "a blue triangle moving down on a red background");
  EXPECT_EQ(item("red.mp4")->toolTip(), "a red square moving up on a black background");
}

// Files made elsewhere are data: one whose comment is nested 30,000 deep (it
// used to crash the studio at every start, the gallery reading it) is listed
// with the reason on its tooltip, and refused as settings with a message.
TEST(Gallery, AHostileFileIsListedWithTheReasonAndRefusedAsSettings) {
  qapp();
  test::TempDir tmp;
  std::string deep;
  for (int i = 0; i < 30000; ++i) deep += "{\"a\":";
  std::ofstream(tmp / "meta.txt") << ";FFMETADATA1\ncomment=" << deep << "\n";
  ASSERT_EQ(
      test::sh("ffmpeg -v error -f lavfi -i color=c=red:s=32x32:d=0.1 -i " +
               (tmp / "meta.txt").string() + " -map_metadata 1 -y " + (tmp / "deep.mp4").string())
          .code,
      0);
  Gallery g;
  QSignalSpy loaded(&g, &Gallery::loaded);
  g.set_folder(QString::fromStdString(tmp.path().string()));
  ASSERT_TRUE(loaded.count() > 0 || loaded.wait(20000));
  ASSERT_EQ(g.list()->count(), 1);
  EXPECT_TRUE(g.list()->item(0)->toolTip().contains("nested deeper than 32 levels"))
      << g.list()->item(0)->toolTip().toStdString();
  StudioOptions o;
  o.data_dir = QString::fromStdString((tmp / "data").string());
  o.output_dir = QString::fromStdString((tmp / "out").string());
  fs::create_directories(tmp / "out");  // the studio makes no given folder
  MainWindow w(o);
  EXPECT_FALSE(w.restore_from(QString::fromStdString((tmp / "deep.mp4").string())));
}

TEST(GeneratePanel, TheHintSaysWhenAPromptIsOutsideTheEmbeddedGrammar) {
  qapp();
  GeneratePanel panel;
  auto* hint = panel.findChild<QLabel*>("hint");
  ASSERT_NE(hint, nullptr);
  auto e = Preset::embedded_defaults();
  e.prompt = "a white square moving up on a black background";
  panel.set_preset(e);
  EXPECT_TRUE(hint->text().contains("The embedded model draws")) << hint->text().toStdString();
  EXPECT_FALSE(hint->text().contains("arbitrary scene")) << hint->text().toStdString();
  // Typing a prompt outside the grammar brings the command line's note at once.
  panel.findChild<QPlainTextEdit*>("prompt")->setPlainText("a fox running through snow");
  EXPECT_TRUE(hint->text().contains("\"a fox running through snow\" is not one"))
      << hint->text().toStdString();
  // A model of the user's own knows any prompt: no note.
  auto p = fixture_preset("");
  p.prompt = "a fox running through snow";
  panel.set_preset(p);
  EXPECT_FALSE(hint->text().contains("not one")) << hint->text().toStdString();
}

// FLUX in the studio: its files in the pickers (CLIP included), its defaults
// when its model is picked, an image rendered by the worker, and the image's
// parameters restored into the form.
TEST(MainWindow, AFluxModelGetsItsPickersDefaultsAndRestoresFromItsImage) {
  qapp();
  test::TempDir tmp;
  const auto& dir = tmp.path();
  for (const char* sub : {"diffusion_models", "vae", "text_encoders"})
    fs::create_directories(dir / "models" / sub);
  const auto flux = test::write_tiny_flux(dir / "models" / "diffusion_models");
  fs::create_symlink(fixture("flux1_ae_tiny.safetensors"),
                     dir / "models" / "vae" / "ae.safetensors");
  for (const char* f : {"t5_enc_tiny.safetensors", "spm_tiny.model", "clip_l_tiny.safetensors"})
    fs::create_symlink(fixture(f), dir / "models" / "text_encoders" / f);
  test::write_clip_tokenizer(dir / "models" / "text_encoders" / "clip_tokenizer");

  StudioOptions o;
  o.data_dir = QString::fromStdString((dir / "data").string());
  o.output_dir = QString::fromStdString((dir / "out").string());
  fs::create_directories(dir / "out");  // the studio makes no given folder
  o.models_dir = QString::fromStdString((dir / "models").string());
  MainWindow w(o);
  auto* panel = w.panel();
  auto* model = panel->findChild<QComboBox*>("model");
  ASSERT_TRUE(model);
  model->setCurrentIndex(model->findData(QString::fromStdString(flux.string())));
  auto* clip = panel->findChild<QComboBox*>("clip");
  ASSERT_TRUE(clip);
  EXPECT_TRUE(clip->isEnabled());
  auto p = panel->preset();
  EXPECT_EQ(p.family, "flux");
  EXPECT_EQ(p.width, 1024);  // FLUX's defaults
  EXPECT_EQ(p.frames, 1);
  EXPECT_EQ(p.steps, 28);
  EXPECT_EQ(p.sampler, "flow_euler");

  // The worker renders the form's image (small and short, from the pickers).
  p.prompt = "a red fox";
  p.width = 64, p.height = 48, p.steps = 2, p.seed = 5;
  p.vae = (dir / "models" / "vae" / "ae.safetensors").string();
  p.text_encoder = (dir / "models" / "text_encoders" / "t5_enc_tiny.safetensors").string();
  p.tokenizer = (dir / "models" / "text_encoders" / "spm_tiny.model").string();
  p.clip = (dir / "models" / "text_encoders" / "clip_l_tiny.safetensors").string();
  p.models_dir = (dir / "models").string();
  p.output = (dir / "fox.png").string();
  GenerationWorker worker;
  QSignalSpy finished(&worker, &GenerationWorker::finished);
  QSignalSpy failed(&worker, &GenerationWorker::failed);
  worker.render("flux", QString::fromStdString(p.to_json().dump()));
  ASSERT_EQ(failed.count(), 0) << failed[0][1].toString().toStdString();
  ASSERT_EQ(finished.count(), 1);
  ASSERT_TRUE(fs::is_regular_file(dir / "fox.png"));

  // Its parameters back into the form: the FLUX files found in the models folder.
  panel->set_preset(Preset::embedded_defaults());
  ASSERT_TRUE(w.restore_from(QString::fromStdString((dir / "fox.png").string())));
  const auto r = panel->preset();
  EXPECT_EQ(r.family, "flux");
  EXPECT_EQ(r.prompt, "a red fox");
  EXPECT_EQ(r.steps, 2);
  EXPECT_EQ(r.frames, 1);
  EXPECT_EQ(fs::path(r.model).filename(), flux.filename());
  EXPECT_EQ(fs::path(r.clip).filename(), "clip_l_tiny.safetensors");
  EXPECT_TRUE(clip->isEnabled());
}

// SDXL in the studio: a single-file checkpoint from checkpoints/ in the model
// picker, its fields (no T5 tokenizer, CLIP-L and bigG from the checkpoint),
// the noise samplers, its defaults and its size rule; a LoRA checked against
// it; its image rendered through the queue and its settings restored.
TEST(MainWindow, AnSdxlCheckpointGetsItsFieldsSamplersAndRendersThroughTheQueue) {
  qapp();
  test::TempDir tmp;
  const auto& dir = tmp.path();
  const auto models = dir / "models";
  for (const char* sub : {"diffusion_models", "checkpoints", "vae", "text_encoders", "loras"})
    fs::create_directories(models / sub);
  fs::create_directories(dir / "parts");
  const auto parts = test::write_tiny_sdxl(dir / "parts");
  const auto checkpoint = models / "checkpoints" / parts.checkpoint.filename();
  fs::rename(parts.checkpoint, checkpoint);
  const auto unet = models / "diffusion_models" / "sdxl_unet.safetensors";
  fs::rename(parts.unet, unet);
  test::write_clip_tokenizer(models / "text_encoders" / "clip_tokenizer");

  StudioOptions o;
  o.data_dir = QString::fromStdString((dir / "data").string());
  o.output_dir = QString::fromStdString((dir / "out").string());
  fs::create_directories(dir / "out");  // the studio makes no given folder
  o.models_dir = QString::fromStdString(models.string());
  o.quit_when_idle = true;  // no dialogs
  MainWindow w(o);
  auto* panel = w.panel();
  auto* model = panel->findChild<QComboBox*>("model");
  auto* sampler = panel->findChild<QComboBox*>("sampler");
  auto* tokenizer = panel->findChild<QComboBox*>("tokenizer");
  auto* vae = panel->findChild<QComboBox*>("vae");
  auto* clip = panel->findChild<QComboBox*>("clip");
  auto* frames = panel->findChild<QSpinBox*>("frames");
  auto* width = panel->findChild<QSpinBox*>("width");
  auto* shift = panel->findChild<QDoubleSpinBox*>("shift");
  auto* hint = panel->findChild<QLabel*>("hint");
  for (QWidget* x : std::initializer_list<QWidget*>{model, sampler, tokenizer, vae, clip, frames,
                                                    width, shift, hint})
    ASSERT_TRUE(x);
  const int ck = model->findData(QString::fromStdString(checkpoint.string()));
  ASSERT_GE(ck, 0);
  EXPECT_EQ(model->itemText(ck), "checkpoints/sdxl_tiny_checkpoint.safetensors");
  EXPECT_GT(ck, model->findData(QString::fromStdString(unet.string())));  // after diffusion_models/
  model->setCurrentIndex(ck);

  auto samplers = [&] {
    QStringList names;
    for (int i = 0; i < sampler->count(); ++i) names << sampler->itemText(i);
    return names;
  };
  auto of_space = [](schedulers::Space space) {
    QStringList names;
    for (const auto& e : schedulers::available_schedulers())
      if (e.space == space) names << QString::fromStdString(e.name);
    return names;
  };
  auto p = panel->preset();
  EXPECT_EQ(p.family, "sdxl");
  EXPECT_FALSE(frames->isEnabled());
  EXPECT_EQ(frames->value(), 1);
  EXPECT_FALSE(tokenizer->isEnabled());
  EXPECT_FALSE(shift->isEnabled());
  EXPECT_TRUE(clip->isEnabled());
  EXPECT_EQ(samplers(), of_space(schedulers::Space::Noise));
  EXPECT_EQ(sampler->currentText(), "dpmpp_2m_karras");
  EXPECT_EQ(p.sampler, "dpmpp_2m_karras");
  EXPECT_EQ(p.width, 1024);
  EXPECT_EQ(p.height, 1024);
  EXPECT_EQ(p.frames, 1);
  EXPECT_EQ(p.steps, 25);
  EXPECT_EQ(p.guidance, 6.0);
  // VAE, CLIP-L and bigG from the checkpoint; no T5 tokenizer.
  EXPECT_TRUE(p.tokenizer.empty());
  EXPECT_TRUE(p.vae.empty());
  EXPECT_TRUE(p.clip.empty());
  EXPECT_TRUE(p.text_encoder.empty());
  EXPECT_EQ(vae->itemText(0), "— (the checkpoint's)");
  EXPECT_TRUE(hint->text().contains("SDXL makes one image")) << hint->text().toStdString();
  EXPECT_TRUE(
      hint->text().contains("From the checkpoint: VAE, CLIP (CLIP-L), Text encoder (bigG)."))
      << hint->text().toStdString();
  // Sizes snap to multiples of 32.
  width->setValue(1000);
  Q_EMIT width->editingFinished();
  EXPECT_EQ(width->value(), 992);
  EXPECT_TRUE(hint->text().contains("1000 → 992")) << hint->text().toStdString();

  // A UNet alone: the parts it lacks are to be picked.
  model->setCurrentIndex(model->findData(QString::fromStdString(unet.string())));
  EXPECT_EQ(panel->preset().family, "sdxl");
  EXPECT_EQ(vae->itemText(0), "—");
  EXPECT_TRUE(
      hint->text().contains("Not in this file, to pick: VAE, CLIP (CLIP-L), Text encoder (bigG)."))
      << hint->text().toStdString();
  // The embedded model: the flow samplers again, with its own default.
  model->setCurrentIndex(0);
  EXPECT_EQ(samplers(), of_space(schedulers::Space::Flow));
  EXPECT_EQ(sampler->currentText().toStdString(), Preset::embedded_defaults().sampler);
  EXPECT_TRUE(shift->isEnabled());
  EXPECT_TRUE(frames->isEnabled());
  model->setCurrentIndex(ck);
  EXPECT_EQ(sampler->currentText(), "dpmpp_2m_karras");

  // A preset's sampler by alias, in the model's kind; another kind's as given.
  p = panel->preset();
  p.sampler = "euler_a";
  panel->set_preset(p);
  EXPECT_EQ(sampler->currentText(), "euler_ancestral");
  p.sampler = "euler";
  panel->set_preset(p);
  EXPECT_EQ(sampler->currentText(), "euler");
  EXPECT_EQ(samplers(), of_space(schedulers::Space::Noise));
  p.sampler = "flow_unipc";
  panel->set_preset(p);
  EXPECT_EQ(panel->preset().sampler, "flow_unipc");

  // A kohya SDXL LoRA on the UNet and both text encoders fits the checkpoint.
  {
    torch::manual_seed(21);
    test::Tensors t;
    for (const auto& [stem, out, in] :
         {std::tuple{"lora_unet_input_blocks_3_1_transformer_blocks_0_attn2_to_k", 64, 128},
          {"lora_te1_text_model_encoder_layers_0_self_attn_q_proj", 64, 64},
          {"lora_te2_text_model_encoder_layers_0_mlp_fc1", 128, 64}}) {
      t.emplace_back(std::string(stem).append(".lora_down.weight"), torch::randn({2, in}) * 0.5);
      t.emplace_back(std::string(stem).append(".lora_up.weight"), torch::randn({out, 2}) * 0.5);
    }
    io::save_safetensors(models / "loras" / "sdxl_style.safetensors", t);
  }
  p.sampler = "dpmpp_2m_karras";
  p.prompt = "a (red:1.2) fox BREAK snow";
  p.negative_prompt = "blurry";
  p.width = 64, p.height = 64, p.steps = 2, p.seed = 7, p.precision = "fp32";
  panel->set_preset(p);
  EXPECT_EQ(panel->preset().to_json(), p.to_json());
  panel->add_lora(QString::fromStdString((models / "loras" / "sdxl_style.safetensors").string()));
  auto* table = panel->findChild<QTableWidget*>();
  ASSERT_EQ(table->rowCount(), 1);
  EXPECT_TRUE(table->item(0, 0)->toolTip().contains(
      "3 of 3 updates match checkpoints/sdxl_tiny_checkpoint.safetensors"))
      << table->item(0, 0)->toolTip().toStdString();
  EXPECT_NE(table->item(0, 0)->foreground().color(), QColor(Qt::red));

  // Through the queue: the image, with the settings that made it.
  auto finish = [&](const QString& job_id) {
    for (int i = 0; i < 2000; ++i) {
      const auto st = w.queue()->job(job_id)->status;
      if (st == JobStatus::Done || st == JobStatus::Failed) return;
      QTest::qWait(50);
    }
  };
  const auto id = w.queue_current();
  ASSERT_FALSE(id.isEmpty());
  finish(id);
  const auto* job = w.queue()->job(id);
  ASSERT_EQ(job->status, JobStatus::Done) << job->message.toStdString();
  ASSERT_TRUE(job->output.endsWith(".png")) << job->output.toStdString();
  const auto made = Preset::restored(media::read_embedded_parameters(job->output.toStdString()),
                                     job->output.toStdString());
  EXPECT_EQ(made.family, "sdxl");
  EXPECT_EQ(made.model, checkpoint.filename().string());
  EXPECT_EQ(made.sampler, "dpmpp_2m_karras");
  ASSERT_EQ(made.loras.size(), 1u);
  const QImage first(job->output);
  EXPECT_EQ(first.size(), QSize(64, 64));

  // "Use these settings", then queued again: the same image.
  panel->set_preset(Preset::embedded_defaults());
  ASSERT_TRUE(w.restore_from(job->output));
  const auto r = panel->preset();
  EXPECT_EQ(r.family, "sdxl");
  EXPECT_EQ(fs::path(r.model).filename(), checkpoint.filename());
  EXPECT_EQ(fs::path(r.model).parent_path().filename(), "checkpoints");
  EXPECT_EQ(r.prompt, p.prompt);
  EXPECT_EQ(r.sampler, "dpmpp_2m_karras");
  EXPECT_TRUE(r.tokenizer.empty());
  EXPECT_FALSE(tokenizer->isEnabled());
  EXPECT_FALSE(frames->isEnabled());
  const auto again = w.queue_current();
  ASSERT_FALSE(again.isEmpty());
  finish(again);
  ASSERT_EQ(w.queue()->job(again)->status, JobStatus::Done)
      << w.queue()->job(again)->message.toStdString();
  EXPECT_EQ(QImage(w.queue()->job(again)->output).convertToFormat(QImage::Format_RGB888),
            first.convertToFormat(QImage::Format_RGB888));
}

TEST(MainWindow, UseTheseSettingsAndDropRestoreTheExactParameters) {
  qapp();
  test::TempDir tmp;
  const auto& dir = tmp.path();
  // The models in a ComfyUI folder; an output made from them by the core, as
  // the CLI or the worker would write it. Its parameters name the files, and
  // the studio finds them in its models folder again.
  for (const char* sub : {"diffusion_models", "vae", "text_encoders"})
    fs::create_directories(dir / "models" / sub);
  auto made = fixture_preset(dir / "made.mp4");
  auto link = [&](std::string& path, const char* sub) {
    const auto to = dir / "models" / sub / fs::path(path).filename();
    fs::create_symlink(path, to);
    path = to.string();
  };
  link(made.model, "diffusion_models");
  link(made.vae, "vae");
  link(made.text_encoder, "text_encoders");
  link(made.tokenizer, "text_encoders");
  pipeline::Pipeline pipe;
  render::render(pipe, made);
  made.output.clear();
  // The form's preset names its models folder (where prompt LoRAs are found).
  made.models_dir = (dir / "models").string();

  StudioOptions o;
  o.data_dir = QString::fromStdString((dir / "data").string());
  o.output_dir = QString::fromStdString((dir / "out").string());
  fs::create_directories(dir / "out");  // the studio makes no given folder
  o.models_dir = QString::fromStdString((dir / "models").string());
  MainWindow w(o);
  ASSERT_TRUE(w.restore_from(QString::fromStdString((dir / "made.mp4").string())));
  EXPECT_EQ(w.panel()->preset().to_json(), made.to_json());

  // Drag and drop of the same file onto a window showing other settings.
  w.panel()->set_preset(Preset::embedded_defaults());
  QMimeData mime;
  mime.setUrls({QUrl::fromLocalFile(QString::fromStdString((dir / "made.mp4").string()))});
  w.show();
  QDragEnterEvent enter(QPoint(10, 10), Qt::CopyAction, &mime, Qt::LeftButton, Qt::NoModifier);
  QApplication::sendEvent(&w, &enter);
  EXPECT_TRUE(enter.isAccepted());
  QDropEvent drop(QPointF(10, 10), Qt::CopyAction, &mime, Qt::LeftButton, Qt::NoModifier);
  QApplication::sendEvent(&w, &drop);
  EXPECT_EQ(w.panel()->preset().to_json(), made.to_json());

  // A file without Kinora parameters: refused, form unchanged.
  EXPECT_FALSE(w.restore_from(QString::fromStdString(fixture("wan21_dit_tiny.safetensors"))));
  EXPECT_EQ(w.panel()->preset().to_json(), made.to_json());

  // No warning so far; once the VAE found by its name is another file, the
  // restore says so (and still restores).
  const auto warnings = [&] {
    QStringList texts;
    for (const auto* box : w.findChildren<QMessageBox*>())
      if (box->windowTitle() == "Not the same files") texts << box->text();
    return texts;
  };
  EXPECT_TRUE(warnings().isEmpty()) << warnings().join("; ").toStdString();
  fs::remove(made.vae);
  fs::create_symlink(fixture("umt5_enc_tiny.safetensors"), made.vae);
  ASSERT_TRUE(w.restore_from(QString::fromStdString((dir / "made.mp4").string())));
  ASSERT_EQ(warnings().size(), 1);
  EXPECT_TRUE(warnings()[0].contains(QString::fromStdString(made.vae)))
      << warnings()[0].toStdString();
  EXPECT_FALSE(warnings()[0].contains(QString::fromStdString(made.model)));
}

}  // namespace
}  // namespace kinora::app

namespace kinora::app {
namespace {

TEST(MainWindow, QueuesAFolderOfPresetsAndKeepsSettingsAcrossRestarts) {
  qapp();
  test::TempDir tmp;
  const auto& dir = tmp.path();
  fs::create_directories(dir / "presets");
  for (int i = 0; i < 3; ++i) {
    auto p = fixture_preset("out" + std::to_string(i) + ".mp4");
    p.seed = 10 + i;
    std::ofstream(dir / "presets" / ("p" + std::to_string(i) + ".json")) << p.to_json().dump(2);
  }
  std::ofstream(dir / "presets" / "broken.json") << "{\"steps\": -3}";
  // Outputs outside the output folder are not queued; a sidecar is no preset.
  for (const char* out : {"../escape.mp4", "/tmp/absolute.mp4"})
    std::ofstream(dir / "presets" / (std::string(out[0] == '.' ? "q" : "r") + ".json"))
        << fixture_preset(out).to_json().dump(2);
  std::ofstream(dir / "presets" / "x.mp4.json") << nlohmann::json{
      {"kinora", {{"version", "Kinora x"}}},
      {"preset", fixture_preset("").to_json()}}.dump();
  StudioOptions o;
  o.data_dir = QString::fromStdString((dir / "data").string());
  o.output_dir = QString::fromStdString((dir / "out").string());
  fs::create_directories(dir / "out");  // the studio makes no given folder
  auto edited = fixture_preset("");
  edited.output.clear();
  edited.prompt = "remember me";
  {
    MainWindow w(o);
    EXPECT_EQ(w.queue_folder(QString::fromStdString((dir / "presets").string())), 3);
    EXPECT_GE(w.queue()->rowCount(), 3);
    EXPECT_EQ(w.queue()->at(0).preset.seed, 10);
    EXPECT_EQ(w.queue()->at(0).preset.output, (dir / "out" / "out0.mp4").string());
    w.panel()->set_preset(edited);
    w.close();  // settings are written on close
  }
  MainWindow again(o);
  EXPECT_EQ(again.panel()->preset().to_json(), edited.to_json());
  EXPECT_EQ(again.queue()->rowCount(), 3);  // the queue came back too
}

// Generate → Sweep… as the window queues it: a job over two seeds whose
// worker renders both cells and the sheet; a LoRA that does not fit the model
// and an axis that cannot be swept are refused before anything is queued.
TEST(MainWindow, ASweepIsOneJobAndBadLorasAreRefusedBeforeQueueing) {
  qapp();
  test::TempDir tmp;
  const auto& dir = tmp.path();
  StudioOptions o;
  o.data_dir = QString::fromStdString((dir / "data").string());
  o.output_dir = QString::fromStdString((dir / "out").string());
  fs::create_directories(dir / "out");  // the studio makes no given folder
  o.quit_when_idle = true;              // no dialogs
  MainWindow w(o);
  auto p = fixture_preset("");
  p.output.clear();
  p.frames = 1, p.steps = 2, p.width = 32, p.height = 32;
  w.panel()->set_preset(p);
  // A LoRA of the embedded model's width does not fit the fixture DiT.
  io::save_safetensors(dir / "wide.safetensors",
                       {{"lora_unet_blocks_0_self_attn_q.lora_down.weight", torch::ones({4, 512})},
                        {"lora_unet_blocks_0_self_attn_q.lora_up.weight", torch::ones({512, 4})}});
  auto bad = p;
  bad.loras = {{(dir / "wide.safetensors").string(), 1.0}};
  EXPECT_TRUE(w.queue_preset(bad).isEmpty());
  EXPECT_EQ(w.queue()->rowCount(), 0);
  EXPECT_TRUE(w.queue_sweep({"width=32,64"}).isEmpty());
  EXPECT_EQ(w.queue()->rowCount(), 0);

  // Until the job is done or failed (at most 100 s), the events processed.
  auto finish = [&](const QString& job_id) {
    for (int i = 0; i < 2000; ++i) {
      const auto st = w.queue()->job(job_id)->status;
      if (st == JobStatus::Done || st == JobStatus::Failed) return;
      QTest::qWait(50);
    }
  };
  const auto id = w.queue_sweep({"seed=1,2"});
  ASSERT_FALSE(id.isEmpty());
  finish(id);
  const auto* job = w.queue()->job(id);
  ASSERT_EQ(job->status, JobStatus::Done) << job->message.toStdString();
  EXPECT_EQ(job->sweep, QStringList{"seed=1,2"});
  // The sheet is named after its axes (render/sweep.h): NAME-sweep-seed.png.
  EXPECT_TRUE(job->output.endsWith("-sweep-seed.png")) << job->output.toStdString();
  EXPECT_TRUE(fs::exists(job->output.toStdString()));
  const auto stem = fs::path(job->output.toStdString()).stem().string();
  const auto base = stem.substr(0, stem.size() - std::string("-sweep-seed").size());
  EXPECT_TRUE(fs::exists(dir / "out" / (base + "-seed=1.png")));
  EXPECT_TRUE(fs::exists(dir / "out" / (base + "-seed=2.png")));

  // A LoRA from the table that fits: queued, rendered, recorded in the output.
  io::save_safetensors(dir / "style.safetensors",
                       {{"lora_unet_blocks_0_self_attn_q.lora_down.weight", torch::ones({4, 128})},
                        {"lora_unet_blocks_0_self_attn_q.lora_up.weight", torch::ones({128, 4})}});
  w.panel()->add_lora(QString::fromStdString((dir / "style.safetensors").string()));
  const auto lid = w.queue_current();
  ASSERT_FALSE(lid.isEmpty());
  finish(lid);
  ASSERT_EQ(w.queue()->job(lid)->status, JobStatus::Done)
      << w.queue()->job(lid)->message.toStdString();
  const auto meta = media::read_embedded_parameters(w.queue()->job(lid)->output.toStdString());
  ASSERT_EQ(meta["loras"].size(), 1u);
  EXPECT_EQ(meta["loras"][0]["file"], "style.safetensors");

  // Queue → Duplicate and Re-queue of the done job: each renders to a free
  // name beside its file, which stays as it was.
  const auto first = w.queue()->job(lid)->output;
  const auto first_bytes = test::read_bytes(first.toStdString());
  fs::last_write_time(first.toStdString(),
                      fs::file_time_type::clock::now() - std::chrono::hours(1));
  const auto first_time = fs::last_write_time(first.toStdString());
  const auto dup = w.duplicate_job(w.queue()->row_of(lid));
  finish(dup);
  ASSERT_EQ(w.queue()->job(dup)->status, JobStatus::Done)
      << w.queue()->job(dup)->message.toStdString();
  const auto second = w.queue()->job(dup)->output;
  EXPECT_EQ(second, QString(first).replace(".png", "-2.png"));
  EXPECT_TRUE(fs::exists(second.toStdString()));
  // A name a kinora batch in another process is rendering (its claim) is
  // taken as well, and so is one whose parameters file's name is a user's
  // file: the re-queued job skips "-3" and "-4" for "-5".
  const fs::path third = QString(first).replace(".png", "-3.png").toStdString();
  const auto claim = third.parent_path() / ("." + third.filename().string() + ".claim");
  std::ofstream(claim) << "node7_4026531836 42 node7\n";
  const fs::path notes = QString(first).replace(".png", "-4.png.json").toStdString();
  std::ofstream(notes) << "my notes";
  ASSERT_TRUE(w.requeue_job(w.queue()->row_of(lid)));
  finish(lid);
  ASSERT_EQ(w.queue()->job(lid)->status, JobStatus::Done)
      << w.queue()->job(lid)->message.toStdString();
  EXPECT_EQ(w.queue()->job(lid)->output, QString(first).replace(".png", "-5.png"));
  EXPECT_FALSE(fs::exists(third));
  EXPECT_TRUE(fs::exists(claim)) << "another's claim is left alone";
  EXPECT_EQ(test::read_bytes(notes), "my notes");
  EXPECT_EQ(fs::last_write_time(first.toStdString()), first_time);
  EXPECT_EQ(test::read_bytes(first.toStdString()), first_bytes);
}

// Until the job is done or failed (at most 100 s), the events processed.
void finish(MainWindow& w, const QString& job_id) {
  for (int i = 0; i < 2000; ++i) {
    const auto st = w.queue()->job(job_id)->status;
    if (st == JobStatus::Done || st == JobStatus::Failed) return;
    QTest::qWait(50);
  }
}

// A preset file's relative model names resolve against its own folder, never
// the studio's working folder, then under the studio's models folder (a
// preset without models_dir takes it), as `kinora render` and `kinora batch
// --models-dir` resolve them; a model found nowhere is refused when queued,
// naming the preset and where it looked, not rendered with other defaults.
TEST(MainWindow, APresetFilesModelsResolveInItsFolderThenTheStudiosModelsFolder) {
  qapp();
  test::TempDir tmp;
  const auto dir = fs::absolute(tmp.path());
  for (const char* d : {"c", "g", "cwd", "out", "M/diffusion_models"})
    fs::create_directories(dir / d);
  fs::copy_file(fixture("wan21_dit_tiny.safetensors"), dir / "cwd" / "cwdmodel.safetensors");
  fs::copy_file(fixture("wan21_dit_tiny.safetensors"),
                dir / "M" / "diffusion_models" / "good.safetensors");
  for (const auto& [name, model] :
       {std::pair<std::string, std::string>{"c", "cwdmodel.safetensors"}, {"g", "good"}}) {
    auto p = fixture_preset(name + ".mp4");
    p.model = model;
    std::ofstream(dir / name / (name + ".json")) << p.to_json().dump(2);
  }
  StudioOptions o;
  o.data_dir = QString::fromStdString((dir / "data").string());
  o.output_dir = QString::fromStdString((dir / "out").string());
  o.models_dir = QString::fromStdString((dir / "M").string());
  o.quit_when_idle = true;  // no dialogs
  const auto cwd = QDir::currentPath();
  QDir::setCurrent(QString::fromStdString((dir / "cwd").string()));  // holds cwdmodel
  MainWindow w(o);
  EXPECT_EQ(w.queue_folder(QString::fromStdString((dir / "c").string())), 0);
  EXPECT_EQ(w.queue()->rowCount(), 0);
  const auto said = w.statusBar()->currentMessage().toStdString();
  EXPECT_NE(said.find((dir / "c" / "c.json").string()), std::string::npos) << said;
  EXPECT_NE(said.find((dir / "c" / "cwdmodel.safetensors").string()), std::string::npos) << said;

  ASSERT_EQ(w.queue_folder(QString::fromStdString((dir / "g").string())), 1)
      << w.statusBar()->currentMessage().toStdString();
  const auto id = w.queue()->at(0).id;
  EXPECT_EQ(w.queue()->at(0).preset.models_dir, (dir / "M").string());
  finish(w, id);
  QDir::setCurrent(cwd);
  ASSERT_EQ(w.queue()->job(id)->status, JobStatus::Done)
      << w.queue()->job(id)->message.toStdString();
  EXPECT_TRUE(fs::exists(dir / "out" / "g.mp4"));
}

// A preset whose output is a folder that exists is refused when queued,
// naming the preset and the folder (not renamed to "adir-2" and failed later);
// a job of a preset file that fails names the file, and its row says why.
TEST(MainWindow, APresetFilesRefusalsAndFailuresNameTheFile) {
  qapp();
  test::TempDir tmp;
  const auto dir = fs::absolute(tmp.path());
  for (const char* d : {"a", "b", "out/adir", "out/vdir.mp4"}) fs::create_directories(dir / d);
  std::ofstream(dir / "a" / "a.json") << fixture_preset("adir").to_json().dump(2);
  std::ofstream(dir / "a" / "v.json") << fixture_preset("vdir.mp4").to_json().dump(2);
  test::write_misshaped("umt5_enc_tiny.safetensors", dir / "b" / "cut.safetensors",
                        "blocks.1.ffn.fc2.weight");
  auto b = fixture_preset("b.mp4");
  b.text_encoder = "cut.safetensors";  // found beside the preset; fails when it loads
  std::ofstream(dir / "b" / "b.json") << b.to_json().dump(2);
  StudioOptions o;
  o.data_dir = QString::fromStdString((dir / "data").string());
  o.output_dir = QString::fromStdString((dir / "out").string());
  o.quit_when_idle = true;
  MainWindow w(o);
  EXPECT_EQ(w.queue_folder(QString::fromStdString((dir / "a").string())), 0);
  const auto said = w.statusBar()->currentMessage().toStdString();
  EXPECT_NE(said.find((dir / "a" / "a.json").string()), std::string::npos) << said;
  EXPECT_NE(said.find((dir / "out" / "adir").string() + ":"), std::string::npos) << said;
  // A folder named like a file too.
  EXPECT_NE(said.find((dir / "out" / "vdir.mp4").string() + ": is a folder"), std::string::npos)
      << said;
  EXPECT_EQ(w.queue()->rowCount(), 0);

  ASSERT_EQ(w.queue_folder(QString::fromStdString((dir / "b").string())), 1)
      << w.statusBar()->currentMessage().toStdString();
  const auto id = w.queue()->at(0).id;
  finish(w, id);
  const auto* job = w.queue()->job(id);
  ASSERT_EQ(job->status, JobStatus::Failed);
  EXPECT_TRUE(job->message.startsWith(QString::fromStdString((dir / "b" / "b.json").string())))
      << job->message.toStdString();
  EXPECT_FALSE(job->message.contains(id)) << job->message.toStdString();
  const auto row = w.queue()->data(w.queue()->index(0), Qt::DisplayRole).toString();
  EXPECT_TRUE(row.contains("[failed: ") && row.contains("cut.safetensors")) << row.toStdString();
  const auto tip = w.queue()->data(w.queue()->index(0), Qt::ToolTipRole).toString();
  EXPECT_TRUE(tip.contains(job->message)) << tip.toStdString();
}

// settings.ini's geometry that does not restore: the default size, not a
// cramped window.
TEST(MainWindow, ADamagedGeometryOpensAtTheDefaultSize) {
  qapp();
  test::TempDir tmp;
  const auto& dir = tmp.path();
  fs::create_directories(dir / "data");
  fs::create_directories(dir / "out");
  std::ofstream(dir / "data" / "settings.ini") << "[General]\ngeometry=@ByteArray(garbage)\n";
  StudioOptions o;
  o.data_dir = QString::fromStdString((dir / "data").string());
  o.output_dir = QString::fromStdString((dir / "out").string());
  MainWindow w(o);
  EXPECT_EQ(w.size(), QSize(1280, 820));
}

// A queue written by a newer studio is not read as this one's and never
// rewritten as version 1: kept aside, said with the file and its version.
TEST(QueueModel, ANewerSchemaVersionIsKeptAsideNotRewritten) {
  qapp();
  test::TempDir tmp;
  const auto file = tmp.path() / "queue.json";
  const std::string text = R"({"schema_version": 99, "jobs": [{"id": "x", "status": "pending", )"
                           R"("preset": {"prompt": "from the future"}}]})";
  std::ofstream(file) << text;
  QueueModel q(QString::fromStdString(file.string()));
  QString err;
  EXPECT_FALSE(q.load(&err));
  EXPECT_TRUE(err.contains(QString::fromStdString(file.string())) && err.contains("99"))
      << err.toStdString();
  EXPECT_EQ(q.rowCount(), 0);
  EXPECT_FALSE(fs::exists(file) &&
               test::read_bytes(file).find("\"schema_version\": 1") != std::string::npos);
  ASSERT_TRUE(fs::exists(file.string() + ".bad"));
  EXPECT_EQ(test::read_bytes(file.string() + ".bad"), text);
}

}  // namespace
}  // namespace kinora::app

namespace kinora::app {
namespace {

// A models folder with the parts of every family: Wan's, FLUX's and SDXL's
// VAEs, text encoders and CLIPs, one tokenizer, a Wan and a FLUX model.
struct MixedModels {
  fs::path dir, wan, flux;
};
MixedModels mixed_models(const fs::path& root) {
  MixedModels m{root / "models", {}, {}};
  for (const char* sub : {"diffusion_models", "vae", "text_encoders"})
    fs::create_directories(m.dir / sub);
  m.wan = m.dir / "diffusion_models" / "wan_dit.safetensors";
  fs::create_symlink(fixture("wan21_dit_tiny.safetensors"), m.wan);
  m.flux = test::write_tiny_flux(m.dir / "diffusion_models");
  for (const char* f :
       {"wan21_vae_tiny.safetensors", "flux1_ae_tiny.safetensors", "sdxl_vae_tiny.safetensors"})
    fs::create_symlink(fixture(f), m.dir / "vae" / f);
  for (const char* f : {"umt5_enc_tiny.safetensors", "t5_enc_tiny.safetensors",
                        "clip_l_tiny.safetensors", "clip_g_tiny.safetensors", "spm_tiny.model"})
    fs::create_symlink(fixture(f), m.dir / "text_encoders" / f);
  test::write_clip_tokenizer(m.dir / "text_encoders" / "clip_tokenizer");
  return m;
}

QStringList items(const QComboBox* box) {
  QStringList s;
  for (int i = 0; i < box->count(); ++i) s << box->itemText(i);
  return s;
}

// The VAE, text encoder and CLIP pickers list the files that fit the model's
// family (by what their tensors hold), the one that fits chosen; the
// embedded model leaves them at "—".
TEST(GeneratePanel, PickersFollowTheModelsFamily) {
  qapp();
  test::TempDir tmp;
  const auto m = mixed_models(tmp.path());
  const auto unet = m.dir / "diffusion_models" / "sdxl_unet.safetensors";
  fs::create_symlink(fixture("sdxl_unet_tiny.safetensors"), unet);
  GeneratePanel panel;
  panel.set_models_dir(QString::fromStdString(m.dir.string()));
  auto* model = panel.findChild<QComboBox*>("model");
  auto* vae = panel.findChild<QComboBox*>("vae");
  auto* te = panel.findChild<QComboBox*>("text_encoder");
  auto* tok = panel.findChild<QComboBox*>("tokenizer");
  auto* clip = panel.findChild<QComboBox*>("clip");
  ASSERT_TRUE(model && vae && te && tok && clip);
  // A bare SDXL UNet: bigG in OpenCLIP's names is its text encoder, before
  // CLIP-L (a CLIP model, as bigG in transformers' names is too).
  model->setCurrentIndex(model->findData(QString::fromStdString(unet.string())));
  EXPECT_EQ(items(te), (QStringList{"—", "clip_g_tiny.safetensors"}));
  EXPECT_EQ(te->currentText(), "clip_g_tiny.safetensors");
  EXPECT_EQ(clip->currentText(), "clip_l_tiny.safetensors");
  EXPECT_EQ(vae->currentText(), "sdxl_vae_tiny.safetensors");
  model->setCurrentIndex(model->findData(QString::fromStdString(m.wan.string())));
  EXPECT_EQ(items(vae), (QStringList{"—", "wan21_vae_tiny.safetensors"}));
  EXPECT_EQ(vae->currentText(), "wan21_vae_tiny.safetensors");
  EXPECT_EQ(items(te), (QStringList{"—", "umt5_enc_tiny.safetensors"}));
  EXPECT_EQ(te->currentText(), "umt5_enc_tiny.safetensors");
  EXPECT_EQ(tok->currentText(), "spm_tiny.model");
  auto p = panel.preset();
  EXPECT_EQ(fs::path(p.vae).filename(), "wan21_vae_tiny.safetensors");

  model->setCurrentIndex(model->findData(QString::fromStdString(m.flux.string())));
  EXPECT_EQ(items(vae), (QStringList{"—", "flux1_ae_tiny.safetensors"}));
  EXPECT_EQ(vae->currentText(), "flux1_ae_tiny.safetensors");
  EXPECT_EQ(te->currentText(), "t5_enc_tiny.safetensors");
  EXPECT_EQ(items(clip), (QStringList{"—", "clip_l_tiny.safetensors"}));
  EXPECT_EQ(clip->currentText(), "clip_l_tiny.safetensors");
  p = panel.preset();
  EXPECT_EQ(fs::path(p.text_encoder).filename(), "t5_enc_tiny.safetensors");

  model->setCurrentIndex(0);  // the embedded model
  for (auto* box : {vae, te, tok, clip}) EXPECT_EQ(box->currentText(), "—");
  model->setCurrentIndex(model->findData(QString::fromStdString(m.wan.string())));
  EXPECT_EQ(vae->currentText(), "wan21_vae_tiny.safetensors");
  EXPECT_EQ(clip->currentText(), "—");

  EXPECT_EQ(wrong_part("wan", "vae", QString::fromStdString(fixture("flux1_ae_tiny.safetensors")))
                .toStdString()
                .rfind("VAE flux1_ae_tiny.safetensors is an image autoencoder (FLUX", 0),
            0u);
  EXPECT_TRUE(
      wrong_part("sdxl", "text_encoder", QString::fromStdString(fixture("clip_g_tiny.safetensors")))
          .isEmpty());
  EXPECT_TRUE(
      wrong_part("wan", "vae", QString::fromStdString(fixture("spm_tiny.model"))).isEmpty());
}

// Queued: a VAE or text encoder of another family is refused, naming the
// file and what it is; so is PNG image for a model that makes clips; and an
// empty prompt from the form.
TEST(MainWindow, AWrongFamilysFilePngForAClipAndAnEmptyPromptAreRefusedWhenQueued) {
  qapp();
  test::TempDir tmp;
  const auto m = mixed_models(tmp.path());
  StudioOptions o;
  o.data_dir = QString::fromStdString((tmp.path() / "data").string());
  o.output_dir = QString::fromStdString((tmp.path() / "out").string());
  fs::create_directories(tmp.path() / "out");
  o.models_dir = QString::fromStdString(m.dir.string());
  o.quit_when_idle = true;  // no dialogs
  MainWindow w(o);
  auto p = fixture_preset("");
  p.output.clear();
  p.vae = (m.dir / "vae" / "flux1_ae_tiny.safetensors").string();
  EXPECT_TRUE(w.queue_preset(p).isEmpty());
  auto said = w.statusBar()->currentMessage().toStdString();
  EXPECT_NE(said.find("VAE flux1_ae_tiny.safetensors is an image autoencoder (FLUX"),
            std::string::npos)
      << said;
  EXPECT_NE(said.find("a Wan model takes a Wan VAE"), std::string::npos) << said;
  p = fixture_preset("");
  p.output.clear();
  p.text_encoder = (m.dir / "text_encoders" / "t5_enc_tiny.safetensors").string();
  EXPECT_TRUE(w.queue_preset(p).isEmpty());
  said = w.statusBar()->currentMessage().toStdString();
  EXPECT_NE(said.find("Text encoder t5_enc_tiny.safetensors is a T5 encoder"), std::string::npos)
      << said;
  EXPECT_EQ(w.queue()->rowCount(), 0);

  auto e = Preset::embedded_defaults();
  e.prompt = "a red circle moving right on a blue background";
  e.format = "png";
  EXPECT_TRUE(w.queue_preset(e).isEmpty());
  said = w.statusBar()->currentMessage().toStdString();
  EXPECT_NE(said.find("\"PNG image\" is one image, but this model makes clips of 17 frames"),
            std::string::npos)
      << said;

  e.format.clear();
  e.prompt = "  ";
  w.panel()->set_preset(e);
  EXPECT_TRUE(w.queue_current().isEmpty());
  said = w.statusBar()->currentMessage().toStdString();
  EXPECT_NE(said.find("the prompt is empty"), std::string::npos) << said;
  EXPECT_TRUE(
      w.panel()->findChild<QPlainTextEdit*>("prompt")->placeholderText().contains("For example"));
  EXPECT_EQ(w.queue()->rowCount(), 0);
}

// The form's keyboard and mouse: Tab leaves the prompt; the wheel over a
// combo or spin box without the focus leaves its value; Random means a new
// seed for each job (-1).
TEST(GeneratePanel, TabWheelAndRandomSeed) {
  qapp();
  GeneratePanel panel;
  auto* prompt = panel.findChild<QPlainTextEdit*>("prompt");
  ASSERT_TRUE(prompt);
  EXPECT_TRUE(prompt->tabChangesFocus());
  prompt->setPlainText("a fox");
  QTest::keyClick(prompt, Qt::Key_Tab);
  EXPECT_EQ(prompt->toPlainText(), "a fox");
  auto* sampler = panel.findChild<QComboBox*>("sampler");
  auto* steps = panel.findChild<QSpinBox*>("steps");
  ASSERT_TRUE(sampler && steps);
  const int index = sampler->currentIndex(), n = steps->value();
  for (QWidget* target : {static_cast<QWidget*>(sampler), static_cast<QWidget*>(steps)}) {
    ASSERT_FALSE(target->hasFocus());
    const QPointF at(target->width() / 2.0, target->height() / 2.0);
    QWheelEvent down(at, target->mapToGlobal(at), {}, {0, -120}, Qt::NoButton, Qt::NoModifier,
                     Qt::NoScrollPhase, false);
    QApplication::sendEvent(target, &down);
  }
  EXPECT_EQ(sampler->currentIndex(), index);
  EXPECT_EQ(steps->value(), n);
  EXPECT_EQ(sampler->focusPolicy(), Qt::StrongFocus);

  auto* seed = panel.findChild<QSpinBox*>("seed");
  ASSERT_TRUE(seed);
  seed->setValue(1234);
  panel.randomise_seed();
  EXPECT_EQ(panel.preset().seed, -1);
  EXPECT_EQ(seed->text(), "random");
}

// Ctrl+S adds .json to a name without it; the Generate dock has a Queue
// button; the empty viewer says how to start.
TEST(MainWindow, SaveAddsJsonAQueueButtonAndAHintInTheEmptyViewer) {
  qapp();
  test::TempDir tmp;
  auto o = scripted_options(tmp.path());
  MainWindow w(o);
  EXPECT_TRUE(w.viewer()->shown_hint().contains("Queue (Ctrl+Enter)"));
  const auto saved = w.save_preset_to(QString::fromStdString((tmp.path() / "tri").string()));
  EXPECT_EQ(saved.toStdString(), (tmp.path() / "tri.json").string());
  EXPECT_TRUE(fs::is_regular_file(tmp.path() / "tri.json"));
  EXPECT_FALSE(fs::exists(tmp.path() / "tri"));
  auto* button = w.findChild<QPushButton*>("queue_button");
  ASSERT_TRUE(button);
  auto e = Preset::embedded_defaults();
  e.prompt = "a red circle moving right on a blue background";
  e.steps = 1;
  w.panel()->set_preset(e);
  button->click();
  EXPECT_EQ(w.queue()->rowCount(), 1);
  EXPECT_TRUE(w.viewer()->shown_hint().isEmpty());
}

// Esc in a text or number field leaves the running job alone; elsewhere it
// cancels it.
TEST(MainWindow, EscInAFieldDoesNotCancelTheRunningJob) {
  qapp();
  test::TempDir tmp;
  auto o = scripted_options(tmp.path());
  MainWindow w(o);
  w.show();
  QApplication::setActiveWindow(&w);
  ASSERT_TRUE(QTest::qWaitForWindowActive(&w));
  auto p = fixture_preset("", 1000);
  p.output.clear();
  const auto id = w.queue_preset(p);
  ASSERT_FALSE(id.isEmpty());
  for (int i = 0; i < 1200 && w.queue()->job(id)->step < 1; ++i) QTest::qWait(25);
  ASSERT_TRUE(w.busy()) << int(w.queue()->job(id)->status) << " " << w.queue()->job(id)->step << " "
                        << w.queue()->job(id)->message.toStdString();
  auto* seed = w.panel()->findChild<QSpinBox*>("seed");
  seed->setFocus();
  QTest::keyClick(seed, Qt::Key_Escape);
  QTest::qWait(300);
  EXPECT_EQ(w.queue()->job(id)->status, JobStatus::Running);
  auto* queue = w.findChild<QListView*>("queue");
  queue->setFocus();
  QTest::keyClick(queue, Qt::Key_Escape);
  for (int i = 0; i < 400 && w.busy(); ++i) QTest::qWait(25);
  EXPECT_EQ(w.queue()->job(id)->status, JobStatus::Cancelled);
}

}  // namespace
}  // namespace kinora::app

namespace kinora::app {
namespace {

// A folder of presets that are refused: one dialog lists them all.
TEST(MainWindow, AFoldersRefusedPresetsAreSaidInOneDialog) {
  qapp();
  test::TempDir tmp;
  fs::create_directories(tmp.path() / "presets");
  for (const char* name : {"a.json", "b.json", "c.json"})
    std::ofstream(tmp.path() / "presets" / name) << "{\"steps\": -3}";
  StudioOptions o;
  o.data_dir = QString::fromStdString((tmp.path() / "data").string());
  o.output_dir = QString::fromStdString((tmp.path() / "out").string());
  fs::create_directories(tmp.path() / "out");
  MainWindow w(o);
  QTest::qWait(50);
  for (auto* box : w.findChildren<QMessageBox*>()) delete box;
  EXPECT_EQ(w.queue_folder(QString::fromStdString((tmp.path() / "presets").string())), 0);
  QTest::qWait(50);
  const auto boxes = w.findChildren<QMessageBox*>();
  ASSERT_EQ(boxes.size(), 1);
  for (const char* name : {"a.json", "b.json", "c.json"})
    EXPECT_TRUE(boxes[0]->text().contains(name)) << boxes[0]->text().toStdString();
  EXPECT_TRUE(boxes[0]->text().contains("3 not queued")) << boxes[0]->text().toStdString();
  delete boxes[0];
}

// Settings: a models folder that does not exist is refused (nothing
// changes); a remembered one that is gone is said at start.
TEST(MainWindow, AModelsFolderThatDoesNotExistIsRefusedAndSaid) {
  qapp();
  test::TempDir tmp;
  const auto models = tmp.path() / "models";
  fs::create_directories(models / "diffusion_models");
  StudioOptions o;
  o.data_dir = QString::fromStdString((tmp.path() / "data").string());
  const auto out = QString::fromStdString((tmp.path() / "out").string());
  o.output_dir = out;
  fs::create_directories(tmp.path() / "out");
  o.quit_when_idle = true;  // no dialogs
  {
    MainWindow w(o);
    const auto why =
        w.apply_settings(QString::fromStdString((tmp.path() / "nowhere").string()), out);
    EXPECT_TRUE(why.contains("nowhere does not exist")) << why.toStdString();
    EXPECT_TRUE(w.panel()->models_dir().isEmpty());
    EXPECT_TRUE(w.apply_settings(QString::fromStdString(models.string()), out).isEmpty());
    EXPECT_EQ(w.panel()->models_dir().toStdString(), models.string());
    w.close();
  }
  fs::remove_all(models);
  MainWindow again(o);
  EXPECT_TRUE(again.panel()->models_dir().isEmpty());
  const auto said = again.statusBar()->currentMessage().toStdString();
  EXPECT_NE(
      said.find("The models folder " + models.string() + " (from the settings) does not exist"),
      std::string::npos)
      << said;
}

}  // namespace
}  // namespace kinora::app
