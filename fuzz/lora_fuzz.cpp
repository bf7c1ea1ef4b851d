// A LoRA file on arbitrary bytes, resolved against the Wan tiny DiT (and
// described without it): a report, or a kinora::Error naming the file. Keys,
// shapes and values are the attacker's; nothing may crash or read out of
// bounds, and every update that resolves fits the module it names.
#include <filesystem>
#include <memory>

#include "base/error.h"
#include "diffusion/wan_dit.h"
#include "fuzz/fuzz_util.h"
#include "lora/lora.h"

namespace {
std::unique_ptr<kinora::diffusion::WanModel> g_model;
}

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  g_model = std::make_unique<kinora::diffusion::WanModel>(
      kinora::diffusion::WanModel::load(KINORA_FUZZ_FIXTURES "/wan21_dit_tiny.safetensors"));
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, std::size_t size) {
  const auto path = kinora::fuzz::write_scratch("lora.safetensors", data, size);
  try {
    (void)kinora::lora::describe(path);
    const auto r = kinora::lora::resolve(path, *g_model);
    kinora::lora::Applied applied;
    std::vector<std::pair<const kinora::lora::Resolved*, double>> list = {{&r, 0.5}};
    applied.apply(*g_model, list, kinora::lora::Mode::Merged);
    applied.clear();
  } catch (const kinora::Error&) {
  }
  return 0;
}
