#include "app/worker.h"

#include "base/json.h"
#include "pipeline/pipeline.h"
#include "render/render.h"
#include "render/sweep.h"

namespace kinora::app {

namespace {
QList<QImage> to_images(const torch::Tensor& frames) {
  QList<QImage> out;
  if (!frames.defined()) return out;
  const auto f = frames.to(torch::kUInt8).contiguous();
  for (int64_t i = 0; i < f.size(0); ++i) {
    const auto& fr = f[i];
    const int h = static_cast<int>(fr.size(0)), w = static_cast<int>(fr.size(1));
    out.push_back(QImage(fr.data_ptr<uint8_t>(), w, h, 3 * w, QImage::Format_RGB888).copy());
  }
  return out;
}
}  // namespace

GenerationWorker::GenerationWorker() = default;
GenerationWorker::~GenerationWorker() = default;

void GenerationWorker::render(const QString& id, const QString& preset_json,
                              const QStringList& sweep, const QString& from,
                              const QString& base_dir) {
  cancel_ = false;
  Q_EMIT started(id);
  // The preset file a job came from names it in its messages, as the CLI's do.
  const std::string source = from.isEmpty() ? "job " + id.toStdString() : from.toStdString();
  const auto named = [&](const std::string& what) {
    return QString::fromStdString(from.isEmpty() || what.rfind(source, 0) == 0
                                      ? what
                                      : std::string(source).append(": ").append(what));
  };
  try {
    if (!pipe_) pipe_ = std::make_unique<pipeline::Pipeline>();
    auto preset =
        pipeline::Preset::from_json(parse_json(preset_json.toStdString(), source), source);
    preset.base_dir = base_dir.toStdString();
    pipeline::RunCallbacks cb;
    cb.cancel = &cancel_;
    cb.want_preview = true;
    cb.on_message = [&](const std::string& m) { Q_EMIT message(id, QString::fromStdString(m)); };
    cb.on_progress = [&](const pipeline::Progress& p) {
      if (p.stage == "load")
        Q_EMIT stage(id, "Loading " + QString::fromStdString(p.what) + "…");
      else if (p.stage == "text")
        Q_EMIT stage(id, "Encoding the prompt…");
      else if (p.stage == "sample")
        Q_EMIT stage(id, QString("Sampling (%1 steps)…").arg(p.total));
      else if (p.stage == "decode")
        Q_EMIT stage(id, QString("Decoding: frame %1/%2").arg(p.done).arg(p.total));
    };
    if (sweep.isEmpty()) {
      cb.on_step = [&](const pipeline::StepEvent& e) {
        Q_EMIT progress(id, e.step, e.total, e.seconds_per_step, e.eta_seconds,
                        to_images(e.preview));
      };
      const auto r = kinora::render::render(*pipe_, preset, cb);
      Q_EMIT finished(id, QString::fromStdString(r.output.string()));
      return;
    }
    std::vector<kinora::render::SweepAxis> axes;
    for (const auto& a : sweep) axes.push_back(kinora::render::parse_sweep_axis(a.toStdString()));
    const auto plan = kinora::render::plan_sweep(preset, axes);
    // Progress over the whole sweep: cell i's step s of n is step i·n + s.
    std::size_t cell = 0;
    const auto cells = plan.cells.size();
    cb.on_step = [&](const pipeline::StepEvent& e) {
      const int done = static_cast<int>(cell) * e.total + e.step;
      const int total = static_cast<int>(cells) * e.total;
      Q_EMIT progress(id, done, total, e.seconds_per_step, e.seconds_per_step * (total - done),
                      to_images(e.preview));
    };
    kinora::render::SweepCallbacks scb;
    scb.run = cb;
    scb.on_cell = [&](std::size_t i, std::size_t n, const std::string& values) {
      cell = i;
      Q_EMIT stage(
          id,
          QString("Sweep cell %1/%2: %3").arg(i + 1).arg(n).arg(QString::fromStdString(values)));
    };
    const auto r = kinora::render::run_sweep(*pipe_, plan, scb);
    Q_EMIT finished(id, QString::fromStdString(r.sheet.string()));
  } catch (const Cancelled&) {
    Q_EMIT cancelled(id);
  } catch (const std::exception& e) {
    Q_EMIT failed(id, named(e.what()));
  } catch (...) {
    Q_EMIT failed(id, named("unknown error"));
  }
}

}  // namespace kinora::app
