// The procedural clips of the embedded model's training set, and the pixel
// measurements that judge generated videos.
#include <gtest/gtest.h>

#include <set>

#include "embedded/clips.h"
#include "embedded/semantic.h"

using namespace kinora::embedded;

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

TEST(Clips, CaptionsParseBackToTheirScenes) {
  for (uint64_t seed = 0; seed < 200; ++seed) {
    const auto s = random_scene(seed);
    const auto p = parse_caption(s.caption());
    ASSERT_TRUE(p) << s.caption();
    EXPECT_EQ(p->caption(), s.caption());
  }
  for (const char* foreign :
       {"", "a red circle moving left", "a purple circle moving left on a blue background",
        "a red circle moving left on a red background",
        "a red circle moving sideways on a blue background",
        "the red circle moving left on a blue background",
        "a red circle moving left on a blue background now",
        "a big big red circle moving left on a blue background"})
    EXPECT_FALSE(parse_caption(foreign)) << foreign;
  // "big", the word of the project's LoRA.
  const auto big = parse_caption("a big red circle moving left on a blue background");
  ASSERT_TRUE(big);
  EXPECT_TRUE(big->big);
  EXPECT_EQ(big->caption(), "a big red circle moving left on a blue background");
}

// Big scenes: the same draws as the scene of their seed, twice the size, in
// view, and measured big; the base grammar's never are.
TEST(Clips, BigScenesAreMeasuredBigAndTheOthersNever) {
  for (uint64_t seed = 0; seed < 60; ++seed) {
    const auto s = random_scene(seed), b = random_scene(seed, {}, true);
    EXPECT_EQ(b.object, s.object);
    EXPECT_EQ(b.shape, s.shape);
    EXPECT_EQ(b.direction, s.direction);
    EXPECT_GE(b.size, 18);
    const auto ms = measure(render(s)), mb = measure(render(b));
    EXPECT_FALSE(shows_big(ms)) << s.caption() << " extent " << ms.extent;
    EXPECT_TRUE(shows_big(mb)) << b.caption() << " extent " << mb.extent;
    EXPECT_EQ(mb.shape, b.shape) << b.caption();
    EXPECT_EQ(mb.direction, b.direction) << b.caption();
    EXPECT_TRUE(b.caption().rfind("a big ", 0) == 0);
  }
}

// The measurement reads back every attribute of the rendered clips.
TEST(Clips, MeasuringTheirPixelsRecoversTheCaption) {
  int right = 0, total = 0;
  for (uint64_t seed = 0; seed < 120; ++seed) {
    const auto s = random_scene(seed);
    const auto m = measure(render(s));
    ++total;
    const bool ok = m.object_found && m.background == s.background && m.object == s.object &&
                    m.shape == s.shape && m.direction == s.direction && m.objects == 1;
    right += ok;
    EXPECT_TRUE(ok) << s.caption() << " measured: " << name(m.object) << " " << name(m.shape)
                    << " (fill " << m.fill_ratio << ", " << m.objects << " objects) "
                    << name(m.direction) << " on " << name(m.background);
  }
  EXPECT_EQ(right, total);
}

// An object drawn twice is counted (the other measures read the larger copy);
// a copy much smaller than the object, or a speck, is not.
TEST(Clips, MeasureCountsAnObjectDrawnTwice) {
  int twice = 0, once = 0;
  for (uint64_t seed = 0; seed < 24; ++seed) {
    const auto s = random_scene(seed);
    const auto v = render(s);
    const int64_t W = v.size(2);
    // The clip beside itself, squeezed into one frame: two objects of one size.
    const auto pair = torch::cat({v.slice(2, 0, W, 2), v.slice(2, 0, W, 2)}, 2);
    const auto m = measure(pair);
    twice += m.object_found && m.objects == 2;
    // A copy a tenth the area (a third the width) in the corner is a speck.
    auto small = v.clone();
    const auto third = v.slice(1, 0, v.size(1), 3).slice(2, 0, W, 3);
    small.slice(1, 0, third.size(1)).slice(2, 0, third.size(2)).copy_(third);
    once += measure(small).objects == 1;
  }
  // A copy can reach the border or touch the other now and then.
  EXPECT_GE(twice, 20);
  EXPECT_GE(once, 20);
}

