// One conformance suite that every registered sampler passes, plus the
// reference schedules and trajectories of tests/fixtures.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "conformance/case.h"
#include "conformance/runner.h"
#include "schedulers/registry.h"
#include "schedulers/sigma_schedules.h"
#include "test_util.h"

using namespace kinora::schedulers;
using kinora::test::error_of;
using ::testing::HasSubstr;

class EverySampler : public ::testing::TestWithParam<std::string> {
 protected:
  std::unique_ptr<Scheduler> make(int steps = 10) {
    auto s = make_scheduler(GetParam());
    s->set_timesteps(steps, {.shift = 3.0, .mu = std::nullopt});
    return s;
  }
  // A smooth stand-in model, as in the fixtures.
  static torch::Tensor model(const torch::Tensor& x, double sigma) {
    return torch::tanh(x) * (1 + sigma) - 0.3;
  }

  static std::vector<torch::Tensor> run(Scheduler& s, torch::Tensor x) {
    std::vector<torch::Tensor> out;
    for (int i = 0; i < s.num_steps(); ++i) {
      x = s.step(model(x, s.sigma(i)), i, x);
      out.push_back(x);
    }
    return out;
  }
};

TEST_P(EverySampler, ScheduleShapesAndDtypes) {
  const auto s = make(12);
  EXPECT_EQ(s->name(), GetParam());
  EXPECT_EQ(s->num_steps(), 12);
  ASSERT_EQ(s->sigmas().sizes(), (std::vector<int64_t>{13}));
  EXPECT_EQ(s->sigmas().scalar_type(), torch::kFloat32);
  ASSERT_EQ(s->timesteps().sizes(), (std::vector<int64_t>{12}));
  EXPECT_EQ(s->sigma(12), 0.0);
  for (int i = 0; i < 12; ++i) {
    EXPECT_GT(s->sigma(i), s->sigma(i + 1)) << i;  // strictly decreasing to 0
    EXPECT_LE(s->sigma(i), 1.0);
    // the model sees σ·1000 (truncated for Wan's solvers)
    EXPECT_NEAR(s->timesteps()[i].item<double>(), s->sigma(i) * 1000.0, 1.0);
  }
}

TEST_P(EverySampler, StepKeepsShapeAndDtype) {
  for (auto dtype : {torch::kFloat32, torch::kBFloat16}) {
    auto s = make(5);
    auto x = torch::randn({2, 4, 3, 5}).to(dtype);
    for (int i = 0; i < 5; ++i) {
      const auto y = s->step(model(x, s->sigma(i)).to(dtype), i, x);
      EXPECT_EQ(y.sizes(), x.sizes());
      EXPECT_EQ(y.scalar_type(), dtype);
      EXPECT_TRUE(torch::isfinite(y).all().item<bool>());
      x = y;
    }
  }
}

TEST_P(EverySampler, IsDeterministic) {
  const auto x = torch::randn({1, 4, 3, 5}, torch::TensorOptions().dtype(torch::kFloat32));
  auto a = make(), b = make();
  const auto ta = run(*a, x), tb = run(*b, x);
  for (std::size_t i = 0; i < ta.size(); ++i) EXPECT_TRUE(torch::equal(ta[i], tb[i])) << i;
}

TEST_P(EverySampler, DoesNotModifyItsInputs) {
  auto s = make(4);
  auto x = torch::randn({1, 4, 3, 5});
  for (int i = 0; i < 4; ++i) {
    const auto v = model(x, s->sigma(i));
    const auto x0 = x.clone(), v0 = v.clone();
    const auto y = s->step(v, i, x);
    EXPECT_TRUE(torch::equal(x, x0));
    EXPECT_TRUE(torch::equal(v, v0));
    EXPECT_NE(y.data_ptr(), x.data_ptr());
    x = y;
  }
}

TEST_P(EverySampler, SettingTheStepsTwiceGivesTheSameScheduleAndRestarts) {
  auto s = make(8);
  const auto sig = s->sigmas().clone(), ts = s->timesteps().clone();
  const auto x = torch::randn({3, 7});
  const auto first = run(*s, x);
  s->set_timesteps(8, {.shift = 3.0, .mu = std::nullopt});
  EXPECT_TRUE(torch::equal(s->sigmas(), sig));
  EXPECT_TRUE(torch::equal(s->timesteps(), ts));
  // Solver history is forgotten: the same run again gives the same trajectory.
  const auto second = run(*s, x);
  EXPECT_TRUE(torch::equal(first.back(), second.back()));
}

TEST_P(EverySampler, RefusesZeroOrNegativeStepsClearly) {
  auto s = make_scheduler(GetParam());
  for (int steps : {0, -1, -50}) {
    const auto msg = error_of([&] { s->set_timesteps(steps); });
    EXPECT_THAT(msg, HasSubstr("steps must be at least 1"));
    EXPECT_THAT(msg, HasSubstr(GetParam()));
  }
  EXPECT_THAT(error_of([&] { s->set_timesteps(4, {.shift = 0.0, .mu = std::nullopt}); }),
              HasSubstr("shift"));
  EXPECT_THAT(error_of([&] { s->step(torch::zeros({2}), 0, torch::zeros({2})); }),
              HasSubstr("set_timesteps"));
}

