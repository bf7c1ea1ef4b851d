// The procedural clips of the embedded model's training set, and the pixel
// measurements that judge generated videos.
#include <gtest/gtest.h>

#include <set>

#include "training/clips.h"

using namespace kinora::training;

TEST(Clips, AreDeterministicFromTheSeed) {
  const auto a = render(random_scene(42)), b = render(random_scene(42));
  EXPECT_TRUE(torch::equal(a, b));
  EXPECT_FALSE(torch::equal(a, render(random_scene(43))));
  EXPECT_EQ(a.sizes(), (std::vector<int64_t>{17, 64, 64, 3}));
}

TEST(Clips, CaptionsFollowTheGrammarAndCoverEveryWord) {
  std::set<std::string> colours, backgrounds, shapes, directions;
  for (uint64_t seed = 0; seed < 400; ++seed) {
    const auto s = random_scene(seed);
    EXPECT_NE(s.object, s.background);
    EXPECT_EQ(s.caption(), std::string("a ") + name(s.object) + " " + name(s.shape) + " moving " +
                               name(s.direction) + " on a " + name(s.background) + " background");
    colours.insert(name(s.object));
    backgrounds.insert(name(s.background));
    shapes.insert(name(s.shape));
    directions.insert(name(s.direction));
  }
  EXPECT_EQ(colours.size(), 6u);
  EXPECT_EQ(backgrounds.size(), 6u);
  EXPECT_EQ(shapes.size(), 3u);
  EXPECT_EQ(directions.size(), 4u);
}

// The measurement reads back every attribute of the rendered clips.
TEST(Clips, MeasuringTheirPixelsRecoversTheCaption) {
  int right = 0, total = 0;
  for (uint64_t seed = 0; seed < 120; ++seed) {
    const auto s = random_scene(seed);
    const auto m = measure(render(s));
    ++total;
    const bool ok = m.object_found && m.background == s.background && m.object == s.object &&
                    m.shape == s.shape && m.direction == s.direction;
    right += ok;
    EXPECT_TRUE(ok) << s.caption() << " measured: " << name(m.object) << " " << name(m.shape)
                    << " (fill " << m.fill_ratio << ") " << name(m.direction) << " on "
                    << name(m.background);
  }
  EXPECT_EQ(right, total);
}

TEST(Clips, HeldOutCombinations) {
  Scene s;
  s.object = Colour::Green, s.shape = Shape::Triangle, s.direction = Direction::Up;
  EXPECT_TRUE(held_out(s));
  s.direction = Direction::Down;
  EXPECT_FALSE(held_out(s));
  int held = 0;
  for (uint64_t seed = 0; seed < 2000; ++seed) held += held_out(random_scene(seed));
  EXPECT_GT(held, 0);
  EXPECT_LT(held, 100);  // a few percent of the space
}
