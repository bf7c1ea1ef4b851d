#include "cli/info.h"

#include <cstdio>
#include <map>
#include <optional>
#include <ostream>
#include <regex>
#include <vector>

#include "base/error.h"
#include "base/json.h"
#include "diffusion/wan_dit.h"
#include "io/checkpoint.h"
#include "io/layout.h"
#include "lora/lora.h"
#include "text/clip_tokenizer.h"
#include "text/tokenizer.h"

namespace kinora::cli {

namespace {
std::string human_bytes(uint64_t n) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  double v = static_cast<double>(n);
  int u = 0;
  while (v >= 1024.0 && u < 4) {
    v /= 1024.0;
    ++u;
  }
  char buf[48];
  std::snprintf(buf, sizeof buf, u ? "%.2f %s" : "%.0f %s", v, units[u]);
  return buf;
}
}  // namespace

namespace {
// The tokenizers beside the weights: a SentencePiece model (T5's, umT5's
// spiece.model) or a CLIP tokenizer's folder (vocab.json and merges.txt). True
// when `path` is one of them and was shown.
bool print_tokenizer_info(const std::filesystem::path& path, std::ostream& out) {
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec)) {
    if (!std::filesystem::is_regular_file(path / "vocab.json", ec))
      throw Error(path.string() +
                  ": a folder; `kinora info` shows a safetensors file, a sharded model's "
                  "*.safetensors.index.json, a SentencePiece .model or a CLIP tokenizer's folder "
                  "(vocab.json and merges.txt)");
    const auto t = text::ClipTokenizer::load(path);
    out << path.string() << "\n  family:   CLIP tokenizer (vocab.json and merges.txt), "
        << t.vocab_size() << " tokens; FLUX and SDXL take it as --clip-tokenizer\n";
    return true;
  }
  if (path.extension() != ".model") return false;
  const auto t = text::Tokenizer::load(path);
  out << path.string() << "\n  family:   SentencePiece tokenizer, " << t.vocab_size()
      << " pieces; Wan (umT5) and FLUX (T5) take it as --tokenizer\n";
  return true;
}
}  // namespace

namespace {
// A shard of a sharded checkpoint ("NAME-00001-of-00002.safetensors", more
// than one shard) holds part of a model: refused, with the index that gives
// the whole model where one beside it names the shard.
void refuse_shard(const std::filesystem::path& path) {
  namespace fs = std::filesystem;
  static const std::regex shard_name(R"((.+)-(\d+)-of-(\d+)\.safetensors)");
  std::smatch m;
  const std::string name = path.filename().string();
  if (!std::regex_match(name, m, shard_name)) return;
  const auto number = std::stoull(m[2].str()), count = std::stoull(m[3].str());
  if (count < 2 || number < 1 || number > count) return;
  const fs::path folder = path.parent_path().empty() ? fs::path(".") : path.parent_path();
  std::string msg = path.string();
  msg.append(": shard ")
      .append(std::to_string(number))
      .append(" of ")
      .append(std::to_string(count))
      .append(" of a sharded checkpoint, part of a model; ");
  // The usual index name first, then any index beside it that names the shard.
  std::vector<fs::path> indexes{folder / (m[1].str() + ".safetensors.index.json")};
  std::error_code ec;
  for (fs::directory_iterator it(folder, ec), end; !ec && it != end; it.increment(ec)) {
    const std::string f = it->path().filename().string();
    const std::string tail = ".safetensors.index.json";
    if (f.size() > tail.size() && f.compare(f.size() - tail.size(), tail.size(), tail) == 0 &&
        it->path() != indexes.front())
      indexes.push_back(it->path());
  }
  // Read as names only: an index whose other shards are missing still names this one.
  for (const auto& index : indexes) {
    bool names_it = false;
    try {
      const auto j = read_json_file(index);
      if (const auto map = j.find("weight_map"); map != j.end() && map->is_object())
        for (const auto& entry : map->items())
          names_it = names_it || (entry.value().is_string() && entry.value() == name);
    } catch (const Error&) {
      // not an index that can be read: not this shard's
    }
    if (names_it) {
      msg.append("give its index, ").append(index.string()).append(", for the whole model");
      throw Error(msg);
    }
  }
  msg.append("a sharded model is given by its index (")
      .append(indexes.front().filename().string())
      .append("), which is not beside this shard");
  throw Error(msg);
}

// The task a Wan DiT was trained for: i2v for the Wan 2.1 I2V (its image
// cross-attention) and for a model that takes the image's latents beside the
// noise (16 + 4 mask + 16 channels: the Wan 2.2 I2V-A14B experts), ti2v for
// the Wan 2.2 TI2V-5B, t2v otherwise.
std::string wan_task(const diffusion::WanConfig& c) {
  if (c.model_type == "i2v" || c.in_dim == c.out_dim + 20) return "i2v";
  if (c.variant() == "Wan 2.2 TI2V 5B") return "ti2v";
  return c.model_type;
}
}  // namespace

