#include "lora/lora.h"

#include <algorithm>
#include <cmath>
#include <map>
#include <set>
#include <sstream>
#include <variant>

#include "base/error.h"
#include "io/checkpoint.h"
#include "layers/linear.h"

namespace kinora::lora {
namespace fs = std::filesystem;

namespace {

// The key suffixes of each kind of update, and the part each names.
struct Suffix {
  const char* text;
  const char* part;
};
const Suffix kSuffixes[] = {
    {".lora_down.weight", "down"},
    {".lora_up.weight", "up"},
    {".lora_A.weight", "down"},
    {".lora_B.weight", "up"},
    {".lora_A.default.weight", "down"},
    {".lora_B.default.weight", "up"},
    {".lora.down.weight", "down"},
    {".lora.up.weight", "up"},
    {".alpha", "alpha"},
    {".diff_b", "diff_b"},
    {".diff", "diff"},
    {".hada_w1_a", "hada_w1_a"},
    {".hada_w1_b", "hada_w1_b"},
    {".hada_w2_a", "hada_w2_a"},
    {".hada_w2_b", "hada_w2_b"},
    {".hada_t1", "unsupported:LoHa with Tucker factors"},
    {".hada_t2", "unsupported:LoHa with Tucker factors"},
    {".lokr_w1_a", "lokr_w1_a"},
    {".lokr_w1_b", "lokr_w1_b"},
    {".lokr_w1", "lokr_w1"},
    {".lokr_w2_a", "lokr_w2_a"},
    {".lokr_w2_b", "lokr_w2_b"},
    {".lokr_w2", "lokr_w2"},
    {".lokr_t2", "unsupported:LoKr with a Tucker factor"},
    {".dora_scale", "unsupported:DoRA"},
    {".lora_magnitude_vector.weight", "unsupported:DoRA"},  // PEFT's, in memory
    {".lora_magnitude_vector", "unsupported:DoRA"},         // PEFT's, saved
    {".lora_mid.weight", "unsupported:LoCon with a mid factor"},
};

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() &&
         s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}
bool starts_with(const std::string& s, const std::string& prefix) {
  return s.rfind(prefix, 0) == 0;
}
std::string shape_str(at::IntArrayRef s) {
  return c10::str(s);
}

struct Group {
  std::map<std::string, torch::Tensor> parts;
  std::map<std::string, std::string> keys;  // each part's key in the file
};

// The model's Linear modules by name, and by name with dots as underscores
// (kohya's spelling).
struct Linears {
  std::map<std::string, layers::LinearImpl*> by_name;
  std::map<std::string, std::string> by_underscored;
  std::set<std::string> others;  // every other module, by name and underscored
};
Linears linears_of(const layers::Model& model) {
  Linears l;
  for (const auto& item : model.module().named_modules("", false))
    if (auto* lin = dynamic_cast<layers::LinearImpl*>(item.value().get())) {
      l.by_name[item.key()] = lin;
      std::string u = item.key();
      std::replace(u.begin(), u.end(), '.', '_');
      l.by_underscored[u] = item.key();
    } else {
      std::string u = item.key();
      std::replace(u.begin(), u.end(), '.', '_');
      l.others.insert(item.key());
      l.others.insert(u);
    }
  return l;
}

// Why a stem has no target.
struct Miss {
  NotApplied reason;
  std::string why;
};

// Why a stem that names no Linear has no target.
Miss no_linear(const std::string& name, const Linears& lin) {
  if (lin.others.count(name))
    return {NotApplied::locon,
            "a convolution or another layer that is not a linear one (LoCon): not applied"};
  return {NotApplied::no_module, "no module of this model has that name"};
}

// The stem's target, or the reason there is none.
std::variant<Target, Miss> target_of(std::string stem, const Linears& lin,
                                     const DiffusersNames& diffusers) {
  if (is_text_encoder_stem(stem))
    return Miss{NotApplied::text_encoder,
                "a text encoder's module (LoRAs apply to the denoiser here)"};
  for (const char* p : {"base_model.model.", "model.diffusion_model.", "diffusion_model.",
                        "transformer.", "unet.", "model."})
    if (starts_with(stem, p)) {
      stem = stem.substr(std::string(p).size());
      break;
    }
  for (const char* p : {"lora_unet_", "lycoris_", "lora_transformer_"})
    if (starts_with(stem, p)) {
      const auto name = stem.substr(std::string(p).size());
      const auto it = lin.by_underscored.find(name);
      if (it != lin.by_underscored.end()) return Target{it->second, 0, -1};
      return no_linear(name, lin);
    }
  if (lin.by_name.count(stem)) return Target{stem, 0, -1};
  if (diffusers)
    if (auto t = diffusers(stem); t && lin.by_name.count(t->module)) return *t;
  return no_linear(stem, lin);
}

// A text encoder's stem in `scope` → its module, or the reason there is none;
// nullopt when the stem is not in the scope.
std::optional<std::variant<Target, Miss>> text_target_of(const std::string& stem,
                                                         const Linears& lin, const Scope& scope) {
  for (const auto& prefix : scope.text_prefixes) {
    if (!starts_with(stem, prefix)) continue;
    std::string rest = stem.substr(prefix.size());
    const bool kohya = prefix.back() == '_';
    for (const char* tm : {"text_model_", "text_model."})
      if (starts_with(rest, tm)) {
        rest = rest.substr(std::string(tm).size());
        break;
      }
    if (kohya) {
      const auto it = lin.by_underscored.find(rest);
      if (it != lin.by_underscored.end()) return Target{it->second, 0, -1};
    } else if (lin.by_name.count(rest)) {
      return Target{rest, 0, -1};
    }
    return std::variant<Target, Miss>(
        Miss{NotApplied::no_module, "no module of this text encoder has that name"});
  }
  return std::nullopt;
}

// The naming the file uses, from its stems.
std::string naming_of(const std::map<std::string, Group>& groups) {
  int kohya = 0, lycoris = 0, diffusers = 0, original = 0;
  auto has = [](const std::string& stem, const char* part) {
    return stem.find(part) != std::string::npos;
  };
  for (const auto& [stem, g] : groups) {
    if (starts_with(stem, "lora_unet_") || starts_with(stem, "lora_te") ||
        starts_with(stem, "lora_transformer_"))
      ++kohya;
    else if (starts_with(stem, "lycoris_"))
      ++lycoris;
    // SD's original UNet names hold diffusers-like parts
    // (input_blocks.4.1.transformer_blocks.0.attn1.to_q): its blocks decide.
    else if (has(stem, "input_blocks.") || has(stem, "middle_block.") ||
             has(stem, "output_blocks."))
      ++original;
    else if (stem.find("attn1.") != std::string::npos || stem.find(".to_q") != std::string::npos ||
             stem.find("transformer_blocks.") != std::string::npos ||
             starts_with(stem, "base_model.") || starts_with(stem, "transformer."))
      ++diffusers;
    else
      ++original;
  }
  const int most = std::max({kohya, lycoris, diffusers, original});
  return most == kohya       ? "kohya"
         : most == lycoris   ? "lycoris"
         : most == diffusers ? "diffusers"
                             : "original";
}

// The kinds of update other than LoRA's in a file, as its format names them:
// ", LoHa", ", LoKr", ", full deltas".
std::string kinds_named(const std::set<std::string>& kinds) {
  std::string s;
  for (const auto& k : kinds)
    if (k == "loha")
      s += ", LoHa";
    else if (k == "lokr")
      s += ", LoKr";
    else if (k == "diff")
      s += ", full deltas";
  return s;
}

torch::Tensor matrix(const torch::Tensor& t) {
  return t.dim() > 2 ? t.flatten(1) : t;  // 1×1 convolutions as matrices
}

}  // namespace

