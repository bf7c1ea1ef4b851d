#include "text/clip_tokenizer.h"

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstring>
#include <fstream>
#include <sstream>

#include "base/error.h"
#include "base/json.h"

namespace kinora::text {
namespace fs = std::filesystem;

namespace {

// UTF-8 → code points; invalid bytes come through as U+FFFD.
std::vector<char32_t> decode(const std::string& s) {
  std::vector<char32_t> out;
  for (std::size_t i = 0; i < s.size();) {
    const auto c = static_cast<unsigned char>(s[i]);
    const int n = c < 0x80 ? 0 : (c >> 5) == 6 ? 1 : (c >> 4) == 14 ? 2 : (c >> 3) == 30 ? 3 : -1;
    bool ok = n >= 0 && i + static_cast<std::size_t>(n) < s.size();
    char32_t cp = n <= 0 ? c : c & (0x3F >> n);
    for (int k = 1; ok && k <= n; ++k) {
      const auto b = static_cast<unsigned char>(s[i + k]);
      ok = (b >> 6) == 2;
      cp = (cp << 6) | (b & 0x3F);
    }
    out.push_back(ok ? cp : 0xFFFD);
    i += ok ? n + 1 : 1;
  }
  return out;
}

void append_utf8(std::string& s, char32_t cp) {
  if (cp < 0x80) {
    s += static_cast<char>(cp);
  } else if (cp < 0x800) {
    s += static_cast<char>(0xC0 | (cp >> 6));
    s += static_cast<char>(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    s += static_cast<char>(0xE0 | (cp >> 12));
    s += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    s += static_cast<char>(0x80 | (cp & 0x3F));
  } else {
    s += static_cast<char>(0xF0 | (cp >> 18));
    s += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
    s += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    s += static_cast<char>(0x80 | (cp & 0x3F));
  }
}

bool in(char32_t c, char32_t lo, char32_t hi) {
  return c >= lo && c <= hi;
}

// Python's \s.
bool is_space(char32_t c) {
  return in(c, 9, 13) || c == 32 || in(c, 0x1C, 0x1F) || c == 0x85 || c == 0xA0 || c == 0x1680 ||
         in(c, 0x2000, 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F || c == 0x205F ||
         c == 0x3000;
}

// \p{N}, by the common ranges.
bool is_digit(char32_t c) {
  return in(c, '0', '9') || c == 0xB2 || c == 0xB3 || c == 0xB9 || in(c, 0xBC, 0xBE) ||
         in(c, 0x660, 0x669) || in(c, 0x6F0, 0x6F9) || in(c, 0x966, 0x96F) || in(c, 0xFF10, 0xFF19);
}

// \p{L}, by ranges: ASCII and Latin-1 letters, and every code point above
// U+00FF outside the mark, punctuation, symbol, private-use and emoji blocks.
bool is_letter(char32_t c) {
  if (c < 0x80) return in(c, 'a', 'z') || in(c, 'A', 'Z');
  if (c < 0x100)
    return c == 0xAA || c == 0xB5 || c == 0xBA || (c >= 0xC0 && c != 0xD7 && c != 0xF7);
  if (is_digit(c) || is_space(c)) return false;
  static const std::pair<char32_t, char32_t> other[] = {
      {0x300, 0x36F},     {0x37E, 0x37E},   {0x387, 0x387},   {0x482, 0x489},
      {0x55A, 0x55F},     {0x589, 0x58A},   {0x5BE, 0x5BE},   {0x60C, 0x60D},
      {0x61B, 0x61F},     {0x64B, 0x65F},   {0x6D4, 0x6D4},   {0x964, 0x965},
      {0x2000, 0x2BFF},   {0x2E00, 0x2E7F}, {0x3000, 0x303F}, {0xD800, 0xF8FF},
      {0xFE00, 0xFE0F},   {0xFE10, 0xFE6F}, {0xFF00, 0xFF0F}, {0xFF1A, 0xFF20},
      {0xFF3B, 0xFF40},   {0xFF5B, 0xFF65}, {0xFFF0, 0xFFFF}, {0x1F000, 0x1FAFF},
      {0xE0000, 0x10FFFF}};
  for (const auto& [lo, hi] : other)
    if (in(c, lo, hi)) return false;
  return true;
}

char32_t lower(char32_t c) {
  if (in(c, 'A', 'Z')) return c + 32;
  if (in(c, 0xC0, 0xDE) && c != 0xD7) return c + 32;
  if ((in(c, 0x100, 0x137) || in(c, 0x14A, 0x177)) && c % 2 == 0) return c + 1;
  if (in(c, 0x139, 0x148) && c % 2 == 1) return c + 1;
  if (in(c, 0x391, 0x3A9) && c != 0x3A2) return c + 32;
  if (in(c, 0x410, 0x42F)) return c + 32;
  if (in(c, 0x400, 0x40F)) return c + 80;
  return c;
}

std::string read_file(const fs::path& p) {
  errno = 0;
  std::ifstream in(p, std::ios::binary);
  if (!in)
    fail_file(p, errno ? std::string("cannot be read: ") + std::strerror(errno) : "cannot be read");
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

}  // namespace

std::string ClipTokenizer::normalise(const std::string& text) {
  std::string out;
  bool space = false;
  for (char32_t c : decode(text)) {
    if (is_space(c)) {
      space = !out.empty();
      continue;
    }
    if (space) out += ' ';
    space = false;
    append_utf8(out, lower(c));
  }
  return out;
}

std::vector<std::string> ClipTokenizer::pre_tokenize(const std::string& text) {
  const auto cps = decode(text);
  std::vector<std::string> out;
  const std::size_t n = cps.size();
  auto text_at = [&](std::size_t i, const char* lit) {
    for (std::size_t k = 0; lit[k]; ++k)
      if (i + k >= n || cps[i + k] != static_cast<char32_t>(lit[k])) return false;
    return true;
  };
  auto piece = [&](std::size_t from, std::size_t to) {
    std::string s;
    for (std::size_t k = from; k < to; ++k) append_utf8(s, cps[k]);
    out.push_back(std::move(s));
  };
  for (std::size_t i = 0; i < n;) {
    const char32_t c = cps[i];
    if (is_space(c)) {
      ++i;
      continue;
    }
    bool matched = false;
    for (const char* lit :
         {"<|startoftext|>", "<|endoftext|>", "'s", "'t", "'re", "'ve", "'m", "'ll", "'d"}) {
      if (text_at(i, lit)) {
        const std::size_t len = std::char_traits<char>::length(lit);
        piece(i, i + len);
        i += len;
        matched = true;
        break;
      }
    }
    if (matched) continue;
    std::size_t j = i + 1;
    if (is_letter(c)) {
      while (j < n && is_letter(cps[j])) ++j;
    } else if (!is_digit(c)) {
      while (j < n && !is_space(cps[j]) && !is_letter(cps[j]) && !is_digit(cps[j])) ++j;
    }
    piece(i, j);
    i = j;
  }
  return out;
}

ClipTokenizer ClipTokenizer::from_strings(const std::string& vocab_json, const std::string& merges,
                                          const std::string& source) {
  ClipTokenizer t;
  t.source_ = source;
  const auto j = parse_json(vocab_json, source + " (vocab.json)", {.max_bytes = 64u << 20});
  if (!j.is_object() || j.empty())
    throw Error(source + ": vocab.json is not an object of token → id");
  for (const auto& [k, v] : j.items()) {
    if (!v.is_number_integer())
      throw Error(source + ": vocab.json: the id of '" + k + "' is not an integer");
    const auto id = v.get<int64_t>();
    if (id < 0) throw Error(source + ": vocab.json: the id of '" + k + "' is negative");
    t.vocab_.emplace(k, id);
    t.max_id_ = std::max(t.max_id_, id);
  }
  for (const char* special : {"<|startoftext|>", "<|endoftext|>"})
    if (!t.vocab_.count(special))
      throw Error(source + ": vocab.json has no '" + special + "': not a CLIP vocabulary");
  t.bos_ = t.vocab_.at("<|startoftext|>");
  t.eos_ = t.vocab_.at("<|endoftext|>");
  std::istringstream lines(merges);
  int rank = 0, line_no = 0;
  for (std::string line; std::getline(lines, line);) {
    ++line_no;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.empty() || (line_no == 1 && line.rfind("#version", 0) == 0)) continue;
    const auto sp = line.find(' ');
    if (sp == std::string::npos || sp == 0 || sp + 1 == line.size() ||
        line.find(' ', sp + 1) != std::string::npos)
      throw Error(source + ": merges.txt line " + std::to_string(line_no) +
                  " is not two symbols separated by a space");
    t.ranks_.emplace(std::make_pair(line.substr(0, sp), line.substr(sp + 1)), rank++);
  }
  // GPT-2's bytes_to_unicode: printable bytes stand for themselves, the rest
  // for U+0100 on.
  t.byte_char_.resize(256);
  int extra = 0;
  for (int b = 0; b < 256; ++b) {
    const bool printable = in(b, 33, 126) || in(b, 161, 172) || in(b, 174, 255);
    std::string s;
    append_utf8(s, printable ? static_cast<char32_t>(b) : static_cast<char32_t>(256 + extra++));
    t.byte_char_[b] = s;
  }
  return t;
}

ClipTokenizer ClipTokenizer::load(const fs::path& path) {
  std::error_code ec;
  const fs::path vocab = fs::is_directory(path, ec) ? path / "vocab.json" : path;
  const fs::path merges = vocab.parent_path() / "merges.txt";
  for (const auto& f : {vocab, merges})
    if (!fs::is_regular_file(f, ec))
      throw Error(f.string() +
                  ": not found (a CLIP tokenizer is vocab.json and merges.txt in one "
                  "folder)");
  return from_strings(read_file(vocab), read_file(merges), vocab.parent_path().string());
}

std::string ClipTokenizer::bpe(const std::string& piece) const {
  if (piece == "<|startoftext|>" || piece == "<|endoftext|>") return piece;
  if (const auto it = cache_.find(piece); it != cache_.end()) return it->second;
  std::vector<std::string> word;
  for (char32_t c : decode(piece)) {
    std::string s;
    append_utf8(s, c);
    word.push_back(s);
  }
  if (word.empty()) return "";
  word.back() += "</w>";
  while (word.size() > 1) {
    int best = INT_MAX;
    std::size_t at = 0;
    for (std::size_t i = 0; i + 1 < word.size(); ++i) {
      const auto it = ranks_.find({word[i], word[i + 1]});
      if (it != ranks_.end() && it->second < best) {
        best = it->second;
        at = i;
      }
    }
    if (best == INT_MAX) break;
    const std::string a = word[at], b = word[at + 1];
    std::vector<std::string> merged;
    for (std::size_t i = 0; i < word.size();) {
      if (i + 1 < word.size() && word[i] == a && word[i + 1] == b) {
        merged.push_back(a + b);
        i += 2;
      } else {
        merged.push_back(word[i++]);
      }
    }
    word.swap(merged);
  }
  std::string out;
  for (const auto& w : word) out += (out.empty() ? "" : " ") + w;
  if (cache_.size() < 100000) cache_.emplace(piece, out);
  return out;
}

std::vector<int64_t> ClipTokenizer::tokenize(const std::string& text) const {
  std::vector<int64_t> ids;
  for (const auto& piece : pre_tokenize(normalise(text))) {
    std::string mapped;
    if (piece == "<|startoftext|>" || piece == "<|endoftext|>") {
      mapped = piece;
    } else {
      for (unsigned char b : piece) mapped += byte_char_[b];
    }
    std::istringstream symbols(bpe(mapped));
    for (std::string s; symbols >> s;) {
      const auto it = vocab_.find(s);
      // Every byte's character is in a CLIP vocabulary; a hand-made one may
      // lack some: those pieces are dropped, as transformers' unknown token is
      // the end token.
      ids.push_back(it != vocab_.end() ? it->second : eos_);
    }
  }
  return ids;
}

ClipTokens ClipTokenizer::encode(const std::string& text, int64_t context, int64_t pad) const {
  auto ids = tokenize(text);
  ClipTokens t;
  if (static_cast<int64_t>(ids.size()) > context - 2) {
    ids.resize(context - 2);
    t.truncated = true;
  }
  t.ids = torch::full({1, context}, pad < 0 ? eos_ : pad, torch::kInt64);
  auto acc = t.ids.accessor<int64_t, 2>();
  acc[0][0] = bos_;
  for (std::size_t i = 0; i < ids.size(); ++i) acc[0][i + 1] = ids[i];
  acc[0][ids.size() + 1] = eos_;
  t.length = static_cast<int64_t>(ids.size()) + 2;
  return t;
}

fs::path find_clip_tokenizer(const fs::path& given, const fs::path& encoder,
                             const fs::path& models_dir) {
  std::error_code ec;
  if (!given.empty()) {
    if (!fs::exists(given, ec))
      throw Error("CLIP tokenizer " + given.string() +
                  ": no such folder (it holds vocab.json and merges.txt)");
    const fs::path vocab = fs::is_directory(given, ec) ? given / "vocab.json" : given;
    if (fs::is_regular_file(vocab, ec) &&
        fs::is_regular_file(vocab.parent_path() / "merges.txt", ec))
      return given;
    throw Error("CLIP tokenizer " + given.string() +
                ": needs vocab.json and merges.txt (looked for " + vocab.string() + " and " +
                (vocab.parent_path() / "merges.txt").string() + ")");
  }
  std::vector<fs::path> tried;
  std::vector<fs::path> roots;
  if (!encoder.empty()) roots.push_back(encoder.parent_path());
  // A folder named after the encoder's file: clip_l/ beside clip_l.safetensors.
  if (!encoder.empty()) roots.push_back(encoder.parent_path() / encoder.stem());
  // A diffusers folder: text_encoder/model.safetensors beside tokenizer/.
  if (!encoder.empty() && encoder.parent_path().has_parent_path())
    roots.push_back(encoder.parent_path().parent_path());
  if (!models_dir.empty()) {
    roots.push_back(models_dir / "text_encoders");
    roots.push_back(models_dir / "clip");
    roots.push_back(models_dir);
    // ComfyUI's own copy of CLIP's tokenizer, beside its models folder
    // (absolute first: "." has no folder beside it).
    fs::path md = fs::absolute(models_dir).lexically_normal();
    if (!md.has_filename()) md = md.parent_path();  // "models/"
    roots.push_back(md.parent_path() / "comfy" / "sd1_tokenizer");
  }
  // Each folder once, in this order (the encoder's folder may be
  // models_dir/text_encoders, or models_dir itself).
  std::vector<fs::path> unique_roots;
  for (const auto& r : roots) {
    fs::path n = r.lexically_normal();
    if (!n.has_filename() && n.has_parent_path()) n = n.parent_path();  // "models/"
    if (std::find(unique_roots.begin(), unique_roots.end(), n) == unique_roots.end())
      unique_roots.push_back(n);
  }
  for (const auto& root : unique_roots)
    for (const char* sub : {"", "tokenizer", "clip_tokenizer", "clip_l_tokenizer", "clip_l"}) {
      const fs::path dir = *sub ? root / sub : root;
      // Each folder once (text_encoders/clip_l is both a root and a root's
      // clip_l/), and no clip_l/clip_l.
      if (std::find(tried.begin(), tried.end(), dir) != tried.end() ||
          (root.filename() == "clip_l" && std::string(sub) == "clip_l"))
        continue;
      tried.push_back(dir);
      if (fs::is_regular_file(dir / "vocab.json", ec) &&
          fs::is_regular_file(dir / "merges.txt", ec))
        return dir;
    }
  // Appended, not `"…" + std::string&&`: GCC 12 warns falsely on that
  // (-Wstringop-overflow, its bug 105651).
  std::string msg = "no CLIP tokenizer (vocab.json and merges.txt) found for ";
  msg.append(encoder.empty() ? std::string("the CLIP encoder") : encoder.string());
  msg.append("; looked in");
  for (const auto& t : tried) msg.append(" ").append(t.string());
  msg += "; give its folder with --clip-tokenizer (preset key clip_tokenizer)";
  throw Error(msg);
}

}  // namespace kinora::text
