#include "base/json.h"

#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "base/error.h"

namespace kinora {

namespace {
// nlohmann's messages start with "[json.exception.parse_error.101] "; the rest
// ("parse error at line 3, column 7: …") is what a user can act on.
// Its quote of the bytes last read may hold a byte that is not UTF-8 (the
// one it stopped at): written \xNN, not sent to the terminal as it is.
std::string without_tag(const char* what) {
  std::string s = what;
  if (!s.empty() && s[0] == '[') {
    const auto end = s.find("] ");
    if (end != std::string::npos) s.erase(0, end + 2);
  }
  std::string out;
  std::string_view rest = s;
  while (!rest.empty()) {
    const auto bad = invalid_utf8_offset(rest);
    if (bad == std::string_view::npos) {
      out.append(rest);
      break;
    }
    char hex[8];
    std::snprintf(hex, sizeof hex, "\\x%02X", static_cast<unsigned char>(rest[bad]));
    out.append(rest.substr(0, bad)).append(hex);
    rest.remove_prefix(bad + 1);
  }
  return out;
}
}  // namespace

nlohmann::json parse_json(std::string_view text, const std::string& source,
                          const JsonLimits& limits) {
  if (text.size() > limits.max_bytes)
    throw Error(source + ": " + std::to_string(text.size()) + " bytes of JSON, more than the " +
                std::to_string(limits.max_bytes >> 20) + " MiB this reads");
  // Depth outside strings, before the parser sees it.
  int depth = 0;
  bool in_string = false, escaped = false;
  for (std::size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (in_string) {
      if (escaped)
        escaped = false;
      else if (c == '\\')
        escaped = true;
      else if (c == '"')
        in_string = false;
      continue;
    }
    if (c == '"') {
      in_string = true;
    } else if (c == '[' || c == '{') {
      if (++depth > limits.max_depth)
        throw Error(source + ": JSON nested deeper than " + std::to_string(limits.max_depth) +
                    " levels (at byte " + std::to_string(i) + "); not read");
    } else if (c == ']' || c == '}') {
      --depth;
    }
  }
  // A key given twice in one object (a preset edited by hand, pasted into) is
  // an error: the parser would keep the last and drop the other unseen.
  std::vector<std::set<std::string>> keys;  // of each object open now
  const auto once = [&](int, nlohmann::json::parse_event_t event, nlohmann::json& parsed) {
    using E = nlohmann::json::parse_event_t;
    if (event == E::object_start) {
      keys.emplace_back();
    } else if (event == E::object_end) {
      if (!keys.empty()) keys.pop_back();
    } else if (event == E::key && !keys.empty()) {
      const auto& key = parsed.get_ref<const std::string&>();
      if (!keys.back().insert(key).second)
        throw Error(source + ": key '" + key +
                    "' is given twice in one object (which of its values is meant is unknown)");
    }
    return true;
  };
  try {
    return nlohmann::json::parse(text, once);
  } catch (const nlohmann::json::exception& e) {
    throw Error(source + ": not valid JSON: " + without_tag(e.what()));
  }
}

nlohmann::json read_json_file(const std::filesystem::path& path, const JsonLimits& limits) {
  std::error_code ec;
  const auto size = std::filesystem::file_size(path, ec);
  if (ec) fail_file(path, "cannot read: " + ec.message());
  if (size > limits.max_bytes)
    fail_file(path, std::to_string(size) + " bytes, more than the " +
                        std::to_string(limits.max_bytes >> 20) +
                        " MiB a JSON file here may have; not read");
  errno = 0;
  std::ifstream in(path, std::ios::binary);
  if (!in)
    fail_file(path, errno ? std::string("cannot open: ") + std::strerror(errno) : "cannot open");
  std::stringstream buf;
  buf << in.rdbuf();
  return parse_json(buf.str(), path.string(), limits);
}

std::size_t invalid_utf8_offset(std::string_view s) {
  const auto* b = reinterpret_cast<const unsigned char*>(s.data());
  const std::size_t n = s.size();
  for (std::size_t i = 0; i < n;) {
    const unsigned char c = b[i];
    std::size_t len;
    uint32_t cp;
    if (c < 0x80) {
      ++i;
      continue;
    } else if ((c & 0xE0) == 0xC0) {
      len = 2, cp = c & 0x1F;
    } else if ((c & 0xF0) == 0xE0) {
      len = 3, cp = c & 0x0F;
    } else if ((c & 0xF8) == 0xF0) {
      len = 4, cp = c & 0x07;
    } else {
      return i;
    }
    if (i + len > n) return i;
    for (std::size_t k = 1; k < len; ++k) {
      if ((b[i + k] & 0xC0) != 0x80) return i;
      cp = (cp << 6) | (b[i + k] & 0x3F);
    }
    // Overlong forms, surrogates and code points past U+10FFFF are not UTF-8.
    if ((len == 2 && cp < 0x80) || (len == 3 && cp < 0x800) || (len == 4 && cp < 0x10000) ||
        (cp >= 0xD800 && cp <= 0xDFFF) || cp > 0x10FFFF)
      return i;
    i += len;
  }
  return std::string_view::npos;
}

}  // namespace kinora
