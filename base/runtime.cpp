#include "base/runtime.h"

#include "base/cpu_blas.h"
#include "base/cpu_memory.h"

#include <torch/torch.h>
#include <torch/version.h>

#include <sched.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <limits>
#include <mutex>
#include <sstream>
#include <string>
#include <thread>

#include "base/version.h"

namespace kinora {

namespace {

// cgroup v2 cpu.max ("max 100000" or "150000 100000"), else v1's quota and
// period; 0 when there is no limit.
int cgroup_cpu_limit() {
  auto read = [](const char* path) {
    std::ifstream f(path);
    std::string s;
    std::getline(f, s);
    return s;
  };
  long long quota = -1, period = 0;
  if (const auto v2 = read("/sys/fs/cgroup/cpu.max"); !v2.empty()) {
    std::istringstream in(v2);
    std::string q;
    in >> q >> period;
    if (q != "max") quota = std::atoll(q.c_str());
  } else {
    const auto q = read("/sys/fs/cgroup/cpu/cpu.cfs_quota_us");
    const auto p = read("/sys/fs/cgroup/cpu/cpu.cfs_period_us");
    if (!q.empty() && !p.empty()) quota = std::atoll(q.c_str()), period = std::atoll(p.c_str());
  }
  if (quota <= 0 || period <= 0) return 0;
  return static_cast<int>(std::max(1LL, (quota + period - 1) / period));
}

// Threads of this process that are running or runnable now.
int own_running_threads() {
  int n = 0;
  std::error_code ec;
  for (const auto& t : std::filesystem::directory_iterator("/proc/self/task", ec)) {
    std::ifstream f(t.path() / "stat");
    std::string line;
    std::getline(f, line);
    const auto close = line.rfind(')');  // "tid (name) S …": the name may hold spaces
    if (close != std::string::npos && close + 2 < line.size() && line[close + 2] == 'R') ++n;
  }
  return std::max(n, 1);
}

// Runnable tasks of other processes now: procs_running of /proc/stat less this
// process's own, the least of a few samples a millisecond apart.
int others_running() {
  int least = -1;
  for (int i = 0; i < 5; ++i) {
    std::ifstream f("/proc/stat");
    std::string key;
    long long value = 0;
    while (f >> key) {
      if (key == "procs_running") {
        f >> value;
        break;
      }
      f.ignore(std::numeric_limits<std::streamsize>::max(), '\n');
    }
    const int others = std::max(0, static_cast<int>(value) - own_running_threads());
    if (least < 0 || others < least) least = others;
    if (least == 0) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  return std::max(least, 0);
}

}  // namespace

int usable_cpus() {
  cpu_set_t set;
  int cpus = 0;
  if (::sched_getaffinity(0, sizeof set, &set) == 0) cpus = CPU_COUNT(&set);
  if (cpus < 1) cpus = static_cast<int>(std::thread::hardware_concurrency());
  if (const int limit = cgroup_cpu_limit(); limit > 0) cpus = std::min(cpus, limit);
  return std::max(cpus, 1);
}

int idle_cpus() {
  const int usable = usable_cpus();
  const int online = std::max(1, static_cast<int>(std::thread::hardware_concurrency()));
  const int others = others_running();
  // Others beyond the CPUs this process cannot use anyway take none of ours.
  return std::clamp(std::min(usable, online - others), 1, usable);
}

int configure_threads() {
  choose_cpu_blas_kernels();
  install_cpu_memory_cache();
  int threads = 0;
  if (const char* env = std::getenv("KINORA_THREADS"); env && *env) {
    char* end = nullptr;
    errno = 0;
    const long n = std::strtol(env, &end, 10);
    if (errno == 0 && end != env && *end == '\0' && n >= 0 && n <= 4096) {
      // 0: the idle CPUs, as when unset
      threads = static_cast<int>(n);
    } else {
      static std::once_flag said;  // once a process, not before each render
      std::call_once(said, [&] {
        std::fprintf(stderr,
                     "kinora: KINORA_THREADS='%s' is not a thread count (a whole number from 1 "
                     "to 4096, or 0 for the idle CPUs); using the idle CPUs\n",
                     env);
      });
    }
  }
  if (threads < 1) threads = idle_cpus();
  if (at::get_num_threads() != threads) at::set_num_threads(threads);
  return at::get_num_threads();
}

std::string cpu_flags_line() {
  std::ifstream in("/proc/cpuinfo");
  for (std::string line; std::getline(in, line);)
    if (line.rfind("flags", 0) == 0) return line;
  return "";
}

std::set<std::string> cpu_flag_words(const std::string& flags_line) {
  std::set<std::string> flags;
  std::istringstream words(flags_line);
  for (std::string w; words >> w;) flags.insert(w);
  return flags;
}

std::string torch_version() {
  return std::to_string(TORCH_VERSION_MAJOR) + "." + std::to_string(TORCH_VERSION_MINOR) + "." +
         std::to_string(TORCH_VERSION_PATCH);
}

std::string version_string() {
  // Appended, not a chain of `+`: GCC 12 warns falsely on that
  // (-Warray-bounds, its bug 105651).
  std::string s = "Kinora ";
  s.append(kVersion).append(", LibTorch ").append(torch_version());
  s.append(torch::cuda::is_available() ? " (CUDA)" : " (CPU)");
  return s;
}

std::filesystem::path executable_dir() {
  std::error_code ec;
  const auto exe = std::filesystem::read_symlink("/proc/self/exe", ec);
  return ec ? std::filesystem::path() : exe.parent_path();
}

}  // namespace kinora
