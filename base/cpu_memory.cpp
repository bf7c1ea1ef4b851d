#include "base/cpu_memory.h"

#include <c10/core/CPUAllocator.h>
#include <c10/core/impl/alloc_cpu.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <limits>
#include <list>
#include <map>
#include <mutex>
#include <sstream>
#include <string>
#include <unordered_map>
#include <vector>

#include "base/torch_compat.h"

// Under AddressSanitizer a cached block is poisoned while it waits, so a
// tensor used after it was freed is reported as it would be through malloc.
#if defined(__has_feature)
#if __has_feature(address_sanitizer)
#define KINORA_ASAN 1
#endif
#endif
#if defined(__SANITIZE_ADDRESS__) && !defined(KINORA_ASAN)
#define KINORA_ASAN 1
#endif
#ifdef KINORA_ASAN
#include <sanitizer/asan_interface.h>
#define KINORA_POISON(p, n) ASAN_POISON_MEMORY_REGION(p, n)
#define KINORA_UNPOISON(p, n) ASAN_UNPOISON_MEMORY_REGION(p, n)
#else
#define KINORA_POISON(p, n) ((void)(p), (void)(n))
#define KINORA_UNPOISON(p, n) ((void)(p), (void)(n))
#endif

namespace kinora {
namespace {

constexpr std::size_t kMinCached = 256 << 10;  // smaller: the C library's (fast) bins
constexpr std::size_t kHugePage = 2 << 20;

// n rounded up to its size class: eight classes per power of two.
std::size_t size_class(std::size_t n) {
  std::size_t p = kMinCached;
  while (p * 2 <= n) p *= 2;
  const std::size_t step = p / 8;
  return (n + step - 1) / step * step;
}

std::size_t physical_memory() {
  const long pages = ::sysconf(_SC_PHYS_PAGES), page = ::sysconf(_SC_PAGESIZE);
  return pages > 0 && page > 0 ? static_cast<std::size_t>(pages) * static_cast<std::size_t>(page)
                               : std::size_t{4} << 30;
}

struct Block {
  void* ptr = nullptr;
  std::size_t size = 0;
  std::list<Block*>::iterator age;  // in Cache::oldest_first_ while cached
};

// A number file of the cgroup interface; -1 where it is absent, "max" or
// unlimited (cgroup v1 writes a value near 2^63).
int64_t cgroup_number(const std::filesystem::path& file) {
  std::ifstream in(file);
  int64_t v = -1;
  if (!(in >> v) || v >= (int64_t{1} << 60)) return -1;
  return v;
}

// `key`'s value in a memory.stat file; 0 where it is not there.
int64_t cgroup_stat(const std::filesystem::path& file, const std::string& key) {
  std::ifstream in(file);
  std::string k;
  int64_t v = 0;
  while (in >> k >> v)
    if (k == key) return v;
  return 0;
}

// What the memory cgroups above this process still let it have (limit − usage
// + reclaimable file pages, the least along the path to the root), bytes;
// -1 where none sets a limit. On a Slurm node (--mem) or in a container the
// machine's MemAvailable can be far above it.
int64_t cgroup_headroom() {
  namespace fs = std::filesystem;
  std::ifstream in("/proc/self/cgroup");
  std::string line, v1, v2;
  bool has_v2 = false;
  while (std::getline(in, line)) {  // "ID:CONTROLLERS:PATH"
    std::istringstream fields(line);
    std::string id, controllers, path;
    if (!std::getline(fields, id, ':') || !std::getline(fields, controllers, ':')) continue;
    std::getline(fields, path);
    if (("," + controllers + ",").find(",memory,") != std::string::npos) v1 = path;
    if (id == "0" && controllers.empty()) has_v2 = true, v2 = path;
  }
  const bool use_v1 = !v1.empty();
  if (!use_v1 && !has_v2) return -1;
  const fs::path root = use_v1 ? "/sys/fs/cgroup/memory" : "/sys/fs/cgroup";
  std::error_code ec;
  fs::path dir = root / fs::path(use_v1 ? v1 : v2).relative_path();
  if (!fs::is_directory(dir, ec)) dir = root;  // a namespace that shows its own cgroup as the root
  int64_t least = -1;
  for (fs::path d = dir;; d = d.parent_path()) {
    const int64_t limit = cgroup_number(d / (use_v1 ? "memory.limit_in_bytes" : "memory.max"));
    const int64_t usage = cgroup_number(d / (use_v1 ? "memory.usage_in_bytes" : "memory.current"));
    if (limit >= 0 && usage >= 0) {
      const int64_t room =
          limit - usage +
          cgroup_stat(d / "memory.stat", use_v1 ? "total_inactive_file" : "inactive_file");
      least = least < 0 ? room : std::min(least, room);
    }
    if (d == root || !d.has_relative_path() || d.parent_path() == d) break;
  }
  return least;
}

}  // namespace

int64_t system_memory_available() {
  std::ifstream in("/proc/meminfo");
  int64_t total = 0;
  int found = 0;
  for (std::string key; in && found < 2 && in >> key;) {
    int64_t kib = 0;
    in >> kib;
    if (key == "MemAvailable:" || key == "SwapFree:") total += kib * 1024, ++found;
    in.ignore(std::numeric_limits<std::streamsize>::max(), '\n');
  }
  const int64_t machine = found == 2 ? total : -1, cgroup = cgroup_headroom();
  if (machine < 0 || cgroup < 0) return std::max(machine, cgroup);
  return std::min(machine, cgroup);
}

namespace {

// Large blocks the system cannot hold are refused here: the kernel would
// grant the mapping (it overcommits) and later kill the process with no word
// as the pages fill, where a refused allocation is an error that says what
// ran out (the pipeline's "out of memory rendering …").
constexpr std::size_t kCheckedBlock = 64 << 20;

void* map_block(std::size_t size) {
  if (size >= kCheckedBlock) {
    const int64_t available = system_memory_available();
    if (available >= 0 && static_cast<int64_t>(size) > available) return nullptr;
  }
  void* p = ::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) return nullptr;
  // Fewer faults and TLB misses on the large ones (where THP is "madvise").
  if (size >= kHugePage) ::madvise(p, size, MADV_HUGEPAGE);
  return p;
}

class Cache {
 public:
  Cache() : limit_(physical_memory() / 4) {}

