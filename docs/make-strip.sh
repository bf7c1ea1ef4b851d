#!/usr/bin/env bash
# Renders a few prompts with the embedded default model (no model options, so
# its own defaults: 64×64, 17 frames) and lays frames 0, 4, 8, 12 and 16 of each
# clip side by side, one row per prompt, scaled 2× without smoothing:
# docs/embedded-model.png, the picture in the README.
#
#   docs/make-strip.sh [build/bin/kinora]
set -euo pipefail
cd "$(dirname "$0")/.."
kinora="${1:-build/bin/kinora}"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
prompts=(
  "a red circle moving left on a blue background"
  "a yellow square moving down on a black background"
  "a white triangle moving right on a green background"
  "a blue circle moving up on a yellow background"
)
inputs=()
for i in "${!prompts[@]}"; do
  if ! "$kinora" generate --prompt "${prompts[$i]}" --seed $((i + 1)) --out "$tmp/$i.mp4" \
    >"$tmp/log" 2>&1; then
    cat "$tmp/log" >&2
    exit 1
  fi
  ffmpeg -v error -i "$tmp/$i.mp4" \
    -vf "select='not(mod(n\,4))',scale=iw*2:ih*2:flags=neighbor,tile=5x1:padding=4:color=0x808080" \
    -frames:v 1 "$tmp/row$i.png"
  inputs+=(-i "$tmp/row$i.png")
  echo "row $((i + 1)): ${prompts[$i]} (seed $((i + 1)))"
done
ffmpeg -v error -y "${inputs[@]}" \
  -filter_complex "vstack=inputs=${#prompts[@]}" docs/embedded-model.png.tmp.png
mv docs/embedded-model.png.tmp.png docs/embedded-model.png
echo "wrote docs/embedded-model.png"
