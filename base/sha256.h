#pragma once
// SHA-256 (FIPS 180-4), for fingerprinting model files in output metadata.
#include <cstdint>
#include <filesystem>
#include <string>

namespace kinora {

class Sha256 {
 public:
  Sha256();
  void update(const void* data, std::size_t len);
  std::string hex_digest();  // finalises

 private:
  void block(const uint8_t* p);
  uint32_t h_[8];
  uint8_t buf_[64];
  std::size_t buf_len_ = 0;
  uint64_t total_ = 0;
};

std::string sha256_hex(const std::string& data);

// SHA-256 of a file's first and last MiB (the whole file when it is smaller than
// 2 MiB) — a fingerprint that is instant even for a 28 GB checkpoint. Throws
// kinora::Error naming the file when it cannot be read.
std::string file_fingerprint(const std::filesystem::path& path);

}  // namespace kinora
