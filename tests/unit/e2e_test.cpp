// The CLI's rendering commands end to end on the fixture chain, checked by
// decoding the outputs with FFmpeg's own tools (ffprobe / ffmpeg).
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <array>
#include <chrono>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>

#include "chain_preset.h"
#include "test_util.h"

using kinora::test::fixture;
using kinora::test::TempDir;
using nlohmann::json;
using ::testing::HasSubstr;
using ::testing::Not;
namespace fs = std::filesystem;

namespace {
using kinora::test::sh;
std::string kinora_bin() {
  // Appended to, not `+`: GCC 12 misreads that once inlined (-Warray-bounds).
  std::string bin = KINORA_BIN_DIR;
  bin.append("/kinora");
  return bin;
}
std::string chain(int steps = 2, int frames = 9) {
  return " --model " + fixture("wan21_dit_tiny.safetensors") + " --vae " +
         fixture("wan21_vae_tiny.safetensors") + " --text-encoder " +
         fixture("umt5_enc_tiny.safetensors") + " --tokenizer " + fixture("spm_tiny.model") +
         " --width 64 --height 48 --frames " + std::to_string(frames) + " --steps " +
         std::to_string(steps);
}
json probe(const std::string& path) {
  const auto r =
      sh("ffprobe -v error -count_frames -show_entries "
         "stream=codec_name,width,height,nb_read_frames,r_frame_rate -of json '" +
         path + "'");
  return json::parse(r.out)["streams"][0];
}
}  // namespace

struct FormatCase {
  const char* out;
  const char* format;
  const char* codec;
};

// gtest prints a parameter with this (else as its raw bytes).
void PrintTo(const FormatCase& c, std::ostream* os) {
  *os << c.out << (*c.format ? std::string(" --format ") + c.format : std::string()) << " → "
      << c.codec;
}

class OutputFormats : public ::testing::TestWithParam<FormatCase> {};

TEST_P(OutputFormats, DecodeWithTheRightCodecSizeFramesFpsAndParameters) {
  TempDir dir;
  const auto& c = GetParam();
  const std::string out = (dir / c.out).string();
  const bool still = std::string(c.codec) == "png" && std::string(c.format) != "png-seq";
  const auto r = sh(kinora_bin() + " generate -p 'a green square moving up' --seed 5 --fps 12" +
                    chain(2, still ? 1 : 9) + " --out '" + out + "'" +
                    (*c.format ? std::string(" --format ") + c.format : ""));
  ASSERT_EQ(r.code, 0) << r.out;
  const bool sequence = std::string(c.format) == "png-seq";
  const auto s = probe(sequence ? out + "/frame_%05d.png" : out);
  EXPECT_EQ(s["codec_name"], c.codec);
  EXPECT_EQ(s["width"], 64);
  EXPECT_EQ(s["height"], 48);
  EXPECT_EQ(s["nb_read_frames"], still ? "1" : "9");
  if (!sequence && !still) {
    EXPECT_EQ(s["r_frame_rate"], "12/1");
  }
  // The parameters come back from the file, and from the sidecar.
  const auto restored = sh(kinora_bin() + " restore '" + out + "'");
  ASSERT_EQ(restored.code, 0) << restored.out;
  const auto preset = json::parse(restored.out);
  EXPECT_EQ(preset["prompt"], "a green square moving up");
  EXPECT_EQ(preset["seed"], 5);
  EXPECT_EQ(preset["steps"], 2);
  EXPECT_EQ(preset["fps"], 12);
  // Beside a file its sidecar "NAME.EXT.json"; inside a PNG sequence, kinora.json.
  std::ifstream sidecar(sequence ? out + "/kinora.json" : out + ".json");
  const auto meta = json::parse(sidecar);
  EXPECT_EQ(meta["preset"]["seed"], 5);
  EXPECT_EQ(meta["model_files"]["model"]["file"], "wan21_dit_tiny.safetensors");
  EXPECT_EQ(meta["model_files"]["model"]["sha256_first_last_mib"].get<std::string>().size(), 64u);
  // File names, never this machine's paths.
  EXPECT_EQ(meta["preset"]["model"], "wan21_dit_tiny.safetensors");
  EXPECT_EQ(meta["preset"]["output"], std::filesystem::path(out).filename().string());
  EXPECT_EQ(meta["preset"]["models_dir"], "");
  EXPECT_THAT(meta.dump(), ::testing::Not(HasSubstr(dir.path().string())));
  EXPECT_THAT(meta["kinora"]["ffmpeg"].get<std::string>(), HasSubstr("libavcodec"));
}

