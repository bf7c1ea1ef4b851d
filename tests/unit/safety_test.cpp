// Never lose a user's file: the CLI tried as a new user tries it, with the
// folders, names, presets, signals and limits that used to cost files. Every
// test checks that what was there before is there after, byte for byte.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>

#include "base/files.h"
#include "chain_preset.h"
#include "test_util.h"

using kinora::test::chain_preset;
using kinora::test::fixture;
using kinora::test::sh;
using kinora::test::TempDir;
using kinora::test::write_raw;
using nlohmann::json;
using ::testing::HasSubstr;
using ::testing::Not;
namespace fs = std::filesystem;

namespace {
std::string kinora_bin() {
  // Appended, not `std::string(…) + "…"`: GCC 12 warns falsely on that
  // (-Warray-bounds, its bug 105651).
  std::string bin = KINORA_BIN_DIR;
  bin += "/kinora";
  return bin;
}
// The fixture chain: random weights, a video in a fraction of a second.
std::string chain(int steps = 1) {
  return " --model " + fixture("wan21_dit_tiny.safetensors") + " --vae " +
         fixture("wan21_vae_tiny.safetensors") + " --text-encoder " +
         fixture("umt5_enc_tiny.safetensors") + " --tokenizer " + fixture("spm_tiny.model") +
         " --width 64 --height 48 --frames 5 --seed 1 --steps " + std::to_string(steps);
}
std::string read(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  std::stringstream s;
  s << f.rdbuf();
  return s.str();
}
// Every file under `dir` with its contents (links and folders by name).
std::map<std::string, std::string> snapshot(const fs::path& dir) {
  std::map<std::string, std::string> out;
  for (const auto& e : fs::recursive_directory_iterator(dir)) {
    const auto rel = fs::relative(e.path(), dir).string();
    out[rel] = e.is_regular_file() ? read(e.path()) : std::string("<dir>");
  }
  return out;
}
void write(const fs::path& p, const std::string& text) {
  std::ofstream(p, std::ios::binary) << text;
}
std::string in(const fs::path& dir, const std::string& cmd) {
  return "cd '" + dir.string() + "' && " + cmd;
}
}  // namespace

// An output that names a folder never touches it: not "d", not "renders/",
// not "." — and a name without an extension is an error listing the formats.
TEST(Safety, AnOutputNamingAFolderLeavesItAsItWas) {
  TempDir dir;
  fs::create_directories(dir / "d/sub");
  fs::create_directories(dir / "d/.git");
  write(dir / "d/sub/f", "x");
  write(dir / "d/.git/HEAD", "ref: refs/heads/main\n");
  fs::create_directories(dir / "renders");
  write(dir / "mine.txt", "my notes");
  const auto before = snapshot(dir.path());
  for (const char* out : {"d", "renders/", ".", "d/"}) {
    const auto r = sh(in(dir.path(), kinora_bin() + " generate -p x" + chain() + " --out " + out));
    EXPECT_EQ(r.code, 1) << out << ": " << r.out;
    EXPECT_THAT(r.out, Not(HasSubstr("step 1/"))) << out;  // refused before sampling
    EXPECT_EQ(snapshot(dir.path()), before) << out;
  }
  auto r = sh(in(dir.path(), kinora_bin() + " generate -p x" + chain() + " --out d"));
  EXPECT_THAT(r.out, HasSubstr("d: the name has no extension; the formats are mp4"));
  EXPECT_THAT(r.out, HasSubstr("png-seq"));
  EXPECT_THAT(r.out, HasSubstr("d is an existing folder: name a file inside it, such as d/"));
  // A folder in the name that is a file.
  std::ofstream(dir / "file") << "mine";
  r = sh(in(dir.path(), kinora_bin() + " generate -p x" + chain() + " --out file/x.mp4"));
  EXPECT_THAT(r.out, HasSubstr("file is a file, not a folder"));
  EXPECT_EQ(kinora::test::read_bytes(dir / "file"), "mine");
  fs::remove(dir / "file");
  // A model file given to restore.
  r = sh(kinora_bin() + " restore " + fixture("wan21_dit_tiny.safetensors"));
  EXPECT_THAT(r.out, HasSubstr("a model file, not a render"));
  r = sh(in(dir.path(), kinora_bin() + " generate -p x" + chain() + " --out renders/"));
  EXPECT_THAT(r.out, HasSubstr("names a folder"));
  // A PNG sequence goes into a new folder or an empty one, never a full one.
  r = sh(in(dir.path(), kinora_bin() + " generate -p x" + chain() + " --out d --format png-seq"));
  EXPECT_EQ(r.code, 1);
  EXPECT_THAT(r.out, HasSubstr("d: is a folder that is not empty"));
  r = sh(in(dir.path(),
            kinora_bin() + " generate -p x" + chain() + " --out d --format png-seq --overwrite"));
  EXPECT_EQ(r.code, 1);
  EXPECT_THAT(r.out, HasSubstr("holds files other than a Kinora frame sequence"));
  EXPECT_EQ(snapshot(dir.path()), before);
  r = sh(in(dir.path(),
            kinora_bin() + " generate -p x" + chain() + " --out renders --format png-seq"));
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_TRUE(fs::exists(dir / "renders/frame_00005.png"));
  EXPECT_TRUE(fs::exists(dir / "renders/kinora.json"));
  // A second render into it only with --overwrite, which replaces the sequence.
  r = sh(in(dir.path(),
            kinora_bin() + " generate -p y" + chain() + " --out renders --format png-seq"));
  EXPECT_EQ(r.code, 1);
  r = sh(in(dir.path(), kinora_bin() + " generate -p y" + chain() +
                            " --out renders --format png-seq --overwrite"));
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_THAT(read(dir / "renders/kinora.json"), HasSubstr("\"prompt\":\"y\""));
  EXPECT_EQ(read(dir / "mine.txt"), "my notes");
}

