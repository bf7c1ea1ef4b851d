#pragma once
// String helpers the code needs in C++17 too (the fuzz build compiles as C++17:
// CMakeLists.txt), where std::string has no starts_with / ends_with.
#include <string>
#include <string_view>

namespace kinora {

inline bool starts_with(std::string_view s, std::string_view prefix) {
  return s.substr(0, prefix.size()) == prefix;
}
inline bool ends_with(std::string_view s, std::string_view suffix) {
  return s.size() >= suffix.size() && s.substr(s.size() - suffix.size()) == suffix;
}

// "1 preset", "3 presets": `n` and the noun for that count.
inline std::string counted(long long n, std::string_view one, std::string_view many) {
  return std::to_string(n) + " " + std::string(n == 1 ? one : many);
}

}  // namespace kinora