INSTANTIATE_TEST_SUITE_P(E2E, OutputFormats,
                         ::testing::Values(FormatCase{"h264.mp4", "", "h264"},
                                           FormatCase{"h265.mp4", "mp4-h265", "hevc"},
                                           FormatCase{"vp9.webm", "", "vp9"},
                                           FormatCase{"prores.mov", "", "prores"},
                                           FormatCase{"frames", "png-seq", "png"},
                                           FormatCase{"still.png", "", "png"}),
                         [](const auto& test_param) {
                           std::string n = test_param.param.out;
                           for (auto& ch : n)
                             if (!std::isalnum(static_cast<unsigned char>(ch))) ch = '_';
                           return n;
                         });

TEST(E2E, RestoreThenRenderGivesTheSameFrames) {
  TempDir dir;
  ASSERT_EQ(sh(kinora_bin() + " generate -p 'a white triangle' --seed 9" + chain() + " --out " +
               (dir / "a").string() + " --format png-seq")
                .code,
            0);
  const auto restored = sh(kinora_bin() + " restore " + (dir / "a").string());
  std::ofstream(dir / "preset.json") << restored.out;
  // The restored preset names its models by file name; --models-dir finds them.
  const auto r = sh(kinora_bin() + " render " + (dir / "preset.json").string() + " --models-dir " +
                    KINORA_FIXTURES + " --set output=" + (dir / "b").string());
  ASSERT_EQ(r.code, 0) << r.out;
  for (int i = 1; i <= 9; ++i) {
    char name[32];
    std::snprintf(name, sizeof name, "frame_%05d.png", i);
    const auto a = sh("ffmpeg -v error -i " + (dir / "a" / name).string() + " -f md5 -");
    const auto b = sh("ffmpeg -v error -i " + (dir / "b" / name).string() + " -f md5 -");
    EXPECT_EQ(a.out, b.out) << name;
  }
  // Another seed, other frames.
  ASSERT_EQ(sh(kinora_bin() + " render " + (dir / "preset.json").string() + " --models-dir " +
               KINORA_FIXTURES + " --set seed=10 --set output=" + (dir / "c").string())
                .code,
            0);
  EXPECT_NE(sh("ffmpeg -v error -i " + (dir / "a/frame_00001.png").string() + " -f md5 -").out,
            sh("ffmpeg -v error -i " + (dir / "c/frame_00001.png").string() + " -f md5 -").out);
  // `restore --models-dir` where two files are missing and one differs: all
  // three said, not only the first missing.
  const auto models = dir / "models";
  fs::create_directories(models);
  fs::copy_file(fixture("umt5_enc_tiny.safetensors"), models / "umt5_enc_tiny.safetensors");
  fs::copy_file(fixture("wan21_vae_tiny.safetensors"), models / "wan21_dit_tiny.safetensors");
  const auto said = sh("{ " + kinora_bin() + " restore " + (dir / "a").string() + " --models-dir " +
                       models.string() + " 2>&1 >/dev/null; }")
                        .out;
  EXPECT_THAT(said, HasSubstr("wan21_dit_tiny.safetensors is not the file"));
  EXPECT_THAT(said, HasSubstr("key 'vae'"));
  EXPECT_THAT(said, HasSubstr("key 'tokenizer'"));
  EXPECT_THAT(said, Not(HasSubstr("key 'text_encoder'")));
}

