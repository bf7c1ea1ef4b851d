#include "base/files.h"

#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <memory>
#include <string>

#include "base/error.h"

namespace fs = std::filesystem;

namespace kinora {

fs::path temp_beside(const fs::path& path) {
  std::string name(1, '.');
  name += path.filename().string();
  name += ".tmp-";
  name += std::to_string(::getpid());
  name += path.extension().string();
  return path.parent_path() / name;
}

void commit_temp(const fs::path& tmp, const fs::path& path) {
  std::error_code ec;
  fs::rename(tmp, path, ec);
  if (!ec) return;
  std::error_code ignored;
  fs::remove(tmp, ignored);
  fail_file(path, "cannot move the finished file into place: " + ec.message());
}

void write_file_atomically(const fs::path& path, const std::function<bool(std::FILE*)>& write) {
  const fs::path tmp = temp_beside(path);
  auto failed = [&](const std::string& what) {
    const int err = errno;
    std::error_code ec;
    fs::remove(tmp, ec);
    fail_file(path, what + (err ? std::string(": ") + std::strerror(err) : std::string()));
  };
  struct Closer {
    void operator()(std::FILE* f) const { std::fclose(f); }
  };
  errno = 0;
  std::unique_ptr<std::FILE, Closer> f(std::fopen(tmp.c_str(), "wb"));
  if (!f) failed("cannot create " + tmp.filename().string());
  const bool ok = write(f.get()) && std::fflush(f.get()) == 0 && ::fsync(::fileno(f.get())) == 0;
  if (!ok) failed("write failed (disk full?)");
  if (std::fclose(f.release()) != 0) failed("write failed (disk full?)");
  commit_temp(tmp, path);
}

void write_file_atomically(const fs::path& path, std::string_view bytes) {
  write_file_atomically(path, [&](std::FILE* f) {
    return bytes.empty() || std::fwrite(bytes.data(), 1, bytes.size(), f) == bytes.size();
  });
}

}  // namespace kinora
