#!/usr/bin/env bash
# Installs every Debian 12 package Kinora needs to build, test and run.
# Idempotent: packages already present are left alone, so a second run is fast.
#
#   packaging/install-deps.sh          core + CLI + tests + media + desktop app
#   KINORA_NO_APP=1 packaging/...      skip the Qt packages (core and CLI only)
set -euo pipefail

packages=(
  # toolchain
  build-essential cmake ninja-build ccache pkg-config clang-format git
  # the LibTorch core (CPU). libopenblas0-openmp matters: without it Debian's
  # LibTorch does float32 matmuls on the reference BLAS (~5 GFLOP/s vs ~30).
  libtorch-dev libopenblas0-openmp
  # small libraries of the core
  nlohmann-json3-dev libcli11-dev libspdlog-dev libfmt-dev libsentencepiece-dev libssl-dev
  # media output (FFmpeg 5.1) and the tools the tests decode with
  libavformat-dev libavcodec-dev libavutil-dev libswscale-dev libpng-dev ffmpeg
  # tests and benchmarks; clang with its runtime for the sanitizers and libFuzzer
  libgtest-dev libgmock-dev libbenchmark-dev clang libclang-rt-14-dev
  # the external check of `kinora lora merge` (tools/check-lora-merge.py)
  python3
  # the Slurm test's one-machine cluster (tests/slurm, packaging/slurm)
  slurmctld slurmd slurm-client munge
)
if [[ -z "${KINORA_NO_APP:-}" ]]; then
  packages+=(qt6-base-dev qt6-multimedia-dev qt6-svg-dev libsqlite3-dev
             xvfb xauth libgl-dev)
fi

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]} == 0)); then
  echo "install-deps: all ${#packages[@]} packages present"
  exit 0
fi

echo "install-deps: installing ${missing[*]}"
SUDO=""
if [[ $(id -u) -ne 0 ]]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
