// The run folder's files: a stage's weights (safetensors), its optimizer state,
// state.json and its loss logs, written so that a stopped stage resumes where
// it was (docs/training.md, "What a stage writes").
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iomanip>
#include <random>
#include <sstream>

#include "base/error.h"
#include "base/files.h"
#include "base/json.h"
#include "base/strings.h"
#include "embedded/model.h"
#include "io/safetensors.h"
#include "training/internal.h"

namespace kinora::training::internal {
namespace fs = std::filesystem;
using torch::Tensor;

std::string option_problem(bool ok, const std::string& option, double value,
                           const std::string& expected) {
  if (ok) return {};
  std::ostringstream v;
  v << std::setprecision(15) << value;  // 99999999999, not 1e+11
  std::string said = option;
  said.append(" ").append(v.str()).append(": expected ").append(expected);
  return said;
}

std::filesystem::path base_model_dir(const std::filesystem::path& dir, const std::string& who) {
  if (!dir.empty()) return dir;
  if (auto found = embedded::model_dir()) return *found;
  // Appended, not `+` chains: GCC 12 warns falsely on those (-Warray-bounds).
  std::string msg = who;
  msg.append(": no --model given, and the embedded default model was not found (looked in");
  for (const auto& d : embedded::model_search_path()) msg.append(" ").append(d.string());
  msg.append("); give --model, a folder with its four kinora-tiny-* files");
  throw Error(msg);
}

std::string stage_options_problem(const StageOptions& o) {
  const auto lr = static_cast<double>(o.lr);
  for (auto problem : {
           option_problem(o.steps >= 0 && o.steps <= kMaxSteps, "--steps",
                          static_cast<double>(o.steps),
                          "a whole number from 0 to " + std::to_string(kMaxSteps)),
           option_problem(o.batch >= 1 && o.batch <= kMaxBatch, "--batch",
                          static_cast<double>(o.batch),
                          "a whole number from 1 to " + std::to_string(kMaxBatch) +
                              " (clips per step, all held in memory at once)"),
           option_problem(std::isfinite(lr) && lr >= 0, "--lr", lr, "a number of 0 or more"),
           option_problem(o.warmup >= 0, "--warmup", static_cast<double>(o.warmup),
                          "a whole number of 0 or more"),
           option_problem(o.save_every >= 1, "--save-every", static_cast<double>(o.save_every),
                          "a whole number of 1 or more"),
           option_problem(o.log_every >= 1, "--log-every", static_cast<double>(o.log_every),
                          "a whole number of 1 or more"),
       })
    if (!problem.empty()) return problem;
  return {};
}

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
  // Serialised in memory first: LibTorch's file writer, failing mid-file (a
  // full disk), throws again from its destructor, which ends the process.
  std::ostringstream bytes;
  try {
    torch::serialize::OutputArchive archive;
    opt.save(archive);
    archive.save_to(bytes);
  } catch (const c10::Error& e) {
    fail_file(path,
              std::string("could not write the optimizer state: ") + e.what_without_backtrace());
  }
  write_file_atomically(path, bytes.str());
}

void load_optimizer(torch::optim::Optimizer& opt, const fs::path& path, torch::Device device) {
  if (!fs::is_regular_file(path)) fail_file(path, "missing: the checkpoint's optimizer state");
  torch::load(opt, path.string(), device);
}

namespace {

constexpr const char* kCheckpointPrefix = "checkpoint-";

// The mark of this process's host in temporary names (".NAME.tmp-HOST-"), as
// temp_beside makes them.
std::string temp_mark(const fs::path& dir) {
  const auto name = temp_beside(dir / "x").filename().string();  // ".x.tmp-HOST-PID"
  return name.substr(2, name.rfind('-') - 1);                    // ".tmp-HOST-"
}

constexpr const char* kRunFile = "run.json";

// Whether the checkpoint folder `folder` says (its run.json) it was written by `run`.
bool folder_of_run(const fs::path& folder, const std::string& run) {
  std::error_code ec;
  if (run.empty() || !fs::is_regular_file(folder / kRunFile, ec)) return false;
  try {
    const auto j = read_json_file(folder / kRunFile);
    return j.is_object() && j.value("run", std::string()) == run;
  } catch (const std::exception&) {
    return false;
  }
}

// Whether the sample sheet `file` says (its "# kinora_run" comment) it was
// written by `run`.
bool sheet_of_run(const fs::path& file, const std::string& run) {
  if (run.empty()) return false;
  std::ifstream f(file, std::ios::binary);
  std::string line;
  for (int i = 0; i < 3 && std::getline(f, line); ++i)
    if (line == "# kinora_run " + run) return true;
  return false;
}

// Checkpoint folders in the making that a process of this host left when it
// was killed (its PID no longer runs), and checkpoint folders of this run
// that no state.json names (renamed into place, then killed before
// state.json named them). A folder the run did not write is left alone.
void remove_stale_checkpoints(const fs::path& dir, const fs::path& current,
                              const std::string& run) {
  const auto mark = temp_mark(dir);
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(dir, ec)) {
    const auto name = e.path().filename().string();
    std::error_code ignored;
    if (!e.is_directory(ignored) || e.is_symlink(ignored)) continue;
    if (starts_with(name, kCheckpointPrefix) && e.path() != current) {
      if (folder_of_run(e.path(), run)) fs::remove_all(e.path(), ignored);
      continue;
    }
    const auto at = name.find(mark);
    if (!starts_with(name, std::string(".") + kCheckpointPrefix) || at == std::string::npos)
      continue;
    const auto pid = std::atoll(name.c_str() + at + mark.size());
    if (pid > 0 && pid != ::getpid() && ::kill(static_cast<pid_t>(pid), 0) != 0 && errno == ESRCH)
      fs::remove_all(e.path(), ignored);
  }
  remove_stale_temporaries(dir);
}