// One rule for every command that writes: refuse an existing output, replace
// it only with --overwrite, and a read-only one not even then.
TEST(Safety, AnExistingOutputIsReplacedOnlyWithOverwrite) {
  TempDir dir;
  const auto out = (dir / "a.mp4").string();
  ASSERT_EQ(sh(kinora_bin() + " generate -p x" + chain() + " --out " + out).code, 0);
  const auto first = read(out), first_side = read(out + ".json");
  auto r = sh(kinora_bin() + " generate -p other" + chain() + " --out " + out);
  EXPECT_EQ(r.code, 1);
  EXPECT_THAT(r.out, HasSubstr(out + ": exists; give --overwrite to replace it"));
  EXPECT_THAT(r.out, Not(HasSubstr("step 1/")));
  EXPECT_EQ(read(out), first);
  EXPECT_EQ(read(out + ".json"), first_side);
  write(dir / "p.json", json{{"prompt", "other"}, {"output", "a.mp4"}}.dump());
  r = sh(kinora_bin() + " render " + (dir / "p.json").string());
  EXPECT_EQ(r.code, 1);
  EXPECT_THAT(r.out, HasSubstr(": exists; give --overwrite"));
  EXPECT_EQ(read(out), first);
  // --overwrite replaces it, and its sidecar with it.
  r = sh(kinora_bin() + " generate -p other" + chain() + " --out " + out + " --overwrite");
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_NE(read(out), first);
  EXPECT_THAT(read(out + ".json"), HasSubstr("\"prompt\":\"other\""));
  // Read-only stays, even with --overwrite.
  fs::permissions(out, fs::perms::owner_read | fs::perms::group_read | fs::perms::others_read);
  const auto kept = read(out);
  r = sh(kinora_bin() + " generate -p third" + chain() + " --out " + out + " --overwrite");
  EXPECT_EQ(r.code, 1);
  EXPECT_THAT(r.out, HasSubstr("is read-only"));
  EXPECT_EQ(read(out), kept);
  // convert and merge: the same rule.
  const auto ck = (dir / "c.safetensors").string();
  ASSERT_EQ(sh(kinora_bin() + " convert " + fixture("wan21_vae_tiny.safetensors") + " " + ck).code,
            0);
  r = sh(kinora_bin() + " convert " + fixture("wan21_vae_tiny.safetensors") + " " + ck);
  EXPECT_THAT(r.out, HasSubstr(ck + ": exists; give --overwrite"));
  EXPECT_EQ(sh(kinora_bin() + " convert " + fixture("wan21_vae_tiny.safetensors") + " " + ck +
               " --overwrite")
                .code,
            0);
  r = sh(kinora_bin() + " merge " + fixture("wan21_vae_tiny.safetensors") + " " + ck + " -o " + ck);
  EXPECT_THAT(r.out, HasSubstr("is an input"));
}

// An output is never a file the render reads, even with --overwrite: a model
// named like a video (dit.mp4), a VAE, given by path or found by name; and a
// text encoder of the other family (FLUX's T5) is refused before loading.
TEST(Safety, AnOutputIsNeverAFileTheRenderReads) {
  TempDir dir;
  fs::copy_file(fixture("wan21_dit_tiny.safetensors"), dir / "dit.mp4");
  fs::copy_file(fixture("wan21_vae_tiny.safetensors"), dir / "vae.mov");
  const auto dit = read(dir / "dit.mp4"), vae = read(dir / "vae.mov");
  // Appended, not `+`: GCC 12 warns falsely on that chain (-Warray-bounds).
  std::string files = " --model dit.mp4 --vae vae.mov --text-encoder ";
  files.append(fixture("umt5_enc_tiny.safetensors"))
      .append(" --tokenizer ")
      .append(fixture("spm_tiny.model"))
      .append(" --width 32 --height 32 --frames 5 --steps 1");
  auto r =
      sh(in(dir.path(), kinora_bin() + " generate -p x" + files + " --out dit.mp4 --overwrite"));
  EXPECT_EQ(r.code, 1);
  EXPECT_THAT(r.out, HasSubstr("dit.mp4: is a file this render reads"));
  EXPECT_THAT(r.out, Not(HasSubstr("step 1/")));
  r = sh(in(dir.path(), kinora_bin() + " generate -p x" + files + " --out ./vae.mov --overwrite"));
  EXPECT_THAT(r.out, HasSubstr("vae.mov: is a file this render reads"));
  // A preset, and a batch of it (refused when checked, before any render).
  auto p = chain_preset();
  p["vae"] = "vae.mov";
  p["frames"] = 5;
  p["output"] = "vae.mov";
  write(dir / "p.json", p.dump());
  r = sh(kinora_bin() + " render " + (dir / "p.json").string() + " --overwrite");
  EXPECT_THAT(r.out, HasSubstr("vae.mov: is a file this render reads"));
  r = sh(kinora_bin() + " batch " + (dir / "p.json").string());
  EXPECT_THAT(r.out, HasSubstr("vae.mov: is a file this render reads"));
  EXPECT_EQ(read(dir / "dit.mp4"), dit);
  EXPECT_EQ(read(dir / "vae.mov"), vae);
  EXPECT_FALSE(fs::exists(dir / "dit.mp4.json"));
  // A sweep's contact sheet named like the VAE: refused before any cell renders.
  p["output"] = "s.mp4";
  write(dir / "s.json", p.dump());
  fs::copy_file(dir / "vae.mov", dir / "s-sweep-seed.mp4");
  const auto sheet = read(dir / "s-sweep-seed.mp4");
  p["vae"] = "s-sweep-seed.mp4";
  write(dir / "s.json", p.dump());
  r = sh(kinora_bin() + " sweep " + (dir / "s.json").string() + " --axis seed=1,2 --overwrite");
  EXPECT_THAT(r.out, HasSubstr("s-sweep-seed.mp4: is a file this render reads"));
  EXPECT_FALSE(fs::exists(dir / "s-seed=1.mp4"));
  EXPECT_EQ(read(dir / "s-sweep-seed.mp4"), sheet);
  // A frame sequence's folder holding a file the render reads (a LoRA among
  // the frames) is not replaced.
  ASSERT_EQ(
      sh(in(dir.path(), kinora_bin() + " generate -p x" + files + " --format png-seq -o seq")).code,
      0);
  fs::copy_file(dir / "vae.mov", dir / "seq" / "frame_00001.png",
                fs::copy_options::overwrite_existing);
  r = sh(in(dir.path(), kinora_bin() +
                            " generate -p x --model dit.mp4 --vae seq/frame_00001.png "
                            "--text-encoder " +
                            fixture("umt5_enc_tiny.safetensors") + " --tokenizer " +
                            fixture("spm_tiny.model") +
                            " --width 32 --height 32 --frames 5 --steps 1 --format png-seq -o seq "
                            "--overwrite"));
  EXPECT_THAT(r.out, HasSubstr("holds frame_00001.png, a file this render reads"));
  EXPECT_EQ(read(dir / "seq" / "frame_00001.png"), vae);
  // …nor one holding a file under a frame's name that is no picture.
  fs::copy_file(dir / "dit.mp4", dir / "seq" / "frame_00001.png",
                fs::copy_options::overwrite_existing);
  r = sh(in(dir.path(),
            kinora_bin() + " generate -p x" + files + " --format png-seq -o seq " + "--overwrite"));
  EXPECT_THAT(r.out, HasSubstr("holds files other than a Kinora frame sequence"));
  EXPECT_EQ(read(dir / "seq" / "frame_00001.png"), dit);
  // FLUX's T5 given to Wan: named, before any model loads.
  const auto with_text_encoder = [&](const std::string& file) {
    std::string cmd = kinora_bin();
    cmd.append(" generate -p x --model ")
        .append(fixture("wan21_dit_tiny.safetensors"))
        .append(" --vae ")
        .append(fixture("wan21_vae_tiny.safetensors"))
        .append(" --text-encoder ")
        .append(file)
        .append(" --tokenizer ")
        .append(fixture("spm_tiny.model"))
        .append(" --out ")
        .append((dir / "t5.mp4").string());
    return sh(cmd);
  };
  r = with_text_encoder(fixture("t5_enc_tiny.safetensors"));
  EXPECT_EQ(r.code, 1);
  EXPECT_THAT(r.out, HasSubstr("t5_enc_tiny.safetensors: a T5 v1.1 encoder (FLUX's t5xxl), not "
                               "Wan's umT5-XXL"));
  EXPECT_THAT(r.out, Not(HasSubstr("loading")));
  // The tokenizer given as the text encoder: said so.
  r = with_text_encoder(fixture("spm_tiny.model"));
  EXPECT_THAT(r.out, HasSubstr("a SentencePiece tokenizer model, not a safetensors model file"));
  EXPECT_FALSE(fs::exists(dir / "t5.mp4"));
}

