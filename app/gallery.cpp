#include "app/gallery.h"

#include <QDir>
#include <QFileInfo>
#include <QHBoxLayout>
#include <QLineEdit>
#include <QMenu>
#include <QPushButton>
#include <QVBoxLayout>
#include <QtConcurrent/QtConcurrentMap>

#include <utility>

#include <nlohmann/json.hpp>

#include "base/json.h"
#include "media/output.h"
#include "pipeline/preset.h"

namespace kinora::app {

QString embedded_preset_json(const QString& path, QString* error) {
  try {
    const auto p = path.toStdString();
    return QString::fromStdString(
        pipeline::Preset::restored(media::read_embedded_parameters(p), p).to_json().dump());
  } catch (const std::exception& e) {
    if (error) *error = QString::fromStdString(e.what());
    return {};
  }
}

namespace {
constexpr int kThumb = 128;

// Runs on the worker thread: touches no widget.
Gallery::Entry read_entry(const QString& path) {
  Gallery::Entry e{path, {}, {}, {}};
  try {
    const auto f = media::read_frames(path.toStdString(), 1)[0].contiguous();
    const int h = static_cast<int>(f.size(0)), w = static_cast<int>(f.size(1));
    // scaled() copies out of the tensor's memory before it is freed.
    e.thumbnail = QImage(f.data_ptr<uint8_t>(), w, h, 3 * w, QImage::Format_RGB888)
                      .scaled(kThumb, kThumb, Qt::KeepAspectRatio, Qt::FastTransformation);
  } catch (const std::exception&) {
  }
  QString error;
  const auto preset = embedded_preset_json(path, &error);
  if (!preset.isEmpty())
    e.prompt = QString::fromStdString(
        parse_json(preset.toStdString(), path.toStdString()).value("prompt", std::string()));
  else
    e.error = error;  // shown on the file instead of a prompt
  return e;
}

// Shown until a file's thumbnail is read.
const QIcon& placeholder() {
  static const QIcon icon = [] {
    QPixmap p(kThumb, kThumb * 9 / 16);
    p.fill(QColor(60, 60, 60));
    return QIcon(p);
  }();
  return icon;
}
}  // namespace

Gallery::Gallery(QWidget* parent) : QWidget(parent) {
  list_ = new QListWidget(this);
  list_->setViewMode(QListView::IconMode);
  list_->setIconSize({128, 128});
  list_->setResizeMode(QListView::Adjust);
  list_->setMovement(QListView::Static);
  list_->setContextMenuPolicy(Qt::CustomContextMenu);
  filter_ = new QLineEdit(this);
  filter_->setPlaceholderText("Filter by prompt…");
  filter_->setClearButtonEnabled(true);
  auto* use = new QPushButton("Use these settings", this);
  auto* top = new QHBoxLayout;
  top->addWidget(filter_, 1);
  top->addWidget(use);
  auto* l = new QVBoxLayout(this);
  l->addLayout(top);
  l->addWidget(list_, 1);
  connect(filter_, &QLineEdit::textChanged, this, &Gallery::apply_filter);
  connect(&watcher_, &QFutureWatcherBase::resultReadyAt, this,
          [this](int i) { fill(watcher_.resultAt(i)); });
  connect(&watcher_, &QFutureWatcherBase::finished, this, [this] {
    running_.clear();
    start_next();
  });
  connect(list_, &QListWidget::itemActivated, this,
          [this](QListWidgetItem* i) { Q_EMIT open(i->data(Qt::UserRole).toString()); });
  connect(list_, &QListWidget::itemClicked, this,
          [this](QListWidgetItem* i) { Q_EMIT open(i->data(Qt::UserRole).toString()); });
  connect(use, &QPushButton::clicked, this, [this] {
    if (!selected().isEmpty()) Q_EMIT use_settings(selected());
  });
  connect(list_, &QListWidget::customContextMenuRequested, this, [this](const QPoint& pos) {
    auto* item = list_->itemAt(pos);
    if (!item) return;
    QMenu menu;
    const auto path = item->data(Qt::UserRole).toString();
    menu.addAction("Open", this, [this, path] { Q_EMIT open(path); });
    menu.addAction("Use these settings", this, [this, path] { Q_EMIT use_settings(path); });
    menu.exec(list_->viewport()->mapToGlobal(pos));
  });
}

Gallery::~Gallery() {
  stop();
}

void Gallery::stop() {
  waiting_.clear();
  watcher_.cancel();
  watcher_.waitForFinished();
  running_.clear();
}

void Gallery::load(const QStringList& paths) {
  waiting_ += paths;
  if (running_.isEmpty()) start_next();
}

void Gallery::start_next() {
  if (waiting_.isEmpty()) {
    Q_EMIT loaded();
    return;
  }
  running_ = std::exchange(waiting_, {});
  watcher_.setFuture(QtConcurrent::mapped(running_, read_entry));
}

void Gallery::fill(const Entry& e) {
  for (int i = 0; i < list_->count(); ++i) {
    auto* item = list_->item(i);
    if (item->data(Qt::UserRole).toString() != e.path) continue;
    if (!e.thumbnail.isNull()) item->setIcon(QIcon(QPixmap::fromImage(e.thumbnail)));
    item->setData(Qt::UserRole + 1, e.prompt);
    item->setToolTip(!e.prompt.isEmpty() ? e.prompt : e.error.isEmpty() ? e.path : e.error);
  }
  apply_filter();
}

void Gallery::set_folder(const QString& folder) {
  folder_ = folder;
  refresh();
}

QListWidgetItem* Gallery::make_item(const QString& path) {
  auto* item = new QListWidgetItem(placeholder(), QFileInfo(path).fileName());
  item->setData(Qt::UserRole, path);
  item->setData(Qt::UserRole + 1, QString());
  item->setToolTip(path);
  return item;
}

void Gallery::refresh() {
  stop();
  list_->clear();
  if (folder_.isEmpty()) return;
  const auto files =
      QDir(folder_).entryInfoList({"*.mp4", "*.webm", "*.mov", "*.png"}, QDir::Files, QDir::Time);
  QStringList paths;
  for (const auto& f : files) {
    paths << f.absoluteFilePath();
    list_->addItem(make_item(paths.back()));
  }
  apply_filter();
  load(paths);
}

void Gallery::add(const QString& path) {
  for (int i = 0; i < list_->count(); ++i)
    if (list_->item(i)->data(Qt::UserRole).toString() == path) delete list_->takeItem(i--);
  list_->insertItem(0, make_item(path));
  list_->setCurrentRow(0);
  apply_filter();
  load({path});
}

QString Gallery::selected() const {
  auto* i = list_->currentItem();
  return i ? i->data(Qt::UserRole).toString() : QString();
}

int Gallery::visible_count() const {
  int n = 0;
  for (int i = 0; i < list_->count(); ++i) n += !list_->item(i)->isHidden();
  return n;
}

void Gallery::apply_filter() {
  const auto text = filter_->text().trimmed();
  for (int i = 0; i < list_->count(); ++i) {
    auto* item = list_->item(i);
    item->setHidden(!text.isEmpty() &&
                    !item->data(Qt::UserRole + 1).toString().contains(text, Qt::CaseInsensitive));
  }
}

}  // namespace kinora::app
