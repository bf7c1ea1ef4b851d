// The run folder's files: a stage's weights (safetensors), its optimizer state,
// state.json and its loss logs, written so that a stopped stage resumes where
// it was (docs/training.md, "What a stage writes").
#include <fstream>

#include "base/error.h"
#include "base/files.h"
#include "base/json.h"
#include "io/safetensors.h"
#include "training/internal.h"

namespace kinora::training::internal {
namespace fs = std::filesystem;
using torch::Tensor;

namespace {

std::vector<std::pair<std::string, Tensor>> params_of(torch::nn::Module& m) {
  std::vector<std::pair<std::string, Tensor>> out;
  for (const auto& item : m.named_parameters())
    out.emplace_back(item.key(),
                     item.value().detach().to(torch::kCPU, torch::kFloat32).contiguous());
  return out;
}

}  // namespace

void save_module(torch::nn::Module& m, const fs::path& path,
                 const std::map<std::string, std::string>& metadata) {
  io::save_safetensors(path, params_of(m), metadata);
}

void load_into(torch::nn::Module& m, const io::Checkpoint& ck, const fs::path& path,
               const std::function<bool(const std::string&)>& only) {
  torch::NoGradGuard g;
  for (auto& item : m.named_parameters()) {
    const auto& name = item.key();
    if (only && !only(name)) continue;
    auto& p = item.value();
    if (!ck.contains(name)) fail_file(path, "training checkpoint has no tensor '" + name + "'");
    const auto t = ck.get(name);
    if (t.sizes() != p.sizes()) fail_file(path, "tensor '" + name + "' has the wrong shape");
    p.copy_(t);
  }
}

void load_into(torch::nn::Module& m, const fs::path& path) {
  load_into(m, io::Checkpoint::open(path), path);
}

io::Checkpoint open_trained(const fs::path& path, const std::string& config,
                            const std::string& wanted) {
  if (!fs::exists(path)) fail_file(path, "no such file (" + wanted + ")");
  auto ck = io::Checkpoint::open(path);
  const auto it = ck.metadata().find("config");
  if (it == ck.metadata().end()) fail_file(path, "has no config in its metadata");
  const auto want = parse_json(config, "the run's config");
  const auto had = parse_json(it->second, path.string() + " (metadata 'config')");
  for (const auto& [key, value] : want.items())
    if (!had.contains(key) || had[key] != value)
      fail_file(path, "its config has " + key + " = " +
                          (had.contains(key) ? had[key].dump() : std::string("nothing")) +
                          "; this run's is " + value.dump());
  return ck;
}

void write_json(const fs::path& path, const nlohmann::json& j) {
  write_file_atomically(path, j.dump(2) + "\n");
}

nlohmann::json read_json(const fs::path& path) {
  return read_json_file(path);
}

void save_optimizer(torch::optim::Optimizer& opt, const fs::path& path) {
  const auto tmp = temp_beside(path);
  try {
    torch::save(opt, tmp.string());
  } catch (const c10::Error& e) {
    std::error_code ec;
    fs::remove(tmp, ec);
    fail_file(path,
              std::string("could not write the optimizer state: ") + e.what_without_backtrace());
  }
  commit_temp(tmp, path);
}

LossLog::LossLog(const fs::path& path, const std::string& header) : path_(path) {
  if (!fs::exists(path_)) std::ofstream(path_) << header << "\n";
}

void LossLog::add(int64_t step, const std::vector<double>& values, double lr, double seconds) {
  std::ofstream f(path_, std::ios::app);
  f << step;
  for (double v : values) f << "," << v;
  f << "," << lr << "," << seconds << "\n";
}

void truncate_log(const fs::path& path, int64_t step) {
  if (!fs::exists(path)) return;
  std::ifstream in(path);
  std::string line, kept;
  bool header = true;
  while (std::getline(in, line)) {
    if (!header && std::stoll(line.substr(0, line.find(','))) > step) break;
    kept += line + "\n";
    header = false;
  }
  in.close();
  write_file_atomically(path, kept);
}

}  // namespace kinora::training::internal
