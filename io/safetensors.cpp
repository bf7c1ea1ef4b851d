#include "io/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <ATen/Parallel.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <array>
#include <bit>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <limits>
#include <sstream>
#include <thread>

#include "base/error.h"
#include "base/files.h"
#include "base/json.h"
#include "base/signals.h"
#include "base/torch_compat.h"

static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__,
              "safetensors data is little-endian; a big-endian port needs byte swapping");

namespace kinora::io {
namespace fs = std::filesystem;
using nlohmann::json;

// ---------------------------------------------------------------- dtypes

namespace {
struct DTypeRow {
  DType dtype;
  const char* name;
  std::size_t size;
  torch::ScalarType torch_type;
};
constexpr std::array<DTypeRow, 12> kDTypes{{
    {DType::F64, "F64", 8, torch::kFloat64},
    {DType::F32, "F32", 4, torch::kFloat32},
    {DType::F16, "F16", 2, torch::kFloat16},
    {DType::BF16, "BF16", 2, torch::kBFloat16},
    {DType::F8_E4M3, "F8_E4M3", 1, torch::kBFloat16},
    {DType::F8_E5M2, "F8_E5M2", 1, torch::kBFloat16},
    {DType::I64, "I64", 8, torch::kInt64},
    {DType::I32, "I32", 4, torch::kInt32},
    {DType::I16, "I16", 2, torch::kInt16},
    {DType::I8, "I8", 1, torch::kInt8},
    {DType::U8, "U8", 1, torch::kUInt8},
    {DType::BOOL, "BOOL", 1, torch::kBool},
}};

const DTypeRow& row(DType d) {
  for (const auto& r : kDTypes)
    if (r.dtype == d) return r;
  throw Error("internal: unknown dtype");
}

const DTypeRow* find_dtype(const std::string& name) {
  for (const auto& r : kDTypes)
    if (name == r.name) return &r;
  return nullptr;
}
}  // namespace

const char* dtype_name(DType d) {
  return row(d).name;
}
std::size_t dtype_size(DType d) {
  return row(d).size;
}
bool is_fp8(DType d) {
  return d == DType::F8_E4M3 || d == DType::F8_E5M2;
}
torch::ScalarType torch_dtype(DType d) {
  return row(d).torch_type;
}

DType from_torch(torch::ScalarType t) {
  for (const auto& r : kDTypes)
    if (r.torch_type == t && !is_fp8(r.dtype)) return r.dtype;
  throw Error(std::string("safetensors has no dtype for torch type ") + c10::toString(t));
}

int64_t TensorInfo::numel() const {
  int64_t n = 1;
  for (auto d : shape) n *= d;
  return n;
}

// ---------------------------------------------------------------- mapping

class MappedFile {
 public:
  explicit MappedFile(const fs::path& path) : path_(path) {
    // Non-blocking: a named pipe is refused below instead of waiting for a writer.
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0) fail_file(path, std::string("cannot open: ") + std::strerror(errno));
    struct stat st {};
    if (::fstat(fd, &st) != 0) {
      const int err = errno;
      ::close(fd);
      fail_file(path, std::string("cannot stat: ") + std::strerror(err));
    }
    if (!S_ISREG(st.st_mode)) {
      ::close(fd);
      fail_file(path, "not a regular file");
    }
    size_ = static_cast<uint64_t>(st.st_size);
    if (size_ > 0) {
      // Private and writable: a caller that writes into a view gets its own copy of
      // the page instead of a crash, and the file is never modified. NORESERVE:
      // a checkpoint larger than RAM must still map.
      void* p = ::mmap(nullptr, size_, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_NORESERVE, fd, 0);
      if (p == MAP_FAILED) {
        const int err = errno;
        ::close(fd);
        fail_file(path, std::string("cannot map into memory: ") + std::strerror(err));
      }
      data_ = static_cast<uint8_t*>(p);
      register_mapped_file(data_, size_, path.string());
    }
    ::close(fd);
  }
  ~MappedFile() {
    if (!data_) return;
    unregister_mapped_file(data_);
    ::munmap(data_, size_);
  }
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;

  uint8_t* data() const { return data_; }
  uint64_t size() const { return size_; }

