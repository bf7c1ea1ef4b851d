#!/usr/bin/env bash
# The CUDA figures of bench/RESULTS.md and the checks that need a GPU, on a
# machine with an NVIDIA GPU, nvcc and a CUDA LibTorch (PyTorch's); no Qt or
# FFmpeg needed.
#
#   bench/cuda.sh build   configure the "cuda" preset into build-cuda (kernels for
#                         this machine's GPU only) and build what the steps below run
#   bench/cuda.sh check   the fused kernels against their CPU twins (test_wan's
#                         Fused tests), a seed's video on the GPU against the
#                         CPU's and the FP8 kernel and product against theirs
#                         (test_device), the reference cases on the GPU in bf16,
#                         and the DiT cases with FP8 products
#   bench/cuda.sh speed   speed_bench: every workload at the sizes of the table
#                         (one warm-up, the median of three runs: CUDA times
#                         barely vary) with its 20 costliest operators on the
#                         GPU, then the DiTs with FP8 products
#   bench/cuda.sh render  render_bench: the whole Wan 1.3B job at 832×480×81,
#                         50 guided steps, to frames, cold (the models loaded
#                         from files in the page cache, the prompts encoded),
#                         in bf16, then with FP8 products (writes 15 GB of
#                         random weights to SCRATCH first)
#   bench/cuda.sh all     the four in that order
#
# Each step writes its output to RESULTS_DIR (default $OUT when set, else
# cuda-results) as STEP.txt; "all" goes on after a step that fails and exits
# non-zero at the end. The PyTorch image lacks nlohmann-json, CLI11,
# sentencepiece and GoogleTest: run packaging/gpu-deps.sh on a Debian machine
# that has them (packaging/install-deps.sh) and bring its .gpu/ folder along
# (KINORA_GPU_DEPS names another). Without Ninja, CMake's Makefiles are used.
set -euo pipefail
cd "$(dirname "$0")/.."
step=${1:-}
case "$step" in build | check | speed | render | all) ;; *)
  sed -n '2,/^set -e/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//' >&2
  exit 2
  ;;
esac
results=${RESULTS_DIR:-${OUT:-cuda-results}}
mkdir -p "$results"
build=${BUILD_DIR:-build-cuda}
scratch=${SCRATCH:-/tmp/kinora-bench}
deps=${KINORA_GPU_DEPS:-.gpu}
KINORA_GPU_DEPS_NAME=$deps
if [ -d "$deps" ]; then
  deps=$(realpath "$deps")
  export LD_LIBRARY_PATH=$deps/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
else
  deps=
fi
[ -d /usr/local/cuda/bin ] && export PATH=/usr/local/cuda/bin:$PATH
start=$(date +%s)
say() { echo "== $* ($(($(date +%s) - start)) s)"; }

do_build() {
  local torch_prefix
  torch_prefix=$(python3 -c 'import torch; print(torch.utils.cmake_prefix_path)') || return 1
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
  say "configuring $build against the LibTorch at $torch_prefix"
  [ -n "$deps" ] || say "no $KINORA_GPU_DEPS_NAME folder: nlohmann-json, CLI11 and sentencepiece must be installed"
  local generator=()
  command -v ninja > /dev/null || generator=(-G "Unix Makefiles")
  local tests=ON
  configure() {
    cmake --preset cuda -B "$build" "${generator[@]}" \
      "-DCMAKE_PREFIX_PATH=$torch_prefix${deps:+;$deps}" -DCMAKE_CUDA_ARCHITECTURES=native \
      -DKINORA_BUILD_MEDIA=OFF "$@"
  }
  if ! configure -DKINORA_BUILD_TESTS=ON; then
    say "configuring failed (above); again without the tests, in case GoogleTest is what is missing"
    tests=OFF
    rm -rf "$build/CMakeCache.txt" "$build/CMakeFiles"
    configure -DKINORA_BUILD_TESTS=OFF || return 1
  fi
  local targets=(speed_bench render_bench kinora-conformance)
  [ $tests = ON ] && targets+=(test_wan test_device)
  cmake --build "$build" --target "${targets[@]}" -j "$(nproc)" || return 1
  say "built ${targets[*]}"
}

do_check() {
  local rc=0
  if [ -x "$build/bin/test_wan" ]; then
    say "fused kernels against their CPU twins"
    "$build/bin/test_wan" --gtest_filter='Fused.*' || rc=1
    say "a seed's video on the GPU against the CPU's"
    "$build/bin/test_device" || rc=1
  else
    say "test_wan was not built (no GoogleTest): the kernels are not checked"
    rc=1
  fi
  say "the reference cases on the GPU, bf16"
  "$build/bin/kinora-conformance" --device cuda --precision bf16 \
    --weights-dir tests/fixtures tests/fixtures || rc=1
  say "the DiT cases on the GPU with FP8 products"
  "$build/bin/kinora-conformance" --device cuda --precision bf16 --fp8 \
    --weights-dir tests/fixtures tests/fixtures/wan21_dit_video.case.safetensors \
    tests/fixtures/wan21_dit_image.case.safetensors tests/fixtures/flux1_dev_dit.case.safetensors || rc=1
  say "the Wan DiT cases on the GPU without the fused passes"
  KINORA_FUSED=0 "$build/bin/kinora-conformance" --device cuda --precision bf16 \
    --weights-dir tests/fixtures tests/fixtures/wan21_dit_video.case.safetensors || rc=1
  return $rc
}

do_speed() {
  local rc=0
  local runs=(--warm-up 1 --repeat 3)
  "$build/bin/speed_bench" --device cuda --precision bf16 "${runs[@]}" --profile 20 || rc=1
  say "the Wan 1.3B step without the fused passes"
  KINORA_FUSED=0 "$build/bin/speed_bench" --device cuda --precision bf16 "${runs[@]}" \
    --only wan-1.3b,wan-1.3b-step || rc=1
  say "the DiTs with FP8 products"
  "$build/bin/speed_bench" --device cuda --precision bf16 --fp8 "${runs[@]}" \
    --only rates,wan-1.3b,wan-1.3b-step,wan-1.3b-graph,wan-14b,wan-14b-swap,flux-dev || rc=1
  return $rc
}

do_render() {
  local rc=0
  "$build/bin/render_bench" --device cuda --precision bf16 --scratch "$scratch" \
    --width 832 --height 480 --frames 81 --steps 50 --repeat 1 || rc=1
  say "the same with FP8 products"
  "$build/bin/render_bench" --device cuda --precision bf16 --scratch "$scratch" \
    --width 832 --height 480 --frames 81 --steps 50 --repeat 1 --fp8 || rc=1
  return $rc
}

status=0
run() { # STEP: its output to the terminal and RESULTS_DIR/STEP.txt
  say "$1"
  set +e
  "do_$1" 2>&1 | tee "$results/$1.txt"
  local rc=${PIPESTATUS[0]}
  set -e
  [ "$rc" = 0 ] || { say "$1 failed (status $rc)"; status=1; }
}
if [ "$step" = all ]; then
  for s in build check speed render; do run $s; done
else
  run "$step"
fi
say "done (status $status); results in $results"
exit $status
