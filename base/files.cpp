#include "base/files.h"

#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <array>
#include <atomic>
#include <cctype>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <fstream>
#include <memory>
#include <mutex>
#include <sstream>
#include <string>
#include <thread>

#include "base/error.h"

namespace fs = std::filesystem;

namespace kinora {

namespace {

// This host and PID namespace as they appear in temporary names: the host
// name's letters and digits (the rest as '_', so that the '-' before the PID
// stays the last one), then the namespace's inode.
const std::string& host_tag() {
  static const std::string tag = [] {
    char buf[256] = {0};
    std::string s = ::gethostname(buf, sizeof buf - 1) == 0 && buf[0] ? buf : "host";
    for (auto& c : s)
      if (!std::isalnum(static_cast<unsigned char>(c))) c = '_';
    struct stat st = {};
    if (::stat("/proc/self/ns/pid", &st) == 0) s.append("_").append(std::to_string(st.st_ino));
    return s;
  }();
  return tag;
}

// The files this program writes through temporaries, by extension.
bool is_written_extension(const std::string& ext) {
  // .ini and .conf: the studio's settings (QSettings' INI files).
  for (const char* e :
       {".mp4", ".webm", ".mov", ".png", ".ppm", ".json", ".safetensors", ".ini", ".conf"})
    if (ext == e) return true;
  return false;
}

// ---------------------------------------------------------------- the registry
// Fixed slots of plain char arrays, so that a signal handler can read them
// without allocating or locking. A slot is "busy" while its path is valid.
constexpr int kSlots = 16;
constexpr std::size_t kPathMax = 4096;
struct Slot {
  std::atomic<bool> busy{false};
  char path[kPathMax] = {0};
};
std::array<Slot, kSlots> g_slots;

int register_temp(const fs::path& p) {
  const std::string s = p.string();
  if (s.size() >= kPathMax) return -1;
  for (int i = 0; i < kSlots; ++i) {
    bool expected = false;
    if (g_slots[i].busy.load() || !g_slots[i].busy.compare_exchange_strong(expected, true))
      continue;
    std::memcpy(g_slots[i].path, s.c_str(), s.size() + 1);
    return i;
  }
  return -1;  // more temporaries at once than slots: still removed on errors, not on signals
}

void unregister_temp(int slot) {
  if (slot >= 0) g_slots[slot].busy.store(false);
}

// unlink, or for a folder its files and then the folder; async-signal-safe
// (open, getdents64, unlinkat, rmdir, close).
void remove_path_signal_safe(const char* path) noexcept {
  if (::unlink(path) == 0 || errno != EISDIR) return;
  const int fd = ::open(path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW);
  if (fd < 0) return;
  alignas(8) char buf[8192];
  while (true) {
    const long n = ::syscall(SYS_getdents64, fd, buf, sizeof buf);
    if (n <= 0) break;
    for (long off = 0; off < n;) {
      struct Entry {
        uint64_t ino;
        int64_t off;
        unsigned short reclen;
        unsigned char type;
        char name[1];
      };
      const auto* e = reinterpret_cast<const Entry*>(buf + off);
      const char* name = e->name;
      if (!(name[0] == '.' && (name[1] == 0 || (name[1] == '.' && name[2] == 0))))
        ::unlinkat(fd, name, 0);
      off += e->reclen;
    }
  }
  ::close(fd);
  ::rmdir(path);
}

bool is_our_temp_folder(const fs::path& dir) {
  // A PNG sequence in the making: frame_NNNNN.png, kinora.json and their temporaries.
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(dir, ec)) {
    const auto name = e.path().filename().string();
    const bool frame = name.rfind("frame_", 0) == 0 && e.path().extension() == ".png";
    const bool ours = name == "kinora.json" || name.find(".tmp-") != std::string::npos;
    if (!e.is_regular_file(ec) || !(frame || ours)) return false;
  }
  return !ec;
}

}  // namespace

bool stays_inside(const std::string& entry) {
  const fs::path e = entry;
  if (entry.empty() || e.is_absolute() || !e.has_filename() ||
      entry.find('\\') != std::string::npos)
    return false;
  for (const auto& part : e)
    if (part == "." || part == ".." || part.empty()) return false;
  return true;
}

fs::path temp_beside(const fs::path& path, const char* tag) {
  std::string name(1, '.');
  name += path.filename().string();
  name += '.';
  name += tag;
  name += '-';
  name += host_tag();
  name += '-';
  name += std::to_string(::getpid());
  name += path.extension().string();
  return path.parent_path() / name;
}

