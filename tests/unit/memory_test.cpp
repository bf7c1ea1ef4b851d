// The CPU tensor cache (base/cpu_memory.h) and what a mapped checkpoint does
// with its pages (prefetch, release_resident).
#include <c10/core/CPUAllocator.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/mman.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include "base/cpu_memory.h"
#include "io/safetensors.h"
#include "test_util.h"

using namespace kinora;
namespace fs = std::filesystem;

namespace {

// The cache in place with room, empty, for each test.
class CpuMemoryCache : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!install_cpu_memory_cache()) GTEST_SKIP() << "KINORA_CPU_CACHE=0";
    set_cpu_memory_cache_limit(std::size_t{1} << 30);
    release_cpu_memory_cache();
  }
  void TearDown() override { set_cpu_memory_cache_limit(std::size_t{1} << 30); }
};

torch::Tensor floats(int64_t n) {
  return torch::empty({n}, torch::kFloat32);
}

}  // namespace

TEST_F(CpuMemoryCache, AFreedBlockServesTheNextRequestOfItsSizeClass) {
  const auto before = cpu_memory_cache_stats();
  void* first = nullptr;
  {
    auto t = floats(1 << 20);  // 4 MiB
    t.fill_(1);
    first = t.data_ptr();
  }
  EXPECT_EQ(cpu_memory_cache_stats().cached_bytes, std::size_t{4} << 20);
  // 40 bytes less is the same class (4 MiB, in steps of 512 KiB here): the same block.
  auto again = floats((1 << 20) - 10);
  EXPECT_EQ(again.data_ptr(), first);
  again.fill_(2);  // writable
  EXPECT_EQ(again.sum().item<float>(), 2.0f * ((1 << 20) - 10));
  // One step up is another class: a new block.
  auto larger = floats((1 << 20) + (1 << 17) + 1);
  EXPECT_NE(larger.data_ptr(), first);
  const auto s = cpu_memory_cache_stats();
  EXPECT_EQ(s.hits - before.hits, 1u);
  EXPECT_EQ(s.misses - before.misses, 2u);
  EXPECT_EQ(s.in_use_bytes - before.in_use_bytes, std::size_t{9} << 20);  // 4 + 5 MiB
}

TEST_F(CpuMemoryCache, ASmallerRequestTakesABlockUpToHalfAsLargeAgain) {
  void* block = nullptr;
  { block = floats(1 << 20).fill_(1).data_ptr(); }  // 4 MiB, cached
  {
    auto smaller = floats(7 << 17);  // 3.5 MiB: served by the 4 MiB block
    EXPECT_EQ(smaller.data_ptr(), block);
  }
  auto much_smaller = floats(1 << 19);  // 2 MiB: not from a block twice its size
  EXPECT_NE(much_smaller.data_ptr(), block);
}

TEST_F(CpuMemoryCache, ARequestNoBlockServesReturnsTheSmallerBlocks) {
  { auto a = floats(1 << 18).fill_(1), b = floats(1 << 19).fill_(1); }  // 1 and 2 MiB
  EXPECT_EQ(cpu_memory_cache_stats().cached_bytes, std::size_t{3} << 20);
  auto big = floats(1 << 21).fill_(1);  // 8 MiB: a new block; the two small ones go
  EXPECT_EQ(cpu_memory_cache_stats().cached_bytes, 0u);
}

TEST_F(CpuMemoryCache, SmallTensorsAreTheCLibrarysAndRawAllocationsRoundTrip) {
  const auto before = cpu_memory_cache_stats();
  { auto t = floats(1000).fill_(1); }
  const auto after = cpu_memory_cache_stats();
  EXPECT_EQ(after.hits + after.misses, before.hits + before.misses);
  // oneDNN's buffers come through raw_allocate/raw_deallocate: the data pointer
  // must be its own context.
  auto* alloc = c10::GetCPUAllocator();
  for (std::size_t n : {std::size_t{100}, std::size_t{8} << 20}) {
    void* p = alloc->raw_allocate(n);
    ASSERT_NE(p, nullptr);
    static_cast<char*>(p)[n - 1] = 1;
    alloc->raw_deallocate(p);
  }
}

TEST_F(CpuMemoryCache, WhatItKeepsIsBoundedAndReleased) {
  set_cpu_memory_cache_limit(std::size_t{6} << 20);
  {
    std::vector<torch::Tensor> ts;
    for (int i = 0; i < 3; ++i) ts.push_back(floats(1 << 20).fill_(i));
  }
  EXPECT_EQ(cpu_memory_cache_stats().cached_bytes, std::size_t{4} << 20);  // one of three
  release_cpu_memory_cache();
  EXPECT_EQ(cpu_memory_cache_stats().cached_bytes, 0u);
  set_cpu_memory_cache_limit(0);  // keeps nothing
  { auto t = floats(1 << 20).fill_(1); }
  EXPECT_EQ(cpu_memory_cache_stats().cached_bytes, 0u);
}

