// base/files.h: files written whole or not at all.
#include "base/files.h"

#include <gtest/gtest.h>

#include <chrono>
#include <fstream>
#include <sstream>

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include "../unit/test_util.h"
#include "base/error.h"
#include "base/json.h"
#include "base/sha256.h"
#include "base/signals.h"
#include "base/strings.h"

namespace fs = std::filesystem;

namespace kinora {
namespace {

std::string read(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  std::stringstream s;
  s << f.rdbuf();
  return s.str();
}

std::size_t entries(const fs::path& dir) {
  return static_cast<std::size_t>(std::distance(fs::directory_iterator(dir), {}));
}

TEST(Files, WriteFileAtomicallyReplacesTheWholeFileAndLeavesNoTemporary) {
  test::TempDir tmp;
  const auto path = tmp.path() / "state.json";
  write_file_atomically(path, "{\"step\": 1}\n");
  EXPECT_EQ(read(path), "{\"step\": 1}\n");
  const std::string binary("P6\n\0\xff\n", 6);
  write_file_atomically(path, binary);
  EXPECT_EQ(read(path), binary);
  write_file_atomically(tmp.path() / "empty", "");
  EXPECT_TRUE(fs::exists(tmp.path() / "empty"));
  EXPECT_EQ(entries(tmp.path()), 2u);  // no temporary left beside them
}

TEST(Files, AFailedWriteNamesTheFileAndLeavesTheOldOneAndNoTemporary) {
  test::TempDir tmp;
  // A folder that is not there: nothing can be created.
  const auto missing = tmp.path() / "no-such-folder" / "out.json";
  try {
    write_file_atomically(missing, "x");
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(missing.string()), std::string::npos) << e.what();
  }
  // The rename fails (the destination is a folder that is not empty): the
  // temporary is removed and the folder is as it was.
  const auto taken = tmp.path() / "taken";
  fs::create_directories(taken / "inside");
  try {
    write_file_atomically(taken, "x");
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("cannot move the finished file into place"),
              std::string::npos)
        << e.what();
  }
  EXPECT_TRUE(fs::is_directory(taken / "inside"));
  EXPECT_EQ(entries(tmp.path()), 1u);
  // A write that fails half-way (as a full disk does): the old file stays.
  const auto kept = tmp.path() / "kept.bin";
  write_file_atomically(kept, "old");
  try {
    write_file_atomically(kept,
                          [](std::FILE* f) { return std::fputs("new, cut sh", f) >= 0 && false; });
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("write failed"), std::string::npos) << e.what();
  }
  EXPECT_EQ(read(kept), "old");
  EXPECT_EQ(entries(tmp.path()), 2u);
}

TEST(Files, TheTemporaryLiesBesideTheFileAndKeepsItsExtension) {
  const auto t = temp_beside("/videos/clip.mp4");
  EXPECT_EQ(t.parent_path(), fs::path("/videos"));
  EXPECT_EQ(t.extension(), ".mp4");
  EXPECT_EQ(t.filename().string().rfind(".clip.mp4.tmp-", 0), 0u) << t;
  // …with this host and process in its name.
  EXPECT_NE(t.filename().string().find("-" + std::to_string(::getpid()) + ".mp4"),
            std::string::npos)
      << t;
}

TEST(Files, NoReplaceCommitLeavesAnExistingFileAndRemovesTheTemporary) {
  test::TempDir tmp;
  const auto path = tmp.path() / "out.bin";
  write_file_atomically(path, "first");
  try {
    write_file_atomically(path, "second", /*replace=*/false);
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("exists"), std::string::npos) << e.what();
  }
  EXPECT_EQ(read(path), "first");
  EXPECT_EQ(entries(tmp.path()), 1u);
  // A ScopedTemp not committed is gone with its scope, folder and all.
  {
    ScopedTemp t(tmp.path() / "seq");
    fs::create_directories(t.path());
    std::ofstream(t.path() / "frame_00001.png") << "x";
  }
  EXPECT_EQ(entries(tmp.path()), 1u);
}

TEST(Files, CheckCanWriteFileRefusesFoldersExistingAndReadOnlyFiles) {
  test::TempDir tmp;
  const auto file = tmp.path() / "a.mp4";
  EXPECT_NO_THROW(check_can_write_file(file, false));
  std::ofstream(file) << "x";
  EXPECT_NE(
      test::error_of([&] { check_can_write_file(file, false); }).find("exists; give --overwrite"),
      std::string::npos);
  EXPECT_NO_THROW(check_can_write_file(file, true));
  fs::permissions(file, fs::perms::owner_read);
  EXPECT_NE(test::error_of([&] { check_can_write_file(file, true); }).find("read-only"),
            std::string::npos);
  EXPECT_NE(test::error_of([&] { check_can_write_file(tmp.path(), true); }).find("is a folder"),
            std::string::npos);
}

