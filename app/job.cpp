#include "app/job.h"

#include "base/json.h"

#include <QJsonArray>
#include <QJsonDocument>
#include <QUuid>

#include <filesystem>

#include "base/error.h"

namespace kinora::app {

QString status_name(JobStatus s) {
  switch (s) {
    case JobStatus::Pending:
      return "pending";
    case JobStatus::Running:
      return "running";
    case JobStatus::Done:
      return "done";
    case JobStatus::Failed:
      return "failed";
    case JobStatus::Cancelled:
      return "cancelled";
    case JobStatus::Interrupted:
      return "interrupted";
  }
  return "pending";
}

JobStatus status_from_name(const QString& s) {
  for (auto st : {JobStatus::Pending, JobStatus::Running, JobStatus::Done, JobStatus::Failed,
                  JobStatus::Cancelled, JobStatus::Interrupted})
    if (status_name(st) == s) return st;
  throw Error("status '" + s.toStdString() +
              "' is none of pending, running, done, failed, cancelled, interrupted");
}

QJsonObject Job::to_json() const {
  QJsonObject o;
  o["id"] = id;
  o["status"] = status_name(status);
  o["message"] = message;
  o["output"] = output;
  o["created"] = created.toString(Qt::ISODate);
  if (!sweep.isEmpty()) o["sweep"] = QJsonArray::fromStringList(sweep);
  if (!preset.source.empty()) o["source"] = QString::fromStdString(preset.source);
  if (!preset.base_dir.empty()) o["base_dir"] = QString::fromStdString(preset.base_dir.string());
  o["preset"] =
      QJsonDocument::fromJson(QByteArray::fromStdString(preset.to_json().dump())).object();
  return o;
}

Job Job::from_json(const QJsonObject& o, const QString& source) {
  Job j;
  j.id = o.value("id").toString();
  if (j.id.isEmpty()) throw Error(source.toStdString() + ": a job without an id");
  j.message = o.value("message").toString();
  try {
    j.status = status_from_name(o.value("status").toString("pending"));
  } catch (const Error& e) {  // from another version, say: shown, never rendered unasked
    j.status = JobStatus::Failed;
    j.message = QString::fromStdString(e.what()) + "; re-queue it to render it";
  }
  j.output = o.value("output").toString();
  j.created = QDateTime::fromString(o.value("created").toString(), Qt::ISODate);
  for (const auto& a : o.value("sweep").toArray()) j.sweep.push_back(a.toString());
  const auto preset = QJsonDocument(o.value("preset").toObject()).toJson(QJsonDocument::Compact);
  j.preset =
      pipeline::Preset::from_json(parse_json(preset.toStdString(), source.toStdString()),
                                  source.toStdString() + " (job " + j.id.toStdString() + ")");
  j.preset.source = o.value("source").toString().toStdString();
  j.preset.base_dir = o.value("base_dir").toString().toStdString();
  return j;
}

Job Job::make(const pipeline::Preset& preset, const QStringList& sweep) {
  Job j;
  j.sweep = sweep;
  j.id = QUuid::createUuid().toString(QUuid::WithoutBraces);
  j.preset = preset;
  j.created = QDateTime::currentDateTime();
  return j;
}

pipeline::Preset load_preset_file(const std::string& file, const std::string& models_dir) {
  namespace fs = std::filesystem;
  // No models folder of its own: the studio's, as batch's --models-dir, for
  // the family defaults of a model named under it too.
  std::error_code ec;
  const std::string studio_models = models_dir.empty() ? "" : fs::absolute(models_dir, ec).string();
  pipeline::Preset p = pipeline::Preset::load(file, studio_models);
  // (A file in the current folder has an empty one, which fs::absolute refuses.)
  p.base_dir = p.base_dir.empty() ? fs::current_path(ec) : fs::absolute(p.base_dir, ec);
  if (p.models_dir.empty()) p.models_dir = studio_models;
  return p;
}

}  // namespace kinora::app