// A user's file at an output's parameters-file name (NAME.png.json) is seen
// by --dry-run and --status, as the render would refuse it; an empty folder
// is where a frame sequence goes, as render takes it.
// A model whose name alone is in two of models_dir's folders is recorded by
// its path inside models_dir, so that the restored preset renders again.
TEST(E2E, AModelOfAnAmbiguousNameIsRecordedByItsPath) {
  TempDir dir;
  namespace fs = std::filesystem;
  const auto md = dir / "models";
  for (const char* sub : {"diffusion_models", "checkpoints", "vae", "text_encoders"})
    fs::create_directories(md / sub);
  fs::copy_file(fixture("wan21_dit_tiny.safetensors"), md / "diffusion_models/wan.safetensors");
  fs::copy_file(fixture("wan21_dit_tiny.comfy.safetensors"), md / "checkpoints/wan.safetensors");
  fs::copy_file(fixture("wan21_vae_tiny.safetensors"), md / "vae/v.safetensors");
  fs::copy_file(fixture("umt5_enc_tiny.safetensors"), md / "text_encoders/t.safetensors");
  fs::copy_file(fixture("spm_tiny.model"), md / "text_encoders/spm_tiny.model");
  const std::string models = " --models-dir " + md.string() +
                             " --vae v --text-encoder t --tokenizer spm_tiny --seed 2 --steps 1" +
                             " --width 32 --height 32 --frames 5";
  auto r = sh(kinora_bin() + " generate -p x --model diffusion_models/wan" + models + " --out " +
              (dir / "a.mp4").string());
  ASSERT_EQ(r.code, 0) << r.out;
  r = sh("{ " + kinora_bin() + " restore " + (dir / "a.mp4").string() + " 2>/dev/null; }");
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_EQ(json::parse(r.out)["model"], "diffusion_models/wan.safetensors") << r.out;
  EXPECT_EQ(json::parse(r.out)["vae"], "v");  // an unambiguous name stays a name
  std::ofstream(dir / "a.json") << r.out;
  r = sh(kinora_bin() + " render " + (dir / "a.json").string() + " --models-dir " + md.string() +
         " --set output=" + (dir / "b.mp4").string());
  EXPECT_EQ(r.code, 0) << r.out;
}

TEST(E2E, BatchSeesAParametersFileInTheWayAndTakesAnEmptyFolderForFrames) {
  TempDir dir;
  json list = kinora::test::chain_list(dir.path(), 2);
  list[1]["format"] = "png-seq";
  list[1]["frames"] = 5;
  list[1]["output"] = (dir / "frames").string();
  std::filesystem::create_directories(dir / "frames");
  std::ofstream(dir / "list.json") << list.dump();
  std::ofstream(dir / "out0.png.json") << "my notes";
  auto r = sh(kinora_bin() + " batch " + (dir / "list.json").string() + " --dry-run");
  EXPECT_NE(r.code, 0) << r.out;
  EXPECT_THAT(r.out, HasSubstr("out0.png.json (where the parameters of the render are written) "
                               "exists and is not Kinora's"));
  EXPECT_THAT(r.out, HasSubstr("plan  "));  // the frames
  r = sh(kinora_bin() + " batch --status " + (dir / "list.json").string());
  EXPECT_THAT(r.out, HasSubstr("its parameters file " + (dir / "out0.png.json").string()));
  EXPECT_THAT(r.out, HasSubstr("missing  "));
  EXPECT_THAT(r.out, Not(HasSubstr("frames  (exists")));
  r = sh(kinora_bin() + " batch " + (dir / "list.json").string());
  EXPECT_NE(r.code, 0);
  EXPECT_THAT(r.out, HasSubstr("1 rendered"));
  EXPECT_TRUE(std::filesystem::exists(dir / "frames" / "kinora.json"));
  EXPECT_EQ(kinora::test::read_bytes(dir / "out0.png.json"), "my notes");
  EXPECT_FALSE(std::filesystem::exists(dir / "out0.png"));
}

