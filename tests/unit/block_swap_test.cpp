// Block swap (layers/block_swap.h) through its CPU twin: the swapped blocks'
// weights stay in host memory and visit in turn, at most two at a time, and
// the model computes exactly what it computes whole, LoRAs included. The CUDA
// path (pinned memory, the copy stream and its events) is the same
// bookkeeping; test_device renders with it on a GPU.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "diffusion/flux_dit.h"
#include "diffusion/wan_dit.h"
#include "io/safetensors.h"
#include "layers/block_swap.h"
#include "layers/linear.h"
#include "lora/lora.h"
#include "pipeline/family.h"
#include "pipeline/pipeline.h"
#include "pipeline/preset.h"
#include "random_wan.h"
#include "test_util.h"
#include "tiny_preset.h"

using kinora::test::error_of;
using kinora::test::fixture;
using kinora::test::random_wan;
using kinora::test::TempDir;
using kinora::test::wan_forward;
using ::testing::HasSubstr;
using namespace kinora;

namespace {

// Where each block's tensors live now.
std::vector<std::vector<const void*>> storage_of(layers::Model& m) {
  std::vector<std::vector<const void*>> out;
  for (const auto& b : m.swappable_blocks()) {
    out.emplace_back();
    for (const auto& t : b->parameters()) out.back().push_back(t.data_ptr());
  }
  return out;
}

}  // namespace

TEST(BlockSwap, TheModelComputesWhatItComputesWhole) {
  auto m = random_wan(5);
  const auto whole = wan_forward(*m);
  for (const int64_t n : {1, 2, 3, 5, 9}) {
    auto s = random_wan(5);
    s->set_block_swap(n);
    s->to(torch::kCPU);
    ASSERT_NE(s->block_swap(), nullptr) << n;
    EXPECT_EQ(s->blocks_swapped(), std::min<int64_t>(n, 5));
    EXPECT_TRUE(torch::equal(wan_forward(*s), whole)) << n << " blocks swapped";
    EXPECT_TRUE(torch::equal(wan_forward(*s), whole)) << n << " blocks swapped, again";
  }
}

TEST(BlockSwap, AtMostTwoHostBlocksVisitAndEachReturnsToItsHostTensors) {
  auto m = random_wan(6);
  const auto before = storage_of(*m);
  m->set_block_swap(4);
  m->to(torch::kCPU);
  auto* swap = m->block_swap();
  ASSERT_NE(swap, nullptr);
  auto blocks = m->swappable_blocks();
  // The forward's order, driven by hand: block i visits between before(i) and
  // after(i), the next host block copied ahead.
  for (int pass = 0; pass < 2; ++pass)
    for (std::size_t i = 0; i < blocks.size(); ++i) {
      swap->before(i);
      EXPECT_LE(swap->on_device(), 2) << "block " << i;
      if (i < 4) {
        // Visiting: the block's tensors are the copies, not its host tensors.
        EXPECT_NE(blocks[i]->parameters()[0].data_ptr(), before[i][0]) << i;
      }
      swap->after(i);
      if (i < 4) {
        EXPECT_EQ(blocks[i]->parameters()[0].data_ptr(), before[i][0]) << i;
      }
    }
  // After the last block, the first host block waits copied ahead; release()
  // hands it back.
  EXPECT_EQ(swap->on_device(), 1);
  swap->release();
  EXPECT_EQ(swap->on_device(), 0);
  EXPECT_EQ(storage_of(*m), before);
  // Without a swap: the same tensors.
  m->set_block_swap(0);
  m->to(torch::kCPU);
  EXPECT_EQ(m->block_swap(), nullptr);
  EXPECT_EQ(storage_of(*m), before);
}