ScopedTemp::ScopedTemp(const fs::path& destination, const char* tag)
    : tmp_(temp_beside(destination, tag)), destination_(destination), slot_(register_temp(tmp_)) {}

ScopedTemp::~ScopedTemp() {
  if (!committed_) {
    std::error_code ec;
    fs::remove_all(tmp_, ec);
  }
  unregister_temp(slot_);
}

void ScopedTemp::commit(bool replace) {
  commit_temp(tmp_, destination_, replace);
  committed_ = true;
}

void commit_temp(const fs::path& tmp, const fs::path& path, bool replace) {
  auto give_up = [&](const std::string& why) {
    std::error_code ignored;
    fs::remove_all(tmp, ignored);
    fail_file(path, why);
  };
  if (replace) {
    std::error_code ec;
    fs::rename(tmp, path, ec);
    if (ec) give_up("cannot move the finished file into place: " + ec.message());
    return;
  }
  // No replacing: the kernel decides atomically (two processes writing the same
  // output: one wins, the other is told). File systems without RENAME_NOREPLACE
  // (some network ones) get link + unlink for files, which is atomic too.
  if (::renameat2(AT_FDCWD, tmp.c_str(), AT_FDCWD, path.c_str(), RENAME_NOREPLACE) == 0) return;
  int err = errno;
  if (err == EINVAL || err == ENOSYS || err == ENOTSUP) {
    std::error_code ec;
    if (fs::is_directory(tmp, ec)) {
      if (fs::exists(path, ec))
        err = EEXIST;
      else if (::rename(tmp.c_str(), path.c_str()) == 0)
        return;
      else
        err = errno;
    } else if (::link(tmp.c_str(), path.c_str()) == 0) {
      ::unlink(tmp.c_str());
      return;
    } else {
      err = errno;
    }
  }
  if (err == EEXIST || err == ENOTEMPTY)
    give_up("exists (written by another process while this one rendered); left as it is");
  give_up(std::string("cannot move the finished file into place: ") + std::strerror(err));
}

void write_file_atomically(const fs::path& path, const std::function<bool(std::FILE*)>& write,
                           bool replace) {
  ScopedTemp tmp(path);
  auto failed = [&](const std::string& what) {
    const int err = errno;
    fail_file(path, what + (err ? std::string(": ") + std::strerror(err) : std::string()));
  };
  struct Closer {
    void operator()(std::FILE* f) const { std::fclose(f); }
  };
  errno = 0;
  std::unique_ptr<std::FILE, Closer> f(std::fopen(tmp.path().c_str(), "wb"));
  if (!f) failed("cannot create " + tmp.path().filename().string());
  const bool ok = write(f.get()) && std::fflush(f.get()) == 0 && ::fsync(::fileno(f.get())) == 0;
  if (!ok) failed("write failed (disk full?)");
  if (std::fclose(f.release()) != 0) failed("write failed (disk full?)");
  tmp.commit(replace);
}

void write_file_atomically(const fs::path& path, std::string_view bytes, bool replace) {
  write_file_atomically(
      path,
      [&](std::FILE* f) {
        return bytes.empty() || std::fwrite(bytes.data(), 1, bytes.size(), f) == bytes.size();
      },
      replace);
}

void write_new_file(const fs::path& file, std::string_view bytes, const fs::path& shown) {
  struct Closer {
    void operator()(std::FILE* f) const { std::fclose(f); }
  };
  errno = 0;
  std::unique_ptr<std::FILE, Closer> f(std::fopen(file.c_str(), "wbx"));
  auto failed = [&](const std::string& what) {
    const int err = errno;
    std::error_code ec;
    fs::remove(file, ec);
    fail_file(shown, what + (err ? std::string(": ") + std::strerror(err) : std::string()));
  };
  if (!f) failed("cannot create the file");
  const bool ok =
      (bytes.empty() || std::fwrite(bytes.data(), 1, bytes.size(), f.get()) == bytes.size()) &&
      std::fflush(f.get()) == 0 && ::fsync(::fileno(f.get())) == 0;
  if (!ok) failed("write failed (disk full?)");
  if (std::fclose(f.release()) != 0) failed("write failed (disk full?)");
}

