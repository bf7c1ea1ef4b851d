// The PNG "parameters" text as AUTOMATIC1111 writes it (render/parameters.h),
// and the file hashes it names models and LoRAs by (base/sha256.h,
// base/hash_cache.h).
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include <chrono>
#include <cstdlib>
#include <fstream>
#include <optional>

#include "base/hash_cache.h"
#include "base/sha256.h"
#include "render/parameters.h"
#include "test_util.h"

namespace kinora::render {
namespace {
namespace fs = std::filesystem;
using pipeline::LoraRef;
using pipeline::Preset;
using test::error_of;
using test::TempDir;
using ::testing::HasSubstr;
using ::testing::Not;

// Reference digests, each as `printf %s BYTES | sha256sum` prints it: the
// two SHA-256 examples of FIPS 180-2 ("abc", and the 56-byte message below)
// and, for a file of several read chunks, bytes i % 251 for i < 9 MiB + 7
// (python3 -c "import sys; sys.stdout.buffer.write(bytes(i % 251 for i in
// range(9 * 2**20 + 7)))" | sha256sum).
constexpr const char* kAbc = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
constexpr const char* kFips2Message = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
constexpr const char* kFips2 = "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1";
constexpr const char* kPattern = "8461691889434d8612698ecdc04cfe0ce63ef00d872f239d7e652b027e2bfda9";

void write(const fs::path& p, const std::string& bytes) {
  std::ofstream f(p, std::ios::binary);
  f << bytes;
}

// A LoRA file: a safetensors header, then `data` as its tensor bytes.
void write_lora(const fs::path& p, const std::string& data) {
  test::write_raw(p,
                  R"({"__metadata__":{"ss_output_name":"x"},"w":{"dtype":"U8","shape":[)" +
                      std::to_string(data.size()) + R"(],"data_offsets":[0,)" +
                      std::to_string(data.size()) + "]}}",
                  data);
}

// Sets an environment variable for the test's length.
class ScopedEnv {
 public:
  ScopedEnv(const char* name, const char* value) : name_(name) {
    if (const char* old = std::getenv(name)) old_ = old;
    value ? ::setenv(name, value, 1) : ::unsetenv(name);
  }
  ~ScopedEnv() { old_ ? ::setenv(name_, old_->c_str(), 1) : ::unsetenv(name_); }

