#include "app/queue_model.h"

#include <QDataStream>
#include <QDir>
#include <QFile>
#include <QFileInfo>
#include <QJsonArray>
#include <QJsonDocument>
#include <QMimeData>

#include "base/error.h"
#include "base/files.h"

namespace kinora::app {
namespace {
constexpr const char* kMime = "application/x-kinora-queue-rows";
constexpr int kQueueSchema = 1;  // the "schema_version" save() writes
}  // namespace

QueueModel::QueueModel(QString file, QObject* parent)
    : QAbstractListModel(parent), file_(std::move(file)) {}

bool QueueModel::load(QString* error) {
  if (file_.isEmpty() || !QFile::exists(file_)) return true;
  // Where the file as it was is kept: never over an earlier one.
  QString aside = file_ + ".bad";
  for (int k = 2; QFileInfo::exists(aside); ++k) aside = file_ + ".bad-" + QString::number(k);
  QFile f(file_);
  QList<Job> jobs;
  QStringList left_out;
  int total = 0;
  try {
    if (!f.open(QIODevice::ReadOnly)) throw Error(file_.toStdString() + ": cannot read");
    QJsonParseError pe;
    const auto doc = QJsonDocument::fromJson(f.readAll(), &pe);
    f.close();
    if (pe.error != QJsonParseError::NoError)
      throw Error(file_.toStdString() + ": not valid JSON: " + pe.errorString().toStdString());
    if (!doc.isObject() || !doc.object().value("jobs").isArray())
      throw Error(file_.toStdString() + ": not a queue (no \"jobs\" list)");
    // A queue written by a newer studio: its jobs may mean what this one
    // cannot tell, and rewriting it as version 1 would lose what it holds.
    if (const int v = doc.object().value("schema_version").toInt(1); v > kQueueSchema)
      throw Error(file_.toStdString() + ": schema_version " + std::to_string(v) +
                  " is newer than this studio reads (" + std::to_string(kQueueSchema) +
                  "); its jobs are not loaded");
    const auto arr = doc.object().value("jobs").toArray();
    total = static_cast<int>(arr.size());
    for (const auto& v : arr) {
      try {  // one job that cannot be read leaves the others in the queue
        auto j = Job::from_json(v.toObject(), file_);
        if (j.status == JobStatus::Running) {
          j.status = JobStatus::Interrupted;
          j.message = "interrupted: the studio stopped while this job was running";
        }
        jobs.push_back(j);
      } catch (const std::exception& e) {
        left_out << QString::fromStdString(e.what());
      }
    }
  } catch (const std::exception& e) {
    const auto kept = set_aside(aside, true);
    if (error) *error = QString::fromStdString(e.what()) + kept;
    return false;
  }
  if (!left_out.isEmpty()) {
    const auto kept = set_aside(aside, false);
    if (error)
      *error = QString("%1 of %2 jobs could not be read and were left out of the queue: %3")
                   .arg(left_out.size())
                   .arg(total)
                   .arg(left_out.join("; ")) +
               kept;
  }
  beginResetModel();
  jobs_ = jobs;
  endResetModel();
  save();
  return left_out.isEmpty();
}

QString QueueModel::set_aside(const QString& aside, bool move) {
  if (move ? QFile::rename(file_, aside) : QFile::copy(file_, aside))
    return QString(" (the file as it was is kept as %1)").arg(aside);
  // Not kept: then it is not written over either; this queue lives in memory.
  const auto kept = file_;
  file_.clear();
  return QString(
             " (it could not be kept as %1, so %2 is left as it is and the queue is kept in "
             "memory only until the studio closes)")
      .arg(aside, kept);
}

void QueueModel::save() {
  if (file_.isEmpty()) return;
  QDir().mkpath(QFileInfo(file_).absolutePath());
  QJsonArray arr;
  for (const auto& j : jobs_) arr.push_back(j.to_json());
  QJsonObject root;
  root["schema_version"] = kQueueSchema;
  root["jobs"] = arr;
  // Written whole or not at all (base/files.h). Not QSaveFile: Qt 6.4's
  // commits a file cut short by a write that only partly succeeded (a full
  // disk, `ulimit -f`), and the next start would find a damaged queue.
  const auto path = file_.toStdString();
  try {
    write_file_atomically(path, QJsonDocument(root).toJson().toStdString());
  } catch (const std::exception& e) {
    // The error names the file; the message says it once.
    std::string why = e.what();
    if (why.rfind(path + ": ", 0) == 0) why.erase(0, path.size() + 2);
    Q_EMIT saveFailed(file_ + ": the queue could not be saved: " + QString::fromStdString(why));
  }
}

int QueueModel::rowCount(const QModelIndex& parent) const {
  return parent.isValid() ? 0 : static_cast<int>(jobs_.size());
}

QVariant QueueModel::data(const QModelIndex& index, int role) const {
  if (!index.isValid() || index.row() >= jobs_.size()) return {};
  const Job& j = jobs_[index.row()];
  switch (role) {
    case Qt::DisplayRole: {
      QString s = QString::fromStdString(j.preset.prompt).left(60);
      if (!j.sweep.isEmpty()) s = "Sweep " + j.sweep.join(" × ") + ": " + s;
      QString state = status_name(j.status);
      if (j.status == JobStatus::Running && j.total > 0)
        state = QString("step %1/%2, %3 s/step, ETA %4 s")
                    .arg(j.step)
                    .arg(j.total)
                    .arg(j.seconds_per_step, 0, 'f', 2)
                    .arg(j.eta_seconds, 0, 'f', 0);
      // Why a job failed, on its row (the whole of it on the tooltip).
      if (j.status == JobStatus::Failed && !j.message.isEmpty()) {
        // The preset file it came from is on the tooltip; the row keeps the reason.
        QString why = j.message.section('\n', 0, 0);
        const auto from = QString::fromStdString(j.preset.source) + ": ";
        if (!j.preset.source.empty() && why.startsWith(from)) why = why.mid(from.size());
        if (why.size() > 160) why = why.left(159) + "…";
        state += ": " + why;
      }
      return QString("%1\n[%2]").arg(s, state);
    }
    case Qt::ToolTipRole: {
      // A finished job's message is its notes, under its prompt; otherwise why.
      QString tip = j.message.isEmpty() ? QString::fromStdString(j.preset.prompt) : j.message;
      if (j.status == JobStatus::Done && !j.message.isEmpty())
        tip = QString::fromStdString(j.preset.prompt) + "\n\n" + j.message;
      if (!j.preset.source.empty())
        tip += "\n(from " + QString::fromStdString(j.preset.source) + ")";
      return tip;
    }
    case IdRole:
      return j.id;
    case StatusRole:
      return status_name(j.status);
    case PromptRole:
      return QString::fromStdString(j.preset.prompt);
    case ProgressRole:
      return j.total > 0 ? 100 * j.step / j.total : (j.status == JobStatus::Done ? 100 : 0);
    case OutputRole:
      return j.output;
    case MessageRole:
      return j.message;
    default:
      return {};
  }
}

QHash<int, QByteArray> QueueModel::roleNames() const {
  auto r = QAbstractListModel::roleNames();
  r[IdRole] = "id", r[StatusRole] = "status", r[PromptRole] = "prompt";
  r[ProgressRole] = "progress", r[OutputRole] = "output", r[MessageRole] = "message";
  return r;
}

Qt::ItemFlags QueueModel::flags(const QModelIndex& index) const {
  const auto f = QAbstractListModel::flags(index);
  return index.isValid() ? f | Qt::ItemIsDragEnabled : f | Qt::ItemIsDropEnabled;
}

Qt::DropActions QueueModel::supportedDropActions() const {
  return Qt::MoveAction;
}

QStringList QueueModel::mimeTypes() const {
  return {kMime};
}

QMimeData* QueueModel::mimeData(const QModelIndexList& indexes) const {
  auto* m = new QMimeData;
  QByteArray bytes;
  QDataStream s(&bytes, QIODevice::WriteOnly);
  for (const auto& i : indexes) s << i.row();
  m->setData(kMime, bytes);
  return m;
}

bool QueueModel::dropMimeData(const QMimeData* data, Qt::DropAction action, int row, int,
                              const QModelIndex& parent) {
  if (action != Qt::MoveAction || !data->hasFormat(kMime)) return false;
  QDataStream s(data->data(kMime));
  int src = -1;
  s >> src;
  if (src < 0 || src >= jobs_.size()) return false;
  int dst = row >= 0 ? row : (parent.isValid() ? parent.row() : static_cast<int>(jobs_.size()));
  moveRows({}, src, 1, {}, dst);
  return false;  // the move is done here; the view must not remove the source row
}

bool QueueModel::moveRows(const QModelIndex& sp, int row, int count, const QModelIndex& dp,
                          int dst) {
  if (count != 1 || row < 0 || row >= jobs_.size() || dst < 0 || dst > jobs_.size()) return false;
  if (dst == row || dst == row + 1) return false;
  if (!beginMoveRows(sp, row, row, dp, dst)) return false;
  jobs_.move(row, dst > row ? dst - 1 : dst);
  endMoveRows();
  save();
  return true;
}

QString QueueModel::add(const pipeline::Preset& preset, bool front, const QStringList& sweep) {
  auto j = Job::make(preset, sweep);
  int at = static_cast<int>(jobs_.size());
  if (front) {
    at = 0;
    while (at < jobs_.size() && jobs_[at].status != JobStatus::Pending) ++at;
  }
  beginInsertRows({}, at, at);
  jobs_.insert(at, j);
  endInsertRows();
  save();
  return j.id;
}

void QueueModel::remove(int row) {
  if (row < 0 || row >= jobs_.size() || jobs_[row].status == JobStatus::Running) return;
  beginRemoveRows({}, row, row);
  jobs_.removeAt(row);
  endRemoveRows();
  save();
}

QString QueueModel::duplicate(int row) {
  if (row < 0 || row >= jobs_.size()) return {};
  auto j = Job::make(jobs_[row].preset, jobs_[row].sweep);
  beginInsertRows({}, row + 1, row + 1);
  jobs_.insert(row + 1, j);
  endInsertRows();
  save();
  return j.id;
}

bool QueueModel::requeue(int row) {
  if (row < 0 || row >= jobs_.size()) return false;
  auto& j = jobs_[row];
  if (j.status == JobStatus::Pending || j.status == JobStatus::Running) return false;
  j.status = JobStatus::Pending;
  j.message.clear();
  j.output.clear();
  j.step = j.total = 0;
  changed(row);
  save();
  return true;
}

int QueueModel::row_of(const QString& id) const {
  for (int i = 0; i < jobs_.size(); ++i)
    if (jobs_[i].id == id) return i;
  return -1;
}

const Job* QueueModel::job(const QString& id) const {
  const int r = row_of(id);
  return r < 0 ? nullptr : &jobs_[r];
}

int QueueModel::next_pending() const {
  for (int i = 0; i < jobs_.size(); ++i)
    if (jobs_[i].status == JobStatus::Pending) return i;
  return -1;
}

void QueueModel::set_status(const QString& id, JobStatus s, const QString& message) {
  const int r = row_of(id);
  if (r < 0) return;
  jobs_[r].status = s;
  jobs_[r].message = message;
  changed(r);
  save();
}

void QueueModel::set_output(const QString& id, const QString& output) {
  const int r = row_of(id);
  if (r < 0) return;
  jobs_[r].output = output;
  changed(r);
  save();
}

void QueueModel::set_planned_output(const QString& id, const std::string& output) {
  const int r = row_of(id);
  if (r < 0) return;
  jobs_[r].preset.output = output;
  changed(r);
  save();
}

void QueueModel::set_progress(const QString& id, int step, int total, double sps, double eta) {
  const int r = row_of(id);
  if (r < 0) return;
  auto& j = jobs_[r];
  j.step = step, j.total = total, j.seconds_per_step = sps, j.eta_seconds = eta;
  changed(r);  // progress is not written to disk
}

void QueueModel::changed(int row) {
  const auto i = index(row);
  Q_EMIT dataChanged(i, i);
}

}  // namespace kinora::app
