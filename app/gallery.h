#pragma once
// Past outputs of the output folder as thumbnails (newest first), filterable by
// prompt text. Each item knows the parameters embedded in its file. Files are
// listed at once; their thumbnails and prompts are read on a worker thread and
// filled in as they come, so a folder of hundreds of videos does not freeze the
// window.
#include <QFutureWatcher>
#include <QImage>
#include <QListWidget>

class QLineEdit;

namespace kinora::app {

class Gallery : public QWidget {
  Q_OBJECT
 public:
  explicit Gallery(QWidget* parent = nullptr);
  ~Gallery() override;
  void set_folder(const QString& folder);
  const QString& folder() const { return folder_; }
  // Re-reads the folder (after a render).
  void refresh();
  // Adds or moves `path` to the front.
  void add(const QString& path);
  QString selected() const;
  int visible_count() const;
  QListWidget* list() const { return list_; }
  // Files whose thumbnail and prompt are still being read.
  int pending() const { return static_cast<int>(waiting_.size() + running_.size()); }

  // What the worker reads from one file.
  struct Entry {
    QString path;
    QImage thumbnail;  // null when the file cannot be decoded
    QString prompt;    // "" when it has no Kinora parameters
    QString error;     // why there are none (no tag, malformed, too deep), for the tooltip
  };

 Q_SIGNALS:
  void open(const QString& path);
  void use_settings(const QString& path);
  // Every listed file's thumbnail and prompt are in.
  void loaded();

 private:
  void apply_filter();
  QListWidgetItem* make_item(const QString& path);
  // Queues files for the worker; starts it when idle.
  void load(const QStringList& paths);
  void start_next();
  void fill(const Entry& e);
  void stop();
  QFutureWatcher<Entry> watcher_;
  QStringList waiting_, running_;
  QString folder_;
  QListWidget* list_;
  QLineEdit* filter_;
};

// The preset JSON embedded in a Kinora output ("" when there is none), as
// pipeline::Preset::restored gives it: model file names, no output path.
QString embedded_preset_json(const QString& path, QString* error = nullptr);

}  // namespace kinora::app
