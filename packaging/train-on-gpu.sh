#!/usr/bin/env bash
# Trains the embedded DiT on a CUDA machine within a fixed wall-clock budget
# (docs/training.md, recipe step 10 and "The seventh session"). Builds the
# core (no Qt, no FFmpeg) against that machine's LibTorch, trains
# `kinora train dit --device cuda` in a run folder that already holds the
# tokenizer and the VAE, and leaves the trained files in $OUT: the run's EMA
# weights, state and loss log (as a tar in 15 MiB parts), the last sample
# sheet and the log. The live weights and the optimizer stay behind: what
# comes back from the device machine is limited to 64 MiB.
#
#   RUN       run folder with kinora-tiny-spm.model and kinora-tiny-wan-vae.safetensors
#   BUDGET    seconds from this script's start to the end of training (default 500)
#   DEVICE    cuda, or cpu for a dry run of the script itself
#   DATASET, BATCH, LAYERS, DIM, FFN, PATCH   the training's size (defaults below;
#             PATCH 2 for the VAE that compresses time 4×, 4 for the older 1× one)
#   HEADS, LOCALITY, MOTION, POOL   attention heads, and how many of them start
#             as position kernels (--locality-heads, --motion-heads, --pool-heads;
#             defaults below)
#   TIME_PATCH  latent frames per token (--time-patch; default 1; 5 holds a
#             17-frame clip's 5 latent frames, with LOCALITY=0 and MOTION=0). At
#             most 64 MiB come back: a DiT file over 48 MB (width 512, 4 blocks:
#             78 MB in float32) returns in bf16, as shipped
#   GIVEN     share of clips with one latent frame given (--given-frame; default 0)
#   INIT      a trained model's folder to start from (--init-from; e.g. assets,
#             whose bf16 files travel with the working tree; its configs must
#             match DIM, HEADS, LAYERS, FFN, PATCH and TIME_PATCH)
#   OBJECT_WEIGHT, LR   --object-weight (default 0) and the peak --lr (3e-4)
#   REFINE, REFINE_LR, REFINE_BATCH   --refine-steps (default 0), --refine-lr
#             (0.04) and --refine-batch (256): the cached clips' latents fitted
#             through the frozen decoder before training (paid once, in the
#             first call, inside the budget; the step count is set after it,
#             from the speed of training alone). The preflight refines one
#             batch and, when DATASET clips would take over half the budget,
#             trains on as many as fit in that half (at least MIN_DATASET,
#             2048)
#   PRECISION --precision (default bf16 on cuda, so that a GPU without bf16 units
#             warns instead of training in float32 unasked; auto on cpu)
#   BUILT     a kinora binary already built for this machine: no build (for a
#             dry run of the script here with DEVICE=cpu)
#   KINORA_GPU_DEPS          prefix from packaging/gpu-deps.sh (default .gpu)
#
# The step count is set from the measured speed: 200 steps first (inside the
# warm-up, so the learning-rate schedule does not depend on them), then as
# many as fit in the budget, so the cosine schedule ends when the time does.
set -uo pipefail
start=$(date +%s)
OUT=${OUT:-$PWD/gpu-out}
mkdir -p "$OUT"
exec > >(tee -a "$OUT/log.txt") 2>&1

run=${RUN:-runs/gpu}
budget=${BUDGET:-500}
device=${DEVICE:-cuda}
if [ "$device" = cuda ]; then precision=${PRECISION:-bf16}; else precision=${PRECISION:-auto}; fi
dataset=${DATASET:-16384}
batch=${BATCH:-256}
layers=${LAYERS:-6}
dim=${DIM:-256}
ffn=${FFN:-1024}
patch=${PATCH:-2}
heads=${HEADS:-4}
locality=${LOCALITY:-3}
motion=${MOTION:-0}
pool=${POOL:-0}
time_patch=${TIME_PATCH:-1}
given=${GIVEN:-0}
init=${INIT:-}
object_weight=${OBJECT_WEIGHT:-0}
lr=${LR:-3e-4}
refine=${REFINE:-0}
refine_lr=${REFINE_LR:-0.04}
refine_batch=${REFINE_BATCH:-256}
min_dataset=${MIN_DATASET:-2048}
deps=$(realpath "${KINORA_GPU_DEPS:-.gpu}")
elapsed() { echo $(($(date +%s) - start)); }

