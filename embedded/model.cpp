#include "embedded/model.h"

#include <cstdlib>

#include "base/error.h"
#include "base/runtime.h"
#include "embedded/clips.h"

namespace kinora::embedded {
namespace fs = std::filesystem;

std::vector<fs::path> model_search_path() {
  std::vector<fs::path> dirs;
  if (const char* env = std::getenv("KINORA_ASSETS"); env && *env) dirs.emplace_back(env);
  if (const auto bin = executable_dir(); !bin.empty())
    dirs.push_back(bin.parent_path() / "share" / "kinora" / "assets");
#ifdef KINORA_SOURCE_ASSETS
  dirs.emplace_back(KINORA_SOURCE_ASSETS);
#endif
  return dirs;
}

std::optional<fs::path> model_dir() {
  // A folder named by KINORA_ASSETS is the one meant: one that is not there,
  // or lacks a file, is said so rather than passed over for the shipped model.
  if (const char* env = std::getenv("KINORA_ASSETS"); env && *env) {
    const fs::path d = env;
    std::error_code ec;
    if (!fs::is_directory(d, ec))
      throw Error("KINORA_ASSETS is " + d.string() +
                  (fs::exists(d, ec) ? ", which is not a folder" : ", which does not exist") +
                  "; it names the embedded model's folder (unset it to use the shipped model)");
    std::string missing;
    for (const char* f : {kDitFile, kVaeFile, kTextEncoderFile, kTokenizerFile})
      if (!fs::is_regular_file(d / f, ec)) missing.append(missing.empty() ? "" : ", ").append(f);
    if (!missing.empty())
      throw Error("KINORA_ASSETS is " + d.string() + ", which lacks " + missing +
                  "; the embedded model's folder holds all four of its files (a training "
                  "run's model/ folder does; unset it to use the shipped model)");
    return d;
  }
  for (const auto& d : model_search_path()) {
    std::error_code ec;
    bool all = true;
    for (const char* f : {kDitFile, kVaeFile, kTextEncoderFile, kTokenizerFile})
      all = all && fs::is_regular_file(d / f, ec);
    if (all) return d;
  }
  return std::nullopt;
}

namespace {
// A prompt as quoted in a note: its first 80 bytes or so, cut between
// characters.
std::string shortened(const std::string& prompt) {
  if (prompt.size() <= 80) return prompt;
  std::size_t n = 77;
  while (n > 0 && (static_cast<unsigned char>(prompt[n]) & 0xC0) == 0x80) --n;
  return prompt.substr(0, n) + "…";
}
}  // namespace

std::optional<std::string> prompt_note(const std::string& prompt) {
  if (parse_caption(prompt)) return std::nullopt;
  auto list = [](const auto& values) {
    std::string out;
    for (const auto& v : values) out += (out.empty() ? "" : ", ") + std::string(name(v));
    return out;
  };
  return "the embedded model knows only prompts of the form \"a COLOUR SHAPE moving DIRECTION "
         "on a COLOUR background\" (colours " +
         list(kColours) + ", object and background different; shapes " + list(kShapes) +
         "; directions " + list(kDirections) + "), in lower case; \"" + shortened(prompt) +
         "\" is not one, so expect an arbitrary scene";
}

}  // namespace kinora::embedded