// A random name: 16 hex digits.
std::string new_run_id() {
  std::random_device rd;
  const uint64_t v = (static_cast<uint64_t>(rd()) << 32) ^ rd();
  char buf[17];
  std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(v));
  return buf;
}

// The run a file says it was written by ("" when it says none).
std::string recorded_run(const fs::path& file) {
  if (file.extension() == ".safetensors") {
    const auto ck = io::Checkpoint::open(file);
    const auto it = ck.metadata().find("kinora_run");
    return it == ck.metadata().end() ? "" : it->second;
  }
  const auto j = read_json_file(file);
  return j.is_object() && j.contains("run") && j["run"].is_string() ? j["run"].get<std::string>()
                                                                    : "";
}

// recorded_run, or "" for a file that cannot be read as one.
std::string recorded_run_or_none(const fs::path& file) {
  try {
    return recorded_run(file);
  } catch (const std::exception&) {
    return {};
  }
}

}  // namespace

StageState open_state(const fs::path& dir) {
  StageState s;
  s.dir = dir;
  s.resuming = fs::exists(dir / "state.json");
  if (!s.resuming) {
    // A run of this stage stopped before its first checkpoint left run.json.
    std::error_code ec;
    if (fs::is_regular_file(dir / kRunFile, ec)) {
      try {
        s.run_id = recorded_run(dir / kRunFile);
      } catch (const std::exception&) {
        s.run_id.clear();
      }
      s.orphaned = !s.run_id.empty();
    }
    if (s.run_id.empty()) s.run_id = new_run_id();
    return s;
  }
  s.json = read_json(dir / "state.json");
  if (!s.json.is_object() || !s.json.contains("step"))
    fail_file(dir / "state.json", "not a stage's state (no \"step\")");
  // Runs from before checkpoints had folders keep their files in the state folder.
  s.checkpoint =
      s.json.contains("checkpoint") ? dir / s.json.at("checkpoint").get<std::string>() : dir;
  if (!fs::is_directory(s.checkpoint))
    fail_file(s.checkpoint, "missing: the checkpoint " + (dir / "state.json").string() + " names");
  s.run_id = s.json.value("run", std::string());
  s.unmarked_outputs = s.run_id.empty() || s.json.value("unmarked_outputs", false);
  if (s.run_id.empty()) s.run_id = new_run_id();
  return s;
}

void check_state_folder(const StageState& s, bool overwrite) {
  std::error_code ec;
  if (s.resuming || overwrite || !fs::is_directory(s.dir, ec)) return;
  std::vector<std::string> foreign;
  for (const auto& e : fs::directory_iterator(s.dir, ec)) {
    const auto name = e.path().filename().string();
    std::error_code ignored;
    if (starts_with(name, kCheckpointPrefix)) {
      if (e.is_symlink(ignored) || !e.is_directory(ignored) || !folder_of_run(e.path(), s.run_id))
        foreign.push_back(name);
    } else if (starts_with(name, "samples-") && e.path().extension() == ".ppm") {
      if (!sheet_of_run(e.path(), s.run_id)) foreign.push_back(name);
    }
  }
  if (foreign.empty()) return;
  std::sort(foreign.begin(), foreign.end());
  std::string names;
  for (const auto& n : foreign) names.append(names.empty() ? "" : ", ").append(n);
  fail_file(s.dir, std::string("holds ")
                       .append(names)
                       .append(", named like this stage's checkpoints or sample sheets, and this "
                               "stage starts afresh (there is no ")
                       .append((s.dir / "state.json").string())
                       .append("): they were not written by this run; move them away, or give "
                               "--overwrite to start beside them (they are left alone)"));
}

void begin_state(const StageState& s) {
  fs::create_directories(s.dir);
  remove_stale_checkpoints(s.dir, s.resuming ? s.checkpoint : fs::path(), s.run_id);
  if (!s.resuming) write_json(s.dir / kRunFile, {{"run", s.run_id}});
}

fs::path sample_file(const StageState& s, int64_t step) {
  const auto base = std::string("samples-").append(std::to_string(step));
  auto path = s.dir / (base + ".ppm");
  std::error_code ec;
  for (int k = 2; fs::exists(fs::symlink_status(path, ec)) && !sheet_of_run(path, s.run_id); ++k)
    path = s.dir / std::string(base).append("-").append(std::to_string(k)).append(".ppm");
  return path;
}

