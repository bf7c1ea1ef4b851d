#pragma once
// Emphasis in prompts, as AUTOMATIC1111's web UI reads it (its
// parse_prompt_attention), for the CLIP-conditioned families (SDXL):
//
//   (text)        the weight of `text` times 1.1; ((text)) times 1.21, and so on
//   [text]        the weight divided by 1.1
//   (text:1.5)    the weight times 1.5 (nested brackets multiply: ((a:1.5)) is 1.65);
//                 the number is [+-] digits and dots, spaces allowed around it
//   \( \) \[ \]   the bracket itself, as text; \\ a backslash; a backslash
//                 before anything else is dropped
//   ( or [ never closed       applies to the end of the prompt
//   ) or ] or (…:w) with nothing open, or a ':' not followed by a weight: text
//   BREAK         upper case, as a word (not part of a longer word), with the
//                 spaces around it: ends the current 75-token chunk
//
// Adjacent pieces of equal weight are merged into one (they are tokenized
// together), and empty pieces dropped; a prompt with no text is one empty piece
// of weight 1. Weights multiply from 1 in double precision, as Python's floats.
//
// Two departures: a BREAK inside brackets still breaks (the web UI reads it as
// the word BREAK with a negative weight there), and a weight that is not a
// number ("(a:1.2.3)") is a kinora::Error naming it, where the web UI fails.
// Word boundaries take letters, digits, '_' and every non-ASCII character as
// word characters.
#include <string>
#include <vector>

namespace kinora::text {

struct WeightedText {
  std::string text;
  double weight = 1.0;
  bool is_break = false;  // BREAK: a chunk boundary (text empty, weight 1)

  bool operator==(const WeightedText& o) const {
    return text == o.text && weight == o.weight && is_break == o.is_break;
  }
};

std::vector<WeightedText> parse_emphasis(const std::string& prompt);

}  // namespace kinora::text
