#include "embedded/clips.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <sstream>

namespace kinora::embedded {

const char* name(Colour c) {
  switch (c) {
    case Colour::Red:
      return "red";
    case Colour::Green:
      return "green";
    case Colour::Blue:
      return "blue";
    case Colour::Yellow:
      return "yellow";
    case Colour::White:
      return "white";
    case Colour::Black:
      return "black";
  }
  return "?";
}
const char* name(Shape s) {
  switch (s) {
    case Shape::Circle:
      return "circle";
    case Shape::Square:
      return "square";
    case Shape::Triangle:
      return "triangle";
  }
  return "?";
}
const char* name(Direction d) {
  switch (d) {
    case Direction::Left:
      return "left";
    case Direction::Right:
      return "right";
    case Direction::Up:
      return "up";
    case Direction::Down:
      return "down";
  }
  return "?";
}
const char* name(Placement p) {
  return p == Placement::Centred ? "centred" : "anywhere";
}

std::array<uint8_t, 3> rgb(Colour c) {
  switch (c) {
    case Colour::Red:
      return {220, 30, 30};
    case Colour::Green:
      return {30, 190, 50};
    case Colour::Blue:
      return {35, 60, 220};
    case Colour::Yellow:
      return {240, 220, 40};
    case Colour::White:
      return {245, 245, 245};
    case Colour::Black:
      return {15, 15, 15};
  }
  return {0, 0, 0};
}

std::string Scene::caption() const {
  return std::string("a ") + (big ? "big " : "") + name(object) + " " + name(shape) + " moving " +
         name(direction) + " on a " + name(background) + " background";
}

std::optional<Scene> parse_caption(const std::string& caption) {
  std::istringstream in(caption);
  std::vector<std::string> w;
  for (std::string word; in >> word;) w.push_back(word);
  // a COLOUR SHAPE moving DIRECTION on a COLOUR background
  const bool big = w.size() == 10 && w[1] == "big";
  if (big) w.erase(w.begin() + 1);
  if (w.size() != 9 || w[0] != "a" || w[3] != "moving" || w[5] != "on" || w[6] != "a" ||
      w[8] != "background")
    return std::nullopt;
  auto find = [](const auto& values, const std::string& word) {
    std::optional<std::decay_t<decltype(values[0])>> out;
    for (auto v : values)
      if (word == name(v)) out = v;
    return out;
  };
  const auto object = find(kColours, w[1]), background = find(kColours, w[7]);
  const auto shape = find(kShapes, w[2]);
  const auto direction = find(kDirections, w[4]);
  if (!object || !background || !shape || !direction || *object == *background) return std::nullopt;
  Scene s;
  s.object = *object, s.background = *background, s.shape = *shape, s.direction = *direction;
  s.big = big;
  return s;
}

namespace {
// SplitMix64: tiny, fully specified, the same everywhere.
struct Rng {
  uint64_t s;
  uint64_t next() {
    uint64_t z = (s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  }
  int below(int n) { return static_cast<int>(next() % static_cast<uint64_t>(n)); }
  float uniform(float lo, float hi) {
    return lo + (hi - lo) * static_cast<float>(next() >> 40) / 16777216.0f;
  }
};

// Inside test for a shape of half-width r centred at the origin.
bool inside(Shape s, float x, float y, float r) {
  switch (s) {
    case Shape::Circle:
      return x * x + y * y <= r * r;
    case Shape::Square:
      return std::abs(x) <= 0.82f * r && std::abs(y) <= 0.82f * r;
    case Shape::Triangle: {
      // Pointing up: apex (0, −r), base from (−r, 0.75r) to (r, 0.75r).
      if (y > 0.75f * r || y < -r) return false;
      const float half = r * (y + r) / (1.75f * r);  // half-width grows linearly from the apex
      return std::abs(x) <= half;
    }
  }
  return false;
}
}  // namespace

Scene random_scene(uint64_t seed, const ClipSpec& spec, bool big) {
  Rng rng{seed * 0x2545F4914F6CDD1Dull + 1};
  Scene s;
  s.object = kColours[static_cast<std::size_t>(rng.below(6))];
  do {
    s.background = kColours[static_cast<std::size_t>(rng.below(6))];
  } while (s.background == s.object);
  s.shape = kShapes[static_cast<std::size_t>(rng.below(3))];
  s.direction = kDirections[static_cast<std::size_t>(rng.below(4))];
  const float scale = static_cast<float>(std::min(spec.width, spec.height)) / 64.0f;
  s.big = big;
  s.size = (big ? rng.uniform(18.0f, 21.0f) : rng.uniform(8.0f, 12.0f)) * scale;
  const float travel = (big ? rng.uniform(1.0f, 1.3f) : rng.uniform(1.4f, 2.0f)) * scale *
                       static_cast<float>(spec.frames - 1);
  s.speed = travel / static_cast<float>(std::max(1, spec.frames - 1));
  const float margin = s.size + 1;
  const float w = static_cast<float>(spec.width), h = static_cast<float>(spec.height);
  // Along the motion: start so that the whole path stays inside; across it: anywhere inside.
  // Centred: the path's midpoint at the frame's centre, within ±3 px (at 64×64).
  const bool centred = spec.placement == Placement::Centred;
  const float jitter = 3 * scale;
  auto along = [&](float extent, bool forward) {
    const float lo = margin, hi = std::max(margin, extent - margin - travel);
    const float start =
        centred ? std::clamp((extent - travel) / 2 + rng.uniform(-jitter, jitter), lo, hi)
                : rng.uniform(lo, hi);
    return forward ? start : extent - start;
  };
  auto across = [&](float extent) {
    return centred ? extent / 2 + rng.uniform(-jitter, jitter)
                   : rng.uniform(margin, extent - margin);
  };
  switch (s.direction) {
    case Direction::Right:
      s.x0 = along(w, true), s.y0 = across(h);
      break;
    case Direction::Left:
      s.x0 = along(w, false), s.y0 = across(h);
      break;
    case Direction::Down:
      s.y0 = along(h, true), s.x0 = across(w);
      break;
    case Direction::Up:
      s.y0 = along(h, false), s.x0 = across(w);
      break;
  }
  return s;
}

torch::Tensor render(const Scene& s, const ClipSpec& spec) {
  auto out = torch::empty({spec.frames, spec.height, spec.width, 3}, torch::kUInt8);
  auto px = out.accessor<uint8_t, 4>();
  const auto fg = rgb(s.object), bg = rgb(s.background);
  float vx = 0, vy = 0;
  switch (s.direction) {
    case Direction::Left:
      vx = -s.speed;
      break;
    case Direction::Right:
      vx = s.speed;
      break;
    case Direction::Up:
      vy = -s.speed;
      break;
    case Direction::Down:
      vy = s.speed;
      break;
  }
  for (int f = 0; f < spec.frames; ++f) {
    const float cx = s.x0 + vx * static_cast<float>(f), cy = s.y0 + vy * static_cast<float>(f);
    for (int y = 0; y < spec.height; ++y) {
      for (int x = 0; x < spec.width; ++x) {
        int hits = 0;
        if (std::abs(static_cast<float>(x) + 0.5f - cx) <= s.size + 1 &&
            std::abs(static_cast<float>(y) + 0.5f - cy) <= s.size + 1) {
          for (int sy = 0; sy < 4; ++sy)
            for (int sx = 0; sx < 4; ++sx)
              hits +=
                  inside(s.shape, static_cast<float>(x) + (static_cast<float>(sx) + 0.5f) / 4 - cx,
                         static_cast<float>(y) + (static_cast<float>(sy) + 0.5f) / 4 - cy, s.size);
        }
        const float a = static_cast<float>(hits) / 16.0f;
        for (int c = 0; c < 3; ++c)
          px[f][y][x][c] = static_cast<uint8_t>(std::lround(
              a * fg[static_cast<std::size_t>(c)] + (1 - a) * bg[static_cast<std::size_t>(c)]));
      }
    }
  }
  return out;
}

bool held_out(const Scene& s) {
  return (s.object == Colour::Green && s.shape == Shape::Triangle &&
          s.direction == Direction::Up) ||
         (s.object == Colour::Yellow && s.shape == Shape::Circle &&
          s.background == Colour::Black) ||
         (s.object == Colour::White && s.shape == Shape::Square && s.direction == Direction::Left);
}

namespace {
Colour nearest(const float c[3]) {
  Colour best = Colour::Black;
  float best_d = std::numeric_limits<float>::max();
  for (auto k : kColours) {
    const auto v = rgb(k);
    float d = 0;
    for (int i = 0; i < 3; ++i)
      d += (c[i] - v[static_cast<std::size_t>(i)]) * (c[i] - v[static_cast<std::size_t>(i)]);
    if (d < best_d) best_d = d, best = k;
  }
  return best;
}
// The largest 8-connected region of each frame's mask: the object without
// specks (a decoder's brighter corners, a stray dot), which would otherwise
// make every frame look cut by the border or pull the centroid. `counts` gets
// each frame's number of regions of at least max(8, largest / 4) pixels.
torch::Tensor largest_regions(const torch::Tensor& mask,
                              std::vector<int>& counts) {  // [F, H, W] bool
  const auto in = mask.to(torch::kUInt8).contiguous();
  auto out = torch::zeros_like(in);
  const int64_t F = in.size(0), H = in.size(1), W = in.size(2);
  const auto a = in.accessor<uint8_t, 3>();
  auto o = out.accessor<uint8_t, 3>();
  std::vector<int64_t> label(static_cast<std::size_t>(H * W)), todo, sizes;
  counts.assign(static_cast<std::size_t>(F), 0);
  for (int64_t f = 0; f < F; ++f) {
    std::fill(label.begin(), label.end(), -1);
    sizes.clear();
    int64_t best = -1, best_size = 0;
    for (int64_t start = 0; start < H * W; ++start) {
      if (!a[f][start / W][start % W] || label[static_cast<std::size_t>(start)] >= 0) continue;
      int64_t size = 0;
      todo.assign(1, start);
      label[static_cast<std::size_t>(start)] = start;
      while (!todo.empty()) {
        const int64_t at = todo.back();
        todo.pop_back();
        ++size;
        const int64_t y = at / W, x = at % W;
        for (int64_t dy = -1; dy <= 1; ++dy)
          for (int64_t dx = -1; dx <= 1; ++dx) {
            const int64_t ny = y + dy, nx = x + dx, n = ny * W + nx;
            if (ny < 0 || ny >= H || nx < 0 || nx >= W || !a[f][ny][nx] ||
                label[static_cast<std::size_t>(n)] >= 0)
              continue;
            label[static_cast<std::size_t>(n)] = start;
            todo.push_back(n);
          }
      }
      sizes.push_back(size);
      if (size > best_size) best_size = size, best = start;
    }
    const int64_t big = std::max<int64_t>(8, best_size / 4);
    counts[static_cast<std::size_t>(f)] = static_cast<int>(
        std::count_if(sizes.begin(), sizes.end(), [&](int64_t n) { return n >= big; }));
    for (int64_t i = 0; i < H * W; ++i)
      o[f][i / W][i % W] = best >= 0 && label[static_cast<std::size_t>(i)] == best;
  }
  return out.to(torch::kBool);
}
}  // namespace

bool shows_big(const Measured& m, int frame_side) {
  return m.object_found && m.objects == 1 && m.extent >= 28.0 * frame_side / 64;
}

Measured measure(const torch::Tensor& frames) {
  Measured m;
  const auto f = frames.to(torch::kFloat32);  // [F, H, W, 3]
  const int64_t F = f.size(0), H = f.size(1), W = f.size(2);
  // Background: the median colour of the border pixels over all frames.
  const auto border =
      torch::cat({f.select(1, 0).reshape({-1, 3}), f.select(1, H - 1).reshape({-1, 3}),
                  f.select(2, 0).reshape({-1, 3}), f.select(2, W - 1).reshape({-1, 3})});
  const auto bg = std::get<0>(border.median(0));
  float bgc[3] = {bg[0].item<float>(), bg[1].item<float>(), bg[2].item<float>()};
  m.background = nearest(bgc);
  // Object: pixels far from the background colour.
  const auto dist = (f - bg.view({1, 1, 1, 3})).pow(2).sum(-1).sqrt();  // [F, H, W]
  const auto far = dist > 80;
  if (far.sum().item<int64_t>() < F * 4) return m;  // nothing stands out
  std::vector<int> counts;
  const auto mask = largest_regions(far, counts);
  m.object_found = true;
  const auto obj = f.index({mask});  // [N, 3]
  const auto oc = std::get<0>(obj.median(0));
  float occ[3] = {oc[0].item<float>(), oc[1].item<float>(), oc[2].item<float>()};
  m.object = nearest(occ);
  // Shape from the fill ratio of the bounding box, and motion from centroids.
  const auto ys = torch::arange(H, torch::kFloat32).view({H, 1}).expand({H, W});
  const auto xs = torch::arange(W, torch::kFloat32).view({1, W}).expand({H, W});
  double fill = 0;
  int fill_n = 0;
  std::vector<std::pair<double, double>> centroids;
  std::vector<int> seen;  // region counts of the frames where the object is
  for (int64_t i = 0; i < F; ++i) {
    const auto mk = mask[i];
    const auto n = mk.sum().item<double>();
    if (n < 4) continue;
    seen.push_back(counts[static_cast<std::size_t>(i)]);
    const auto mx = xs.index({mk}), my = ys.index({mk});
    centroids.emplace_back(mx.mean().item<double>(), my.mean().item<double>());
    const double bw = mx.max().item<double>() - mx.min().item<double>() + 1;
    const double bh = my.max().item<double>() - my.min().item<double>() + 1;
    // Only frames where the object is whole (not cut by the border).
    if (mx.min().item<double>() > 0 && my.min().item<double>() > 0 &&
        mx.max().item<double>() < W - 1 && my.max().item<double>() < H - 1) {
      fill += n / (bw * bh);
      m.extent += std::max(bw, bh);
      ++fill_n;
    }
  }
  if (centroids.size() < 2) {
    m.object_found = false, m.extent = 0;
    return m;
  }
  std::nth_element(seen.begin(), seen.begin() + seen.size() / 2, seen.end());
  m.objects = seen[seen.size() / 2];
  m.fill_ratio = fill_n ? fill / fill_n : 0;
  m.extent = fill_n ? m.extent / fill_n : 0;
  // Circle ≈ π/4 = 0.785, square ≈ 1, triangle ≈ 0.5.
  m.shape = m.fill_ratio > 0.9    ? Shape::Square
            : m.fill_ratio > 0.65 ? Shape::Circle
                                  : Shape::Triangle;
  m.dx = centroids.back().first - centroids.front().first;
  m.dy = centroids.back().second - centroids.front().second;
  if (std::abs(m.dx) >= std::abs(m.dy))
    m.direction = m.dx < 0 ? Direction::Left : Direction::Right;
  else
    m.direction = m.dy < 0 ? Direction::Up : Direction::Down;
  return m;
}

}  // namespace kinora::embedded
