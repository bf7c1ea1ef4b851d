#pragma once
// JSON from files made elsewhere (presets people share, the parameters embedded
// in a downloaded video, a checkpoint's metadata) is data, read with bounds:
// a size and a nesting depth, checked before the parser sees it, so that a file
// nested 100,000 deep is an error that names it, not a stack overflow. Every
// error is a kinora::Error that starts with the source ("fox.json: …").
#include <nlohmann/json.hpp>

#include <cstddef>
#include <filesystem>
#include <string>
#include <string_view>

namespace kinora {

struct JsonLimits {
  std::size_t max_bytes = std::size_t{16} << 20;  // presets and parameters are kilobytes
  int max_depth = 32;                             // a preset is three levels deep
};

nlohmann::json parse_json(std::string_view text, const std::string& source,
                          const JsonLimits& limits = {});
// The file read whole (refused past max_bytes without reading it), then parse_json.
nlohmann::json read_json_file(const std::filesystem::path& path, const JsonLimits& limits = {});

// The offset of the first byte of `s` that is not part of well-formed UTF-8,
// or npos when all of it is.
std::size_t invalid_utf8_offset(std::string_view s);

}  // namespace kinora