// The parameters go to "NAME.EXT.json" and replace nothing but an earlier
// Kinora sidecar: not the preset being rendered, not a user's file.
// An output another process is rendering (its claim, live) is left to it:
// `render` and `generate` say who has it and write nothing, even with
// --overwrite; once the claim is gone the same command renders.
TEST(Safety, AnOutputAnotherProcessIsRenderingIsLeftToIt) {
  TempDir dir;
  auto p = chain_preset();
  p["output"] = "fox.png";
  write(dir / "p.json", p.dump());
  std::ofstream(dir / ".fox.png.claim") << "node7_4026531836 42 node7\n";
  for (const char* extra : {"", " --overwrite"}) {
    const auto r = sh(kinora_bin() + " render " + (dir / "p.json").string() + extra);
    EXPECT_EQ(r.code, 1) << r.out;
    EXPECT_THAT(r.out, HasSubstr("fox.png: being rendered by process 42 on node7"));
    EXPECT_THAT(r.out, Not(HasSubstr("step 1/")));
    EXPECT_FALSE(fs::exists(dir / "fox.png"));
  }
  EXPECT_TRUE(fs::exists(dir / ".fox.png.claim")) << "another's claim is left alone";
  fs::remove(dir / ".fox.png.claim");
  const auto r = sh(kinora_bin() + " render " + (dir / "p.json").string());
  EXPECT_EQ(r.code, 0) << r.out;
  EXPECT_TRUE(fs::exists(dir / "fox.png"));
  EXPECT_FALSE(fs::exists(dir / ".fox.png.claim")) << "its own claim released";
}

TEST(Safety, TheSidecarNeverReplacesAFileItDidNotWrite) {
  TempDir dir;
  auto preset = chain_preset();
  preset["output"] = "fox.png";
  const std::string text = preset.dump(2);
  write(dir / "fox.json", text);
  auto r = sh(kinora_bin() + " render " + (dir / "fox.json").string());
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_EQ(read(dir / "fox.json"), text);  // the preset as it was
  EXPECT_TRUE(fs::exists(dir / "fox.png"));
  EXPECT_THAT(read(dir / "fox.png.json"), HasSubstr("\"kinora\""));
  // A batch over the folder again: the preset is still a preset, the sidecar is
  // recognised as the parameters of a render, the output is skipped.
  r = sh(kinora_bin() + " batch " + dir.path().string());
  EXPECT_EQ(r.code, 0) << r.out;
  EXPECT_THAT(r.out, HasSubstr("left out 1 parameters file of renders found in the folders"));
  EXPECT_THAT(r.out, HasSubstr("0 rendered, 1 skipped"));
  // Named on its own, it is said by name.
  r = sh(kinora_bin() + " batch " + (dir / "fox.png.json").string());
  EXPECT_THAT(r.out, HasSubstr("fox.png.json: the parameters of a render, not a preset"));
  // The render itself given as a preset: restore gives its preset.
  r = sh(kinora_bin() + " render " + (dir / "fox.png").string());
  EXPECT_EQ(r.code, 1);
  EXPECT_THAT(r.out, HasSubstr("fox.png: a render, not a preset file (`kinora restore"));
  // A file of the sidecar's name that Kinora did not write stops the render
  // before it starts.
  write(dir / "v.mp4.json", "my own notes");
  r = sh(kinora_bin() + " generate -p x" + chain() + " --out " + (dir / "v.mp4").string());
  EXPECT_EQ(r.code, 1);
  EXPECT_THAT(
      r.out,
      HasSubstr("v.mp4.json, which exists and is not the parameters file of an earlier render"));
  EXPECT_THAT(r.out, Not(HasSubstr("step 1/")));
  EXPECT_EQ(read(dir / "v.mp4.json"), "my own notes");
  EXPECT_FALSE(fs::exists(dir / "v.mp4"));
  // Two outputs of one stem keep their own parameters.
  ASSERT_EQ(
      sh(kinora_bin() + " generate -p mp4" + chain() + " --out " + (dir / "w.mp4").string()).code,
      0);
  ASSERT_EQ(
      sh(kinora_bin() + " generate -p webm" + chain() + " --out " + (dir / "w.webm").string()).code,
      0);
  EXPECT_THAT(read(dir / "w.mp4.json"), HasSubstr("\"prompt\":\"mp4\""));
  EXPECT_THAT(read(dir / "w.webm.json"), HasSubstr("\"prompt\":\"webm\""));
}

// SIGTERM and SIGHUP (Slurm, `timeout`, a closed terminal) stop a render like
// Ctrl-C: nothing left behind, the exit status 128 + the signal.
TEST(Safety, TermAndHupCancelCleanly) {
  for (const auto& [sig, status] : {std::pair{"TERM", 143}, std::pair{"HUP", 129}}) {
    TempDir dir;
    // --foreground: the signal once, to kinora only (a second would end it at once).
    const auto r =
        sh("timeout --foreground --preserve-status -s " + std::string(sig) + " 3 " + kinora_bin() +
           " generate -p x" + chain(1000) + " --out " + (dir / "long.mp4").string());
    EXPECT_EQ(r.code, status) << sig << ": " << r.out;
    EXPECT_THAT(r.out, HasSubstr("cancelled; the render in progress wrote nothing")) << sig;
    EXPECT_TRUE(fs::is_empty(dir.path())) << sig;
  }
}

// Training stopped by SIGTERM or SIGHUP (a Slurm time limit, `timeout`, a
// closed terminal) saves a checkpoint as Ctrl-C does (resuming from one is
// train_test's).
TEST(Safety, TermAndHupSaveATrainingRun) {
  for (const auto& [sig, status] : {std::pair{"TERM", 143}, std::pair{"HUP", 129}}) {
    TempDir dir;
    const std::string train = kinora_bin() + " train vae --run " + (dir / "run").string() +
                              " --batch 1 --dim 4 --crop 16 --save-every 1000 --log-every 1" +
                              " --steps 100000";
    const auto r =
        sh("timeout --foreground --preserve-status -s " + std::string(sig) + " 6 " + train);
    EXPECT_EQ(r.code, status) << sig << ": " << r.out;
    EXPECT_THAT(r.out, HasSubstr("vae: stopped at step ")) << sig;
    const auto state = nlohmann::json::parse(read(dir / "run" / "vae-state" / "state.json"));
    const int step = state.at("step").get<int>();
    ASSERT_GT(step, 0) << sig;
    EXPECT_EQ(state.at("checkpoint"), "checkpoint-" + std::to_string(step)) << sig;
    EXPECT_TRUE(fs::exists(dir / "run" / "vae-state" / ("checkpoint-" + std::to_string(step)) /
                           "vae.safetensors"))
        << sig;
  }
}

