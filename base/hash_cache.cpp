#include "base/hash_cache.h"

#include <sys/stat.h>
#include <nlohmann/json.hpp>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <mutex>

#include "base/error.h"
#include "base/files.h"
#include "base/json.h"
#include "base/sha256.h"

namespace kinora {
namespace fs = std::filesystem;

namespace {

// The cache file's format version, its top-level key.
constexpr const char* kFormatKey = "kinora_file_hashes";
constexpr int kFormat = 1;

const char* kind_name(FileDigest kind) {
  return kind == FileDigest::Whole ? "sha256" : "safetensors_data_sha256";
}

// What identifies one version of a file: where it is, its size and when it
// was last written (nanoseconds since 1970, as precise as the file system
// keeps them).
struct Stamp {
  std::string path;
  std::uintmax_t size = 0;
  std::int64_t mtime_ns = 0;
};

bool stamp_of(const fs::path& file, Stamp& s) {
  struct stat st = {};
  if (::stat(file.c_str(), &st) != 0 || !S_ISREG(st.st_mode)) return false;
  std::error_code ec;
  const fs::path abs = fs::absolute(file, ec);
  if (ec) return false;
  s.path = abs.lexically_normal().string();
  s.size = static_cast<std::uintmax_t>(st.st_size);
  s.mtime_ns = static_cast<std::int64_t>(st.st_mtim.tv_sec) * 1000000000 + st.st_mtim.tv_nsec;
  return true;
}

bool is_hex64(const nlohmann::json& v) {
  if (!v.is_string()) return false;
  const auto& s = v.get_ref<const std::string&>();
  if (s.size() != 64) return false;
  for (char c : s)
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
  return true;
}

bool well_formed(const nlohmann::json& e) {
  return e.is_object() && e.contains("path") && e["path"].is_string() && e.contains("kind") &&
         e["kind"].is_string() && e.contains("size") && e["size"].is_number_unsigned() &&
         e.contains("mtime_ns") && e["mtime_ns"].is_number_integer() && e.contains("sha256") &&
         is_hex64(e["sha256"]);
}

// An entry of this file's path and kind (any version of it).
bool same_file(const nlohmann::json& e, const Stamp& s, const char* kind) {
  return e["path"] == s.path && e["kind"] == kind;
}

bool same_version(const nlohmann::json& e, const Stamp& s, const char* kind) {
  return same_file(e, s, kind) && e["size"].get<std::uintmax_t>() == s.size &&
         e["mtime_ns"].get<std::int64_t>() == s.mtime_ns;
}

// The well-formed entries of a cache file; none when it is missing or is not one.
nlohmann::json load_entries(const fs::path& cache_file) {
  try {
    std::error_code ec;
    if (!cache_file.empty() && fs::is_regular_file(cache_file, ec)) {
      JsonLimits limits;  // 256 entries of a long path each are well under a MiB
      limits.max_bytes = std::size_t{4} << 20;
      limits.max_depth = 4;
      const auto j = read_json_file(cache_file, limits);
      if (j.is_object() && j.contains(kFormatKey) && j[kFormatKey] == kFormat &&
          j.contains("entries") && j["entries"].is_array()) {
        nlohmann::json entries = nlohmann::json::array();
        for (const auto& e : j["entries"])
          if (well_formed(e)) entries.push_back(e);
        return entries;
      }
    }
  } catch (const std::exception&) {
    // A cache that cannot be read is as good as none.
  }
  return nlohmann::json::array();
}

void store(const fs::path& cache_file, const Stamp& s, const char* kind, const std::string& hex,
           std::size_t max_entries) {
  if (cache_file.empty() || max_entries == 0) return;
  try {
    // Read again: another process may have added entries while this one hashed.
    nlohmann::json kept = nlohmann::json::array();
    for (auto& e : load_entries(cache_file))
      if (!same_file(e, s, kind)) kept.push_back(std::move(e));
    kept.push_back({{"path", s.path},
                    {"kind", kind},
                    {"size", s.size},
                    {"mtime_ns", s.mtime_ns},
                    {"sha256", hex}});
    nlohmann::json entries = nlohmann::json::array();
    const std::size_t from = kept.size() > max_entries ? kept.size() - max_entries : 0;
    for (std::size_t i = from; i < kept.size(); ++i) entries.push_back(std::move(kept[i]));
    std::error_code ec;
    fs::create_directories(cache_file.parent_path(), ec);
    const nlohmann::json j = {{kFormatKey, kFormat}, {"entries", entries}};
    write_file_atomically(cache_file,
                          j.dump(1, ' ', false, nlohmann::json::error_handler_t::replace) + "\n");
  } catch (const std::exception&) {
    // Not remembered: the next render hashes the file again.
  }
}

}  // namespace

fs::path user_cache_dir() {
  if (const char* d = std::getenv("KINORA_CACHE_DIR"); d && *d) {
    // Caches are best effort (a failure only costs the work again), but a
    // folder that cannot be one is said, once a process.
    std::error_code ec;
    if (fs::exists(d, ec) && !fs::is_directory(d, ec)) {
      static std::once_flag said;
      std::call_once(said, [&] {
        std::fprintf(stderr,
                     "kinora: note: KINORA_CACHE_DIR is %s, which is not a folder; nothing is "
                     "cached\n",
                     d);
      });
    }
    return fs::path(d);
  }
  if (const char* x = std::getenv("XDG_CACHE_HOME"); x && *x && fs::path(x).is_absolute())
    return fs::path(x) / "kinora";
  if (const char* h = std::getenv("HOME"); h && *h) return fs::path(h) / ".cache" / "kinora";
  return {};
}

fs::path default_hash_cache_file() {
  const auto dir = user_cache_dir();
  return dir.empty() ? fs::path() : dir / "file-hashes.json";
}

std::string cached_file_sha256(const fs::path& file, FileDigest kind, const fs::path& cache_file,
                               const std::atomic<bool>* cancel,
                               const std::function<void()>& on_hashing, std::size_t max_entries) {
  const char* name = kind_name(kind);
  Stamp before;
  const bool stamped = stamp_of(file, before);
  if (stamped)
    for (const auto& e : load_entries(cache_file))
      if (same_version(e, before, name)) return e["sha256"].get<std::string>();
  if (on_hashing) on_hashing();
  const std::string hex = kind == FileDigest::Whole ? sha256_file_hex(file, 0, cancel)
                                                    : safetensors_data_sha256_hex(file, cancel);
  // Remembered only when the file did not change while it was read.
  Stamp after;
  if (stamped && stamp_of(file, after) && after.size == before.size &&
      after.mtime_ns == before.mtime_ns)
    store(cache_file, before, name, hex, max_entries);
  return hex;
}

}  // namespace kinora
