#!/usr/bin/env python3
"""Black-box check of `kinora lora merge` against weights computed independently here.

For one target module of the tiny Wan DiT fixture (blocks.0.self_attn.q, a Linear
with weight [out, in]) it writes LoRA files in each common layout, built from fixed
pseudo-random values with a known update dW:

  original     diffusion_model.<m>.lora_down / lora_up / alpha   dW = (alpha/r) up.down
  lora_A/B     <m>.lora_A / lora_B, no prefix, no alpha           dW = up.down
  kohya        lora_unet_<m with _>.lora_down / lora_up / alpha   dW = (alpha/r) up.down
  diffusers    transformer.blocks.0.attn1.to_q.lora_A / lora_B    dW = up.down
  diff         diffusion_model.<m>.diff / diff_b                  dW = diff, db = diff_b
  loha         lycoris_<m>.hada_w1_a/_b, hada_w2_a/_b, alpha      dW = (w1a.w1b)*(w2a.w2b) alpha/r
  lokr-full    lycoris_<m>.lokr_w1, lokr_w2                       dW = kron(w1, w2)
  lokr-full+a  the same plus an alpha, which must be ignored      dW = kron(w1, w2)
  lokr-w2ab    lycoris_<m>.lokr_w1, lokr_w2_a/_b, alpha           dW = kron(w1, w2a.w2b) alpha/r

Each file is merged with `kinora lora merge --model M --lora FILE:S --out OUT`, and
OUT's target weight is compared with W + S*dW (and its bias with b + S*db for the
diff file); every other tensor of OUT must be byte-identical to the model's. Two
files are also stacked in one merge (A:0.5, B:-1). One line is printed per case;
the exit status is non-zero if any case fails.

Pure Python 3 standard library (safetensors is read and written here).

Usage: python3 tools/check-lora-merge.py [path/to/kinora]
       (default: build/bin/kinora, relative to the repository root)
"""

import json
import math
import os
import shutil
import struct
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODEL = os.path.join(ROOT, "tests", "fixtures", "wan21_dit_tiny.safetensors")
MODULE = "blocks.0.self_attn.q"
RANK = 4
ALPHA = 2.0
REL_TOL = 1e-5

# ------------------------------------------------------------------ safetensors


def read_safetensors(path):
    """Returns (header dict, {name: raw bytes}, metadata)."""
    with open(path, "rb") as f:
        blob = f.read()
    (n,) = struct.unpack("<Q", blob[:8])
    header = json.loads(blob[8 : 8 + n])
    meta = header.pop("__metadata__", None)
    base = 8 + n
    raw = {}
    for name, info in header.items():
        b, e = info["data_offsets"]
        raw[name] = blob[base + b : base + e]
    return header, raw, meta


def f16_to_float(h):
    return struct.unpack("<e", struct.pack("<H", h))[0]


