#include "base/sha256.h"

#include <openssl/evp.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <vector>

#include "base/error.h"

namespace kinora {

struct Sha256::Context {
  EVP_MD_CTX* ctx = EVP_MD_CTX_new();
  ~Context() { EVP_MD_CTX_free(ctx); }
};

Sha256::Sha256() : ctx_(std::make_unique<Context>()) {
  if (!ctx_->ctx || EVP_DigestInit_ex(ctx_->ctx, EVP_sha256(), nullptr) != 1)
    throw Error("SHA-256: OpenSSL could not start a digest");
}
Sha256::~Sha256() = default;

void Sha256::update(const void* data, std::size_t len) {
  if (len && EVP_DigestUpdate(ctx_->ctx, data, len) != 1)
    throw Error("SHA-256: OpenSSL could not update the digest");
}

std::string Sha256::hex_digest() {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int n = 0;
  if (EVP_DigestFinal_ex(ctx_->ctx, md, &n) != 1)
    throw Error("SHA-256: OpenSSL could not finish the digest");
  static const char* hex = "0123456789abcdef";
  std::string out;
  for (unsigned int i = 0; i < n; ++i) out += hex[md[i] >> 4], out += hex[md[i] & 0xF];
  return out;
}

namespace {
// `path` opened for reading; a failure is an Error with `what` ("cannot open
// to hash") and the system's reason ("Permission denied").
std::ifstream open_to_read(const std::filesystem::path& path, const char* what) {
  errno = 0;
  std::ifstream f(path, std::ios::binary);
  if (!f) {
    const int err = errno;
    std::string msg = what;
    if (err != 0) msg.append(": ").append(std::strerror(err));
    fail_file(path, msg);
  }
  return f;
}
}  // namespace

std::string sha256_hex(const std::string& data) {
  Sha256 s;
  s.update(data.data(), data.size());
  return s.hex_digest();
}

std::string file_fingerprint(const std::filesystem::path& path) {
  constexpr std::size_t kMiB = 1 << 20;
  auto f = open_to_read(path, "cannot open to fingerprint");
  std::error_code ec;
  const auto size = static_cast<std::size_t>(std::filesystem::file_size(path, ec));
  Sha256 s;
  std::vector<char> buf(kMiB);
  auto read_at = [&](std::size_t off, std::size_t n) {
    f.seekg(static_cast<std::streamoff>(off));
    f.read(buf.data(), static_cast<std::streamsize>(n));
    s.update(buf.data(), static_cast<std::size_t>(f.gcount()));
  };
  if (size <= 2 * kMiB) {
    for (std::size_t off = 0; off < size; off += kMiB) read_at(off, std::min(kMiB, size - off));
  } else {
    read_at(0, kMiB);
    read_at(size - kMiB, kMiB);
  }
  return s.hex_digest();
}

std::string sha256_file_hex(const std::filesystem::path& path, std::uint64_t offset,
                            const std::atomic<bool>* cancel) {
  auto f = open_to_read(path, "cannot open to hash");
  if (offset) f.seekg(static_cast<std::streamoff>(offset));
  if (!f) fail_file(path, "cannot seek to byte " + std::to_string(offset) + " to hash");
  Sha256 s;
  std::vector<char> buf(std::size_t{4} << 20);
  while (f) {
    throw_if_cancelled(cancel);
    f.read(buf.data(), static_cast<std::streamsize>(buf.size()));
    s.update(buf.data(), static_cast<std::size_t>(f.gcount()));
  }
  if (!f.eof()) fail_file(path, "read failed while hashing");
  return s.hex_digest();
}

std::string safetensors_data_sha256_hex(const std::filesystem::path& path,
                                        const std::atomic<bool>* cancel) {
  auto f = open_to_read(path, "cannot open to hash");
  std::array<unsigned char, 8> len{};
  if (!f.read(reinterpret_cast<char*>(len.data()), 8))
    fail_file(path, "not a safetensors file: shorter than its 8-byte header length");
  std::uint64_t n = 0;  // little-endian
  for (int i = 7; i >= 0; --i) n = (n << 8) | len[static_cast<std::size_t>(i)];
  std::error_code ec;
  const auto size = std::filesystem::file_size(path, ec);
  if (ec || n > size - 8)
    fail_file(path, "not a safetensors file: its header length " + std::to_string(n) +
                        " passes the end of the file");
  return sha256_file_hex(path, 8 + n, cancel);
}

}  // namespace kinora
