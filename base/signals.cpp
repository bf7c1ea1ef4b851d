#include "base/signals.h"

#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <mutex>

#include "base/files.h"

namespace kinora {

namespace {
std::atomic<bool> g_cancel{false};
std::atomic<int> g_signal{0};

void on_signal(int sig) {
  if (g_cancel.exchange(true)) {
    remove_registered_temporaries_from_signal_handler();
    ::_exit(128 + sig);
  }
  g_signal.store(sig);
}
}  // namespace

std::atomic<bool>& cancel_requested() {
  return g_cancel;
}

void install_cancel_signals() {
  struct sigaction sa = {};
  sa.sa_handler = on_signal;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = SA_RESTART;
  for (int sig : {SIGINT, SIGTERM, SIGHUP}) ::sigaction(sig, &sa, nullptr);
  ::signal(SIGXFSZ, SIG_IGN);
}

namespace {

// The registered mappings: a fixed table the handler reads without locks. A
// slot is published by storing its begin last, and freed by clearing it.
struct MappedSlot {
  std::atomic<std::uintptr_t> begin{0};
  std::atomic<std::size_t> size{0};
  char path[1024] = {};
};
constexpr std::size_t kMappedSlots = 512;
MappedSlot g_mapped[kMappedSlots];

void write_all(const char* s, std::size_t n) {
  while (n > 0) {
    const ssize_t w = ::write(STDERR_FILENO, s, n);
    if (w <= 0) return;
    s += w;
    n -= static_cast<std::size_t>(w);
  }
}
void write_str(const char* s) {
  write_all(s, std::strlen(s));
}

void on_bus_error(int sig, siginfo_t* info, void*) {
  const auto at = reinterpret_cast<std::uintptr_t>(info ? info->si_addr : nullptr);
  for (auto& slot : g_mapped) {
    const std::uintptr_t b = slot.begin.load(std::memory_order_acquire);
    if (b == 0 || at < b || at - b >= slot.size.load(std::memory_order_relaxed)) continue;
    write_str("kinora: ");
    write_str(slot.path);
    write_str(
        ": could not be read while in use (the file was shortened or replaced on disk while "
        "Kinora had it open, or its disk failed); stopped, and the output in progress was not "
        "written\n");
    remove_registered_temporaries_from_signal_handler();
    ::_exit(128 + sig);
  }
  // Not one of ours: the default action (the fault recurs on return, or the
  // signal came from kill()).
  ::signal(sig, SIG_DFL);
  ::raise(sig);
}

}  // namespace

void register_mapped_file(const void* begin, std::size_t size, const std::string& path) {
  static std::once_flag installed;
  std::call_once(installed, [] {
    struct sigaction sa = {};
    sa.sa_sigaction = on_bus_error;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_SIGINFO;
    ::sigaction(SIGBUS, &sa, nullptr);
  });
  static std::mutex m;  // registration only; the handler reads without it
  const std::lock_guard<std::mutex> lock(m);
  for (auto& slot : g_mapped) {
    if (slot.begin.load(std::memory_order_relaxed) != 0) continue;
    const std::size_t n = std::min(path.size(), sizeof slot.path - 1);
    std::memcpy(slot.path, path.data(), n);
    slot.path[n] = '\0';
    slot.size.store(size, std::memory_order_relaxed);
    slot.begin.store(reinterpret_cast<std::uintptr_t>(begin), std::memory_order_release);
    return;
  }
  // More files mapped at once than slots: this one's fault gets the default
  // action.
}

void unregister_mapped_file(const void* begin) {
  for (auto& slot : g_mapped)
    if (slot.begin.load(std::memory_order_relaxed) == reinterpret_cast<std::uintptr_t>(begin)) {
      slot.begin.store(0, std::memory_order_release);
      return;
    }
}

int cancel_signal() {
  return g_signal.load();
}

int cancel_exit_status() {
  const int sig = g_signal.load();
  return 128 + (sig ? sig : SIGINT);
}

}  // namespace kinora
