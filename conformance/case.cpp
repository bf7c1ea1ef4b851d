#include "conformance/case.h"

#include "base/error.h"
#include "base/json.h"
#include "io/safetensors.h"

namespace kinora::conformance {

const torch::Tensor& Case::input(const std::string& name) const {
  const auto it = inputs.find(name);
  if (it == inputs.end()) fail_file(path, "case has no input '" + name + "'");
  return it->second;
}

namespace {
// Python's json writes non-finite floats as bare NaN, Infinity and -Infinity
// (diffusers' lambda_min_clipped is -Infinity), which JSON lacks: outside
// strings they are read as the strings "NaN", "Infinity" and "-Infinity".
std::string quote_python_constants(const std::string& text) {
  std::string out;
  bool in_string = false;
  for (std::size_t i = 0; i < text.size(); ++i) {
    const char ch = text[i];
    if (in_string) {
      out += ch;
      if (ch == '\\' && i + 1 < text.size())
        out += text[++i];
      else if (ch == '"')
        in_string = false;
      continue;
    }
    if (ch == '"') in_string = true;
    bool quoted = false;
    for (const std::string word : {"-Infinity", "Infinity", "NaN"})
      if (text.compare(i, word.size(), word) == 0) {
        out.append("\"").append(word).append("\"");
        i += word.size() - 1;
        quoted = true;
        break;
      }
    if (!quoted) out += ch;
  }
  return out;
}
}  // namespace

Case load_case(const std::filesystem::path& path) {
  const auto file = io::SafetensorsFile::open(path);
  Case c;
  c.path = path;
  const auto& md = file->metadata();
  auto get = [&](const char* key, bool required) -> std::string {
    const auto it = md.find(key);
    if (it == md.end()) {
      if (required) fail_file(path, std::string("case metadata has no '") + key + "'");
      return {};
    }
    return it->second;
  };
  c.component = get("component", true);
  c.weights = get("weights", false);
  c.note = get("note", false);
  const std::string config = get("config", false);
  c.config = config.empty()
                 ? nlohmann::json::object()
                 : parse_json(quote_python_constants(config), path.string() + " (case config)");
  if (const std::string rtol = get("rtol", false); !rtol.empty()) {
    try {
      c.rtol = std::stod(rtol);
    } catch (const std::exception&) {
      fail_file(path, "case rtol '" + rtol + "' is not a number");
    }
  }
  for (const auto& t : file->tensors()) {
    // Copy out of the mapping: cases are small and outlive nothing here.
    if (t.name.rfind("input.", 0) == 0)
      c.inputs[t.name.substr(6)] = file->get(t.name).clone();
    else if (t.name.rfind("output.", 0) == 0)
      c.outputs[t.name.substr(7)] = file->get(t.name).clone();
  }
  if (c.outputs.empty()) fail_file(path, "case has no output.* tensors");
  return c;
}

}  // namespace kinora::conformance
