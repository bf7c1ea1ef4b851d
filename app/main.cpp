// kinora-studio: the desktop app.
#include <QApplication>
#include <QCommandLineParser>
#include <QMessageBox>
#include <QTimer>

#include <iostream>

#include "app/main_window.h"
#include "base/runtime.h"
#include "base/signals.h"
#include "pipeline/preset.h"

int main(int argc, char** argv) {
  // First, while this is the only thread: it may reselect the BLAS kernels
  // through the environment (base/cpu_blas.h), and Qt starts threads.
  kinora::configure_threads();
  // Qt Multimedia's FFmpeg backend plays what Kinora writes without extra
  // GStreamer plugins.
  if (qEnvironmentVariableIsEmpty("QT_MEDIA_BACKEND")) qputenv("QT_MEDIA_BACKEND", "ffmpeg");
  // --help and --version need no window: without a display they would
  // otherwise end in Qt's "could not connect to display" abort.
  for (int i = 1; i < argc; ++i) {
    const QByteArray a(argv[i]);
    if ((a == "--help" || a == "-h" || a == "--version" || a == "-v") &&
        qEnvironmentVariableIsEmpty("QT_QPA_PLATFORM"))
      qputenv("QT_QPA_PLATFORM", "offscreen");
  }
  QApplication app(argc, argv);
  QApplication::setOrganizationName("Kinora");
  QApplication::setApplicationName("Kinora Studio");
  // version_string() starts with "Kinora"; the name is said once.
  QApplication::setApplicationVersion(
      QString::fromStdString(kinora::version_string()).mid(QString("Kinora ").size()));
  QApplication::setDesktopFileName("kinora-studio");

  QCommandLineParser cli;
  cli.setApplicationDescription("Kinora Studio: video generation with open diffusion models");
  cli.addHelpOption();
  cli.addVersionOption();
  QCommandLineOption data(QString("data-dir"), "Keep the queue and settings in DIR.", "DIR");
  QCommandLineOption models(QString("models-dir"), "A ComfyUI models folder.", "DIR");
  QCommandLineOption output(QString("output-dir"), "Where renders are written.", "DIR");
  QCommandLineOption preset(QString("queue-preset"), "Queue a preset file at start (repeatable).",
                            "FILE");
  QCommandLineOption prompt(QString("prompt"), "Queue this prompt at start.", "TEXT");
  QCommandLineOption seed(QString("seed"), "Seed of the --prompt job.", "N");
  QCommandLineOption shots(QString("screenshots"),
                           "Save window screenshots while sampling and while playing.", "DIR");
  QCommandLineOption quit(QString("quit-when-idle"),
                          "Quit when the queue is done (exit 1 on a failure).");
  QCommandLineOption exit_after(QString("exit-after-ms"), "Close the window after N ms.", "N");
  for (const auto* o :
       {&data, &models, &output, &preset, &prompt, &seed, &shots, &quit, &exit_after})
    cli.addOption(*o);
  cli.process(app);

  kinora::app::StudioOptions o;
  o.data_dir = cli.value(data);
  o.models_dir = cli.value(models);
  o.output_dir = cli.value(output);
  o.presets = cli.values(preset);
  o.prompt = cli.value(prompt);
  o.screenshots = cli.value(shots);
  o.quit_when_idle = cli.isSet(quit);
  try {  // the CLI's rule for a seed
    o.seed = cli.isSet(seed) ? kinora::pipeline::parse_seed(cli.value(seed).toStdString(), "--seed")
                             : kinora::pipeline::kRandomSeed;
  } catch (const std::exception& e) {
    std::cerr << "kinora-studio: " << e.what() << std::endl;
    return 2;
  }
  if (cli.isSet(exit_after)) {
    bool ok = false;
    o.exit_after_ms = cli.value(exit_after).toInt(&ok);
    if (!ok || o.exit_after_ms < 0) {  // 0: no timer
      std::cerr << "kinora-studio: --exit-after-ms must be a whole number of milliseconds, "
                   "got "
                << cli.value(exit_after).toStdString() << std::endl;
      return 2;
    }
  }
  // Refused before the window opens: said on stderr for a script, in a
  // dialog for whoever started it from a desktop; exit status 1 either way.
  const bool scripted = o.quit_when_idle || o.exit_after_ms > 0 || !o.presets.isEmpty();
  const auto cannot_start = [&](const QString& why) {
    std::cerr << "kinora-studio: " << why.toStdString() << std::endl;
    if (!scripted) QMessageBox::critical(nullptr, "Kinora Studio", why);
    return 1;
  };
  if (const auto why = kinora::app::prepare_options(o); !why.isEmpty()) return cannot_start(why);
  // Held until the studio exits: a second studio on this data folder does
  // not touch the queue.
  QString why;
  const auto lock = kinora::app::lock_data_folder(kinora::app::studio_data_folder(o), &why);
  if (!lock) return cannot_start(why);
  // Ctrl-C, SIGTERM (a desktop logout, `kill`, a scheduler) and SIGHUP stop
  // the studio as closing its window does: the running job unwinds and is
  // kept as interrupted. Their handler only sets a flag, read below; a second
  // signal ends the process at once (base/signals.h). Installed before the
  // window is made, which saves the queue: SIGXFSZ is ignored with them, so
  // that a write past `ulimit -f` fails like one on a full disk and is said,
  // instead of killing the studio with its lock left behind.
  kinora::install_cancel_signals();
  kinora::app::MainWindow w(o);
  w.show();
  QTimer stop_watch;
  QObject::connect(&stop_watch, &QTimer::timeout, &w, [&] {
    if (!kinora::cancel_requested()) return;
    stop_watch.stop();
    w.stop_on_signal(kinora::cancel_signal());
  });
  stop_watch.start(100);
  int status = app.exec();
  // --quit-when-idle ends the event loop with the window open: closed here,
  // which saves the settings.
  if (w.isVisible()) w.close();
  if (status == 0 && !w.settings_saved()) status = 1;  // said on stderr
  // The window's destructor waits for the worker to unwind (its claim and
  // temporaries removed) before the process ends.
  return status;
}
