// Prompt encodings remembered between renders (pipeline/prompt_cache.h).
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <fstream>

#include "pipeline/pipeline.h"
#include "pipeline/prompt_cache.h"
#include "test_util.h"

using namespace kinora;
using kinora::test::TempDir;
using pipeline::PromptCache;
using ::testing::ElementsAre;

namespace {
// A stand-in encoder: states from the text's length, counting its calls.
struct Encoder {
  int calls = 0;
  layers::Conditioning operator()(const std::string& text,
                                  const std::function<void(const std::string&)>& note) {
    ++calls;
    if (text.size() > 5) note("cut to 5 characters");
    layers::Conditioning c;
    c.context = torch::full({1, 3, 4}, static_cast<float>(text.size()));
    c.pooled = torch::arange(4, torch::kFloat32).unsqueeze(0) * calls;
    c.mask = torch::ones({1, 3}, torch::kInt64);
    return c;
  }
};
size_t files_in(const std::filesystem::path& dir) {
  size_t n = 0;
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator(dir, ec))
    n += e.path().extension() == ".safetensors";
  return n;
}
}  // namespace

TEST(PromptCache, AnEncodingIsComputedOnceAndItsNotesSaidAgain) {
  TempDir dir;
  Encoder enc;
  auto get = [&](PromptCache& c, const std::string& key, const std::string& text, bool& hit,
                 std::vector<std::string>& notes) {
    return c.get(
        key, text, [&](const auto& note) { return enc(text, note); },
        [&](const std::string& n) { notes.push_back(n); }, &hit);
  };
  bool hit = true;
  std::vector<std::string> notes;
  PromptCache a(dir / "prompts");
  const auto first = get(a, "k1", "a long prompt", hit, notes);
  EXPECT_FALSE(hit);
  EXPECT_EQ(enc.calls, 1);
  EXPECT_THAT(notes, ElementsAre("cut to 5 characters"));
  // The same process, and another one (a new cache over the same folder).
  for (int i = 0; i < 2; ++i) {
    PromptCache b(dir / "prompts");
    notes.clear();
    const auto again = get(i == 0 ? a : b, "k1", "a long prompt", hit, notes);
    EXPECT_TRUE(hit);
    EXPECT_EQ(enc.calls, 1);
    EXPECT_THAT(notes, ElementsAre("cut to 5 characters"));
    EXPECT_TRUE(torch::equal(again.context, first.context));
    EXPECT_TRUE(torch::equal(again.pooled, first.pooled));
    EXPECT_TRUE(torch::equal(again.mask, first.mask));
  }
  // Another key (other encoder files, precision or text-encoder LoRAs) or
  // another text: encoded again.
  notes.clear();
  get(a, "k2", "a long prompt", hit, notes);
  EXPECT_FALSE(hit);
  get(a, "k1", "short", hit, notes);
  EXPECT_FALSE(hit);
  EXPECT_EQ(enc.calls, 3);
  EXPECT_EQ(files_in(dir / "prompts"), 3u);
}

TEST(PromptCache, BrokenFilesAreEncodedAgainAndTheFolderStaysBounded) {
  TempDir dir;
  Encoder enc;
  auto get = [&](PromptCache& c, const std::string& text, bool& hit) {
    return c.get(
        "k", text, [&](const auto& note) { return enc(text, note); }, {}, &hit);
  };
  bool hit = false;
  {
    PromptCache c(dir / "p");
    get(c, "x", hit);
  }
  for (const auto& e : std::filesystem::directory_iterator(dir / "p"))
    std::ofstream(e.path(), std::ios::trunc) << "not a safetensors file";
  {
    PromptCache c(dir / "p");
    const auto cond = get(c, "x", hit);
    EXPECT_FALSE(hit);
    EXPECT_EQ(cond.context.size(1), 3);
  }
  // A folder that cannot be written: encodings still come, from memory.
  {
    std::ofstream(dir / "file") << "x";
    PromptCache c(dir / "file" / "sub");
    get(c, "y", hit);
    EXPECT_FALSE(hit);
    get(c, "y", hit);
    EXPECT_TRUE(hit);
  }
  // At most max_bytes on disk: the least recently used go first.
  PromptCache small(dir / "small", 2000);
  for (const char* t : {"a", "b", "c", "d", "e", "f", "g", "h"}) get(small, t, hit);
  EXPECT_LT(files_in(dir / "small"), 8u);
  EXPECT_GE(files_in(dir / "small"), 1u);
}