torch::Tensor Patch::full_delta() const {
  if (kind == "lora") return torch::matmul(up, down) * scale;
  return delta;
}

namespace {
// Why an update is not applied, in a few words, for grouping.
const char* in_short(NotApplied r) {
  switch (r) {
    case NotApplied::locon:
      return "convolutions (LoCon), not applied";
    case NotApplied::text_encoder:
      return "a text encoder's, not applied to this model";
    case NotApplied::unsupported:
      return "of a kind not supported";
    case NotApplied::no_module:
      return "no module of that name in this model";
    case NotApplied::other_shape:
      return "of another shape";
    case NotApplied::malformed:
      break;
  }
  return "malformed or incomplete";
}

// Whether every update not applied is of a kind Kinora does not apply here
// (a convolution, a text encoder's module it does not reach, an unsupported
// kind): the LoRA may be for this model, only not of a kind it takes.
bool only_kinds_not_applied(const std::vector<Unmatched>& unmatched) {
  return !unmatched.empty() &&
         std::all_of(unmatched.begin(), unmatched.end(), [](const Unmatched& u) {
           return u.reason == NotApplied::locon || u.reason == NotApplied::text_encoder ||
                  u.reason == NotApplied::unsupported;
         });
}
}  // namespace

std::string Unmatched::text() const {
  std::string s = stem;
  s.append(": ").append(why);
  if (!where.empty()) s.append(" (").append(where).append(")");
  return s;
}