TEST(E2E, BatchShardsPartitionExactlyAndResume) {
  TempDir dir;
  const json list = kinora::test::chain_list(dir.path(), 7);
  std::ofstream(dir / "list.json") << list.dump();
  std::multiset<std::string> planned;
  for (int i = 0; i < 3; ++i) {
    const auto r = sh(kinora_bin() + " batch " + (dir / "list.json").string() +
                      " --dry-run --shard " + std::to_string(i) + "/3");
    ASSERT_EQ(r.code, 0) << r.out;
    std::istringstream lines(r.out);
    for (std::string line; std::getline(lines, line);)
      if (line.rfind("plan  ", 0) == 0) planned.insert(line.substr(line.rfind(' ') + 1));
  }
  EXPECT_EQ(planned.size(), 7u);  // every entry once…
  EXPECT_EQ(std::set<std::string>(planned.begin(), planned.end()).size(),
            7u);  // …and no entry twice
  // Render shard 0, then run it again: finished outputs are skipped.
  auto r = sh(kinora_bin() + " batch " + (dir / "list.json").string() + " --shard 0/3");
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_TRUE(std::filesystem::exists(dir / "out0.png"));
  EXPECT_TRUE(std::filesystem::exists(dir / "out3.png"));
  EXPECT_FALSE(std::filesystem::exists(dir / "out1.png"));
  r = sh(kinora_bin() + " batch " + (dir / "list.json").string() + " --shard 0/3");
  EXPECT_THAT(r.out, HasSubstr("0 rendered, 3 skipped"));
  EXPECT_NE(sh(kinora_bin() + " batch " + (dir / "list.json").string() + " --shard 3/3").code, 0);
  // A task of a Slurm array that finds other presets than were submitted
  // renders nothing and fails.
  r = sh(kinora_bin() + " batch " + (dir / "list.json").string() +
         " --shard 1/3 --presets-fingerprint 0123456789abcdef");
  EXPECT_NE(r.code, 0);
  EXPECT_THAT(r.out, HasSubstr("are not those submitted"));
  EXPECT_FALSE(std::filesystem::exists(dir / "out1.png"));
  // A file of the user's at an output's name is not a finished render: the
  // batch fails that entry and leaves the file, and --status says so.
  std::ofstream(dir / "out1.png") << "my own notes";
  r = sh(kinora_bin() + " batch " + (dir / "list.json").string() + " --shard 1/3");
  EXPECT_NE(r.code, 0);
  EXPECT_THAT(r.out, HasSubstr("out1.png exists and is not a Kinora render; it is not replaced"));
  EXPECT_EQ(kinora::test::read_bytes(dir / "out1.png"), "my own notes");
  r = sh(kinora_bin() + " batch --status " + (dir / "list.json").string());
  EXPECT_NE(r.code, 0);
  EXPECT_THAT(r.out, HasSubstr("foreign  "));
  EXPECT_THAT(r.out, HasSubstr("1 not Kinora's"));
  EXPECT_THAT(r.out, HasSubstr("4 done, 2 missing"));  // shards 0 and 1 (out4)
  // A render written over (its parameters file still beside it) is not done:
  // the batch fails it and leaves it; a render whose file alone was deleted
  // is missing, with the reason a batch will not render it yet.
  std::ofstream(dir / "out3.png") << "hello";
  std::filesystem::remove(dir / "out6.png");
  r = sh(kinora_bin() + " batch " + (dir / "list.json").string() + " --shard 0/3");
  EXPECT_NE(r.code, 0);
  EXPECT_THAT(r.out, HasSubstr("out3.png does not read as a complete render ("));
  EXPECT_EQ(kinora::test::read_bytes(dir / "out3.png"), "hello");
  // Another render copied over one: damaged, not "stale".
  std::filesystem::copy_file(dir / "out0.png", dir / "out4.png",
                             std::filesystem::copy_options::overwrite_existing);
  // A PNG cut short after its text chunks still holds its parameters, but
  // not its whole picture: damaged too.
  std::filesystem::resize_file(dir / "out0.png", std::filesystem::file_size(dir / "out0.png") - 20);
  r = sh(kinora_bin() + " batch --status " + (dir / "list.json").string());
  EXPECT_THAT(r.out, HasSubstr("damaged  "));
  EXPECT_THAT(r.out, HasSubstr("out0.png  (cut short: its IDAT chunk ends at byte "));
  EXPECT_THAT(r.out, HasSubstr("out6.png.json is left from an earlier render"));
  EXPECT_THAT(r.out, HasSubstr("out4.png  (another render was written over it: its parameters "
                               "are not those out4.png.json records"));
  EXPECT_THAT(r.out,
              HasSubstr("0 done, 3 missing, 0 failed, 0 invalid, 3 damaged, 1 not Kinora's"));
}

