#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "io/checkpoint.h"
#include "test_util.h"

using kinora::io::Checkpoint;
using kinora::io::save_safetensors;
using kinora::test::error_of;
using kinora::test::TempDir;
using ::testing::HasSubstr;

namespace {
void write_text(const std::filesystem::path& p, const std::string& s) {
  std::ofstream(p) << s;
}

void write_two_shards(const TempDir& dir) {
  save_safetensors(dir / "model-00001-of-00002.safetensors",
                   {{"a.weight", torch::ones({2, 2})}, {"b.weight", torch::full({3}, 2.0)}},
                   {{"format", "pt"}});
  save_safetensors(dir / "model-00002-of-00002.safetensors", {{"c.weight", torch::arange(4)}});
}
}  // namespace

TEST(Checkpoint, SingleFile) {
  TempDir dir;
  save_safetensors(dir / "m.safetensors", {{"x", torch::zeros({4, 4})}}, {{"k", "v"}});
  const auto ck = Checkpoint::open(dir / "m.safetensors");
  EXPECT_FALSE(ck.sharded());
  EXPECT_EQ(ck.names(), std::vector<std::string>{"x"});
  EXPECT_EQ(ck.total_bytes(), 64u);
  EXPECT_EQ(ck.metadata().at("k"), "v");
}

TEST(Checkpoint, ShardedIndexReadsAcrossShards) {
  TempDir dir;
  write_two_shards(dir);
  write_text(dir / "model.safetensors.index.json", R"({"metadata": {"total_size": 52},
    "weight_map": {"a.weight": "model-00001-of-00002.safetensors",
                   "b.weight": "model-00001-of-00002.safetensors",
                   "c.weight": "model-00002-of-00002.safetensors"}})");
  const auto ck = Checkpoint::open(dir / "model.safetensors.index.json");
  EXPECT_TRUE(ck.sharded());
  EXPECT_EQ(ck.shards().size(), 2u);
  EXPECT_EQ(ck.names(), (std::vector<std::string>{"a.weight", "b.weight", "c.weight"}));
  EXPECT_TRUE(torch::equal(ck.get("c.weight"), torch::arange(4)));
  EXPECT_EQ(ck.get("b.weight")[1].item<float>(), 2.0f);
  EXPECT_EQ(ck.metadata().at("total_size"), "52");
  EXPECT_EQ(ck.metadata().at("format"), "pt");
  EXPECT_EQ(ck.total_bytes(), 16u + 12u + 32u);
  EXPECT_THAT(error_of([&] { ck.get("missing"); }), HasSubstr("no tensor named 'missing'"));
}

TEST(Checkpoint, BadIndexesAreRefusedWithTheReason) {
  TempDir dir;
  write_two_shards(dir);
  const auto index = dir / "bad.safetensors.index.json";
  const std::pair<const char*, const char*> cases[] = {
      {"{not json", "not valid JSON"},
      {"[]", "not a JSON object"},
      {R"({"metadata": {}})", "no \"weight_map\""},
      {R"({"weight_map": {"a.weight": 3}})", "is not a string"},
      {R"({"weight_map": {"a.weight": "../etc/passwd"}})", "not a file beside the index"},
      {R"({"weight_map": {"a.weight": "missing.safetensors"}})", "cannot open"},
      {R"({"weight_map": {"z.weight": "model-00001-of-00002.safetensors"}})", "has no such tensor"},
  };
  for (const auto& [text, expected] : cases) {
    write_text(index, text);
    const auto msg = error_of([&] { Checkpoint::open(index); });
    EXPECT_THAT(msg, HasSubstr(expected)) << text;
    EXPECT_THAT(msg, HasSubstr(".safetensors")) << text;
  }
  // A missing shard is named with the index that names it.
  write_text(index, R"({"weight_map": {"a.weight": "missing.safetensors"}})");
  EXPECT_THAT(error_of([&] { Checkpoint::open(index); }),
              HasSubstr(index.string() + ": the shard missing.safetensors it names: " +
                        (dir / "missing.safetensors").string() + ": cannot open"));
}