void Report::add_rank(int64_t r) {
  if (r <= 0) return;
  rank = std::max(rank, r);
  rank_min = rank_min == 0 ? r : std::min(rank_min, r);
}

void Report::add_alpha(double a) {
  alpha = alpha ? std::min(*alpha, a) : a;
  alpha_max = alpha_max ? std::max(*alpha_max, a) : a;
}

std::string Report::rank_and_alpha() const {
  std::ostringstream s;
  if (rank > 0 && rank_min > 0 && rank_min != rank)
    s << ", ranks " << rank_min << " to " << rank;
  else if (rank > 0)
    s << ", rank " << rank;
  if (alpha && alpha_max && *alpha_max != *alpha)
    s << ", alphas " << *alpha << " to " << *alpha_max;
  else if (alpha)
    s << ", alpha " << *alpha;
  // Scale alpha / rank below 0: legal, and rarely meant.
  if (alpha && *alpha < 0)
    s << (alpha_max && *alpha_max != *alpha ? " (a negative alpha" : " (negative")
      << ": the update is applied reversed, as at a negative strength)";
  return s.str();
}

std::string Report::line(const std::string& lists_them) const {
  std::ostringstream s;
  s << file.filename().string() << ": " << format << rank_and_alpha();
  s << "; " << matched << " of " << total << " updates matched";
  if (!unmatched.empty()) {
    std::map<std::string, int> why;
    for (const auto& u : unmatched) ++why[in_short(u.reason)];
    s << " (" << unmatched.size() << " not:";
    const char* sep = " ";
    for (const auto& [reason, n] : why) s << sep << n << " " << reason, sep = ", ";
    if (!lists_them.empty()) s << "; " << lists_them << " lists them";
    s << ")";
  }
  return s.str();
}

