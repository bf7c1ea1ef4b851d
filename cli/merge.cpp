#include "cli/merge.h"

#include <nlohmann/json.hpp>

#include <cmath>
#include <sstream>
#include <utility>
#include <vector>

#include "base/error.h"
#include "base/files.h"
#include "base/signals.h"
#include "cli/convert.h"
#include "io/checkpoint.h"

namespace kinora::cli {

namespace {
// The folder and the file, e.g. "run-2/model.safetensors": enough to tell the
// inputs apart in the metadata without recording the user's whole path.
std::string short_name(const std::filesystem::path& p) {
  const auto parent = p.parent_path().filename();
  return parent.empty() ? p.filename().string() : (parent / p.filename()).string();
}

// How `other` names `a`'s tensors: as `a` does, or each name with one prefix
// added or taken away (ComfyUI's "model.diffusion_model." over the original
// names of one model).
struct NameMap {
  std::string add, strip;
  std::string of(const std::string& name) const { return add + name.substr(strip.size()); }
};
NameMap name_map(const io::Checkpoint& a, const io::Checkpoint& other) {
  auto x = a.names(), y = other.names();
  if (x.size() != y.size() || x.empty()) return {};
  std::sort(x.begin(), x.end());
  std::sort(y.begin(), y.end());
  const auto ends = [](const std::string& s, const std::string& tail) {
    return s.size() > tail.size() && s.compare(s.size() - tail.size(), tail.size(), tail) == 0;
  };
  NameMap m;
  if (ends(y[0], x[0]))
    m.add = y[0].substr(0, y[0].size() - x[0].size());
  else if (ends(x[0], y[0]))
    m.strip = x[0].substr(0, x[0].size() - y[0].size());
  else
    return {};
  for (std::size_t i = 0; i < x.size(); ++i)
    if (x[i].rfind(m.strip, 0) != 0 || m.of(x[i]) != y[i]) return {};
  return m;
}

// `other` must hold exactly `a`'s tensors (by name_map's names), with the
// same shapes. Returns the names it holds them by.
NameMap check_same_model(const io::Checkpoint& a, const io::Checkpoint& other) {
  const auto map = name_map(a, other);
  for (const auto& name : a.names()) {
    if (!other.contains(map.of(name)))
      throw Error(other.path().string() + ": has no tensor '" + name + "', which " +
                  a.path().string() +
                  " holds; merging needs two checkpoints of the same model in the same layout "
                  "(`kinora info` shows each one's)");
    const auto& sa = a.info(name).shape;
    const auto& so = other.info(map.of(name)).shape;
    if (sa != so)
      throw Error("tensor '" + name + "' is " + c10::str(c10::IntArrayRef(so)) + " in " +
                  other.path().string() + " and " + c10::str(c10::IntArrayRef(sa)) + " in " +
                  a.path().string() + "; not the same model");
  }
  for (const auto& name : other.names())
    if (name.rfind(map.add, 0) != 0 || !a.contains(map.strip + name.substr(map.add.size())))
      throw Error(other.path().string() + ": holds a tensor '" + name + "' that " +
                  a.path().string() + " has not; not the same model in the same layout");
  return map;
}
}  // namespace

constexpr double kMaxRatio = 100;

MergeReport merge_checkpoints(const MergeSpec& spec, const std::filesystem::path& out) {
  // Beyond ±100 the sum is the difference blown up (at 1e30 finite bf16 values
  // of 1e27 that render nothing), as with LoRA strengths.
  if (!std::isfinite(spec.ratio) || std::abs(spec.ratio) > kMaxRatio)
    throw Error("merge: --ratio " + (std::ostringstream() << spec.ratio).str() +
                ": give a number from -100 to 100");
  const bool keep = spec.dtype == "keep";
  const auto to = keep ? torch::kFloat : parse_float_dtype(spec.dtype, "merge");
  std::vector<std::filesystem::path> inputs{spec.a, spec.b};
  if (spec.subtract) inputs.push_back(*spec.subtract);
  check_checkpoint_output(out, inputs, spec.overwrite);
  const auto a = io::Checkpoint::open(spec.a);
  const auto b = io::Checkpoint::open(spec.b);
  const auto c = spec.subtract ? std::optional<io::Checkpoint>(io::Checkpoint::open(*spec.subtract))
                               : std::nullopt;
  const auto in_b = check_same_model(a, b);
  const auto in_c = c ? check_same_model(a, *c) : NameMap{};
  const io::Checkpoint& base = c ? *c : a;  // out = A + r·(B − base)
  // A's names, which the output keeps, as each input holds them.
  const auto of = [&](const io::Checkpoint* ck, const std::string& name) {
    if (ck == &b) return in_b.of(name);
    return c && ck == &*c ? in_c.of(name) : name;
  };

  MergeReport r;
  double change2 = 0, norm2 = 0;
  std::vector<std::pair<std::string, torch::Tensor>> tensors;
  for (const auto& name : a.names()) {
    throw_if_cancelled(&cancel_requested());  // Ctrl-C, SIGTERM: nothing written
    for (const auto* ck : {&a, &b, &base})
      if (io::is_fp8(ck->info(of(ck, name)).dtype))
        throw Error(ck->path().string() + ": tensor '" + of(ck, name) + "' is " +
                    io::dtype_name(ck->info(of(ck, name)).dtype) +
                    "; FP8 checkpoints are not merged (their scales differ by format)");
    auto ta = a.get(name);
    torch::Tensor t;
    if (is_float_dtype(a.info(name).dtype)) {
      const auto wide = ta.scalar_type() == torch::kDouble ? torch::kDouble : torch::kFloat;
      const auto fa = ta.to(wide);
      const auto delta =
          spec.ratio * (b.get(of(&b, name)).to(wide) - base.get(of(&base, name)).to(wide));
      change2 += delta.square().sum(torch::kDouble).item<double>();
      norm2 += fa.square().sum(torch::kDouble).item<double>();
      const auto sum = fa + delta;
      t = sum.to(keep ? ta.scalar_type() : to);
      // A ratio so large that the sum leaves the stored type's range (or
      // inputs that hold NaN) would make a checkpoint that renders nothing.
      if (!torch::isfinite(t).all().item<bool>()) {
        const auto type = keep ? io::dtype_name(a.info(name).dtype) : spec.dtype;
        std::string why =
            torch::isfinite(sum).all().item<bool>()
                ? "its values pass the range of " + type +
                      (t.scalar_type() == torch::kHalf ? std::string(" (65504)") : std::string()) +
                      "; bf16 or fp32 keep them (--dtype)"
                : "ratio " + nlohmann::json(spec.ratio).dump() + " is too large for its values";
        for (const auto* ck : {&a, &b, &base})
          if (!torch::isfinite(ck->get(of(ck, name))).all().item<bool>())
            why = ck->path().string() + " holds infinite or NaN values in it";
        throw Error(out.string() + ": tensor '" + name + "' would hold infinite or NaN values (" +
                    why + "); nothing was written");
      }
      ++r.merged;
    } else {
      for (const auto* ck : {&b, &base})
        if (!torch::equal(ck->get(of(ck, name)), ta))
          throw Error(ck->path().string() + ": integer tensor '" + name + "' differs from " +
                      a.path().string() + "'s; such tensors are copied, not merged");
      t = ta;
    }
    r.bytes_out += static_cast<uint64_t>(t.numel()) * t.element_size();
    tensors.emplace_back(name, std::move(t));
  }
  r.tensors = tensors.size();
  r.relative_change = norm2 > 0 ? std::sqrt(change2 / norm2) : 0;

  auto meta = a.metadata();
  nlohmann::json recipe = {
      {"a", short_name(spec.a)}, {"b", short_name(spec.b)}, {"ratio", spec.ratio}};
  if (spec.subtract) {
    recipe["c"] = short_name(*spec.subtract);
    recipe["formula"] = "a + ratio * (b - c)";
  } else {
    recipe["formula"] = "a + ratio * (b - a)";
  }
  meta["kinora.merge"] = recipe.dump();
  save_checkpoint_cancellable(out, tensors, meta, spec.overwrite);
  return r;
}

}  // namespace kinora::cli
