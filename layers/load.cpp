#include "layers/load.h"

#include <map>

#include "base/error.h"
#include "layers/linear.h"

namespace kinora::layers {

std::string strip(const std::string& key, const std::string& prefix) {
  return key.rfind(prefix, 0) == 0 ? key.substr(prefix.size()) : key;
}

OpenedCheckpoint open_checkpoint(const std::filesystem::path& path,
                                 std::initializer_list<io::Family> families,
                                 const std::string& what) {
  OpenedCheckpoint o;
  o.checkpoint = std::make_shared<io::Checkpoint>(io::Checkpoint::open(path));
  o.detection = io::detect_layout(o.checkpoint->shapes(), families);
  for (auto f : families)
    if (o.detection.family == f) return o;
  fail_file(path, "not a " + what + " checkpoint (recognised as " +
                      io::family_name(o.detection.family) + ")");
}

Rename prefixed(const std::string& prefix, std::function<std::string(const std::string&)> layout) {
  return [prefix, layout = std::move(layout)](const std::string& key) {
    if (!prefix.empty() && key.rfind(prefix, 0) != 0) return std::string();
    const auto k = key.substr(prefix.size());
    return layout ? layout(k) : k;
  };
}

namespace {
std::string shape_str(at::IntArrayRef s) {
  return c10::str(s);
}
}  // namespace

void load_parameters(torch::nn::Module& root, const io::Checkpoint& ck, const Rename& rename,
                     const std::string& what,
                     const std::map<std::string, torch::Tensor>& assembled) {
  std::map<std::string, std::string> source;  // module name → checkpoint key
  for (const auto& key : ck.names()) {
    const std::string name = rename(key);
    if (name.empty() || assembled.count(name)) continue;
    const auto [it, inserted] = source.emplace(name, key);
    if (!inserted)
      fail_file(ck.path(),
                "tensors '" + it->second + "' and '" + key + "' both map to '" + name + "'");
  }

  // FP8-aware Linear layers first: their weight may stay as bytes.
  std::map<std::string, LinearImpl*> linears;
  for (const auto& item : root.named_modules("", /*include_self=*/true))
    if (auto* l = dynamic_cast<LinearImpl*>(item.value().get())) linears[item.key()] = l;

  torch::NoGradGuard no_grad;
  auto find = [&](const std::string& name) -> const std::string& {
    const auto it = source.find(name);
    if (it == source.end())
      fail_file(ck.path(),
                "missing tensor for '" + name + "': not a complete " + what + " checkpoint");
    return it->second;
  };
  auto check_shape = [&](const std::string& key, const std::string& name,
                         at::IntArrayRef expected) {
    const auto& info = ck.info(key);
    if (at::IntArrayRef(info.shape) != expected)
      fail_file(ck.path(), "tensor '" + key + "' has shape " + shape_str(info.shape) +
                               ", but this " + what + " needs " + shape_str(expected) + " for '" +
                               name + "'");
  };

  for (auto& item : root.named_parameters(/*recurse=*/true)) {
    const std::string& name = item.key();
    if (const auto a = assembled.find(name); a != assembled.end()) {
      if (a->second.sizes() != item.value().sizes())
        fail_file(ck.path(), "the tensors for '" + name + "' make shape " +
                                 shape_str(a->second.sizes()) + ", but this " + what + " needs " +
                                 shape_str(item.value().sizes()));
      item.value().set_data(a->second);
      continue;
    }
    const std::string& key = find(name);
    check_shape(key, name, item.value().sizes());
    const auto& info = ck.info(key);
    const auto dot = name.rfind('.');
    const std::string owner = dot == std::string::npos ? "" : name.substr(0, dot);
    const auto lin = linears.find(owner);
    if (io::is_fp8(info.dtype) && lin != linears.end() && name.substr(dot + 1) == "weight") {
      lin->second->fp8 = info.dtype;
      lin->second->weight.set_data(ck.file_of(key).raw(key).view(info.shape));
      // ComfyUI's scaled-fp8 files carry the weight's scale beside it.
      const std::string scale_key =
          key.substr(0, key.size() - std::string("weight").size()) + "scale_weight";
      if (ck.contains(scale_key))
        lin->second->scale = ck.get(scale_key).to(torch::kFloat32).item<float>();
      continue;
    }
    item.value().set_data(ck.get(key));
  }
  for (auto& item : root.named_buffers(/*recurse=*/true)) {
    const auto it = source.find(item.key());
    if (it == source.end()) continue;  // computed buffers (RoPE tables…) are not stored
    check_shape(it->second, item.key(), item.value().sizes());
    item.value().set_data(ck.get(it->second).to(item.value().scalar_type()));
  }
}

}  // namespace kinora::layers
