#pragma once
// Runs reference cases and reports one line per (case, weights file).
#include <filesystem>
#include <iosfwd>
#include <optional>
#include <string>
#include <vector>

#include "conformance/components.h"

namespace kinora::conformance {

enum class Status { Pass, Fail, Skip };

struct Result {
  Status status = Status::Fail;
  std::string case_name;  // file name of the case
  std::string component;
  std::string weights;  // file name, or "-" for cases without weights
  double worst_rel_err = 0.0;
  std::string detail;  // why it failed or was skipped
};

// The bound of the DiT cases with FP8 products (RunOptions::fp8): per-tensor
// E4M3 quantization of weights and inputs.
inline constexpr double kFp8Bound = 2e-2;

struct RunnerOptions {
  std::optional<std::filesystem::path> weights_dir;  // default: the case's folder
  bool allow_skip = false;
  RunOptions run;
};

// ‖out − ref‖₂ / ‖ref‖₂ in float64 (‖out‖₂ when ref is all zeros).
double relative_error(const torch::Tensor& out, const torch::Tensor& ref);

// Every *.case.safetensors under the given files and folders, sorted. Throws
// kinora::Error for a path that does not exist.
std::vector<std::filesystem::path> collect_cases(const std::vector<std::filesystem::path>& paths);

// The weights file a case names and its siblings with the same stem and a layout
// suffix (wan21_dit_tiny.comfy.safetensors …), the named file first.
std::vector<std::filesystem::path> weights_variants(const std::filesystem::path& dir,
                                                    const std::string& weights);

std::vector<Result> run_case(const std::filesystem::path& case_path, const RunnerOptions& options);

std::string format_result(const Result& r);

// Runs everything, prints a line per result and the closing "N passed, M failed"
// line; returns the process exit code (0 only when nothing failed).
int run_all(const std::vector<std::filesystem::path>& paths, const RunnerOptions& options,
            std::ostream& out);

}  // namespace kinora::conformance
