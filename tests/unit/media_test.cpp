// media/output.h in process (so that the sanitizer build runs it): where an
// output may go, writing it with its sidecar, and reading parameters back from
// files made here and elsewhere.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <sys/resource.h>

#include <csignal>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>

#include "media/output.h"
#include "test_util.h"

namespace kinora::media {
namespace {
namespace fs = std::filesystem;
using test::error_of;
using test::TempDir;
using ::testing::HasSubstr;

std::string parameters(const std::string& prompt) {
  return nlohmann::json{{"kinora", {{"version", "Kinora test"}}}, {"preset", {{"prompt", prompt}}}}
      .dump();
}

torch::Tensor frames(int64_t n) {
  return torch::randint(0, 256, {n, 16, 24, 3}, torch::kUInt8);
}

std::size_t entries(const fs::path& dir) {
  return static_cast<std::size_t>(std::distance(fs::directory_iterator(dir), {}));
}

TEST(Media, EveryFormatWritesWithItsParametersAndLeavesNoTemporary) {
  TempDir dir;
  WriteOptions o;
  o.metadata_json = parameters("a fox");
  o.parameters_text = "a fox\nSteps: 2";
  const std::pair<const char*, const char*> outputs[] = {
      {"a.mp4", ""}, {"a.webm", ""}, {"a.mov", ""}, {"one.png", ""}, {"seq", "png-seq"}};
  for (const auto& [name, format] : outputs) {
    const int64_t n = std::string(name) == "one.png" ? 1 : 3;
    write_output(prepare_output(dir / name, format, n, false), frames(n), o);
    EXPECT_EQ(read_embedded_parameters(dir / name)["preset"]["prompt"], "a fox") << name;
  }
  EXPECT_EQ(read_embedded_parameters(dir / "a.mp4.json")["preset"]["prompt"], "a fox");
  EXPECT_TRUE(fs::exists(dir / "seq/frame_00003.png"));
  EXPECT_FALSE(fs::exists(dir / "seq.json"));  // a sequence keeps its parameters inside
  EXPECT_EQ(entries(dir.path()), 9u);          // four files, four sidecars, one folder
  EXPECT_EQ(read_frames(dir / "a.webm").size(0), 3);
}

// An output is a function of its frames: the same frames, encoded after the
// process's heap has held other data, give the same video, bit for bit, and
// the same file, byte for byte (the WebM's Matroska UIDs included). (Not
// H.265: x265 3.5 reads memory it has not written, valgrind shows.)
TEST(Media, AVideoDependsOnItsFramesAlone) {
  TempDir dir;
  WriteOptions o;
  o.metadata_json = parameters("a fox");
  // Smooth frames (noise makes the encoder's choices trivial), 64×64 like a render's.
  const auto ramp = torch::arange(64, torch::kFloat32);
  const auto f = torch::arange(17, torch::kFloat32).view({17, 1, 1, 1});
  const auto video = (ramp.view({1, 64, 1, 1}) * 2 + ramp.view({1, 1, 64, 1}) + f * 5 +
                      torch::tensor({0.f, 60.f, 120.f}).view({1, 1, 1, 3}))
                         .remainder(256)
                         .to(torch::kUInt8);
  const std::pair<const char*, const char*> outputs[] = {
      {"h264.mp4", ""}, {"vp9.webm", ""}, {"prores.mov", ""}};
  for (const auto& [name, format] : outputs) {
    std::vector<torch::Tensor> decoded;
    std::vector<std::string> files;
    for (int fill : {0x00, 0xff, 0x5a}) {
      {  // heap blocks of the sizes an encoder asks for, left holding `fill`
        std::vector<std::unique_ptr<char[]>> junk;
        for (std::size_t n = 64; n <= (1 << 20); n = n * 3 / 2) {
          junk.emplace_back(new char[n]);
          std::memset(junk.back().get(), fill, n);
        }
      }
      const auto out = dir / (std::to_string(fill) + "-" + name);
      write_output(prepare_output(out, format, 17, false), video, o);
      decoded.push_back(read_frames(out).to(torch::kInt32));
      files.push_back(test::read_bytes(out));
    }
    for (int i : {1, 2}) {
      EXPECT_TRUE(torch::equal(decoded[0], decoded[i]))
          << name << ": " << (decoded[0] - decoded[i]).abs().max().item<int>() << " levels apart";
      EXPECT_TRUE(files[0] == files[i]) << name << ": the files differ";
    }
  }
}

// A write that fails (here past a file-size limit, as on a full disk) says
// the system's reason, for a frame sequence and a PNG as for a video; nothing
// is left behind.
TEST(Media, AFailedWriteSaysTheSystemsReason) {
  TempDir dir;
  WriteOptions o;
  o.metadata_json = parameters("a fox");
  const auto big = torch::randint(0, 256, {3, 64, 64, 3}, torch::kUInt8);  // 12 KiB a frame
  const std::pair<const char*, const char*> outputs[] = {
      {"seq", "png-seq"}, {"ppm", "ppm-seq"}, {"one.png", ""}, {"a.mp4", ""}};
  for (const auto& [name, format] : outputs) {
    const int64_t n = std::string(name) == "one.png" ? 1 : 3;
    const auto target = prepare_output(dir / name, format, n, false);
    const auto old_handler = std::signal(SIGXFSZ, SIG_IGN);
    rlimit old{};
    ::getrlimit(RLIMIT_FSIZE, &old);
    rlimit lower = old;
    lower.rlim_cur = 4096;
    ::setrlimit(RLIMIT_FSIZE, &lower);
    const auto what = error_of([&] { write_output(target, big.narrow(0, 0, n), o); });
    ::setrlimit(RLIMIT_FSIZE, &old);
    std::signal(SIGXFSZ, old_handler);
    EXPECT_THAT(what, HasSubstr((dir / name).string())) << name;
    EXPECT_THAT(what, HasSubstr(std::strerror(EFBIG))) << name;
  }
  EXPECT_EQ(entries(dir.path()), 0u);
}

TEST(Media, PrepareOutputRefusesWhatItWouldDestroy) {
  TempDir dir;
  fs::create_directories(dir / "full");
  std::ofstream(dir / "full/keep.txt") << "mine";
  std::ofstream(dir / "taken.mp4") << "old";
  std::ofstream(dir / "notes.mp4.json") << "{\"mine\": true}";
  const std::pair<std::string, std::string> refused[] = {
      {(dir / "full").string(), "no extension"},
      {(dir / "full").string() + "/", "names a folder"},
      {(dir / "taken.mp4").string(), "exists; give --overwrite"},
      {(dir / "notes.mp4").string(), "is not the parameters file of an earlier render"},
      {(dir / "missing/x.mp4").string(), "does not exist"},
  };
  for (const auto& [path, why] : refused)
    EXPECT_THAT(error_of([&, p = path] { prepare_output(p, "", 5, false); }), HasSubstr(why))
        << path;
  EXPECT_THAT(error_of([&] { prepare_output(dir / "full", "png-seq", 5, true); }),
              HasSubstr("holds files other than a Kinora frame sequence"));
  EXPECT_THAT(error_of([&] { prepare_output(dir / "x.mp4", "webm", 5, false); }),
              HasSubstr("format webm is written to .webm files"));
  EXPECT_THAT(error_of([&] { prepare_output(dir / "x.png", "", 5, false); }),
              HasSubstr("a .png holds one image"));
  EXPECT_EQ(prepare_output(dir / "taken.mp4", "", 5, true).format, Format::Mp4H264);
  EXPECT_EQ(prepare_output(dir / "X.MP4", "", 5, false).format, Format::Mp4H264);
  // Nothing was touched.
  EXPECT_EQ(entries(dir.path()), 3u);
  EXPECT_EQ(entries(dir / "full"), 1u);

  // The folder of an earlier sequence: --overwrite replaces it, and the
  // refusal without it says so.
  WriteOptions o;
  o.metadata_json = parameters("a fox");
  write_output(prepare_output(dir / "seq", "png-seq", 2, false), frames(2), o);
  EXPECT_THAT(error_of([&] { prepare_output(dir / "seq", "png-seq", 2, false); }),
              HasSubstr("seq: holds the frame sequence of an earlier render; give --overwrite "
                        "to replace it"));
  EXPECT_EQ(prepare_output(dir / "seq", "png-seq", 2, true).format, Format::PngSequence);
}

// Files made elsewhere: each is parameters or an error naming it, whatever
// its bytes (a PNG cut inside a chunk, a chunk length past the end, JSON that
// is not parameters, JSON nested without end).
TEST(Media, ForeignFilesGiveParametersOrAnErrorNamingThem) {
  TempDir dir;
  WriteOptions o;
  o.metadata_json = parameters("ok");
  write_output(prepare_output(dir / "ok.png", "", 1, false), frames(1), o);
  std::ifstream in(dir / "ok.png", std::ios::binary);
  const std::string png((std::istreambuf_iterator<char>(in)), {});
  auto bytes = [&](const std::string& name, const std::string& data) {
    std::ofstream(dir / name, std::ios::binary) << data;
    return dir / name;
  };
  std::string huge_length = png.substr(0, 8) + std::string("\x7f\xff\xff\xff", 4) + "tEXt";
  std::string deep = png.substr(0, 33);  // signature and IHDR
  const std::string text = "kinora" + std::string(1, '\0') + std::string(5000, '[');
  const uint32_t len = static_cast<uint32_t>(text.size());
  deep += std::string{static_cast<char>(len >> 24), static_cast<char>(len >> 16),
                      static_cast<char>(len >> 8), static_cast<char>(len)} +
          "tEXt" + text + "CRC!";
  const std::pair<fs::path, std::string> cases[] = {
      // Cut inside the text, or a chunk that says it goes on past the end.
      {bytes("cut.png", png.substr(0, 60)), "is cut short (its iTXt chunk ends at byte 117"},
      {bytes("huge.png", huge_length), "is cut short (its tEXt chunk ends at byte 2147483667"},
      {bytes("noise.png", std::string(300, '\x89')), "not a PNG file"},
      {bytes("deep.png", deep), "nested deeper than 32 levels"},
      {bytes("preset.json", "{\"prompt\": \"x\"}"), "holds no Kinora parameters"},
      {bytes("text.mp4", "not a video"), "not a video FFmpeg can read"},
      {dir / "absent.mp4", "no such file"},
  };
  for (const auto& [path, why] : cases) {
    const auto msg = error_of([p = path] { read_embedded_parameters(p); });
    EXPECT_THAT(msg, HasSubstr(path.filename().string())) << path;
    EXPECT_THAT(msg, HasSubstr(why)) << path;
  }
  EXPECT_TRUE(is_kinora_sidecar(bytes("side.json", parameters("x"))));
  EXPECT_FALSE(is_kinora_sidecar(dir / "preset.json"));
  EXPECT_FALSE(is_kinora_sidecar(dir / "deep.png"));
}

}  // namespace
}  // namespace kinora::media