// The file-size limit of `ulimit -f` is a full disk, not a crash (SIGXFSZ
// used to end the process with a partial temporary).
TEST(Safety, AFileSizeLimitIsAFullDisk) {
  TempDir dir;
  const auto r = sh("ulimit -f 8 && " + kinora_bin() + " generate -p x" + chain() + " --out " +
                    (dir / "big.mov").string());
  EXPECT_EQ(r.code, 1) << r.out;
  EXPECT_THAT(r.out, HasSubstr("big.mov"));
  EXPECT_THAT(r.out, HasSubstr("File too large"));
  EXPECT_TRUE(fs::is_empty(dir.path()));
  // A frame sequence is named as the folder asked for, not its temporary.
  const auto seq = sh("ulimit -f 1 && " + kinora_bin() + " generate -p x" + chain() + " --out " +
                      (dir / "seq").string() + " --format png-seq");
  EXPECT_EQ(seq.code, 1) << seq.out;
  EXPECT_THAT(seq.out, HasSubstr((dir / "seq").string()));
  EXPECT_THAT(seq.out, ::testing::Not(HasSubstr(".tmp-"))) << seq.out;
  EXPECT_TRUE(fs::is_empty(dir.path()));
  // Every command that writes: `lora merge` as well.
  const auto merge = sh("ulimit -f 8 && " + kinora_bin() + " lora merge --model " +
                        fixture("../../assets/kinora-tiny-wan-dit.safetensors") + " --lora " +
                        fixture("../../assets/loras/kinora-tiny-big.safetensors") + " --out " +
                        (dir / "merged.safetensors").string());
  EXPECT_EQ(merge.code, 1) << merge.out;
  EXPECT_THAT(merge.out, HasSubstr("File too large"));
  EXPECT_TRUE(fs::is_empty(dir.path()));
}

// A temporary a dead process of this machine left behind (a SIGKILL) goes the
// next time that folder is written; a running process's, another machine's and
// anything else stay.
TEST(Safety, StaleTemporariesOfDeadProcessesAreRemoved) {
  TempDir dir;
  // This host's tag (its name and PID namespace), as kinora names temporaries.
  const std::string ours = kinora::temp_beside("x").filename().string();  // .x.tmp-TAG-PID
  const std::string tag = ours.substr(7, ours.rfind('-') - 7);
  // A PID that is not running: the largest possible, far past any live one.
  const std::string dead = ".old.mp4.tmp-" + tag + "-4194303.mp4";
  const std::string alive = ".run.mp4.tmp-" + tag + "-" + std::to_string(::getppid()) + ".mp4";
  const std::string other_host = ".x.mp4.tmp-otherhost-4194303.mp4";
  write(dir / dead, "partial");
  write(dir / alive, "in progress");
  write(dir / other_host, "another node's");
  write(dir / "notes.tmp-4194303.txt", "mine");
  // Names like a temporary's that kinora never makes: a user's files.
  const std::string users[] = {".report.tmp-" + tag + "-4194303.docx",
                               ".mine.tmp-" + tag + "-4194303",
                               ".a b.tmp-" + tag + "-4194303.json"};
  for (const auto& u : users) write(dir / u, "a user's");
  fs::create_directories(dir / (".seq.tmp-" + tag + "-4194303"));
  write(dir / (".seq.tmp-" + tag + "-4194303") / "frame_00001.png", "png");
  // Claims: a dead process's of this host goes; a live one's and another
  // host's stay (that one expires).
  write(dir / ".old.mp4.claim", tag + " 4194303 here\n");
  write(dir / ".run.mp4.claim", tag + " " + std::to_string(::getppid()) + " here\n");
  write(dir / ".x.mp4.claim", "otherhost 4194303 node7\n");
  ASSERT_EQ(
      sh(kinora_bin() + " generate -p x" + chain() + " --out " + (dir / "new.mp4").string()).code,
      0);
  EXPECT_FALSE(fs::exists(dir / dead));
  EXPECT_FALSE(fs::exists(dir / (".seq.tmp-" + tag + "-4194303")));
  EXPECT_TRUE(fs::exists(dir / alive));
  EXPECT_TRUE(fs::exists(dir / other_host));
  EXPECT_TRUE(fs::exists(dir / "notes.tmp-4194303.txt"));
  for (const auto& u : users) EXPECT_EQ(read(dir / u), "a user's") << u;
  EXPECT_FALSE(fs::exists(dir / ".old.mp4.claim"));
  EXPECT_TRUE(fs::exists(dir / ".run.mp4.claim"));
  EXPECT_TRUE(fs::exists(dir / ".x.mp4.claim"));
}

// A format that contradicts the name is refused, and so is a video squeezed
// into one image; one frame into a video is a one-frame video.
TEST(Safety, TheFormatMustAgreeWithTheName) {
  TempDir dir;
  auto r = sh(kinora_bin() + " generate -p x" + chain() + " --format webm --out " +
              (dir / "x.mp4").string());
  EXPECT_EQ(r.code, 1);
  EXPECT_THAT(r.out, HasSubstr("format webm is written to .webm files, but the name ends in"));
  r = sh(kinora_bin() + " generate -p x" + chain() + " --out " + (dir / "x.png").string());
  EXPECT_EQ(r.code, 1);
  EXPECT_THAT(r.out, HasSubstr("a .png holds one image, but this render makes 5 frames"));
  // One frame asked of the embedded model, whose clips are 17 frames at the least.
  r = sh(kinora_bin() + " generate -p x --frames 1 --out " + (dir / "one.png").string());
  EXPECT_EQ(r.code, 1);
  EXPECT_THAT(r.out, HasSubstr("this model makes clips of 17 frames at the least"));
  r = sh(kinora_bin() + " generate -p x" + chain() + " --format png-seq --out " +
         (dir / "x.mp4").string());
  EXPECT_EQ(r.code, 1);
  EXPECT_THAT(r.out, HasSubstr("a frame sequence is a folder"));
  EXPECT_TRUE(fs::is_empty(dir.path()));
}

