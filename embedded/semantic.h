#pragma once
// The semantic test's prompts and its score: the prompt sets the
// embedded model is judged on, and how a measured clip counts. Shared by the
// test (tests/unit/semantic_test.cpp) and `kinora score`, which runs the same
// judgement on other prompt and noise seeds, guidance or model folders.
#include <cstdint>
#include <string>
#include <vector>

#include "embedded/clips.h"

namespace kinora::embedded {

// Scenes from seeds first_seed, first_seed + 1, …, never held out, until there
// are `at_least` and every colour has been object and background, and every
// shape and direction seen. The test's set: (36, 7000).
std::vector<Scene> semantic_prompts(std::size_t at_least, uint64_t first_seed);
// Two scenes of each held-out combination (held_out()).
std::vector<Scene> held_out_prompts();
// Prompts that ask for a big object (the word the project's LoRA teaches):
// big scenes from seeds first_seed, … (never held out), `count` of them.
std::vector<Scene> big_prompts(std::size_t count, uint64_t first_seed);

struct SemanticScore {
  int n = 0, background = 0, object = 0, shape = 0, direction = 0, all = 0, one = 0;
  int asked_big = 0, big = 0;  // prompts that ask for a big object; clips drawn big (shows_big)
  // The shape counts only where the object is drawn once.
  void add(const Scene& s, const Measured& m);
  static double pct(int k, int n) { return n ? 100.0 * k / n : 0; }
  // "trained   36 prompts: background 100.0%  object …  (one object drawn: …)",
  // and "drawn big: …" where a prompt asked for it or a clip shows it.
  std::string line(const std::string& name) const;
};

// What a clip shows, as one line: "green triangle moving up on blue (fill
// 0.62, 1 object)".
std::string describe(const Measured& m);

}  // namespace kinora::embedded
