// One conformance suite that every registered sampler passes, plus the
// reference schedules and trajectories of tests/fixtures.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>

#include "conformance/case.h"
#include "conformance/runner.h"
#include "schedulers/registry.h"
#include "schedulers/sigma_schedules.h"
#include "test_util.h"

using namespace kinora::schedulers;
using kinora::test::error_of;
using ::testing::HasSubstr;
using ::testing::Not;

namespace {
Space space_of(const std::string& name) {
  for (const auto& e : available_schedulers())
    if (e.name == name) return e.space;
  throw std::runtime_error("no sampler " + name);
}
}  // namespace

class EverySampler : public ::testing::TestWithParam<std::string> {
 protected:
  static Space space() { return space_of(GetParam()); }
  static std::unique_ptr<Scheduler> make_unset() { return make_scheduler(GetParam(), space()); }
  std::unique_ptr<Scheduler> make(int steps = 10) {
    auto s = make_unset();
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
      x = s.step(model(s.scale_model_input(x, i), s.sigma(i)), i, x);
      out.push_back(x);
    }
    return out;
  }
};

TEST_P(EverySampler, ScheduleShapesAndDtypes) {
  const auto s = make(12);
  EXPECT_EQ(s->name(), GetParam());
  EXPECT_EQ(s->space(), space());
  EXPECT_EQ(s->num_steps(), 12);
  ASSERT_EQ(s->sigmas().sizes(), (std::vector<int64_t>{13}));
  EXPECT_EQ(s->sigmas().scalar_type(), torch::kFloat32);
  ASSERT_EQ(s->timesteps().sizes(), (std::vector<int64_t>{12}));
  EXPECT_EQ(s->sigma(12), 0.0);
  const auto x = torch::randn({2, 3});
  for (int i = 0; i < 12; ++i) {
    EXPECT_GT(s->sigma(i), s->sigma(i + 1)) << i;  // strictly decreasing to 0
    const double t = s->timesteps()[i].item<double>();
    if (space() == Space::Flow) {
      EXPECT_LE(s->sigma(i), 1.0);
      // the model sees σ·1000 (truncated for Wan's solvers) and x itself
      EXPECT_NEAR(t, s->sigma(i) * 1000.0, 1.0);
      EXPECT_TRUE(torch::equal(s->scale_model_input(x, i), x));
    } else {
      // the model sees a training step, decreasing
      EXPECT_GE(t, 0.0);
      EXPECT_LE(t, 999.0);
      if (i > 0) {
        EXPECT_LT(t, s->timesteps()[i - 1].item<double>()) << i;
      }
    }
  }
  if (space() == Space::Flow) {
    EXPECT_EQ(s->init_noise_sigma(), 1.0);
  } else {
    EXPECT_GT(s->sigma(0), 1.0);  // noise models start far above unit noise
    EXPECT_LT(s->sigma(0), 14.7);
  }
}