  // Reads the parts of the file that are not in the page cache, in large
  // sequential reads (madvise/fadvise WILLNEED start only a few MiB here).
  void prefetch() const {
    const long page = ::sysconf(_SC_PAGESIZE);
    if (!data_ || page <= 0) return;
    const auto pg = static_cast<uint64_t>(page);
    std::vector<unsigned char> cached((size_ + pg - 1) / pg);
    if (::mincore(data_, size_, cached.data()) != 0) return;
    const int fd = ::open(path_.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) return;
    ::posix_fadvise(fd, 0, 0, POSIX_FADV_SEQUENTIAL);
    constexpr uint64_t kChunk = 8 << 20;
    std::vector<char> buffer(kChunk);
    for (uint64_t at = 0; at < size_; at += kChunk) {
      const uint64_t n = std::min(kChunk, size_ - at);
      bool missing = false;
      for (uint64_t p = at / pg; p < (at + n + pg - 1) / pg && !missing; ++p)
        missing = !(cached[p] & 1);
      if (missing && ::pread(fd, buffer.data(), n, static_cast<off_t>(at)) <= 0) break;
    }
    ::close(fd);
  }

  // The pages holding bytes [from, from + length) of the file (clamped to it).
  bool release_resident(uint64_t from = 0, uint64_t length = UINT64_MAX) const {
    if (!data_ || from >= size_) return true;
    length = std::min(length, size_ - from);
    if (length == 0) return true;
    // A page written through the mapping is the process's own copy now:
    // dropping it would lose the write. /proc/self/pagemap tells such pages
    // (present, not file-backed: bits 63 and 61) from the file's.
    const long page = ::sysconf(_SC_PAGESIZE);
    std::ifstream map("/proc/self/pagemap", std::ios::binary);
    if (page <= 0 || !map) return false;
    const auto pg = static_cast<uint64_t>(page);
    const auto begin = reinterpret_cast<uintptr_t>(data_) + from / pg * pg;  // page-aligned
    const auto end = reinterpret_cast<uintptr_t>(data_) + from + length;
    const auto first = begin / pg;
    const auto pages = (end - begin + pg - 1) / pg;
    std::vector<uint64_t> entries(std::min<uint64_t>(pages, 1 << 16));
    map.seekg(static_cast<std::streamoff>(first * sizeof(uint64_t)));
    for (uint64_t done = 0; done < pages;) {
      const auto n = std::min<uint64_t>(entries.size(), pages - done);
      if (!map.read(reinterpret_cast<char*>(entries.data()),
                    static_cast<std::streamsize>(n * sizeof(uint64_t))))
        return false;
      for (uint64_t i = 0; i < n; ++i)
        if ((entries[i] >> 63 & 1) && !(entries[i] >> 61 & 1)) return false;
      done += n;
    }
    // The last page may reach past the file's end: still within the mapping.
    return ::madvise(reinterpret_cast<void*>(begin), pages * pg, MADV_DONTNEED) == 0;
  }

 private:
  fs::path path_;
  uint8_t* data_ = nullptr;
  uint64_t size_ = 0;
};

// ---------------------------------------------------------------- header validation

