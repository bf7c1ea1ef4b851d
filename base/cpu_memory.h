#pragma once
// A caching allocator for LibTorch's CPU tensors.
//
// A denoising step allocates the same large temporaries (activations, weights
// widened to the compute dtype) as the step before. Through the C library each
// one of them is a fresh mapping, returned to the system when freed and faulted
// in again, page by page, on its next use: a Wan 1.3B render at 256×256×17 took
// 28 million page faults and a third of its time in the kernel that way. Here
// a freed block of 256 KiB or more is kept and handed to the next request of
// its size class (eight classes per power of two) or of a class up to a third
// smaller (a request no cached block serves returns those smaller than it to
// the system), and blocks of 2 MiB or more are backed by transparent huge pages
// where the kernel offers them. What the cache holds is bounded (a quarter of
// the machine's memory by default, oldest blocks returned first) and returned
// to the system by release_cpu_memory_cache(), which the pipeline calls after
// the text encoders and after each render. A new block of 64 MiB or more that
// system_memory_available() says the process cannot have is refused: an
// allocation error the render reports, where an overcommitting kernel would
// grant it and kill the process once its pages fill.
//
// KINORA_CPU_CACHE=0 in the environment leaves LibTorch's own allocator in
// place (bench/render_bench.cpp measures both).
#include <cstddef>
#include <cstdint>

namespace kinora {

// Makes the cache LibTorch's CPU allocator, once per process (later calls do
// nothing); tensors allocated before keep their own deleter. Returns whether
// the cache is in use.
bool install_cpu_memory_cache();

// Returns every cached (free) block to the system; blocks in use are kept.
void release_cpu_memory_cache();

// The most bytes of free blocks kept; 0 keeps none. Lowering it returns the
// oldest blocks beyond it at once.
void set_cpu_memory_cache_limit(std::size_t bytes);

// What the system can still give this process, bytes: the machine's
// MemAvailable and free swap, or what its memory cgroups' limits leave (a
// Slurm job's --mem, a container's limit) where that is less; -1 where
// neither can be read.
int64_t system_memory_available();

struct CpuMemoryCacheStats {
  std::size_t cached_bytes = 0;  // free blocks kept
  std::size_t in_use_bytes = 0;  // blocks handed out (size classes, not requests)
  std::size_t limit_bytes = 0;
  uint64_t hits = 0, misses = 0;  // requests served from the cache, from the system
};
CpuMemoryCacheStats cpu_memory_cache_stats();

}  // namespace kinora
