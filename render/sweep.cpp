#include "render/sweep.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <functional>
#include <map>
#include <optional>
#include <set>

#include "base/error.h"
#include "base/json.h"
#include "base/sha256.h"
#include "base/strings.h"
#include "media/output.h"
#include "pipeline/family.h"
#include "pipeline/lora_check.h"
#include "pipeline/pipeline.h"
#include "render/label.h"
#include "render/render.h"
#include "schedulers/registry.h"

namespace kinora::render {
namespace fs = std::filesystem;
using nlohmann::json;
using pipeline::Preset;

namespace {

// Keys a sweep may vary: what changes how a cell is sampled, never its size,
// length or destination (the sheet's cells share one size).
const std::set<std::string> kSweepable = {"seed",  "guidance", "steps",           "sampler",
                                          "shift", "prompt",   "negative_prompt", "precision",
                                          "fp8"};

constexpr std::size_t kMaxCells = 256;
const char* const kOff = "off";

bool is_lora_axis(const std::string& key) {
  return key == "lora" || key.rfind("lora:", 0) == 0;
}

// A value as it may stand in a file name: letters, digits and ._+- kept,
// anything else (spaces, slashes, other scripts) as '_', at most 32
// characters; a value changed that way ends in 8 hex digits of its FNV-1a
// hash, so values that differ only in what was replaced or cut still get
// names of their own.
std::string file_safe(const std::string& v) {
  std::string out;
  for (const char c : v) {
    const bool keep = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                      c == '.' || c == '_' || c == '+' || c == '-';
    out += keep ? c : '_';
  }
  if (out == v && out.size() <= 32 && !out.empty()) return out;
  uint32_t h = 2166136261u;
  for (const unsigned char c : v) h = (h ^ c) * 16777619u;
  char hex[10];
  std::snprintf(hex, sizeof hex, "~%08x", h);
  if (out.size() > 32) out.resize(32);
  return out + hex;
}

// The LoRA of `p` an axis names: its index in p.loras, or −1 when the axis adds one.
// `file_of`, when given, finds the file a LoRA's name resolves to, so that
// two names of one file are said to be one LoRA twice.
int lora_index(const Preset& p, const SweepAxis& axis,
               const std::function<fs::path(const std::string&)>& file_of = {}) {
  if (axis.key == "lora") {
    if (p.loras.size() != 1)
      throw Error("sweep: axis 'lora' wants a preset with exactly one LoRA (it has " +
                  std::to_string(p.loras.size()) + "); name one: lora:NAME=…");
    return 0;
  }
  const std::string name = axis.key.substr(5);
  // The LoRAs given as the axis names it, else those of that file name or
  // stem ("ink" for "styles/ink.safetensors").
  std::vector<std::size_t> exact, named;
  for (std::size_t i = 0; i < p.loras.size(); ++i) {
    const fs::path l = p.loras[i].path;
    if (p.loras[i].path == name) exact.push_back(i);
    if (l.filename() == name || l.stem() == name) named.push_back(i);
  }
  const auto& found = exact.empty() ? named : exact;
  if (found.empty()) return -1;
  if (found.size() > 1) {
    std::string which;
    bool one_path = true;
    for (const auto i : found) {
      which.append(which.empty() ? "" : ", ")
          .append(p.loras[i].path)
          .append(" at ")
          .append(nlohmann::json(p.loras[i].strength).dump());
      one_path = one_path && (p.loras[i].path == p.loras[found[0]].path ||
                              (file_of && !file_of(p.loras[i].path).empty() &&
                               file_of(p.loras[i].path) == file_of(p.loras[found[0]].path)));
    }
    // Its "off" column would keep the others on, its values set only the first.
    if (one_path)
      throw Error("sweep: axis '" + axis.key + "': the preset has that LoRA " +
                  std::to_string(found.size()) + " times (" + which +
                  "); keep one of them to sweep it");
    throw Error("sweep: axis '" + axis.key + "' names " + std::to_string(found.size()) +
                " of the preset's LoRAs (" + which + "); name one as the preset gives it");
  }
  return static_cast<int>(found[0]);
}

double parse_strength(const std::string& v, const std::string& key) {
  std::size_t used = 0;
  double s = 0;
  try {
    s = std::stod(v, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  if (used != v.size() || !std::isfinite(s) || std::abs(s) > pipeline::kMaxLoraStrength)
    throw Error("sweep: axis '" + key + "': '" + v + "' is not a strength (off, or a number from " +
                "-100 to 100)");
  return s;
}

// The preset with one axis at one value.
void apply_value(Preset& p, const SweepAxis& axis, const std::string& value) {
  if (!is_lora_axis(axis.key)) {
    p.set(axis.key + "=" + value, "sweep axis");  // "sweep axis steps: key 'steps' …"
    return;
  }
  int i = lora_index(p, axis);
  if (value == kOff) {
    if (i >= 0) p.loras.erase(p.loras.begin() + i);
    return;
  }
  const double s = parse_strength(value, axis.key);
  if (i < 0) {
    p.loras.push_back({axis.key.substr(5), s});
    i = static_cast<int>(p.loras.size()) - 1;
  }
  p.loras[static_cast<std::size_t>(i)].strength = s;
}

std::string cell_name(const SweepPlan& plan, const std::vector<std::string>& values) {
  std::string out;
  for (std::size_t a = 0; a < values.size(); ++a)
    out.append(a ? " " : "").append(plan.axes[a].label).append("=").append(values[a]);
  return out;
}

}  // namespace

// Whether the file at `path` holds the render of `p`: the keys a sweep
// varies and the size, as its embedded preset records them.
bool holds_render_of(const fs::path& path, const Preset& p) {
  try {
    return holds_render_of(media::read_embedded_parameters(path), path.string(), p);
  } catch (const Error&) {
    return false;
  }
}

bool holds_render_of(const json& parameters, const std::string& where, const Preset& p) {
  Preset r;
  try {
    r = Preset::restored(parameters, where);
  } catch (const Error&) {
    return false;
  }
  Preset snapped = p;
  pipeline::snap_sizes(snapped);
  if (r.prompt != p.prompt || (p.seed != pipeline::kRandomSeed && r.seed != p.seed) ||
      r.steps != p.steps || r.sampler != p.sampler || r.shift != p.shift ||
      r.guidance != p.guidance || r.width != snapped.width || r.height != snapped.height ||
      r.frames != snapped.frames || r.loras.size() != p.loras.size() ||
      (!p.negative_prompt.empty() && r.negative_prompt != p.negative_prompt) ||
      (p.precision != "auto" && r.precision != p.precision))
    return false;
  // FP8 products where the family has them (an SDXL output records false).
  bool fp8_path = true;
  try {
    fp8_path = r.family.empty() || pipeline::family_named(r.family).has_fp8_path();
  } catch (const Error&) {
  }
  if (r.fp8 != (p.fp8 && fp8_path)) return false;
  for (std::size_t i = 0; i < p.loras.size(); ++i)
    if (r.loras[i].strength != p.loras[i].strength ||
        fs::path(r.loras[i].path).filename() != fs::path(p.loras[i].path).filename())
      return false;
  return true;
}

std::vector<std::string> changed_since(const json& meta, const Preset& p,
                                       std::vector<std::string>* missing) {
  const auto recorded = [](const json& j) {
    return j.is_object() && j.contains("sha256_first_last_mib") &&
                   j["sha256_first_last_mib"].is_string()
               ? j["sha256_first_last_mib"].get<std::string>()
               : std::string();
  };
  std::vector<std::string> out;
  // The file `find` gives, when its fingerprint is not the one `made`
  // records; not when it is, or when the file cannot be found or read (a
  // cell whose files are gone can still be reused, its sheet made again).
  const auto check = [&](const json& made, const std::function<fs::path()>& find) {
    const auto was = recorded(made);
    if (was.empty()) return;
    try {
      std::error_code ec;
      if (const auto file = find(); fs::is_regular_file(file, ec) && file_fingerprint(file) != was)
        out.push_back(file.string());
    } catch (const Error& e) {
      if (missing) missing->push_back(e.what());
    }
  };
  // The LoRAs in the order the render records them: the preset's, then its
  // prompt's tags.
  std::vector<std::function<fs::path()>> loras;
  for (const auto& l : p.loras)
    loras.push_back([&p, path = l.path] { return pipeline::resolve_lora_file(p, path); });
  try {
    for (const auto& l : pipeline::prompt_loras(p.prompt).loras)
      loras.push_back([&p, path = l.path] { return pipeline::resolve_lora_tag(p, path); });
  } catch (const Error&) {
  }
  const auto& made = meta.contains("loras") && meta["loras"].is_array() ? meta["loras"] : json();
  for (std::size_t i = 0; i < loras.size() && i < made.size(); ++i) check(made[i], loras[i]);
  if (!meta.contains("model_files") || !meta["model_files"].is_object()) return out;
  pipeline::ModelFiles files;
  try {
    // Each file on its own: every one missing said, the others still checked.
    files = pipeline::resolve_models_each(p, pipeline::family_for(p), missing);
  } catch (const Error& e) {
    if (missing) missing->push_back(e.what());
    return out;
  }
  const auto& mf = meta["model_files"];
  for (const auto& [role, file] : {std::pair<const char*, const fs::path*>{"model", &files.model},
                                   {"model2", &files.model2},
                                   {"vae", &files.vae},
                                   {"text_encoder", &files.text_encoder},
                                   {"clip", &files.clip}})
    if (!file->empty() && mf.contains(role)) check(mf[role], [file = *file] { return file; });
  return out;
}

namespace {

// What a sweep's contact sheet records of it ("sweep" in its parameters): the
// axes and the cells' file names. run_sweep writes it; is_sheet_of compares it.
json sweep_record(const SweepPlan& plan) {
  json axes = json::array(), cells = json::array();
  for (const auto& a : plan.axes) axes.push_back({{"key", a.key}, {"values", a.values}});
  for (const auto& c : plan.cells) cells.push_back(c.preset.output_path().filename().string());
  return {{"axes", axes}, {"cells", cells}};
}

// Whether `path` is the contact sheet this sweep writes: its parameters
// record the same axes and cells, and its preset is the first cell's. (A sheet
// of another sweep or preset of that name is replaced only with overwrite.)
bool is_sheet_of(const fs::path& path, const SweepPlan& plan) {
  std::error_code ec;
  if (!fs::is_regular_file(path, ec)) return false;
  json meta;
  try {
    meta = media::read_embedded_parameters(path);
  } catch (const Error&) {
    return false;
  }
  return meta.contains("sweep") && meta["sweep"] == sweep_record(plan) &&
         holds_render_of(path, plan.cells.at(0).preset);
}

}  // namespace

SweepAxis parse_sweep_axis(const std::string& arg) {
  const auto eq = arg.find('=');
  if (eq == std::string::npos || eq == 0)
    throw Error("sweep: --axis '" + arg + "' is not KEY=V1,V2,…");
  SweepAxis axis;
  axis.key = arg.substr(0, eq);
  const bool lora = is_lora_axis(axis.key);
  if (axis.key == "lora:") throw Error("sweep: --axis '" + arg + "': lora:NAME needs a name");
  if (!lora && !kSweepable.count(axis.key)) {
    std::string keys = "lora, lora:NAME";
    for (const auto& k : kSweepable) keys.append(", ").append(k);
    throw Error("sweep: '" + axis.key + "' cannot be swept (keys: " + keys +
                "; the cells of a sheet share their size, length and folder)");
  }
  // A LoRA axis is labelled by its LoRA ("kinora-tiny-big"), so two of them
  // read apart; the preset's one LoRA ("lora") as "lora".
  axis.label = axis.key == "lora" ? std::string("lora")
               : lora             ? fs::path(axis.key.substr(5)).stem().string()
                                  : axis.key;
  if (axis.label.empty()) axis.label = "lora";
  // Values: comma-separated; a prompt's own commas would split it, so the
  // prompt axis takes '|' between values.
  const char sep = axis.key == "prompt" || axis.key == "negative_prompt" ? '|' : ',';
  const std::string list = arg.substr(eq + 1);
  std::size_t start = 0;
  while (true) {
    const auto end = list.find(sep, start);
    std::string v = list.substr(start, end == std::string::npos ? std::string::npos : end - start);
    while (!v.empty() && v.front() == ' ') v.erase(0, 1);
    while (!v.empty() && v.back() == ' ') v.pop_back();
    if (v.empty()) throw Error("sweep: --axis '" + arg + "': an empty value");
    // The same value, or the same number written otherwise ("1" and "1.0").
    const auto number = [&](const std::string& text) -> std::optional<double> {
      if (sep == '|' || !is_decimal(text)) return std::nullopt;  // a prompt is text
      return std::strtod(text.c_str(), nullptr);
    };
    for (const auto& earlier : axis.values) {
      const auto a = number(earlier), b = number(v);
      if (earlier == v || (a && b && *a == *b))
        throw Error("sweep: --axis '" + arg + "': '" + v + "' is given twice" +
                    (earlier != v ? " (as '" + earlier + "')" : std::string()));
    }
    axis.values.push_back(v);
    if (end == std::string::npos) break;
    start = end + 1;
  }
  if (lora) {
    // "off" and a strength of 0 render the same cell: one of them, or neither
    // (then "off" goes first).
    std::string off;
    for (const auto& v : axis.values) {
      if (v != kOff && parse_strength(v, axis.key) != 0) continue;
      if (!off.empty())
        throw Error("sweep: --axis '" + arg + "': '" + v + "' is given twice (as '" + off +
                    "': a LoRA at strength 0 is off)");
      off = v;
    }
    if (off.empty()) axis.values.insert(axis.values.begin(), kOff);
  }
  return axis;
}

SweepPlan plan_sweep(const Preset& base_in, const std::vector<SweepAxis>& axes) {
  if (axes.empty()) throw Error("sweep: give at least one --axis KEY=V1,V2,…");
  // A preset without a seed: the seed of the cells an earlier run of this
  // sweep left (so that it resumes), else a random one.
  const bool seed_swept =
      std::any_of(axes.begin(), axes.end(), [](const SweepAxis& a) { return a.key == "seed"; });
  if (base_in.seed < 0 && !seed_swept) {
    Preset probe = base_in;
    probe.seed = 0;
    Preset chosen = base_in;
    chosen.seed = pipeline::resolve_seed(pipeline::kRandomSeed);
    const auto probed = plan_sweep(probe, axes);
    bool found = false;
    for (const auto& c : probed.cells) {
      const auto path = c.preset.output_path();
      std::error_code ec;
      if (!fs::is_regular_file(path, ec)) continue;
      try {
        Preset earlier = c.preset;
        earlier.seed = Preset::restored(media::read_embedded_parameters(path), path.string()).seed;
        if (holds_render_of(path, earlier)) {
          chosen.seed = earlier.seed;
          found = true;
          break;
        }
      } catch (const Error&) {
      }
    }
    // No cell left, but the sheet: the seed its first cell was made with.
    if (!found) {
      try {
        Preset earlier = base_in;
        earlier.seed =
            Preset::restored(media::read_embedded_parameters(probed.sheet), probed.sheet.string())
                .seed;
        if (const auto again = plan_sweep(earlier, axes); is_sheet_of(again.sheet, again))
          chosen.seed = earlier.seed;
      } catch (const Error&) {
      }
    }
    return plan_sweep(chosen, axes);
  }
  std::set<std::string> keys;
  std::size_t total = 1;
  for (const auto& a : axes) {
    if (!keys.insert(a.key).second) throw Error("sweep: axis '" + a.key + "' is given twice");
    total *= a.values.size();
  }
  if (total > kMaxCells)
    throw Error("sweep: " + std::to_string(total) + " cells, more than " +
                std::to_string(kMaxCells) + "; sweep fewer values");
  Preset base = base_in;
  base.seed = pipeline::resolve_seed(base.seed);
  if (base.output.empty()) throw Error("sweep: the preset has no output to name the cells after");
  // The LoRA axes, each naming its LoRA of the preset by its path, so that
  // an axis still finds it after another axis has taken one out ("off"):
  // "lora" with no single LoRA, a name the preset has twice, or two axes on
  // one LoRA are errors.
  // A name is matched to the preset's LoRAs as written, then by the file it
  // finds ("ink" and "ink.safetensors", or a path to the same file).
  const auto file_of = [&](const std::string& name) -> fs::path {
    try {
      return fs::weakly_canonical(pipeline::resolve_lora_file(base, name));
    } catch (const std::exception&) {
      return {};  // not found: the render says so
    }
  };
  std::vector<SweepAxis> applied = axes;
  std::set<int> swept;
  std::set<fs::path> added;
  for (auto& a : applied) {
    if (!is_lora_axis(a.key)) continue;
    int i = lora_index(base, a, file_of);
    const auto file = i < 0 ? file_of(a.key.substr(5)) : fs::path();
    for (std::size_t j = 0; i < 0 && !file.empty() && j < base.loras.size(); ++j)
      if (file_of(base.loras[j].path) == file) i = static_cast<int>(j);
    if (i < 0) {  // a LoRA the sweep adds
      if (!file.empty() && !added.insert(file).second)
        throw Error("sweep: two axes name the LoRA " + file.string());
      continue;
    }
    const auto& path = base.loras[static_cast<std::size_t>(i)].path;
    if (!swept.insert(i).second) throw Error("sweep: two axes name the LoRA " + path);
    // The same file under another name in the preset ("ink" and
    // "styles/../ink.safetensors"): its "off" column would keep that one on.
    if (const auto mine = file_of(path); !mine.empty())
      for (std::size_t j = 0; j < base.loras.size(); ++j)
        if (static_cast<int>(j) != i && file_of(base.loras[j].path) == mine)
          throw Error("sweep: axis '" + a.key + "': the preset has that LoRA 2 times (" + path +
                      " and " + base.loras[j].path + " are both " + mine.string() +
                      "); keep one of them to sweep it");
    a.key = "lora:" + path;
  }
  // Two axes on LoRAs of one file name ("ink" and "styles/ink"), or a LoRA
  // named like a key ("seed"): labelled by the LoRA's name as the axis gives
  // it, so the cells and the sheet read apart.
  std::vector<SweepAxis> labelled = axes;
  for (std::size_t a = 0; a < labelled.size(); ++a) {
    if (!is_lora_axis(labelled[a].key) || labelled[a].key == "lora") continue;
    bool clash = kSweepable.count(labelled[a].label) > 0;
    for (std::size_t b = 0; b < axes.size(); ++b)
      clash = clash || (b != a && axes[b].label == labelled[a].label);
    if (clash) labelled[a].label = labelled[a].key;  // "lora:styles/ink"
  }

  SweepPlan plan;
  plan.axes = labelled;
  plan.columns = static_cast<int>(axes[0].values.size());
  plan.rows = static_cast<int>(total) / plan.columns;
  const fs::path out = base.output_path();
  const std::string ext = out.extension().string();
  // The sheet is named after its axes too: a sweep over other keys of the
  // same preset has a sheet of its own.
  std::string sheet = out.stem().string() + "-sweep";
  for (const auto& a : labelled) sheet.append("-").append(file_safe(a.label));
  plan.sheet = out.parent_path() / (sheet + (base.frames == 1 ? ".png" : ".mp4"));
  std::vector<std::size_t> at(axes.size(), 0);  // the odometer: axis 0 fastest
  std::set<fs::path> outputs;
  for (std::size_t k = 0; k < total; ++k) {
    SweepCell cell;
    cell.preset = base;
    std::string stem = out.stem().string();
    for (std::size_t a = 0; a < axes.size(); ++a) {
      const auto& v = axes[a].values[at[a]];
      apply_value(cell.preset, applied[a], v);
      cell.values.push_back(v);
      stem.append("-").append(file_safe(labelled[a].label)).append("=").append(file_safe(v));
    }
    // Beside the preset's output, written as the preset writes it (relative to
    // its folder when it is).
    cell.preset.output = (fs::path(base.output).parent_path() / (stem + ext)).string();
    if (!outputs.insert(cell.preset.output).second)
      throw Error("sweep: two cells would both be " + cell.preset.output +
                  " (values that differ only in characters a file name cannot hold)");
    plan.cells.push_back(std::move(cell));
    for (std::size_t a = 0; a < axes.size(); ++a) {
      if (++at[a] < axes[a].values.size()) break;
      at[a] = 0;
    }
  }
  return plan;
}

torch::Tensor contact_sheet(const SweepPlan& plan, const std::vector<torch::Tensor>& frames) {
  if (frames.size() != plan.cells.size() || frames.empty())
    throw Error("contact sheet: one clip per cell");
  const int64_t f = frames[0].size(0), h = frames[0].size(1), w = frames[0].size(2);
  for (const auto& c : frames)
    if (c.dim() != 4 || c.size(0) != f || c.size(1) != h || c.size(2) != w || c.size(3) != 3)
      throw Error("contact sheet: the cells differ in size or length");
  // Labels at a size that reads beside the cells: 1× up to 160 px, then more.
  const int scale = std::max<int>(1, static_cast<int>(w / 160) + 1);
  const int pad = 3 * scale, gap = 2 * scale;
  // Column headers: the first axis' values; row labels: the other axes'.
  std::vector<std::string> row_labels(static_cast<std::size_t>(plan.rows));
  for (int r = 0; r < plan.rows; ++r) {
    const auto& cell = plan.cells[static_cast<std::size_t>(r * plan.columns)];
    std::string s;
    for (std::size_t a = 1; a < plan.axes.size(); ++a)
      s.append(a > 1 ? " " : "").append(plan.axes[a].label).append("=").append(cell.values[a]);
    row_labels[static_cast<std::size_t>(r)] = s;
  }
  std::string corner = plan.axes[0].label;
  if (plan.axes.size() > 1) corner = "rows \\ " + corner;
  int left = label_size(corner, scale).width;
  for (const auto& s : row_labels) left = std::max(left, label_size(s, scale).width);
  left += 2 * pad;
  const int top = label_size("X", scale).height + 2 * pad;
  int64_t width = left + plan.columns * (w + gap), height = top + plan.rows * (h + gap);
  width += width % 2, height += height % 2;
  // The labels on the background, the same in every frame; then the cells.
  auto labels = torch::full({height, width, 3}, 32, torch::kUInt8);
  const std::array<uint8_t, 3> white = {235, 235, 235}, grey = {150, 150, 150};
  draw_label(labels, pad, pad, corner, grey, scale);
  for (int c = 0; c < plan.columns; ++c) {
    // A value wider than its cell is cut to fit.
    std::string v = plan.axes[0].values[static_cast<std::size_t>(c)];
    if (label_size(v, scale).width > w) {
      while (v.size() > 1 && label_size(v + "..", scale).width > w) v.pop_back();
      v += "..";
    }
    draw_label(labels, left + c * static_cast<int>(w + gap), pad, v, white, scale);
  }
  for (int r = 0; r < plan.rows; ++r)
    draw_label(labels, pad, top + r * static_cast<int>(h + gap) + pad,
               row_labels[static_cast<std::size_t>(r)], white, scale);
  auto sheet = labels.unsqueeze(0).expand({f, -1, -1, -1}).clone();
  for (int r = 0; r < plan.rows; ++r)
    for (int c = 0; c < plan.columns; ++c) {
      const auto& clip = frames[static_cast<std::size_t>(r * plan.columns + c)];
      sheet.slice(1, top + r * (h + gap), top + r * (h + gap) + h)
          .slice(2, left + c * (w + gap), left + c * (w + gap) + w)
          .copy_(clip);
    }
  return sheet;
}

namespace {
// check_sweep's work, and the sheet's checked destination (run_sweep writes there).
// `own_record[i]`: cell i's file is gone and its parameters file records this
// very cell, which its render writes again.
std::vector<bool> check_all(const SweepPlan& plan, bool overwrite, media::OutputTarget& sheet,
                            std::vector<bool>* own_record = nullptr) {
  // Every LoRA of every cell found, read and matched against the model, once
  // per distinct file: a LoRA that does not fit stops the sweep now.
  {
    Preset all = plan.cells.at(0).preset;
    all.loras.clear();
    std::set<std::string> seen;
    for (const auto& c : plan.cells)
      for (const auto& l : c.preset.loras)
        if (seen.insert(l.path).second) all.loras.push_back(l);
    pipeline::check_loras(all);
  }
  // Every cell's sampler of the model's kind, and no two values of a sampler
  // axis naming one sampler ("unipc" and "flow_unipc").
  {
    std::set<std::string> seen;
    for (const auto& c : plan.cells)
      if (seen.insert(c.preset.sampler).second) pipeline::check_sampler(c.preset);
    for (std::size_t a = 0; a < plan.axes.size(); ++a) {
      if (plan.axes[a].key != "sampler") continue;
      const auto space = pipeline::sampler_space(pipeline::family_for(plan.cells[0].preset));
      std::map<std::string, std::string> named;  // sampler → the value naming it
      for (const auto& v : plan.axes[a].values) {
        const auto sampler = schedulers::canonical_scheduler_name(v, space);
        if (const auto [at, fresh] = named.emplace(sampler, v); !fresh)
          throw Error("sweep: axis 'sampler': '" + v + "' and '" + at->second +
                      "' are both the sampler " + sampler + " for this model");
      }
    }
  }
  // Every destination: a cell that exists and is not this cell's render stops
  // the sweep before anything is rendered; one that holds it is reused.
  std::vector<bool> reuse(plan.cells.size(), false);
  if (own_record) own_record->assign(plan.cells.size(), false);
  // No cell, and not the sheet, is a file a cell reads (a model or LoRA named
  // like one): all checked before anything renders.
  for (const auto& c : plan.cells) {
    check_not_an_input(c.preset.output_path(), c.preset);
    check_not_an_input(plan.sheet, c.preset);
  }
  for (std::size_t i = 0; i < plan.cells.size(); ++i) {
    const auto& p = plan.cells[i].preset;
    const auto path = p.output_path();
    std::error_code ec;
    if (!overwrite && fs::exists(fs::symlink_status(path, ec))) {
      const auto why = media::cut_short(path);
      if (!why.empty() && media::is_kinora_output(path))
        throw Error("sweep: " + path.string() + " does not read as a complete render (" + why +
                    "), though it is Kinora's; delete it and its .json to have this cell "
                    "rendered again");
      if (why.empty() && holds_render_of(path, p)) {
        if (const auto changed = changed_since(media::read_embedded_parameters(path), p);
            !changed.empty())
          throw Error("sweep: " + path.string() + " was rendered from another " + changed[0] +
                      " (the file has changed since); give --overwrite to render the cells "
                      "again, or another output to keep these");
        reuse[i] = true;
        continue;
      }
      throw Error("sweep: " + path.string() +
                  " exists and does not hold this cell's render (another preset's, or no "
                  "Kinora output); move it, or give --overwrite to render every cell again "
                  "and replace it");
    }
    Preset snapped = p;
    pipeline::snap_sizes(snapped);
    check_one_image(p, snapped);
    // The parameters file of this very cell, whose file is gone (deleted to
    // have it made again): the render writes the same record there.
    const fs::path side = path.string() + ".json";
    bool own = false;
    if (!fs::exists(fs::symlink_status(path, ec)) && media::is_kinora_sidecar(side)) try {
        own = holds_render_of(read_json_file(side), side.string(), p);
      } catch (const Error&) {
      }
    if (own_record) (*own_record)[i] = own;
    media::prepare_output(path, p.format, snapped.frames, overwrite || own);
  }
  // The sheet: this sweep's own sheet is made again from its cells; anything
  // else of that name (another sweep's sheet included) only with overwrite.
  Preset snapped = plan.cells[0].preset;
  pipeline::snap_sizes(snapped);
  sheet = media::prepare_output(plan.sheet, "", snapped.frames,
                                overwrite || is_sheet_of(plan.sheet, plan));
  return reuse;
}
}  // namespace

std::vector<bool> check_sweep(const SweepPlan& plan, bool overwrite) {
  media::OutputTarget sheet;
  return check_all(plan, overwrite, sheet);
}

SweepResult run_sweep(pipeline::Pipeline& pipe, const SweepPlan& plan, const SweepCallbacks& cb,
                      bool overwrite) {
  media::OutputTarget sheet_target;
  std::vector<bool> own_record;
  const auto reuse = check_all(plan, overwrite, sheet_target, &own_record);

  SweepResult result;
  result.sheet = plan.sheet;
  // Every cell there and this sweep's complete sheet too: it is the sheet
  // these cells make, left as it is.
  std::error_code ec;
  result.sheet_kept = !overwrite &&
                      std::all_of(reuse.begin(), reuse.end(), [](bool b) { return b; }) &&
                      fs::is_regular_file(plan.sheet, ec) && is_sheet_of(plan.sheet, plan) &&
                      media::cut_short(plan.sheet).empty();
  std::vector<torch::Tensor> clips;
  json sheet_meta;
  for (std::size_t i = 0; i < plan.cells.size(); ++i) {
    const auto& cell = plan.cells[i];
    const auto path = cell.preset.output_path();
    if (cb.on_cell) cb.on_cell(i, plan.cells.size(), cell_name(plan, cell.values));
    if (reuse[i]) {
      if (!result.sheet_kept) clips.push_back(media::read_frames(path));
      if (sheet_meta.is_null()) sheet_meta = media::read_embedded_parameters(path);
      if (cb.on_reused) cb.on_reused(path);
      ++result.reused;
    } else {
      auto r = render(pipe, cell.preset, cb.run, overwrite || own_record[i]);
      // The sheet shows the cells as their files hold them (a video's frames
      // as decoded), so a sweep run again makes the same sheet from them.
      clips.push_back(media::read_frames(path));
      if (sheet_meta.is_null()) sheet_meta = r.metadata;
      ++result.rendered;
    }
    result.cells.push_back(path);
  }
  if (result.sheet_kept) return result;
  // The sheet: the first cell's parameters (so `restore` gives a preset that
  // renders one of its cells) and the sweep's axes and cells.
  sheet_meta["sweep"] = sweep_record(plan);
  sheet_meta["preset"]["output"] = plan.sheet.filename().string();
  media::WriteOptions o;
  o.fps = plan.cells[0].preset.fps;
  o.crf = plan.cells[0].preset.crf;
  o.metadata_json = sheet_meta.dump();
  media::write_output(sheet_target, contact_sheet(plan, clips), o, cb.run.cancel);
  return result;
}

}  // namespace kinora::render