// A block larger than the system can give is an error, not a mapping the
// kernel grants (it overcommits up to its memory and swap) and kills the
// process for once the pages fill.
TEST_F(CpuMemoryCache, ABlockTheSystemCannotHoldIsRefused) {
  const int64_t available = system_memory_available();
  if (available < 0) GTEST_SKIP() << "no /proc/meminfo";
  EXPECT_THROW(torch::empty({available + (int64_t{1} << 30)}, torch::kUInt8), c10::Error);
  EXPECT_NO_THROW(torch::empty({int64_t{128} << 20}, torch::kUInt8).fill_(1));
}

TEST_F(CpuMemoryCache, ThreadsShareItSafely) {
  const auto before = cpu_memory_cache_stats().in_use_bytes;
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t)
    threads.emplace_back([t] {
      for (int i = 0; i < 100; ++i) {
        auto a = floats((1 << 17) * (1 + (i + t) % 5)).fill_(static_cast<float>(t));
        auto b = floats(1 << 16).fill_(1);
        EXPECT_EQ(a[0].item<float>(), static_cast<float>(t));
      }
    });
  for (auto& th : threads) th.join();
  EXPECT_EQ(cpu_memory_cache_stats().in_use_bytes, before);
}

namespace {

// Pages of `path` in the page cache, out of all.
std::pair<std::size_t, std::size_t> cached_pages(const fs::path& path) {
  const auto size = fs::file_size(path);
  const int fd = ::open(path.c_str(), O_RDONLY);
  void* p = ::mmap(nullptr, size, PROT_READ, MAP_SHARED, fd, 0);
  ::close(fd);
  const auto page = static_cast<std::size_t>(::sysconf(_SC_PAGESIZE));
  std::vector<unsigned char> v((size + page - 1) / page);
  ::mincore(p, size, v.data());
  ::munmap(p, size);
  std::size_t in = 0;
  for (auto b : v) in += b & 1;
  return {in, v.size()};
}

fs::path write_weights(const test::TempDir& dir) {
  const auto path = dir.path() / "w.safetensors";
  io::save_safetensors(path, {{"w", torch::arange(1 << 22, torch::kFloat32)}});  // 16 MiB
  return path;
}

}  // namespace

TEST(MappedWeights, ReleasedPagesReadBackAndWrittenOnesAreKept) {
  test::TempDir dir;
  const auto f = io::SafetensorsFile::open(write_weights(dir));
  ASSERT_TRUE(f->is_zero_copy("w"));
  auto w = f->get("w");
  const double sum = w.sum().item<double>();  // every page resident
  EXPECT_TRUE(f->release_resident());
  EXPECT_EQ(w.sum().item<double>(), sum);  // read again from the page cache
  // A view written to holds the process's own copy of its page: that is kept.
  w[5] = -1.0f;
  EXPECT_FALSE(f->release_resident());
  EXPECT_EQ(w[5].item<float>(), -1.0f);
}

namespace {
// This process's resident pages of mapped files (RssFile), bytes.
int64_t resident_file_bytes() {
  std::ifstream status("/proc/self/status");
  for (std::string line; std::getline(status, line);)
    if (line.rfind("RssFile:", 0) == 0) return std::stoll(line.substr(8)) * 1024;
  return -1;
}
}  // namespace

// Part of one tensor taken out of resident memory: those pages only, read back
// when used; a range holding a page written through a view is kept.
TEST(MappedWeights, ARangeOfATensorIsReleased) {
  test::TempDir dir;
  const auto f = io::SafetensorsFile::open(write_weights(dir));
  auto w = f->get("w");
  const double sum = w.sum().item<double>();  // every page resident
  const int64_t before = resident_file_bytes();
  if (before < 0) GTEST_SKIP() << "no RssFile in /proc/self/status";
  constexpr uint64_t kMiB = 1 << 20;
  EXPECT_TRUE(f->release_resident("w", 0, 8 * kMiB));
  const int64_t released = before - resident_file_bytes();
  // The pages of the range, give or take the kernel's grouping of them (large
  // folios) and the lag of its counters; not the whole tensor's 16 MiB.
  EXPECT_GE(released, static_cast<int64_t>(6 * kMiB));
  EXPECT_LE(released, static_cast<int64_t>(12 * kMiB));
  EXPECT_EQ(w.sum().item<double>(), sum);
  w[5] = -1.0f;
  EXPECT_FALSE(f->release_resident("w", 0, 4096));
  EXPECT_TRUE(f->release_resident("w", 8 * kMiB, 4 * kMiB));
  EXPECT_TRUE(f->release_resident("w", 64 * kMiB));  // past its end: nothing to do
  EXPECT_EQ(w[5].item<float>(), -1.0f);
}

TEST(MappedWeights, PrefetchReadsTheFileIntoThePageCache) {
  test::TempDir dir;
  const auto path = write_weights(dir);
  {
    const int fd = ::open(path.c_str(), O_RDONLY);
    ::fdatasync(fd);
    ::posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
    ::close(fd);
  }
  if (cached_pages(path).first > cached_pages(path).second / 2)
    GTEST_SKIP() << "this file system keeps the file cached";
  const auto f = io::SafetensorsFile::open(path);
  f->prefetch();  // returns at once; a thread reads
  const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  while (cached_pages(path).first < cached_pages(path).second &&
         std::chrono::steady_clock::now() < until)
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  const auto [in, all] = cached_pages(path);
  EXPECT_EQ(in, all);
}