// Shared presets are data: bounded, kept inside --output-dir, resolved against
// their own folder, every problem of a batch reported and the rest rendered.
TEST(Safety, HostilePresetsAreRefusedAndTheRestRender) {
  TempDir dir;
  fs::create_directories(dir / "presets");
  fs::create_directories(dir / "out");
  write(dir / "presets/deep.json", std::string(100000, '[') + std::string(100000, ']'));
  auto p = chain_preset();
  p["output"] = "../../escaped.png";
  write(dir / "presets/escape.json", p.dump());
  const std::string absolute = "/tmp/kinora-absolute-" + std::to_string(::getpid()) + ".png";
  p["output"] = absolute;
  write(dir / "presets/absolute.json", p.dump());
  p["output"] = "good.png";
  write(dir / "presets/good.json", p.dump());
  p["seed"] = 2;
  write(dir / "presets/same-output.json", p.dump());
  write(dir / "presets/typo.json", R"({"prompt": "x", "stepz": 3})");
  const auto r = sh(kinora_bin() + " batch " + (dir / "presets").string() + " --output-dir " +
                    (dir / "out").string());
  EXPECT_EQ(r.code, 1) << r.out;
  EXPECT_THAT(r.out, HasSubstr("deep.json: JSON nested deeper than 32 levels"));
  EXPECT_THAT(r.out, HasSubstr("escape.json: key 'output' '../../escaped.png' is outside"));
  EXPECT_THAT(r.out, HasSubstr("absolute.json: key 'output'"));
  EXPECT_THAT(r.out, HasSubstr("key 'output' " + (dir / "out/good.png").string() +
                               " is also the output of " + (dir / "presets/good.json").string()));
  EXPECT_THAT(r.out, HasSubstr("typo.json: key 'stepz' is not a preset key"));
  EXPECT_THAT(r.out, HasSubstr("1 rendered, 0 skipped, 0 failed, 5 invalid"));
  EXPECT_TRUE(fs::exists(dir / "out/good.png"));
  EXPECT_FALSE(fs::exists(dir.path().parent_path() / "escaped.png"));
  EXPECT_FALSE(fs::exists(absolute));
  // --dry-run shows every problem, not the first.
  const auto dry = sh(kinora_bin() + " batch --dry-run " + (dir / "presets").string());
  EXPECT_EQ(dry.code, 1);
  EXPECT_THAT(dry.out, HasSubstr("deep.json"));
  EXPECT_THAT(dry.out, HasSubstr("typo.json"));
  // render and restore refuse a deeply nested file with its name, no crash.
  auto one = sh(kinora_bin() + " render " + (dir / "presets/deep.json").string());
  EXPECT_EQ(one.code, 1);
  EXPECT_THAT(one.out, HasSubstr("deep.json: JSON nested deeper than 32 levels"));
  std::string deep;
  for (int i = 0; i < 30000; ++i) deep += "{\"a\":";
  write(dir / "meta.txt", ";FFMETADATA1\ncomment=" + deep + "\n");
  ASSERT_EQ(sh("ffmpeg -v error -f lavfi -i color=c=red:s=32x32:d=0.1 -i " +
               (dir / "meta.txt").string() + " -map_metadata 1 -y " + (dir / "deep.mp4").string())
                .code,
            0);
  one = sh(kinora_bin() + " restore " + (dir / "deep.mp4").string());
  EXPECT_EQ(one.code, 1);
  EXPECT_THAT(one.out, HasSubstr("deep.mp4 (comment): JSON nested deeper than 32 levels"));
}

// Relative paths in a preset resolve against the preset's own folder, and an
// output path found in a file made elsewhere is never reused.
TEST(Safety, PresetPathsResolveAgainstThePresetAndRestoreForgetsOutputs) {
  TempDir dir;
  fs::create_directories(dir / "p/models");
  fs::copy(fixture("wan21_dit_tiny.safetensors"), dir / "p/models/dit.safetensors");
  auto p = chain_preset();
  p["model"] = "models/dit.safetensors";
  p["output"] = "out.png";
  write(dir / "p/x.json", p.dump());
  fs::create_directories(dir / "elsewhere");
  auto r = sh(in(dir / "elsewhere", kinora_bin() + " render ../p/x.json"));
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_TRUE(fs::exists(dir / "p/out.png"));
  EXPECT_TRUE(fs::is_empty(dir / "elsewhere"));
  // A missing model says where it looked.
  p["model"] = "models/none.safetensors";
  p["output"] = "y.png";
  write(dir / "p/y.json", p.dump());
  r = sh(kinora_bin() + " render " + (dir / "p/y.json").string());
  EXPECT_THAT(r.out, HasSubstr("'models/none.safetensors' not found (looked for " +
                               (dir / "p/models/none.safetensors").string()));
  // restore: file names only, no output name; render then writes a new name.
  r = sh(kinora_bin() + " restore " + (dir / "p/out.png").string());
  ASSERT_EQ(r.code, 0) << r.out;
  const auto restored = json::parse(r.out);
  EXPECT_EQ(restored["output"], "");
  EXPECT_EQ(restored["model"], "dit.safetensors");
  EXPECT_EQ(restored["models_dir"], "");
  write(dir / "elsewhere/r.json", r.out);
  fs::copy(fixture("wan21_vae_tiny.safetensors"), dir / "p/models/wan21_vae_tiny.safetensors");
  fs::copy(fixture("umt5_enc_tiny.safetensors"), dir / "p/models/umt5_enc_tiny.safetensors");
  fs::copy(fixture("spm_tiny.model"), dir / "p/models/spm_tiny.model");
  r = sh(in(dir / "elsewhere", kinora_bin() + " render r.json --models-dir ../p/models"));
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_TRUE(fs::exists(dir / "elsewhere/kinora-1.png"));
  // Paths typed on the command line (--set, --lora) are from here, as the
  // shell completes them; a model name that is no file here stays a name.
  fs::create_directories(dir / "elsewhere/mine");
  fs::copy(fixture("wan21_dit_tiny.safetensors"), dir / "elsewhere/mine/dit2.safetensors");
  r = sh(in(dir / "elsewhere", kinora_bin() + " render ../p/x.json --set output=here.png" +
                                   " --set model=mine/dit2.safetensors"));
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_TRUE(fs::exists(dir / "elsewhere/here.png"));
  EXPECT_FALSE(fs::exists(dir / "p/here.png"));
  EXPECT_EQ(json::parse(sh(kinora_bin() + " restore " + (dir / "elsewhere/here.png").string()).out)
                .at("model"),
            "dit2.safetensors");
  r = sh(in(dir / "elsewhere", kinora_bin() + " render ../p/x.json --set output=there.png" +
                                   " --lora ./mine/none.safetensors"));
  EXPECT_THAT(r.out, HasSubstr("LoRA './mine/none.safetensors' not found"));
  r = sh(in(dir / "elsewhere", kinora_bin() + " render r.json --set model=dit.safetensors" +
                                   " --models-dir ../p/models --set output=named.png"));
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_TRUE(fs::exists(dir / "elsewhere/named.png"));
}