TEST_P(EverySampler, StepKeepsShapeAndDtype) {
  for (auto dtype : {torch::kFloat32, torch::kBFloat16}) {
    auto s = make(5);
    auto x = torch::randn({2, 4, 3, 5}).to(dtype);
    for (int i = 0; i < 5; ++i) {
      const auto x_in = s->scale_model_input(x, i);
      EXPECT_EQ(x_in.scalar_type(), dtype);
      const auto y = s->step(model(x_in, s->sigma(i)).to(dtype), i, x);
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
  auto s = make_unset();
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
                         ::testing::Values("flow_euler", "flow_unipc", "flow_dpmpp_2m", "euler",
                                           "euler_ancestral", "dpmpp_2m", "dpmpp_2m_karras"));

// ---- noise-prediction samplers ----------------------------------------------

class NoiseSampler : public ::testing::TestWithParam<std::string> {
 protected:
  std::unique_ptr<Scheduler> make(int steps, ScheduleOptions o = {}) {
    auto s = make_scheduler(GetParam(), Space::Noise);
    s->set_timesteps(steps, o);
    return s;
  }
  bool euler_type() const { return GetParam().rfind("euler", 0) == 0; }
};

// SDXL's training table runs from σ ≈ 0.0292 (t = 0) to σ ≈ 14.6146 (t = 999).
TEST_P(NoiseSampler, InitialNoiseLevel) {
  auto s = make(20);
  if (euler_type()) {
    // leading spacing (the default): √(σ_0² + 1), as the reference
    const float s0 = static_cast<float>(s->sigma(0));
    EXPECT_EQ(s->init_noise_sigma(), static_cast<double>(std::sqrt(s0 * s0 + 1.0f)));
    EXPECT_EQ(s->timesteps()[0].item<double>(), 951.0);
    ScheduleOptions o;
    o.spacing = TimestepSpacing::Trailing;
    s = make(20, o);
    EXPECT_EQ(s->timesteps()[0].item<double>(), 999.0);
    EXPECT_EQ(s->init_noise_sigma(), s->sigma(0));  // σ_0 itself
    EXPECT_NEAR(s->sigma(0), 14.6146, 1e-3);
  } else {
    EXPECT_EQ(s->init_noise_sigma(), 1.0);  // the sample is the model's input
    const auto x = torch::randn({3});
    EXPECT_TRUE(torch::equal(s->scale_model_input(x, 0), x));
  }
}

// The model's output converted to x0 as each reference does: with a stand-in that
// knows x0, ε or v is exact and the last step lands on x0.
TEST_P(NoiseSampler, RecoversAKnownSampleFromEpsilonOrV) {
  const auto x0 = torch::randn({2, 4, 3, 3}), noise = torch::randn({2, 4, 3, 3});
  for (const auto prediction : {NoisePrediction::Epsilon, NoisePrediction::V}) {
    ScheduleOptions o;
    o.prediction = prediction;
    auto s = make(12, o);
    auto x = noise * s->init_noise_sigma();
    for (int i = 0; i < s->num_steps(); ++i) {
      // The model's input is α·x0 + σ_vp·ε with α = 1/√(σ² + 1), σ_vp = σ·α.
      const auto x_in = s->scale_model_input(x, i);
      const double sigma = s->sigma(i), alpha = 1.0 / std::sqrt(sigma * sigma + 1.0);
      const double sigma_vp = sigma * alpha;
      const auto eps = (x_in - alpha * x0) / sigma_vp;
      x = s->step(prediction == NoisePrediction::Epsilon ? eps : alpha * eps - sigma_vp * x0, i, x);
    }
    EXPECT_LT((x - x0).abs().max().item<double>(), 1e-4) << static_cast<int>(prediction);
  }
}

TEST_P(NoiseSampler, SpacingsGiveTheReferenceTimesteps) {
  ScheduleOptions o;
  o.spacing = TimestepSpacing::Trailing;
  auto s = make(10, o);
  EXPECT_EQ(s->timesteps()[0].item<double>(), 999.0);
  EXPECT_EQ(s->timesteps()[9].item<double>(), GetParam() == "dpmpp_2m_karras" ? 0.0 : 99.0);
  o.spacing = TimestepSpacing::Linspace;
  s = make(10, o);
  EXPECT_EQ(s->timesteps()[0].item<double>(), 999.0);
  // numpy.arange's rounding makes 61 trailing points 62; the 61 steps remain.
  o.spacing = TimestepSpacing::Trailing;
  s = make(61, o);
  EXPECT_EQ(s->timesteps().size(0), 61);
  EXPECT_GE(s->timesteps()[60].item<double>(), 0.0);
}

TEST_P(NoiseSampler, RefusesWhatItCannotSchedule) {
  auto s = make_scheduler(GetParam(), Space::Noise);
  if (GetParam() != "dpmpp_2m_karras") {  // the Karras ramp has no repeats
    const auto msg = error_of([&] { s->set_timesteps(1001); });
    EXPECT_THAT(msg, HasSubstr(GetParam() + ": 1001 steps repeat noise levels"));
    EXPECT_THAT(msg, HasSubstr("leading"));
  }
  ScheduleOptions o;
  o.steps_offset = -1;
  EXPECT_THAT(error_of([&] { s->set_timesteps(10, o); }), HasSubstr("steps_offset"));
  EXPECT_THAT(error_of([&] { s->scale_model_input(torch::zeros({2}), 0); }),
              HasSubstr("set_timesteps"));
  s->set_timesteps(4);
  EXPECT_THAT(error_of([&] { s->scale_model_input(torch::zeros({2}), 4); }),
              HasSubstr("out of range"));
}

INSTANTIATE_TEST_SUITE_P(Schedulers, NoiseSampler,
                         ::testing::Values("euler", "euler_ancestral", "dpmpp_2m",
                                           "dpmpp_2m_karras"));

// SDXL's DPM++ 2M at 25 steps: Karras sigmas over the whole table, its
// timesteps the sigmas' fractional training steps, rounded.
TEST(NoiseSchedules, KarrasSpansTheTrainingTable) {
  auto k = make_scheduler("dpmpp_2m_karras", Space::Noise);
  k->set_timesteps(25);
  EXPECT_EQ(k->timesteps().scalar_type(), torch::kInt64);
  EXPECT_EQ(k->timesteps()[0].item<int64_t>(), 999);
  EXPECT_EQ(k->timesteps()[24].item<int64_t>(), 0);
  EXPECT_NEAR(k->sigma(0), 14.6146, 1e-3);
  EXPECT_NEAR(k->sigma(24), 0.0292, 1e-4);
  // Leading DPM spaces 26 points (ratio 1000 div 26 = 38) and drops t = 0.
  auto d = make_scheduler("dpmpp_2m", Space::Noise);
  d->set_timesteps(25);
  EXPECT_EQ(d->timesteps()[0].item<int64_t>(), 951);
  EXPECT_EQ(d->timesteps()[24].item<int64_t>(), 39);
  // Euler's leading: ratio 1000 div 20 = 50, plus steps_offset 1.
  auto e = make_scheduler("euler", Space::Noise);
  e->set_timesteps(20);
  EXPECT_EQ(e->timesteps().scalar_type(), torch::kFloat32);
  EXPECT_EQ(e->timesteps()[19].item<float>(), 1.0f);
  EXPECT_EQ(e->timesteps()[18].item<float>(), 51.0f);
}

TEST(EulerAncestral, NoiseComesFromTheSeedOrTheCaller) {
  const auto start = torch::randn({1, 4, 4, 4});
  auto render = [&](ScheduleOptions o) {
    auto s = make_scheduler("euler_a", Space::Noise);
    s->set_timesteps(6, o);
    auto x = start * s->init_noise_sigma();
    for (int i = 0; i < 6; ++i) x = s->step(torch::tanh(s->scale_model_input(x, i)), i, x);
    return x;
  };
  ScheduleOptions a;
  a.seed = 7;
  ScheduleOptions b = a;
  b.seed = 8;
  EXPECT_TRUE(torch::equal(render(a), render(a)));
  EXPECT_FALSE(torch::equal(render(a), render(b)));
  // A caller's noise: asked once per step with the sample's shape.
  std::vector<int> asked;
  ScheduleOptions c;
  c.noise = [&](const torch::Tensor& like, int i) {
    asked.push_back(i);
    EXPECT_EQ(like.sizes(), start.sizes());
    EXPECT_EQ(like.scalar_type(), torch::kFloat32);
    return torch::zeros_like(like);
  };
  const auto quiet = render(c);
  EXPECT_THAT(asked, ::testing::ElementsAre(0, 1, 2, 3, 4, 5));
  EXPECT_FALSE(torch::equal(quiet, render(a)));
  c.noise = [](const torch::Tensor&, int) { return torch::zeros({3}); };
  EXPECT_THAT(error_of([&] { render(c); }), HasSubstr("noise given for step 0 has shape"));
}

TEST(SchedulerRegistry, ListsAndResolvesNames) {
  std::vector<std::string> names;
  for (const auto& e : available_schedulers()) names.push_back(e.name);
  EXPECT_THAT(names, ::testing::ElementsAre("flow_unipc", "flow_dpmpp_2m", "flow_euler", "euler",
                                            "euler_ancestral", "dpmpp_2m", "dpmpp_2m_karras"));
  EXPECT_EQ(make_scheduler("unipc")->name(), "flow_unipc");
  EXPECT_EQ(make_scheduler("dpm++")->name(), "flow_dpmpp_2m");
  // One argument: flow samplers first, then the noise ones.
  EXPECT_EQ(canonical_scheduler_name("euler"), "flow_euler");
  EXPECT_EQ(canonical_scheduler_name("dpmpp_2m"), "flow_dpmpp_2m");
  EXPECT_EQ(canonical_scheduler_name("euler_a"), "euler_ancestral");
  EXPECT_EQ(make_scheduler("dpmpp_2m_karras")->space(), Space::Noise);
  const auto msg = error_of([] { make_scheduler("ddim"); });
  EXPECT_THAT(msg, HasSubstr("unknown sampler 'ddim'"));
  EXPECT_THAT(msg, HasSubstr("flow_unipc"));
  EXPECT_THAT(msg, HasSubstr("dpmpp_2m_karras"));
}

TEST(SchedulerRegistry, ResolvesNamesByTheModelsSpace) {
  EXPECT_EQ(make_scheduler("euler", Space::Flow)->name(), "flow_euler");
  EXPECT_EQ(make_scheduler("euler", Space::Noise)->name(), "euler");
  EXPECT_EQ(make_scheduler("dpmpp_2m", Space::Flow)->name(), "flow_dpmpp_2m");
  EXPECT_EQ(make_scheduler("dpmpp_2m", Space::Noise)->name(), "dpmpp_2m");
  EXPECT_EQ(canonical_scheduler_name("euler_a", Space::Noise), "euler_ancestral");
  EXPECT_EQ(canonical_scheduler_name("unipc", Space::Flow), "flow_unipc");

  auto msg = error_of([] { make_scheduler("euler_a", Space::Flow); });
  EXPECT_THAT(msg, HasSubstr("sampler 'euler_a' is for noise-prediction models"));
  EXPECT_THAT(msg, HasSubstr("this model is a flow-matching model"));
  EXPECT_THAT(msg, HasSubstr("its samplers: flow_unipc, flow_dpmpp_2m, flow_euler"));
  EXPECT_THAT(msg, Not(HasSubstr("dpmpp_2m_karras")));
  msg = error_of([] { canonical_scheduler_name("flow_unipc", Space::Noise); });
  EXPECT_THAT(msg, HasSubstr("sampler 'flow_unipc' is for flow-matching models"));
  EXPECT_THAT(msg, HasSubstr("its samplers: euler, euler_ancestral, dpmpp_2m, dpmpp_2m_karras"));
  EXPECT_THAT(error_of([] { make_scheduler("ddim", Space::Noise); }),
              HasSubstr("unknown sampler 'ddim'"));

  // What a preset keeps: a name of each space stays for the model to resolve.
  EXPECT_EQ(preset_scheduler_name("euler"), "euler");
  EXPECT_EQ(preset_scheduler_name("dpmpp_2m"), "dpmpp_2m");
  EXPECT_EQ(preset_scheduler_name("unipc"), "flow_unipc");
  EXPECT_EQ(preset_scheduler_name("euler_a"), "euler_ancestral");
  EXPECT_EQ(preset_scheduler_name("flow_euler"), "flow_euler");
  EXPECT_THAT(error_of([] { preset_scheduler_name("ddim"); }), HasSubstr("unknown sampler"));
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
  EXPECT_EQ(cases, 8);
}
