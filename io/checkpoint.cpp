#include "io/checkpoint.h"

#include <nlohmann/json.hpp>

#include <fstream>
#include <sstream>

#include "base/error.h"
#include "base/json.h"
#include "base/strings.h"

namespace kinora::io {
namespace fs = std::filesystem;
using nlohmann::json;

namespace {

// An index is small; refuse anything that is clearly not one before reading it.
constexpr std::uintmax_t kMaxIndexBytes = 64ull << 20;

json read_index(const fs::path& path) {
  return read_json_file(path, {kMaxIndexBytes, JsonLimits{}.max_depth});
}

}  // namespace

Checkpoint Checkpoint::open(const fs::path& path) {
  Checkpoint ck;
  ck.path_ = path;
  if (!ends_with(path.filename().string(), ".index.json")) {
    ck.shards_.push_back(SafetensorsFile::open(path));
    for (const auto& t : ck.shards_[0]->tensors()) ck.where_[t.name] = 0;
    ck.metadata_ = ck.shards_[0]->metadata();
    return ck;
  }

  ck.is_index_ = true;
  const json index = read_index(path);
  if (!index.is_object()) fail_file(path, "index is not a JSON object");
  const auto wm = index.find("weight_map");
  if (wm == index.end() || !wm->is_object() || wm->empty())
    fail_file(path, "index has no \"weight_map\" object");

  std::map<std::string, std::size_t> shard_of_file;
  for (const auto& [name, file] : wm->items()) {
    if (!file.is_string()) fail_file(path, "weight_map entry for '" + name + "' is not a string");
    const fs::path rel = file.get<std::string>();
    if (rel.empty() || rel.is_absolute() || rel.filename() != rel)
      fail_file(path,
                "weight_map names '" + rel.string() + "', which is not a file beside the index");
    auto [it, inserted] = shard_of_file.try_emplace(rel.string(), ck.shards_.size());
    if (inserted) {
      // A shard missing or damaged: its message, and the index that names it.
      try {
        ck.shards_.push_back(SafetensorsFile::open(path.parent_path() / rel));
      } catch (const Error& e) {
        fail_file(path, "the shard " + rel.string() + " it names: " + e.what());
      }
    }
    const auto& shard = *ck.shards_[it->second];
    if (!shard.contains(name))
      fail_file(path,
                "weight_map puts '" + name + "' in " + rel.string() + ", which has no such tensor");
    ck.where_[name] = it->second;
  }
  ck.metadata_ = ck.shards_[0]->metadata();
  if (const auto md = index.find("metadata"); md != index.end() && md->is_object()) {
    for (const auto& [k, v] : md->items())
      ck.metadata_[k] = v.is_string() ? v.get<std::string>() : v.dump();
  }
  return ck;
}

std::vector<std::string> Checkpoint::names() const {
  std::vector<std::string> out;
  out.reserve(where_.size());
  for (const auto& kv : where_) out.push_back(kv.first);
  return out;
}

const SafetensorsFile& Checkpoint::file_of(const std::string& name) const {
  const auto it = where_.find(name);
  if (it == where_.end()) fail_file(path_, "no tensor named '" + name + "'");
  return *shards_[it->second];
}

const TensorInfo& Checkpoint::info(const std::string& name) const {
  return file_of(name).info(name);
}
torch::Tensor Checkpoint::get(const std::string& name) const {
  return file_of(name).get(name);
}

uint64_t Checkpoint::total_bytes() const {
  uint64_t total = 0;
  for (const auto& [name, shard] : where_) total += shards_[shard]->info(name).nbytes();
  return total;
}

std::map<std::string, std::vector<int64_t>> Checkpoint::shapes() const {
  std::map<std::string, std::vector<int64_t>> out;
  for (const auto& [name, shard] : where_) out[name] = shards_[shard]->info(name).shape;
  return out;
}

void Checkpoint::prefetch() const {
  for (const auto& s : shards_) s->prefetch();
}

bool Checkpoint::release_resident() const {
  bool all = true;
  for (const auto& s : shards_) all = s->release_resident() && all;
  return all;
}

std::vector<fs::path> shard_files(const fs::path& path) {
  std::vector<fs::path> out;
  if (path.extension() != ".json") return out;
  try {
    const auto ck = Checkpoint::open(path);
    for (const auto& shard : ck.shards()) out.push_back(shard->path());
  } catch (const Error&) {
  }
  return out;
}

}  // namespace kinora::io