# ---------------------------------------------------------------- build
if [ -n "${BUILT:-}" ]; then
  K=$BUILT
else
  torch_prefix=$(python3 -c 'import torch; print(torch.utils.cmake_prefix_path)' 2>/dev/null || true)
  [ -d /usr/local/cuda/bin ] && export PATH=/usr/local/cuda/bin:$PATH
  export LD_LIBRARY_PATH=$deps/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null
  echo "$(nproc) cores; $(cmake --version | head -1); $(g++ --version | head -1); torch at ${torch_prefix:-none}"
  configure() {
    cmake -S . -B build-gpu -G Ninja -DCMAKE_BUILD_TYPE=Release \
      "-DCMAKE_PREFIX_PATH=${torch_prefix:+$torch_prefix;}$deps" \
      -DKINORA_BUILD_TESTS=OFF -DKINORA_BUILD_BENCH=OFF -DKINORA_BUILD_MEDIA=OFF \
      -DKINORA_BUILD_APP=OFF ${EXTRA_CMAKE_ARGS:-} "$@" >"$OUT/configure.txt" 2>&1
  }
  if [ "$device" = cuda ]; then
    # The project's CUDA mode; without the CUDA language if that fails
    # (LibTorch's own config still links its CUDA libraries).
    configure -DKINORA_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=90 ||
      { echo "configure with KINORA_CUDA=ON failed; again without"; tail -30 "$OUT/configure.txt";
        rm -rf build-gpu; configure; }
  else
    configure
  fi || { tail -60 "$OUT/configure.txt"; exit 1; }
  grep -E "Kinora: LibTorch" "$OUT/configure.txt"
  cmake --build build-gpu --target kinora -j"$(nproc)" >"$OUT/build.txt" 2>&1 ||
    { grep -E -A5 "error" "$OUT/build.txt" | head -80; exit 1; }
  echo "built in $(elapsed) s"
  K=build-gpu/bin/kinora
fi

# ---------------------------------------------------------------- train
# A few steps of a tiny DiT first (tokenizer, a step on the device, a sample
# sheet, a checkpoint), so that a fault shows in seconds.
# With REFINE, the preflight refines one batch of clips as the run will, and
# times it.
preflight() {
  local clips=16
  [ "$refine" -gt 0 ] && clips=$refine_batch
  rm -rf /tmp/kinora-preflight && mkdir -p /tmp/kinora-preflight &&
    cp "$run"/kinora-tiny-spm.model "$run"/kinora-tiny-wan-vae.safetensors /tmp/kinora-preflight/ &&
    "$K" train dit --device "$device" --precision "$precision" --run /tmp/kinora-preflight --patch "$patch" --dim "$dim" \
      --time-patch "$time_patch" --given-frame "$given" --heads "$heads" --layers 1 --dataset "$clips" --batch 2 --steps 2 --sample-every 1 \
      --locality-heads "$locality" --motion-heads "$motion" --pool-heads "$pool" --log-every 1 \
      --refine-steps "$refine" --refine-lr "$refine_lr" --refine-batch "$refine_batch" |
    tee /tmp/kinora-preflight.log
  [ "${PIPESTATUS[0]}" = 0 ]
}
preflight || exit 1
echo "preflight passed at $(elapsed) s"
if [ "$refine" -gt 0 ] && [ -f "$run/refined-dataset-$refine-$refine_lr" ] && [ -f "$run/dit-state/latents.safetensors" ]; then
  # A call before this one (on the same warm machine) refined the cache: the
  # same clips again, so that the run reads it instead of refining anew.
  dataset=$(cat "$run/refined-dataset-$refine-$refine_lr")
  echo "refinement: the cache of an earlier call, $dataset clips"
