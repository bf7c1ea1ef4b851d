#include "text/tokenizer.h"

#include <dlfcn.h>
#include <unistd.h>

#include <cctype>
#include <cstdint>
#include <fstream>
#include <iterator>
#include <mutex>

#include "base/error.h"
#include "base/files.h"
#include "base/runtime.h"
#include "text/spm_bpe.h"

namespace kinora::text {

namespace {

// The C shim over libsentencepiece (text/spm_shim.cpp), loaded once.
struct Shim {
  void* (*load)(const char*, char*, std::size_t) = nullptr;
  void (*free)(void*) = nullptr;
  int (*piece_size)(void*) = nullptr;
  int (*encode)(void*, const char*, std::size_t, int*, int, char*, std::size_t) = nullptr;
  int (*train)(const char*, char*, std::size_t) = nullptr;
};

const Shim& shim() {
  static Shim s;
  static std::string error;
  static std::once_flag once;
  std::call_once(once, [] {
    std::vector<std::filesystem::path> candidates;
    if (const char* env = std::getenv("KINORA_SPM_SHIM")) candidates.emplace_back(env);
    candidates.push_back(executable_dir() / "libkinora_spm.so");
    candidates.push_back(executable_dir() / "../lib/kinora/libkinora_spm.so");
    void* h = nullptr;
    for (const auto& c : candidates) {
      h = ::dlopen(c.c_str(), RTLD_NOW | RTLD_LOCAL | RTLD_DEEPBIND);
      if (h) break;
      error += std::string(error.empty() ? "" : "; ") + ::dlerror();
    }
    if (!h) return;
    s.load = reinterpret_cast<decltype(s.load)>(::dlsym(h, "kinora_spm_load"));
    s.free = reinterpret_cast<decltype(s.free)>(::dlsym(h, "kinora_spm_free"));
    s.piece_size = reinterpret_cast<decltype(s.piece_size)>(::dlsym(h, "kinora_spm_piece_size"));
    s.encode = reinterpret_cast<decltype(s.encode)>(::dlsym(h, "kinora_spm_encode"));
    s.train = reinterpret_cast<decltype(s.train)>(::dlsym(h, "kinora_spm_train"));
  });
  if (!s.load || !s.free || !s.piece_size || !s.encode || !s.train)
    throw Error("the SentencePiece library shim (libkinora_spm.so) could not be loaded: " + error);
  return s;
}

// Why `path` did not load as a SentencePiece model: the library's reason, or
// for what users give by mistake (a text encoder's weights), what it is.
std::string not_a_tokenizer(const std::filesystem::path& path, const std::string& err) {
  std::string head(9, '\0');
  std::ifstream(path, std::ios::binary).read(head.data(), 9);
  if (head[8] == '{')
    return "a safetensors checkpoint (a text encoder's weights?), not a SentencePiece tokenizer "
           "model; the tokenizer is a .model file (spiece.model, tokenizer.model)";
  if (err.find("ParseFromArray") != std::string::npos)
    return "not a SentencePiece tokenizer model (its bytes do not read as one; the tokenizer is "
           "a .model file such as spiece.model)";
  return "not a SentencePiece tokenizer model: " + err;
}

}  // namespace

struct Tokenizer::Model {
  std::filesystem::path path;
  std::optional<SpmBpe> native;
  mutable std::once_flag loaded;
  mutable void* handle = nullptr;  // the library's, loaded when first needed
  void* library() const {
    std::call_once(loaded, [&] {
      char err[512] = {0};
      handle = shim().load(path.c_str(), err, sizeof err);
      if (!handle) fail_file(path, not_a_tokenizer(path, err));
    });  // a throw leaves the flag unset, so handle is set past this point
    return handle;
  }
  ~Model() {
    if (handle) shim().free(handle);
  }
};

Tokenizer::~Tokenizer() = default;
Tokenizer::Tokenizer(Tokenizer&&) noexcept = default;
Tokenizer& Tokenizer::operator=(Tokenizer&&) noexcept = default;

Tokenizer Tokenizer::load(const std::filesystem::path& path, Backend backend) {
  Tokenizer t;
  t.sp_ = std::make_unique<Model>();
  t.sp_->path = path;
  if (backend == Backend::Auto) t.sp_->native = SpmBpe::from_file(path);
  // A model SpmBpe does not read is checked now, by the library.
  if (!t.sp_->native) t.sp_->library();
  return t;
}

namespace {

// Protobuf's varint, appended.
void put_varint(std::string& out, uint64_t v) {
  while (v >= 0x80) {
    out.push_back(static_cast<char>((v & 0x7F) | 0x80));
    v >>= 7;
  }
  out.push_back(static_cast<char>(v));
}

// The ModelProto in `bytes` without what names the training's own files
// (trainer_spec's input and model_prefix, fields 1 and 2 of field 2): they
// differ from one training to the next, and nothing reads them. The same
// sentences and options then give the same bytes. Returns the bytes as they
// are where they do not parse.
std::string without_training_paths(const std::string& bytes) {
  struct Reader {
    const std::string& b;
    std::size_t at = 0;
    bool ok = true;
    uint64_t varint() {
      uint64_t v = 0;
      for (int shift = 0; ok; shift += 7) {
        if (at >= b.size() || shift > 63) {
          ok = false;
          break;
        }
        const auto c = static_cast<unsigned char>(b[at++]);
        v |= static_cast<uint64_t>(c & 0x7F) << shift;
        if (!(c & 0x80)) break;
      }
      return v;
    }
    // The field at `at`: its number and the bytes [start, end) it spans whole.
    bool next(uint32_t& field, uint32_t& type, std::size_t& body, std::size_t& end) {
      if (at >= b.size()) return false;
      const uint64_t key = varint();
      field = static_cast<uint32_t>(key >> 3), type = static_cast<uint32_t>(key & 7);
      std::size_t len = 0;
      if (type == 0) {
        varint();
      } else if (type == 1 || type == 5) {
        len = type == 1 ? 8 : 4;
      } else if (type == 2) {
        len = static_cast<std::size_t>(varint());
      } else {
        ok = false;
      }
      body = at;
      if (!ok || len > b.size() - at) return ok = false;
      at += len;
      end = at;
      return true;
    }
  };
  Reader r{bytes};
  std::string out;
  uint32_t field = 0, type = 0;
  std::size_t start = 0, body = 0, end = 0;
  for (start = r.at; r.next(field, type, body, end); start = r.at) {
    if (field != 2 || type != 2) {
      out.append(bytes, start, end - start);
      continue;
    }
    const std::string spec(bytes, body, end - body);
    Reader t{spec};
    std::string kept;
    uint32_t f = 0, ty = 0;
    std::size_t s0 = 0, b0 = 0, e0 = 0;
    for (s0 = t.at; t.next(f, ty, b0, e0); s0 = t.at)
      if (!((f == 1 || f == 2) && ty == 2)) kept.append(spec, s0, e0 - s0);
    if (!t.ok) return bytes;
    put_varint(out, (2u << 3) | 2u);
    put_varint(out, kept.size());
    out += kept;
  }
  return r.ok ? out : bytes;
}

}  // namespace

void Tokenizer::train(const std::vector<std::string>& sentences,
                      const std::filesystem::path& model_path, int64_t vocab_size) {
  if (sentences.empty()) throw Error("tokenizer training needs at least one sentence");
  const auto& s = shim();
  namespace fs = std::filesystem;
  const fs::path dir = model_path.parent_path().empty() ? fs::path(".") : model_path.parent_path();
  const auto stem = dir / (".spm-train-" + std::to_string(::getpid()));
  const auto input = fs::path(stem.string() + ".txt");
  {
    std::ofstream f(input);
    for (const auto& line : sentences) f << clean(line) << "\n";
    if (!f) fail_file(input, "could not write the tokenizer's training text");
  }
  // T5's special ids: <pad> 0, </s> 1, <unk> 2, no <s>.
  const std::string args = "--input=" + input.string() + " --model_prefix=" + stem.string() +
                           " --vocab_size=" + std::to_string(vocab_size) +
                           " --model_type=bpe --character_coverage=1.0"
                           " --pad_id=0 --eos_id=1 --unk_id=2 --bos_id=-1"
                           " --hard_vocab_limit=false --num_threads=1 --minloglevel=2";
  char err[512] = {0};
  const int rc = s.train(args.c_str(), err, sizeof err);
  std::error_code ec;
  fs::remove(input, ec);
  fs::remove(stem.string() + ".vocab", ec);
  if (rc != 0) {
    fs::remove(stem.string() + ".model", ec);
    fail_file(model_path, std::string("SentencePiece training failed: ") + err);
  }
  const auto trained = fs::path(stem.string() + ".model");
  std::string bytes;
  {
    std::ifstream in(trained, std::ios::binary);
    bytes.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
    if (!in.good() && !in.eof()) bytes.clear();
  }
  fs::remove(trained, ec);
  if (bytes.empty()) fail_file(model_path, "could not read the trained tokenizer model back");
  write_file_atomically(model_path, without_training_paths(bytes));
}

int64_t Tokenizer::vocab_size() const {
  return sp_->native ? sp_->native->size() : shim().piece_size(sp_->library());
}

namespace {

void append_utf8(std::string& out, uint32_t cp) {
  if (cp < 0x80) {
    out += static_cast<char>(cp);
  } else if (cp < 0x800) {
    out += static_cast<char>(0xC0 | (cp >> 6));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    out += static_cast<char>(0xE0 | (cp >> 12));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else {
    out += static_cast<char>(0xF0 | (cp >> 18));
    out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  }
}

// Python's html.unescape for the entities prompts actually contain: the five
// XML ones, &nbsp;, and numeric references.
std::string html_unescape(const std::string& s) {
  static const std::pair<const char*, const char*> named[] = {
      {"amp", "&"}, {"lt", "<"}, {"gt", ">"}, {"quot", "\""}, {"apos", "'"}, {"nbsp", "\xC2\xA0"}};
  std::string out;
  for (std::size_t i = 0; i < s.size();) {
    if (s[i] == '&') {
      const auto semi = s.find(';', i);
      if (semi != std::string::npos && semi - i <= 10) {
        const std::string ent = s.substr(i + 1, semi - i - 1);
        bool done = false;
        if (!ent.empty() && ent[0] == '#') {
          try {
            const bool hex = ent.size() > 1 && (ent[1] == 'x' || ent[1] == 'X');
            const auto cp = std::stoul(ent.substr(hex ? 2 : 1), nullptr, hex ? 16 : 10);
            if (cp > 0 && cp <= 0x10FFFF) {
              append_utf8(out, static_cast<uint32_t>(cp));
              done = true;
            }
          } catch (const std::exception&) {
          }
        } else {
          for (const auto& [name, value] : named)
            if (ent == name) {
              out += value;
              done = true;
            }
        }
        if (done) {
          i = semi + 1;
          continue;
        }
      }
    }
    out += s[i++];
  }
  return out;
}

}  // namespace

std::string Tokenizer::clean(const std::string& text) {
  const std::string s = html_unescape(html_unescape(text));
  std::string out;
  bool space = false;
  for (std::size_t i = 0; i < s.size(); ++i) {
    const unsigned char c = static_cast<unsigned char>(s[i]);
    // ASCII whitespace and U+00A0 (no-break space) count as whitespace, as in Python's \s.
    const bool nbsp = c == 0xC2 && i + 1 < s.size() && static_cast<unsigned char>(s[i + 1]) == 0xA0;
    if (std::isspace(c) || nbsp) {
      space = true;
      if (nbsp) ++i;
      continue;
    }
    if (space && !out.empty()) out += ' ';
    space = false;
    out += static_cast<char>(c);
  }
  return out;
}

Tokens Tokenizer::encode(const std::string& text, int64_t max_len) const {
  if (max_len < 1) throw Error("tokenizer: max_len must be at least 1");
  const std::string cleaned = clean(text);
  std::vector<int> pieces;
  if (auto native = sp_->native ? sp_->native->encode(cleaned) : std::nullopt) {
    pieces = std::move(*native);
  } else {
    void* handle = sp_->library();
    pieces.resize(cleaned.size() + 16);
    char err[512] = {0};
    int n = shim().encode(handle, cleaned.data(), cleaned.size(), pieces.data(),
                          static_cast<int>(pieces.size()), err, sizeof err);
    if (n > static_cast<int>(pieces.size())) {
      pieces.resize(static_cast<std::size_t>(n));
      n = shim().encode(handle, cleaned.data(), cleaned.size(), pieces.data(), n, err, sizeof err);
    }
    if (n < 0) throw Error(std::string("tokenizer: cannot encode the prompt: ") + err);
    pieces.resize(static_cast<std::size_t>(n));
  }
  Tokens t;
  t.truncated = static_cast<int64_t>(pieces.size()) + 1 > max_len;
  if (t.truncated) pieces.resize(static_cast<std::size_t>(max_len - 1));
  t.length = static_cast<int64_t>(pieces.size()) + 1;  // + </s>
  t.ids = torch::full({1, max_len}, kPad, torch::kInt64);
  t.mask = torch::zeros({1, max_len}, torch::kInt64);
  auto ids = t.ids.accessor<int64_t, 2>();
  for (std::size_t i = 0; i < pieces.size(); ++i) ids[0][static_cast<int64_t>(i)] = pieces[i];
  ids[0][t.length - 1] = kEos;
  t.mask.slice(1, 0, t.length).fill_(1);
  return t;
}

}  // namespace kinora::text
