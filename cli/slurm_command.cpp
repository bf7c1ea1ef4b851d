// `kinora slurm submit PATH... --tasks N`: a batch as a Slurm job array, each
// task `kinora batch … --shard $SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT`.
// The shards partition the presets, finished outputs are skipped and every
// output appears only complete, so the array needs no coordinator and a
// resubmission renders only what is missing.
#include "cli/slurm_command.h"

#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <memory>
#include <regex>
#include <sstream>
#include <thread>

#include "base/error.h"
#include "base/files.h"
#include "base/strings.h"
#include "cli/batch.h"
#include "media/output.h"

namespace kinora::cli {
namespace fs = std::filesystem;

namespace {

struct SlurmArgs {
  std::vector<std::string> paths;
  int tasks = 1;
  int gpus_per_task = 0, cpus_per_task = 0;
  std::string mem, time, partition, job_name = "kinora-batch";
  std::vector<std::string> sbatch_args;
  Placement placement;
  std::string log_dir = "kinora-slurm-logs";
  bool wait = false, dry_run = false;
};

// A word for the shell, single-quoted.
std::string quoted(const std::string& s) {
  std::string out = "'";
  for (const char c : s) out += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return out + "'";
}

fs::path own_executable() {
  std::error_code ec;
  const auto p = fs::read_symlink("/proc/self/exe", ec);
  if (ec) throw Error("slurm: cannot find this program's path (/proc/self/exe)");
  return p;
}

// `kinora batch --status` over what the array renders: the same presets,
// folders and logs.
std::string status_command(const SlurmArgs& a, const std::vector<fs::path>& paths,
                           const fs::path& log_dir) {
  std::string command = "kinora batch --status";
  for (const auto& p : paths) command += " " + quoted(p.string());
  if (!a.placement.output_dir.empty())
    command += " --output-dir " + quoted(fs::absolute(a.placement.output_dir).string());
  if (!a.placement.models_dir.empty())
    command += " --models-dir " + quoted(fs::absolute(a.placement.models_dir).string());
  return command + " --log-dir " + quoted(log_dir.string());
}

// The sbatch script: the resources as #SBATCH lines, then one task's batch.
std::string sbatch_script(const SlurmArgs& a, const fs::path& kinora,
                          const std::vector<fs::path>& paths, const fs::path& log_dir,
                          const std::string& presets) {
  std::ostringstream s;
  s << "#!/bin/bash\n"
    << "# A Kinora batch as a Slurm job array, written by `kinora slurm submit`.\n"
    << "# Task i of N renders the presets k with k mod N = i; outputs that exist are\n"
    << "# skipped and every output appears only complete, so submitting this script\n"
    << "# again renders only what is missing. What is done, missing or failed:\n"
    << "#   " << status_command(a, paths, log_dir) << "\n"
    << "# A task that finds other presets than were submitted (one added or removed\n"
    << "# since: every share shifts) renders nothing and fails: submit again.\n"
    << "#SBATCH --job-name=" << a.job_name << "\n"
    << "#SBATCH --array=0-" << a.tasks - 1 << "\n"
    << "#SBATCH --output=" << (log_dir / "kinora-%A_%a.out").string() << "\n";
  if (a.cpus_per_task > 0) s << "#SBATCH --cpus-per-task=" << a.cpus_per_task << "\n";
  if (a.gpus_per_task > 0) s << "#SBATCH --gpus-per-task=" << a.gpus_per_task << "\n";
  if (!a.mem.empty()) s << "#SBATCH --mem=" << a.mem << "\n";
  if (!a.time.empty()) s << "#SBATCH --time=" << a.time << "\n";
  if (!a.partition.empty()) s << "#SBATCH --partition=" << a.partition << "\n";
  for (const auto& x : a.sbatch_args) s << "#SBATCH " << x << "\n";
  s << "set -euo pipefail\n"
    << "# The cores Slurm gave this task (LibTorch's threads), and its GPU: Slurm sets\n"
    << "# CUDA_VISIBLE_DEVICES, so the task's cuda:0 is the GPU it was given.\n"
    << "if [[ -n \"${SLURM_CPUS_PER_TASK:-}\" ]]; then export KINORA_THREADS=$SLURM_CPUS_PER_TASK; "
       "fi\n"
    << "exec " << quoted(kinora.string()) << " batch \\\n"
    << "  --shard \"$SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT\" \\\n"
    << "  --presets-fingerprint " << presets << " \\\n";
  if (!a.placement.output_dir.empty())
    s << "  --output-dir " << quoted(fs::absolute(a.placement.output_dir).string()) << " \\\n";
  if (!a.placement.models_dir.empty())
    s << "  --models-dir " << quoted(fs::absolute(a.placement.models_dir).string()) << " \\\n";
  if (!a.placement.device.empty())
    s << "  --device " << quoted(a.placement.device) << " \\\n";
  else if (a.gpus_per_task > 0)
    s << "  --device cuda \\\n";
  if (!a.placement.block_swap.empty())
    s << "  --block-swap " << quoted(a.placement.block_swap) << " \\\n";
  if (a.placement.fp8) s << "  --fp8 \\\n";
  if (a.placement.no_fp8) s << "  --no-fp8 \\\n";
  for (std::size_t i = 0; i < paths.size(); ++i)
    s << "  " << quoted(paths[i].string()) << (i + 1 < paths.size() ? " \\\n" : "\n");
  return s.str();
}

// Runs a command (argv[0] found on PATH), its standard output returned;
// throws kinora::Error with its output when it fails or cannot start.
std::string run(const std::vector<std::string>& argv) {
  std::string cmd;
  for (const auto& a : argv) cmd.append(cmd.empty() ? "" : " ").append(quoted(a));
  std::FILE* p = ::popen((cmd + " 2>&1").c_str(), "r");
  if (!p) throw Error("slurm: cannot run " + argv[0]);
  std::string out;
  char buf[4096];
  while (std::size_t n = std::fread(buf, 1, sizeof buf, p)) out.append(buf, n);
  const int status = ::pclose(p);
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    while (!out.empty() && out.back() == '\n') out.pop_back();
    throw Error("slurm: " + argv[0] + " failed" + (out.empty() ? std::string() : ": " + out) +
                (WIFEXITED(status) && WEXITSTATUS(status) == 127
                     ? " (is Slurm's client installed, and SLURM_CONF set?)"
                     : ""));
  }
  return out;
}

// What each task of an array ended as, from `scontrol show job -o ID` (one
// line per task while the controller keeps the records): task → "STATE EXIT".
std::map<std::string, std::string> task_states(const std::string& job) {
  std::map<std::string, std::string> out;
  std::istringstream in(run({"scontrol", "show", "job", "-o", job}));
  for (std::string line; std::getline(in, line);) {
    auto field = [&](const std::string& key) {
      const auto at = line.find(" " + key + "=");
      if (at == std::string::npos) return std::string();
      const auto from = at + key.size() + 2;
      return line.substr(from, line.find(' ', from) - from);
    };
    out[field("ArrayTaskId")] = field("JobState") + " " + field("ExitCode");
  }
  return out;
}

// sbatch splits an #SBATCH line at white space and drops quotes: a value that
// holds either cannot be written there.
void check_directive_value(const std::string& what, const std::string& v) {
  if (v.find_first_of(" \t\n\"'") != std::string::npos)
    throw Error("slurm submit: " + what + " '" + v +
                "' holds a space or a quote, which an #SBATCH line cannot carry; choose "
                "another");
}

int submit(SlurmArgs a) {
  if (a.tasks < 1) throw Error("slurm submit: --tasks must be at least 1");
  check_directive_value("--log-dir", fs::absolute(a.log_dir).string());
  check_directive_value("--job-name", a.job_name);
  for (const auto& x : {a.mem, a.time, a.partition}) check_directive_value("a resource", x);
  for (const auto& x : a.sbatch_args) {
    check_directive_value("--sbatch-arg", x);
    if (x.empty() || x[0] != '-')
      throw Error("slurm submit: --sbatch-arg '" + x +
                  "' is no sbatch option; give one as a single word, its value after '=' "
                  "(--sbatch-arg=--qos=high)");
  }
  // As sbatch reads them, so that a typo fails here rather than in the queue.
  if (!a.mem.empty() && !std::regex_match(a.mem, std::regex("[0-9]+[KMGTkmgt]?")))
    throw Error("slurm submit: --mem '" + a.mem +
                "': expected a size as sbatch takes it: a number of megabytes, or with K, M, G "
                "or T (64G)");
  if (!a.time.empty() &&
      !std::regex_match(a.time, std::regex("([0-9]+-)?[0-9]+(:[0-9]+){0,2}|[Uu][Nn][Ll][Ii][Mm]"
                                           "[Ii][Tt][Ee][Dd]|[Ii][Nn][Ff][Ii][Nn][Ii][Tt][Ee]")))
    throw Error("slurm submit: --time '" + a.time +
                "': expected a time as sbatch takes it: MINUTES, MINUTES:SECONDS, "
                "HOURS:MINUTES:SECONDS, DAYS-HOURS[:MINUTES[:SECONDS]] or UNLIMITED");
  // Every preset checked first, as `kinora batch` checks them: a batch with
  // an invalid preset is not submitted.
  auto entries = collect_presets(
      a.paths, std::cerr,
      a.placement.models_dir.empty() ? "" : fs::absolute(a.placement.models_dir).string());
  if (entries.empty()) throw Error("slurm submit: no presets found in the paths given");
  validate_entries(entries, a.placement);
  int invalid = 0;
  for (const auto& e : entries)
    if (!e.preset) ++invalid, std::cerr << "kinora: invalid: " << e.error << "\n";
  if (invalid)
    throw Error("slurm submit: " + std::to_string(invalid) +
                " invalid preset(s); fix or remove them (kinora batch --dry-run lists them)");
  std::size_t done = 0;
  for (const auto& e : entries) {
    // The user's own file at that name, or one that no longer reads as a
    // render: a task would fail it after queueing.
    using State = ExistingOutput::State;
    const auto out = e.preset->output_path();
    const auto existing = existing_output(out, *e.preset);
    if (existing.state == State::none) continue;
    if (existing.state == State::foreign || existing.state == State::damaged)
      throw Error("slurm submit: " + e.source + ": its output " + existing.explain(out));
    ++done;
  }
  if (done == entries.size()) {
    std::cerr << "kinora: all " << done << " outputs exist; nothing to submit\n";
    return 0;
  }
  if (a.tasks > static_cast<int>(entries.size())) {
    const auto n = static_cast<long long>(entries.size());
    std::cerr << "kinora: " << counted(n, "preset", "presets") << ": "
              << counted(n, "task", "tasks") << ", not " << a.tasks << "\n";
    a.tasks = static_cast<int>(entries.size());
  }
  std::vector<fs::path> paths;
  for (const auto& p : a.paths) paths.push_back(fs::absolute(p).lexically_normal());
  const fs::path log_dir = fs::absolute(a.log_dir).lexically_normal();
  const auto script =
      sbatch_script(a, own_executable(), paths, log_dir, entries_fingerprint(entries));
  if (a.dry_run) {
    std::cout << script;
    return 0;
  }
  fs::create_directories(log_dir);
  char stamp[32];
  const auto now = std::time(nullptr);
  std::strftime(stamp, sizeof stamp, "%Y%m%d-%H%M%S", std::localtime(&now));
  const fs::path file = log_dir / (std::string("kinora-batch-") + stamp + "-" +
                                   std::to_string(::getpid()) + ".sbatch");
  write_file_atomically(file, script, /*replace=*/false);
  std::string job;
  try {
    job = run({"sbatch", "--parsable", file.string()});
  } catch (const Error& e) {
    std::error_code ec;
    fs::remove(file, ec);  // not submitted: the script would only mislead
    throw Error(std::string(e.what()) + (std::getenv("SLURM_CONF")
                                             ? ""
                                             : " (no SLURM_CONF is set: on a cluster's login node "
                                               "Slurm finds its configuration itself; elsewhere "
                                               "set SLURM_CONF to its slurm.conf)"));
  }
  job = job.substr(0, job.find_first_of(";\n"));
  std::cout << job << std::endl;
  std::cerr << "kinora: submitted job array " << job << " (" << counted(a.tasks, "task", "tasks")
            << ", " << counted(static_cast<long long>(entries.size()), "preset", "presets")
            << "), script " << file.string() << "\n"
            << "  follow:   squeue -j " << job
            << "   (task logs: " << (log_dir / ("kinora-" + job + "_<task>.out")).string() << ")\n"
            << "  status:   " << status_command(a, paths, log_dir) << "\n"
            << "  resubmit: the same command again renders only what is missing\n";
  if (!a.wait) return 0;
  // Until no task of the array is pending or running.
  while (!run({"squeue", "-h", "-j", job, "-o", "%i"}).empty())
    std::this_thread::sleep_for(std::chrono::seconds(2));
  int bad = 0;
  for (const auto& [task, state] : task_states(job)) {
    const bool ok = state.rfind("COMPLETED 0:0", 0) == 0;
    bad += !ok;
    std::cerr << "kinora: task " << task << ": " << state << "\n";
  }
  std::cerr << "kinora: job array " << job << (bad ? " had failed tasks" : " done") << "\n";
  return bad ? 1 : 0;
}

}  // namespace

