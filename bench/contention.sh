#!/usr/bin/env bash
# Reports (does not assert) the README's main command on an idle machine and
# beside busy processes: the median wall time of each, and their ratio. The
# busy processes are shell loops, one per CPU by default (on a 2-core machine,
# two other CPU-bound processes), started before and stopped after the timed runs.
#
#   bench/contention.sh [RUNS] [BUSY]      (defaults: 5 runs, as many busy loops as CPUs)
#
# Environment as for kinora (KINORA_THREADS, OMP_WAIT_POLICY…) passes through,
# so the same script compares settings.
set -euo pipefail
cd "$(dirname "$0")/.."
runs="${1:-5}"
busy="${2:-$(nproc)}"
kinora="${KINORA_BIN:-build/bin/kinora}"
scratch=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$scratch"' EXIT

time_runs() {  # prints the wall seconds of each run, one per line
  for ((i = 0; i < runs; ++i)); do
    local t0 t1
    t0=$(date +%s.%N)
    "$kinora" generate --prompt "a red circle moving left on a blue background" --seed 1 \
      --out "$scratch/clip-$1-$i.mp4" >/dev/null 2>&1
    t1=$(date +%s.%N)
    echo "$t1 - $t0" | bc
  done
}
median() { sort -n | awk '{a[NR] = $1} END {print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2}'; }

"$kinora" generate --prompt "warm up the page cache" --seed 1 --out "$scratch/warm.mp4" >/dev/null 2>&1
idle=$(time_runs idle | median)
for ((b = 0; b < busy; ++b)); do (while :; do :; done) & done
sleep 1
loaded=$(time_runs busy | median)
kill $(jobs -p) 2>/dev/null || true
echo "# $("$kinora" --version); $(nproc) CPUs ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs))"
echo "| runs | idle median (s) | beside $busy busy processes, median (s) | ratio |"
echo "|---|---|---|---|"
printf "| %d | %.2f | %.2f | %.1f× |\n" "$runs" "$idle" "$loaded" "$(echo "$loaded / $idle" | bc -l)"
