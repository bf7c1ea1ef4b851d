#include "text/prompt_weights.h"

#include <charconv>
#include <cstddef>

#include "base/error.h"

namespace kinora::text {

namespace {

bool is_space(char c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
}
bool is_digit(char c) {
  return c >= '0' && c <= '9';
}
// Python's \w over str, with every non-ASCII character counted as a letter.
bool is_word(char c) {
  const auto u = static_cast<unsigned char>(c);
  return u >= 0x80 || is_digit(c) || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
}

// Text, split where `\s*\bBREAK\b\s*` matches (re.split's leftmost matches, the
// spaces around each BREAK taken with it).
void append_text(std::vector<WeightedText>& out, const std::string& text) {
  const std::string word = "BREAK";
  std::size_t from = 0;
  for (std::size_t pos = text.find(word); pos != std::string::npos;
       pos = text.find(word, pos + 1)) {
    const std::size_t end = pos + word.size();
    if ((pos > 0 && is_word(text[pos - 1])) || (end < text.size() && is_word(text[end]))) continue;
    std::size_t left = pos;
    while (left > from && is_space(text[left - 1])) --left;
    std::size_t right = end;
    while (right < text.size() && is_space(text[right])) ++right;
    out.push_back({text.substr(from, left - from), 1.0, false});
    out.push_back({"", 1.0, true});
    from = right;
    pos = right > 0 ? right - 1 : 0;  // the next search starts where this match ended
  }
  out.push_back({text.substr(from), 1.0, false});
}

// Python's float() over [+-]?[.\d]+: one dot at most and a digit.
double parse_weight(const std::string& number, const std::string& match) {
  std::size_t i = 0;
  double sign = 1;
  if (!number.empty() && (number[0] == '+' || number[0] == '-')) {
    sign = number[0] == '-' ? -1 : 1;
    i = 1;
  }
  double value = 0;
  const char* first = number.data() + i;
  const char* last = number.data() + number.size();
  const auto [ptr, ec] = std::from_chars(first, last, value, std::chars_format::fixed);
  if (ec != std::errc() || ptr != last || first == last)
    throw Error(std::string("prompt emphasis '")
                    .append(match)
                    .append("': '")
                    .append(number)
                    .append("' is not a number (expected a weight such as 1.2)"));
  return sign * value;
}

}  // namespace

std::vector<WeightedText> parse_emphasis(const std::string& prompt) {
  constexpr double kRound = 1.1;
  constexpr double kSquare = 1 / 1.1;
  std::vector<WeightedText> res;
  std::vector<std::size_t> round, square;  // where each open bracket's range starts
  auto multiply = [&](std::size_t start, double m) {
    for (std::size_t p = start; p < res.size(); ++p)
      if (!res[p].is_break) res[p].weight *= m;
  };
  const std::size_t n = prompt.size();
  std::size_t i = 0;
  while (i < n) {
    const char c = prompt[i];
    if (c == '\\') {
      const bool escape =
          i + 1 < n && (prompt[i + 1] == '(' || prompt[i + 1] == ')' || prompt[i + 1] == '[' ||
                        prompt[i + 1] == ']' || prompt[i + 1] == '\\');
      // An escaped character is text; a lone backslash is dropped.
      res.push_back({escape ? std::string(1, prompt[i + 1]) : std::string(), 1.0, false});
      i += escape ? 2 : 1;
    } else if (c == '(') {
      round.push_back(res.size());
      ++i;
    } else if (c == '[') {
      square.push_back(res.size());
      ++i;
    } else if (c == ':') {
      // `:\s*([+-]?[.\d]+)\s*\)`, else the ':' is text.
      std::size_t j = i + 1;
      while (j < n && is_space(prompt[j])) ++j;
      const std::size_t number_start = j;
      if (j < n && (prompt[j] == '+' || prompt[j] == '-')) ++j;
      const std::size_t digits = j;
      while (j < n && (is_digit(prompt[j]) || prompt[j] == '.')) ++j;
      const std::size_t number_end = j;
      while (j < n && is_space(prompt[j])) ++j;
      if (number_end > digits && j < n && prompt[j] == ')') {
        const std::string match = prompt.substr(i, j + 1 - i);
        if (!round.empty()) {
          const std::string number = prompt.substr(number_start, number_end - number_start);
          multiply(round.back(), parse_weight(number, std::string("(…").append(match)));
          round.pop_back();
        } else {
          append_text(res, match);
        }
        i = j + 1;
      } else {
        append_text(res, ":");
        ++i;
      }
    } else if (c == ')' && !round.empty()) {
      multiply(round.back(), kRound);
      round.pop_back();
      ++i;
    } else if (c == ']' && !square.empty()) {
      multiply(square.back(), kSquare);
      square.pop_back();
      ++i;
    } else if (c == ')' || c == ']') {
      append_text(res, std::string(1, c));
      ++i;
    } else {
      std::size_t j = i;
      while (j < n && prompt[j] != '\\' && prompt[j] != '(' && prompt[j] != ')' &&
             prompt[j] != '[' && prompt[j] != ']' && prompt[j] != ':')
        ++j;
      append_text(res, prompt.substr(i, j - i));
      i = j;
    }
  }
  // Brackets never closed reach the end, outermost first.
  for (const auto p : round) multiply(p, kRound);
  for (const auto p : square) multiply(p, kSquare);

  // Runs of equal weight tokenized together (a BREAK never merges).
  std::vector<WeightedText> merged;
  for (auto& r : res) {
    if (!merged.empty() && !r.is_break && !merged.back().is_break &&
        merged.back().weight == r.weight)
      merged.back().text += r.text;
    else
      merged.push_back(std::move(r));
  }
  std::vector<WeightedText> out;
  for (auto& m : merged)
    if (m.is_break || !m.text.empty()) out.push_back(std::move(m));
  if (out.empty()) out.push_back({"", 1.0, false});
  return out;
}

}  // namespace kinora::text
