#pragma once
// Loading a module's parameters from a checkpoint by name.
//
// Every module registers its parameters under the original checkpoint's dotted
// names; other layouts are a renaming of the file's keys, applied here once.
#include <torch/torch.h>

#include <functional>
#include <map>
#include <string>

#include "io/checkpoint.h"
#include "io/layout.h"

namespace kinora::layers {

// Maps a checkpoint key to the module's name for it; "" ignores the key.
using Rename = std::function<std::string(const std::string& key)>;

// Points every parameter and buffer of `root` at the checkpoint tensor of the
// same (renamed) name: zero-copy views of the mapping, in the stored dtype (FP8
// kept as bytes for Linear layers). Throws kinora::Error naming the file for a
// missing tensor or a wrong shape. `what` names the model in messages.
// `assembled` gives tensors the caller built from several of the file's (a
// fused q/k/v from a layout that stores them apart), by module name; they are
// used as they are, and the file's keys that map to those names are ignored.
void load_parameters(torch::nn::Module& root, const io::Checkpoint& ck, const Rename& rename,
                     const std::string& what,
                     const std::map<std::string, torch::Tensor>& assembled = {});

// Strips `prefix` when the key starts with it.
std::string strip(const std::string& key, const std::string& prefix);

// A checkpoint opened for one model, with what its names and shapes say it is.
struct OpenedCheckpoint {
  std::shared_ptr<io::Checkpoint> checkpoint;
  io::Detection detection;
};
// Opens `path` and checks that it holds one of `families`; otherwise a
// kinora::Error: "PATH: not a WHAT checkpoint (recognised as …)".
OpenedCheckpoint open_checkpoint(const std::filesystem::path& path,
                                 std::initializer_list<io::Family> families,
                                 const std::string& what);
// Keys under `prefix` (others belong to other models in the file and are
// ignored), prefix stripped, then renamed by `layout` when given.
Rename prefixed(const std::string& prefix,
                std::function<std::string(const std::string&)> layout = {});

}  // namespace kinora::layers