// A preset another process is rendering (a second batch, an overlapping Slurm
// array on another node) is left to it once it is seen touching its claim,
// and --status says who has it; once that process stopped touching its claim
// (a node that died), it is rendered: by a batch that finds it so, and by one
// that waits on it at the end (a task retried while the claim of the one
// before it ages).
TEST(E2E, BatchLeavesAPresetAnotherProcessIsRendering) {
  TempDir dir;
  const json list = kinora::test::chain_list(dir.path(), 2);
  std::ofstream(dir / "list.json") << list.dump();
  const auto claim = dir / ".out1.png.claim";
  std::ofstream(claim) << "node7_4026531836 42 node7\n";
  const std::string batch = kinora_bin() + " batch " + (dir / "list.json").string();
  // Node 7's heartbeat, every second while the batch runs.
  auto r = sh("(while sleep 1; do touch '" + claim.string() + "'; done) & beat=$!; " + batch +
              " 2>&1; rc=$?; kill $beat; exit $rc");
  EXPECT_EQ(r.code, 0) << r.out;
  EXPECT_THAT(r.out, HasSubstr("waiting on 1 output claimed by another machine"));
  EXPECT_THAT(r.out, HasSubstr("out1.png (being rendered by process 42 on node7)"));
  EXPECT_THAT(r.out, HasSubstr("1 rendered, 1 skipped, 0 failed"));
  EXPECT_TRUE(std::filesystem::exists(dir / "out0.png"));
  EXPECT_FALSE(std::filesystem::exists(dir / "out1.png"));
  EXPECT_FALSE(std::filesystem::exists(dir / ".out0.png.claim")) << "released after rendering";
  r = sh(kinora_bin() + " batch --status " + (dir / "list.json").string());
  EXPECT_THAT(r.out, HasSubstr("running  "));
  EXPECT_THAT(r.out, HasSubstr("out1.png  (process 42 on node7)"));
  EXPECT_THAT(r.out, HasSubstr("1 done, 1 running, 0 missing"));
  std::filesystem::last_write_time(
      claim, std::filesystem::last_write_time(claim) - std::chrono::minutes(10));
  r = sh(batch);
  EXPECT_EQ(r.code, 0) << r.out;
  EXPECT_THAT(r.out, HasSubstr("1 rendered, 1 skipped, 0 failed"));
  EXPECT_TRUE(std::filesystem::exists(dir / "out1.png"));
  EXPECT_FALSE(std::filesystem::exists(claim));
  // Untouched since 4 minutes 45 s: live at the first look, stale 15 s later.
  std::filesystem::remove(dir / "out1.png");
  std::filesystem::remove(dir / "out1.png.json");
  std::ofstream(claim) << "node7_4026531836 42 node7\n";
  std::filesystem::last_write_time(
      claim, std::filesystem::last_write_time(claim) - std::chrono::seconds(285));
  r = sh(batch);
  EXPECT_EQ(r.code, 0) << r.out;
  EXPECT_THAT(r.out, HasSubstr("waiting on 1 output claimed by another machine"));
  EXPECT_THAT(r.out, HasSubstr("1 rendered, 1 skipped, 0 failed"));
  EXPECT_TRUE(std::filesystem::exists(dir / "out1.png"));
  EXPECT_FALSE(std::filesystem::exists(claim));
}

