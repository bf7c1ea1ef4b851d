#include "text/tokenizer.h"

#include <sentencepiece_processor.h>

#include <cctype>
#include <cstdint>

#include "base/error.h"

namespace kinora::text {

Tokenizer::~Tokenizer() = default;
Tokenizer::Tokenizer(Tokenizer&&) noexcept = default;
Tokenizer& Tokenizer::operator=(Tokenizer&&) noexcept = default;

Tokenizer Tokenizer::load(const std::filesystem::path& path) {
  Tokenizer t;
  t.sp_ = std::make_unique<sentencepiece::SentencePieceProcessor>();
  const auto status = t.sp_->Load(path.string());
  if (!status.ok()) fail_file(path, "not a SentencePiece tokenizer model: " + status.ToString());
  return t;
}

int64_t Tokenizer::vocab_size() const { return sp_->GetPieceSize(); }

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
  std::vector<int> pieces;
  const auto status = sp_->Encode(clean(text), &pieces);
  if (!status.ok()) throw Error("tokenizer: cannot encode the prompt: " + status.ToString());
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
