#!/usr/bin/env bash
# The code that reads what users bring from elsewhere, under AddressSanitizer
# and UndefinedBehaviorSanitizer (clang, the "fuzz" CMake preset, build-fuzz/):
#   1. the unit tests of io (safetensors, checkpoints, layouts, files) and of
#      presets and media (output, sidecars, parameters read back);
#   2. each libFuzzer target of fuzz/ for SECONDS, from its seed corpus.
# Exits non-zero on a failed test or a fuzzer's finding (saved under
# build-fuzz/findings/). CI runs it after the test suite (.ci/run).
#
#   packaging/check-sanitizers.sh [SECONDS per fuzz target, default 30]
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-30}"
targets=(safetensors checkpoint_index preset metadata tokenizer lora)

start=$(date +%s)
cmake --preset fuzz >/dev/null
cmake --build --preset fuzz --target test_io test_pipeline "${targets[@]/#/fuzz_}"
echo "check-sanitizers: build took $(( $(date +%s) - start )) s"

build-fuzz/bin/test_io
# The pipeline's own tests render through libsentencepiece, which cannot be
# loaded under the sanitizers beside LibTorch's protobuf; presets and media
# are what read untrusted input.
build-fuzz/bin/test_pipeline --gtest_filter='Presets.*:Media.*'

findings=build-fuzz/findings
mkdir -p "$findings"
for t in "${targets[@]}"; do
  work=$(mktemp -d)
  echo "check-sanitizers: fuzz_$t for $seconds s"
  if ! build-fuzz/bin/fuzz_$t -max_total_time="$seconds" -timeout=10 -rss_limit_mb=4096 \
        -artifact_prefix="$findings/$t-" -print_final_stats=1 "$work" "fuzz/corpus/$t" \
        >"$work.log" 2>&1; then
    tail -n 60 "$work.log"
    echo "check-sanitizers: fuzz_$t found a failure; the input is in $findings/" >&2
    exit 1
  fi
  grep -E "stat::number_of_executed_units|stat::average_exec_per_sec" "$work.log" | tr '\n' ' '
  echo
  rm -rf "$work" "$work.log"
done
echo "check-sanitizers: passed in $(( $(date +%s) - start )) s"