TEST(BlockSwap, AFailingBlockLeavesEveryBlockInHostMemory) {
  auto m = random_wan(3);
  const auto before = storage_of(*m);
  m->set_block_swap(3);
  m->to(torch::kCPU);
  auto* swap = m->block_swap();
  EXPECT_THROW(layers::run_block(swap, 1, [] { throw std::runtime_error("out of memory"); }),
               std::runtime_error);
  EXPECT_EQ(swap->on_device(), 0);
  EXPECT_EQ(storage_of(*m), before);
}

TEST(BlockSwap, FluxCountsItsDoubleThenSingleBlocks) {
  auto whole = diffusion::FluxModel::load(fixture("flux1_dev_tiny.safetensors"));
  auto swapped = diffusion::FluxModel::load(fixture("flux1_dev_tiny.safetensors"));
  const auto& c = whole.config();
  const int64_t blocks = c.depth + c.depth_single_blocks;
  EXPECT_EQ(static_cast<int64_t>(swapped.swappable_blocks().size()), blocks);
  swapped.set_block_swap(blocks);
  swapped.to(torch::kCPU);
  torch::manual_seed(5);
  const int64_t n = 8, l = 3;
  const auto img = torch::randn({1, n, c.in_channels});
  const auto img_ids = torch::zeros({1, n, 3});
  const auto txt = torch::randn({1, l, c.context_in_dim});
  const auto txt_ids = torch::zeros({1, l, 3});
  const auto y = torch::randn({1, c.vec_in_dim});
  const auto t = torch::tensor({0.5}), guidance = torch::tensor({3.5});
  EXPECT_TRUE(torch::equal(swapped.forward(img, img_ids, txt, txt_ids, t, y, guidance),
                           whole.forward(img, img_ids, txt, txt_ids, t, y, guidance)));
}

// A LoRA merged into swapped blocks changes their host weights: the next visit
// copies the merged ones (a copy made ahead of the old ones is not used), and
// removing the LoRA brings the old ones back. Run-time adapters work too.
TEST(BlockSwap, LorasApplyToSwappedBlocks) {
  TempDir dir;
  auto plain = random_wan(3);
  auto swapped = random_wan(3);
  swapped->set_block_swap(3);
  swapped->to(torch::kCPU);
  const auto base = wan_forward(*swapped);  // leaves block 0 copied ahead
  // A rank-2 update of every block's q.
  test::write_q_lora(dir / "q.safetensors", 3, 0.3);
  const auto r = lora::resolve(dir / "q.safetensors", *swapped, {});
  EXPECT_EQ(r.report.matched, 3);
  for (const auto mode : {lora::Mode::Merged, lora::Mode::RunTime}) {
    lora::Applied on_plain, on_swapped;
    on_plain.apply(*plain, {{&r, 0.8}}, mode);
    on_swapped.apply(*swapped, {{&r, 0.8}}, mode);
    const auto expected = wan_forward(*plain);
    EXPECT_FALSE(torch::equal(expected, base));
    EXPECT_TRUE(torch::allclose(wan_forward(*swapped), expected, 1e-5, 1e-6));
    on_swapped.clear();
    on_plain.clear();
    EXPECT_TRUE(torch::equal(wan_forward(*swapped), base));
  }
}

TEST(BlockSwap, IsForInference) {
  auto m = random_wan(2);
  EXPECT_THAT(error_of([&] { m->set_block_swap(-1); }), HasSubstr("0 or more"));
  m->set_trainable(true);
  EXPECT_THAT(error_of([&] { m->set_block_swap(1); }), HasSubstr("inference"));
}

// The count "auto" keeps on the host: none when the model fits; else enough
// that the rest and two visiting blocks fit; all when even that does not.
TEST(BlockSwap, AutoKeepsJustEnoughBlocksOnTheHost) {
  const int64_t block = 100, blocks = 40, model = 4000 + 50;  // 50: the embeddings and head
  EXPECT_EQ(layers::blocks_to_swap(model, block, blocks, 5000), 0);
  EXPECT_EQ(layers::blocks_to_swap(model, block, blocks, model), 0);
  // 1 byte over: one block away, so three on the host (one visiting, one coming).
  EXPECT_EQ(layers::blocks_to_swap(model, block, blocks, model - 1), 3);
  const int64_t s = layers::blocks_to_swap(model, block, blocks, 2400);
  EXPECT_EQ(s, 19);
  EXPECT_LE(model - (s - 2) * block, 2400);
  EXPECT_GT(model - (s - 3) * block, 2400);
  EXPECT_EQ(layers::blocks_to_swap(model, block, blocks, 100), blocks);
  EXPECT_EQ(layers::blocks_to_swap(model, block, blocks, -5), blocks);
}