 private:
  const char* name_;
  std::optional<std::string> old_;
};

// ---------------------------------------------------------------- hashes

TEST(FileHash, AutoV2IsTheWholeFilesSha256) {
  TempDir dir;
  write(dir / "abc.safetensors", "abc");
  EXPECT_EQ(sha256_file_hex(dir / "abc.safetensors"), kAbc);
  EXPECT_EQ(sha256_file_hex(dir / "abc.safetensors").substr(0, 10), "ba7816bf8f");
  std::string pattern(9 * (1 << 20) + 7, '\0');
  for (std::size_t i = 0; i < pattern.size(); ++i) pattern[i] = static_cast<char>(i % 251);
  write(dir / "big.bin", pattern);
  EXPECT_EQ(sha256_file_hex(dir / "big.bin"), kPattern);
  write(dir / "skip.bin", std::string("xyz") + kFips2Message);
  EXPECT_EQ(sha256_file_hex(dir / "skip.bin", 3), kFips2);
  EXPECT_THAT(error_of([&] { sha256_file_hex(dir / "missing"); }),
              HasSubstr((dir / "missing").string()));
  std::atomic<bool> cancel{true};
  EXPECT_THROW(sha256_file_hex(dir / "big.bin", 0, &cancel), Cancelled);
}

TEST(FileHash, ALorasHashIsItsTensorBytes) {
  TempDir dir;
  write_lora(dir / "ink.safetensors", "abc");
  EXPECT_EQ(safetensors_data_sha256_hex(dir / "ink.safetensors"), kAbc);
  test::write_raw(dir / "cut.safetensors", "{}", "", 1000);
  EXPECT_THAT(error_of([&] { safetensors_data_sha256_hex(dir / "cut.safetensors"); }),
              HasSubstr("passes the end"));
  write(dir / "tiny", "abc");
  EXPECT_THAT(error_of([&] { safetensors_data_sha256_hex(dir / "tiny"); }),
              HasSubstr("8-byte header length"));
}

TEST(HashCache, AnUnchangedFileIsReadOnceAChangedOneAgain) {
  TempDir dir;
  const auto file = dir / "model.safetensors";
  const auto cache = dir / "cache" / "file-hashes.json";  // its folder made on the first write
  write(file, "abc");
  int hashed = 0;
  auto count = [&] { ++hashed; };
  EXPECT_EQ(cached_file_sha256(file, FileDigest::Whole, cache, nullptr, count), kAbc);
  EXPECT_EQ(hashed, 1);
  EXPECT_EQ(cached_file_sha256(file, FileDigest::Whole, cache, nullptr, count), kAbc);
  EXPECT_EQ(hashed, 1);
  ASSERT_TRUE(fs::is_regular_file(cache));

  // The same path, size and time: the cache's answer, without reading the file
  // (which now holds other bytes of that size).
  const auto mtime = fs::last_write_time(file);
  write(file, "abd");
  fs::last_write_time(file, mtime);
  EXPECT_EQ(cached_file_sha256(file, FileDigest::Whole, cache, nullptr, count), kAbc);
  EXPECT_EQ(hashed, 1);
  // Another time: hashed again, and that remembered.
  fs::last_write_time(file, mtime + std::chrono::seconds(2));
  const auto abd = sha256_file_hex(file);
  EXPECT_EQ(cached_file_sha256(file, FileDigest::Whole, cache, nullptr, count), abd);
  EXPECT_EQ(hashed, 2);
  EXPECT_EQ(cached_file_sha256(file, FileDigest::Whole, cache, nullptr, count), abd);
  EXPECT_EQ(hashed, 2);
  // Another size.
  write(file, kFips2Message);
  EXPECT_EQ(cached_file_sha256(file, FileDigest::Whole, cache, nullptr, count), kFips2);
  EXPECT_EQ(hashed, 3);
  // The tensor-bytes hash of the same file is another entry.
  write_lora(file, "abc");
  EXPECT_EQ(cached_file_sha256(file, FileDigest::SafetensorsData, cache, nullptr, count), kAbc);
  EXPECT_NE(cached_file_sha256(file, FileDigest::Whole, cache, nullptr, count), kAbc);
  EXPECT_EQ(hashed, 5);
}

TEST(HashCache, ACacheThatCannotBeReadOrWrittenOnlyCostsTime) {
  TempDir dir;
  const auto file = dir / "model.safetensors";
  write(file, "abc");
  int hashed = 0;
  auto count = [&] { ++hashed; };
  // Not JSON, JSON of another shape, entries of the wrong types.
  for (const char* text : {"not json {", "[1, 2]", R"({"kinora_file_hashes": 1, "entries": 3})",
                           R"({"kinora_file_hashes": 1, "entries": [7, {"path": 1}]})"}) {
    write(dir / "bad.json", text);
    EXPECT_EQ(cached_file_sha256(file, FileDigest::Whole, dir / "bad.json", nullptr, count), kAbc)
        << text;
    // Replaced by a good one.
    EXPECT_EQ(cached_file_sha256(file, FileDigest::Whole, dir / "bad.json", nullptr, count), kAbc);
    const auto j = nlohmann::json::parse(std::ifstream(dir / "bad.json"));
    EXPECT_EQ(j["entries"].size(), 1u) << text;
  }
  EXPECT_EQ(hashed, 4);
  // A cache that cannot be written (its folder would be under a file), or none.
  write(dir / "a-file", "x");
  for (const fs::path& cache : {dir / "a-file" / "file-hashes.json", fs::path()}) {
    hashed = 0;
    EXPECT_EQ(cached_file_sha256(file, FileDigest::Whole, cache, nullptr, count), kAbc);
    EXPECT_EQ(cached_file_sha256(file, FileDigest::Whole, cache, nullptr, count), kAbc);
    EXPECT_EQ(hashed, 2);
  }
  // A file that cannot be read is an error naming it, whatever the cache.
  EXPECT_THAT(error_of([&] {
                cached_file_sha256(dir / "gone.safetensors", FileDigest::Whole, dir / "c.json");
              }),
              HasSubstr("gone.safetensors"));
}

TEST(HashCache, KeepsTheNewestEntries) {
  TempDir dir;
  const auto cache = dir / "file-hashes.json";
  for (int i = 0; i < 5; ++i) {
    write(dir / ("m" + std::to_string(i)), std::to_string(i));
    cached_file_sha256(dir / ("m" + std::to_string(i)), FileDigest::Whole, cache, nullptr, {}, 3);
  }
  const auto j = nlohmann::json::parse(std::ifstream(cache));
  ASSERT_EQ(j["entries"].size(), 3u);
  EXPECT_EQ(j["entries"][0]["path"], (dir / "m2").string());
  EXPECT_EQ(j["entries"][2]["path"], (dir / "m4").string());
}

TEST(HashCache, LivesInTheUsersCacheFolder) {
  ScopedEnv kinora("KINORA_CACHE_DIR", "/srv/cache");
  ScopedEnv xdg("XDG_CACHE_HOME", "/xdg");
  ScopedEnv home("HOME", "/home/u");
  EXPECT_EQ(default_hash_cache_file(), fs::path("/srv/cache/file-hashes.json"));
  ::unsetenv("KINORA_CACHE_DIR");
  EXPECT_EQ(user_cache_dir(), fs::path("/xdg/kinora"));
  ::setenv("XDG_CACHE_HOME", "relative", 1);  // not absolute: ignored, as XDG says
  EXPECT_EQ(user_cache_dir(), fs::path("/home/u/.cache/kinora"));
  ::unsetenv("XDG_CACHE_HOME");
  ::unsetenv("HOME");
  EXPECT_EQ(default_hash_cache_file(), fs::path());
}

// ---------------------------------------------------------------- the text

Preset flux_preset(const fs::path& model) {
  Preset p;
  p.family = "flux";
  p.prompt = "a red fox in fresh snow";
  p.negative_prompt = "";
  p.sampler = "flow_euler";
  p.steps = 28;
  p.guidance = 3.5;
  p.shift = 3;
  p.seed = 42;
  p.width = 1024, p.height = 768, p.frames = 1;
  p.model = model.string();
  return p;
}

TEST(Parameters, FluxAsForgeWritesIt) {
  TempDir dir;
  write(dir / "flux1-dev.safetensors", "abc");
  const Preset p = flux_preset(dir / "flux1-dev.safetensors");
  EXPECT_EQ(parameters_text(p, file_hashes(p, dir / "hashes.json")),
            "a red fox in fresh snow\n"
            "Steps: 28, Sampler: Euler, CFG scale: 1, Distilled CFG Scale: 3.5, Seed: 42, "
            "Size: 1024x768, Model hash: ba7816bf8f, Model: flux1-dev, Shift: 3, Version: Kinora");
}

TEST(Parameters, WanWithAPresetLora) {
  TempDir dir;
  fs::create_directories(dir / "models");
  write_lora(dir / "grain.safetensors", kFips2Message);
  Preset p;
  p.family = "wan";
  p.prompt = "a cat walks on grass";
  p.negative_prompt = "static, blurry";
  p.sampler = "flow_unipc";
  p.steps = 50, p.guidance = 5, p.shift = 5, p.seed = 123;
  p.width = 832, p.height = 480, p.frames = 81;
  // A name under models_dir that is not there: no hash, and a note saying why.
  p.models_dir = (dir / "models").string();
  p.model = "wan2.1_t2v_1.3B_fp16.safetensors";
  p.loras = {LoraRef((dir / "grain.safetensors").string(), 0.6)};
  std::string notes;
  const auto hashes =
      file_hashes(p, dir / "hashes.json", nullptr, [&](const std::string& m) { notes += m; });
  EXPECT_THAT(notes, HasSubstr("leave out the hash of model wan2.1_t2v_1.3B_fp16.safetensors"));
  EXPECT_EQ(parameters_text(p, hashes),
            "a cat walks on grass <lora:grain:0.6>\n"
            "Negative prompt: static, blurry\n"
            "Steps: 50, Sampler: UniPC, CFG scale: 5, Seed: 123, Size: 832x480, "
            "Model: wan2.1_t2v_1.3B_fp16, Shift: 5, Lora hashes: \"grain: 248d6a61d206\", "
            "Version: Kinora");
}

TEST(Parameters, SdxlWithKarrasAsA1111WritesIt) {
  TempDir dir;
  write(dir / "sd_xl_base_1.0.safetensors", kFips2Message);
  fs::create_directories(dir / "loras");  // beside the model: where prompt tags are found
  write_lora(dir / "loras" / "ink.safetensors", "abc");
  Preset p;
  p.family = "sdxl";
  p.prompt = "a lighthouse at dusk, oil painting <lora:ink:0.8>";
  p.negative_prompt = "blurry, lowres";
  p.sampler = "dpmpp_2m_karras";
  p.steps = 25, p.guidance = 6, p.seed = 7;
  p.width = 1024, p.height = 1024, p.frames = 1;
  p.model = (dir / "sd_xl_base_1.0.safetensors").string();
  std::string notes;
  const auto hashes =
      file_hashes(p, dir / "hashes.json", nullptr, [&](const std::string& m) { notes += m; });
  EXPECT_THAT(notes, HasSubstr("hashing sd_xl_base_1.0.safetensors"));
  EXPECT_EQ(parameters_text(p, hashes),
            "a lighthouse at dusk, oil painting <lora:ink:0.8>\n"
            "Negative prompt: blurry, lowres\n"
            "Steps: 25, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 6, Seed: 7, "
            "Size: 1024x1024, Model hash: 248d6a61d2, Model: sd_xl_base_1.0, "
            "Lora hashes: \"ink: ba7816bf8f01\", Version: Kinora");
  // The second time from the cache, without a word.
  notes.clear();
  EXPECT_EQ(
      file_hashes(p, dir / "hashes.json", nullptr, [&](const std::string& m) { notes += m; }).model,
      "248d6a61d2");
  EXPECT_EQ(notes, "");
}

TEST(Parameters, SamplersByA1111sNames) {
  Preset p;
  p.family = "sdxl";
  p.model = "sdxl.safetensors";
  auto line = [&](const char* sampler) {
    p.sampler = sampler;
    const auto text = parameters_text(p);
    return text.substr(text.rfind('\n') + 1);
  };
  EXPECT_THAT(line("euler"), HasSubstr("Sampler: Euler, CFG scale"));
  EXPECT_THAT(line("euler_ancestral"), HasSubstr("Sampler: Euler a, CFG scale"));
  EXPECT_THAT(line("dpmpp_2m"), HasSubstr("Sampler: DPM++ 2M, CFG scale"));
  EXPECT_THAT(line("dpmpp_2m_karras"), HasSubstr("Sampler: DPM++ 2M, Schedule type: Karras, "));
  EXPECT_THAT(line("euler"), Not(HasSubstr("Shift")));  // a flow schedule's only
  p.family = "wan";
  EXPECT_THAT(line("flow_dpmpp_2m"), HasSubstr("Sampler: DPM++ 2M, CFG scale"));
  EXPECT_THAT(line("dpmpp_2m"), HasSubstr("Sampler: DPM++ 2M, CFG scale"));
  EXPECT_THAT(line("flow_euler"), HasSubstr("Sampler: Euler, CFG scale"));
  EXPECT_THAT(line("flow_unipc"), HasSubstr("Shift: 5, "));
}

TEST(Parameters, ValuesWithCommasOrColonsAreQuoted) {
  Preset p = flux_preset("/models/Juggernaut XL, v9.safetensors");
  EXPECT_THAT(parameters_text(p), HasSubstr(", Model: \"Juggernaut XL, v9\", Shift: 3, "));
  p.model = "/models/a:b \"c\".safetensors";
  EXPECT_THAT(parameters_text(p), HasSubstr(", Model: \"a:b \\\"c\\\"\", "));
  // A name without a weights extension stays whole.
  p.model = "flux1-dev.fp8";
  EXPECT_THAT(parameters_text(p), HasSubstr(", Model: flux1-dev.fp8, "));
}

TEST(Parameters, TheEmbeddedModelHasANameAndNoHash) {
  Preset p = Preset::embedded_defaults();
  p.family = "wan";
  p.prompt = "a red circle moves right";
  p.seed = 3;
  EXPECT_TRUE(file_hashes(p, fs::path()).model.empty());
  EXPECT_EQ(parameters_text(p),
            "a red circle moves right\n"
            "Steps: 20, Sampler: UniPC, CFG scale: 1.5, Seed: 3, Size: 64x64, "
            "Model: kinora-tiny-wan-dit, Shift: 3, Version: Kinora");
}

}  // namespace
}  // namespace kinora::render