// `render`'s folders are the command line's: a relative --output-dir from
// here (not from the preset's folder), --models-dir for the defaults of a
// model named in the preset (a copy of the embedded DiT: its own size), and a
// preset of the embedded model renders with a --models-dir too.
TEST(E2E, RenderTakesItsFoldersFromTheCommandLine) {
  TempDir dir;
  namespace fs = std::filesystem;
  for (const char* sub :
       {"p", "out", "models/diffusion_models", "models/vae", "models/text_encoders"})
    fs::create_directories(dir / sub);
  const std::string assets = fixture("../../assets/");
  fs::copy_file(assets + "kinora-tiny-wan-dit.safetensors",
                dir / "models/diffusion_models/copy.safetensors");
  fs::copy_file(assets + "kinora-tiny-wan-vae.safetensors", dir / "models/vae/v.safetensors");
  fs::copy_file(assets + "kinora-tiny-umt5.safetensors",
                dir / "models/text_encoders/t.safetensors");
  fs::copy_file(assets + "kinora-tiny-spm.model", dir / "models/text_encoders/s.model");
  const std::string prompt = R"("prompt": "a red circle moving left on a blue background")";
  std::ofstream(dir / "p/embedded.json") << "{" << prompt << R"(, "seed": 9, "steps": 2})";
  std::ofstream(dir / "p/named.json")
      << "{" << prompt
      << R"(, "seed": 9, "steps": 2, "model": "copy", "vae": "v", "text_encoder": "t",
             "tokenizer": "s.model", "output": "named.mp4"})";
  const std::string in = "cd " + dir.path().string() + " && " + kinora_bin();
  auto r = sh(in + " render p/embedded.json --output-dir out --models-dir models");
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_TRUE(fs::exists(dir / "out/kinora-9.mp4")) << r.out;
  EXPECT_FALSE(fs::exists(dir / "p/out"));
  r = sh(in + " render p/named.json --output-dir out --models-dir models");
  ASSERT_EQ(r.code, 0) << r.out;
  const auto made = sh(kinora_bin() + " restore " + (dir / "out/named.mp4").string()).out;
  EXPECT_THAT(made, HasSubstr(R"("width": 64)")) << made;
  EXPECT_THAT(made, HasSubstr(R"("frames": 17)"));
}

TEST(E2E, BadPresetsAreRefusedNamingKeyAndFile) {
  TempDir dir;
  std::ofstream(dir / "bad.json") << R"({"prompt": "x", "stepz": 3})";
  auto r = sh(kinora_bin() + " batch --dry-run " + (dir / "bad.json").string());
  EXPECT_NE(r.code, 0);
  EXPECT_THAT(r.out, HasSubstr("bad.json"));
  EXPECT_THAT(r.out, HasSubstr("key 'stepz'"));
  std::ofstream(dir / "range.json") << R"({"prompt": "x", "fps": 0, "output": "o.mp4"})";
  r = sh(kinora_bin() + " render " + (dir / "range.json").string());
  EXPECT_NE(r.code, 0);
  EXPECT_THAT(r.out, HasSubstr("key 'fps' must be between 1 and 240, got 0"));
  // A folder that does not exist is refused before any sampling.
  r = sh(kinora_bin() + " generate -p x" + chain() + " --out /nonexistent/folder/x.mp4");
  EXPECT_NE(r.code, 0);
  EXPECT_THAT(r.out, HasSubstr("the folder /nonexistent/folder does not exist"));
  EXPECT_THAT(r.out, ::testing::Not(HasSubstr("step 1/")));
  r = sh(kinora_bin() + " restore " + fixture("wan21_dit_tiny.safetensors"));
  EXPECT_NE(r.code, 0);
}

// Ctrl-C stops a render within a step and leaves no file under the output name.
// KINORA_ASSETS names the embedded model's folder: one that is missing or
// lacks a file is said so, not passed over for the shipped model.
TEST(E2E, AWrongAssetsFolderIsSaidSo) {
  TempDir dir;
  const std::string gen =
      " " + kinora_bin() + " generate -p x --steps 1 --out " + (dir / "a.mp4").string();
  const auto typo = sh("KINORA_ASSETS=" + (dir / "nosuch").string() + gen);
  EXPECT_EQ(typo.code, 1) << typo.out;
  EXPECT_THAT(typo.out, HasSubstr("KINORA_ASSETS is " + (dir / "nosuch").string() +
                                  ", which does not exist"));
  fs::create_directories(dir / "model");
  fs::copy_file(fixture("../../assets/kinora-tiny-wan-dit.safetensors"),
                dir / "model" / "kinora-tiny-wan-dit.safetensors");
  const auto part = sh("KINORA_ASSETS=" + (dir / "model").string() + gen);
  EXPECT_EQ(part.code, 1) << part.out;
  EXPECT_THAT(part.out, HasSubstr("which lacks kinora-tiny-wan-vae.safetensors, "
                                  "kinora-tiny-umt5.safetensors, kinora-tiny-spm.model"));
  EXPECT_FALSE(fs::exists(dir / "a.mp4"));
}

