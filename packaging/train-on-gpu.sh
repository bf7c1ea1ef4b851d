#!/usr/bin/env bash
# Trains the embedded default model on a machine with an NVIDIA GPU, following
# the recipe in docs/training.md: builds Kinora against the machine's CUDA
# LibTorch (PyTorch's), then runs the stages, the DiT stages with
# `kinora train dit --device cuda` and the VAE stages on the CPU (`kinora train
# vae` has no --device; it uses every core). The finished model lands in
# OUT/model/.
#
# Each step is skipped when its result is there, and a stage stopped half-way
# (Ctrl-C saves first) resumes from its last checkpoint, so running the script
# again goes on where it stopped.
#
# Needs: CMake 3.25+, Ninja, a C++17 compiler, python3 with a CUDA build of
# PyTorch (its LibTorch is what Kinora links), and nlohmann-json, CLI11 and
# libsentencepiece (with its trainer) where CMake finds them. An image without
# those three: run packaging/gpu-deps.sh on a Debian machine that has them
# (packaging/install-deps.sh) and bring its .gpu/ folder along.
set -euo pipefail

usage() {
  cat <<'EOF'
usage: packaging/train-on-gpu.sh [OUT]

Trains the embedded default model (docs/training.md) into OUT (default
runs/gpu; runs/ is ignored by git). The four model files land in OUT/model/.

environment:
  STAGES           what to run, in this order (default "vae dit decoder model"):
                     vae      the tokenizer and the VAE the DiT learns from (T, V1-V3)
                     dit      the DiT and umT5, on the GPU (D1-D8; needs vae)
                     decoder  the VAE's decoder retrained for those latents (V4-V7; needs vae)
                     model    OUT/model/ from the three, and its semantic scores
  KINORA           a kinora binary built for this machine: no build
  BUILD_DIR        where to build (default build-cuda, the cuda preset's folder)
  KINORA_GPU_DEPS  prefix with nlohmann-json, CLI11 and sentencepiece
                   (packaging/gpu-deps.sh; default .gpu when it exists)
  DIT_PRECISION    compute precision of the DiT stages (default bf16, as the
                   recipe ran; an Ampere or later GPU computes it)
  VAE_PRECISION    of the first VAE stages on the CPU (default auto: bf16 on a CPU
                   with bf16 arithmetic, as the recipe ran, else fp32); the
                   decoder stages run in fp32, as the recipe did
  PREFLIGHT        0 skips the few-second check of every stage on tiny settings

Then:
  KINORA_ASSETS=OUT/model kinora generate --prompt "a red circle moving left on a blue background"
  kinora score --model-dir OUT/model
or copy the four files of OUT/model/ into assets/ to make them the embedded default.
EOF
}
case "${1:-}" in -h | --help) usage; exit 0 ;; esac
[ $# -le 1 ] || { usage >&2; exit 2; }

cd "$(dirname "$0")/.."
R=${1:-runs/gpu}
mkdir -p "$R"
R=$(realpath "$R")
exec > >(tee -a "$R/log.txt") 2>&1
stages=" ${STAGES:-vae dit decoder model} "
dit_precision=${DIT_PRECISION:-bf16}
vae_precision=${VAE_PRECISION:-auto}
start=$(date +%s)
say() { echo "== $* ($(($(date +%s) - start)) s)"; }
wants() { [[ $stages == *" $1 "* ]]; }

# --------------------------------------------------------------------- build
deps=${KINORA_GPU_DEPS:-.gpu}
if [ -d "$deps" ]; then
  deps=$(realpath "$deps")
  export LD_LIBRARY_PATH=$deps/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
else
  deps=
fi
if [ -n "${KINORA:-}" ]; then
  K=$(realpath "$KINORA")
else
  build=${BUILD_DIR:-build-cuda}
  torch_prefix=$(python3 -c 'import torch; print(torch.utils.cmake_prefix_path)')
  [ -d /usr/local/cuda/bin ] && export PATH=/usr/local/cuda/bin:$PATH
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
  say "building in $build against the LibTorch at $torch_prefix"
  prefix_path=$torch_prefix${deps:+;$deps}
  # The cuda preset (KINORA_CUDA=ON) needs nvcc for CMake's CUDA language. A
  # PyTorch without the CUDA toolkit still trains on the GPU through LibTorch's
  # own CUDA libraries: then configure with KINORA_CUDA=OFF.
  if ! cmake --preset cuda -B "$build" "-DCMAKE_PREFIX_PATH=$prefix_path" \
      -DCMAKE_CUDA_ARCHITECTURES=native -DKINORA_BUILD_TESTS=OFF -DKINORA_BUILD_BENCH=OFF; then
    say "configuring with KINORA_CUDA=ON failed (no nvcc?); again with KINORA_CUDA=OFF"
    rm -rf "$build/CMakeCache.txt" "$build/CMakeFiles"
    cmake --preset cuda -B "$build" "-DCMAKE_PREFIX_PATH=$prefix_path" -DKINORA_CUDA=OFF \
      -DKINORA_BUILD_TESTS=OFF -DKINORA_BUILD_BENCH=OFF
  fi
  cmake --build "$build" --target kinora -j "$(nproc)"
  K=$(realpath "$build/bin/kinora")
fi
say "using $K"

# ------------------------------------------------------------------- helpers
# True when the stage in run folder $1 has reached step $2.
reached() {
  local s
  for s in "$1"/*-state/state.json; do
    [ -f "$s" ] &&
      [ "$(python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["step"])' "$s")" -ge "$2" ] &&
      return 0
  done
  return 1
}
# kinora convert to bf16 and kinora merge, unless the output is there.
to_bf16() { [ -f "$2" ] || { mkdir -p "$(dirname "$2")" && "$K" convert "$1" "$2" --dtype bf16; }; }
merge() { # A B C RATIO OUT: A + RATIO·(B − C)
  [ -f "$5" ] || { mkdir -p "$(dirname "$5")" && "$K" merge "$1" "$2" --subtract "$3" --ratio "$4" -o "$5"; }
}

# ----------------------------------------------------------------- preflight
# Every kind of stage for two steps on tiny settings, so that a fault (the GPU,
# a library) shows in seconds rather than hours in.
if [ "${PREFLIGHT:-1}" != 0 ]; then
  p=$(mktemp -d)
  "$K" train tokenizer --run "$p"
  "$K" train vae --run "$p" --spatial-compression 4 --time-compression 4 --steps 2 --batch 2 \
    --frames 5 --crop 32 --warmup 1 --precision "$vae_precision"
  "$K" train dit --device cuda --precision "$dit_precision" --run "$p" --patch 2 --dim 64 \
    --ffn 128 --heads 2 --layers 1 --dataset 16 --batch 2 --steps 2 --warmup 1 \
    --sample-every 1 --log-every 1
  rm -rf "$p"
  say "preflight passed"
fi

# ------------------------------------------------------------ vae: T, V1–V3
vae_args=(--spatial-compression 4 --time-compression 4 --batch 16 --frames 9 --crop 32 --warmup 20)
if wants vae; then
  [ -f "$R/tok/kinora-tiny-spm.model" ] || "$K" train tokenizer --run "$R/tok"
  reached "$R/vae-image" 800 || "$K" train vae --run "$R/vae-image" --spatial-compression 4 \
    --time-compression 1 --steps 800 --batch 64 --frames 1 --crop 32 --lr 1e-4 --warmup 50 \
    --precision "$vae_precision"
  reached "$R/vae-video" 1500 || "$K" train vae --run "$R/vae-video" "${vae_args[@]}" \
    --inflate-from "$R/vae-image/kinora-tiny-wan-vae.safetensors" --steps 1500 --lr 1e-4 \
    --precision "$vae_precision"
  # V3 goes on from V2's state, the decoder alone.
  [ -d "$R/vae-dec/vae-state" ] || { mkdir -p "$R/vae-dec" && cp -r "$R/vae-video/vae-state" "$R/vae-dec/"; }
  reached "$R/vae-dec" 1900 || "$K" train vae --run "$R/vae-dec" "${vae_args[@]}" \
    --decoder-only --steps 1900 --lr 2e-4 --precision "$vae_precision"
  to_bf16 "$R/vae-dec/kinora-tiny-wan-vae.safetensors" "$R/vae-bf16.safetensors"
  say "vae done: $R/vae-dec/kinora-tiny-wan-vae.safetensors (float32), $R/vae-bf16.safetensors"
fi

# ------------------------------------------------------------ dit: D1–D8
dit_cpu=(--device cuda --precision "$dit_precision" --placement anywhere --patch 2 --time-patch 5
  --dim 512 --heads 8 --layers 4 --ffn 2048 --dataset 1536 --window 0 --batch 16 --warmup 200
  --sample-every 1000 --save-every 1000)
dit_gpu=(--device cuda --precision "$dit_precision" --placement anywhere --patch 2 --time-patch 5
  --dim 512 --heads 8 --layers 4 --ffn 2048 --dataset 16384 --window 0 --lr 2e-4 --warmup 300
  --object-weight 4 --locality-heads 0 --motion-heads 0 --pool-heads 0 --given-frame 0
  --sample-every 1000 --save-every 1000)
if wants dit; then
  # D1–D4: one run folder, four legs (the recipe ran them on a 2-core CPU).
  d=$R/dit
  [ -f "$d/kinora-tiny-spm.model" ] || { mkdir -p "$d" && cp "$R/tok/kinora-tiny-spm.model" \
    "$R/vae-video/kinora-tiny-wan-vae.safetensors" "$d/"; }
  reached "$d" 10000 || "$K" train dit --run "$d" "${dit_cpu[@]}" --lr 3e-4 --steps 10000
  reached "$d" 20000 || "$K" train dit --run "$d" "${dit_cpu[@]}" --lr 3e-4 --steps 20000
  reached "$d" 27000 || "$K" train dit --run "$d" "${dit_cpu[@]}" --lr 2.5e-4 --steps 27000 --shift 8
  if ! reached "$d" 36000; then
    cp "$R/vae-dec/kinora-tiny-wan-vae.safetensors" "$d/"  # V3: the same encoder, sharper sheets
    "$K" train dit --run "$d" "${dit_cpu[@]}" --lr 4e-4 --steps 36000 --shift 3 --object-weight 4
  fi
  for f in wan-dit umt5; do to_bf16 "$d/kinora-tiny-$f.safetensors" "$R/dit-bf16/kinora-tiny-$f.safetensors"; done

  # D5: 16384 clips, 256 a step, from D4; keep the files of step 5705 for D6.
  d=$R/gpu1
  [ -f "$d/kinora-tiny-spm.model" ] || { mkdir -p "$d" && cp "$R/tok/kinora-tiny-spm.model" \
    "$R/vae-dec/kinora-tiny-wan-vae.safetensors" "$d/"; }
  reached "$d" 5705 || "$K" train dit --run "$d" --init-from "$R/dit-bf16" "${dit_gpu[@]}" \
    --batch 256 --log-every 50 --steps 5705
  for f in wan-dit umt5; do to_bf16 "$d/kinora-tiny-$f.safetensors" "$R/gpu1-5705/kinora-tiny-$f.safetensors"; done
  reached "$d" 9000 || "$K" train dit --run "$d" "${dit_gpu[@]}" --batch 256 --log-every 50 --steps 9000
  for f in wan-dit umt5; do to_bf16 "$d/kinora-tiny-$f.safetensors" "$R/gpu1-9000/kinora-tiny-$f.safetensors"; done

  # D6: step 9000 plus its difference from step 5705.
  for f in wan-dit umt5; do
    merge "$R/gpu1-9000/kinora-tiny-$f.safetensors" "$R/gpu1-9000/kinora-tiny-$f.safetensors" \
      "$R/gpu1-5705/kinora-tiny-$f.safetensors" 1 "$R/extrap/kinora-tiny-$f.safetensors"
  done

  # D7: 512 clips a step, from D6, with V3's VAE in bf16.
  d=$R/gpu2
  [ -f "$d/kinora-tiny-spm.model" ] || { mkdir -p "$d" && cp "$R/tok/kinora-tiny-spm.model" "$d/" &&
    cp "$R/vae-bf16.safetensors" "$d/kinora-tiny-wan-vae.safetensors"; }
  reached "$d" 5764 || "$K" train dit --run "$d" --init-from "$R/extrap" "${dit_gpu[@]}" \
    --batch 512 --log-every 50 --steps 5764
  reached "$d" 8600 || "$K" train dit --run "$d" "${dit_gpu[@]}" --batch 512 --log-every 500 --steps 8600
  for f in wan-dit umt5; do to_bf16 "$d/kinora-tiny-$f.safetensors" "$R/gpu2-8600/kinora-tiny-$f.safetensors"; done

  # D8: step 8600 moved on by half its difference from D7's start.
  for f in wan-dit umt5; do
    merge "$R/gpu2-8600/kinora-tiny-$f.safetensors" "$R/gpu2-8600/kinora-tiny-$f.safetensors" \
      "$R/extrap/kinora-tiny-$f.safetensors" 0.5 "$R/dit-final/kinora-tiny-$f.safetensors"
  done
  say "dit done: $R/dit-final/ (DiT and umT5, bf16)"
fi

# -------------------------------------------------------- decoder: V4–V7
if wants decoder; then
  v3=$R/vae-bf16.safetensors
  reached "$R/vae-joint1" 2000 || "$K" train vae --run "$R/vae-joint1" "${vae_args[@]}" \
    --init-from "$v3" --steps 2000 --lr 1e-4 --save-every 250 --precision fp32
  reached "$R/vae-splice1" 600 || "$K" train vae --run "$R/vae-splice1" "${vae_args[@]}" \
    --init-from "$v3" --decoder-from "$R/vae-joint1/kinora-tiny-wan-vae.safetensors" \
    --decoder-only --steps 600 --lr 1e-4 --save-every 200 --precision fp32
  reached "$R/vae-joint2" 800 || "$K" train vae --run "$R/vae-joint2" "${vae_args[@]}" \
    --init-from "$R/vae-splice1/kinora-tiny-wan-vae.safetensors" --steps 800 --lr 1e-4 \
    --save-every 200 --precision fp32
  reached "$R/vae-splice2" 600 || "$K" train vae --run "$R/vae-splice2" "${vae_args[@]}" \
    --init-from "$v3" --decoder-from "$R/vae-joint2/kinora-tiny-wan-vae.safetensors" \
    --decoder-only --steps 600 --lr 1e-4 --save-every 200 --precision fp32
  say "decoder done: $R/vae-splice2/kinora-tiny-wan-vae.safetensors (float32)"
fi

# ---------------------------------------------------------------- model
if wants model; then
  m=$R/model
  mkdir -p "$m"
  cp "$R/tok/kinora-tiny-spm.model" "$m/"
  cp "$R/dit-final/kinora-tiny-wan-dit.safetensors" "$R/dit-final/kinora-tiny-umt5.safetensors" "$m/"
  cp "$R/vae-splice2/kinora-tiny-wan-vae.safetensors" "$m/"
  ls -l "$m"
  # `kinora score` needs the pipeline, which a build without FFmpeg lacks.
  if "$K" score --help >/dev/null 2>&1; then
    "$K" score --model-dir "$m"
  else
    echo "this kinora has no 'score' (built without FFmpeg): score $m on a full build"
  fi
  say "model: $m"
  cat <<EOF
Use it:
  KINORA_ASSETS=$m kinora generate --prompt "a red circle moving left on a blue background"
  kinora score --model-dir $m [--prompt-seed 9000 --noise-seed 500]
or copy the four files into assets/ to make them the embedded default.
EOF
fi
