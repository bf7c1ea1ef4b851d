#include "conformance/runner.h"

#include <algorithm>
#include <cstdio>
#include <ostream>

#include "base/error.h"

namespace kinora::conformance {
namespace fs = std::filesystem;

namespace {
bool is_case_file(const fs::path& p) {
  const auto name = p.filename().string();
  const std::string suffix = ".case.safetensors";
  return name.size() > suffix.size() &&
         name.compare(name.size() - suffix.size(), suffix.size(), suffix) == 0;
}
const char* status_word(Status s) {
  switch (s) {
    case Status::Pass:
      return "PASS";
    case Status::Skip:
      return "SKIP";
    case Status::Fail:
      break;
  }
  return "FAIL";
}
}  // namespace

double relative_error(const torch::Tensor& out, const torch::Tensor& ref) {
  const auto o = out.detach().to(torch::kCPU, torch::kFloat64);
  const auto r = ref.detach().to(torch::kCPU, torch::kFloat64);
  const double diff = (o - r).norm().item<double>();
  const double denom = r.norm().item<double>();
  return denom > 0 ? diff / denom : diff;
}

std::vector<fs::path> collect_cases(const std::vector<fs::path>& paths) {
  std::vector<fs::path> cases;
  for (const auto& p : paths) {
    std::error_code ec;
    if (fs::is_directory(p, ec)) {
      for (const auto& e : fs::recursive_directory_iterator(p))
        if (e.is_regular_file() && is_case_file(e.path())) cases.push_back(e.path());
    } else if (fs::is_regular_file(p, ec)) {
      cases.push_back(p);
    } else {
      fail_file(p, "no such file or folder");
    }
  }
  std::sort(cases.begin(), cases.end());
  cases.erase(std::unique(cases.begin(), cases.end()), cases.end());
  return cases;
}

std::vector<fs::path> weights_variants(const fs::path& dir, const std::string& weights) {
  std::vector<fs::path> out;
  const std::string ext = ".safetensors";
  if (weights.size() <= ext.size() ||
      weights.compare(weights.size() - ext.size(), ext.size(), ext) != 0)
    return {dir / weights};
  const std::string stem = weights.substr(0, weights.size() - ext.size());
  out.push_back(dir / weights);
  std::vector<fs::path> siblings;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(dir, ec)) {
    const auto name = e.path().filename().string();
    // stem + "." + suffix + ".safetensors", where the suffix is one word (a layout).
    if (name.size() <= stem.size() + 1 + ext.size() || name.rfind(stem + ".", 0) != 0) continue;
    if (name.compare(name.size() - ext.size(), ext.size(), ext) != 0) continue;
    const std::string suffix =
        name.substr(stem.size() + 1, name.size() - stem.size() - 1 - ext.size());
    if (suffix.empty() || suffix.find('.') != std::string::npos || suffix == "case") continue;
    siblings.push_back(e.path());
  }
  std::sort(siblings.begin(), siblings.end());
  out.insert(out.end(), siblings.begin(), siblings.end());
  return out;
}

namespace {

// Compares produced outputs against the case: integer outputs exactly, floating
// ones by relative error against `bound`.
void compare(const Case& k, const Outputs& got, double bound, Result& r) {
  r.status = Status::Pass;
  for (const auto& [name, ref] : k.outputs) {
    const auto it = got.find(name);
    auto fail = [&](const std::string& why) {
      r.status = Status::Fail;
      if (!r.detail.empty()) r.detail += "; ";
      r.detail += name + ": " + why;
    };
    if (it == got.end()) {
      fail("not produced");
      continue;
    }
    const auto out = it->second.to(torch::kCPU);
    if (out.sizes() != ref.sizes()) {
      fail("shape " + c10::str(out.sizes()) + ", expected " + c10::str(ref.sizes()));
      continue;
    }
    if (!torch::isFloatingType(ref.scalar_type())) {
      if (!torch::equal(out.to(torch::kCPU, ref.scalar_type()), ref)) {
        const auto mismatches =
            (out.to(torch::kCPU, ref.scalar_type()) != ref).sum().item<int64_t>();
        fail(std::to_string(mismatches) + " integer values differ (must match exactly)");
      }
      continue;
    }
    const double err = relative_error(out, ref);
    r.worst_rel_err = std::max(r.worst_rel_err, err);
    if (!(err <= bound)) {  // NaN fails too
      char buf[96];
      std::snprintf(buf, sizeof buf, "relative error %.3g > %.3g", err, bound);
      fail(buf);
    }
  }
}

}  // namespace

std::vector<Result> run_case(const fs::path& case_path, const RunnerOptions& options) {
  Result base;
  base.case_name = case_path.filename().string();
  base.weights = "-";
  Case k;
  try {
    k = load_case(case_path);
  } catch (const std::exception& e) {
    base.detail = e.what();
    return {base};
  }
  base.component = k.component;
  const auto component = find_component(k.component);
  if (!component) {
    base.status = Status::Skip;
    base.weights = k.weights.empty() ? "-" : k.weights;
    base.detail = "component '" + k.component + "' is not implemented yet";
    return {base};
  }
  // A reduced-precision mode is held to its own, looser bound (models only;
  // FP8 products: the DiTs).
  double bound = options.run.precision == Precision::BF16 && component->needs_weights
                     ? std::max(k.rtol, 2e-2)
                     : k.rtol;
  if (options.run.fp8 && component->fp8) bound = std::max(bound, kFp8Bound);

  std::vector<fs::path> variants;
  if (component->needs_weights) {
    if (k.weights.empty()) {
      base.detail = "case names no weights file";
      return {base};
    }
    variants = weights_variants(options.weights_dir.value_or(case_path.parent_path()), k.weights);
  } else {
    variants.push_back({});
  }

  std::vector<Result> results;
  for (const auto& w : variants) {
    Result r = base;
    if (!w.empty()) r.weights = w.filename().string();
    try {
      if (!w.empty() && !fs::exists(w)) fail_file(w, "weights file not found");
      compare(k, component->run(k, w, options.run), bound, r);
    } catch (const std::exception& e) {
      r.status = Status::Fail;
      r.detail = e.what();
    }
    results.push_back(std::move(r));
  }
  return results;
}

std::string format_result(const Result& r) {
  char err[32];
  std::snprintf(err, sizeof err, "%.3g", r.worst_rel_err);
  std::string line = std::string(status_word(r.status)) + "  " + r.case_name + "  " + r.weights +
                     "  " + (r.status == Status::Skip ? std::string("-") : std::string(err));
  if (!r.detail.empty()) line += "  (" + r.detail + ")";
  return line;
}

int run_all(const std::vector<fs::path>& paths, const RunnerOptions& options, std::ostream& out) {
  int passed = 0, failed = 0, skipped = 0;
  std::vector<fs::path> cases;
  try {
    cases = collect_cases(paths);
  } catch (const std::exception& e) {
    out << "error: " << e.what() << "\n";
    return 2;
  }
  if (cases.empty()) {
    out << "error: no *.case.safetensors found\n";
    return 2;
  }
  for (const auto& c : cases) {
    for (const auto& r : run_case(c, options)) {
      out << format_result(r) << "\n" << std::flush;
      if (r.status == Status::Pass)
        ++passed;
      else if (r.status == Status::Skip && options.allow_skip)
        ++skipped;
      else
        ++failed;
    }
  }
  out << passed << " passed, " << failed << " failed";
  if (skipped) out << ", " << skipped << " skipped";
  out << "\n";
  return failed == 0 ? 0 : 1;
}

}  // namespace kinora::conformance