elif [ "$refine" -gt 0 ]; then
  # "dit: latents refined (N steps at LR) in S s: ..." for one batch; the first
  # batch pays the device's warm-up, so this overestimates.
  per_batch=$(sed -n 's/.*latents refined (.*) in \([0-9.]*\) s:.*/\1/p' /tmp/kinora-preflight.log | tail -1)
  [ -n "$per_batch" ] || { echo "the preflight printed no refinement time"; exit 1; }
  estimate=$(awk -v s="$per_batch" -v n="$dataset" -v b="$refine_batch" 'BEGIN { printf "%d", s * n / b + 1 }')
  echo "refinement: $per_batch s for $refine_batch clips; about $estimate s for $dataset"
  if [ "$estimate" -gt $((budget / 2)) ]; then
    # Fewer clips (the first ones of the same sequence), in whole batches,
    # down to MIN_DATASET (2048); below that the run would mostly revisit them.
    fits=$(awk -v s="$per_batch" -v h=$((budget / 2)) -v b="$refine_batch" 'BEGIN { printf "%d", int(h / s) * b }')
    if [ "$fits" -lt "$min_dataset" ]; then
      echo "refining even $min_dataset clips would take over half of the ${budget} s budget: lower REFINE"
      exit 1
    fi
    echo "refining $dataset clips would take over half of the ${budget} s budget: $fits clips instead"
    dataset=$fits
  fi
  echo "$dataset" >"$run/refined-dataset-$refine-$refine_lr"
fi
args=(train dit --device "$device" --precision "$precision" --run "$run" --placement anywhere --patch "$patch" --dim "$dim"
      --time-patch "$time_patch" --given-frame "$given"
      --heads "$heads" --layers "$layers" --ffn "$ffn" --dataset "$dataset" --window 0 --batch "$batch"
      --lr "$lr" --warmup 300 --object-weight "$object_weight" --refine-steps "$refine" --refine-lr "$refine_lr"
      --refine-batch "$refine_batch" --locality-heads "$locality" --motion-heads "$motion" --pool-heads "$pool"
      --log-every "${LOG_EVERY:-50}" --save-every 1000
      --sample-every 1000)
[ -n "$init" ] && args+=(--init-from "$init")
first=${FIRST:-200}
"$K" "${args[@]}" --steps "$first" || exit 1
# Seconds per step from the loss log's last two lines (step, loss, lr, seconds):
# past the first steps, which pay for the device's warm-up.
per_step=$(tail -2 "$run/dit-state/loss.csv" |
  awk -F, 'NR == 1 { s = $1; t = $NF } NR == 2 { print ($NF - t) / ($1 - s) }')
left=$((budget - $(elapsed) - 15))
steps=$(awk -v f=$first -v l=$left -v p="$per_step" 'BEGIN { n = int(l / p * 0.92); print f + (n > 0 ? n : 0) }')
echo "$per_step s/step after $first steps; $left s left: training to step $steps"
# Stopped with Ctrl-C's signal if it overruns: the stage saves before it stops.
# --foreground: otherwise timeout signals the command and then its whole process
# group, and a second SIGINT ends the process at once, before the save.
timeout --foreground -s INT $((left + 20)) "$K" "${args[@]}" --steps "$steps"
echo "trained in $(elapsed) s"

# ---------------------------------------------------------------- results
files=(dit-state/state.json dit-state/loss.csv)
[ -f "$run/dit-state/word-gaps.csv" ] && files+=(dit-state/word-gaps.csv)  # what each word does
[ -f "$run/dit-state/denoise.csv" ] && files+=(dit-state/denoise.csv)  # how much of the object it finds
[ -f "$run/dit-state/direction-given-frame.csv" ] && files+=(dit-state/direction-given-frame.csv)
if [ -f "$run/kinora-tiny-wan-dit.safetensors" ] &&
   [ "$(python3 -c "import json;print(json.load(open('$run/dit-state/state.json'))['step'])" 2>/dev/null)" = "$steps" ]; then
  dit=kinora-tiny-wan-dit.safetensors te=kinora-tiny-umt5.safetensors
else  # stopped early: the EMA weights of the last checkpoint
  dit=dit-state/ema-dit.safetensors te=dit-state/ema-umt5.safetensors
fi
# Over 48 MB in float32 (width 512: 78 MB) they come back in bf16, as shipped.
if [ "$(stat -c %s "$run/$dit")" -gt 48000000 ]; then
  for f in "$dit" "$te"; do
    rm -f "$run/bf16-$(basename "$f")"
    "$K" convert "$run/$f" "$run/bf16-$(basename "$f")" --dtype bf16 || exit 1
    files+=("bf16-$(basename "$f")")
  done
else
  files+=("$dit" "$te")
fi
tar -C "$run" -cf - "${files[@]}" | split -b 15m - "$OUT/run.tar.part-"
cp "$(ls -v "$run"/dit-state/samples-*.ppm | tail -1)" "$OUT/"
rm -f "$OUT/configure.txt" "$OUT/build.txt"  # at most 8 files come back
ls -la "$OUT"
echo "done in $(elapsed) s"