void check_config(const StageState& s, const nlohmann::json& config) {
  if (!s.resuming || !s.json.contains("config")) return;
  const auto& had = s.json.at("config");
  for (const auto& [option, value] : config.items())
    if (had.contains(option) && had[option] != value)
      fail_file(s.dir / "state.json",
                "this run was started with " + option + " " + had[option].dump() + " (now " +
                    value.dump() + "), which cannot change when it resumes: give " + option + " " +
                    had[option].dump() + ", or another --run folder for a new run");
}

void check_output(const fs::path& file, const StageState& s, bool overwrite) {
  std::error_code ec;
  if (overwrite || !fs::exists(fs::symlink_status(file, ec))) return;
  const std::string hint = "; give --overwrite to replace it, or another --run folder";
  const auto ext = file.extension();
  const bool log = ext != ".safetensors" && ext != ".json";
  // A fresh start over a run stopped before its first checkpoint: its logs,
  // and the files that name it, are this run's.
  if (!s.resuming && s.orphaned && (log || recorded_run_or_none(file) == s.run_id)) return;
  if (!s.resuming)
    fail_file(file, "exists, and this stage starts afresh (there is no " +
                        (s.dir / "state.json").string() + " to resume): it was not written by " +
                        "this run" + hint);
  if (log) return;  // a log: the run's own
  const auto had = recorded_run(file);
  if (had == s.run_id || (had.empty() && s.unmarked_outputs)) return;
  fail_file(file, "was not written by this run (" + (s.dir / "state.json").string() +
                      (had.empty() ? std::string(" names it; the file names no run)")
                                   : std::string(" names another run)")) +
                      hint);
}

CheckpointWriter::CheckpointWriter(const StageState& s, int64_t step)
    : name_([&] {
        // Another name than the current checkpoint's (a stage saving again
        // at the step it resumed at), and than a folder or file this run
        // did not write.
        const auto base = std::string(kCheckpointPrefix).append(std::to_string(step));
        std::string n = base;
        std::error_code ec;
        for (int k = 2;
             (s.resuming && s.checkpoint == s.dir / n) ||
             (fs::exists(fs::symlink_status(s.dir / n, ec)) && !folder_of_run(s.dir / n, s.run_id));
             ++k)
          n = std::string(base).append("-").append(std::to_string(k));
        return n;
      }()),
      dir_(s.dir),
      kept_(s.resuming ? std::string("the checkpoint of step ")
                             .append(s.json.at("step").dump())
                             .append(" is kept")
                       : std::string("no checkpoint was written")),
      tmp_(s.dir / name_) {
  fs::create_directories(s.dir);
  std::error_code ec;
  fs::remove_all(tmp_.path(), ec);
  fs::create_directory(tmp_.path(), ec);
  if (ec) fail_file(tmp_.path(), "cannot create the checkpoint's folder: " + ec.message());
  write("run.json", [&](const fs::path& f) { write_json(f, {{"run", s.run_id}, {"step", step}}); });
}

void CheckpointWriter::write(const std::string& name,
                             const std::function<void(const fs::path&)>& writer) {
  try {
    writer(tmp_.path() / name);
  } catch (const Error& e) {
    // "TMP/NAME: why" said of the file the checkpoint would hold.
    std::string why = e.what();
    const auto tmp = (tmp_.path() / name).string();
    if (starts_with(why, tmp + ": ")) why.erase(0, tmp.size() + 2);
    fail_file(dir_ / name_ / name, "could not write it: " + why + "; " + kept_);
  }
}

void CheckpointWriter::commit(StageState& s, nlohmann::json state, const nlohmann::json& config) {
  const auto folder = s.dir / name_;
  std::error_code ec;
  if (folder_of_run(folder, s.run_id))
    fs::remove_all(folder, ec);  // one no state.json names (a kill before it did)
  tmp_.commit(true);
  state["checkpoint"] = name_;
  state["run"] = s.run_id;
  if (s.unmarked_outputs) state["unmarked_outputs"] = true;
  if (!config.is_null()) state["config"] = config;
  write_json(s.dir / "state.json", state);
  // The previous checkpoint: a folder, or (a run from before) files in the
  // state folder under the names the new one has.
  const auto previous = s.resuming ? s.checkpoint : fs::path();
  if (!previous.empty() && previous == s.dir) {
    for (const auto& e : fs::directory_iterator(folder, ec))
      fs::remove(s.dir / e.path().filename(), ec);
  } else if (!previous.empty() && previous != folder) {
    fs::remove_all(previous, ec);
  }
  s.resuming = true, s.json = state, s.checkpoint = folder;
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

LossLog open_log(const fs::path& path, const StageState& s, int64_t step,
                 const std::string& header) {
  if (s.resuming) {
    truncate_log(path, step);
  } else {
    std::error_code ec;
    fs::remove(path, ec);
  }
  return LossLog(path, header);
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