  Block* take(std::size_t n) {
    const std::size_t size = size_class(n);
    std::vector<Block*> smaller;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      // The smallest cached class that fits, up to half as large again: a
      // decoder's chunks and a cache concatenated to them vary a little in size.
      auto it = free_.lower_bound(size);
      while (it != free_.end() && it->second.empty()) ++it;
      if (it != free_.end() && it->first <= size + size / 2) {
        Block* b = it->second.back();  // the most recently freed: its pages are warm
        it->second.pop_back();
        KINORA_UNPOISON(b->ptr, b->size);
        oldest_first_.erase(b->age);
        stats_.cached_bytes -= b->size;
        stats_.in_use_bytes += b->size;
        ++stats_.hits;
        live_.emplace(b->ptr, b);
        return b;
      }
      stats_.in_use_bytes += size;
      ++stats_.misses;
      // No cached block serves it: those smaller than it are of a phase that
      // ended (the decoder after the denoiser, a chunk larger than the last),
      // returned rather than kept beside the new one. (A tiny decode-heavy
      // render, 384×384×49: peak 1.97 GB with them kept, 1.53 GB without; glibc
      // 1.18 GB, 20% slower.)
      for (auto small = free_.begin(); small != free_.end() && small->first < size; ++small) {
        for (Block* b : small->second) {
          oldest_first_.erase(b->age);
          stats_.cached_bytes -= b->size;
          smaller.push_back(b);
        }
        small->second.clear();
      }
    }
    unmap_all(smaller);
    void* p = map_block(size);
    if (!p) {  // the cache may hold what the system lacks
      release();
      p = map_block(size);
    }
    std::lock_guard<std::mutex> lock(mutex_);
    if (!p) {
      stats_.in_use_bytes -= size;
      return nullptr;
    }
    auto* b = new Block{p, size, {}};
    live_.emplace(p, b);
    return b;
  }

