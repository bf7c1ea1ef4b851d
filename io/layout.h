#pragma once
// Which model family a checkpoint holds, and in which key layout, from its tensor
// names and shapes alone (never from metadata or the file name).
#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace kinora::io {

enum class Family { Unknown, WanDiT, WanVAE, UMT5, T5, CLIP, FluxDiT, FluxAE };
enum class Layout { Unknown, Original, ComfyUI, Diffusers, HF };

const char* family_name(Family f);
const char* layout_name(Layout l);

using ShapeMap = std::map<std::string, std::vector<int64_t>>;

struct Detection {
  Family family = Family::Unknown;
  Layout layout = Layout::Unknown;
  std::string prefix;   // stripped from every key ("model.diffusion_model." …)
  std::string summary;  // what the shapes say: widths, layer counts, the variant
};

Detection detect_layout(const ShapeMap& shapes);

// The keys under `prefix` with the prefix removed.
ShapeMap strip_prefix(const ShapeMap& shapes, const std::string& prefix);
// Number of N for which some key starts with stem + "N.".
int count_indexed(const ShapeMap& shapes, const std::string& stem);

}  // namespace kinora::io