// Text and numbers that used to slip through: refused before anything loads,
// with one rule for seeds everywhere.
TEST(Safety, BadTextAndNumbersAreRefusedUpFront) {
  TempDir dir;
  auto r = sh(kinora_bin() + " generate -p \"$(printf 'a red \\377 circle')\"" + chain() +
              " --out " + (dir / "u.mp4").string());
  EXPECT_EQ(r.code, 1);
  EXPECT_THAT(r.out, HasSubstr("--prompt is not valid UTF-8 (byte 6 of 14)"));
  EXPECT_THAT(r.out, Not(HasSubstr("step 1/")));
  const std::string rule = "must be an integer from 0 to 9007199254740992, or -1 for a random seed";
  for (const char* seed : {"-5", "18446744073709551616", "abc", "1.5"}) {
    r = sh(kinora_bin() + " generate -p x --seed " + seed + " --out " + (dir / "s.mp4").string());
    EXPECT_EQ(r.code, 1) << seed;
    EXPECT_THAT(r.out, HasSubstr("--seed " + rule + ", got " + seed)) << seed;
  }
  write(dir / "neg.json", R"({"prompt": "x", "seed": -5})");
  r = sh(kinora_bin() + " render " + (dir / "neg.json").string());
  EXPECT_THAT(r.out, HasSubstr("neg.json: key 'seed' " + rule + ", got -5"));
  // -1 and no seed at all: a random seed, recorded in the output.
  auto p = chain_preset();
  p.erase("seed");
  p["output"] = "r.png";
  write(dir / "random.json", p.dump());
  r = sh(kinora_bin() + " render " + (dir / "random.json").string());
  ASSERT_EQ(r.code, 0) << r.out;
  const auto seed = json::parse(read(dir / "r.png.json"))["preset"]["seed"];
  EXPECT_TRUE(seed.is_number_integer() && seed.get<int64_t>() >= 0) << seed;
  // A merge whose ratio blows the difference up into values that render
  // nothing writes nothing.
  const auto b = (dir / "b.safetensors").string();
  ASSERT_EQ(sh(kinora_bin() + " convert " + fixture("wan21_vae_tiny.safetensors") + " " + b).code,
            0);
  r = sh(kinora_bin() + " merge " + fixture("wan21_vae_tiny.safetensors") + " " + b + " -o " +
         (dir / "m.safetensors").string() + " --dtype fp32 --ratio 1e30");
  EXPECT_EQ(r.code, 1) << r.out;
  EXPECT_THAT(r.out, HasSubstr("--ratio 1e+30: give a number from -100 to 100"));
  EXPECT_FALSE(fs::exists(dir / "m.safetensors"));
}

TEST(Safety, RestoreSaysWhenAFileHoldsNoParameters) {
  TempDir dir;
  ASSERT_EQ(sh("ffmpeg -v error -f lavfi -i color=c=red:s=32x32:d=0.1 -metadata "
               "comment='my holiday' -y " +
               (dir / "holiday.mp4").string())
                .code,
            0);
  auto r = sh(kinora_bin() + " restore " + (dir / "holiday.mp4").string());
  EXPECT_EQ(r.code, 1);
  EXPECT_THAT(r.out,
              HasSubstr("holiday.mp4: holds no Kinora parameters (its comment is other text)"));
  write(dir / "preset.json", R"({"prompt": "x"})");
  r = sh(kinora_bin() + " restore " + (dir / "preset.json").string());
  EXPECT_THAT(r.out, HasSubstr("preset.json: holds no Kinora parameters"));
  // A render cut short before its parameters (a copy that did not finish)
  // says so, naming the part its structure says goes on past the end. An MP4
  // or MOV has its tags at the end, a WebM near the start.
  auto p = chain_preset();
  p["frames"] = 5;
  for (const char* name : {"v.mp4", "v.webm", "v.mov"}) {
    p["output"] = name;
    write(dir / "p.json", p.dump());
    ASSERT_EQ(sh(kinora_bin() + " render " + (dir / "p.json").string()).code, 0) << name;
    const auto whole = read(dir / name);
    // Cut after its parameters: restored, with a note.
    write(dir / "cut", whole.substr(0, whole.size() - 1));
    fs::rename(dir / "cut", dir / name);
    r = sh(kinora_bin() + " restore " + (dir / name).string());
    EXPECT_EQ(r.code, 0) << name << r.out;
    EXPECT_THAT(r.out, HasSubstr("is cut short: ")) << r.out;
    EXPECT_THAT(r.out, HasSubstr("its parameters are whole, its frames are not")) << r.out;
    const auto keep = fs::path(name).extension() == ".webm" ? 64 : whole.size() / 2;
    write(dir / "cut", whole.substr(0, keep));
    fs::rename(dir / "cut", dir / name);
    r = sh(kinora_bin() + " restore " + (dir / name).string());
    EXPECT_EQ(r.code, 1) << name;
    EXPECT_THAT(r.out, HasSubstr(std::string(name) + ": is cut short (its ")) << r.out;
    EXPECT_THAT(r.out, HasSubstr(", past the file's " + std::to_string(keep) +
                                 " bytes): a copy or download that did not finish"))
        << r.out;
  }
  // An MP4 cut right after a box, before its index (moov): cut short too.
  write(dir / "v.mp4", read(dir / "v.mp4").substr(0, 32));
  EXPECT_THAT(sh(kinora_bin() + " restore " + (dir / "v.mp4").string()).out,
              HasSubstr("v.mp4: is cut short (it ends before its moov box"));
  write(dir / "v.png", "\x89PNG\r\n\x1a\n");
  r = sh(kinora_bin() + " restore " + (dir / "v.png").string());
  EXPECT_THAT(r.out, HasSubstr("v.png: is cut short (it ends before its IEND chunk)"));
}

TEST(Safety, AnUnknownCommandIsNamedWithTheClosest) {
  auto r = sh(kinora_bin() + " generat -p x");
  EXPECT_EQ(r.code, 2);
  EXPECT_THAT(r.out, HasSubstr("unknown command 'generat'; did you mean 'generate'?"));
  r = sh(kinora_bin() + " frobnicate");
  EXPECT_THAT(r.out, HasSubstr("unknown command 'frobnicate'"));
  EXPECT_THAT(r.out, Not(HasSubstr("did you mean")));
}

// What a new user ran into, each a reproduction that now holds.

// An earlier sidecar that cannot be moved (another user's, in a shared sticky
// folder) stops a --overwrite render with the earlier video and its sidecar
// as they were. Needs root to act as two users; skipped otherwise.
TEST(Safety, AnOverwriteThatCannotMoveTheSidecarKeepsTheEarlierOutput) {
  if (::geteuid() != 0 || sh("command -v setpriv").code != 0) GTEST_SKIP() << "needs root";
  TempDir dir;
  const auto shared = dir / "shared";
  fs::create_directories(shared);
  fs::permissions(shared, fs::perms::all | fs::perms::sticky_bit);
  fs::permissions(dir.path(), fs::perms::all);
  const std::string as_nobody = "setpriv --reuid=nobody --regid=nogroup --clear-groups ";
  auto r =
      sh(in(shared, as_nobody + kinora_bin() + " generate -p 'a cat'" + chain() + " --out x.mp4"));
  ASSERT_EQ(r.code, 0) << r.out;
  const auto video = read(shared / "x.mp4"), side = read(shared / "x.mp4.json");
  ASSERT_EQ(::chown((shared / "x.mp4.json").c_str(), 0, 0), 0);
  fs::permissions(shared / "x.mp4.json", fs::perms::owner_read | fs::perms::owner_write |
                                             fs::perms::group_read | fs::perms::group_write |
                                             fs::perms::others_read | fs::perms::others_write);
  r = sh(in(shared, as_nobody + kinora_bin() + " generate -p 'a dog'" + chain() +
                        " --out x.mp4 --overwrite"));
  EXPECT_EQ(r.code, 1) << r.out;
  EXPECT_THAT(r.out, HasSubstr("x.mp4.json"));
  EXPECT_EQ(read(shared / "x.mp4"), video);
  EXPECT_EQ(read(shared / "x.mp4.json"), side);
}

