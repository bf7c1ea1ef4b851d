#include "embedded/semantic.h"

#include <cstdio>
#include <set>

namespace kinora::embedded {

std::vector<Scene> semantic_prompts(std::size_t at_least, uint64_t first_seed) {
  std::vector<Scene> out;
  std::set<int> obj, bg, shape, dir;
  for (uint64_t seed = first_seed; out.size() < at_least || obj.size() < 6 || bg.size() < 6 ||
                                   shape.size() < 3 || dir.size() < 4;
       ++seed) {
    const auto s = random_scene(seed);
    if (held_out(s)) continue;
    out.push_back(s);
    obj.insert(static_cast<int>(s.object)), bg.insert(static_cast<int>(s.background));
    shape.insert(static_cast<int>(s.shape)), dir.insert(static_cast<int>(s.direction));
  }
  return out;
}

std::vector<Scene> held_out_prompts() {
  auto scene = [](Colour o, Colour b, Shape s, Direction d) {
    Scene sc;
    sc.object = o, sc.background = b, sc.shape = s, sc.direction = d;
    return sc;
  };
  return {scene(Colour::Green, Colour::Blue, Shape::Triangle, Direction::Up),
          scene(Colour::Green, Colour::White, Shape::Triangle, Direction::Up),
          scene(Colour::Yellow, Colour::Black, Shape::Circle, Direction::Right),
          scene(Colour::Yellow, Colour::Black, Shape::Circle, Direction::Down),
          scene(Colour::White, Colour::Red, Shape::Square, Direction::Left),
          scene(Colour::White, Colour::Black, Shape::Square, Direction::Left)};
}

std::vector<Scene> big_prompts(std::size_t count, uint64_t first_seed) {
  std::vector<Scene> out;
  for (uint64_t seed = first_seed; out.size() < count; ++seed) {
    const auto s = random_scene(seed, {}, /*big=*/true);
    if (!held_out(s)) out.push_back(s);
  }
  return out;
}

void SemanticScore::add(const Scene& s, const Measured& m) {
  ++n;
  const bool b = m.background == s.background, o = m.object_found && m.object == s.object,
             sh = m.object_found && m.shape == s.shape && m.objects == 1,
             d = m.object_found && m.direction == s.direction;
  background += b, object += o, shape += sh, direction += d, all += b && o && sh && d;
  one += m.object_found && m.objects == 1;
  asked_big += s.big, big += shows_big(m);
}

std::string SemanticScore::line(const std::string& name) const {
  char buf[240];
  std::snprintf(buf, sizeof buf,
                "%-9s %2d prompts: background %5.1f%%  object %5.1f%%  shape %5.1f%%  "
                "direction %5.1f%%  all four %5.1f%%  (one object drawn: %5.1f%%)",
                name.c_str(), n, pct(background, n), pct(object, n), pct(shape, n),
                pct(direction, n), pct(all, n), pct(one, n));
  if (asked_big == 0 && big == 0) return buf;
  char more[64];
  // Not asked for "big" anywhere: a model that draws big objects anyway.
  std::snprintf(more, sizeof more,
                asked_big == 0 ? "  drawn big unasked: %5.1f%%" : "  drawn big: %5.1f%%",
                pct(big, n));
  return buf + std::string(more);
}

std::string describe(const Measured& m) {
  char buf[160];
  if (!m.object_found) {  // no shape, colour or direction to name
    std::snprintf(buf, sizeof buf, "no object found, on %s", name(m.background));
    return buf;
  }
  std::snprintf(buf, sizeof buf, "%s%s %s moving %s on %s (fill %.3f, extent %.1f, %d %s)",
                shows_big(m) ? "big " : "", name(m.object), name(m.shape), name(m.direction),
                name(m.background), m.fill_ratio, m.extent, m.objects,
                m.objects == 1 ? "object" : "objects");
  return buf;
}

}  // namespace kinora::embedded
