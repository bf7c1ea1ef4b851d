#include "app/main_window.h"

#include <QAbstractSpinBox>
#include <QAction>
#include <QApplication>
#include <QCloseEvent>
#include <QComboBox>
#include <QDateTime>
#include <QDialog>
#include <QDialogButtonBox>
#include <QDir>
#include <QDockWidget>
#include <QDragEnterEvent>
#include <QDropEvent>
#include <QFile>
#include <QFileDialog>
#include <QFileInfo>
#include <QFormLayout>
#include <QHBoxLayout>
#include <QLabel>
#include <QLineEdit>
#include <QListView>
#include <QMenuBar>
#include <QMessageBox>
#include <QMimeData>
#include <QPlainTextEdit>
#include <QPushButton>
#include <QRandomGenerator>
#include <QScrollArea>
#include <QScrollBar>
#include <QSettings>
#include <QShortcut>
#include <QStandardPaths>
#include <QStatusBar>
#include <QTextEdit>
#include <QTimer>
#include <QVBoxLayout>

#include <chrono>
#include <csignal>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>

#include "app/gallery.h"
#include "app/generate_panel.h"
#include "app/queue_model.h"
#include "app/viewer.h"
#include "app/worker.h"
#include "base/error.h"
#include "base/files.h"
#include "base/json.h"
#include "media/format.h"
#include "media/output.h"
#include "pipeline/family.h"
#include "pipeline/lora_check.h"
#include "pipeline/pipeline.h"
#include "render/render.h"
#include "render/sweep.h"

