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

// Whether `s` is a decimal number as one is typed ("0.8", "-1.5e1", ".5"):
// no hex, inf or nan, no spaces, though strtod takes them.
inline bool is_decimal(std::string_view s) {
  std::size_t i = 0, digits = 0;
  const auto run = [&] {
    std::size_t n = 0;
    while (i < s.size() && s[i] >= '0' && s[i] <= '9') ++i, ++n;
    return n;
  };
  if (i < s.size() && (s[i] == '+' || s[i] == '-')) ++i;
  digits += run();
  if (i < s.size() && s[i] == '.') ++i, digits += run();
  if (digits == 0) return false;
  if (i < s.size() && (s[i] == 'e' || s[i] == 'E')) {
    ++i;
    if (i < s.size() && (s[i] == '+' || s[i] == '-')) ++i;
    if (run() == 0) return false;
  }
  return i == s.size();
}

// "1 preset", "3 presets": `n` and the noun for that count.
inline std::string counted(long long n, std::string_view one, std::string_view many) {
  return std::to_string(n) + " " + std::string(n == 1 ? one : many);
}

}  // namespace kinora
