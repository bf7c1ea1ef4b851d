#!/usr/bin/env bash
# `kinora slurm submit` against a running Slurm: a one-machine cluster started
# in a temporary folder (packaging/slurm/local-cluster.sh), an array of 3 tasks
# over 7 presets of the embedded model, every output there once, decodable and
# restoring its own preset; then a second batch with one task cancelled
# mid-render (scancel), resubmitted: only the missing outputs are rendered and
# nothing partial is left; two overlapping submissions render each preset
# once. The daemons it started are stopped whatever the
# outcome. Exit 77 (ctest: skipped) where the machine cannot run them.
#
# Usage: slurm_test.sh KINORA_BINARY SOURCE_DIR
set -Eeuo pipefail

kinora=$(realpath "$1")
src=$(realpath "$2")
cluster="$src/packaging/slurm/local-cluster.sh"

if ! out=$("$cluster" available); then
  echo "SKIP: $out"
  exit 77
fi

work=$(mktemp -d /tmp/kinora-slurm-XXXXXX)
chmod 755 "$work"  # munged wants every folder above its socket searchable by all
cleanup() {
  "$cluster" stop "$work/cluster" || true
  rm -rf "$work"
}
trap cleanup EXIT

fail() { echo "FAIL: $*"; exit 1; }
env_line=$("$cluster" start "$work/cluster") || fail "the cluster did not start"
eval "$env_line"

# Seven presets of the embedded model, small and fast.
mkdir -p "$work/presets" "$work/out"
colours=(red green blue yellow white black red)
shapes=(circle square triangle circle square triangle square)
for i in 0 1 2 3 4 5 6; do
  bg=blue; [[ ${colours[$i]} == blue ]] && bg=black
  cat >"$work/presets/p$i.json" <<EOF
{"prompt": "a ${colours[$i]} ${shapes[$i]} moving left on a $bg background",
 "seed": $((100 + i)), "steps": 3, "width": 64, "height": 64}
EOF
done

echo "== an array of 3 tasks over 7 presets"
job=$("$kinora" slurm submit "$work/presets" --tasks 3 --cpus-per-task 1 \
  --output-dir "$work/out" --log-dir "$work/logs" --wait) || fail "the array did not complete"
echo "job $job"
for i in 0 1 2 3 4 5 6; do
  f="$work/out/p$i.mp4"
  [[ -f $f ]] || fail "p$i.mp4 is missing"
  frames=$(ffprobe -v error -count_frames -show_entries stream=nb_read_frames -of csv=p=0 "$f")
  [[ $frames == 17 ]] || fail "p$i.mp4 decodes to '$frames' frames"
  seed=$("$kinora" restore "$f" | grep '"seed"' | tr -dc 0-9)
  [[ $seed == $((100 + i)) ]] || fail "p$i.mp4 restores seed '$seed'"
done
# Each preset rendered exactly once, by the task whose shard it is.
rendered=$(grep -h "^$work/out/" "$work"/logs/kinora-"$job"_*.out | sort)
[[ $(echo "$rendered" | wc -l) == 7 && $(echo "$rendered" | uniq -d | wc -l) == 0 ]] ||
  fail "outputs rendered: $rendered"
"$kinora" batch --status "$work/presets" --output-dir "$work/out" --log-dir "$work/logs" ||
  fail "batch --status does not say all done"

echo "== a second batch, one task cancelled mid-render, resubmitted"
mkdir -p "$work/presets2" "$work/out2"
for i in 0 1 2 3 4 5; do
  sed "s/\"steps\": 3/\"steps\": 40/" "$work/presets/p$i.json" >"$work/presets2/q$i.json"
done
job2=$("$kinora" slurm submit "$work/presets2" --tasks 3 --cpus-per-task 1 \
  --output-dir "$work/out2" --log-dir "$work/logs2")
# Wait until task 1 is running and has begun sampling, then cancel it.
for _ in $(seq 1 120); do
  grep -qs "step " "$work/logs2/kinora-${job2}_1.out" && break
  sleep 0.5
