// The LoRA stage (train.h, train_lora): low-rank updates on a trained
// embedded model's DiT that teach it a new colour, the base weights frozen.
#include <cmath>
#include <cstdio>

#include "base/error.h"
#include "diffusion/wan_dit.h"
#include "embedded/semantic.h"
#include "io/safetensors.h"
#include "layers/linear.h"
#include "text/t5.h"
#include "text/tokenizer.h"
#include "training/internal.h"
#include "vae/wan_vae.h"

namespace kinora::training {
namespace fs = std::filesystem;
using torch::Tensor;
using namespace internal;

namespace {

// The Linear modules the LoRA trains: every one in the DiT's blocks (self-
// and cross-attention, feed-forward) and the text embedding, by name.
std::vector<std::pair<std::string, layers::LinearImpl*>> lora_targets(diffusion::WanModel& dit) {
  std::vector<std::pair<std::string, layers::LinearImpl*>> out;
  for (const auto& item : dit.module().named_modules("", false)) {
    auto* lin = dynamic_cast<layers::LinearImpl*>(item.value().get());
    const auto& name = item.key();
    if (lin && (name.rfind("blocks.", 0) == 0 || name.rfind("text_embedding.", 0) == 0))
      out.emplace_back(name, lin);
  }
  return out;
}

// The clips: the first concept_share of them big scenes ("a big …"), the rest
// scenes of the grammar as they are. Held-out combinations are skipped, as in
// the DiT stage.
std::vector<Scene> lora_scenes(const LoraOptions& o) {
  std::vector<Scene> scenes;
  const auto concept_clips =
      static_cast<int64_t>(std::llround(o.concept_share * static_cast<double>(o.dataset)));
  for (uint64_t s = 0; static_cast<int64_t>(scenes.size()) < o.dataset; ++s) {
    const bool big = static_cast<int64_t>(scenes.size()) < concept_clips;
    const auto scene = random_scene(mix(o.seed, 0x10AA000 + s), o.clip, big);
    if (held_out(scene)) continue;
    scenes.push_back(scene);
  }
  return scenes;
}

void check_lora_options(const LoraOptions& o) {
  if (const auto problem = options_problem(o); !problem.empty()) throw Error(problem);
  for (const char* f : {kDitFile, kVaeFile, kTextEncoderFile, kTokenizerFile})
    if (!fs::is_regular_file(o.model_dir / f))
      throw Error("train lora: " + (o.model_dir / f).string() +
                  " is missing (the folder must hold the embedded model's four files)");
}

// What cannot change once the stage has begun: the adapters' shape.
nlohmann::json run_config(const LoraOptions& o) {
  return {{"--rank", o.rank}, {"--alpha", o.alpha}};
}

// The adapters' weights by name (module.down, module.up), float32.
std::vector<std::pair<std::string, Tensor>> adapter_tensors(
    const std::vector<std::pair<std::string, layers::LinearImpl*>>& targets) {
  std::vector<std::pair<std::string, Tensor>> out;
  for (const auto& [module, lin] : targets) {
    const auto& a = lin->adapters.back();
    out.emplace_back(module + ".down", a.down.detach().to(torch::kCPU, torch::kFloat32));
    out.emplace_back(module + ".up", a.up.detach().to(torch::kCPU, torch::kFloat32));
  }
  return out;
}

}  // namespace

std::string options_problem(const LoraOptions& o) {
  const auto d = [](int64_t v) { return static_cast<double>(v); };
  for (auto problem : {
           options_problem(static_cast<const DitOptions&>(o)),
           option_problem(o.rank >= 1 && o.rank <= 256, "--rank", d(o.rank),
                          "a whole number from 1 to 256"),
           option_problem(o.alpha > 0, "--alpha", o.alpha, "a number above 0"),
           option_problem(o.dataset >= o.batch, "--dataset", d(o.dataset),
                          "at least one batch of clips (--batch " + std::to_string(o.batch) + ")"),
           option_problem(o.concept_share > 0 && o.concept_share <= 1, "--concept-share",
                          o.concept_share, "a share above 0, up to 1"),
       })
    if (!problem.empty()) return problem;
  return {};
}

void train_lora(const LoraOptions& given) {
  LoraOptions o = given;
  o.model_dir = base_model_dir(given.model_dir, "train lora");
  check_lora_options(o);
  auto state = open_state(o.run_dir / "lora-state");
  check_config(state, run_config(o));
  for (const auto& file : {o.run_dir / kBigLoraFile, o.run_dir / "lora-loss.csv"})
    check_output(file, state, o.overwrite);
  check_state_folder(state, o.overwrite);
  fs::create_directories(o.run_dir);
  begin_state(state);
  if (state.orphaned)
    say(o, "lora: starting afresh over the logs of a run stopped before its first checkpoint");
  const auto t0 = Clock::now();
  const auto tok = text::Tokenizer::load(o.model_dir / kTokenizerFile);
  auto vae = vae::WanVAE::load(o.model_dir / kVaeFile, layers::Precision::F32);
  auto te = text::T5Encoder::load(o.model_dir / kTextEncoderFile, layers::Precision::F32);
  auto dit = diffusion::WanModel::load(o.model_dir / kDitFile, o.precision);
  te.set_trainable(false);
  // The DiT's forward records a graph (trainable), but its own weights take no
  // gradient: only the adapters added below do.
  dit.set_trainable(true);
  layers::set_trainable(dit.module(), false);
  const int64_t text_len = dit.config().text_len;
  {
    const auto t = tok.encode("big", 8);
    say(o, std::string("lora: 'big' is ") + std::to_string(t.length - 1) +
               " token(s) of the base vocabulary");
  }

  // The data: latents of every clip and the text encoder's output for its
  // caption (both frozen, so computed once).
  const auto scenes = lora_scenes(o);
  std::vector<std::string> captions;
  std::vector<Tensor> latents;
  {
    torch::NoGradGuard g;
    for (std::size_t i = 0; i < scenes.size(); i += 16) {
      std::vector<Tensor> clips;
      for (std::size_t k = i; k < std::min(scenes.size(), i + 16); ++k) {
        clips.push_back(frames_to_video(render(scenes[k], o.clip)));
        captions.push_back(scenes[k].caption());
      }
      latents.push_back(vae.encode(torch::stack(clips)));
    }
  }
  const auto x_all = torch::cat(latents);
  {
    // What the VAE makes of the big scenes: the DiT draws through its decoder.
    torch::NoGradGuard g;
    const auto back = vae.decode(x_all.slice(0, 0, 4));
    for (int64_t i = 0; i < back.size(0); ++i) {
      const auto frames =
          back[i].add(1).mul(127.5).round().clamp(0, 255).to(torch::kUInt8).permute({1, 2, 3, 0});
      const auto m = measure(frames.contiguous());
      say(o, std::string("lora: the VAE's reconstruction of '") +
                 captions[static_cast<std::size_t>(i)] + "' shows " + describe(m));
    }
  }

  Tensor ctx_all, empty_ctx;
  {
    torch::NoGradGuard g;
    ctx_all = encode_captions(te, tok, captions, text_len, torch::kCPU);
    empty_ctx = encode_captions(te, tok, {""}, text_len, torch::kCPU);
  }
  char line[256];
  std::snprintf(line, sizeof line, "lora: %lld clips encoded (%lld %s) in %.1f s",
                static_cast<long long>(x_all.size(0)),
                static_cast<long long>(std::llround(o.concept_share * o.dataset)), "big",
                seconds_since(t0));
  say(o, line);

  // The adapters: down ~ N(0, 1/in), up = 0, so training starts at the base model.
  torch::manual_seed(mix(o.seed, 3));
  const double scale = o.alpha / static_cast<double>(o.rank);
  std::vector<std::pair<std::string, layers::LinearImpl*>> targets = lora_targets(dit);
  std::vector<Tensor> params;
  for (auto& [module, lin] : targets) {
    auto down = (torch::randn({o.rank, lin->in_features}) /
                 std::sqrt(static_cast<double>(lin->in_features)))
                    .set_requires_grad(true);
    auto up = torch::zeros({lin->out_features, o.rank}).set_requires_grad(true);
    lin->adapters.push_back({down, up, {}, {}, scale, 0, lin->out_features});
    params.push_back(down), params.push_back(up);
  }
  int64_t trained = 0;
  for (const auto& p : params) trained += p.numel();
  say(o, "lora: rank " + std::to_string(o.rank) + " on " + std::to_string(targets.size()) +
             " Linear modules, " + std::to_string(trained) + " parameters");

  torch::optim::AdamW opt(params,
                          torch::optim::AdamWOptions(o.lr).betas({0.9, 0.99}).weight_decay(0));
  // The run's own state, when there is one: the adapters, the optimizer, the step.
  auto& s = state;
  int64_t step = 0;
  double seconds = 0;
  if (s.resuming) {
    step = s.json.at("step"), seconds = s.json.at("seconds");
    const auto path = s.checkpoint / "adapters.safetensors";
    const auto ck = io::Checkpoint::open(path);
    torch::NoGradGuard g;
    for (auto& [module, lin] : targets) {
      auto& a = lin->adapters.back();
      for (auto [key, t] : {std::pair{module + ".down", a.down}, {module + ".up", a.up}}) {
        if (!ck.contains(key)) fail_file(path, "training checkpoint has no tensor '" + key + "'");
        const auto v = ck.get(key);
        if (v.sizes() != t.sizes()) fail_file(path, "tensor '" + key + "' has the wrong shape");
        t.copy_(v);
      }
    }
    load_optimizer(opt, s.checkpoint / "optimizer.pt");
    say(o, "lora: resuming at step " + std::to_string(step));
  }
  const int64_t resumed_at = s.resuming ? step : -1;
  const auto save = [&] {
    // The checkpoint it resumed from, or the one the loop has just written.
    if (step == resumed_at || (s.resuming && s.json.value("step", int64_t{-1}) == step)) return;
    CheckpointWriter w(s, step);
    w.write("adapters.safetensors",
            [&](const fs::path& f) { io::save_safetensors(f, adapter_tensors(targets)); });
    w.write("optimizer.pt", [&](const fs::path& f) { save_optimizer(opt, f); });
    w.commit(s, {{"step", step}, {"seconds", seconds}}, run_config(o));
  };
  auto log = open_log(o.run_dir / "lora-loss.csv", s, step, "step,loss,lr,seconds");
  double sum = 0;
  int64_t n = 0;
  while (step < o.steps && !cancelled(o)) {
    const auto ts = Clock::now();
    const double lr = lr_at(o, step);
    set_lr(opt, lr);
    torch::manual_seed(mix(o.seed, 4000000 + step));
    const auto idx = torch::randint(x_all.size(0), {o.batch}, torch::kLong);
    const auto x0 = x_all.index_select(0, idx);
    auto ctx = ctx_all.index_select(0, idx);
    const auto drop = (torch::rand({o.batch}) < o.caption_dropout).view({-1, 1, 1});
    ctx = torch::where(drop, empty_ctx.expand_as(ctx), ctx);
    const auto sigma = draw_sigmas(o, o.batch);
    const auto noise = torch::randn_like(x0);
    auto [xt, weight] = noise_batch(x0, sigma, noise, 0);
    if (o.object_weight > 0) weight = weight * object_weights(x0, o.object_weight);
    const auto pred = dit.forward(xt, sigma * 1000, ctx);
    const auto loss = ((pred - (noise - x0)).pow(2) * weight).sum() /
                      (weight.sum() * (x0.numel() / weight.numel()));
    opt.zero_grad();
    loss.backward();
    clip_grad_norm(params, 1.0);
    opt.step();
    ++step;
    seconds += seconds_since(ts);
    sum += loss.item<double>(), ++n;
    if (step % o.log_every == 0 || step == o.steps) {
      log.add(step, {sum / static_cast<double>(n)}, lr, seconds);
      std::snprintf(line, sizeof line, "lora step %lld/%lld  loss %.4f  %.2f s/step",
                    static_cast<long long>(step), static_cast<long long>(o.steps),
                    sum / static_cast<double>(n), seconds / static_cast<double>(step));
      say(o, line);
      sum = 0, n = 0;
    }
    if (step % o.save_every == 0) save();
  }
  save();
  if (step < o.steps) {
    for (auto& t : targets) t.second->adapters.clear();
    say(o, "lora: stopped at step " + std::to_string(step) + "; run again to resume");
    return;
  }

  // The file: original-key LoRA (diffusion_model.NAME.lora_down / lora_up /
  // alpha), bf16 like the shipped DiT.
  std::vector<std::pair<std::string, Tensor>> tensors;
  for (auto& [module, lin] : targets) {
    const auto& a = lin->adapters.back();
    const std::string stem = "diffusion_model." + module;
    tensors.emplace_back(stem + ".lora_down.weight", a.down.detach().to(torch::kBFloat16));
    tensors.emplace_back(stem + ".lora_up.weight", a.up.detach().to(torch::kBFloat16));
    tensors.emplace_back(stem + ".alpha", torch::tensor(static_cast<float>(o.alpha)));
    lin->adapters.clear();
  }
  const nlohmann::json recipe = {{"concept", "big"},
                                 {"base", "Kinora tiny Wan DiT"},
                                 {"rank", o.rank},
                                 {"alpha", o.alpha},
                                 {"steps", step},
                                 {"batch", o.batch},
                                 {"lr", o.lr},
                                 {"dataset", o.dataset},
                                 {"concept_share", o.concept_share},
                                 {"shift", o.shift},
                                 {"object_weight", o.object_weight},
                                 {"caption_dropout", o.caption_dropout},
                                 {"seed", o.seed}};
  const auto out = o.run_dir / kBigLoraFile;
  io::save_safetensors(out, tensors, {{"kinora_lora", recipe.dump()}, {"kinora_run", s.run_id}});
  say(o, "lora: wrote " + out.string());
}

}  // namespace kinora::training