TEST(BlockSwap, TheModelKnowsItsSizes) {
  auto m = random_wan(4);
  int64_t total = 0;
  for (const auto& t : m->module().parameters()) total += static_cast<int64_t>(t.nbytes());
  for (const auto& t : m->module().buffers()) total += static_cast<int64_t>(t.nbytes());
  EXPECT_EQ(m->weight_bytes(), total);
  int64_t block = 0;
  for (const auto& t : m->swappable_blocks()[0]->parameters())
    block += static_cast<int64_t>(t.nbytes());
  EXPECT_EQ(m->block_bytes(), block);
  // float32: 2 × the FFN's 96 + 8 × the width 64, 4 bytes, per row.
  EXPECT_EQ(m->activation_bytes(10), 10 * (2 * 96 + 8 * 64) * 4);
}

// The preset key: "auto" or a count, machine-specific like the device.
TEST(BlockSwap, ThePresetKeyTakesAutoOrACount) {
  using pipeline::Preset;
  EXPECT_EQ(Preset::from_json({{"prompt", "x"}}).block_swap, "auto");
  EXPECT_EQ(Preset::from_json({{"block_swap", 20}}).block_swap, "20");
  EXPECT_EQ(Preset::from_json({{"block_swap", "12"}}).block_swap, "12");
  EXPECT_EQ(Preset::from_json({{"block_swap", "auto"}}).block_swap, "auto");
  for (const auto& bad : {nlohmann::json(-1), nlohmann::json(1.5), nlohmann::json("many"),
                          nlohmann::json(true), nlohmann::json(100000)})
    EXPECT_THAT(error_of([&] {
                  Preset::from_json({{"block_swap", bad}}, "a.json");
                }),
                HasSubstr("a.json: key 'block_swap' must be \"auto\" or a count"))
        << bad.dump();
  auto p = Preset::from_json({{"block_swap", 20}});
  EXPECT_EQ(p.to_json()["block_swap"], 20);
  EXPECT_EQ(Preset::from_json(p.to_json()).block_swap, "20");
  EXPECT_EQ(Preset::restored({{"preset", p.to_json()}}, "out.mp4").block_swap, "auto");
  EXPECT_EQ(pipeline::block_swap_count("auto", "x"), std::nullopt);
  EXPECT_EQ(pipeline::block_swap_count("7", "x"), 7);
}

// On the CPU there is nothing to swap: a count is reported and the render is
// the same.
TEST(BlockSwap, ARenderOnTheCpuSaysThereIsNothingToSwap) {
  auto p = test::tiny_wan_preset();
  p.device = "cpu";
  pipeline::Pipeline a, b;
  const auto plain = a.generate(p);
  p.block_swap = "2";
  std::vector<std::string> msgs;
  pipeline::RunCallbacks cb;
  cb.on_message = [&](const std::string& m) { msgs.push_back(m); };
  const auto swapped = b.generate(p, cb);
  EXPECT_TRUE(torch::equal(plain.frames, swapped.frames));
  EXPECT_THAT(msgs, testing::Contains(HasSubstr("nothing to swap on the CPU")));
  // The output records what ran; each render on the CPU says so.
  EXPECT_EQ(swapped.preset.block_swap, "0");
  msgs.clear();
  b.generate(p, cb);
  EXPECT_THAT(msgs, testing::Contains(HasSubstr("nothing to swap on the CPU")));
}