TEST_P(EverySampler, RefusesStepsOutOfOrder) {
  auto s = make(4);
  const auto x = torch::zeros({2});
  EXPECT_THAT(error_of([&] { s->step(x, 1, x); }), HasSubstr("out of order"));
  EXPECT_THAT(error_of([&] { s->step(torch::zeros({3}), 0, x); }), HasSubstr("shape"));
}

TEST_P(EverySampler, OneStepIsAllowed) {
  auto s = make(1);
  const auto x = torch::randn({4});
  const auto y = s->step(model(x, s->sigma(0)), 0, x);
  EXPECT_TRUE(torch::isfinite(y).all().item<bool>());
}

INSTANTIATE_TEST_SUITE_P(Schedulers, EverySampler,
                         ::testing::Values("flow_euler", "flow_unipc", "flow_dpmpp_2m"));

TEST(SchedulerRegistry, ListsAndResolvesNames) {
  std::vector<std::string> names;
  for (const auto& e : available_schedulers()) names.push_back(e.name);
  EXPECT_THAT(names, ::testing::UnorderedElementsAre("flow_euler", "flow_unipc", "flow_dpmpp_2m"));
  EXPECT_EQ(make_scheduler("unipc")->name(), "flow_unipc");
  EXPECT_EQ(make_scheduler("dpm++")->name(), "flow_dpmpp_2m");
  EXPECT_EQ(canonical_scheduler_name("euler"), "flow_euler");
  const auto msg = error_of([] { make_scheduler("ddim"); });
  EXPECT_THAT(msg, HasSubstr("unknown sampler 'ddim'"));
  EXPECT_THAT(msg, HasSubstr("flow_unipc"));
}

// The timesteps of Wan's flow UniPC at 50 steps and shift 5, derived by hand
// from the reference's schedule (wan/utils/fm_solvers_unipc.py).
TEST(WanSchedule, MatchesTheDerivedTimesteps) {
  auto s = make_scheduler("flow_unipc");
  s->set_timesteps(50, {.shift = 5.0, .mu = std::nullopt});
  const auto t = s->timesteps();
  EXPECT_EQ(t.scalar_type(), torch::kInt64);
  const int64_t head[] = {999, 995, 991, 987, 982};
  for (int i = 0; i < 5; ++i) EXPECT_EQ(t[i].item<int64_t>(), head[i]);
  EXPECT_EQ(t[48].item<int64_t>(), 172);
  EXPECT_EQ(t[49].item<int64_t>(), 92);
  EXPECT_NEAR(s->sigma(0), 0.99980, 1e-5);
  EXPECT_NEAR(s->sigma(1), 0.99573, 1e-5);
  EXPECT_NEAR(s->sigma(49), 0.09251, 1e-5);
  // DPM++ starts at σ = 1, t = 1000.
  auto d = make_scheduler("flow_dpmpp_2m");
  d->set_timesteps(25, {.shift = 5.0, .mu = std::nullopt});
  EXPECT_EQ(d->timesteps()[0].item<int64_t>(), 1000);
  EXPECT_EQ(d->sigma(0), 1.0);
}

// FLUX's resolution shift (BFL flux/sampling.py): at 1024² (4096 tokens)
// μ = 1.15; t = 0.75 → 0.905, t = 0.5 → 0.760.
TEST(FluxSchedule, ResolutionShift) {
  EXPECT_NEAR(flux_mu(4096), 1.15, 1e-12);
  EXPECT_NEAR(flux_mu(256), 0.5, 1e-12);
  auto s = make_scheduler("flow_euler");
  s->set_timesteps(4, {.shift = 1.0, .mu = flux_mu(4096)});
  EXPECT_NEAR(s->sigma(1), 0.905, 1e-3);
  EXPECT_NEAR(s->sigma(2), 0.760, 1e-3);
  s->set_timesteps(4);  // schnell: no shift
  EXPECT_FLOAT_EQ(static_cast<float>(s->sigma(1)), 0.75f);
}

// Every sched.* case in the fixtures, through the conformance runner's code.
TEST(SchedulerFixtures, EverySamplerCasePasses) {
  int cases = 0;
  for (const auto& path : kinora::conformance::collect_cases({KINORA_FIXTURES})) {
    if (path.filename().string().rfind("sched_", 0) != 0) continue;
    for (const auto& r : kinora::conformance::run_case(path, {})) {
      EXPECT_EQ(r.status, kinora::conformance::Status::Pass)
          << kinora::conformance::format_result(r);
      EXPECT_LE(r.worst_rel_err, 1e-5) << r.case_name;
      ++cases;
    }
  }
  EXPECT_EQ(cases, 5);
}