namespace {
// The key a low-rank pair's other half has beside `key` ("….lora_up.weight"
// beside "….lora_down.weight").
std::string other_half(const std::string& key) {
  static const std::pair<const char*, const char*> kPairs[] = {
      {".lora_down.weight", ".lora_up.weight"},
      {".lora_A.weight", ".lora_B.weight"},
      {".lora_A.default.weight", ".lora_B.default.weight"},
      {".lora.down.weight", ".lora.up.weight"},
  };
  for (const auto& [a, b] : kPairs) {
    if (ends_with(key, a)) return key.substr(0, key.size() - std::string(a).size()) + b;
    if (ends_with(key, b)) return key.substr(0, key.size() - std::string(b).size()) + a;
  }
  return key;
}

// What makes a group's tensors no update: a half of a pair (or of a LoHa's or
// LoKr's factors) missing, or factors whose shapes do not multiply. "" for a
// whole update, for an alpha alone (kohya writes alphas for modules it did not
// train), and for a kind Kinora does not apply (DoRA, Tucker factors: their
// shapes follow other rules, and they are reported as not supported).
std::string damage_of(const std::string& stem, const Group& g) {
  const auto& parts = g.parts;
  auto has = [&](const char* part) { return parts.count(part) > 0; };
  for (const auto& part : parts)
    if (starts_with(part.first, "unsupported:")) return "";
  auto key = [&](const char* part) { return "'" + g.keys.at(part) + "'"; };
  auto shaped = [&](const char* part) {
    return key(part) + " " + shape_str(matrix(parts.at(part)).sizes());
  };
  // a·b: a's columns are b's rows.
  auto multiplies = [&](const char* a, const char* b) {
    return matrix(parts.at(a)).size(1) == matrix(parts.at(b)).size(0);
  };
  auto not_multiplying = [&](const char* a, const char* b) {
    return shaped(a) + " and " + shaped(b) + " do not multiply";
  };
  if (has("down") != has("up")) {
    const char* here = has("down") ? "down" : "up";
    return key(here) + " has no '" + other_half(g.keys.at(here)) + "' beside it";
  }
  if (has("down")) {
    if (!multiplies("up", "down"))
      return not_multiplying("up", "down") + " (ranks " +
             std::to_string(matrix(parts.at("up")).size(1)) + " and " +
             std::to_string(matrix(parts.at("down")).size(0)) + ")";
    return "";
  }
  // LoHa: (w1_a·w1_b) ⊙ (w2_a·w2_b), all four there.
  const char* const loha[] = {"hada_w1_a", "hada_w1_b", "hada_w2_a", "hada_w2_b"};
  if (std::any_of(std::begin(loha), std::end(loha), has)) {
    for (const char* n : loha)
      if (!has(n)) {
        const char* here = *std::find_if(std::begin(loha), std::end(loha), has);
        return key(here) + " has no '" + stem + "." + n + "' beside it";
      }
    if (!multiplies("hada_w1_a", "hada_w1_b")) return not_multiplying("hada_w1_a", "hada_w1_b");
    if (!multiplies("hada_w2_a", "hada_w2_b")) return not_multiplying("hada_w2_a", "hada_w2_b");
    if (matrix(parts.at("hada_w1_a")).size(0) != matrix(parts.at("hada_w2_a")).size(0) ||
        matrix(parts.at("hada_w1_b")).size(1) != matrix(parts.at("hada_w2_b")).size(1))
      return "the products of " + key("hada_w1_a") + "·" + key("hada_w1_b") + " and " +
             key("hada_w2_a") + "·" + key("hada_w2_b") + " differ in shape";
    return "";
  }
  // LoKr: w1 ⊗ w2, each whole (lokr_w1) or as a product (lokr_w1_a·lokr_w1_b).
  const bool lokr = std::any_of(parts.begin(), parts.end(),
                                [](const auto& part) { return starts_with(part.first, "lokr_"); });
  if (lokr)
    for (const std::string w : {"lokr_w1", "lokr_w2"}) {
      const auto a = w + "_a", b = w + "_b";
      if (has(w.c_str())) continue;
      if (has(a.c_str()) && has(b.c_str())) {
        if (!multiplies(a.c_str(), b.c_str())) return not_multiplying(a.c_str(), b.c_str());
        continue;
      }
      // The half of this factor that is there, else any of the update's.
      std::string here = has(a.c_str()) ? a : has(b.c_str()) ? b : "";
      if (here.empty())
        here = std::find_if(parts.begin(), parts.end(), [](const auto& part) {
                 return starts_with(part.first, "lokr_");
               })->first;
      const std::string wanted = has(a.c_str()) ? b : has(b.c_str()) ? a : w;
      return "'" + g.keys.at(here) + "' has no '" + stem + "." + wanted + "' beside it";
    }
  return "";
}

// The file's updates grouped by key stem, each part in float32.
std::map<std::string, Group> read_groups(const fs::path& file) {
  const auto ck = io::Checkpoint::open(file);
  std::map<std::string, Group> groups;
  for (const auto& key : ck.names()) {
    for (const auto& s : kSuffixes)
      if (ends_with(key, s.text)) {
        const auto stem = key.substr(0, key.size() - std::string(s.text).size());
        // Weights are floating point (an alpha may be a whole number).
        const std::string dtype = io::dtype_name(ck.info(key).dtype);
        if (std::string(s.part) != "alpha" && dtype[0] != 'F' && dtype != "BF16")
          fail_file(file, "tensor '" + key + "' is " + dtype +
                              ": a LoRA's weights are floating point (F32, F16, BF16 or FP8)");
        auto t = ck.get(key).to(torch::kFloat32);
        if (!torch::isfinite(t).all().item<bool>())
          fail_file(file, "tensor '" + key + "' holds NaN or infinite values");
        // Shapes every update's arithmetic can rely on.
        const std::string part = s.part;
        if (part == "alpha" && t.numel() != 1)
          fail_file(file, "tensor '" + key + "' has shape " + shape_str(t.sizes()) +
                              ": an alpha is one number");
        if (part != "alpha" && part != "diff_b" && part.rfind("unsupported:", 0) != 0 &&
            (t.dim() < 2 || t.numel() == 0))
          fail_file(file,
                    "tensor '" + key + "' has shape " + shape_str(t.sizes()) + ": not a matrix");
        groups[stem].parts[s.part] = t;
        groups[stem].keys[s.part] = key;
        break;
      }
  }
  if (groups.empty())
    fail_file(file,
              "holds no LoRA keys (lora_down / lora_up, lora_A / lora_B, hada_, lokr_, "
              "diff): not a LoRA file");
  // A damaged update is refused with its file, not left out: the rest of the
  // file would apply as if it were whole.
  std::vector<std::string> damaged;
  for (const auto& [stem, g] : groups)
    if (auto why = damage_of(stem, g); !why.empty()) damaged.push_back(std::move(why));
  if (!damaged.empty()) {
    std::string msg = damaged.size() == 1
                          ? std::string("a damaged LoRA: ")
                          : "a damaged LoRA (" + std::to_string(damaged.size()) + " updates): ";
    for (std::size_t i = 0; i < damaged.size() && i < 3; ++i)
      msg.append(i ? "; " : "").append(damaged[i]);
    if (damaged.size() > 3)
      msg.append("; and ").append(std::to_string(damaged.size() - 3)).append(" more");
    fail_file(file, msg);
  }
  return groups;
}
}  // namespace

