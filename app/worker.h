#pragma once
// The render worker: a QObject moved to its own QThread that runs the core
// pipeline. Signals carry progress, the live latent preview and the outcome;
// cancel() (any thread) stops the render within one step, leaving no file.
// Models stay loaded between jobs. Errors never escape: they become failed().
#include <QImage>
#include <QList>
#include <QObject>
#include <QString>
#include <QStringList>

#include <atomic>
#include <memory>

namespace kinora::pipeline {
class Pipeline;
}

namespace kinora::app {

class GenerationWorker : public QObject {
  Q_OBJECT
 public:
  GenerationWorker();
  ~GenerationWorker() override;
  void cancel() { cancel_ = true; }

 public Q_SLOTS:
  // `preset_json`: a preset as the CLI reads it; `output` set. With `sweep`
  // axes (render/sweep.h), every cell and the contact sheet (finished() gives
  // the sheet; progress counts the steps of every cell). `source`: the preset
  // file the job came from, which its messages name ("" names the job);
  // `base_dir`: that file's folder, where its relative paths resolve.
  void render(const QString& id, const QString& preset_json, const QStringList& sweep = {},
              const QString& source = {}, const QString& base_dir = {});

 Q_SIGNALS:
  void started(const QString& id);
  void progress(const QString& id, int step, int total, double seconds_per_step, double eta,
                const QList<QImage>& preview);
  void message(const QString& id, const QString& text);
  // A stage that is not a step: "Loading wan2.1_t2v_1.3B (Wan DiT)…",
  // "Decoding: frame 5/17".
  void stage(const QString& id, const QString& text);
  void finished(const QString& id, const QString& output);
  void failed(const QString& id, const QString& error);
  void cancelled(const QString& id);

 private:
  std::unique_ptr<pipeline::Pipeline> pipe_;
  std::atomic<bool> cancel_{false};
};

}  // namespace kinora::app
