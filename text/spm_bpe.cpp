#include "text/spm_bpe.h"

#include <cstdint>
#include <cstring>
#include <fstream>
#include <queue>
#include <sstream>

namespace kinora::text {

namespace {

// Protobuf's wire format, as much of it as a ModelProto uses.
class Wire {
 public:
  explicit Wire(std::string_view bytes) : s_(bytes) {}
  bool done() const { return pos_ >= s_.size(); }
  bool ok() const { return ok_; }

  // The next field: its number and wire type (false at the end or on an error).
  bool next(uint32_t& field, uint32_t& type) {
    if (done() || !ok_) return false;
    const uint64_t key = varint();
    field = static_cast<uint32_t>(key >> 3), type = static_cast<uint32_t>(key & 7);
    return ok_;
  }
  uint64_t varint() {
    uint64_t v = 0;
    for (int shift = 0; shift < 64; shift += 7) {
      if (done()) return fail();
      const auto b = static_cast<uint8_t>(s_[pos_++]);
      v |= static_cast<uint64_t>(b & 0x7F) << shift;
      if (!(b & 0x80)) return v;
    }
    return fail();
  }
  std::string_view bytes() {
    const uint64_t n = varint();
    if (!ok_ || n > s_.size() - pos_) return fail(), std::string_view();
    const auto out = s_.substr(pos_, n);
    pos_ += n;
    return out;
  }
  float fixed32() {
    if (s_.size() - pos_ < 4) return static_cast<float>(fail());
    float f;
    std::memcpy(&f, s_.data() + pos_, 4);  // little-endian, as x86 and ARM are
    pos_ += 4;
    return f;
  }
  void skip(uint32_t type) {
    switch (type) {
      case 0:
        varint();
        break;
      case 1:
        if (s_.size() - pos_ < 8)
          fail();
        else
          pos_ += 8;
        break;
      case 2:
        bytes();
        break;
      case 5:
        fixed32();
        break;
      default:
        fail();  // groups: not in a ModelProto
    }
  }

 private:
  uint64_t fail() {
    ok_ = false;
    return 0;
  }
  std::string_view s_;
  std::size_t pos_ = 0;
  bool ok_ = true;
};

constexpr const char* kSpace = "\xE2\x96\x81";  // U+2581, SentencePiece's escaped space

}  // namespace

std::optional<SpmBpe> SpmBpe::parse(const std::string& data) {
  SpmBpe m;
  int64_t model_type = 1;  // TrainerSpec's default: UNIGRAM
  bool byte_fallback = false, whitespace_suffix = false;
  std::string normalizer = "nmt_nfkc";
  Wire w(data);
  uint32_t field = 0, type = 0;
  while (w.next(field, type)) {
    if (field == 1 && type == 2) {  // pieces
      Wire p(w.bytes());
      Piece piece;
      uint32_t f = 0, t = 0;
      while (p.next(f, t)) {
        if (f == 1 && t == 2)
          piece.text = std::string(p.bytes());
        else if (f == 2 && t == 5)
          piece.score = p.fixed32();
        else if (f == 3 && t == 0)
          piece.type = static_cast<int>(p.varint());
        else
          p.skip(t);
      }
      if (!p.ok()) return std::nullopt;
      m.pieces_.push_back(std::move(piece));
    } else if (field == 2 && type == 2) {  // trainer_spec
      Wire t(w.bytes());
      uint32_t f = 0, tt = 0;
      while (t.next(f, tt)) {
        if (f == 3 && tt == 0)
          model_type = static_cast<int64_t>(t.varint());
        else if (f == 24 && tt == 0)
          whitespace_suffix = t.varint() != 0;
        else if (f == 35 && tt == 0)
          byte_fallback = t.varint() != 0;
        else
          t.skip(tt);
      }
      if (!t.ok()) return std::nullopt;
    } else if (field == 3 && type == 2) {  // normalizer_spec
      Wire n(w.bytes());
      uint32_t f = 0, t = 0;
      while (n.next(f, t)) {
        if (f == 1 && t == 2)
          normalizer = std::string(n.bytes());
        else if (f == 3 && t == 0)
          m.add_dummy_prefix_ = n.varint() != 0;
        else if (f == 4 && t == 0)
          m.remove_extra_whitespaces_ = n.varint() != 0;
        else if (f == 5 && t == 0)
          m.escape_whitespaces_ = n.varint() != 0;
        else
          n.skip(t);
      }
      if (!n.ok()) return std::nullopt;
    } else {
      w.skip(type);
    }
  }
  if (!w.ok() || m.pieces_.empty()) return std::nullopt;
  // What this class applies exactly; the library does the rest.
  if (model_type != 2 || byte_fallback || whitespace_suffix || !m.escape_whitespaces_ ||
      (normalizer != "nmt_nfkc" && normalizer != "nfkc" && normalizer != "identity"))
    return std::nullopt;
  for (std::size_t i = 0; i < m.pieces_.size(); ++i) {
    const auto& p = m.pieces_[i];
    const int id = static_cast<int>(i);
    switch (p.type) {
      case 1:
        m.mergeable_.emplace(p.text, id);
        break;
      case 2:
        m.unk_id_ = id;
        break;
      case 3:
        m.reserved_.emplace(p.text, id);
        break;
      default:
        return std::nullopt;  // user-defined, unused or byte pieces
    }
  }
  if (m.unk_id_ < 0) return std::nullopt;
  return m;
}

std::optional<SpmBpe> SpmBpe::from_file(const std::filesystem::path& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) return std::nullopt;
  std::ostringstream ss;
  ss << f.rdbuf();
  return parse(ss.str());
}