Report describe(const fs::path& file) {
  auto groups = read_groups(file);
  Report r;
  r.file = file;
  r.format = naming_of(groups);
  std::set<std::string> kinds;
  for (auto& [stem, g] : groups) {
    auto& parts = g.parts;
    if (parts.size() == 1 && parts.count("alpha")) continue;
    ++r.total;
    const std::string kind = parts.count("down")                                    ? "lora"
                             : parts.count("hada_w1_a")                             ? "loha"
                             : (parts.count("lokr_w1") || parts.count("lokr_w1_a")) ? "lokr"
                             : (parts.count("diff") || parts.count("diff_b"))       ? "diff"
                                                                                    : "other";
    // The rank as resolve() counts it: a LoKr's, where its factors have one.
    if (kind == "lora") r.add_rank(parts["down"].size(0));
    if (kind == "loha") r.add_rank(parts["hada_w1_b"].size(0));
    if (kind == "lokr")
      for (const char* b : {"lokr_w1_b", "lokr_w2_b"})
        if (parts.count(b)) r.add_rank(parts[b].size(0));
    if (parts.count("alpha")) r.add_alpha(parts["alpha"].item<double>());
    r.updates.push_back({stem, kind});
    kinds.insert(kind);
  }
  r.format += kinds_named(kinds);
  return r;
}

bool is_text_encoder_stem(const std::string& stem) {
  return starts_with(stem, "lora_te") || starts_with(stem, "text_encoder") ||
         starts_with(stem, "te_") || starts_with(stem, "te1.") || starts_with(stem, "te2.") ||
         starts_with(stem, "lora_clip") || starts_with(stem, "lora_t5");
}

Updates Updates::read(const fs::path& file) {
  Updates u;
  u.file_ = file;
  u.groups_ = std::make_shared<const std::map<std::string, Group>>(read_groups(file));
  return u;
}

Resolved resolve(const fs::path& file, const layers::Model& model,
                 const DiffusersNames& diffusers_names, const Scope& scope) {
  return resolve(Updates::read(file), model, diffusers_names, scope);
}

