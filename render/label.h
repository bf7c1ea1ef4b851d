#pragma once
// Text drawn into an image with a built-in 5×7 pixel font (printable ASCII,
// 32–126; anything else drawn as '?'), for the labels of contact sheets.
// Each glyph cell is 6×8 pixels (one column and one row of spacing) times `scale`.
#include <array>
#include <cstdint>
#include <string>

#include <torch/torch.h>

namespace kinora::render {

struct LabelSize {
  int width = 0, height = 0;
};

// The pixels `text` takes at `scale` (at least 1): one cell per character,
// on one line. Empty text: 0×0.
LabelSize label_size(const std::string& text, int scale = 1);

// Draws `text` into rgb [H, W, 3] uint8 (contiguous, CPU) with its top-left corner at (x, y),
// pixels of the glyphs set to `colour`; what falls outside the image is clipped (no error).
// Throws kinora::Error for another tensor or a scale below 1.
void draw_label(torch::Tensor& rgb, int x, int y, const std::string& text,
                std::array<uint8_t, 3> colour, int scale = 1);

}  // namespace kinora::render
