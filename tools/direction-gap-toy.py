#!/usr/bin/env python3
# Research tool, not part of the product: what the direction word of the
# embedded model's captions is worth to an ideal denoiser, in the
# flow-matching loss, on a toy of the embedded VAE's latent layout.
#
# The toy: 5 latent frames of 16×16 cells, one disc of radius R cells moving
# 1.4, 1.7 or 2 cells per latent frame left, right, up or down, its whole path
# in view; every cell of the disc at contrast A (the object's latent contrast
# times √channels), the background known. x_σ = (1 − σ)·x₀ + σ·ε; the ideal
# x₀ estimate is the posterior mean over every path, with the word (paths of
# that direction only) and without it. For each σ it prints the v-loss
# |x₀ − x̂₀|²/σ² per clip with and without the word, the gain (how much larger
# the loss is without the word), and the x₀ error without the word over that
# of a model blind to where the object is: the same ratio the DiT stage logs
# in dit-state/denoise.csv, so a trained DiT can be compared with the ideal.
# 300 noisy clips per σ, deterministic (seed 0), about a minute on 2 cores.
#
#   python3 -m pip install numpy   # or: apt install python3-numpy
#   python3 tools/direction-gap-toy.py [R [A]]     # defaults: R 2.5, A 4
#   python3 tools/direction-gap-toy.py 2.5 10      # the embedded latents' contrast
import numpy as np, sys
rng = np.random.default_rng(0)
W, T, R = 16, 5, float(sys.argv[1]) if len(sys.argv) > 1 else 2.5
A = float(sys.argv[2]) if len(sys.argv) > 2 else 4.0   # contrast x sqrt(channels)
yy, xx = np.mgrid[0:W, 0:W] + 0.5
def clip(cx, cy, dx, dy):
    out = np.empty((T, W, W))
    for t in range(T):
        d = np.hypot(xx - (cx + dx * t), yy - (cy + dy * t))
        out[t] = np.clip(R + 0.5 - d, 0, 1)
    return out
hyps, dirs = [], []
for di, (ux, uy) in enumerate([(-1, 0), (1, 0), (0, -1), (0, 1)]):
    for v in (1.4, 1.7, 2.0):
        dx, dy = ux * v, uy * v
        for cx in np.arange(R, W - R + 1e-9, 0.5):
            for cy in np.arange(R, W - R + 1e-9, 0.5):
                ex, ey = cx + dx * (T - 1), cy + dy * (T - 1)
                if R <= ex <= W - R and R <= ey <= W - R:
                    hyps.append(clip(cx, cy, dx, dy).ravel()); dirs.append(di)
H = A * np.array(hyps); dirs = np.array(dirs); N = H.shape[1]
print(f"R {R}, contrast {A}: {len(H)} hypotheses", flush=True)
sq = (H ** 2).sum(1)
def post_mean(y, s, mask):
    # log p(y|h) = -|y - (1-s) h|^2 / (2 s^2) + const
    ll = ((1 - s) * (H[mask] @ y) - 0.5 * (1 - s) ** 2 * sq[mask]) / s ** 2
    w = np.exp(ll - ll.max()); w /= w.sum()
    return w @ H[mask]
# The x0 error of a model that knows nothing of where the object is (the mean of
# every path, what the posterior mean tends to as sigma -> 1): the "found"
# column divides the x0 error without the word by it, the measure the DiT stage
# logs in dit-state/denoise.csv (each sigma's x0 error over the one at 0.99).
mean_h = H.mean(0)
floor = ((H - mean_h) ** 2).sum(1).mean()
rows = []
for s in (0.3, 0.5, 0.7, 0.8, 0.85, 0.9, 0.93, 0.95, 0.97, 0.99):
    lw = lnw = 0.0
    for k in range(300):
        i = rng.integers(len(H)); x0 = H[i]
        y = (1 - s) * x0 + s * rng.standard_normal(N)
        e_w = ((post_mean(y, s, dirs == dirs[i]) - x0) ** 2).sum()
        e_n = ((post_mean(y, s, np.ones(len(H), bool)) - x0) ** 2).sum()
        lw += e_w; lnw += e_n
    # v-loss per sample = |x0 - x0hat|^2 / s^2; the eps part an ideal model predicts exactly
    rows.append((s, lw / 300 / s**2, lnw / 300 / s**2))
    print(f"sigma {s:.2f}: loss with word {lw/300/s**2:9.4f}  without {lnw/300/s**2:9.4f}  gain {100*(lnw-lw)/max(lw,1e-12):7.2f}%  x0 error / blind {lnw/300/floor:6.3f}", flush=True)