Resolved resolve(const Updates& updates, const layers::Model& model,
                 const DiffusersNames& diffusers_names, const Scope& scope) {
  const fs::path& file = updates.file();
  // A copy of the map (tensor handles only): resolving reads parts by name.
  auto groups = *static_cast<const std::map<std::string, Group>*>(updates.groups());
  const auto lin = linears_of(model);
  Resolved r;
  r.report.file = file;
  std::set<std::string> kinds;
  for (auto& group : groups) {
    // Named, not a structured binding: the lambda below captures it (C++17).
    const std::string& stem = group.first;
    auto& parts = group.second.parts;
    if (parts.size() == 1 && parts.count("alpha")) continue;  // an alpha without its update
    std::optional<std::variant<Target, Miss>> text_where;
    if (!scope.text_prefixes.empty()) {
      text_where = text_target_of(stem, lin, scope);
      if (!text_where) continue;  // not this encoder's
    } else if (scope.text_elsewhere && is_text_encoder_stem(stem)) {
      continue;  // a text encoder's, resolved against it
    }
    ++r.report.total;
    auto fail = [&](NotApplied reason, const std::string& why) {
      r.report.unmatched.push_back({stem, reason, why, ""});
    };
    std::string unsupported;
    for (const auto& [part, t] : parts)
      if (starts_with(part, "unsupported:")) unsupported = part.substr(12);
    if (!unsupported.empty()) {
      fail(NotApplied::unsupported, unsupported + " is not supported");
      continue;
    }
    const auto where = text_where ? *text_where : target_of(stem, lin, diffusers_names);
    if (const auto* miss = std::get_if<Miss>(&where)) {
      fail(miss->reason, miss->why);
      continue;
    }
    Patch p;
    try {
      p.stem = stem;
      p.target = std::get<Target>(where);
      auto* l = lin.by_name.at(p.target.module);
      const int64_t out = l->out_features, in = l->in_features;
      if (p.target.rows < 0) p.target.rows = out;
      // Alpha 0, as no alpha, scales by 1 (kohya and LyCORIS read it so).
      const double alpha = parts.count("alpha") ? parts["alpha"].item<double>() : 0.0;
      if (parts.count("alpha")) r.report.add_alpha(alpha);
      if (parts.count("down") && parts.count("up")) {
        p.kind = "lora";
        p.down = matrix(parts["down"]);
        p.up = matrix(parts["up"]);
        const int64_t rank = p.down.size(0);
        if (p.up.size(1) != rank) {
          fail(NotApplied::malformed, "up " + shape_str(p.up.sizes()) + " and down " +
                                          shape_str(p.down.sizes()) + " do not share a rank");
          continue;
        }
        p.scale = alpha != 0 ? alpha / static_cast<double>(rank) : 1.0;
        r.report.add_rank(rank);
      } else if (parts.count("hada_w1_a") && parts.count("hada_w1_b") && parts.count("hada_w2_a") &&
                 parts.count("hada_w2_b")) {
        p.kind = "loha";
        const int64_t rank = parts["hada_w1_b"].size(0);
        const double scale = alpha != 0 ? alpha / static_cast<double>(rank) : 1.0;
        p.delta = torch::matmul(parts["hada_w1_a"], parts["hada_w1_b"]) *
                  torch::matmul(parts["hada_w2_a"], parts["hada_w2_b"]) * scale;
        r.report.add_rank(rank);
      } else if ((parts.count("lokr_w1") ||
                  (parts.count("lokr_w1_a") && parts.count("lokr_w1_b"))) &&
                 (parts.count("lokr_w2") ||
                  (parts.count("lokr_w2_a") && parts.count("lokr_w2_b")))) {
        p.kind = "lokr";
        int64_t dim = 0;
        auto factor = [&](const char* whole, const char* a, const char* b) {
          if (parts.count(whole)) return parts[whole];
          dim = parts[b].size(0);
          return torch::matmul(parts[a], parts[b]);
        };
        const auto w1 = factor("lokr_w1", "lokr_w1_a", "lokr_w1_b");
        const auto w2 = factor("lokr_w2", "lokr_w2_a", "lokr_w2_b");
        const double scale = alpha != 0 && dim > 0 ? alpha / static_cast<double>(dim) : 1.0;
        auto k = torch::kron(w1, w2) * scale;
        if (k.numel() == p.target.rows * in) k = k.reshape({p.target.rows, in});
        p.delta = k;
        r.report.add_rank(dim);
      } else if (parts.count("diff") || parts.count("diff_b")) {
        p.kind = "diff";
        if (parts.count("diff")) p.delta = matrix(parts["diff"]);
        if (parts.count("diff_b")) p.bias_delta = parts["diff_b"].reshape({-1});
        if (!p.delta.defined()) p.delta = torch::zeros({p.target.rows, in});
      } else {
        std::string have;
        for (const auto& [part, t] : parts) have += (have.empty() ? "" : ", ") + part;
        fail(NotApplied::malformed, "an incomplete update (" + have + ")");
        continue;
      }
      const auto d = p.full_delta();
      if (d.dim() != 2 || d.size(0) != p.target.rows || d.size(1) != in) {
        fail(NotApplied::other_shape, "its update " + shape_str(d.sizes()) + " does not fit " +
                                          p.target.module + " (" + std::to_string(p.target.rows) +
                                          " rows of " + shape_str({out, in}) + ")");
        continue;
      }
      if (p.bias_delta.defined() && (!l->bias.defined() || p.bias_delta.numel() != p.target.rows)) {
        fail(NotApplied::other_shape,
             "a bias update for " + p.target.module + ", which has no bias of that size");
        continue;
      }
    } catch (const c10::Error& e) {
      // Tensors whose shapes do not go together (a LoHa's factors, …).
      const std::string what = e.what_without_backtrace();
      fail(NotApplied::malformed, "a malformed update (" + what.substr(0, what.find('\n')) + ")");
      continue;
    }
    kinds.insert(p.kind);
    r.patches.push_back(std::move(p));
    ++r.report.matched;
  }
  // Tensors that pass read_groups' checks and still make no update: the
  // file is refused as a damaged one, as there.
  for (const auto& u : r.report.unmatched)
    if (u.reason == NotApplied::malformed) fail_file(file, "a damaged LoRA: " + u.text());
  r.report.format = naming_of(groups) + kinds_named(kinds);
  const bool may_be_empty = !scope.text_prefixes.empty() || scope.text_elsewhere;
  if (r.report.matched == 0 && !(may_be_empty && r.report.total == 0)) {
    std::string msg = "matches none of the model's modules";
    for (std::size_t i = 0; i < r.report.unmatched.size() && i < 3; ++i)
      msg += (i ? "; " : " (") + r.report.unmatched[i].text();
    if (!r.report.unmatched.empty()) msg += r.report.unmatched.size() > 3 ? "; …)" : ")";
    fail_file(file, msg + (only_kinds_not_applied(r.report.unmatched)
                               ? ": none of its updates is of a kind applied to this model"
                               : ": a LoRA for another model family or size"));
  }
  return r;
}

