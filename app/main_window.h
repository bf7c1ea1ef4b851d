#pragma once
// Kinora Studio's window: the generate panel (left dock), the viewer (centre),
// the queue (right dock) and the gallery (bottom dock), over one render worker
// on its own thread.
#include <QLockFile>
#include <QMainWindow>
#include <QStringList>
#include <QThread>
#include <QVariantMap>

#include <memory>

#include "pipeline/preset.h"

namespace kinora::app {

class Gallery;
class GeneratePanel;
class GenerationWorker;
class QueueModel;
class Viewer;

struct StudioOptions {
  QString data_dir;     // queue, settings (default: the platform's app data folder)
  QString models_dir;   // overrides the setting
  QString output_dir;   // overrides the setting
  QStringList presets;  // preset files queued at start
  QString prompt;       // queued at start with the form's other settings
  qint64 seed = -1;
  QString screenshots;  // folder: save window shots while sampling and when playing
  bool quit_when_idle = false;
  int exit_after_ms = 0;
};

// The data folder of `o`: its own, or the platform's app data folder.
QString studio_data_folder(const StudioOptions& o);
// Before the window opens: the folders made absolute (the queue keeps paths
// that a restart from elsewhere finds again), and a given output folder that
// does not exist refused as the CLI refuses it (the studio creates only its
// own default one). Returns the reason it cannot start, or "".
QString prepare_options(StudioOptions& o);
// The data folder's lock (DIR/lock), so that a second studio on one folder
// neither renders the first one's jobs nor marks its running job
// interrupted. Null with the reason in `why` when another studio holds it; a
// lock left by a process that is gone is taken over (QLockFile). A folder
// where no lock can be made gives an unlocked (non-null, not locked) file:
// that studio cannot keep its queue there either, and says so.
std::unique_ptr<QLockFile> lock_data_folder(const QString& dir, QString* why);

class MainWindow : public QMainWindow {
  Q_OBJECT
 public:
  explicit MainWindow(const StudioOptions& options);
  ~MainWindow() override;

  QueueModel* queue() const { return queue_; }
  GeneratePanel* panel() const { return panel_; }
  Viewer* viewer() const { return viewer_; }
  Gallery* gallery() const { return gallery_; }
  bool busy() const { return !running_.isEmpty(); }

  // The form's settings as a job (output named in the output folder).
  QString queue_current(bool front = false);
  // Refused (empty id, the reason in the status bar and, unless scripted, a
  // dialog) when a LoRA does not fit the model or a sweep's axes are wrong.
  // A preset read from a file keeps its base_dir here: its relative model and
  // LoRA names resolve against its folder (then under models_dir), and its
  // models must be found, as `kinora render` checks, before it is queued.
  QString queue_preset(pipeline::Preset p, bool front = false, const QStringList& sweep = {});
  // A preset file (load_preset_file, with the studio's models folder), its
  // named output placed in the output folder when `into_output_folder`.
  // Refused (empty id, the reason naming the file) as queue_preset refuses.
  QString queue_preset_file(const QString& file, bool into_output_folder);
  // The form's settings as a sweep over `axes` ("seed=1,2", "lora:NAME=0.5,1").
  QString queue_sweep(const QStringList& axes);
  // "Use these settings": every parameter from an output's embedded preset or a
  // preset file. Returns false (and says why in the status bar) otherwise.
  bool restore_from(const QString& path);
  void cancel_current();
  // Ctrl+S: the form as a preset file, ".json" added to a name without it.
  // Returns the file written, or "" (the reason said).
  QString save_preset_to(const QString& file);
  // Ctrl-C, SIGTERM or SIGHUP (base/signals.h) reached the studio: the
  // running job is cancelled (its temporaries and claim removed as it
  // unwinds) and marked interrupted, the queue and settings are saved, and
  // the studio quits with 128 + the signal. Said on stderr.
  void stop_on_signal(int signal);
  // Queues every preset file of `dir` (sorted by name); returns how many.
  int queue_folder(const QString& dir);
  // Queue → Duplicate (a pending copy of `row`'s job; its id) and Re-queue
  // (a job that ran, pending again). A job whose file exists when it starts
  // renders to a free name beside it ("NAME-2.mp4").
  QString duplicate_job(int row);
  bool requeue_job(int row);
  // File → Settings: the models and output folders, each refused (nothing
  // changed) when it is not an existing folder; an empty models folder is
  // none (the embedded model alone). Saves the settings. Returns why it
  // did not apply, or "".
  QString apply_settings(const QString& models_dir, const QString& output_dir);
  // Writes the settings file whole (a temporary read back, then renamed into
  // place) or not at all: a full disk or `ulimit -f` leaves the file as it
  // was. Returns the reason it failed, or "".
  QString save_settings();
  // Whether every save of the settings succeeded: a studio whose settings
  // were not kept exits with status 1.
  bool settings_saved() const { return settings_saved_; }

 protected:
  // The window closed (by the user, --exit-after-ms, a signal): the settings
  // are saved; a save that fails is said on stderr.
  void closeEvent(QCloseEvent* e) override;
  void dragEnterEvent(QDragEnterEvent* e) override;
  void dropEvent(QDropEvent* e) override;

 private:
  void build_menus();
  void start_next();
  void job_done(const QString& id);
  void save_preset_file();
  void open_preset_file();
  void choose_folder_to_queue();
  void settings_dialog();
  void sweep_dialog();
  void refuse(const QString& what);
  // A warning: a dialog that does not block, and on stderr for a scripted run.
  void warn(const QString& title, const QString& what);
  void shot(const QString& name);
  // Run by a script (--quit-when-idle, --exit-after-ms): warnings go to stderr.
  bool scripted() const { return options_.quit_when_idle || options_.exit_after_ms > 0; }
  // --screenshots: studio-player.png once the finished render shows (an
  // image at once, a video after a few frames), whatever ends the run.
  void shoot_player_when_shown();
  void maybe_quit();

  StudioOptions options_;
  // The settings (window geometry, the last preset and seed, the folders):
  // read once at start, written whole at each save (save_settings).
  QString settings_file_;
  QVariantMap settings_;
  bool settings_saved_ = true;  // false once a save failed
  GeneratePanel* panel_;
  Viewer* viewer_;
  Gallery* gallery_;
  QueueModel* queue_;
  class QListView* queue_view_;
  QThread thread_;
  GenerationWorker* worker_;
  QString running_;
  QStringList notes_;  // the running job's messages
  // While queueing several presets: their refusals, said in one dialog.
  QStringList* collected_ = nullptr;
  bool pause_after_current_ = false;
  QString output_dir_;
  bool shot_sampling_ = false, shot_player_ = false;
  class QTimer* player_shot_ = nullptr;  // waiting for the player to show frames
  bool player_silent_ = false;           // a finished video that showed no frame
  int exit_code_ = 0;
  bool said_save_failed_ = false;  // a script hears once that the queue is not kept
  QString close_reason_ = "the studio was closed during this job";
};

}  // namespace kinora::app