void check_can_write_file(const fs::path& path, bool overwrite, const std::string& what) {
  std::error_code ec;
  const auto st = fs::symlink_status(path, ec);
  if (ec || !fs::exists(st)) return;
  if (fs::is_directory(st))
    fail_file(path, "is a folder; the " + what + " must be a file name (nothing was changed)");
  if (!overwrite)
    fail_file(path, "exists; give --overwrite to replace it, or name another " + what);
  // Read-only by its mode (which root's access() ignores) or to this user.
  const auto write_bits = fs::perms::owner_write | fs::perms::group_write | fs::perms::others_write;
  if (fs::is_regular_file(st) &&
      ((st.permissions() & write_bits) == fs::perms::none || ::access(path.c_str(), W_OK) != 0))
    fail_file(path, "exists and is read-only; it is not replaced, even with --overwrite");
}

namespace {
bool is_dead_claim(const fs::directory_entry& e);  // with the claims, below
}  // namespace

int remove_stale_temporaries(const fs::path& folder) {
  const std::string mark = ".tmp-" + host_tag() + "-";
  int removed = 0;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(folder.empty() ? fs::path(".") : folder, ec)) {
    const auto name = e.path().filename().string();
    if (name.empty() || name[0] != '.') continue;
    if (is_dead_claim(e)) {
      std::error_code rec;
      removed += fs::remove(e.path(), rec) ? 1 : 0;
      continue;
    }
    const auto at = name.rfind(mark);
    if (at == std::string::npos || at < 2) continue;
    // The PID: the digits after the mark, up to the end or the extension.
    std::size_t end = at + mark.size();
    long long pid = 0;
    while (end < name.size() && std::isdigit(static_cast<unsigned char>(name[end])) && pid < 1e9)
      pid = pid * 10 + (name[end++] - '0');
    if (pid <= 0 || end == at + mark.size() || (end < name.size() && name[end] != '.')) continue;
    if (pid == ::getpid()) continue;
    // Only this program's names: ".NAME.tmp-…" + NAME's own extension, one it writes.
    const std::string base(name, 1, at - 1), ext(name, end);
    if (ext != fs::path(base).extension().string()) continue;
    struct stat st = {};
    if (::lstat(e.path().c_str(), &st) != 0 || st.st_uid != ::geteuid()) continue;
    if (::kill(static_cast<pid_t>(pid), 0) == 0 || errno != ESRCH) continue;  // still running
    std::error_code rec;
    if (S_ISDIR(st.st_mode)) {
      if (!ext.empty() || !is_our_temp_folder(e.path())) continue;  // a frame folder
      fs::remove_all(e.path(), rec);
    } else if (S_ISREG(st.st_mode)) {
      if (!is_written_extension(ext)) continue;
      fs::remove(e.path(), rec);
    } else {
      continue;
    }
    if (!rec) ++removed;
  }
  return removed;
}

// ------------------------------------------------------------------ claims

namespace {

constexpr int kClaimTouchSeconds = 30;
constexpr int kClaimStaleSeconds = 300;

fs::path claim_file(const fs::path& output) {
  std::string name(1, '.');
  name += output.filename().string();
  name += ".claim";
  return output.parent_path() / name;
}

// "TAG PID HOST": this process's line in a claim file (made each time: a
// forked child is another process).
std::string claim_line() {
  char buf[256] = {0};
  std::string host = ::gethostname(buf, sizeof buf - 1) == 0 && buf[0] ? buf : "host";
  for (auto& c : host)
    if (std::isspace(static_cast<unsigned char>(c))) c = '_';
  return host_tag() + " " + std::to_string(::getpid()) + " " + host;
}

std::string first_line(const fs::path& file) {
  std::ifstream in(file);
  std::string line;
  std::getline(in, line);
  return line;
}

// Who holds the claim `file`: "process PID on HOST"; empty when there is no
// claim or it is stale (its process gone, or untouched for kClaimStaleSeconds).
std::string live_holder(const fs::path& file) {
  struct stat st = {};
  if (::stat(file.c_str(), &st) != 0) return {};
  const std::time_t age = std::time(nullptr) - st.st_mtime;
  if (age > kClaimStaleSeconds) return {};
  std::istringstream in(first_line(file));
  std::string tag, host;
  long long pid = 0;
  // A claim being written this very moment is still empty: live while young
  // (one its process never wrote, a crash in between, is stale after 30 s).
  if (!(in >> tag >> pid >> host) || pid <= 0) return age > 30 ? "" : "another process";
  if (tag == host_tag() && ::kill(static_cast<pid_t>(pid), 0) != 0 && errno == ESRCH) return {};
  return "process " + std::to_string(pid) + " on " + host;
}

// Whether `e` is a claim (".NAME.claim") of a process of this host that is
// gone (a render killed with SIGKILL); others' are left to expire.
bool is_dead_claim(const fs::directory_entry& e) {
  const auto name = e.path().filename().string();
  std::error_code ec;
  if (name.size() <= 7 || name[0] != '.' || name.compare(name.size() - 6, 6, ".claim") != 0 ||
      !e.is_regular_file(ec))
    return false;
  std::istringstream in(first_line(e.path()));
  std::string tag;
  long long pid = 0;
  if (!(in >> tag >> pid) || tag != host_tag() || pid <= 0 || pid > 1e9) return false;
  return ::kill(static_cast<pid_t>(pid), 0) != 0 && errno == ESRCH;
}

}  // namespace

