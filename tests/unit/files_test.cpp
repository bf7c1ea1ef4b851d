// base/files.h: files written whole or not at all.
#include "base/files.h"

#include <gtest/gtest.h>

#include <fstream>
#include <sstream>

#include "../unit/test_util.h"
#include "base/error.h"

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
}

}  // namespace
}  // namespace kinora
