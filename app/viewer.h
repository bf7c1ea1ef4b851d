#pragma once
// The centre of the window: plays the live latent preview while a job samples,
// then the finished video (Qt Multimedia: QMediaPlayer into a QVideoSink) with
// play/pause, loop, frame step and scrubbing; images at 1:1 or fitted.
#include <QImage>
#include <QList>
#include <QWidget>

class QCheckBox;
class QLabel;
class QMediaPlayer;
class QSlider;
class QTimer;
class QToolButton;
class QVideoSink;

namespace kinora::app {

// Paints one image, fitted to the widget (smooth) or at 1:1 (centred).
class FrameView : public QWidget {
  Q_OBJECT
 public:
  explicit FrameView(QWidget* parent = nullptr);
  void set_image(const QImage& image);
  void set_fit(bool fit);
  // Shown in the middle while there is no image.
  void set_hint(const QString& hint);
  const QString& hint() const { return hint_; }
  bool fit() const { return fit_; }
  const QImage& image() const { return image_; }
  QSize sizeHint() const override { return {512, 384}; }

 protected:
  void paintEvent(QPaintEvent*) override;

 private:
  QImage image_;
  QString hint_;
  bool fit_ = true;
};

class Viewer : public QWidget {
  Q_OBJECT
 public:
  explicit Viewer(QWidget* parent = nullptr);

  // Live preview frames of the job sampling now (animated in a loop).
  void show_preview(const QList<QImage>& frames, const QString& caption);
  // A finished output: a video plays, an image shows.
  void open(const QString& path, int fps = 16);
  void clear(const QString& caption = {});
  // What the empty viewer says (how to make a first render); shown until a
  // job starts or a file opens.
  void set_hint(const QString& hint);
  QString shown_hint() const;

  int video_frames_shown() const { return video_frames_; }
  // Whether the open file is a still image (shown at once, nothing to play).
  bool showing_image() const { return image_open_; }
  bool playing() const;
  // How many times the open video started again from its first frame (Loop).
  int loops() const { return loops_; }
  const QString& current() const { return path_; }

 public Q_SLOTS:
  void play_pause();
  void step_frame(int delta);

 private:
  void set_video_controls(bool enabled);
  FrameView* view_;
  QLabel* caption_;
  QToolButton *play_, *prev_, *next_, *fit_;
  QCheckBox* loop_;
  QSlider* slider_;
  QLabel* time_;
  QMediaPlayer* player_;
  QVideoSink* sink_;
  QTimer* preview_timer_;
  QList<QImage> preview_;
  int preview_index_ = 0;
  int fps_ = 16;
  int video_frames_ = 0;
  int loops_ = 0;
  bool image_open_ = false;
  QString path_;
  QString hint_;
};

}  // namespace kinora::app