std::function<int()> add_slurm_command(CLI::App& app) {
  auto a = std::make_shared<SlurmArgs>();
  auto* slurm = app.add_subcommand("slurm", "Render a batch on a Slurm cluster");
  slurm->require_subcommand(1);
  auto* sub = slurm->add_subcommand(
      "submit",
      "Submit a batch as a job array: each task renders its shard of the presets (kinora batch "
      "--shard), skipping outputs that exist; prints the job id");
  sub->add_option("paths", a->paths,
                  "preset files, folders of them, or JSON lists (on a shared "
                  "filesystem)")
      ->required();
  sub->add_option("--tasks", a->tasks, "array tasks (at most one per preset)")
      ->check(CLI::Range(1, 100000))
      ->capture_default_str();
  sub->add_option("--gpus-per-task", a->gpus_per_task, "GPUs per task (renders on cuda)")
      ->check(CLI::Range(0, 64));
  sub->add_option("--cpus-per-task", a->cpus_per_task, "CPU cores per task (its threads)")
      ->check(CLI::Range(0, 1024));
  sub->add_option("--mem", a->mem, "memory per node, as sbatch takes it (64G)");
  sub->add_option("--time", a->time, "time limit per task, as sbatch takes it (2:00:00)");
  sub->add_option("--partition", a->partition, "the partition");
  sub->add_option("--job-name", a->job_name, "the job's name")->capture_default_str();
  sub->add_option("--sbatch-arg", a->sbatch_args,
                  "any other sbatch option, passed through as an #SBATCH line (repeat)");
  sub->add_option("--output-dir", a->placement.output_dir,
                  "write outputs inside this folder (as kinora batch --output-dir)")
      ->check(CLI::ExistingDirectory);
  sub->add_option("--models-dir", a->placement.models_dir,
                  "find models named by presets in this ComfyUI models folder")
      ->check(CLI::ExistingDirectory);
  sub->add_option("--device", a->placement.device,
                  "the tasks' device (default: cuda with "
                  "--gpus-per-task, else each preset's)");
  sub->add_option("--block-swap", a->placement.block_swap,
                  "the tasks' block swap: auto or a count of the denoiser's blocks kept in host "
                  "memory (as kinora batch --block-swap; default: each preset's)")
      ->check(block_swap_validator());
  auto* fp8 =
      sub->add_flag("--fp8", a->placement.fp8,
                    "the tasks multiply in FP8 (as kinora batch --fp8; default: each preset's)");
  sub->add_flag("--no-fp8", a->placement.no_fp8, "the tasks do not (as kinora batch --no-fp8)")
      ->excludes(fp8);
  sub->add_option("--log-dir", a->log_dir,
                  "where the script and the task logs go (on the shared filesystem)")
      ->capture_default_str();
  sub->add_flag("--wait", a->wait,
                "wait for the array; exit non-zero when a task did not complete");
  sub->add_flag("--dry-run", a->dry_run, "print the script, submit nothing");
  return [=]() -> int {
    if (!*slurm) return -1;
    try {
      return submit(*a);
    } catch (const std::exception& e) {
      std::cerr << "kinora: " << e.what() << "\n";
      return 1;
    }
  };
}

}  // namespace kinora::cli