// A cache folder that cannot be one costs only the caching, and is said.
TEST(E2E, ACacheFolderThatIsAFileIsSaidAndTheRenderGoesOn) {
  TempDir dir;
  { std::ofstream(dir / "cache") << "a file"; }
  const auto r = sh("KINORA_CACHE_DIR=" + (dir / "cache").string() + " " + kinora_bin() +
                    " generate -p x" + chain() + " --out " + (dir / "a.mp4").string());
  EXPECT_EQ(r.code, 0) << r.out;
  EXPECT_THAT(r.out, HasSubstr("KINORA_CACHE_DIR is " + (dir / "cache").string() +
                               ", which is not a folder; nothing is cached"));
  EXPECT_TRUE(fs::exists(dir / "a.mp4"));
}

TEST(E2E, CtrlCCancelsCleanly) {
  TempDir dir;
  const std::string out = (dir / "long.mp4").string();
  // One Ctrl-C: without --foreground, timeout signals the command and then its own
  // process group, and the second SIGINT ends the process at once (exit 130, no message).
  const auto r = sh("timeout --foreground --preserve-status -s INT 3 " + kinora_bin() +
                    " generate -p 'x' --seed 1" + chain(1000) + " --out " + out);
  EXPECT_EQ(r.code, 130) << r.out;
  EXPECT_THAT(r.out, HasSubstr("cancelled; the render in progress wrote nothing"));
  EXPECT_EQ(std::distance(std::filesystem::directory_iterator(dir.path()), {}), 0);
}

