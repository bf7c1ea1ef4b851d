#include "app/viewer.h"

#include <QCheckBox>
#include <QFileInfo>
#include <QHBoxLayout>
#include <QLabel>
#include <QMediaPlayer>
#include <QPainter>
#include <QSlider>
#include <QTimer>
#include <QToolButton>
#include <QUrl>
#include <QVBoxLayout>
#include <QVideoFrame>
#include <QVideoSink>

namespace kinora::app {

FrameView::FrameView(QWidget* parent) : QWidget(parent) {
  setMinimumSize(160, 120);
  setSizePolicy(QSizePolicy::Expanding, QSizePolicy::Expanding);
}

void FrameView::set_image(const QImage& image) {
  image_ = image;
  update();
}

void FrameView::set_fit(bool fit) {
  fit_ = fit;
  update();
}

void FrameView::set_hint(const QString& hint) {
  hint_ = hint;
  update();
}

void FrameView::paintEvent(QPaintEvent*) {
  QPainter p(this);
  p.fillRect(rect(), QColor(32, 32, 36));
  if (image_.isNull()) {
    p.setPen(QColor(170, 170, 176));
    p.drawText(rect().adjusted(16, 16, -16, -16), Qt::AlignCenter | Qt::TextWordWrap, hint_);
    return;
  }
  QSize size = image_.size();
  if (fit_) size.scale(this->size(), Qt::KeepAspectRatio);
  const QRect target(QPoint((width() - size.width()) / 2, (height() - size.height()) / 2), size);
  // Small images (previews, 64×64 clips) stay crisp: nearest-neighbour when enlarging.
  p.setRenderHint(QPainter::SmoothPixmapTransform, size.width() < image_.width());
  p.drawImage(target, image_);
}

Viewer::Viewer(QWidget* parent) : QWidget(parent) {
  view_ = new FrameView(this);
  caption_ = new QLabel(this);
  caption_->setWordWrap(true);
  play_ = new QToolButton(this);
  play_->setText("Play");
  play_->setToolTip("Play / pause (Space)");
  prev_ = new QToolButton(this);
  prev_->setText("◀|");
  prev_->setToolTip("Previous frame (,)");
  next_ = new QToolButton(this);
  next_->setText("|▶");
  next_->setToolTip("Next frame (.)");
  loop_ = new QCheckBox("Loop", this);
  loop_->setChecked(true);
  fit_ = new QToolButton(this);
  fit_->setText("Fit");
  fit_->setCheckable(true);
  fit_->setChecked(true);
  fit_->setToolTip("Fit to the window, or show at 1:1");
  slider_ = new QSlider(Qt::Horizontal, this);
  time_ = new QLabel("0.00 s", this);
  auto* controls = new QHBoxLayout;
  for (QWidget* w :
       {static_cast<QWidget*>(play_), static_cast<QWidget*>(prev_), static_cast<QWidget*>(next_),
        static_cast<QWidget*>(slider_), static_cast<QWidget*>(time_), static_cast<QWidget*>(loop_),
        static_cast<QWidget*>(fit_)})
    controls->addWidget(w);
  auto* layout = new QVBoxLayout(this);
  layout->addWidget(view_, 1);
  layout->addWidget(caption_);
  layout->addLayout(controls);

  player_ = new QMediaPlayer(this);
  sink_ = new QVideoSink(this);
  player_->setVideoOutput(sink_);
  // Looping is the viewer's own: at the end of the file it starts again from
  // the first frame while Loop is ticked (QMediaPlayer::setLoops is not
  // honoured by every backend: Qt 6.4's FFmpeg one plays once).
  connect(player_, &QMediaPlayer::mediaStatusChanged, this, [this](QMediaPlayer::MediaStatus s) {
    if (s != QMediaPlayer::EndOfMedia || !loop_->isChecked() || image_open_) return;
    ++loops_;
    player_->setPosition(0);
    player_->play();
  });
  connect(sink_, &QVideoSink::videoFrameChanged, this, [this](const QVideoFrame& f) {
    if (!f.isValid()) return;
    ++video_frames_;
    view_->set_image(f.toImage());
  });
  connect(player_, &QMediaPlayer::durationChanged, this,
          [this](qint64 d) { slider_->setRange(0, static_cast<int>(d)); });
  connect(player_, &QMediaPlayer::positionChanged, this, [this](qint64 p) {
    if (!slider_->isSliderDown()) slider_->setValue(static_cast<int>(p));
    time_->setText(QString("%1 s").arg(p / 1000.0, 0, 'f', 2));
  });
  connect(player_, &QMediaPlayer::playbackStateChanged, this,
          [this](auto s) { play_->setText(s == QMediaPlayer::PlayingState ? "Pause" : "Play"); });
  connect(player_, &QMediaPlayer::errorOccurred, this, [this](auto, const QString& e) {
    caption_->setText(QFileInfo(path_).fileName() + ": the player failed: " + e);
  });
  connect(slider_, &QSlider::sliderMoved, player_, [this](int v) { player_->setPosition(v); });
  connect(play_, &QToolButton::clicked, this, &Viewer::play_pause);
  connect(prev_, &QToolButton::clicked, this, [this] { step_frame(-1); });
  connect(next_, &QToolButton::clicked, this, [this] { step_frame(1); });
  connect(fit_, &QToolButton::toggled, this, [this](bool on) {
    view_->set_fit(on);
    fit_->setText(on ? "Fit" : "1:1");
  });

  preview_timer_ = new QTimer(this);
  preview_timer_->setInterval(125);
  connect(preview_timer_, &QTimer::timeout, this, [this] {
    if (preview_.isEmpty()) return;
    preview_index_ = (preview_index_ + 1) % preview_.size();
    view_->set_image(preview_[preview_index_]);
  });
  set_video_controls(false);
}

void Viewer::set_video_controls(bool enabled) {
  for (QWidget* w :
       {static_cast<QWidget*>(play_), static_cast<QWidget*>(prev_), static_cast<QWidget*>(next_),
        static_cast<QWidget*>(slider_), static_cast<QWidget*>(loop_)})
    w->setEnabled(enabled);
}

void Viewer::show_preview(const QList<QImage>& frames, const QString& caption) {
  if (player_->playbackState() != QMediaPlayer::StoppedState) player_->stop();
  set_video_controls(false);
  preview_ = frames;
  preview_index_ = std::min<int>(preview_index_, static_cast<int>(frames.size()) - 1);
  if (!frames.isEmpty()) view_->set_image(frames[std::max(0, preview_index_)]);
  if (!preview_timer_->isActive()) preview_timer_->start();
  caption_->setText(caption);
}

void Viewer::open(const QString& path, int fps) {
  preview_timer_->stop();
  preview_.clear();
  path_ = path;
  fps_ = fps > 0 ? fps : 16;
  const auto ext = QFileInfo(path).suffix().toLower();
  caption_->setText(path);
  image_open_ = ext == "png" || ext == "jpg" || ext == "jpeg" || ext == "webp";
  if (image_open_) {
    player_->stop();
    set_video_controls(false);
    view_->set_image(QImage(path));
    return;
  }
  set_video_controls(true);
  video_frames_ = 0;
  loops_ = 0;
  player_->setSource(QUrl::fromLocalFile(path));
  player_->play();
}

void Viewer::clear(const QString& caption) {
  preview_timer_->stop();
  preview_.clear();
  player_->stop();
  view_->set_image({});
  view_->set_hint({});
  caption_->setText(caption);
}

void Viewer::set_hint(const QString& hint) {
  hint_ = hint;
  if (view_->image().isNull() && path_.isEmpty()) view_->set_hint(hint);
}

QString Viewer::shown_hint() const {
  return view_->image().isNull() ? view_->hint() : QString();
}

bool Viewer::playing() const {
  return player_->playbackState() == QMediaPlayer::PlayingState;
}

void Viewer::play_pause() {
  if (playing())
    player_->pause();
  else if (!player_->source().isEmpty())
    player_->play();
}

void Viewer::step_frame(int delta) {
  player_->pause();
  const qint64 frame_ms = 1000 / fps_;
  player_->setPosition(std::clamp<qint64>(player_->position() + delta * frame_ms, 0,
                                          std::max<qint64>(0, player_->duration() - 1)));
}

}  // namespace kinora::app
