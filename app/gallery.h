#pragma once
// Past outputs of the output folder as thumbnails (newest first), filterable by
// prompt text. Each item knows the parameters embedded in its file.
#include <QListWidget>

class QLineEdit;

namespace kinora::app {

class Gallery : public QWidget {
  Q_OBJECT
 public:
  explicit Gallery(QWidget* parent = nullptr);
  void set_folder(const QString& folder);
  const QString& folder() const { return folder_; }
  // Re-reads the folder (after a render).
  void refresh();
  // Adds or moves `path` to the front.
  void add(const QString& path);
  QString selected() const;
  int visible_count() const;
  QListWidget* list() const { return list_; }

 Q_SIGNALS:
  void open(const QString& path);
  void use_settings(const QString& path);

 private:
  void apply_filter();
  QListWidgetItem* make_item(const QString& path);
  QString folder_;
  QListWidget* list_;
  QLineEdit* filter_;
};

// The preset JSON embedded in a Kinora output ("" when there is none).
QString embedded_preset_json(const QString& path, QString* error = nullptr);

}  // namespace kinora::app