std::optional<std::vector<int>> SpmBpe::encode(std::string_view text) const {
  for (const char c : text)
    if (c < 0x20 || c > 0x7E) return std::nullopt;  // NFKC leaves printable ASCII alone
  // SentencePiece's normaliser: extra spaces removed, a space in front, spaces escaped.
  std::string norm;
  bool space = false;
  for (const char c : text) {
    if (c == ' ' && remove_extra_whitespaces_) {
      space = !norm.empty();
      continue;
    }
    if (space) norm += ' ', space = false;
    norm += c;
  }
  if (norm.empty()) return std::vector<int>{};
  if (add_dummy_prefix_) norm.insert(norm.begin(), ' ');
  std::string escaped;
  for (const char c : norm) escaped += c == ' ' ? std::string(kSpace) : std::string(1, c);

  // Symbols: one per character (▁ is three bytes), linked as a list.
  struct Symbol {
    std::size_t begin, size;
    int prev, next;
  };
  std::vector<Symbol> sym;
  for (std::size_t i = 0; i < escaped.size();) {
    const std::size_t n = escaped.compare(i, 3, kSpace) == 0 ? 3 : 1;
    const int k = static_cast<int>(sym.size());
    sym.push_back({i, n, k - 1, i + n < escaped.size() ? k + 1 : -1});
    i += n;
  }
  // Candidate merges, best first: higher score, then the leftmost.
  struct Pair {
    int left, right;
    float score;
    std::size_t size;
  };
  auto worse = [](const Pair& a, const Pair& b) {
    return a.score < b.score || (a.score == b.score && a.left > b.left);
  };
  std::priority_queue<Pair, std::vector<Pair>, decltype(worse)> agenda(worse);
  auto consider = [&](int l, int r) {
    if (l < 0 || r < 0) return;
    const auto size = sym[static_cast<std::size_t>(l)].size + sym[static_cast<std::size_t>(r)].size;
    const auto it = mergeable_.find(escaped.substr(sym[static_cast<std::size_t>(l)].begin, size));
    if (it == mergeable_.end()) return;
    agenda.push({l, r, pieces_[static_cast<std::size_t>(it->second)].score, size});
  };
  for (std::size_t i = 1; i < sym.size(); ++i)
    consider(static_cast<int>(i) - 1, static_cast<int>(i));
  while (!agenda.empty()) {
    const Pair top = agenda.top();
    agenda.pop();
    auto& l = sym[static_cast<std::size_t>(top.left)];
    auto& r = sym[static_cast<std::size_t>(top.right)];
    // Stale: one side was merged away, or has grown since this pair was queued.
    if (l.size == 0 || r.size == 0 || l.size + r.size != top.size) continue;
    l.size += r.size;
    l.next = r.next;
    if (r.next >= 0) sym[static_cast<std::size_t>(r.next)].prev = top.left;
    r.size = 0;
    consider(l.prev, top.left);
    consider(top.left, l.next);
  }
  // Ids; consecutive unknown pieces become one <unk>, as the library makes them.
  std::vector<int> ids;
  for (int i = 0; i >= 0; i = sym[static_cast<std::size_t>(i)].next) {
    const auto piece = escaped.substr(sym[static_cast<std::size_t>(i)].begin,
                                      sym[static_cast<std::size_t>(i)].size);
    int id = unk_id_;
    if (const auto r = reserved_.find(piece); r != reserved_.end())
      id = r->second;
    else if (const auto m = mergeable_.find(piece); m != mergeable_.end())
      id = m->second;
    if (id == unk_id_ && !ids.empty() && ids.back() == unk_id_) continue;
    ids.push_back(id);
  }
  return ids;
}

}  // namespace kinora::text