// A sidecar replaces only an earlier Kinora sidecar, and then only with
// --overwrite and when it may be written; a frame folder likewise.
TEST(Safety, SidecarsAndFrameFoldersFollowTheOutputsRule) {
  TempDir dir;
  ASSERT_EQ(
      sh(kinora_bin() + " generate -p x" + chain() + " --out " + (dir / "a.mp4").string()).code, 0);
  fs::copy(dir / "a.mp4.json", dir / "s.mp4.json");  // an earlier render's, its video gone
  fs::permissions(dir / "s.mp4.json", fs::perms::owner_read);
  auto r = sh(kinora_bin() + " generate -p x" + chain() + " --out " + (dir / "s.mp4").string() +
              " --overwrite");
  EXPECT_EQ(r.code, 1);
  EXPECT_THAT(r.out, HasSubstr("s.mp4.json: exists and is read-only"));
  fs::permissions(dir / "s.mp4.json", fs::perms::owner_read | fs::perms::owner_write);
  r = sh(kinora_bin() + " generate -p x" + chain() + " --out " + (dir / "s.mp4").string());
  EXPECT_EQ(r.code, 1);
  EXPECT_THAT(r.out, HasSubstr("s.mp4.json: exists; give --overwrite"));
  // JSON that looks like parameters but holds more is someone's own.
  write(dir / "e.mp4.json",
        R"({"preset":{"prompt":"x"},"kinora":{"version":"Kinora 0.1"},"my_notes":"precious"})");
  r = sh(kinora_bin() + " generate -p x" + chain() + " --out " + (dir / "e.mp4").string() +
         " --overwrite");
  EXPECT_THAT(r.out, HasSubstr("is not the parameters file of an earlier render"));
  EXPECT_THAT(read(dir / "e.mp4.json"), HasSubstr("precious"));
  fs::create_directories(dir / "w");
  write(dir / "w/kinora.json", "x");
  r = sh(kinora_bin() + " generate -p x" + chain() + " --format png-seq --overwrite --out " +
         (dir / "w").string());
  EXPECT_THAT(r.out, HasSubstr("holds files other than a Kinora frame sequence"));
  EXPECT_EQ(read(dir / "w/kinora.json"), "x");
  // A sequence's folder may be named with its slash.
  r = sh(kinora_bin() + " generate -p x" + chain() + " --format ppm-seq --out " +
         (dir / "seq").string() + "/");
  EXPECT_EQ(r.code, 0) << r.out;
  EXPECT_TRUE(fs::exists(dir / "seq/frame_00005.ppm"));
}

// What can fail is checked before the render, not after it.
TEST(Safety, NamesAndPresetsThatCannotWorkAreRefusedBeforeRendering) {
  TempDir dir;
  auto r = sh(kinora_bin() + " generate -p x" + chain() + " --out " +
              (dir / (std::string(230, 'c') + ".mp4")).string());
  EXPECT_EQ(r.code, 1);
  EXPECT_THAT(r.out, HasSubstr("the name is too long"));
  EXPECT_THAT(r.out, Not(HasSubstr("step 1/")));
  auto p = chain_preset();
  p["output"] = std::string("nul") + '\0' + "x.png";
  write(dir / "nul.json", p.dump());
  r = sh(kinora_bin() + " render " + (dir / "nul.json").string());
  EXPECT_THAT(r.out, HasSubstr("key 'output' holds a NUL character (byte 3)"));
  // batch --dry-run finds missing models, folders, devices and LoRAs that do not fit.
  fs::create_directories(dir / "b");
  p["output"] = "nodir/x.png";
  write(dir / "b/folder.json", p.dump());
  p["output"] = "m.png";
  p["model"] = "absent.safetensors";
  write(dir / "b/model.json", p.dump());
  p["model"] = fixture("wan21_dit_tiny.safetensors");
  p["output"] = "d.png";
  p["device"] = "cuda:3";
  write(dir / "b/device.json", p.dump());
  // A LoRA of the embedded model, which is another size than this one.
  p["device"] = "cpu";
  p["output"] = "l.png";
  p["loras"] = json::array(
      {{{"path", fixture("../../assets/loras/kinora-tiny-big.safetensors")}, {"strength", 1.0}}});
  write(dir / "b/lora.json", p.dump());
  r = sh(kinora_bin() + " batch --dry-run " + (dir / "b").string());
  EXPECT_EQ(r.code, 1);
  EXPECT_THAT(r.out, HasSubstr("folder.json"));
  EXPECT_THAT(r.out, HasSubstr("the folder"));
  EXPECT_THAT(r.out, HasSubstr("model.json: key 'model': 'absent.safetensors' not found"));
  EXPECT_THAT(r.out, HasSubstr("device.json"));
  EXPECT_THAT(r.out, HasSubstr("lora.json: "));
  EXPECT_THAT(r.out, HasSubstr("kinora-tiny-big.safetensors: matches none of the model's modules"));
  EXPECT_THAT(r.out, HasSubstr("4 invalid"));
}

// --output-dir is a folder the user names from where they are; a restored
// preset batches (named after its file); shards and repeated paths are exact.
TEST(Safety, BatchPlacesOutputsWhereTheUserSaid) {
  TempDir dir;
  fs::create_directories(dir / "presets");
  fs::create_directories(dir / "od");
  auto p = chain_preset();
  p["output"] = "rel.png";
  write(dir / "presets/rel.json", p.dump());
  p.erase("output");
  write(dir / "presets/restored.json", p.dump());
  auto r = sh(in(dir.path(), kinora_bin() + " batch presets presets/rel.json --output-dir od"));
  EXPECT_EQ(r.code, 0) << r.out;
  EXPECT_TRUE(fs::exists(dir / "od/rel.png"));
  EXPECT_TRUE(fs::exists(dir / "od/restored.png"));
  EXPECT_FALSE(fs::exists(dir / "presets/od"));
  // A preset beside the image sequence it renders, named as that folder: not
  // taken for an earlier render's parameters.
  p["output"] = "seq";
  p["format"] = "png-seq";
  write(dir / "seq.json", p.dump());
  r = sh(in(dir.path(), kinora_bin() + " batch seq.json"));
  EXPECT_EQ(r.code, 0) << r.out;
  EXPECT_TRUE(fs::exists(dir / "seq/kinora.json"));
  EXPECT_EQ(read(dir / "seq.json"), p.dump());
  for (const char* bad : {"0/2/3", "1/3abc", "2/2"})
    EXPECT_THAT(
        sh(kinora_bin() + " batch --dry-run --shard " + bad + " " + (dir / "presets").string()).out,
        HasSubstr("expected i/N"))
        << bad;
}

