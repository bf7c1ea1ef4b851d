#pragma once
// The render queue as a Qt list model: pending, running, done, failed jobs in
// order; reorder by drag and drop, remove, duplicate, re-queue. Every change of
// content is written to a JSON file at once (a temporary file renamed into
// place, base/files.h), so the queue survives a restart or a crash; a job that was
// running when the process died comes back as "interrupted" and can be re-queued.
#include <QAbstractListModel>
#include <QList>
#include <QString>

#include "app/job.h"

namespace kinora::app {

class QueueModel : public QAbstractListModel {
  Q_OBJECT
 public:
  enum Roles {
    IdRole = Qt::UserRole + 1,
    StatusRole,  // QString status_name()
    PromptRole,
    ProgressRole,  // 0..100
    OutputRole,
    MessageRole,
  };

  // `file`: where the queue is kept ("" keeps it in memory only).
  explicit QueueModel(QString file = {}, QObject* parent = nullptr);

  // Reads the file: running jobs become interrupted (and the file is rewritten);
  // a job of a status it does not know comes back failed, saying so. A file
  // that is not a queue (or a queue of a newer schema_version, which this
  // studio would misread) is moved aside, and one whose jobs cannot all be read
  // is copied aside before its readable jobs are loaded; either way to the
  // first free <file>.bad, <file>.bad-2, … (where that fails, the file is
  // left alone and the queue is not saved), and returns false with what was
  // wrong, job by job, in `error`.
  bool load(QString* error = nullptr);

  int rowCount(const QModelIndex& parent = {}) const override;
  QVariant data(const QModelIndex& index, int role) const override;
  QHash<int, QByteArray> roleNames() const override;
  Qt::ItemFlags flags(const QModelIndex& index) const override;
  Qt::DropActions supportedDropActions() const override;
  QStringList mimeTypes() const override;
  QMimeData* mimeData(const QModelIndexList& indexes) const override;
  bool dropMimeData(const QMimeData* data, Qt::DropAction action, int row, int column,
                    const QModelIndex& parent) override;
  bool moveRows(const QModelIndex& src, int row, int count, const QModelIndex& dst,
                int dst_row) override;

  // Queues a render (at the end, or at the front of the pending ones); returns its id.
  QString add(const pipeline::Preset& preset, bool front = false, const QStringList& sweep = {});
  void remove(int row);        // not the running job
  QString duplicate(int row);  // a pending copy right after it
  bool requeue(int row);       // done/failed/cancelled/interrupted → pending
  int row_of(const QString& id) const;
  const Job* job(const QString& id) const;
  const Job& at(int row) const { return jobs_[row]; }
  // The first pending job, or −1.
  int next_pending() const;

  void set_status(const QString& id, JobStatus s, const QString& message = {});
  void set_output(const QString& id, const QString& output);
  // The file a pending job will write (its preset's output).
  void set_planned_output(const QString& id, const std::string& output);
  void set_progress(const QString& id, int step, int total, double sps, double eta);

  const QString& file() const { return file_; }

 Q_SIGNALS:
  void saveFailed(const QString& message);

 private:
  void save();
  // Keeps the queue file as it is at `aside` (moved, or copied), and returns
  // the words saying so; where that fails, stops saving the queue at all.
  QString set_aside(const QString& aside, bool move);
  void changed(int row);
  QString file_;
  QList<Job> jobs_;
};

}  // namespace kinora::app
