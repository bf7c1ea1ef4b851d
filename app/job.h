#pragma once
// One queued render: its preset, its state, and what came of it.
#include <QDateTime>
#include <QJsonObject>
#include <QString>
#include <QStringList>

#include "pipeline/preset.h"

namespace kinora::app {

enum class JobStatus { Pending, Running, Done, Failed, Cancelled, Interrupted };

QString status_name(JobStatus s);
// The status named `s`; throws kinora::Error for a name that is none.
JobStatus status_from_name(const QString& s);

struct Job {
  QString id;  // stable across restarts
  // Its preset; for one read from a file, `preset.source` names the file (the
  // job's messages name it) and `preset.base_dir` is that file's folder
  // (absolute), against which its relative model and LoRA names resolve as
  // the CLI resolves them. Both are kept in the queue file beside the preset.
  pipeline::Preset preset;
  JobStatus status = JobStatus::Pending;
  QString message;  // the error of a failed job, or the last stage
  QString output;   // the written file, when done (a sweep's: its contact sheet)
  // A sweep's axes as typed ("seed=1,2,3", "lora:NAME=0.5,1"; render/sweep.h):
  // the job renders every cell and the sheet. Empty: one render.
  QStringList sweep;
  QDateTime created;
  // Live progress (not persisted).
  int step = 0, total = 0;
  double seconds_per_step = 0, eta_seconds = 0;

  QJsonObject to_json() const;
  // Throws kinora::Error naming `source` when the entry is malformed.
  static Job from_json(const QJsonObject& o, const QString& source);
  // A new pending job (fresh id) for `preset` (a sweep over `sweep`).
  static Job make(const pipeline::Preset& preset, const QStringList& sweep = {});
};

// A preset file as `kinora batch --models-dir` reads it (cli/batch.cpp
// collect_presets): its folder the base of its relative paths (absolute, so a
// queue read again from elsewhere resolves them the same), its family's
// defaults found with `models_dir` (the studio's models folder) when it names
// none of its own, which it then takes. Throws kinora::Error naming the file.
pipeline::Preset load_preset_file(const std::string& file, const std::string& models_dir);

}  // namespace kinora::app
