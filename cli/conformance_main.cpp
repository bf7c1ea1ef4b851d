// kinora-conformance: runs the reference cases (*.case.safetensors) against
// Kinora's components and prints PASS / FAIL / SKIP per case and weights file.
#include <CLI/CLI.hpp>

#include <iostream>

#include "base/device.h"
#include "base/runtime.h"
#include "conformance/runner.h"

int main(int argc, char** argv) {
  CLI::App app{"Run Kinora against reference cases (*.case.safetensors)", "kinora-conformance"};
  app.set_version_flag("--version", kinora::version_string());
  std::vector<std::string> paths;
  std::string weights_dir, precision = "fp32", device = "cpu";
  bool allow_skip = false;
  kinora::conformance::RunnerOptions options;
  app.add_option("paths", paths, "case files and folders holding them")->required();
  app.add_option("--weights-dir", weights_dir,
                 "folder of the weights files (default: each case's folder)")
      ->check(CLI::ExistingDirectory);
  app.add_flag("--allow-skip", allow_skip,
               "do not count cases of unimplemented components as failures");
  app.add_option("--precision", precision,
                 "compute precision of the models: fp32 or bf16 (bf16 is held to 2e-2)")
      ->check(CLI::IsMember({"fp32", "bf16"}));
  app.add_option("--device", device, "where the models run: auto, cpu, cuda or cuda:N")
      ->capture_default_str();
  app.add_flag("--fp8", options.run.fp8,
               "the DiTs' block layers multiply in FP8 (E4M3, per-tensor scales; held to " +
                   std::to_string(kinora::conformance::kFp8Bound).substr(0, 4) + ")");
  CLI11_PARSE(app, argc, argv);
  kinora::configure_threads();

  if (!weights_dir.empty()) options.weights_dir = weights_dir;
  options.allow_skip = allow_skip;
  options.run.precision = kinora::layers::parse_precision(precision);
  try {
    options.run.device = kinora::resolve_device(device);
  } catch (const std::exception& e) {
    std::cerr << "kinora-conformance: " << e.what() << "\n";
    return 2;
  }
  std::vector<std::filesystem::path> ps(paths.begin(), paths.end());
  // Paths that hold no case are said as the other tools say an error, on
  // stderr ("kinora-conformance: nosuch: no such file or folder"), before the
  // run's report begins.
  try {
    if (kinora::conformance::collect_cases(ps).empty()) {
      std::cerr << "kinora-conformance: no *.case.safetensors found in";
      for (const auto& p : paths) std::cerr << " " << p;
      std::cerr << "\n";
      return 2;
    }
  } catch (const std::exception& e) {
    std::cerr << "kinora-conformance: " << e.what() << "\n";
    return 2;
  }
  return kinora::conformance::run_all(ps, options, std::cout);
}