void print_info(const std::filesystem::path& path, std::ostream& out) {
  if (print_tokenizer_info(path, out)) return;
  refuse_shard(path);
  const auto ck = io::Checkpoint::open(path);
  std::map<std::string, std::size_t> dtypes;
  for (const auto& name : ck.names()) ++dtypes[io::dtype_name(ck.info(name).dtype)];
  const auto det = io::detect_layout(ck.shapes());

  out << path.string() << "\n";
  out << "  files:    " << ck.shards().size() << (ck.sharded() ? " (sharded)" : "") << "\n";
  out << "  tensors:  " << ck.size() << "\n";
  out << "  dtypes:  ";
  for (const auto& [d, n] : dtypes) out << " " << d << " ×" << n;
  out << "\n";
  out << "  size:     " << human_bytes(ck.total_bytes()) << " (" << ck.total_bytes() << " bytes)\n";
  if (det.family == io::Family::Unknown) {
    // A LoRA (or one of its relatives) is no model of its own.
    std::optional<lora::Report> lora;
    std::string damaged;  // a LoRA's keys, with what makes it unusable
    try {
      lora = lora::describe(path);
    } catch (const Error& e) {
      const std::string what = e.what(), prefix = path.string() + ": ";
      if (what.find("holds no LoRA keys") == std::string::npos)
        damaged = what.rfind(prefix, 0) == 0 ? what.substr(prefix.size()) : what;
    }
    if (lora) {
      out << "  family:   LoRA (" << lora->format << ", " << lora->total << " updates";
      if (lora->rank > 0) out << ", rank " << lora->rank;
      if (lora->alpha) out << ", alpha " << *lora->alpha;
      out << "); `kinora lora inspect " << path.string()
          << " --model MODEL` matches it against a model\n";
    } else if (!damaged.empty()) {
      out << "  family:   LoRA, not usable: " << damaged << "\n";
    } else {
      out << "  family:   not recognised (no known model's tensor names)\n";
    }
  } else {
    out << "  family:   " << io::family_name(det.family) << "\n";
    out << "  layout:   " << io::layout_name(det.layout);
    if (!det.prefix.empty()) out << " (keys under '" << det.prefix << "')";
    out << "\n";
    out << "  shapes:   " << det.summary << "\n";
    for (const auto& part : io::detect_parts(ck.shapes()))
      if (part.prefix != det.prefix)
        out << "  also:     " << io::family_name(part.family) << " under '" << part.prefix << "' ("
            << part.summary << ")\n";
    if (det.family == io::Family::WanDiT) {
      std::optional<diffusion::WanConfig> c;
      try {
        c = diffusion::WanConfig::from_checkpoint(ck);
      } catch (const Error& e) {
        // Not a whole model (tensors missing): said, and the rest shown.
        const std::string what = e.what(), prefix = path.string() + ": ";
        out << "  model:    not complete: "
            << (what.rfind(prefix, 0) == 0 ? what.substr(prefix.size()) : what) << "\n";
      }
      if (c)
        out << "  model:    " << c->variant() << ", " << c->num_heads << " heads × "
            << c->head_dim() << ", " << wan_task(*c) << "\n";
      const auto role = diffusion::wan22_expert_role(path);
      if (!role.empty())
        out << "  expert:   Wan 2.2 A14B " << role
            << " (by its path): the high-noise expert runs while t ≥ "
            << diffusion::wan22_expert_boundary(false) << " for text-to-video, "
            << diffusion::wan22_expert_boundary(true) << " for image-to-video\n";
    }
  }
  if (!ck.metadata().empty()) {
    out << "  metadata:\n";
    for (const auto& [k, v] : ck.metadata()) {
      std::string shown =
          v.size() > 400 ? v.substr(0, 400) + "… (" + std::to_string(v.size()) + " chars)" : v;
      out << "    " << k << " = " << shown << "\n";
    }
  }
}

}  // namespace kinora::cli
