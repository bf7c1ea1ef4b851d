// The embedded default model draws what the prompt says. For a fixed set of
// prompts covering every colour (as object and as background), shape and
// direction, it renders MP4s with fixed seeds, decodes them with FFmpeg, and
// measures the pixels (render::score_semantics, embedded::measure): background colour,
// object colour, shape class and direction of motion. ≥ 90% right on every
// measure is required; the held-out combinations (never seen in training) are
// reported separately.
#include <gtest/gtest.h>

#include <iostream>

#include "embedded/model.h"
#include "render/semantic.h"
#include "test_util.h"

namespace kinora {
namespace {
using embedded::SemanticScore;

// The prompts are rendered once for both tests below.
class Semantic : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    if (!embedded::model_dir()) return;
    dir_ = new test::TempDir;
    pipeline::Pipeline pipe;
    render::SemanticRun run;  // the embedded model, 36 prompts from seed 7000, noise seeds 100…
    run.folder = dir_->path();
    run.on_line = [](const std::string& line) { std::cout << line << "\n"; };
    const auto r = render::score_semantics(pipe, run);
    main_ = r.trained, held_ = r.held_out;
    std::cout << main_.line("trained") << "\n" << held_.line("held-out") << "\n";
  }
  static void TearDownTestSuite() {
    delete dir_;
    dir_ = nullptr;
  }
  void SetUp() override {
    if (!dir_)  // SetUpTestSuite found no embedded model
      GTEST_SKIP() << "the embedded model is not in assets/ (train it: docs/training.md)";
    RecordProperty("held_out_all_four_pct",
                   static_cast<int>(SemanticScore::pct(held_.all, held_.n)));
  }
  static int need() { return (9 * main_.n + 9) / 10; }  // ≥ 90%
  static inline test::TempDir* dir_ = nullptr;
  static inline SemanticScore main_, held_;
};

TEST_F(Semantic, EmbeddedModelDrawsTheBackgroundObjectColourAndDirection) {
  ASSERT_GE(main_.n, 24);
  EXPECT_GE(main_.background, need()) << main_.line("trained");
  EXPECT_GE(main_.object, need()) << main_.line("trained");
  EXPECT_GE(main_.direction, need()) << main_.line("trained");
}

// The shape class: the same ≥ 90%. The held-out combinations' shape is reported
// (held_out_all_four_pct), not required.
TEST_F(Semantic, EmbeddedModelDrawsTheShape) {
  ASSERT_GE(main_.n, 24);
  EXPECT_GE(main_.shape, need()) << main_.line("trained");
}

}  // namespace
}  // namespace kinora

namespace kinora {
namespace {

// The project's LoRA (assets/loras/, `kinora train lora`) teaches the word
// "big": at strength 1 the prompts that ask for a big object get one, without
// it none do, and with it the base grammar's prompts keep their background,
// object colour and direction (and are not drawn big).
class BigLora : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    const auto md = embedded::model_dir();
    if (!md || !std::filesystem::is_regular_file(*md / "loras" / embedded::kBigLoraFile)) return;
    dir_ = new test::TempDir;
    pipeline::Pipeline pipe;
    render::SemanticRun run;
    run.folder = dir_->path();
    run.on_line = [](const std::string& line) { std::cout << line << "\n"; };
    const auto big = embedded::big_prompts(12, 7000);
    without_ = render::score_scenes(pipe, run, big, "big-without");
    run.preset.loras = {{(*md / "loras" / embedded::kBigLoraFile).string(), 1.0}};
    with_ = render::score_scenes(pipe, run, big, "big-with");
    base_ = render::score_scenes(pipe, run, embedded::semantic_prompts(24, 7000), "base-with");
    std::cout << without_.line("no LoRA") << "\n"
              << with_.line("LoRA 1") << "\n"
              << base_.line("base+LoRA") << "\n";
  }
  static void TearDownTestSuite() {
    delete dir_;
    dir_ = nullptr;
  }
  void SetUp() override {
    if (!dir_) GTEST_SKIP() << "the embedded model or its LoRA is not in assets/";
  }
  static int need(const embedded::SemanticScore& s) { return (9 * s.n + 9) / 10; }  // ≥ 90%
  static inline test::TempDir* dir_ = nullptr;
  static inline embedded::SemanticScore without_, with_, base_;
};

// One case (the renders are shared; ctest runs each case in its own process).
TEST_F(BigLora, TeachesBigAndKeepsWhatTheBaseModelDrew) {
  // At strength 1, the prompts that ask for it get a big object, right otherwise.
  ASSERT_EQ(with_.n, 12);
  EXPECT_GE(with_.big, need(with_)) << with_.line("LoRA 1");
  EXPECT_GE(with_.object, need(with_)) << with_.line("LoRA 1");
  EXPECT_GE(with_.background, need(with_)) << with_.line("LoRA 1");
  EXPECT_GE(with_.direction, need(with_)) << with_.line("LoRA 1");
  // Without it, none.
  EXPECT_EQ(without_.big, 0) << without_.line("no LoRA");
  // With it, the base grammar's prompts keep what they drew, and none is big.
  ASSERT_GE(base_.n, 24);
  EXPECT_GE(base_.background, need(base_)) << base_.line("base+LoRA");
  EXPECT_GE(base_.object, need(base_)) << base_.line("base+LoRA");
  EXPECT_GE(base_.direction, need(base_)) << base_.line("base+LoRA");
  EXPECT_EQ(base_.big, 0) << base_.line("base+LoRA");
}

}  // namespace
}  // namespace kinora
