#pragma once
// The preset of the tiny Wan fixture models that the pipeline tests render:
// 64×48, 9 frames, 3 steps, seed 11.
#include <string>

#include "pipeline/preset.h"
#include "test_util.h"

namespace kinora::test {

inline pipeline::Preset tiny_wan_preset(const std::string& out = "") {
  pipeline::Preset p;
  p.prompt = "a red circle moving left on a blue background";
  p.model = fixture("wan21_dit_tiny.safetensors");
  p.vae = fixture("wan21_vae_tiny.safetensors");
  p.text_encoder = fixture("umt5_enc_tiny.safetensors");
  p.tokenizer = fixture("spm_tiny.model");
  p.width = 64, p.height = 48, p.frames = 9, p.steps = 3, p.seed = 11;
  p.output = out;
  return p;
}

}  // namespace kinora::test
