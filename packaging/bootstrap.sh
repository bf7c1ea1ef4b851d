#!/usr/bin/env bash
# Sets up a fresh Debian 12 machine and builds Kinora, then runs one job:
#
#   packaging/bootstrap.sh demo   the main job: a video from a prompt (see README)
#   packaging/bootstrap.sh test   the whole test suite (what CI runs)
#
# Installs the Debian packages (packaging/install-deps.sh), configures with the
# "default" CMake preset into build/, builds, and leaves the programs in build/bin.
set -euo pipefail
cd "$(dirname "$0")/.."
job="${1:-}"
case "$job" in demo|test) ;; *) echo "usage: $0 demo|test" >&2; exit 2 ;; esac

packaging/install-deps.sh
start=$(date +%s)
# KINORA_CMAKE_ARGS: more -D options (CI: -DKINORA_WERROR=ON).
# shellcheck disable=SC2086
cmake --preset default ${KINORA_CMAKE_ARGS:-}
cmake --build --preset default
echo "bootstrap: build took $(( $(date +%s) - start )) s"

case "$job" in
  test)
    start=$(date +%s)
    ctest --preset default
    echo "bootstrap: tests took $(( $(date +%s) - start )) s"
    ;;
  demo)
    # The main job: a video from a prompt, by the embedded default model in
    # assets/ (trained by the project: docs/training.md), with no model options:
    # 64×64, 17 frames, a couple of seconds on two CPU cores.
    out="${KINORA_DEMO_OUT:-kinora-demo.mp4}"
    build/bin/kinora generate \
      --prompt "${KINORA_DEMO_PROMPT:-a red circle moving left on a blue background}" \
      --seed "${KINORA_DEMO_SEED:-1}" --out "$out"
    echo "== wrote $out; its parameters: build/bin/kinora restore $out"
    ;;
esac