done
scancel "${job2}_1"
while [[ -n $(squeue -h -j "$job2" -o %i) ]]; do sleep 1; done
state=$(scontrol show job -o "${job2}_1" | grep -o 'JobState=[A-Z]*')
[[ $state == JobState=CANCELLED ]] || fail "task 1 is $state"
# Nothing partial: only complete outputs and their sidecars in the folder.
leftovers=$(find "$work/out2" -name '.*' -o -name '*tmp*')
[[ -z $leftovers ]] || fail "partial files left: $leftovers"
before=$(ls "$work/out2"/*.mp4 | wc -l)
"$kinora" batch --status "$work/presets2" --output-dir "$work/out2" --log-dir "$work/logs2" &&
  fail "batch --status says all done after a cancel"
[[ $before -lt 6 ]] || fail "the cancelled task finished anyway"
stamps=$(stat -c '%n %Y' "$work/out2"/*.mp4)

job3=$("$kinora" slurm submit "$work/presets2" --tasks 3 --cpus-per-task 1 \
  --output-dir "$work/out2" --log-dir "$work/logs2" --wait) || fail "the resubmission failed"
[[ $(ls "$work/out2"/*.mp4 | wc -l) == 6 ]] || fail "not all 6 outputs after resubmitting"
[[ $(stat -c '%n %Y' $(echo "$stamps" | cut -d' ' -f1)) == "$stamps" ]] ||
  fail "an output that existed was rendered again"
again=$(grep -h "^$work/out2/" "$work"/logs2/kinora-"$job3"_*.out | wc -l)
[[ $again == $((6 - before)) ]] || fail "the resubmission rendered $again, expected $((6 - before))"
"$kinora" batch --status "$work/presets2" --output-dir "$work/out2" --log-dir "$work/logs2" ||
  fail "batch --status does not say all done after the resubmission"

echo "== a preset added while the array waits: its tasks render nothing and fail"
mkdir -p "$work/presets3" "$work/out3"
cp "$work/presets/p0.json" "$work/presets/p1.json" "$work/presets3/"
job4=$("$kinora" slurm submit "$work/presets3" --tasks 2 --cpus-per-task 1 --sbatch-arg=--hold \
  --output-dir "$work/out3" --log-dir "$work/logs3")
cp "$work/presets/p2.json" "$work/presets3/"  # shards would shift: p0 p1 p2 over 2 tasks
scontrol release "$job4"
while [[ -n $(squeue -h -j "$job4" -o %i) ]]; do sleep 1; done
[[ -z $(ls "$work/out3") ]] || fail "tasks rendered presets other than those submitted"
grep -qs "not those submitted" "$work"/logs3/kinora-"$job4"_*.out ||
  fail "the tasks did not say the presets changed"
"$kinora" slurm submit "$work/presets3" --tasks 2 --cpus-per-task 1 --output-dir "$work/out3" \
  --log-dir "$work/logs3" --wait >/dev/null || fail "the resubmission after the change failed"
[[ $(ls "$work/out3"/*.mp4 | wc -l) == 3 ]] || fail "not all 3 outputs after resubmitting"

echo "== two submissions of the same presets at once: each preset rendered once"
mkdir -p "$work/presets4" "$work/out4"
cp "$work/presets"/p[0-3].json "$work/presets4/"
jobs=()
for side in a b; do
  jobs+=("$("$kinora" slurm submit "$work/presets4" --tasks 1 --cpus-per-task 1 \
    --sbatch-arg=--hold --output-dir "$work/out4" --log-dir "$work/logs4$side")")
done
scontrol release "${jobs[0]}" "${jobs[1]}"
while [[ -n $(squeue -h -j "${jobs[0]},${jobs[1]}" -o %i) ]]; do sleep 1; done
[[ $(ls "$work/out4"/*.mp4 | wc -l) == 4 ]] || fail "not all 4 outputs of the overlapping arrays"
rendered=$(cat "$work"/logs4[ab]/*.out | grep "^$work/out4/" | sort)
[[ $(echo "$rendered" | wc -l) == 4 && $(echo "$rendered" | uniq -d | wc -l) == 0 ]] ||
  fail "the overlapping arrays rendered: $rendered"
for side in a b; do
  grep -qs "rendered, .* skipped, 0 failed" "$work/logs4$side"/*.out ||
    fail "an overlapping array's task failed: $(cat "$work/logs4$side"/*.out)"
done
ls -A "$work/out4" | grep -q claim && fail "claims left behind: $(ls -A "$work/out4")"
grep -h "being rendered by" "$work"/logs4[ab]/*.out || true

echo "== an output deleted to be made again; then nothing left to submit"
rm "$work/out2/q2.mp4" "$work/out2/q2.mp4.json"  # the render and its parameters
"$kinora" slurm submit "$work/presets2" --tasks 3 --output-dir "$work/out2" \
  --log-dir "$work/logs2" --wait >/dev/null || fail "the deleted output was not made again"
[[ -f $work/out2/q2.mp4 ]] || fail "q2.mp4 is missing after resubmitting"
none=$("$kinora" slurm submit "$work/presets2" --tasks 3 --output-dir "$work/out2" \
  --log-dir "$work/logs2" 2>&1) || fail "a submission with nothing to do failed"
[[ $none == *"nothing to submit"* ]] || fail "a submission with nothing to do said: $none"
# --status from another folder, with relative paths, reads the same state.
(cd "$work" && "$kinora" batch --status presets2 --output-dir out2 --log-dir logs2 >/dev/null) ||
  fail "batch --status with relative paths does not say all done"
echo "PASS"
