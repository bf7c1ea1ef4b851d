#pragma once
// Procedural training clips for the embedded default model: a coloured shape
// moving across a plain background, with a caption from a small grammar,
//   "a COLOUR SHAPE moving DIRECTION on a COLOUR background".
// Deterministic from a seed on every platform (own integer-based sampling, no
// std:: distributions, whose results differ between standard libraries).
//
// The same module measures clips from their pixels (background, object colour,
// shape, direction), which the semantic test of generated videos uses.
#include <torch/torch.h>

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace kinora::embedded {

enum class Colour { Red, Green, Blue, Yellow, White, Black };
enum class Shape { Circle, Square, Triangle };
enum class Direction { Left, Right, Up, Down };

inline constexpr std::array<Colour, 6> kColours = {Colour::Red,    Colour::Green, Colour::Blue,
                                                   Colour::Yellow, Colour::White, Colour::Black};
inline constexpr std::array<Shape, 3> kShapes = {Shape::Circle, Shape::Square, Shape::Triangle};
inline constexpr std::array<Direction, 4> kDirections = {Direction::Left, Direction::Right,
                                                         Direction::Up, Direction::Down};

const char* name(Colour c);
const char* name(Shape s);
const char* name(Direction d);
std::array<uint8_t, 3> rgb(Colour c);

struct Scene {
  Colour object = Colour::Red;
  Colour background = Colour::Blue;  // never the object's colour
  Shape shape = Shape::Circle;
  Direction direction = Direction::Left;
  float size = 11;         // half-width of the shape, pixels
  float speed = 2;         // pixels per frame
  float x0 = 32, y0 = 32;  // centre in the first frame
  // "a big …": about twice the base grammar's size (half-width 18–21 px at
  // 64×64, slower so that its path stays in view). The base model never saw
  // one; the project's LoRA teaches the word (`kinora train lora`).
  bool big = false;
  std::string caption() const;
};

// The scene a caption of the grammar's form names (colours, shape and
// direction, "big" too; size, speed and place at their defaults); nullopt for
// any other text, or one whose object and background are the same colour.
std::optional<Scene> parse_caption(const std::string& caption);

// Where a scene's path lies. Anywhere: any path that stays in view. Centred:
// the path centred on the frame (the object crosses the middle), a few pixels of
// jitter on each axis, so the layout follows from the caption's direction. (The
// Wan DiT's only sense of place is RoPE's relative one, so from pure noise it
// cannot draw an absolute layout; the shipped model trained on Anywhere.)
enum class Placement { Anywhere, Centred };
const char* name(Placement p);

struct ClipSpec {
  int width = 64, height = 64, frames = 17;
  Placement placement = Placement::Anywhere;
};

// A random scene (any colours, shape, direction; positions as spec.placement
// says, always in view); `big`: a big one (the same draws, its size and speed
// from their big ranges).
Scene random_scene(uint64_t seed, const ClipSpec& spec = {}, bool big = false);
// [F, H, W, 3] uint8, anti-aliased (4×4 supersampling).
torch::Tensor render(const Scene& scene, const ClipSpec& spec = {});

// Combinations kept out of training, to see whether the model composes.
bool held_out(const Scene& s);

// What the pixels of a clip show.
struct Measured {
  Colour background = Colour::Black;
  Colour object = Colour::Black;
  Shape shape = Shape::Circle;
  Direction direction = Direction::Left;
  bool object_found = false;
  double fill_ratio = 0;  // object pixels / bounding box, averaged over frames
  double dx = 0, dy = 0;  // centroid motion, first → last frame, pixels
  // Objects drawn: regions at least a quarter the size of the largest (and 8
  // pixels), the median over the frames. A clip's object drawn twice reads 2;
  // the other measures are of the largest region.
  int objects = 0;
  // The object's bounding box, its larger side, averaged over the frames where
  // it is whole (pixels): 13–25 for the base grammar's sizes, 29 and more for a
  // big one.
  double extent = 0;
};
// frames [F, H, W, 3] uint8.
Measured measure(const torch::Tensor& frames);

// Whether a measured clip shows a big object: one object, its extent at least
// 28 pixels per 64 of the frame's smaller side.
bool shows_big(const Measured& m, int frame_side = 64);

}  // namespace kinora::embedded
