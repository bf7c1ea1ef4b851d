// A sharded checkpoint's index (*.safetensors.index.json) on arbitrary bytes,
// beside one real shard: opened (every name then resolves to a tensor of its
// shard) or a kinora::Error.
#include <filesystem>

#include "base/error.h"
#include "fuzz/fuzz_util.h"
#include "io/checkpoint.h"

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  const auto shard = kinora::fuzz::scratch_dir() / "model-00001-of-00001.safetensors";
  std::filesystem::copy_file(KINORA_FUZZ_FIXTURES "/sched_wan_unipc_20.case.safetensors", shard,
                             std::filesystem::copy_options::overwrite_existing);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, std::size_t size) {
  const auto path = kinora::fuzz::write_scratch("model.safetensors.index.json", data, size);
  try {
    const auto ck = kinora::io::Checkpoint::open(path);
    for (const auto& name : ck.names())
      if (ck.info(name).nbytes() > ck.total_bytes()) __builtin_trap();
    (void)ck.metadata();
  } catch (const kinora::Error&) {
  }
  return 0;
}