// Touches the claim file while it is held, so that other machines see it live.
struct OutputClaim::Heartbeat {
  explicit Heartbeat(fs::path file)
      : thread([this, file = std::move(file)] {
          std::unique_lock<std::mutex> lock(mutex);
          while (!wake.wait_for(lock, std::chrono::seconds(kClaimTouchSeconds),
                                [this] { return stop; }))
            ::utimensat(AT_FDCWD, file.c_str(), nullptr, 0);
        }) {}
  ~Heartbeat() {
    {
      std::lock_guard<std::mutex> lock(mutex);
      stop = true;
    }
    wake.notify_all();
    thread.join();
  }
  std::mutex mutex;
  std::condition_variable wake;
  bool stop = false;
  std::thread thread;  // last: started once the members it uses exist
};

OutputClaim::OutputClaim(const fs::path& output) : file_(claim_file(output)) {
  for (int attempt = 0; attempt < 2; ++attempt) {
    const int fd = ::open(file_.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (fd >= 0) {
      const std::string line = claim_line() + "\n";
      const bool ok = ::write(fd, line.data(), line.size()) == static_cast<ssize_t>(line.size());
      ::close(fd);
      if (!ok) {  // a full disk: not claimed; the render says what is wrong
        ::unlink(file_.c_str());
        file_.clear();
        return;
      }
      slot_ = register_temp(file_);
      beat_ = std::make_unique<Heartbeat>(file_);
      return;
    }
    if (errno != EEXIST) break;  // a folder that cannot be written, or not there yet
    // This process holds it already (a batch's claim, and the render inside
    // it claiming again): held, and left for the outer claim to release.
    if (first_line(file_) == claim_line()) {
      file_.clear();
      return;
    }
    holder_ = live_holder(file_);
    if (!holder_.empty()) return;
    ::unlink(file_.c_str());  // stale: taken over
  }
  // Not claimed (or another process took a stale claim over at the same
  // moment, and holds it now).
  holder_ = live_holder(file_);
  if (holder_.empty()) file_.clear();
}

OutputClaim::~OutputClaim() {
  beat_.reset();
  if (held() && !file_.empty()) {
    // Only this process's own claim: one that went stale and was taken over
    // (a process stopped for minutes) is the new holder's.
    if (first_line(file_) == claim_line()) ::unlink(file_.c_str());
  }
  unregister_temp(slot_);
}

std::string OutputClaim::holder_of(const fs::path& output) {
  const auto file = claim_file(output);
  if (first_line(file) == claim_line()) return {};
  return live_holder(file);
}

OutputClaim::Seen OutputClaim::seen(const fs::path& output) {
  Seen s;
  const auto file = claim_file(output);
  if (first_line(file) == claim_line()) return s;
  s.holder = live_holder(file);
  if (s.holder.empty()) return s;
  struct stat st = {};
  if (::stat(file.c_str(), &st) == 0)
    s.touched_ns = static_cast<std::int64_t>(st.st_mtim.tv_sec) * 1000000000 + st.st_mtim.tv_nsec;
  std::istringstream in(first_line(file));
  std::string tag;
  long long pid = 0;
  // live_holder has found a process of this host gone: one named is running.
  s.running = (in >> tag >> pid) && tag == host_tag() && pid > 0;
  return s;
}

void remove_registered_temporaries_from_signal_handler() noexcept {
  for (auto& s : g_slots)
    if (s.busy.load()) remove_path_signal_safe(s.path);
}

}  // namespace kinora
