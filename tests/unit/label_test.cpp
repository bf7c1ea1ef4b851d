// Labels of contact sheets: the size of a label, glyphs drawn only inside
// their cells and clipped at the image's edges, and a font in which every
// printable character is visible and different from every other.
#include <gtest/gtest.h>

#include <torch/torch.h>

#include "render/label.h"

namespace kinora {
namespace {
using render::draw_label;
using render::label_size;

constexpr uint8_t kBackground = 7;
const std::array<uint8_t, 3> kColour = {200, 100, 50};

torch::Tensor image(int64_t height, int64_t width) {
  return torch::full({height, width, 3}, kBackground, torch::kUInt8);
}

// The pixels of `rgb` that equal kColour, as a bool [H, W].
torch::Tensor coloured(const torch::Tensor& rgb) {
  const auto colour = torch::tensor({kColour[0], kColour[1], kColour[2]}, torch::kUInt8);
  return rgb.eq(colour).all(-1);
}

// One character drawn alone into its cell: the bool [8, 6] mask of its pixels.
torch::Tensor glyph_mask(char c) {
  auto rgb = image(8, 6);
  draw_label(rgb, 0, 0, std::string(1, c), kColour);
  return coloured(rgb);
}

TEST(Label, SizeIsOneSixByEightCellPerCharacterTimesScale) {
  const auto one = label_size("AB");
  EXPECT_EQ(one.width, 12);
  EXPECT_EQ(one.height, 8);
  const auto two = label_size("AB", 2);
  EXPECT_EQ(two.width, 24);
  EXPECT_EQ(two.height, 16);
  EXPECT_EQ(label_size("").width, 0);
}

TEST(Label, GlyphsSetTheColourOnlyInsideTheirCell) {
  for (const char* text : {"I", "1"}) {
    for (int scale : {1, 2}) {
      SCOPED_TRACE(std::string(text) + " at scale " + std::to_string(scale));
      const int x = 5, y = 3;
      auto rgb = image(30, 40);
      draw_label(rgb, x, y, text, kColour, scale);
      const auto size = label_size(text, scale);
      const auto cell = rgb.slice(0, y, y + size.height).slice(1, x, x + size.width);
      const auto set = coloured(cell);
      EXPECT_GT(set.sum().item<int64_t>(), 0);
      // Inside the cell: each pixel is the colour or untouched.
      EXPECT_TRUE((set | cell.eq(kBackground).all(-1)).all().item<bool>());
      // Outside it: untouched.
      auto outside = rgb.clone();
      outside.slice(0, y, y + size.height).slice(1, x, x + size.width).fill_(kBackground);
      EXPECT_TRUE(outside.eq(kBackground).all().item<bool>());
    }
  }
}

TEST(Label, WhatFallsOutsideTheImageIsClipped) {
  const std::string text = "Clip 42!";
  const auto size = label_size(text, 2);
  const int margin = size.width + size.height;
  // Each position drawn into a small image, and into a large one that holds the
  // whole label: the small image is the large one's crop.
  for (const auto& [x, y] : std::vector<std::pair<int, int>>{
           {-7, -5}, {-size.width + 3, 2}, {10, -size.height + 1}, {25, 12}, {-1000, 1000}}) {
    SCOPED_TRACE("at " + std::to_string(x) + ", " + std::to_string(y));
    auto small = image(20, 30);
    draw_label(small, x, y, text, kColour, 2);
    auto large = image(20 + 2 * margin, 30 + 2 * margin);
    draw_label(large, x + margin, y + margin, text, kColour, 2);
    EXPECT_TRUE(small.equal(large.slice(0, margin, margin + 20).slice(1, margin, margin + 30)));
  }
  auto small = image(20, 30);
  draw_label(small, -7, -5, text, kColour, 2);
  EXPECT_GT(coloured(small).sum().item<int64_t>(), 0);
}

TEST(Label, EveryPrintableGlyphButSpaceIsVisible) {
  EXPECT_EQ(glyph_mask(' ').sum().item<int64_t>(), 0);
  for (char c = 33; c <= 126; ++c) {
    const auto mask = glyph_mask(c);
    EXPECT_GT(mask.sum().item<int64_t>(), 0) << "'" << c << "'";
    // The spacing column and row stay empty.
    EXPECT_FALSE(mask.select(1, 5).any().item<bool>()) << "'" << c << "'";
    EXPECT_FALSE(mask.select(0, 7).any().item<bool>()) << "'" << c << "'";
  }
  EXPECT_TRUE(glyph_mask('\n').equal(glyph_mask('?')));
  EXPECT_TRUE(glyph_mask(static_cast<char>(200)).equal(glyph_mask('?')));
}

TEST(Label, GlyphsDiffer) {
  EXPECT_FALSE(glyph_mask('O').equal(glyph_mask('0')));
  EXPECT_FALSE(glyph_mask('l').equal(glyph_mask('1')));
  EXPECT_FALSE(glyph_mask('I').equal(glyph_mask('l')));
  std::vector<torch::Tensor> masks;
  for (char c = 32; c <= 126; ++c) masks.push_back(glyph_mask(c));
  for (std::size_t i = 0; i < masks.size(); ++i)
    for (std::size_t j = i + 1; j < masks.size(); ++j)
      EXPECT_FALSE(masks[i].equal(masks[j]))
          << "'" << static_cast<char>(32 + i) << "' and '" << static_cast<char>(32 + j) << "'";
}

TEST(Label, RejectsAnImageOfAnotherShapeOrType) {
  auto gray = torch::zeros({8, 8}, torch::kUInt8);
  EXPECT_THROW(draw_label(gray, 0, 0, "A", kColour), std::runtime_error);
  auto floats = torch::zeros({8, 8, 3});
  EXPECT_THROW(draw_label(floats, 0, 0, "A", kColour), std::runtime_error);
  auto rgb = image(8, 8);
  EXPECT_THROW(draw_label(rgb, 0, 0, "A", kColour, 0), std::runtime_error);
}

}  // namespace
}  // namespace kinora