// Specks apart from the object (a decoder's brighter corners, a stray dot)
// neither count as the object being cut by the border nor move its centroid.
TEST(Clips, MeasureIgnoresSpecks) {
  int right = 0;
  for (uint64_t seed = 0; seed < 24; ++seed) {
    const auto s = random_scene(seed);
    auto v = render(s).clone();
    const int64_t H = v.size(1), W = v.size(2);
    const auto speck = torch::tensor({255, 128, 0}, torch::kUInt8).view({1, 1, 3});
    for (int64_t f = 0; f < v.size(0); ++f) {  // two corner pixels each frame, a dot in some
      v[f][0][0] = v[f][H - 1][W - 1] = speck[0][0];
      if (f % 3 == 0) v[f].narrow(0, f % H, 2).narrow(1, W / 2, 2).copy_(speck.expand({2, 2, 3}));
    }
    const auto m = measure(v);
    right +=
        m.object_found && m.shape == s.shape && m.direction == s.direction && m.object == s.object;
  }
  // A speck can touch the object now and then; the measure without regions read
  // every one of these as a triangle cut by the border.
  EXPECT_GE(right, 22);
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

// Centred: the path's midpoint within ±3 px of the frame's centre on both axes,
// the whole path in view, and still read back right by the measure.
TEST(Clips, CentredPathsCrossTheMiddle) {
  ClipSpec spec;
  spec.placement = Placement::Centred;
  for (uint64_t seed = 0; seed < 200; ++seed) {
    const auto s = random_scene(seed, spec);
    const float travel = s.speed * static_cast<float>(spec.frames - 1);
    const float dx = s.direction == Direction::Right  ? 1.0f
                     : s.direction == Direction::Left ? -1.0f
                                                      : 0.0f;
    const float dy = s.direction == Direction::Down ? 1.0f
                     : s.direction == Direction::Up ? -1.0f
                                                    : 0.0f;
    const float mx = s.x0 + dx * travel / 2, my = s.y0 + dy * travel / 2;
    EXPECT_NEAR(mx, 32.0f, 3.01f) << s.caption() << " seed " << seed;
    EXPECT_NEAR(my, 32.0f, 3.01f) << s.caption() << " seed " << seed;
    for (const float end : {0.0f, 1.0f}) {
      const float x = s.x0 + dx * travel * end, y = s.y0 + dy * travel * end;
      EXPECT_GE(std::min(x, y) - s.size, 0.0f) << s.caption() << " seed " << seed;
      EXPECT_LE(std::max(x, y) + s.size, 64.0f) << s.caption() << " seed " << seed;
    }
    if (seed < 40) {
      const auto m = measure(render(s, spec));
      EXPECT_TRUE(m.object_found && m.background == s.background && m.object == s.object &&
                  m.shape == s.shape && m.direction == s.direction)
          << s.caption() << " seed " << seed;
    }
  }
  // Anywhere (the default) spreads them over the frame.
  float lo = 64, hi = 0;
  for (uint64_t seed = 0; seed < 200; ++seed) {
    const auto s = random_scene(seed);
    const float across =
        s.direction == Direction::Left || s.direction == Direction::Right ? s.y0 : s.x0;
    lo = std::min(lo, across), hi = std::max(hi, across);
  }
  EXPECT_GT(hi - lo, 30.0f);
}

// A clip where nothing stands out names no shape or direction; a score of
// prompts that never asked for "big" labels the big objects it found so.
TEST(Clips, ANothingMeasuredAndBigUnaskedAreSaidAsSuch) {
  Measured none;
  none.background = Colour::Blue;
  EXPECT_EQ(describe(none), "no object found, on blue");
  SemanticScore s;
  Scene asked;
  Measured big_one;
  big_one.object_found = true, big_one.objects = 1, big_one.extent = 40;
  s.add(asked, big_one);
  EXPECT_NE(s.line("trained").find("drawn big unasked: 100.0%"), std::string::npos)
      << s.line("trained");
}