// ---------------------------------------------------------------- applying

struct Applied::Original {
  layers::LinearImpl* lin;
  torch::Tensor weight, bias;
  std::optional<io::DType> fp8;
  std::optional<float> scale;
};

Applied::~Applied() {
  clear();
}

void Applied::clear() {
  torch::NoGradGuard g;
  for (const auto& o : originals_) {
    o->lin->weight.set_data(o->weight);
    if (o->bias.defined()) o->lin->bias.set_data(o->bias);
    o->lin->fp8 = o->fp8;
    o->lin->scale = o->scale;
    o->lin->adapters.clear();
  }
  originals_.clear();
  model_ = nullptr;
}

namespace {

// One update on one module: its patch, strength and file.
struct Use {
  const Patch* patch;
  double strength;
  const fs::path* file;
};

// `u` added into a weight and bias widened to float32 (`b` undefined for a
// layer without a bias).
void add_use(torch::Tensor& w, torch::Tensor& b, const Use& u) {
  const auto& p = *u.patch;
  w.narrow(0, p.target.row0, p.target.rows).add_(p.full_delta().to(w.device()), u.strength);
  if (p.bias_delta.defined())
    b.narrow(0, p.target.row0, p.target.rows).add_(p.bias_delta.to(b.device()), u.strength);
}

bool all_finite(const torch::Tensor& t) {
  return !t.defined() || torch::isfinite(t).all().item<bool>();
}

// A LoRA file whose update makes a weight NaN or infinite, and why.
struct Overflow {
  fs::path file;
  std::string why;
};

// Where `uses` merged into `l` make its weight or bias NaN or infinite (in
// float32, or in `dtype`, the dtype it is stored in): the LoRA whose update
// tips it over. Nothing when they do not, or when the layer's own weights are
// not finite (the model file's fault, said where the model is used).
std::optional<Overflow> overflow_of(const std::string& module, const layers::LinearImpl& l,
                                    const std::vector<Use>& uses, torch::ScalarType dtype) {
  auto w = l.weight_as(torch::kFloat32).clone();
  torch::Tensor b = l.bias.defined() ? l.bias.to(torch::kFloat32).clone() : torch::Tensor();
  if (!all_finite(w) || !all_finite(b)) return std::nullopt;
  for (const auto& u : uses) {
    add_use(w, b, u);
    const bool f32 = all_finite(w) && all_finite(b);
    if (f32 && all_finite(w.to(dtype)) && (!b.defined() || all_finite(b.to(dtype)))) continue;
    std::ostringstream msg;
    msg << "its update for " << module << " at strength " << u.strength
        << " makes that layer's weight NaN or infinite";
    if (f32)
      msg << " in " << (dtype == torch::kHalf ? "float16" : "bfloat16")
          << ", the dtype it is stored in";
    msg << " (the model's weight is finite): its values, times the strength, are far too large "
           "for this model";
    return Overflow{*u.file, msg.str()};
  }
  return std::nullopt;
}

// Whether `uses` added at run time may overflow float32: a bound on the
// largest value of Σ strength·ΔW, from each low-rank pair's largest values
// (a full delta is checked as it is).
bool may_overflow(const std::vector<Use>& uses) {
  double bound = 0;
  for (const auto& u : uses) {
    const auto& p = *u.patch;
    if (p.kind != "lora") return true;
    bound += std::abs(u.strength * p.scale) * static_cast<double>(p.down.size(0)) *
             p.up.abs().max().item<double>() * p.down.abs().max().item<double>();
  }
  return !(bound < 1e30);  // float32 holds 3.4e38; a model's weights are near 1
}

}  // namespace

