#pragma once
// SHA-256 (OpenSSL's libcrypto), for fingerprinting model files in output
// metadata.
#include <filesystem>
#include <memory>
#include <string>

namespace kinora {

class Sha256 {
 public:
  Sha256();
  ~Sha256();
  Sha256(const Sha256&) = delete;
  Sha256& operator=(const Sha256&) = delete;
  void update(const void* data, std::size_t len);
  std::string hex_digest();  // finalises

 private:
  struct Context;
  std::unique_ptr<Context> ctx_;
};

std::string sha256_hex(const std::string& data);

// SHA-256 of a file's first and last MiB (the whole file when it is smaller than
// 2 MiB) — a fingerprint that is instant even for a 28 GB checkpoint. Throws
// kinora::Error naming the file when it cannot be read.
std::string file_fingerprint(const std::filesystem::path& path);

}  // namespace kinora