namespace {

std::string shape_string(const std::vector<int64_t>& shape) {
  std::ostringstream s;
  s << '[';
  for (std::size_t i = 0; i < shape.size(); ++i) s << (i ? ", " : "") << shape[i];
  s << ']';
  return s.str();
}

// Largest dimension accepted: far beyond any real tensor, small enough that a
// product of a few of them cannot wrap a 64-bit size silently.
constexpr int64_t kMaxDim = int64_t{1} << 40;
constexpr std::size_t kMaxRank = 16;

TensorInfo parse_entry(const fs::path& path, const std::string& name, const json& entry) {
  auto bad = [&](const std::string& what) { fail_file(path, "tensor '" + name + "': " + what); };
  if (!entry.is_object()) bad("entry is not a JSON object");
  TensorInfo info;
  info.name = name;

  const auto dt = entry.find("dtype");
  if (dt == entry.end() || !dt->is_string()) bad("missing or non-string \"dtype\"");
  const DTypeRow* r = find_dtype(dt->get<std::string>());
  if (!r) bad("unknown dtype '" + dt->get<std::string>() + "'");
  info.dtype = r->dtype;

  const auto sh = entry.find("shape");
  if (sh == entry.end() || !sh->is_array()) bad("missing or non-array \"shape\"");
  if (sh->size() > kMaxRank) bad("absurd rank " + std::to_string(sh->size()));
  for (const auto& d : *sh) {
    if (d.is_number_unsigned()) {
      const auto v = d.get<uint64_t>();
      if (v > static_cast<uint64_t>(kMaxDim)) bad("absurd dimension " + std::to_string(v));
      info.shape.push_back(static_cast<int64_t>(v));
    } else if (d.is_number_integer()) {
      bad("negative dimension " + std::to_string(d.get<int64_t>()));
    } else {
      bad("shape holds a non-integer: " + d.dump());
    }
  }

  const auto off = entry.find("data_offsets");
  if (off == entry.end() || !off->is_array() || off->size() != 2 ||
      !(*off)[0].is_number_unsigned() || !(*off)[1].is_number_unsigned())
    bad("\"data_offsets\" must be two non-negative integers");
  info.begin = (*off)[0].get<uint64_t>();
  info.end = (*off)[1].get<uint64_t>();
  if (info.end < info.begin)
    bad("data_offsets [" + std::to_string(info.begin) + ", " + std::to_string(info.end) +
        "] are out of order");

  // Byte size from shape × dtype, with overflow checks.
  uint64_t bytes = r->size;
  for (auto d : info.shape) {
    if (__builtin_mul_overflow(bytes, static_cast<uint64_t>(d), &bytes))
      bad("shape " + shape_string(info.shape) + " overflows a 64-bit byte count");
  }
  if (bytes != info.end - info.begin)
    bad("shape " + shape_string(info.shape) + " × " + r->name + " is " + std::to_string(bytes) +
        " bytes, but data_offsets span " + std::to_string(info.end - info.begin));
  for (auto extra : entry.items()) {
    const auto& k = extra.key();
    if (k != "dtype" && k != "shape" && k != "data_offsets") bad("unexpected field '" + k + "'");
  }
  return info;
}

}  // namespace

