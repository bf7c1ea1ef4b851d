#!/usr/bin/env bash
# Sets up a fresh Debian 12 machine and builds Kinora, then runs one job:
#
#   packaging/bootstrap.sh demo   the main job (see README: what it does today)
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
cmake --preset default
cmake --build --preset default
echo "bootstrap: build took $(( $(date +%s) - start )) s"

case "$job" in
  test)
    start=$(date +%s)
    ctest --preset default
    echo "bootstrap: tests took $(( $(date +%s) - start )) s"
    ;;
  demo)
    # The text-to-video pipeline and the embedded model are not built yet (issues
    # 3-5); until they land this shows what exists: the samplers, checkpoint
    # inspection, and the reference-case runner.
    echo "== Kinora cannot make a video yet: the models and the pipeline are still being built."
    echo "== What exists today:"
    build/bin/kinora --version
    build/bin/kinora samplers
    build/bin/kinora info tests/fixtures/wan21_dit_tiny.safetensors
    build/bin/kinora-conformance --allow-skip tests/fixtures
    ;;
esac