  // Takes back the block at `ptr`; false when it is not one of the cache's.
  bool give_back(void* ptr) {
    std::vector<Block*> unmap;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      const auto live = live_.find(ptr);
      if (live == live_.end()) return false;
      Block* b = live->second;
      live_.erase(live);
      stats_.in_use_bytes -= b->size;
      KINORA_POISON(b->ptr, b->size);
      free_[b->size].push_back(b);
      b->age = oldest_first_.insert(oldest_first_.end(), b);
      stats_.cached_bytes += b->size;
      trim_locked(limit_, unmap);
    }
    unmap_all(unmap);
    return true;
  }

  void release() {
    std::vector<Block*> unmap;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      trim_locked(0, unmap);
    }
    unmap_all(unmap);
  }

  void set_limit(std::size_t bytes) {
    std::vector<Block*> unmap;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      limit_ = bytes;
      trim_locked(limit_, unmap);
    }
    unmap_all(unmap);
  }

  CpuMemoryCacheStats stats() {
    std::lock_guard<std::mutex> lock(mutex_);
    auto s = stats_;
    s.limit_bytes = limit_;
    return s;
  }

 private:
  // Takes the oldest cached blocks out until at most `keep` bytes are cached.
  void trim_locked(std::size_t keep, std::vector<Block*>& out) {
    while (stats_.cached_bytes > keep && !oldest_first_.empty()) {
      Block* b = oldest_first_.front();
      oldest_first_.pop_front();
      auto& list = free_[b->size];
      for (auto it = list.begin(); it != list.end(); ++it)
        if (*it == b) {
          list.erase(it);
          break;
        }
      stats_.cached_bytes -= b->size;
      out.push_back(b);
    }
  }
  static void unmap_all(const std::vector<Block*>& blocks) {
    for (Block* b : blocks) {
      KINORA_UNPOISON(b->ptr, b->size);
      ::munmap(b->ptr, b->size);
      delete b;
    }
  }

  std::mutex mutex_;
  std::map<std::size_t, std::vector<Block*>> free_;  // by size class
  std::list<Block*> oldest_first_;
  std::unordered_map<void*, Block*> live_;  // handed out, by address
  std::size_t limit_;
  CpuMemoryCacheStats stats_;
};

// Never destroyed: tensors may be freed during static destruction.
Cache& cache() {
  static Cache* c = new Cache;
  return *c;
}

// Every tensor's deleter: the data pointer is its own context, as LibTorch's
// raw_allocate()/raw_deallocate() (oneDNN's buffers) require.
void free_block(void* ptr) {
  if (ptr && !cache().give_back(ptr)) c10::free_cpu(ptr);
}

struct CachingAllocator final : compat::AllocatorBase {
  c10::DataPtr allocate_bytes(std::size_t n) const override {
    const c10::Device cpu(c10::DeviceType::CPU);
    void* p = nullptr;
    if (n < kMinCached) {
      p = c10::alloc_cpu(n);
    } else {
      Block* b = cache().take(n);
      TORCH_CHECK(b, "can't allocate memory: you tried to allocate ", n,
                  " bytes. Error code 12 (Cannot allocate memory)");
      p = b->ptr;
    }
    return {p, p, &free_block, cpu};
  }
  c10::DeleterFnPtr raw_deleter() const override { return &free_block; }
};

}  // namespace

bool install_cpu_memory_cache() {
  static const bool installed = [] {
    if (const char* off = std::getenv("KINORA_CPU_CACHE"); off && std::string(off) == "0")
      return false;
    // Never destroyed, as the cache: storages keep a pointer to their allocator.
    c10::SetCPUAllocator(new CachingAllocator, /*priority=*/1);
    return true;
  }();
  return installed;
}

void release_cpu_memory_cache() {
  cache().release();
}

void set_cpu_memory_cache_limit(std::size_t bytes) {
  cache().set_limit(bytes);
}

CpuMemoryCacheStats cpu_memory_cache_stats() {
  return cache().stats();
}

}  // namespace kinora
