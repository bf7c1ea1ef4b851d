#!/usr/bin/env bash
# Reports (does not assert) stable-diffusion.cpp on render_bench's job, so that
# the two can be measured back to back on one machine: the same random-weight
# files of the real shapes (Wan 2.1 1.3B bf16, the Wan 2.1 VAE, umT5-XXL bf16),
# the same prompt and Wan's default negative prompt, 256×256×17, 2 guided
# Euler steps (guidance 5, shift 3), 2 threads.
#
#   bench/sdcpp.sh SD_CLI [SCRATCH]      (SCRATCH: render_bench's, /tmp/kinora-bench)
#
# SD_CLI is stable-diffusion.cpp's sd-cli, built for the CPU in Release with
# llamafile's matmuls (its fastest CPU build):
#   cmake -S stable-diffusion.cpp -B build -DCMAKE_BUILD_TYPE=Release \
#         -DGGML_LLAMAFILE=ON -DGGML_NATIVE=ON && cmake --build build
# Run build/bin/render_bench first: it writes the files. stable-diffusion.cpp
# reads umT5 with the transformers names only, so a copy of render_bench's
# umT5 file with its tensors renamed (same data) is written beside it once.
# Its tokenizer is its own; the prompts are padded to 512 tokens either way.
set -euo pipefail
sd_cli="${1:?usage: bench/sdcpp.sh SD_CLI [SCRATCH]}"
scratch="${2:-/tmp/kinora-bench}"
dit="$scratch/wan2.1_t2v_1.3B_random_bf16.safetensors"
vae="$scratch/wan_2.1_vae_random.safetensors"
t5="$scratch/umt5_xxl_random_bf16.safetensors"
t5_hf="$scratch/umt5_xxl_random_bf16.transformers_names.safetensors"
[[ -x "$sd_cli" ]] || { echo "sdcpp.sh: $sd_cli: not an executable" >&2; exit 2; }
for f in "$dit" "$vae" "$t5"; do
  [[ -f "$f" ]] || { echo "sdcpp.sh: $f: missing (run build/bin/render_bench first)" >&2; exit 2; }
done

if [[ ! -f "$t5_hf" || "$t5_hf" -ot "$t5" ]]; then
  python3 - "$t5" "$t5_hf.part" <<'EOF'
import json, re, shutil, struct, sys
src, dst = sys.argv[1:3]
per_block = {"norm1.weight": "layer.0.layer_norm.weight",
             "norm2.weight": "layer.1.layer_norm.weight",
             "pos_embedding.embedding.weight": "layer.0.SelfAttention.relative_attention_bias.weight",
             "ffn.gate.0.weight": "layer.1.DenseReluDense.wi_0.weight",
             "ffn.fc1.weight": "layer.1.DenseReluDense.wi_1.weight",
             "ffn.fc2.weight": "layer.1.DenseReluDense.wo.weight"}
def rename(key):
    if key in ("__metadata__",): return key
    if key == "token_embedding.weight": return "shared.weight"
    if key == "norm.weight": return "encoder.final_layer_norm.weight"
    m = re.fullmatch(r"blocks\.(\d+)\.(.*)", key)
    rest = m and (per_block.get(m.group(2)) or
                  re.sub(r"^attn\.([qkvo])\.weight$", r"layer.0.SelfAttention.\1.weight", m.group(2)))
    if not m or rest == m.group(2): sys.exit(f"sdcpp.sh: {src}: unexpected tensor {key}")
    return f"encoder.block.{m.group(1)}.{rest}"
with open(src, "rb") as f:
    n = struct.unpack("<Q", f.read(8))[0]
    header = json.dumps({rename(k): v for k, v in json.loads(f.read(n)).items()}).encode()
    header += b" " * (-len(header) % 8)
    with open(dst, "wb") as out:  # offsets are relative to the data, which follows unchanged
        out.write(struct.pack("<Q", len(header)) + header)
        shutil.copyfileobj(f, out, 64 << 20)
EOF
  mv "$t5_hf.part" "$t5_hf"
fi

negative="色调艳丽，过曝，静态，细节模糊不清，字幕，风格，作品，画作，画面，静止，整体发灰，最差质量，低质量，JPEG压缩残留，丑陋的，残缺的，多余的手指，画得不好的手部，画得不好的脸部，畸形的，毁容的，形态畸形的肢体，手指融合，静止不动的画面，杂乱的背景，三条腿，背景人很多，倒着走"
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
/usr/bin/time -f "%e %U %S %R %F %M" -o "$out/time" \
  "$sd_cli" -M vid_gen --diffusion-model "$dit" --vae "$vae" --t5xxl "$t5_hf" \
  -p "a red fox running through fresh snow at dawn, cinematic" -n "$negative" \
  --cfg-scale 5 --sampling-method euler --steps 2 --flow-shift 3 \
  -W 256 -H 256 --video-frames 17 -s 42 -t 2 -v -o "$out/video.avi" >"$out/log" 2>&1 ||
  { tail -20 "$out/log" >&2; exit 1; }

# The stages from its log: "… completed, taking N s" and the steps' "N s/it".
seconds() { grep -o "$1 completed, taking [0-9.]*s" "$out/log" | tail -1 | grep -o '[0-9.]*s$' | tr -d s; }
steps=$(grep -o '[0-9.]*s/it' "$out/log" | tr -d 's/it' | paste -sd, - | sed 's/,/, /g')
read -r wall user sys minor major rss_kb <"$out/time"
echo "# stable-diffusion.cpp ($sd_cli), 2 threads; 256×256×17, 2 guided euler steps; $(nproc) CPUs ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs))"
echo "| stage | seconds |"
echo "|---|---|"
echo "| text (prompt and negative prompt) | $(seconds get_learned_condition) |"
echo "| steps (guided) | $steps |"
echo "| VAE decode | $(seconds decode_first_stage) |"
echo "| **whole process** | $wall (user $user, system $sys) |"
printf "\nminor faults %.2f M, major faults %d, peak resident %.2f GiB\n" \
  "$(echo "$minor / 1000000" | bc -l)" "$major" "$(echo "$rss_kb / 1048576" | bc -l)"