// `kinora sweep` as a user types it: the embedded model and the project's LoRA
// by name, two seeds. Each cell restores to its own preset (the no-LoRA column
// without the LoRA), the sheet is a tiled video of them, and a sweep run again
// reuses its cells.
TEST(E2E, SweepOfTheEmbeddedModelAndItsLora) {
  TempDir dir;
  std::ofstream(dir / "big.json")
      << R"({"prompt": "a big red circle moving left on a blue background", "steps": 4})";
  const std::string cmd = kinora_bin() + " sweep " + (dir / "big.json").string() +
                          " --axis lora:kinora-tiny-big=1 --axis seed=1,2 --output-dir " +
                          dir.path().string();
  const auto r = sh(cmd);
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_THAT(r.out, HasSubstr("4 rendered, 0 reused"));
  const auto sheet = probe((dir / "big-sweep-kinora-tiny-big-seed.mp4").string());
  EXPECT_EQ(sheet["nb_read_frames"], "17");
  EXPECT_GT(sheet["width"].get<int>(), 2 * 64);
  EXPECT_GT(sheet["height"].get<int>(), 2 * 64);
  auto restored = [&](const std::string& cell) {
    const auto out = sh(kinora_bin() + " restore " + (dir / cell).string());
    EXPECT_EQ(out.code, 0) << out.out;
    return json::parse(out.out);
  };
  const auto on = restored("big-kinora-tiny-big=1-seed=2.mp4");
  EXPECT_EQ(on["seed"], 2);
  ASSERT_EQ(on["loras"].size(), 1u);
  EXPECT_EQ(on["loras"][0]["path"], "kinora-tiny-big");  // as named; found again by name
  EXPECT_EQ(on["loras"][0]["strength"], 1.0);
  EXPECT_TRUE(restored("big-kinora-tiny-big=off-seed=1.mp4")["loras"].empty());
  // The sheet restores to its first cell's preset, and says it is a sheet.
  const std::string sheet_file = (dir / "big-sweep-kinora-tiny-big-seed.mp4").string();
  const auto sheet_preset = sh(kinora_bin() + " restore " + sheet_file);
  EXPECT_EQ(sheet_preset.code, 0) << sheet_preset.out;
  EXPECT_THAT(sheet_preset.out,
              HasSubstr("is a sweep's contact sheet (axes: lora:kinora-tiny-big, seed)"));
  // Again: the cells are reused and the sweep's own sheet left as it was.
  const auto sheet_bytes = kinora::test::read_bytes(sheet_file);
  const auto again = sh(cmd);
  EXPECT_EQ(again.code, 0) << again.out;
  EXPECT_THAT(again.out,
              HasSubstr("0 rendered, 4 reused; contact sheet " + sheet_file + " (as it was)"));
  EXPECT_EQ(kinora::test::read_bytes(sheet_file), sheet_bytes);
  // A dry run lists the cells where they are, as it lists the sheet.
  const auto dry = sh(cmd + " --dry-run");
  EXPECT_EQ(dry.code, 0) << dry.out;
  EXPECT_THAT(dry.out, HasSubstr("reuse  " + (dir / "big-kinora-tiny-big=1-seed=2.mp4").string()));
  EXPECT_THAT(dry.out,
              HasSubstr("sheet  " + (dir / "big-sweep-kinora-tiny-big-seed.mp4").string()));
  const auto over = sh(cmd + " --overwrite");
  EXPECT_EQ(over.code, 0) << over.out;
  EXPECT_THAT(over.out, HasSubstr("4 rendered"));
  // The LoRA by name with a strength that is not a number: said so, not "not found".
  const auto typo = sh(kinora_bin() + " generate -p x --lora kinora-tiny-big:abc -o " +
                       (dir / "typo.mp4").string());
  EXPECT_EQ(typo.code, 1) << typo.out;
  EXPECT_THAT(typo.out, HasSubstr("LoRA 'kinora-tiny-big:abc': 'abc' is not a strength"));
  const auto hex = sh(kinora_bin() + " generate -p x --lora kinora-tiny-big:0x10 -o " +
                      (dir / "hex.mp4").string());
  EXPECT_EQ(hex.code, 1) << hex.out;
  EXPECT_THAT(hex.out, HasSubstr("'0x10' is not a strength (a number from -100 to 100)"));
  // An empty name, a folder and a device are not LoRA files, said as such.
  for (const auto& [lora, said] : std::vector<std::pair<std::string, std::string>>{
           {"''", "--lora '': a LoRA with an empty name"},
           {dir.path().string(), dir.path().string() + " is a folder, not a LoRA file"},
           {"/dev/null", "/dev/null is not a regular file, not a LoRA file"}}) {
    const auto bad =
        sh(kinora_bin() + " generate -p x --lora " + lora + " -o " + (dir / "none.mp4").string());
    EXPECT_EQ(bad.code, 1) << bad.out;
    EXPECT_THAT(bad.out, HasSubstr(said)) << bad.out;
  }
  // A .png asked of the embedded model, whose clips are 17 frames at the least.
  const auto png = sh(kinora_bin() + " generate -p x -o " + (dir / "one.png").string());
  EXPECT_THAT(png.out, HasSubstr("this model makes clips of 17 frames at the least"));
  EXPECT_THAT(png.out, Not(HasSubstr("ask for 1 frame")));
  // Three strengths: the command line's own rule, not a preset's.
  const auto three = sh(kinora_bin() + " generate -p x --lora kinora-tiny-big:1:0.5:3 -o " +
                        (dir / "three.mp4").string());
  EXPECT_EQ(three.code, 1) << three.out;
  EXPECT_THAT(three.out, HasSubstr("--lora 'kinora-tiny-big:1:0.5:3': at most two strengths"));
  EXPECT_FALSE(std::filesystem::exists(dir / "three.mp4"));
  // One LoRA twice (an option and a tag): applied twice, and said.
  const auto twice =
      sh(kinora_bin() + " generate -p 'x <lora:kinora-tiny-big:0.5>' --lora kinora-tiny-big " +
         "--steps 1 -o " + (dir / "twice.mp4").string());
  EXPECT_EQ(twice.code, 0) << twice.out;
  EXPECT_THAT(twice.out, HasSubstr("LoRA kinora-tiny-big.safetensors is given more than once"));
  // A tag in the negative prompt is text there, and said.
  const auto negative =
      sh(kinora_bin() + " generate -p x --negative 'blurry <lora:kinora-tiny-big>' " +
         "--steps 1 -o " + (dir / "negative.mp4").string());
  EXPECT_EQ(negative.code, 0) << negative.out;
  EXPECT_THAT(negative.out, HasSubstr("the negative prompt's <lora:…> is read as text"));
}
