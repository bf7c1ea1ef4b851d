#pragma once
// Block swap: a model larger than the device's memory runs there with some of
// its repeated blocks (a DiT's transformer blocks) kept in host memory, each
// copied to the device just before the forward reaches it and dropped right
// after. The copy of the next host block runs on a side stream while the
// current block computes, so on a GPU it costs only what the copies do not
// hide. At most two host blocks are on the device at once.
//
// The blocks' host tensors are whatever the block holds while it is away (a
// merged LoRA's weights included); on a CUDA device they are moved to pinned
// memory on their first visit, so that the copies run asynchronously. On the
// CPU the same bookkeeping runs with plain copies (the tests' twin of the CUDA
// path; a render on the CPU never swaps).
#include <torch/torch.h>

#include <cstdint>
#include <memory>
#include <unordered_set>
#include <vector>

namespace kinora::layers {

class BlockSwap {
 public:
  // `blocks`: the modules the forward runs, in that order. The first `swapped`
  // of them stay on the host (their tensors must be CPU tensors); the caller
  // has placed the others on `device`.
  BlockSwap(std::vector<std::shared_ptr<torch::nn::Module>> blocks, int64_t swapped,
            torch::Device device);
  // Every host block back to its host tensors.
  ~BlockSwap();
  BlockSwap(const BlockSwap&) = delete;
  BlockSwap& operator=(const BlockSwap&) = delete;

  // Around block i's forward: before() makes its weights device tensors (and
  // starts copying the next host block); after() returns them to the host.
  void before(std::size_t i);
  void after(std::size_t i);
  // Drops a block copied ahead for the next forward (the end of a render: the
  // device memory goes back, and weights changed in between are read again).
  void release();

  int64_t swapped() const { return static_cast<int64_t>(swapped_); }
  std::size_t blocks() const { return blocks_.size(); }
  // Host blocks whose weights are on the device now (visiting or copied ahead).
  int64_t on_device() const;

 private:
  struct Visit;
  void bring(std::size_t i, bool ahead);

  std::vector<std::shared_ptr<torch::nn::Module>> blocks_;
  std::size_t swapped_;
  torch::Device device_;
  std::vector<std::unique_ptr<Visit>> visits_;  // per host block: its device copy, if any
  std::unordered_set<const void*> pinned_;      // the host tensors pinned so far
  struct Streams;
  std::unique_ptr<Streams> streams_;  // a GPU's copy stream; null on the CPU
};

// A module's parameters and buffers: what moving it moves; and their bytes.
std::vector<torch::Tensor> tensors_of(const torch::nn::Module& m);
int64_t tensor_bytes(const torch::nn::Module& m);

// Runs block i's forward `f` between swap->before(i) and swap->after(i) (just
// `f` without a swap); when `f` throws, every host block returns to the host.
template <class F>
void run_block(BlockSwap* swap, std::size_t i, F&& f) {
  if (!swap) {
    f();
    return;
  }
  swap->before(i);
  try {
    f();
  } catch (...) {
    swap->release();
    throw;
  }
  swap->after(i);
}

// How many of a model's `blocks` blocks (each `block_bytes`, `model_bytes` in
// all) to keep in host memory so that the model fits in `budget_bytes` of
// device memory, counting the two host blocks that visit at once: 0 when it
// fits whole, `blocks` when even the rest does not fit beside two visitors
// (the caller then says so).
int64_t blocks_to_swap(int64_t model_bytes, int64_t block_bytes, int64_t blocks,
                       int64_t budget_bytes);

}  // namespace kinora::layers