void Applied::apply(layers::Model& model,
                    const std::vector<std::pair<const Resolved*, double>>& loras, Mode mode) {
  clear();
  model_ = &model;
  torch::NoGradGuard g;
  const auto lin = linears_of(model);
  // The updates of each module, with their strengths.
  std::map<std::string, std::vector<Use>> by_module;
  for (const auto& [resolved, strength] : loras)
    for (const auto& p : resolved->patches) {
      // Resolved against another model (the other expert of a pair): it must fit this one too.
      const auto it = lin.by_name.find(p.target.module);
      if (it == lin.by_name.end() || p.target.row0 + p.target.rows > it->second->out_features ||
          (p.kind == "lora" ? p.down : p.delta).size(1) != it->second->in_features)
        fail_file(resolved->report.file,
                  "its update for " + p.target.module + " does not fit this model's module");
      by_module[p.target.module].push_back({&p, strength, &resolved->report.file});
    }
  for (const auto& [name, uses] : by_module) {
    auto* l = lin.by_name.at(name);
    // Merged: computed where the weight is (in host memory for a block that
    // block swap keeps there); run-time adapters: where the forward runs. A
    // layer multiplying in FP8 takes its LoRAs at run time: merged into E4M3
    // weights (steps of 1/16 to 1/8 of a value), an update of a percent or so
    // would be lost to rounding.
    const bool run_time = mode == Mode::RunTime || l->fp8_matmul;
    const auto device = run_time ? model.device() : l->weight.device();
    // Merged: W + Σ strength·ΔW in float32, stored back in the weight's dtype
    // (FP8 weights as bf16).
    const auto dtype = l->fp8 ? torch::kBFloat16 : l->weight.scalar_type();
    torch::Tensor w, b;
    if (!run_time) {
      w = l->weight_as(torch::kFloat32).clone();
      b = l->bias.defined() ? l->bias.to(torch::kFloat32).clone() : torch::Tensor();
      for (const auto& u : uses) add_use(w, b, u);
      w = w.to(dtype);
      if (b.defined()) b = b.to(l->bias.scalar_type());
    }
    if (run_time ? may_overflow(uses) : !all_finite(w) || !all_finite(b)) {
      // A LoRA whose update overflows the weight: nothing applied, and the
      // LoRA named (not the model file, whose weights would be found not finite).
      if (const auto overflow = overflow_of(name, *l, uses, run_time ? torch::kFloat32 : dtype)) {
        clear();
        fail_file(overflow->file, overflow->why);
      }
    }
    originals_.push_back(std::make_shared<Original>(
        Original{l, l->weight.data(), l->bias.defined() ? l->bias.data() : torch::Tensor(), l->fp8,
                 l->scale}));
    if (run_time) {
      for (const auto& u : uses) {
        const auto& p = *u.patch;
        layers::LinearAdapter a;
        a.row0 = p.target.row0;
        a.rows = p.target.rows;
        if (p.kind == "lora") {
          a.down = p.down.to(device);
          a.up = p.up.to(device);
          a.scale = u.strength * p.scale;
        } else {
          a.delta = p.delta.to(device);
          a.scale = u.strength;
        }
        if (p.bias_delta.defined()) a.bias = p.bias_delta.to(device);
        l->adapters.push_back(std::move(a));
      }
      continue;
    }
    l->weight.set_data(w);
    l->fp8.reset();
    l->scale.reset();
    if (b.defined()) l->bias.set_data(b);
  }
}

}  // namespace kinora::lora