std::shared_ptr<SafetensorsFile> SafetensorsFile::open(const fs::path& path) {
  std::shared_ptr<SafetensorsFile> file(new SafetensorsFile());
  file->path_ = path;
  file->map_ = std::make_shared<MappedFile>(path);
  const uint64_t size = file->map_->size();
  const uint8_t* base = file->map_->data();

  if (size < 8)
    fail_file(path, "truncated: " + std::to_string(size) +
                        " bytes, too short for the 8-byte header length of a safetensors file");
  uint64_t n = 0;
  std::memcpy(&n, base, 8);
  // A header length within bounds, then the header's opening brace: safetensors,
  // whatever its first bytes resemble (a length of 1408 starts 0x80 0x05,
  // like a pickle). The formats below never look so.
  const bool plausible = n > 0 && n <= kMaxHeaderBytes && size > 8 && base[8] == '{';
  if (!plausible) {
    // PyTorch's own formats, as .ckpt / .pt / .bin files hold them: a zip
    // archive (torch.save since 1.6) or a bare pickle.
    if (base[0] == 'P' && base[1] == 'K' && base[2] == 3 && base[3] == 4)
      fail_file(path,
                "a PyTorch zip archive (torch.save: a .ckpt, .pt or .bin checkpoint), not "
                "safetensors; Kinora reads safetensors only (they load without running code): "
                "convert it, or download the .safetensors release");
    if (base[0] == 0x80 && base[1] >= 2 && base[1] <= 5)
      fail_file(path,
                "a Python pickle (an old .ckpt or .pt checkpoint), not safetensors; Kinora reads "
                "safetensors only (they load without running code): convert it, or download the "
                ".safetensors release");
    // A picture or a video (a render given where a model goes).
    const char* media =
        base[0] == 0x89 && base[1] == 'P' && base[2] == 'N' && base[3] == 'G' ? "a PNG image"
        : size > 8 && base[4] == 'f' && base[5] == 't' && base[6] == 'y' && base[7] == 'p'
            ? "an MP4 or MOV video"
        : base[0] == 0x1a && base[1] == 0x45 && base[2] == 0xdf && base[3] == 0xa3
            ? "a WebM or Matroska video"
        : base[0] == 0xff && base[1] == 0xd8 && base[2] == 0xff ? "a JPEG image"
                                                                : nullptr;
    if (media)
      fail_file(path, std::string(media) +
                          ", not a safetensors model file (kinora restore reads the parameters "
                          "of a Kinora render)");
    // A SentencePiece tokenizer (spiece.model, a protobuf whose first field
    // is its first piece: 0x0A, a length, 0x0A …), given where a model goes.
    if (base[0] == 0x0a && size > 8 && path.extension() == ".model")
      fail_file(path,
                "a SentencePiece tokenizer model, not a safetensors model file (give it as the "
                "tokenizer, --tokenizer)");
    // llama.cpp's format, which stable-diffusion.cpp and ComfyUI-GGUF load.
    if (base[0] == 'G' && base[1] == 'G' && base[2] == 'U' && base[3] == 'F')
      fail_file(path,
                "a GGUF file (the quantized format of llama.cpp, stable-diffusion.cpp and "
                "ComfyUI-GGUF), not safetensors; Kinora reads safetensors only (bf16, fp16, "
                "fp32 or FP8 weights): download the .safetensors release");
  }
  if (n > kMaxHeaderBytes)
    fail_file(path, "header length " + std::to_string(n) + " bytes exceeds the " +
                        std::to_string(kMaxHeaderBytes >> 20) +
                        " MiB limit (not a safetensors file, or corrupt)");
  if (n > size - 8)
    fail_file(path, "header length " + std::to_string(n) + " runs past the end of the file (" +
                        std::to_string(size) + " bytes): truncated or not a safetensors file");

  const json header =
      parse_json(std::string_view(reinterpret_cast<const char*>(base + 8), n),
                 path.string() + " (header)", {kMaxHeaderBytes, JsonLimits{}.max_depth});
  if (!header.is_object()) fail_file(path, "header is not a JSON object");

  file->data_start_ = 8 + n;
  const uint64_t data_size = size - file->data_start_;

  for (auto& item : header.items()) {
    if (item.key() == "__metadata__") {
      if (!item.value().is_object()) fail_file(path, "__metadata__ is not a JSON object");
      for (auto& kv : item.value().items()) {
        if (!kv.value().is_string())
          fail_file(path, "__metadata__ value for '" + kv.key() + "' is not a string");
        file->metadata_[kv.key()] = kv.value().get<std::string>();
      }
      continue;
    }
    TensorInfo info = parse_entry(path, item.key(), item.value());
    if (info.end > data_size)
      fail_file(path, "tensor '" + info.name + "': data_offsets [" + std::to_string(info.begin) +
                          ", " + std::to_string(info.end) + "] lie outside the data section of " +
                          std::to_string(data_size) + " bytes (file truncated?)");
    file->tensors_.push_back(std::move(info));
  }

  // The data section must be covered exactly once: no overlaps, no holes.
  auto& ts = file->tensors_;
  std::sort(ts.begin(), ts.end(), [](const TensorInfo& a, const TensorInfo& b) {
    return a.begin != b.begin ? a.begin < b.begin : a.end < b.end;
  });
  uint64_t covered = 0;
  const TensorInfo* prev = nullptr;
  for (const auto& t : ts) {
    if (t.begin < covered)
      fail_file(path,
                "tensors '" + prev->name + "' and '" + t.name + "' overlap in the data section");
    if (t.begin > covered)
      fail_file(path, "bytes " + std::to_string(covered) + ".." + std::to_string(t.begin) +
                          " of the data section belong to no tensor (bad data_offsets)");
    covered = t.end;
    prev = &t;
  }
  if (covered != data_size)
    fail_file(path, std::to_string(data_size - covered) +
                        " bytes after the last tensor belong to no tensor (bad data_offsets)");
  for (std::size_t i = 0; i < ts.size(); ++i) file->index_[ts[i].name] = i;
  return file;
}

const TensorInfo& SafetensorsFile::info(const std::string& name) const {
  const auto it = index_.find(name);
  if (it == index_.end()) fail_file(path_, "no tensor named '" + name + "'");
  return tensors_[it->second];
}