// The second SIGTERM ends the process at once, but not before its registered
// temporaries (a file, and a folder with files in it) are removed.
TEST(Files, ASecondSignalRemovesTheRegisteredTemporariesBeforeExiting) {
  test::TempDir tmp;
  const pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    install_cancel_signals();
    ScopedTemp file(tmp.path() / "clip.mp4");
    std::ofstream(file.path()) << "partial";
    ScopedTemp folder(tmp.path() / "frames");
    fs::create_directories(folder.path());
    for (int i = 0; i < 3; ++i) std::ofstream(folder.path() / ("frame_" + std::to_string(i))) << i;
    ::raise(SIGTERM);  // the first: the token
    if (!cancel_requested().load()) ::_exit(3);
    ::raise(SIGTERM);  // the second: clean up and go
    ::_exit(4);
  }
  int status = 0;
  ASSERT_EQ(::waitpid(child, &status, 0), child);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 128 + SIGTERM);
  EXPECT_EQ(entries(tmp.path()), 0u);
}

// A claim on an output: one holder at a time, released at the end, and taken
// over from a process that is gone or from a machine that stopped touching it.
TEST(Files, AnOutputClaimHasOneHolderAndIsTakenOverWhenStale) {
  test::TempDir tmp;
  const auto out = tmp.path() / "fox.mp4";
  const auto file = tmp.path() / ".fox.mp4.claim";
  std::string mine;
  {
    const OutputClaim first(out);
    ASSERT_TRUE(first.held());
    ASSERT_TRUE(fs::exists(file));
    mine = read(file);
    EXPECT_EQ(OutputClaim::holder_of(out), "");  // this process's own
    // Held by this process: a second claim on it (as another process would
    // make) is refused. Written as another process of this host would.
    std::istringstream fields(mine);
    std::string tag, pid, host;
    fields >> tag >> pid >> host;
    EXPECT_EQ(pid, std::to_string(::getpid()));
    // The child exits only once the claim is judged, so its PID runs.
    const pid_t child = ::fork();
    if (child == 0) {
      const OutputClaim second(out);
      _exit(second.held() ? 1 : second.holder() == "process " + pid + " on " + host ? 0 : 2);
    }
    int status = 0;
    ::waitpid(child, &status, 0);
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << status;
  }
  EXPECT_FALSE(fs::exists(file)) << "released when the claim ends";
  // Claimed again inside this process (a batch's claim, the render within
  // it): held, and the claim stays the outer one's until it ends.
  {
    const OutputClaim outer(out);
    {
      const OutputClaim inner(out);
      EXPECT_TRUE(inner.held());
    }
    EXPECT_TRUE(fs::exists(file)) << "the inner claim does not release the outer one";
  }
  EXPECT_FALSE(fs::exists(file));

  // Another machine's live claim: not taken; said by holder_of.
  std::istringstream fields(mine);
  std::string tag;
  fields >> tag;
  std::ofstream(file) << "node7_4026531836 42 node7\n";
  {
    const OutputClaim claim(out);
    EXPECT_FALSE(claim.held());
    EXPECT_EQ(claim.holder(), "process 42 on node7");
    EXPECT_EQ(OutputClaim::holder_of(out), "process 42 on node7");
  }
  EXPECT_TRUE(fs::exists(file)) << "another's claim is left alone";
  // …untouched for ten minutes: that machine died; taken over.
  const auto old = fs::last_write_time(file) - std::chrono::minutes(10);
  fs::last_write_time(file, old);
  EXPECT_EQ(OutputClaim::holder_of(out), "");
  {
    const OutputClaim claim(out);
    EXPECT_TRUE(claim.held());
    EXPECT_EQ(read(file), mine);
  }
  // An empty claim (its process died between making and writing it): live
  // for 30 s, then taken over.
  std::ofstream(file).close();
  EXPECT_EQ(OutputClaim::holder_of(out), "another process");
  fs::last_write_time(file, fs::last_write_time(file) - std::chrono::minutes(1));
  EXPECT_EQ(OutputClaim::holder_of(out), "");
  // A process of this host that is gone (a PID that cannot run): taken over.
  std::ofstream(file) << tag << " 999999999 here\n";
  {
    const OutputClaim claim(out);
    EXPECT_TRUE(claim.held());
  }
  EXPECT_FALSE(fs::exists(file));
  // A folder where no claim can be made: not claimed, and the render goes on
  // to say what is wrong.
  const OutputClaim nowhere(tmp.path() / "missing" / "fox.mp4");
  EXPECT_TRUE(nowhere.held());
}

TEST(Files, APathStaysInsideItsFolderOnlyDownward) {
  for (const char* in : {"ink", "ink.safetensors", "styles/ink", "a/b/c.safetensors"})
    EXPECT_TRUE(kinora::stays_inside(in)) << in;
  for (const char* out : {"", "/etc/passwd", "../x", "a/../../x", "./x", "a/./b", "a\\b", "a/"})
    EXPECT_FALSE(kinora::stays_inside(out)) << out;
}

TEST(Strings, DecimalsAreNumbersAsTyped) {
  for (const char* yes : {"1", "-1.5", "+.5", "1.", "2e3", "-1.5E-1", "007"})
    EXPECT_TRUE(kinora::is_decimal(yes)) << yes;
  for (const char* no :
       {"", ".", "-", "0x10", "inf", "nan", "1e", "1e+", " 1", "1 ", "1.2.3", "e5"})
    EXPECT_FALSE(kinora::is_decimal(no)) << no;
}