def decode(info, data):
    """A tensor's values as a flat list of Python floats."""
    dtype = info["dtype"]
    if dtype == "F32":
        return list(struct.unpack("<%df" % (len(data) // 4), data))
    if dtype == "F16":
        return list(struct.unpack("<%de" % (len(data) // 2), data))
    if dtype == "BF16":
        halves = struct.unpack("<%dH" % (len(data) // 2), data)
        return [struct.unpack("<f", struct.pack("<I", h << 16))[0] for h in halves]
    raise ValueError("unsupported dtype %s" % dtype)


def write_safetensors(path, tensors, metadata=None):
    """tensors: {name: (shape, flat list of floats)}, written as F32."""
    header = {}
    chunks = []
    offset = 0
    for name, (shape, values) in tensors.items():
        data = struct.pack("<%df" % len(values), *values)
        header[name] = {"dtype": "F32", "shape": list(shape), "data_offsets": [offset, offset + len(data)]}
        chunks.append(data)
        offset += len(data)
    if metadata:
        header["__metadata__"] = metadata
    hjson = json.dumps(header).encode()
    hjson += b" " * ((8 - len(hjson) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(hjson)))
        f.write(hjson)
        for c in chunks:
            f.write(c)


# ------------------------------------------------------------------ matrices (lists of rows)


class Rng:
    """xorshift64*: deterministic values uniform in [-scale, scale], rounded to float32."""

    def __init__(self, seed):
        self.s = (seed * 0x9E3779B97F4A7C15 + 1) & 0xFFFFFFFFFFFFFFFF

    def next(self, scale=0.1):
        s = self.s
        s ^= s >> 12
        s ^= (s << 25) & 0xFFFFFFFFFFFFFFFF
        s ^= s >> 27
        self.s = s
        u = ((s * 0x2545F4914F6CDD1D) & 0xFFFFFFFFFFFFFFFF) >> 11  # 53 bits
        return f32((u / float(1 << 53) * 2.0 - 1.0) * scale)

    def matrix(self, rows, cols):
        return [[self.next() for _ in range(cols)] for _ in range(rows)]


def f32(x):
    return struct.unpack("<f", struct.pack("<f", x))[0]


def matmul(a, b):
    bt = list(zip(*b))
    return [[math.fsum(x * y for x, y in zip(row, col)) for col in bt] for row in a]


def scale(a, s):
    return [[x * s for x in row] for row in a]


def hadamard(a, b):
    return [[x * y for x, y in zip(ra, rb)] for ra, rb in zip(a, b)]


def kron(a, b):
    p, q = len(b), len(b[0])
    out = [[0.0] * (len(a[0]) * q) for _ in range(len(a) * p)]
    for i, ra in enumerate(a):
        for j, x in enumerate(ra):
            for k, rb in enumerate(b):
                row = out[i * p + k]
                for l, y in enumerate(rb):
                    row[j * q + l] = x * y
    return out


def flat(m):
    return [x for row in m for x in row]


def shape(m):
    return [len(m), len(m[0])]


# ------------------------------------------------------------------ the LoRA files


def build_cases(out_dim, in_dim):
    """[(name, tensors for the file, dW [out][in], db [out] or None)]."""
    us = MODULE.replace(".", "_")
    r = RANK
    cases = []

    rng = Rng(1)
    down, up = rng.matrix(r, in_dim), rng.matrix(out_dim, r)
    p = "diffusion_model." + MODULE
    cases.append((
        "original",
        {p + ".lora_down.weight": (shape(down), flat(down)), p + ".lora_up.weight": (shape(up), flat(up)),
         p + ".alpha": ([], [ALPHA])},
        scale(matmul(up, down), ALPHA / r), None))

    rng = Rng(2)
    down, up = rng.matrix(r, in_dim), rng.matrix(out_dim, r)
    cases.append((
        "lora_A/B",
        {MODULE + ".lora_A.weight": (shape(down), flat(down)), MODULE + ".lora_B.weight": (shape(up), flat(up))},
        matmul(up, down), None))

    rng = Rng(3)
    down, up = rng.matrix(r, in_dim), rng.matrix(out_dim, r)
    p = "lora_unet_" + us
    cases.append((
        "kohya",
        {p + ".lora_down.weight": (shape(down), flat(down)), p + ".lora_up.weight": (shape(up), flat(up)),
         p + ".alpha": ([], [ALPHA])},
        scale(matmul(up, down), ALPHA / r), None))

    rng = Rng(4)
    down, up = rng.matrix(r, in_dim), rng.matrix(out_dim, r)
    p = "transformer.blocks.0.attn1.to_q"
    cases.append((
        "diffusers",
        {p + ".lora_A.weight": (shape(down), flat(down)), p + ".lora_B.weight": (shape(up), flat(up))},
        matmul(up, down), None))

    rng = Rng(5)
    diff = rng.matrix(out_dim, in_dim)
    diff_b = [rng.next() for _ in range(out_dim)]
    p = "diffusion_model." + MODULE
    cases.append((
        "diff",
        {p + ".diff": (shape(diff), flat(diff)), p + ".diff_b": ([out_dim], diff_b)},
        diff, diff_b))

    rng = Rng(6)
    w1a, w1b = rng.matrix(out_dim, r), rng.matrix(r, in_dim)
    w2a, w2b = rng.matrix(out_dim, r), rng.matrix(r, in_dim)
    p = "lycoris_" + us
    cases.append((
        "loha",
        {p + ".hada_w1_a": (shape(w1a), flat(w1a)), p + ".hada_w1_b": (shape(w1b), flat(w1b)),
         p + ".hada_w2_a": (shape(w2a), flat(w2a)), p + ".hada_w2_b": (shape(w2b), flat(w2b)),
         p + ".alpha": ([], [ALPHA])},
        scale(hadamard(matmul(w1a, w1b), matmul(w2a, w2b)), ALPHA / r), None))

    a, c = 4, 4
    assert out_dim % a == 0 and in_dim % c == 0
    rng = Rng(7)
    w1, w2 = rng.matrix(a, c), rng.matrix(out_dim // a, in_dim // c)
    cases.append((
        "lokr-full",
        {p + ".lokr_w1": (shape(w1), flat(w1)), p + ".lokr_w2": (shape(w2), flat(w2))},
        kron(w1, w2), None))

    rng = Rng(8)
    w1, w2 = rng.matrix(a, c), rng.matrix(out_dim // a, in_dim // c)
    cases.append((
        "lokr-full+alpha",
        {p + ".lokr_w1": (shape(w1), flat(w1)), p + ".lokr_w2": (shape(w2), flat(w2)),
         p + ".alpha": ([], [ALPHA])},
        kron(w1, w2), None))

    rng = Rng(9)
    w1 = rng.matrix(a, c)
    w2a, w2b = rng.matrix(out_dim // a, r), rng.matrix(r, in_dim // c)
    cases.append((
        "lokr-w2ab",
        {p + ".lokr_w1": (shape(w1), flat(w1)), p + ".lokr_w2_a": (shape(w2a), flat(w2a)),
         p + ".lokr_w2_b": (shape(w2b), flat(w2b)), p + ".alpha": ([], [ALPHA])},
        scale(kron(w1, matmul(w2a, w2b)), ALPHA / r), None))
    return cases


# ------------------------------------------------------------------ checking


def main():
    kinora = sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, "build", "bin", "kinora")
    if not os.access(kinora, os.X_OK):
        sys.exit("no kinora executable at %s" % kinora)

    m_header, m_raw, _ = read_safetensors(MODEL)
    wkey = next((k for k in m_header if k.endswith(MODULE + ".weight")), None)
    bkey = next((k for k in m_header if k.endswith(MODULE + ".bias")), None)
    if wkey is None:
        sys.exit("%s has no %s.weight" % (MODEL, MODULE))
    w_info = m_header[wkey]
    out_dim, in_dim = w_info["shape"]
    W = decode(w_info, m_raw[wkey])
    B = decode(m_header[bkey], m_raw[bkey]) if bkey else None
    w_scale = max(abs(x) for x in W)
    print("model %s: %s %s %s, max |W| = %.4g" % (os.path.relpath(MODEL, ROOT), wkey, w_info["dtype"],
                                                  w_info["shape"], w_scale))

    tmp = tempfile.mkdtemp(prefix="check-lora-merge-")
    failures = 0
    counter = [0]

    def merge(loras):
        counter[0] += 1
        out = os.path.join(tmp, "merged%d.safetensors" % counter[0])
        cmd = [kinora, "lora", "merge", "--model", MODEL, "--out", out]
        for path, s in loras:
            cmd += ["--lora", "%s:%s" % (path, s)]
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        return out, proc

    def check(label, strength_txt, loras, dW, db):
        """dW: flat expected weight delta (already times strength); db: same for the bias or None."""
        out, proc = merge(loras)
        if proc.returncode != 0:
            print("%-18s %-12s %-12s FAIL  (kinora exit %d: %s)" % (
                label, strength_txt, "-", proc.returncode, proc.stdout.strip().replace("\n", " | ")))
            return False
        o_header, o_raw, _ = read_safetensors(out)
        problems = []
        # tensor set, dtypes and shapes unchanged
        if set(o_header) != set(m_header):
            problems.append("tensor names differ (missing %s, extra %s)" % (
                sorted(set(m_header) - set(o_header))[:3], sorted(set(o_header) - set(m_header))[:3]))
        for k in m_header:
            if k in o_header and (o_header[k]["dtype"], o_header[k]["shape"]) != (
                    m_header[k]["dtype"], m_header[k]["shape"]):
                problems.append("%s is %s %s, model has %s %s" % (
                    k, o_header[k]["dtype"], o_header[k]["shape"], m_header[k]["dtype"], m_header[k]["shape"]))
        changed = {wkey} | ({bkey} if db is not None else set())
        differing = [k for k in m_header if k in o_header and k not in changed and o_raw[k] != m_raw[k]]
        if differing:
            problems.append("other tensors changed: %s" % ", ".join(differing[:5]))
        err = float("inf")
        if wkey in o_header:
            got = decode(o_header[wkey], o_raw[wkey])
            err = max(abs(g - (w + d)) for g, w, d in zip(got, W, dW))
            tol = REL_TOL * max(w_scale, max(abs(w + d) for w, d in zip(W, dW)))
            if o_header[wkey]["dtype"] != "F32":
                tol = max(tol, 2.0 ** -8 * max(abs(w + d) for w, d in zip(W, dW)))  # bf16/f16 rounding
            if err > tol:
                problems.append("weight max abs error %.3g > %.3g" % (err, tol))
        berr = None
        if db is not None and bkey in o_header:
            gotb = decode(o_header[bkey], o_raw[bkey])
            berr = max(abs(g - (b + d)) for g, b, d in zip(gotb, B, db))
            btol = REL_TOL * max(max(abs(b) for b in B), max(abs(b + d) for b, d in zip(B, db)))
            if berr > btol:
                problems.append("bias max abs error %.3g > %.3g" % (berr, btol))
        ok = not problems
        extra = "" if berr is None else "  (bias max abs error %.3g)" % berr
        print("%-18s %-12s %-12.3g %s%s" % (label, strength_txt, err, "PASS" if ok else "FAIL", extra))
        for p in problems:
            print("    " + p)
        return ok

    try:
        cases = build_cases(out_dim, in_dim)
        files = {}
        print("%-18s %-12s %-12s %s" % ("format", "strength", "max abs err", "result"))
        for name, tensors, dW, db in cases:
            path = os.path.join(tmp, name.replace("/", "_").replace("+", "_") + ".safetensors")
            write_safetensors(path, tensors)
            files[name] = (path, flat(dW), db)
            strengths = [0.75, -1.5] if name == "original" else [0.75]
            for s in strengths:
                d = [s * x for x in files[name][1]]
                dbs = None if db is None else [s * x for x in db]
                if not check(name, "%g" % s, [(path, s)], d, dbs):
                    failures += 1
                    print("    kinora lora inspect: " + subprocess.run(
                        [kinora, "lora", "inspect", path, "--model", MODEL, "-v"], stdout=subprocess.PIPE,
                        stderr=subprocess.STDOUT, text=True).stdout.strip().replace("\n", "\n    "))

        # two files stacked in one merge
        for a_name, b_name in [("original", "loha"), ("kohya", "lokr-w2ab"), ("diffusers", "diff")]:
            (pa, da, ba), (pb, dbb, bb) = files[a_name], files[b_name]
            d = [0.5 * x - 1.0 * y for x, y in zip(da, dbb)]
            bias = None
            if ba is not None or bb is not None:
                ba = ba or [0.0] * out_dim
                bb = bb or [0.0] * out_dim
                bias = [0.5 * x - 1.0 * y for x, y in zip(ba, bb)]
            if not check("%s+%s" % (a_name, b_name), "0.5,-1", [(pa, 0.5), (pb, -1)], d, bias):
                failures += 1
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    print("%s: %d case(s) failed" % ("FAIL" if failures else "PASS", failures))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
