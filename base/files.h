#pragma once
// Files written whole or not at all, and never over something the program did
// not mean to replace. The bytes go to a temporary name beside the destination
// (the same folder, so the same file system and an atomic rename), which is
// renamed into place only when complete: a full disk, a cancelled render or a
// crash never leaves a half-written file under the real name.
//
// Temporaries are named ".NAME.tmp-HOST-PID.EXT". While one exists it is
// registered, so that a second Ctrl-C (or SIGTERM) removes it before the
// process ends (base/signals.h); one left by a process that died anyway (a
// SIGKILL, a power cut) is removed the next time that folder is written
// (remove_stale_temporaries). HOST is the host name and the process's PID
// namespace, so that a process never touches the temporaries of a process it
// cannot see (another machine on a shared file system, another container).
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <functional>
#include <memory>
#include <string>
#include <string_view>

namespace kinora {

// Whether `entry` is a path that stays inside the folder it is taken in: a
// name, or folders and a name ("styles/ink"); no root, no "." or "..", no
// backslash, no trailing separator.
bool stays_inside(const std::string& entry);

// ".NAME.TAG-HOST-PID.EXT" beside `path` (TAG "tmp" for a file in the making,
// "old" for an earlier one moved aside while it is replaced); the extension
// kept for tools that pick a format by it (FFmpeg does).
std::filesystem::path temp_beside(const std::filesystem::path& path, const char* tag = "tmp");

// A temporary file or folder beside its destination, registered for removal on a
// fatal signal while it lives and removed by the destructor unless committed.
class ScopedTemp {
 public:
  explicit ScopedTemp(const std::filesystem::path& destination, const char* tag = "tmp");
  ~ScopedTemp();
  ScopedTemp(const ScopedTemp&) = delete;
  ScopedTemp& operator=(const ScopedTemp&) = delete;

  const std::filesystem::path& path() const { return tmp_; }
  // Moves the temporary into place (commit_temp); afterwards the destructor
  // leaves it alone.
  void commit(bool replace);

 private:
  std::filesystem::path tmp_, destination_;
  int slot_ = -1;
  bool committed_ = false;
};

// Moves the finished temporary `tmp` into place as `path`. With `replace`
// false, a `path` that exists (or appeared while the temporary was written, as
// when two processes render the same output) is left as it is and the call
// fails. On failure removes `tmp` and throws an Error naming `path`.
void commit_temp(const std::filesystem::path& tmp, const std::filesystem::path& path,
                 bool replace = true);

// `path` written that way: `write` streams the contents into the open
// temporary and returns false if a write failed; the file is flushed to the disk
// before the rename. Throws an Error naming `path` (a full disk, a folder that
// cannot be written), leaving whatever was at `path` before untouched and no
// temporary behind.
void write_file_atomically(const std::filesystem::path& path,
                           const std::function<bool(std::FILE*)>& write, bool replace = true);
// The same with the whole contents at hand.
void write_file_atomically(const std::filesystem::path& path, std::string_view bytes,
                           bool replace = true);

// Writes `bytes` to a new file `file` (a temporary already, e.g. a ScopedTemp's
// path), flushed to the disk; errors name `shown`, the file the user knows.
void write_new_file(const std::filesystem::path& file, std::string_view bytes,
                    const std::filesystem::path& shown);

// Refuses, with an Error naming `path`, to put a new file where one of these
// is: a folder; a read-only file; any file unless `overwrite`. `what` names
// the file for the message ("output", "checkpoint").
void check_can_write_file(const std::filesystem::path& path, bool overwrite,
                          const std::string& what = "output");

// Removes the temporaries in `folder` that processes of this host left behind
// when they died (their PID no longer runs): only names this program makes
// (".NAME.tmp-HOST-PID.EXT", EXT the name's own and one of the files it
// writes, or a frame folder), owned by this user. Returns how many it removed.
// Never throws: a folder that cannot be read is left alone.
int remove_stale_temporaries(const std::filesystem::path& folder);

// A claim on making `output`, so that two processes over the same presets (two
// overlapping Slurm arrays, two terminals running one batch) do not both render
// it: the file ".NAME.claim" beside the output, created exclusively, holding
// the claimant's host and PID, and touched every 30 s while held. A claim whose
// process is gone (this host, its PID not running) or that nobody touched for
// five minutes (a process on another machine that died) is taken over. It
// saves work only: outputs stay safe without it (commit_temp never replaces a
// render another process wrote), and a folder where it cannot be made (read
// only) is not claimed, with the render left to say what is wrong. A claim
// this process holds already is held again (nested), and stays the outer one's.
class OutputClaim {
 public:
  explicit OutputClaim(const std::filesystem::path& output);
  ~OutputClaim();  // removes the claim file, if held
  OutputClaim(const OutputClaim&) = delete;
  OutputClaim& operator=(const OutputClaim&) = delete;

  // Whether this process may render the output (it holds the claim, or
  // nobody could claim it).
  bool held() const { return holder_.empty(); }
  // Otherwise who holds it: "process 123 on node7".
  const std::string& holder() const { return holder_; }

  // A live claim on `output` by another process, described as holder() is;
  // empty when there is none.
  static std::string holder_of(const std::filesystem::path& output);

  // Another process's claim on `output` as a batch watching it sees it: who
  // (empty: none, or stale), whether it is known to run (a process of this
  // host and PID namespace), and when the claim was last touched (its
  // holder touches it every 30 s while it renders).
  struct Seen {
    std::string holder;
    bool running = false;
    std::int64_t touched_ns = 0;
  };
  static Seen seen(const std::filesystem::path& output);

 private:
  struct Heartbeat;
  std::filesystem::path file_;
  std::string holder_;
  std::unique_ptr<Heartbeat> beat_;
  int slot_ = -1;
};

// Removes every registered temporary with async-signal-safe calls only; for
// the fatal-signal path of base/signals.cpp.
void remove_registered_temporaries_from_signal_handler() noexcept;

}  // namespace kinora
