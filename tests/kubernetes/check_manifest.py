#!/usr/bin/env python3
"""The Kubernetes manifest (packaging/kubernetes/kinora-batch-job.yaml) is an
Indexed Job whose pods run a valid `kinora batch` invocation: the keys an
Indexed Job needs, its shard count equal to its completions, a GPU request,
the shared volume mounted where the command reads and writes; and the command
itself, with the index substituted and the shared paths moved into a
temporary folder, accepted by `kinora batch --dry-run`.

Usage: check_manifest.py KINORA_BINARY SOURCE_DIR
"""
import json
import os
import re
import subprocess
import sys
import tempfile


def fail(msg):
    print("FAIL: " + msg)
    sys.exit(1)


def main():
    kinora, src = sys.argv[1], sys.argv[2]
    text = open(os.path.join(src, "packaging", "kubernetes", "kinora-batch-job.yaml")).read()
    # The YAML's scalar keys (indentation ignored) and its command, a flow
    # sequence on one line, which is also JSON.
    keys = dict(re.findall(r"^[ \t]*-?[ \t]*([A-Za-z./]+):[ \t]*(\S.*)$", text, re.M))
    for k, want in [("apiVersion", "batch/v1"), ("kind", "Job"), ("completionMode", "Indexed"),
                    ("restartPolicy", "Never"), ("mountPath", "/shared")]:
        if keys.get(k) != want:
            fail("%s is %r, not %r" % (k, keys.get(k), want))
    n = int(keys["completions"])
    if int(keys.get("parallelism", 0)) < 1:
        fail("no parallelism")
    if keys.get("nvidia.com/gpu") != '"1"':
        fail("no GPU request")
    if "persistentVolumeClaim" not in text:
        fail("no shared volume")
    command = json.loads(keys["command"])
    if command[:2] != ["kinora", "batch"]:
        fail("the command is not kinora batch: %r" % command)
    shard = command[command.index("--shard") + 1]
    if shard != "$(JOB_COMPLETION_INDEX)/%d" % n:
        fail("--shard %s does not take the index over the %d completions" % (shard, n))

    with tempfile.TemporaryDirectory() as tmp:
        shared = os.path.join(tmp, "shared")
        for d in ("presets", "renders"):
            os.makedirs(os.path.join(shared, d))
        # The models folder in ComfyUI's layout, the presets naming its files.
        fixtures = os.path.join(os.path.abspath(src), "tests", "fixtures")
        preset = {"prompt": "a red circle moving left on a blue background"}
        for key, sub, name in [("model", "diffusion_models", "wan21_dit_tiny.safetensors"),
                               ("vae", "vae", "wan21_vae_tiny.safetensors"),
                               ("text_encoder", "text_encoders", "umt5_enc_tiny.safetensors"),
                               ("tokenizer", "text_encoders", "spm_tiny.model")]:
            os.makedirs(os.path.join(shared, "models", sub), exist_ok=True)
            os.symlink(os.path.join(fixtures, name), os.path.join(shared, "models", sub, name))
            preset[key] = name
        with open(os.path.join(shared, "presets", "fox.json"), "w") as f:
            json.dump(preset, f)
        for index in range(n):
            args = [a.replace("$(JOB_COMPLETION_INDEX)", str(index)).replace("/shared", shared)
                    for a in command[1:]]
            # The manifest asks for CUDA; a machine without one checks the rest.
            if "--device" in args:
                args[args.index("--device") + 1] = "cpu"
            r = subprocess.run([kinora] + args + ["--dry-run"], capture_output=True, text=True)
            if r.returncode != 0:
                fail("pod %d's command fails: %s %s" % (index, r.stdout, r.stderr))
    print("PASS: an Indexed Job of %d pods running %s" % (n, " ".join(command)))


if __name__ == "__main__":
    main()