// --fp8 and --no-fp8 over a preset's key; the output records what ran.
TEST(Safety, Fp8FromTheCommandLineOverThePreset) {
  TempDir dir;
  auto p = chain_preset();
  p["fp8"] = true;
  p["output"] = "on.png";
  write(dir / "on.json", p.dump());
  auto r = sh(in(dir.path(), kinora_bin() + " render on.json"));
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_THAT(r.out, HasSubstr("with FP8 products"));
  EXPECT_THAT(sh(kinora_bin() + " restore " + (dir / "on.png").string()).out,
              HasSubstr("\"fp8\": true"));
  r = sh(in(dir.path(), kinora_bin() + " render on.json --no-fp8 --set output=off.png"));
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_THAT(r.out, Not(HasSubstr("FP8")));
  EXPECT_THAT(sh(kinora_bin() + " restore " + (dir / "off.png").string()).out,
              HasSubstr("\"fp8\": false"));
  EXPECT_EQ(sh(in(dir.path(), kinora_bin() + " render on.json --fp8 --no-fp8")).code, 2);
  // Slurm tasks get the flag.
  p["output"] = "later.png";
  write(dir / "later.json", p.dump());
  r = sh(in(dir.path(), kinora_bin() + " slurm submit --dry-run --no-fp8 later.json"));
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_THAT(r.out, HasSubstr("--no-fp8"));
  EXPECT_THAT(r.out, HasSubstr("--presets-fingerprint "));  // the presets submitted
  // Resources as sbatch reads them; a typo is refused before anything is submitted.
  r = sh(
      in(dir.path(), kinora_bin() + " slurm submit --dry-run --mem 64G --time 1-02:00 later.json"));
  EXPECT_EQ(r.code, 0) << r.out;
  EXPECT_THAT(r.out, HasSubstr("#SBATCH --mem=64G"));
  EXPECT_THAT(r.out, HasSubstr("#SBATCH --time=1-02:00"));
  r = sh(in(dir.path(), kinora_bin() + " slurm submit --dry-run --mem lots later.json"));
  EXPECT_EQ(r.code, 1) << r.out;
  EXPECT_THAT(r.out, HasSubstr("--mem 'lots': expected a size as sbatch takes it"));
  r = sh(in(dir.path(), kinora_bin() + " slurm submit --dry-run --time forever later.json"));
  EXPECT_EQ(r.code, 1) << r.out;
  EXPECT_THAT(r.out, HasSubstr("--time 'forever': expected a time as sbatch takes it"));
  // Passed-through options, one word each, as an #SBATCH line carries them.
  r = sh(
      in(dir.path(), kinora_bin() + " slurm submit --dry-run --sbatch-arg=--qos=high later.json"));
  EXPECT_EQ(r.code, 0) << r.out;
  EXPECT_THAT(r.out, HasSubstr("#SBATCH --qos=high\n"));
  r = sh(in(dir.path(),
            kinora_bin() + " slurm submit --dry-run '--sbatch-arg=--comment=a b' later.json"));
  EXPECT_EQ(r.code, 1) << r.out;
  EXPECT_THAT(r.out, HasSubstr("--sbatch-arg '--comment=a b' holds a space or a quote"));
  r = sh(in(dir.path(), kinora_bin() + " slurm submit --dry-run --sbatch-arg=qos later.json"));
  EXPECT_EQ(r.code, 1) << r.out;
  EXPECT_THAT(r.out, HasSubstr("--sbatch-arg 'qos' is no sbatch option"));
}

TEST(Safety, CheckpointsKeepTheirValuesAndTheirNames) {
  TempDir dir;
  // A float32 value past fp16's range: refused, not stored as infinity.
  write_raw(dir / "big.safetensors", R"({"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})",
            std::string("\x00\x00\x80\x7e", 4));  // 8.5e37
  auto r = sh(kinora_bin() + " convert " + (dir / "big.safetensors").string() + " " +
              (dir / "h.safetensors").string() + " --dtype fp16");
  EXPECT_EQ(r.code, 1);
  EXPECT_THAT(r.out, HasSubstr("tensor 'w' holds values past fp16's range"));
  EXPECT_FALSE(fs::exists(dir / "h.safetensors"));
  r = sh(kinora_bin() + " convert " + fixture("wan21_vae_tiny.safetensors") + " " +
         (dir / "x.mp4").string());
  EXPECT_THAT(r.out, HasSubstr("name it NAME.safetensors"));
  r = sh(kinora_bin() + " convert " + fixture("wan21_vae_tiny.safetensors") + " " +
         (dir / "nodir/x.safetensors").string());
  EXPECT_THAT(r.out, HasSubstr("does not exist"));
  EXPECT_THAT(r.out, Not(HasSubstr(".tmp-")));
}

TEST(Safety, TheCommandLineSaysHelpAndUsageErrorsLikeOtherTools) {
  auto r = sh(kinora_bin() + " help");
  EXPECT_EQ(r.code, 0);
  EXPECT_THAT(r.out, HasSubstr("generate"));
  r = sh(kinora_bin() + " generate --steps many -p x");
  EXPECT_EQ(r.code, 2);
  // What CLI11 refuses reads as Kinora's own messages, naming the command
  // whose --help lists the options.
  for (const auto& [args, said] : std::vector<std::pair<std::string, std::string>>{
           {" generate --steps many -p x",
            "kinora: --steps 'many': expected a whole number (kinora generate --help"},
           {" generate -p x --guidance lots", "--guidance 'lots': expected a decimal number"},
           {" info /nonexistent.safetensors",
            "kinora: /nonexistent.safetensors: no such file or folder (kinora info --help"},
           {" convert --dtype f8 " + fixture("wan21_vae_tiny.safetensors") + " b.safetensors",
            "--dtype 'f8': expected one of bf16, fp16, fp32"},
           {" generate -p", "kinora: --prompt needs a value"},
           {" lora inspect", "kinora: missing the argument 'file' (kinora lora inspect --help"},
           {" samplers extra", "kinora: unexpected extra (kinora samplers --help"},
           {" generate -p x --batch-size abc",
            "--batch-size 'abc': expected a whole number from 1 to 64"},
           {" generate -p x -o a.mp4 -o b.mp4", "--out is given 2 times; give it once"},
           {" generate -p x --steps= --out x.mp4", "--steps needs a value (--out came next)"},
           {" generate --bogus", "kinora: unexpected --bogus (kinora generate --help"},
           {" info --bogus /nonexistent", "kinora: unexpected --bogus"},
           {" lora foo", "kinora: lora: unknown command 'foo' (its commands: inspect, merge)"},
           {" slurm", "kinora: slurm: give one of its commands: submit"},
           {"", "kinora: give a command (kinora --help lists them)"},
           {" render p.json --output-dir /etc/hostname",
            "--output-dir '/etc/hostname': a file, not a folder"},
           {" generate -p x --out ''", "kinora: --out '': an empty name"}}) {
    r = sh(kinora_bin() + args);
    EXPECT_EQ(r.code, 2) << args;
    EXPECT_THAT(r.out, HasSubstr(said)) << args;
    EXPECT_THAT(r.out, Not(HasSubstr("Run with --help"))) << args;
  }
  r = sh(kinora_bin() + " generate -p x --guidance nan --out /tmp/never.mp4");
  EXPECT_THAT(r.out, HasSubstr("--guidance must be between 0.0 and 30.0, got nan"));
  // The studio's --help needs no display.
  r = sh("env -u DISPLAY -u WAYLAND_DISPLAY " + std::string(KINORA_BIN_DIR) +
         "/kinora-studio --help");
  if (fs::exists(std::string(KINORA_BIN_DIR) + "/kinora-studio")) {
    EXPECT_EQ(r.code, 0) << r.out;
    EXPECT_THAT(r.out, HasSubstr("--models-dir"));
  }
}
