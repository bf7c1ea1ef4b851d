#include "pipeline/prompt_cache.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cstdlib>

#include "base/hash_cache.h"
#include "base/sha256.h"
#include "io/checkpoint.h"
#include "io/safetensors.h"

namespace kinora::pipeline {
namespace fs = std::filesystem;

namespace {
constexpr std::size_t kMemoryEntries = 16;

// Copies out of a file's mapping, so that the file may go.
torch::Tensor owned(const io::Checkpoint& ck, const std::string& name) {
  return ck.contains(name) ? ck.get(name).clone() : torch::Tensor();
}

// The folder's files beyond `max_bytes`, least recently used first, removed.
void trim(const fs::path& dir, uint64_t max_bytes) {
  std::error_code ec;
  std::vector<std::pair<fs::file_time_type, fs::path>> files;
  uint64_t total = 0;
  for (const auto& e : fs::directory_iterator(dir, ec)) {
    if (e.path().extension() != ".safetensors") continue;
    const auto size = e.file_size(ec);
    if (ec) continue;
    total += size;
    files.emplace_back(e.last_write_time(ec), e.path());
  }
  std::sort(files.begin(), files.end());
  for (const auto& [time, path] : files) {
    if (total <= max_bytes) break;
    const auto size = fs::file_size(path, ec);
    if (fs::remove(path, ec)) total -= ec ? 0 : size;
  }
}
}  // namespace

PromptCache::PromptCache(fs::path dir, uint64_t max_bytes)
    : dir_(std::move(dir)), max_bytes_(max_bytes) {}

fs::path PromptCache::default_dir() {
  if (const char* off = std::getenv("KINORA_PROMPT_CACHE"); off && std::string(off) == "0")
    return {};
  const auto base = user_cache_dir();
  return base.empty() ? fs::path() : base / "prompts";
}

layers::Conditioning PromptCache::get(
    const std::string& key, const std::string& text,
    const std::function<layers::Conditioning(const std::function<void(const std::string&)>&)>&
        encode,
    const std::function<void(const std::string&)>& note, bool* hit) {
  const std::string id = sha256_hex(key + '\0' + text);
  auto say_all = [&](const std::vector<std::string>& notes) {
    if (note)
      for (const auto& n : notes) note(n);
  };
  if (hit) *hit = true;
  for (auto it = memory_.begin(); it != memory_.end(); ++it)
    if (it->id == id) {
      memory_.splice(memory_.begin(), memory_, it);
      say_all(memory_.front().notes);
      return memory_.front().cond;
    }
  auto remember = [&](Entry e) {
    memory_.push_front(std::move(e));
    if (memory_.size() > kMemoryEntries) memory_.pop_back();
    return memory_.front().cond;
  };
  const fs::path file = dir_.empty() ? fs::path() : dir_ / (id + ".safetensors");
  std::error_code ec;
  if (!file.empty() && fs::is_regular_file(file, ec)) {
    try {
      const auto ck = io::Checkpoint::open(file);
      const auto& md = ck.metadata();
      // The key and text are kept whole: a hash that collided is a miss.
      if (md.count("key") && md.at("key") == key && md.count("text") && md.at("text") == text &&
          ck.contains("context")) {
        Entry e{id, {}, {}};
        e.cond.context = owned(ck, "context");
        e.cond.pooled = owned(ck, "pooled");
        e.cond.mask = owned(ck, "mask");
        if (md.count("notes"))
          e.notes = nlohmann::json::parse(md.at("notes")).get<std::vector<std::string>>();
        fs::last_write_time(file, fs::file_time_type::clock::now(), ec);  // recently used
        say_all(e.notes);
        return remember(std::move(e));
      }
    } catch (const std::exception&) {
      // An unreadable entry: encoded again below, and replaced.
    }
  }
  if (hit) *hit = false;
  Entry e{id, {}, {}};
  e.cond = encode([&](const std::string& n) {
    e.notes.push_back(n);
    if (note) note(n);
  });
  auto cpu = [](const torch::Tensor& t) { return t.defined() ? t.to(torch::kCPU) : t; };
  e.cond = {cpu(e.cond.context), cpu(e.cond.pooled), cpu(e.cond.mask), cpu(e.cond.guidance)};
  if (!file.empty()) {
    try {
      fs::create_directories(dir_);
      std::vector<std::pair<std::string, torch::Tensor>> tensors = {{"context", e.cond.context}};
      if (e.cond.pooled.defined()) tensors.emplace_back("pooled", e.cond.pooled);
      if (e.cond.mask.defined()) tensors.emplace_back("mask", e.cond.mask);
      io::save_safetensors(
          file, tensors, {{"key", key}, {"text", text}, {"notes", nlohmann::json(e.notes).dump()}});
      trim(dir_, max_bytes_);
    } catch (const std::exception&) {
      // A full disk or a read-only cache folder: the render goes on without it.
    }
  }
  return remember(std::move(e));
}

}  // namespace kinora::pipeline
