#pragma once
// Helpers shared by the unit tests.
#include <gtest/gtest.h>

#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>

#include "base/error.h"

namespace kinora::test {

// A fresh folder under the system temp dir, removed when the test ends.
class TempDir {
 public:
  TempDir() {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    // A counter too: two TempDirs in one test are two folders.
    static int count = 0;
    // A parameterised test's name holds a '/' ("Name/png"): one folder, not two.
    std::string name = info ? info->name() : "test";
    std::replace(name.begin(), name.end(), '/', '-');
    path_ = std::filesystem::temp_directory_path() /
            ("kinora-" + name + "-" + std::to_string(::getpid()) + "-" + std::to_string(count++));
    std::filesystem::remove_all(path_);
    std::filesystem::create_directories(path_);
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  const std::filesystem::path& path() const { return path_; }
  std::filesystem::path operator/(const std::string& name) const { return path_ / name; }

 private:
  std::filesystem::path path_;
};

// Writes a safetensors file by hand: the header length (default: the JSON's
// size), the JSON text, then `data` — for building malformed files.
inline void write_raw(const std::filesystem::path& p, const std::string& json,
                      const std::string& data, int64_t header_len = -1) {
  std::ofstream f(p, std::ios::binary);
  const uint64_t n = header_len < 0 ? json.size() : static_cast<uint64_t>(header_len);
  f.write(reinterpret_cast<const char*>(&n), 8);
  f << json << data;
}

// A file's bytes ("" where it cannot be read).
inline std::string read_bytes(const std::filesystem::path& p) {
  std::ifstream in(p, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

inline std::string fixture(const std::string& name) {
  // Appended, not `+`: GCC 12 warns falsely on that chain (-Warray-bounds).
  std::string path = KINORA_FIXTURES;
  path.append("/").append(name);
  return path;
}

// A shell command's exit status (-1 when a signal ended it) and its stdout and
// stderr together.
struct Run {
  int code;
  std::string out;
};
inline Run sh(const std::string& cmd) {
  std::FILE* p = ::popen((cmd + " 2>&1").c_str(), "r");
  std::string out;
  std::array<char, 4096> buf{};
  while (std::size_t n = std::fread(buf.data(), 1, buf.size(), p)) out.append(buf.data(), n);
  const int status = ::pclose(p);
  return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, out};
}

// Runs `fn` and returns the kinora::Error message it throws ("" if none).
template <typename F>
std::string error_of(F&& fn) {
  try {
    fn();
  } catch (const kinora::Error& e) {
    return e.what();
  }
  return "";
}

}  // namespace kinora::test
