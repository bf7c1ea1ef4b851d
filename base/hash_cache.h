#pragma once
// SHA-256 of whole model files, remembered between runs. A1111, Forge and
// Civitai name a checkpoint or a LoRA by such a hash, and reading a 7 GB
// checkpoint for it takes tens of seconds, so a render computes it once per
// file: the cache, a small JSON file in the user's cache folder, keeps the
// digest under the file's absolute path, size and modification time, and a
// file that changes (another size or time) is hashed again.
//
// The cache is only ever a shortcut: a cache file that is missing, malformed,
// unreadable or unwritable makes the file be hashed again, never an error.
// It is written whole under a temporary name and renamed (base/files.h), and
// holds at most a bounded number of entries, the oldest dropped first. Two
// processes writing it at once lose at most each other's newest entry.
#include <atomic>
#include <cstddef>
#include <filesystem>
#include <functional>
#include <string>

namespace kinora {

enum class FileDigest {
  Whole,            // every byte (sha256_file_hex: A1111's model hash)
  SafetensorsData,  // the tensor bytes after the header (safetensors_data_sha256_hex: LoRAs)
};

inline constexpr std::size_t kHashCacheEntries = 256;

// The folder for this user's caches: $KINORA_CACHE_DIR when set, else
// $XDG_CACHE_HOME/kinora (the XDG base directory rule; an absolute path only),
// else ~/.cache/kinora. Empty when none can be named (no HOME). Not created.
std::filesystem::path user_cache_dir();

// user_cache_dir()/file-hashes.json, or empty.
std::filesystem::path default_hash_cache_file();

// The hex SHA-256 of `file` (of kind `kind`): the one `cache_file` records for
// its absolute path, size and modification time, else computed and recorded
// there (the cache's folder created when missing; an empty `cache_file`: no
// cache). `on_hashing` is called before the file is read, on a miss only.
// Throws kinora::Error
// naming `file` when it cannot be read, and kinora::Cancelled when `cancel`
// is set while it is hashed; nothing about the cache file throws.
std::string cached_file_sha256(const std::filesystem::path& file, FileDigest kind,
                               const std::filesystem::path& cache_file,
                               const std::atomic<bool>* cancel = nullptr,
                               const std::function<void()>& on_hashing = {},
                               std::size_t max_entries = kHashCacheEntries);

}  // namespace kinora