namespace kinora::app {
using pipeline::Preset;

namespace {

// A line for whoever started the studio from a shell or a script.
void say_on_stderr(const QString& what) {
  std::cerr << "kinora-studio: " << what.toStdString() << std::endl;
}
QString extension_for(const Preset& p) {
  if (p.format == "webm") return ".webm";
  if (p.format == "mov") return ".mov";
  if (p.format == "png-seq") return "";
  if (p.format == "png" || (p.format.empty() && p.frames == 1)) return ".png";
  return ".mp4";
}

// Whether `path` is taken: a file or folder is there, or its parameters
// file's name is (a render's sidecar, or a user's file the sidecar would
// replace), or a kinora batch in another process is rendering it (its claim).
bool taken(const QString& path) {
  return QFileInfo::exists(path) || QFileInfo::exists(path + ".json") ||
         !kinora::OutputClaim::holder_of(std::filesystem::path(path.toStdString())).empty();
}

// `path`, or where it is taken, the first free "NAME-2.EXT", "NAME-3.EXT", …:
// the studio never replaces a file. A frame sequence's folder keeps any dot
// in its name.
QString free_output_path(const QString& path, bool folder) {
  if (!taken(path)) return path;
  const QString suffix = folder ? QString() : QFileInfo(path).suffix();
  const QString ext = suffix.isEmpty() ? QString() : "." + suffix;
  const QString base = path.left(path.size() - ext.size());
  QString free = path;
  for (int k = 2; taken(free); ++k) free = base + "-" + QString::number(k) + ext;
  return free;
}
// The settings in `file` (INI), every key.
QVariantMap read_settings(const QString& file) {
  const QSettings s(file, QSettings::IniFormat);
  QVariantMap values;
  for (const auto& key : s.allKeys()) values.insert(key, s.value(key));
  return values;
}

// Whether `read` (from an INI file) is the value `written` was: an INI file
// gives numbers back as text.
bool same_setting(const QVariant& written, const QVariant& read) {
  if (written.typeId() == read.typeId()) return written == read;
  return written.toString() == read.toString();
}

// Writes `values` as the INI file `file`, whole or not at all; returns why
// it failed, or "". QSettings writes a temporary beside it, which is read
// back before it is renamed into place: Qt 6.4 commits a file that a write
// cut short (a full disk, `ulimit -f`) without a word, and QSettings::status()
// stays NoError.
QString write_settings(const QString& file, const QVariantMap& values) {
  const std::filesystem::path path = file.toStdString();
  const QString failed = file + ": the settings could not be saved";
  try {
    std::error_code ec;
    std::filesystem::create_directories(path.parent_path(), ec);
    ScopedTemp tmp(path);
    const auto tmp_file = QString::fromStdString(tmp.path().string());
    {
      QSettings out(tmp_file, QSettings::IniFormat);
      out.clear();
      for (auto it = values.begin(); it != values.end(); ++it) out.setValue(it.key(), it.value());
      out.sync();
      if (out.status() != QSettings::NoError)
        return failed + " (its folder cannot be written, or the disk is full)";
    }
    // QSettings answers a file it wrote, unchanged on disk since, from its
    // memory: the file's time is moved back so that it is parsed again.
    const auto written = std::filesystem::last_write_time(tmp.path(), ec);
    if (!ec) std::filesystem::last_write_time(tmp.path(), written - std::chrono::hours(1), ec);
    if (ec) return failed + ": " + QString::fromStdString(ec.message());
    const QSettings back(tmp_file, QSettings::IniFormat);
    bool whole = back.status() == QSettings::NoError && back.allKeys().size() == values.size();
    for (auto it = values.begin(); whole && it != values.end(); ++it)
      whole = same_setting(it.value(), back.value(it.key()));
    if (!whole)
      return failed + " (the file written was incomplete: a full disk, or a file-size limit); " +
             "it is left as it was";
    std::filesystem::last_write_time(tmp.path(), written, ec);
    tmp.commit(true);
  } catch (const std::exception& e) {
    // The error names the file; the message says it once.
    std::string why = e.what();
    if (why.rfind(path.string() + ": ", 0) == 0) why.erase(0, path.string().size() + 2);
    return failed + ": " + QString::fromStdString(why);
  }
  return {};
}

// The output folder the studio makes itself: the only one it creates.
QString default_output_folder() {
  return QStandardPaths::writableLocation(QStandardPaths::MoviesLocation) + "/Kinora";
}
}  // namespace

QString studio_data_folder(const StudioOptions& o) {
  return o.data_dir.isEmpty() ? QStandardPaths::writableLocation(QStandardPaths::AppDataLocation)
                              : o.data_dir;
}

QString prepare_options(StudioOptions& o) {
  for (QString* dir : {&o.data_dir, &o.models_dir, &o.output_dir})
    if (!dir->isEmpty()) *dir = QDir::cleanPath(QFileInfo(*dir).absoluteFilePath());
  // As `kinora batch --output-dir` refuses it: a typo or an unmounted share
  // is said, not made (at any depth) and filled.
  if (!o.output_dir.isEmpty() && !QFileInfo(o.output_dir).isDir())
    return "--output-dir " + o.output_dir +
           (QFileInfo::exists(o.output_dir) ? ": not a folder"
                                            : ": no such folder (make it first, or give another)");
  // A models folder is read, never made: a typo would list no models.
  if (!o.models_dir.isEmpty() && !QFileInfo(o.models_dir).isDir())
    return "--models-dir " + o.models_dir +
           (QFileInfo::exists(o.models_dir) ? ": not a folder" : ": no such folder");
  // The data folder is made when missing; a file there, or a place where
  // none can be made, is said.
  if (!o.data_dir.isEmpty() && !QDir().mkpath(o.data_dir))
    return "--data-dir " + o.data_dir +
           (QFileInfo::exists(o.data_dir)
                ? ": not a folder"
                : ": cannot be made (a file in its path, or a folder without write rights)");
  return {};
}

std::unique_ptr<QLockFile> lock_data_folder(const QString& dir, QString* why) {
  QDir().mkpath(dir);
  auto lock = std::make_unique<QLockFile>(dir + "/lock");
  // A studio runs for days: only the lock of a process that is gone is stale
  // (QLockFile checks the process), never one that is merely old.
  lock->setStaleLockTime(0);
  // No lock can be made there (a lock that is a folder, a folder without
  // write rights): no studio can keep its queue there either.
  const bool folder = QFileInfo(dir + "/lock").isDir();
  if (!folder && lock->tryLock(0)) return lock;
  if (folder || lock->error() != QLockFile::LockFailedError) {
    if (why)
      *why = dir + "/lock cannot be made (" +
             (folder ? QString("it is a folder") : QString("the folder is not writable")) +
             "): give another --data-dir";
    return nullptr;
  }
  qint64 pid = 0;
  QString host, app;
  if (!lock->getLockInfo(&pid, &host, &app)) {
    // A lock that names no process (emptied, or written over) is no studio's
    // once it is older than the moment a studio takes to write its own.
    const QFileInfo file(dir + "/lock");
    if (std::abs(file.lastModified().secsTo(QDateTime::currentDateTime())) > 5 &&
        lock->removeStaleLockFile() && lock->tryLock(0))
      return lock;
    if (why)
      *why = dir +
             "/lock names no process (it was emptied or written over): delete it if no "
             "Kinora Studio uses " +
             dir + ", or give this one another --data-dir";
    return nullptr;
  }
  if (why)
    *why = QString(
               "%1 is in use by another Kinora Studio (process %2%3): one studio at a time keeps "
               "a queue there; close that one, or give this one another --data-dir")
               .arg(dir)
               .arg(pid)
               .arg(host.isEmpty() ? QString() : " on " + host);
  return nullptr;
}

MainWindow::MainWindow(const StudioOptions& options) : options_(options) {
  setWindowTitle("Kinora Studio");
  setAcceptDrops(true);
  const QString data_dir = studio_data_folder(options_);
  QDir().mkpath(data_dir);
  // Without --data-dir, the file QSettings() uses (an INI file on Linux:
  // ~/.config/Kinora/Kinora Studio.conf).
  settings_file_ =
      options_.data_dir.isEmpty() ? QSettings().fileName() : data_dir + "/settings.ini";
  // What a studio killed while saving (a SIGKILL, a power cut) left beside
  // the queue and the settings.
  remove_stale_temporaries(data_dir.toStdString());
  remove_stale_temporaries(std::filesystem::path(settings_file_.toStdString()).parent_path());
  settings_ = read_settings(settings_file_);

  panel_ = new GeneratePanel(this);
  viewer_ = new Viewer(this);
  gallery_ = new Gallery(this);
  queue_ = new QueueModel(data_dir + "/queue.json", this);
  queue_view_ = new QListView(this);
  queue_view_->setModel(queue_);
  queue_view_->setDragDropMode(QAbstractItemView::InternalMove);
  queue_view_->setDefaultDropAction(Qt::MoveAction);
  queue_view_->setSelectionMode(QAbstractItemView::SingleSelection);
  queue_view_->setObjectName("queue");

  setCentralWidget(viewer_);
  auto* left = new QDockWidget("Generate", this);
  left->setObjectName("generate-dock");
  // The form scrolls where the screen is shorter than it.
  auto* form_scroll = new QScrollArea(left);
  form_scroll->setWidget(panel_);
  form_scroll->setWidgetResizable(true);
  form_scroll->setFrameShape(QFrame::NoFrame);
  form_scroll->setHorizontalScrollBarPolicy(Qt::ScrollBarAlwaysOff);
  form_scroll->setMinimumWidth(panel_->sizeHint().width() +
                               form_scroll->verticalScrollBar()->sizeHint().width());
  // Queue, below the form and outside its scroll, always in sight.
  auto* generate_box = new QWidget(left);
  auto* gl = new QVBoxLayout(generate_box);
  gl->setContentsMargins(0, 0, 0, 0);
  gl->addWidget(form_scroll, 1);
  auto* queue_button = new QPushButton("Queue (Ctrl+Enter)", generate_box);
  queue_button->setObjectName("queue_button");
  queue_button->setToolTip(
      "Queue the form's settings as a job; it starts when the jobs before it are done "
      "(Ctrl+Shift+Enter: at the front)");
  queue_button->setDefault(true);
  gl->addWidget(queue_button);
  connect(queue_button, &QPushButton::clicked, this, [this] { queue_current(false); });
  left->setWidget(generate_box);
  addDockWidget(Qt::LeftDockWidgetArea, left);
  viewer_->set_hint(
      "Write a prompt in the Generate panel, then press Queue (Ctrl+Enter).\nThe result plays "
      "here; earlier ones are in the gallery below.");
  auto* queue_box = new QWidget(this);
  auto* ql = new QVBoxLayout(queue_box);
  ql->addWidget(queue_view_, 1);
  auto* qb = new QHBoxLayout;
  auto* remove = new QPushButton("Remove", queue_box);
  auto* dup = new QPushButton("Duplicate", queue_box);
  auto* requeue = new QPushButton("Re-queue", queue_box);
  for (auto* b : {remove, dup, requeue}) qb->addWidget(b);
  ql->addLayout(qb);
  auto* right = new QDockWidget("Queue", this);
  right->setObjectName("queue-dock");
  right->setWidget(queue_box);
  addDockWidget(Qt::RightDockWidgetArea, right);
  auto* bottom = new QDockWidget("Gallery", this);
  bottom->setObjectName("gallery-dock");
  bottom->setWidget(gallery_);
  addDockWidget(Qt::BottomDockWidgetArea, bottom);
  auto row = [this] { return queue_view_->currentIndex().row(); };
  connect(remove, &QPushButton::clicked, this, [this, row] { queue_->remove(row()); });
  connect(dup, &QPushButton::clicked, this, [this, row] { duplicate_job(row()); });
  connect(requeue, &QPushButton::clicked, this, [this, row] { requeue_job(row()); });
  connect(queue_view_, &QListView::activated, this, [this](const QModelIndex& i) {
    const auto out = i.data(QueueModel::OutputRole).toString();
    if (!out.isEmpty()) viewer_->open(out);
  });
  connect(queue_, &QueueModel::saveFailed, this, [this](const QString& m) {
    statusBar()->showMessage(m);
    if (options_.quit_when_idle && !said_save_failed_) say_on_stderr(m);
    said_save_failed_ = true;
    if (options_.quit_when_idle) exit_code_ = 1;  // a script must not take it for kept
  });

  // Settings. A remembered models folder that is gone (an unmounted share)
  // is said, and the models listed without it until it is back.
  QString models_warning;
  QString models_dir = options_.models_dir;
  if (models_dir.isEmpty()) {
    models_dir = settings_.value("models_dir").toString();
    if (!models_dir.isEmpty() && !QFileInfo(models_dir).isDir()) {
      models_warning = "The models folder " + models_dir +
                       " (from the settings) does not exist; only the embedded model is listed "
                       "until it is back or another is chosen (File → Settings)";
      models_dir.clear();
    }
  }
  panel_->set_models_dir(models_dir);
  // --output-dir exists (prepare_options); a remembered folder may not any
  // more (an unmounted share): said, and the default used until it is back.
  // Only the studio's own default folder is ever created.
  QString output_warning;
  output_dir_ = options_.output_dir;
  if (output_dir_.isEmpty()) {
    const auto remembered = settings_.value("output_dir").toString();
    output_dir_ = remembered.isEmpty() || QFileInfo(remembered).isDir() ? remembered
                                                                        : default_output_folder();
    if (output_dir_ != remembered)
      output_warning = "The output folder " + remembered +
                       " (from the settings) does not exist; renders go to " + output_dir_ +
                       " until it is back or another is chosen (File → Settings)";
  }
  if (output_dir_.isEmpty()) output_dir_ = default_output_folder();
  if (output_dir_ == default_output_folder()) QDir().mkpath(output_dir_);
  gallery_->set_folder(output_dir_);
  const auto last = settings_.value("last_preset").toString();
  if (!last.isEmpty()) {
    try {
      panel_->set_preset(Preset::from_json(parse_json(last.toStdString(), "settings"), "settings"));
    } catch (const std::exception&) {
      // Settings from another version: the defaults stay.
    }
  }
  panel_->set_last_seed(settings_.value("last_seed", -1).toLongLong());
  // No geometry, or one that does not restore (damaged): the default size,
  // not a cramped window whose scrub bar collapses.
  if (!restoreGeometry(settings_.value("geometry").toByteArray())) resize(1280, 820);
  restoreState(settings_.value("window_state").toByteArray());

  connect(gallery_, &Gallery::open, this, [this](const QString& p) {
    QString err;
    const auto preset = embedded_preset_json(p, &err);
    int fps = 16;
    if (!preset.isEmpty()) fps = parse_json(preset.toStdString(), "").value("fps", 16);
    viewer_->open(p, fps);
  });
  connect(gallery_, &Gallery::use_settings, this, &MainWindow::restore_from);

  // The worker on its own thread.
  worker_ = new GenerationWorker;
  worker_->moveToThread(&thread_);
  connect(&thread_, &QThread::finished, worker_, &QObject::deleteLater);
  connect(worker_, &GenerationWorker::progress, this,
          [this](const QString& id, int step, int total, double sps, double eta,
                 const QList<QImage>& preview) {
            queue_->set_progress(id, step, total, sps, eta);
            viewer_->show_preview(preview, QString("Sampling: step %1/%2, %3 s/step, ETA %4 s")
                                               .arg(step)
                                               .arg(total)
                                               .arg(sps, 0, 'f', 2)
                                               .arg(eta, 0, 'f', 0));
            statusBar()->showMessage(QString("step %1/%2").arg(step).arg(total));
            if (!options_.screenshots.isEmpty() && !shot_sampling_ && step >= (total + 1) / 2) {
              shot_sampling_ = true;
              shot("studio-sampling.png");
            }
          });
  // A job's notes (a LoRA that matched only in part, a size snapped, a
  // precision the device lacks): on the status bar, kept on the finished
  // job's tooltip, and said on stderr to a script.
  connect(worker_, &GenerationWorker::message, this, [this](const QString&, const QString& m) {
    statusBar()->showMessage(m, 5000);
    notes_ << m;
    if (options_.quit_when_idle) say_on_stderr(m);
  });
  connect(worker_, &GenerationWorker::stage, this, [this](const QString&, const QString& text) {
    if (text.startsWith("Loading")) viewer_->clear(text);
    statusBar()->showMessage(text);
  });
  connect(worker_, &GenerationWorker::finished, this,
          [this](const QString& id, const QString& out) {
            queue_->set_output(id, out);
            queue_->set_status(id, JobStatus::Done, notes_.join("\n"));
            const auto* j = queue_->job(id);
            viewer_->open(out, j ? j->preset.fps : 16);
            gallery_->add(out);
            statusBar()->showMessage("wrote " + out);
            if (!options_.screenshots.isEmpty()) shoot_player_when_shown();
            job_done(id);
          });
  connect(worker_, &GenerationWorker::failed, this, [this](const QString& id, const QString& e) {
    queue_->set_status(id, JobStatus::Failed, e);
    viewer_->clear("Failed: " + e);
    statusBar()->showMessage("failed: " + e);
    if (options_.quit_when_idle) say_on_stderr("failed: " + e);  // a script gets the reason
    exit_code_ = 1;
    job_done(id);
  });
  connect(worker_, &GenerationWorker::cancelled, this, [this](const QString& id) {
    queue_->set_status(id, JobStatus::Cancelled, "cancelled; no file was written");
    viewer_->clear("Cancelled");
    job_done(id);
  });
  thread_.start();

  build_menus();
  if (!output_warning.isEmpty()) warn("Output folder", output_warning);
  if (!models_warning.isEmpty()) {
    warn("Models folder", models_warning);
    statusBar()->showMessage(models_warning);
  }
  QString err;
  if (!queue_->load(&err)) warn("Queue", err);

  QStringList not_queued, refused_at_start;
  collected_ = &refused_at_start;  // one dialog for them all
  for (const auto& f : options_.presets) {
    // With --output-dir, a preset's named output lands inside it, as
    // `kinora batch --output-dir` places it (else beside the preset).
    if (queue_preset_file(f, !options_.output_dir.isEmpty()).isEmpty()) {
      not_queued << statusBar()->currentMessage();
      if (!options_.quit_when_idle && options_.exit_after_ms <= 0)  // else refuse() said it
        say_on_stderr(not_queued.back());
      exit_code_ = 1;
    }
  }
  collected_ = nullptr;
  if (!refused_at_start.isEmpty() && !scripted()) warn("Not queued", refused_at_start.join("\n\n"));
  if (!not_queued.isEmpty())  // every one, not the last alone
    statusBar()->showMessage(not_queued.join("; "));
  if (!options_.prompt.isEmpty()) {
    auto p = panel_->preset();
    p.prompt = options_.prompt.toStdString();
    if (options_.seed >= 0) p.seed = options_.seed;
    queue_preset(p);
  }
  if (options_.exit_after_ms > 0)
    QTimer::singleShot(options_.exit_after_ms, this, [this] { close(); });
  QTimer::singleShot(0, this, [this] {
    start_next();
    maybe_quit();
  });
}

MainWindow::~MainWindow() {
  worker_->cancel();
  thread_.quit();
  thread_.wait();
}

void MainWindow::build_menus() {
  auto* file = menuBar()->addMenu("&File");
  file->addAction("&Open preset…", QKeySequence::Open, this, &MainWindow::open_preset_file);
  file->addAction("&Save preset…", QKeySequence::Save, this, &MainWindow::save_preset_file);
  file->addAction("Queue a folder of presets…", this, &MainWindow::choose_folder_to_queue);
  file->addAction("Use settings from a file…", this, [this] {
    const auto f = QFileDialog::getOpenFileName(this, "Use settings from", output_dir_,
                                                "Kinora outputs (*.mp4 *.webm *.mov *.png *.json)");
    if (!f.isEmpty()) restore_from(f);
  });
  file->addSeparator();
  file->addAction("Se&ttings…", QKeySequence("Ctrl+,"), this, &MainWindow::settings_dialog);
  file->addAction("&Quit", QKeySequence::Quit, this, &QWidget::close);

  auto* gen = menuBar()->addMenu("&Generate");
  gen->addAction("&Queue", QKeySequence("Ctrl+Return"), this, [this] { queue_current(false); });
  gen->addAction("S&weep…", QKeySequence("Ctrl+Alt+W"), this, &MainWindow::sweep_dialog);
  gen->addAction("Queue at the &front", QKeySequence("Ctrl+Shift+Return"), this,
                 [this] { queue_current(true); });
  auto* cancel = gen->addAction("&Cancel the running job", this, &MainWindow::cancel_current);
  cancel->setShortcut(QKeySequence("Ctrl+Alt+Return"));
  // Esc cancels too, except while a text or number field has the focus
  // (there it leaves the field alone, as Esc does in a form).
  auto* esc = new QShortcut(QKeySequence(Qt::Key_Escape), this);
  connect(esc, &QShortcut::activated, this, [this] {
    auto* f = QApplication::focusWidget();
    if (f && (qobject_cast<QLineEdit*>(f) || qobject_cast<QAbstractSpinBox*>(f) ||
              qobject_cast<QPlainTextEdit*>(f) || qobject_cast<QTextEdit*>(f) ||
              (qobject_cast<QComboBox*>(f) && static_cast<QComboBox*>(f)->isEditable())))
      return;
    cancel_current();
  });
  auto* pause = gen->addAction("&Pause after the current job");
  pause->setCheckable(true);
  connect(pause, &QAction::toggled, this, [this](bool on) {
    pause_after_current_ = on;
    if (!on) start_next();
  });
  gen->addSeparator();
  gen->addAction("Random seed for each job", QKeySequence("Ctrl+R"), panel_,
                 &GeneratePanel::randomise_seed);
  gen->addAction("Reuse the last seed", QKeySequence("Ctrl+Shift+R"), panel_,
                 &GeneratePanel::reuse_last_seed);

  auto* q = menuBar()->addMenu("&Queue");
  q->addAction("&Remove", QKeySequence::Delete, this,
               [this] { queue_->remove(queue_view_->currentIndex().row()); });
  q->addAction("&Duplicate", QKeySequence("Ctrl+D"), this,
               [this] { duplicate_job(queue_view_->currentIndex().row()); });
  q->addAction("Re-&queue", QKeySequence("Ctrl+Shift+Q"), this,
               [this] { requeue_job(queue_view_->currentIndex().row()); });

  auto* view = menuBar()->addMenu("&View");
  for (auto* d : findChildren<QDockWidget*>()) view->addAction(d->toggleViewAction());
  view->addSeparator();
  view->addAction("Play / pause", QKeySequence(Qt::Key_Space), viewer_, &Viewer::play_pause);
  view->addAction("Previous frame", QKeySequence(Qt::Key_Comma), viewer_,
                  [this] { viewer_->step_frame(-1); });
  view->addAction("Next frame", QKeySequence(Qt::Key_Period), viewer_,
                  [this] { viewer_->step_frame(1); });
}

QString MainWindow::queue_current(bool front) {
  auto p = panel_->preset();
  if (QString::fromStdString(p.prompt).trimmed().isEmpty()) {
    refuse("the prompt is empty: write what to make (the grey text in the box is an example)");
    return {};
  }
  return queue_preset(p, front);
}

QString MainWindow::queue_sweep(const QStringList& axes) {
  return queue_preset(panel_->preset(), false, axes);
}

void MainWindow::refuse(const QString& what) {
  statusBar()->showMessage("not queued: " + what);
  if (options_.quit_when_idle) exit_code_ = 1;  // a script asked for a job that will not run
  if (collected_) {  // said together, in one dialog (a script hears each)
    *collected_ << what;
    if (scripted()) say_on_stderr("not queued: " + what);
    return;
  }
  warn("Not queued", what);
}

void MainWindow::warn(const QString& title, const QString& what) {
  // A scripted run (--quit-when-idle, --exit-after-ms) hears it on stderr.
  if (options_.quit_when_idle || options_.exit_after_ms > 0)
    say_on_stderr(title == "Not queued" ? "not queued: " + what : what);
  if (options_.quit_when_idle) return;  // nobody would close a dialog
  // Not a blocking dialog: the event loop (the queue, the exit timer) goes on
  // while it is open.
  auto* box = new QMessageBox(QMessageBox::Warning, title, what, QMessageBox::Ok, this);
  box->setAttribute(Qt::WA_DeleteOnClose);
  QTimer::singleShot(0, box, [box] { box->open(); });
}

QString MainWindow::queue_preset(Preset p, bool front, const QStringList& sweep) {
  // What can be known before the job runs, as `kinora render` and `batch`
  // check it: the output's name and folder, the model files (a preset's
  // relative names against its own folder, then under models_dir), the
  // sampler, LoRAs that do not fit the model (another family or size, no LoRA
  // at all), and a sweep's axes.
  try {
    if (!p.output.empty()) {
      const auto format = render::check_output_name(p);
      // A folder at a file's name ("dir.mp4/") is not renamed around, as an
      // existing file is: refused, as `kinora render` refuses it.
      std::error_code ec;
      if (!media::is_sequence(format) &&
          std::filesystem::is_directory(std::filesystem::symlink_status(p.output_path(), ec)))
        throw Error(p.output_path().string() +
                    ": is a folder; the output must be a file name (nothing was changed)");
    }
    // PNG image is one frame: a clip is refused now, not when it has rendered.
    if (p.format == "png") {
      Preset snapped = p, one = p;
      pipeline::snap_sizes(snapped);
      one.frames = 1;
      pipeline::snap_sizes(one);
      if (snapped.frames > 1)
        throw Error(one.frames > 1
                        ? "Format \"PNG image\" is one image, but this model makes clips of " +
                              std::to_string(snapped.frames) +
                              " frames at the least: choose a video format or \"PNG sequence\""
                        : "Format \"PNG image\" is one image, but Frames is " +
                              std::to_string(snapped.frames) +
                              ": set Frames to 1, or choose a video format or \"PNG sequence\"");
    }
    const auto& family = pipeline::family_for(p);
    const auto files = pipeline::resolve_models(p, family);
    // A VAE or text encoder of another family, by what its tensors hold (an
    // SDXL checkpoint's own parts are its model file).
    if (!p.uses_embedded_model())
      for (const auto& [role, file] : {std::pair{"vae", files.vae},
                                       {"text_encoder", files.text_encoder},
                                       {"clip", files.clip}})
        if (!file.empty() && file != files.model)
          if (const auto why =
                  wrong_part(family.name(), role, QString::fromStdString(file.string()));
              !why.isEmpty())
            throw Error(why.toStdString());
    // The rest of what the files' headers say (an image-to-video DiT, a Wan
    // 2.2 pair's experts, latent channels and text widths), as a render
    // checks it first.
    family.check_files(files);
    pipeline::check_sampler(p);
    pipeline::check_loras(p);
    if (!sweep.isEmpty()) {
      std::vector<render::SweepAxis> axes;
      for (const auto& a : sweep) axes.push_back(render::parse_sweep_axis(a.toStdString()));
      auto q = p;
      if (q.output.empty()) q.output = "sweep.mp4";
      render::plan_sweep(q, axes);
    }
  } catch (const std::exception& e) {
    // Named after the preset file it came from, as the CLI names it.
    std::string what = e.what();
    if (!p.source.empty() && what.rfind(p.source, 0) != 0)
      what = std::string(p.source).append(": ").append(what);
    refuse(QString::fromStdString(what));
    return {};
  }
  // Paths that name files made absolute; names stay names, found at render
  // time against the preset's folder (kept) and then under models_dir.
  const auto base_dir = p.base_dir;
  p = p.absolutized();
  p.base_dir = base_dir;
  if (p.seed < 0) p.seed = QRandomGenerator::global()->bounded(1 << 30);
  panel_->set_last_seed(p.seed);
  settings_.insert("last_seed", static_cast<qlonglong>(p.seed));
  if (p.output.empty()) {
    const auto stamp = QDateTime::currentDateTime().toString("yyyyMMdd-HHmmss");
    const QString base = QString("%1/kinora-%2-%3").arg(output_dir_, stamp).arg(p.seed);
    p.output = free_output_path(base + extension_for(p), p.format == "png-seq").toStdString();
  }
  const auto id = queue_->add(p, front, sweep);
  start_next();
  return id;
}

QString MainWindow::queue_preset_file(const QString& file, bool into_output_folder) {
  const auto f = file.toStdString();
  try {
    Preset p = load_preset_file(f, panel_->models_dir().toStdString());
    if (into_output_folder && !p.output.empty()) p.place_output_in(output_dir_.toStdString(), f);
    return queue_preset(p);
  } catch (const std::exception& e) {
    refuse(QString::fromStdString(e.what()));
    return {};
  }
}

QString MainWindow::duplicate_job(int row) {
  const auto id = queue_->duplicate(row);
  start_next();
  return id;
}

bool MainWindow::requeue_job(int row) {
  const bool ok = queue_->requeue(row);
  start_next();
  return ok;
}

void MainWindow::start_next() {
  if (busy() || pause_after_current_) return;
  const int row = queue_->next_pending();
  if (row < 0) return;
  const auto& job = queue_->at(row);
  running_ = job.id;
  notes_.clear();
  // A job whose file exists by now (a duplicated or re-queued job, a preset
  // rendered before) renders to a free name beside it. A sweep keeps its
  // names: its finished cells are reused and it remakes only its own sheet.
  if (job.sweep.isEmpty() && !job.preset.output.empty()) {
    const auto planned = QString::fromStdString(job.preset.output);
    const auto free = free_output_path(planned, job.preset.format == "png-seq");
    if (free != planned) {
      queue_->set_planned_output(job.id, free.toStdString());
      // What is there: the output, or only a file at its parameters file's
      // name (a render's, or a user's that the render's would replace).
      const auto taken_by = QFileInfo::exists(planned) ? planned + " exists"
                            : QFileInfo::exists(planned + ".json")
                                ? planned + ".json exists (the name of this job's parameters file)"
                                : planned + " is being rendered by another process";
      const auto note = taken_by + "; this job renders to " + free;
      statusBar()->showMessage(note);
      if (options_.quit_when_idle) say_on_stderr(note);
    }
  }
  queue_->set_status(job.id, JobStatus::Running);
  viewer_->clear("Loading models…");
  const auto json = QString::fromStdString(job.preset.to_json().dump());
  QMetaObject::invokeMethod(worker_, "render", Qt::QueuedConnection, Q_ARG(QString, job.id),
                            Q_ARG(QString, json), Q_ARG(QStringList, job.sweep),
                            Q_ARG(QString, QString::fromStdString(job.preset.source)),
                            Q_ARG(QString, QString::fromStdString(job.preset.base_dir.string())));
}

void MainWindow::job_done(const QString& id) {
  if (running_ == id) running_.clear();
  start_next();
  maybe_quit();
}

void MainWindow::cancel_current() {
  if (busy()) {
    worker_->cancel();
    statusBar()->showMessage("cancelling…");
  }
}

bool MainWindow::restore_from(const QString& path) {
  try {
    // A preset file, or the parameters of a render (a sidecar, or embedded):
    // either may come from elsewhere, so its output name is never reused (a
    // new render gets a new name in the output folder).
    const std::string file = path.toStdString();
    Preset p;
    nlohmann::json meta;
    if (path.endsWith(".json", Qt::CaseInsensitive) && !media::is_kinora_sidecar(file)) {
      p = Preset::load(file).absolutized();
    } else {
      meta = media::read_embedded_parameters(file);
      p = Preset::restored(meta, file);
    }
    p.output.clear();
    panel_->set_preset(p);
    statusBar()->showMessage("settings restored from " + path);
    // A render's files as the models folder has them now: those whose
    // contents differ from the ones it was made with are said.
    if (!meta.is_null()) {
      QStringList changed;
      for (const auto& f : render::changed_since(meta, panel_->preset()))
        changed << QString::fromStdString(f);
      if (!changed.isEmpty())
        warn("Not the same files",
             "The settings of " + path +
                 " are restored, but these files are not the ones it "
                 "was made with (their contents differ), so a render will not match it:\n" +
                 changed.join("\n"));
    }
    return true;
  } catch (const std::exception& e) {
    statusBar()->showMessage(QString("cannot use the settings: ") + e.what());
    return false;
  }
}

void MainWindow::save_preset_file() {
  QFileDialog d(this, "Save preset", QString(), "Presets (*.json)");
  d.setAcceptMode(QFileDialog::AcceptSave);
  d.setDefaultSuffix("json");  // so that its overwrite question names the file saved
  if (d.exec() != QDialog::Accepted || d.selectedFiles().isEmpty()) return;
  save_preset_to(d.selectedFiles().first());
}

QString MainWindow::save_preset_to(const QString& file) {
  // A name without .json gets it: Open and Queue a folder list *.json.
  QString f = file;
  if (!f.endsWith(".json", Qt::CaseInsensitive)) f += ".json";
  // Whole or not at all (base/files.h), as the queue is written.
  try {
    write_file_atomically(f.toStdString(), panel_->preset().to_json().dump(2) + "\n");
    statusBar()->showMessage("saved " + f);
    return f;
  } catch (const std::exception& e) {
    statusBar()->showMessage(QString("could not be saved: ") + e.what());
    warn("Not saved", QString("The preset could not be saved: ") + e.what());
    return {};
  }
}

void MainWindow::open_preset_file() {
  const auto f = QFileDialog::getOpenFileName(this, "Open preset", QString(), "Presets (*.json)");
  if (!f.isEmpty() && !restore_from(f)) warn("Not opened", statusBar()->currentMessage());
}

void MainWindow::choose_folder_to_queue() {
  const auto dir = QFileDialog::getExistingDirectory(this, "Queue the presets of a folder");
  if (!dir.isEmpty()) queue_folder(dir);
}

int MainWindow::queue_folder(const QString& dir) {
  int n = 0;
  QStringList refused;
  collected_ = &refused;
  for (const auto& f : QDir(dir).entryInfoList({"*.json"}, QDir::Files, QDir::Name)) {
    if (media::is_kinora_sidecar(f.absoluteFilePath().toStdString()))
      continue;  // the parameters of a render
    // Named outputs land inside the output folder, never elsewhere; one that
    // is refused leaves the others queued.
    if (!queue_preset_file(f.absoluteFilePath(), true).isEmpty()) ++n;
  }
  collected_ = nullptr;
  const QString presets = n == 1 ? "preset" : "presets";
  statusBar()->showMessage(QString("queued %1 %2").arg(n).arg(presets) +
                           (refused.isEmpty() ? QString() : "; not queued: " + refused.join("; ")));
  // Every refusal in one dialog, not one dialog each.
  if (!refused.isEmpty() && !scripted())
    warn("Not queued", QString("Queued %1 %2 of %3; %4 not queued:\n\n")
                               .arg(n)
                               .arg(presets, dir)
                               .arg(refused.size()) +
                           refused.join("\n\n"));
  return n;
}

void MainWindow::sweep_dialog() {
  QDialog d(this);
  d.setWindowTitle("Sweep");
  // A start: the form's first LoRA at a few strengths, else a few seeds.
  const auto p = panel_->preset();
  const QString first =
      p.loras.empty()
          ? QString("seed=1,2,3")
          : QString("lora:%1=0.5,1")
                .arg(QFileInfo(QString::fromStdString(p.loras[0].path)).completeBaseName());
  auto* columns = new QLineEdit(first, &d);
  auto* rows = new QLineEdit(p.loras.empty() ? QString() : QString("seed=1,2"), &d);
  for (auto* e : {columns, rows}) e->setMinimumWidth(320);
  auto* help = new QLabel(
      "KEY=V1,V2,…  with KEY one of seed, guidance, steps, sampler, shift, precision, fp8, "
      "prompt and negative_prompt (values split by |), or lora:NAME (a LoRA of the form, by "
      "file name). A LoRA axis gets an \"off\" column. Every cell is a render of its own in the "
      "output folder; the contact sheet opens when the sweep is done.",
      &d);
  help->setWordWrap(true);
  help->setStyleSheet("color: gray");
  auto* form = new QFormLayout(&d);
  form->addRow("Columns", columns);
  form->addRow("Rows (optional)", rows);
  form->addRow(help);
  auto* buttons = new QDialogButtonBox(QDialogButtonBox::Ok | QDialogButtonBox::Cancel, &d);
  buttons->button(QDialogButtonBox::Ok)->setText("Queue the sweep");
  form->addRow(buttons);
  connect(buttons, &QDialogButtonBox::accepted, &d, &QDialog::accept);
  connect(buttons, &QDialogButtonBox::rejected, &d, &QDialog::reject);
  if (d.exec() != QDialog::Accepted) return;
  QStringList axes = {columns->text().trimmed()};
  if (!rows->text().trimmed().isEmpty()) axes.push_back(rows->text().trimmed());
  queue_sweep(axes);
}

void MainWindow::settings_dialog() {
  QDialog d(this);
  d.setWindowTitle("Settings");
  auto* models = new QLineEdit(panel_->models_dir(), &d);
  models->setPlaceholderText("none: the embedded model only");
  auto* outputs = new QLineEdit(output_dir_, &d);
  auto* form = new QFormLayout(&d);
  // Each folder typed, or chosen with Browse….
  auto row = [&](const QString& label, QLineEdit* edit) {
    auto* line = new QHBoxLayout;
    line->addWidget(edit, 1);
    auto* browse = new QPushButton("Browse…", &d);
    connect(browse, &QPushButton::clicked, &d, [&d, edit, label] {
      const auto dir = QFileDialog::getExistingDirectory(&d, label, edit->text());
      if (!dir.isEmpty()) edit->setText(dir);
    });
    line->addWidget(browse);
    form->addRow(label, line);
  };
  row("Models folder (ComfyUI layout)", models);
  row("Output folder", outputs);
  auto* buttons = new QDialogButtonBox(QDialogButtonBox::Ok | QDialogButtonBox::Cancel, &d);
  form->addRow(buttons);
  connect(buttons, &QDialogButtonBox::accepted, &d, &QDialog::accept);
  connect(buttons, &QDialogButtonBox::rejected, &d, &QDialog::reject);
  if (d.exec() != QDialog::Accepted) return;
  if (const auto why = apply_settings(models->text(), outputs->text()); !why.isEmpty())
    warn("Settings", why);
}

QString MainWindow::apply_settings(const QString& models_dir, const QString& output_dir) {
  // Folders that exist: the studio makes none but its own default output
  // folder, and a models folder is read, never made. A folder refused
  // changes nothing.
  const auto models = models_dir.trimmed().isEmpty()
                          ? QString()
                          : QDir::cleanPath(QFileInfo(models_dir.trimmed()).absoluteFilePath());
  if (!models.isEmpty() && !QFileInfo(models).isDir())
    return "The models folder " + models +
           (QFileInfo::exists(models) ? " is not a folder" : " does not exist") +
           "; the models are still listed from " +
           (panel_->models_dir().isEmpty() ? QString("the embedded model alone")
                                           : panel_->models_dir());
  const auto chosen = QDir::cleanPath(QFileInfo(output_dir.trimmed()).absoluteFilePath());
  if (!QFileInfo(chosen).isDir())
    return "The output folder " + chosen + " is not a folder; renders still go to " + output_dir_;
  if (models != panel_->models_dir()) panel_->set_models_dir(models);
  settings_.insert("models_dir", models);
  if (chosen != output_dir_) {
    output_dir_ = chosen;
    gallery_->set_folder(output_dir_);
  }
  settings_.insert("output_dir", output_dir_);
  return save_settings();
}

QString MainWindow::save_settings() {
  const auto why = write_settings(settings_file_, settings_);
  if (!why.isEmpty()) settings_saved_ = false;
  return why;
}

void MainWindow::closeEvent(QCloseEvent* e) {
  settings_.insert("geometry", saveGeometry());
  settings_.insert("window_state", saveState());
  settings_.insert("last_preset", QString::fromStdString(panel_->preset().to_json().dump()));
  if (const auto why = save_settings(); !why.isEmpty()) say_on_stderr(why);
  // Closed (--exit-after-ms, say) while the player shot waits: taken now.
  if (player_shot_ && !shot_player_) {
    shot_player_ = true;
    shot("studio-player.png");
  }
  if (busy()) {
    // Closed mid-render: the job comes back re-queueable next time.
    worker_->cancel();
    queue_->set_status(running_, JobStatus::Interrupted, close_reason_);
    running_.clear();
  }
  e->accept();
}

void MainWindow::stop_on_signal(int signal) {
  const QString name = signal == SIGINT   ? "Ctrl-C (SIGINT)"
                       : signal == SIGHUP ? "SIGHUP"
                                          : "SIGTERM";
  close_reason_ = "the studio was stopped by " + name + " during this job";
  say_on_stderr(
      "stopping on " + name +
      (busy() ? ": the running job is cancelled and kept in the queue as interrupted" : QString()));
  close();
  QApplication::exit(128 + signal);  // every event loop, a dialog's too
}

void MainWindow::dragEnterEvent(QDragEnterEvent* e) {
  if (e->mimeData()->hasUrls()) e->acceptProposedAction();
}

void MainWindow::dropEvent(QDropEvent* e) {
  for (const auto& url : e->mimeData()->urls())
    if (url.isLocalFile() && restore_from(url.toLocalFile())) {
      e->acceptProposedAction();
      return;
    }
}

void MainWindow::shot(const QString& name) {
  QDir().mkpath(options_.screenshots);
  const auto path = options_.screenshots + "/" + name;
  if (!grab().save(path)) statusBar()->showMessage("could not save " + path);
}

void MainWindow::shoot_player_when_shown() {
  if (player_shot_ || shot_player_) return;
  player_shot_ = new QTimer(this);
  auto waited = std::make_shared<int>(0);
  connect(player_shot_, &QTimer::timeout, this, [this, waited] {
    *waited += 100;
    // An image is shown at once; a video once it has played a few frames.
    const bool image = viewer_->showing_image();
    if (!image && viewer_->video_frames_shown() < 8 && *waited <= 15000) return;
    if (!shot_player_) {
      shot_player_ = true;
      shot("studio-player.png");
    }
    player_silent_ = !image && viewer_->video_frames_shown() == 0;
    player_shot_->stop();
    player_shot_->deleteLater();
    player_shot_ = nullptr;
    maybe_quit();
  });
  player_shot_->start(100);
}

void MainWindow::maybe_quit() {
  if (!options_.quit_when_idle || busy() || queue_->next_pending() >= 0) return;
  if (player_shot_) return;  // the player's shot first; it calls again when taken
  // A finished video that never played is an error of its own (2).
  QApplication::exit(exit_code_ == 0 && player_silent_ ? 2 : exit_code_);
}

}  // namespace kinora::app