void SafetensorsFile::prefetch() const {
  std::thread([map = map_] {
    // At the lowest priority: the reads wait for the disk, not for the
    // computation that runs beside them.
    ::setpriority(PRIO_PROCESS, static_cast<id_t>(::gettid()), 19);
    map->prefetch();
  }).detach();
}

bool SafetensorsFile::release_resident() const {
  return map_->release_resident();
}

bool SafetensorsFile::release_resident(const std::string& name, uint64_t from,
                                       uint64_t length) const {
  const auto& t = info(name);
  if (from >= t.nbytes()) return true;
  return map_->release_resident(data_start_ + t.begin + from, std::min(length, t.nbytes() - from));
}

uint64_t SafetensorsFile::file_size() const {
  return map_->size();
}

bool SafetensorsFile::is_zero_copy(const std::string& name) const {
  const auto& t = info(name);
  if (is_fp8(t.dtype)) return false;
  const auto addr = reinterpret_cast<std::uintptr_t>(map_->data() + data_start_ + t.begin);
  return addr % dtype_size(t.dtype) == 0;
}

torch::Tensor SafetensorsFile::raw(const std::string& name) const {
  const auto& t = info(name);
  auto keep = map_;
  return torch::from_blob(
      map_->data() + data_start_ + t.begin, {static_cast<int64_t>(t.nbytes())},
      [keep](void*) mutable { keep.reset(); }, torch::TensorOptions().dtype(torch::kUInt8));
}

torch::Tensor SafetensorsFile::get(const std::string& name) const {
  const auto& t = info(name);
  if (is_fp8(t.dtype)) return widen_fp8(raw(name), t.dtype).view(t.shape);
  const auto options = torch::TensorOptions().dtype(torch_dtype(t.dtype));
  uint8_t* ptr = map_->data() + data_start_ + t.begin;
  if (is_zero_copy(name)) {
    auto keep = map_;
    return torch::from_blob(
        ptr, t.shape, [keep](void*) mutable { keep.reset(); }, options);
  }
  // Unaligned data: copy it out so that element access is well-defined.
  auto out = torch::empty(t.shape, options);
  std::memcpy(out.data_ptr(), ptr, t.nbytes());
  return out;
}

// ---------------------------------------------------------------- FP8

namespace {
float decode_e4m3(uint8_t b) {  // "fn" variant: no infinities, NaN at S.1111.111
  const int sign = b >> 7, exp = (b >> 3) & 0xF, man = b & 0x7;
  float v;
  if (exp == 0xF && man == 0x7) return std::numeric_limits<float>::quiet_NaN();
  if (exp == 0)
    v = std::ldexp(static_cast<float>(man) / 8.0f, -6);
  else
    v = std::ldexp(1.0f + static_cast<float>(man) / 8.0f, exp - 7);
  return sign ? -v : v;
}
float decode_e5m2(uint8_t b) {  // IEEE-like: infinities and NaNs at exponent 31
  const int sign = b >> 7, exp = (b >> 2) & 0x1F, man = b & 0x3;
  float v;
  if (exp == 0x1F)
    v = man == 0 ? std::numeric_limits<float>::infinity() : std::numeric_limits<float>::quiet_NaN();
  else if (exp == 0)
    v = std::ldexp(static_cast<float>(man) / 4.0f, -14);
  else
    v = std::ldexp(1.0f + static_cast<float>(man) / 4.0f, exp - 15);
  return sign ? -v : v;
}
}  // namespace

