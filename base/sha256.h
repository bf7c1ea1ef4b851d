#pragma once
// SHA-256 (OpenSSL's libcrypto), for fingerprinting model files in output
// metadata and for the hashes other tools name model files by.
#include <atomic>
#include <cstdint>
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

// SHA-256 of a whole file, read in chunks (the file may be larger than memory),
// from byte `offset` on. A1111's model hash and Civitai's "AutoV2" are the
// first 10 hex digits of it. `cancel` is polled between chunks (a 7 GB
// checkpoint takes tens of seconds): kinora::Cancelled. Throws kinora::Error
// naming the file when it cannot be read.
std::string sha256_file_hex(const std::filesystem::path& path, std::uint64_t offset = 0,
                            const std::atomic<bool>* cancel = nullptr);

// SHA-256 of a safetensors file's tensor bytes: everything after the 8-byte
// header length and the JSON header, so that the metadata can change and the
// hash stays. kohya-ss's sd-scripts and A1111 hash LoRAs so (A1111's "Lora
// hashes" hold its first 12 hex digits; Civitai calls it "AutoV3"). Throws
// kinora::Error naming the file when it cannot be read or its header length
// passes its end.
std::string safetensors_data_sha256_hex(const std::filesystem::path& path,
                                        const std::atomic<bool>* cancel = nullptr);

}  // namespace kinora