TEST(Json, DepthSizeAndSyntaxAreErrorsNamingTheSource) {
  EXPECT_EQ(parse_json(R"({"a": [1, {"b": "[[[{{{"}]})", "x")["a"][1]["b"], "[[[{{{");
  const std::string deep = std::string(100000, '[') + std::string(100000, ']');
  EXPECT_NE(test::error_of([&] {
              parse_json(deep, "deep.json");
            }).find("deep.json: JSON nested deeper than 32 levels"),
            std::string::npos);
  EXPECT_NE(test::error_of([&] {
              parse_json("{\"a\": 1", "cut.json");
            }).find("cut.json: not valid JSON: parse error"),
            std::string::npos);
  EXPECT_NE(test::error_of([&] {
              parse_json(std::string(100, ' '), "big", {50, 32});
            }).find("big: 100 bytes of JSON"),
            std::string::npos);
}

// A key given twice in one object is refused (the parser would keep the last
// silently); the same key in two objects is fine.
TEST(Json, AKeyGivenTwiceInOneObjectIsAnError) {
  EXPECT_EQ(parse_json(R"({"a": {"p": 1}, "b": [{"p": 2}, {"p": 3}], "p": 4})", "x")["p"], 4);
  EXPECT_EQ(test::error_of([&] { parse_json(R"({"prompt": "x", "prompt": "y"})", "fox.json"); }),
            "fox.json: key 'prompt' is given twice in one object (which of its values is meant is "
            "unknown)");
  EXPECT_NE(test::error_of([&] {
              parse_json(R"({"loras": [{"path": "a", "path": "b"}]})", "l.json");
            }).find("key 'path' is given twice"),
            std::string::npos);
}

TEST(Json, InvalidUtf8IsFoundByOffset) {
  EXPECT_EQ(invalid_utf8_offset("plain ascii"), std::string_view::npos);
  EXPECT_EQ(invalid_utf8_offset("色调 ünïcode ✓"), std::string_view::npos);
  EXPECT_EQ(invalid_utf8_offset("ab\xff"), 2u);
  EXPECT_EQ(invalid_utf8_offset("\xc3"), 0u);              // cut short
  EXPECT_EQ(invalid_utf8_offset("a\xc0\xaf"), 1u);         // overlong '/'
  EXPECT_EQ(invalid_utf8_offset("\xed\xa0\x80"), 0u);      // a surrogate
  EXPECT_EQ(invalid_utf8_offset("\xf4\x90\x80\x80"), 0u);  // past U+10FFFF
  // A parse error's quote of a byte that is not UTF-8 writes it \xNN.
  const auto e = test::error_of([] { parse_json("{\"prompt\": \"a \xff b\"}", "p.json"); });
  EXPECT_NE(e.find("p.json: not valid JSON"), std::string::npos) << e;
  EXPECT_NE(e.find("\\xFF"), std::string::npos) << e;
  EXPECT_EQ(invalid_utf8_offset(e), std::string_view::npos) << e;
}

}  // namespace
}  // namespace kinora

namespace kinora {
namespace {
// FIPS 180-4's examples, and a file's fingerprint: its first and last MiB.
TEST(Sha256, KnownAnswersAndFileFingerprints) {
  EXPECT_EQ(sha256_hex(""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  EXPECT_EQ(sha256_hex("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  test::TempDir tmp;
  const auto small = tmp.path() / "small.bin";
  write_file_atomically(small, "abc");
  EXPECT_EQ(file_fingerprint(small), sha256_hex("abc"));
  std::string big(3 << 20, 'x');
  big[0] = 'a', big[(3 << 20) - 1] = 'z';
  const auto large = tmp.path() / "large.bin";
  write_file_atomically(large, big);
  EXPECT_EQ(file_fingerprint(large),
            sha256_hex(big.substr(0, 1 << 20) + big.substr(big.size() - (1 << 20))));
  EXPECT_NE(test::error_of([&] { file_fingerprint(tmp.path() / "absent"); }).find("absent"),
            std::string::npos);
  // A file that cannot be opened: the system's reason, for each way of reading it.
  EXPECT_NE(test::error_of([&] {
              file_fingerprint(tmp.path() / "absent");
            }).find("absent: cannot open to fingerprint: No such file or directory"),
            std::string::npos);
  EXPECT_NE(test::error_of([&] {
              sha256_file_hex(tmp.path() / "absent");
            }).find("absent: cannot open to hash: No such file or directory"),
            std::string::npos);
  if (::geteuid() != 0) {  // root reads whatever the mode says
    std::filesystem::permissions(small, std::filesystem::perms::none);
    EXPECT_NE(test::error_of([&] {
                file_fingerprint(small);
              }).find("small.bin: cannot open to fingerprint: Permission denied"),
              std::string::npos);
  }
}
}  // namespace
}  // namespace kinora