torch::Tensor widen_fp8(const torch::Tensor& bytes, DType fp8, torch::ScalarType to) {
  TORCH_CHECK(bytes.scalar_type() == torch::kUInt8, "widen_fp8 expects uint8 bytes");
  TORCH_CHECK(is_fp8(fp8), "widen_fp8 expects an FP8 dtype");
  static const torch::Tensor tables[2] = {[] {
                                            auto t = torch::empty({256}, torch::kFloat32);
                                            for (int i = 0; i < 256; ++i)
                                              t[i] = decode_e4m3(static_cast<uint8_t>(i));
                                            return t;
                                          }(),
                                          [] {
                                            auto t = torch::empty({256}, torch::kFloat32);
                                            for (int i = 0; i < 256; ++i)
                                              t[i] = decode_e5m2(static_cast<uint8_t>(i));
                                            return t;
                                          }()};
  const auto& table = tables[fp8 == DType::F8_E4M3 ? 0 : 1];
  // On the CPU, a pass looking each byte up (every FP8 value is exact in bf16).
  if (bytes.is_cpu() && (to == torch::kFloat32 || to == torch::kBFloat16)) {
    const auto b = bytes.contiguous();
    auto out = torch::empty(b.sizes(), b.options().dtype(to));
    const uint8_t* in = b.data_ptr<uint8_t>();
    const float* t = table.data_ptr<float>();
    if (to == torch::kFloat32) {
      float* o = out.data_ptr<float>();
      at::parallel_for(0, b.numel(), 1 << 16, [&](int64_t lo, int64_t hi) {
        for (int64_t i = lo; i < hi; ++i) o[i] = t[in[i]];
      });
    } else {
      uint16_t t16[256];
      for (int i = 0; i < 256; ++i) {
        uint32_t bits = 0;
        std::memcpy(&bits, &t[i], sizeof bits);
        t16[i] = static_cast<uint16_t>(bits >> 16);
      }
      auto* o = static_cast<uint16_t*>(out.data_ptr());
      at::parallel_for(0, b.numel(), 1 << 16, [&](int64_t lo, int64_t hi) {
        for (int64_t i = lo; i < hi; ++i) o[i] = t16[in[i]];
      });
    }
    return out;
  }
  // Elsewhere LibTorch's float8 dtypes where it has them (2.1 on), else the table.
  if (auto w = compat::widen_fp8_native(bytes, fp8 == DType::F8_E4M3, to); w.defined()) return w;
  auto idx = bytes.reshape({-1}).to(torch::kInt32);
  return table.to(bytes.device()).to(to).index_select(0, idx).view(bytes.sizes());
}

// ---------------------------------------------------------------- writer

void save_safetensors(const fs::path& path, const std::vector<TensorSpec>& specs,
                      const std::function<torch::Tensor(std::size_t)>& make,
                      const std::map<std::string, std::string>& metadata, bool replace) {
  json header = json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  uint64_t offset = 0;
  for (const auto& s : specs) {
    if (s.name == "__metadata__") fail_file(path, "'__metadata__' cannot name a tensor");
    if (header.contains(s.name)) fail_file(path, "tensor name '" + s.name + "' given twice");
    const DType d = from_torch(s.dtype);
    uint64_t numel = 1;
    for (const auto n : s.shape) numel *= static_cast<uint64_t>(n);
    const uint64_t nbytes = numel * dtype_size(d);
    header[s.name] = {
        {"dtype", dtype_name(d)}, {"shape", s.shape}, {"data_offsets", {offset, offset + nbytes}}};
    offset += nbytes;
  }
  std::string text = header.dump();
  // Pad with spaces so that the data section starts 8-byte aligned (zero-copy reads).
  while ((8 + text.size()) % 8 != 0) text.push_back(' ');

  write_file_atomically(
      path,
      [&](std::FILE* f) {
        const uint64_t n = text.size();
        bool ok = std::fwrite(&n, 8, 1, f) == 1 &&
                  std::fwrite(text.data(), 1, text.size(), f) == text.size();
        for (std::size_t i = 0; ok && i < specs.size(); ++i) {
          const auto t = make(i).detach().to(torch::kCPU).contiguous();
          if (t.scalar_type() != specs[i].dtype || t.sizes().vec() != specs[i].shape)
            fail_file(path, "tensor '" + specs[i].name +
                                "' was made with another shape or dtype "
                                "than declared");
          const auto bytes = static_cast<std::size_t>(t.numel()) * t.element_size();
          ok = bytes == 0 || std::fwrite(t.data_ptr(), 1, bytes, f) == bytes;
        }
        return ok;
      },
      replace);
}

void save_safetensors(const fs::path& path,
                      const std::vector<std::pair<std::string, torch::Tensor>>& tensors,
                      const std::map<std::string, std::string>& metadata, bool replace) {
  std::vector<TensorSpec> specs;
  specs.reserve(tensors.size());
  for (const auto& [name, tensor] : tensors)
    specs.push_back({name, tensor.sizes().vec(), tensor.scalar_type()});
  save_safetensors(
      path, specs, [&](std::size_t i) { return tensors[i].second; }, metadata, replace);
}

}  // namespace kinora::io
