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
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/lvdm-ref/lvdm-ref/blob/main/notebooks/08_hierarchy.ipynb)
#
# # 08 · Long videos: LVDM's hierarchy of a prediction and an interpolation model
#
# > **Time to run.** Measured with one thread on this project's 2-core CPU, shared with other jobs
# > (`notebooks/timings.json`). Full size (the default): 100 s of wall time, 94 CPU-seconds. Quick mode
# > (`LVDM_QUICK=1`): 13 s of wall time, 12 CPU-seconds. On a Colab GPU runtime: not measured. It needs
# > the shipped weights in `data/checkpoints/`: without them it trains both models here, over an hour of
# > CPU (`data/checkpoints/README.md`).
#
# A 16-frame model cannot make a 1024-frame video in one go. LVDM (Sec. 3.3) uses two latent
# diffusion models of the same UNet class, each told which latent frames are given by a **mask**
# channel $m$:
#
# - the **prediction** model works on *keyframe* latents, every 4th latent (16 frames apart): given
#   the first keyframe it makes the next three, and repeating this autoregressively gives keyframes
#   as far as we like;
# - the **interpolation** model works on 5 consecutive latents: given both ends (two neighbouring
#   keyframes) it makes the 3 latents between them.
#
# A given latent $z_c$ is written into the noisy input at its own position,
# $x_{in} = x_t \odot (1-m) + z_c^s \odot m$, where $z_c^s$ is the **perturbed** condition
#
# $$z_c^s = \sqrt{\bar\alpha_s}\, z_c + \sqrt{1-\bar\alpha_s}\,\epsilon, \qquad s \sim \mathcal U\{0,\dots,249\}$$
#
# in training and a fixed $s = 100$ at sampling (the level $s$ is also embedded, like $t$). The model
# never sees a perfect condition, so its own slightly-off keyframes do not throw it off. Because
# the condition is dropped in part of the training samples, the same network also predicts
# unconditionally, which gives **unconditional guidance**: $\hat\epsilon = (1+w)\,\epsilon_{cond} - w\,\epsilon_{uncond}$,
# $w = 0.1$. Notebook 09 measures what both do to drift; this one shows the machinery.

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
import json
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch

from lvdm_ref.checkpoint import SHIPPED_DIR
from lvdm_ref.config import get_preset, hierarchy_config
from lvdm_ref.data import generate_moving_mnist
from lvdm_ref.diffusion import GaussianDiffusion
from lvdm_ref.hierarchy import training_mask
from lvdm_ref.long_video import (LongVideoPlan, decode_frames, interpolate, long_video_plan, sample_keyframes,
                                 sample_long)
from lvdm_ref.lvdm import LatentVideoDiffusion
from lvdm_ref.perturbation import perturb
from lvdm_ref.recipes import train_autoencoder, train_hierarchy_model
from lvdm_ref.utils import from_uint8, is_quick, scratch_dir, to_uint8
from lvdm_ref.vae3d import VideoAutoencoder, encode_videos
from lvdm_ref.viz import plot_frame_strip, plot_long_video
from lvdm_ref.widgets import scrub_video

# %% tags=["parameters"]
QUICK = is_quick()  # LVDM_QUICK=1: tiny models trained here in seconds, short videos, 2 DDIM steps
PRESET = get_preset("quick" if QUICK else "mmnist")
LONG_FRAMES = 256 if QUICK else 1024  # the long video
STEPS = 2 if QUICK else 50  # DDIM steps (LVDM: 50, eta = 1)
DEMO_STEPS = None  # training steps when the shipped models are missing (None: the preset's)
_ = torch.manual_seed(0)  # (the generator it returns is not shown)

# %% [markdown]
# ## 1. The masks: what each model is given in training
#
# Each row is one training sample, each column a latent frame; white = given. The prediction model
# gets its first keyframe in half of the samples, the interpolation model both ends in 90 %; the
# rest are unconditional (mask all zeros), which is what guidance needs.

# %%
figure, axes = plt.subplots(1, 2, figsize=(7, 3))
for ax, role in zip(axes, ("pred", "interp")):
    config = hierarchy_config(role)
    mask = training_mask(config, 24, generator=torch.Generator().manual_seed(0))  # (B, 1, f, 1, 1)
    ax.imshow(mask[:, 0, :, 0, 0], cmap="gray", vmin=0, vmax=1, aspect="auto")
    ax.set(title=f"{role}: given in {config.condition_prob:.0%}", xlabel="latent frame", ylabel="sample",
           xticks=range(config.num_latents))
    assert set(mask.sum((1, 2, 3, 4)).tolist()) <= {0.0, 1.0 if role == "pred" else 2.0}
figure.tight_layout()
plt.show()

# %% [markdown]
# ## 2. The autoencoder and the two models
#
# With the shipped files present we load them (`data/checkpoints/`, trained by
# `python -m lvdm_ref train --model pred|interp --preset mmnist ...`, see the model card). Otherwise
# (and always in quick mode) we train both here: a tiny version in quick mode, and at full size the
# preset's recipe, which takes CPU hours.

# %%
pred_path, interp_path = SHIPPED_DIR / "mmnist_pred.safetensors", SHIPPED_DIR / "mmnist_interp.safetensors"
if not QUICK and pred_path.exists() and interp_path.exists():
    pred = LatentVideoDiffusion.load(pred_path, kind="lvdm_pred")
    interp = LatentVideoDiffusion.load(interp_path, kind="lvdm_interp", vae=pred.vae)
    source = "shipped"
else:
    run = scratch_dir("lvdm_hierarchy_")
    vae_path = SHIPPED_DIR / "mmnist_vae.safetensors"
    if QUICK or not vae_path.exists():
        vae_path = Path(train_autoencoder(PRESET, run / "vae", progress=False)["ckpt"])
    for role in ("pred", "interp"):
        result = train_hierarchy_model(PRESET, role, vae_path, run / role, steps=DEMO_STEPS, progress=False)
        print(f"{role}: {result['steps']} steps in {result['seconds']:.0f} s, final loss {result['final_loss']:.3f}")
    pred = LatentVideoDiffusion.load(run / "pred" / "pred.safetensors", kind="lvdm_pred")
    interp = LatentVideoDiffusion.load(run / "interp" / "interp.safetensors", kind="lvdm_interp", vae=pred.vae)
    source = "trained in this notebook" + (" (tiny, quick mode: the pictures below show the machinery, "
                                           "not quality)" if QUICK else "")
vae, frames_per_latent = pred.vae, pred.vae.config.temporal_downsample
print(f"models: {source}; prediction on {pred.latent_shape}, interpolation on {interp.latent_shape} latents")

# %% [markdown]
# ## 3. The perturbed condition
#
# The given latent at a few perturbation levels, decoded. $s = 100$ (sampling) keeps the digits;
# $s = 249$, the noisiest training level, already blurs them: the model learns to use a condition it
# cannot fully trust. (Quick mode uses a 100-step chain and the same fractions of it.)

# %%
clip = generate_moving_mnist(1, 4 * frames_per_latent, PRESET.data.size, 2, "test", seed=1)  # uint8 (1, F, H, W, 1)
z = encode_videos(vae, clip, progress=False)  # (1, c, 4, h, w)
s_max, num_timesteps = pred.hierarchy.max_perturbation_level, pred.diffusion.num_timesteps
levels = [0, s_max * 2 // 5, s_max - 1, num_timesteps // 2]  # 0, 100, 249, 500 for LVDM's 1000-step chain
noise = torch.randn(z.shape, generator=torch.Generator().manual_seed(0))  # one fixed noise for every s
noised = [perturb(pred.diffusion, z, torch.tensor([s]), noise) for s in levels]
frames = [to_uint8(vae.decode(zs).clamp(-1, 1))[0, 0] for zs in noised]  # first frame of each
figure, axes = plt.subplots(1, len(levels), figsize=(2 * len(levels), 2.2))
for ax, s, frame in zip(axes, levels, frames):
    ax.imshow(frame[..., 0], cmap="gray", vmin=0, vmax=255)
    ax.set(title=f"s = {s}", xticks=[], yticks=[])
plt.show()
abar = pred.diffusion.alphas_cumprod[torch.tensor(levels)]
print("sqrt(abar_s) (signal kept):", [round(float(a.sqrt()), 3) for a in abar])

# %% [markdown]
# ## 4. Keyframes first, then the frames between them
#
# `sample_long` runs the three stages: prediction of keyframes (the first clip unconditional, then one
# given keyframe and three new ones per step), interpolation of **every** neighbouring keyframe pair
# (all pairs of all videos in one batch), and decoding in temporal chunks. The timeline shows which
# frames come from which model for a 100-frame video.

# %%
plan = long_video_plan(pred, interp, 100)
keyframes = sample_keyframes(pred, plan, 1, seed=0, num_steps=STEPS, progress=False)
latents = interpolate(interp, keyframes, seed=0, num_steps=STEPS, progress=False)
video = decode_frames(pred, latents, 100, progress=False)[0]  # uint8 (100, H, W, 1)
assert video.shape[0] == 100 and latents.shape[2] == plan.num_latents
torch.testing.assert_close(latents[:, :, ::4], keyframes)  # the keyframes are kept as predicted

is_keyframe = plan.frame_is_keyframe()
figure, ax = plt.subplots(figsize=(10, 1.2))
ax.imshow(is_keyframe[None], cmap="Oranges", aspect="auto", vmin=0, vmax=1.5)
ax.set(yticks=[], xlabel="frame", title=f"{plan.num_keyframes} keyframe latents (orange) from {plan.prediction_steps} "
       f"prediction samples, {plan.num_pairs} pairs interpolated")
plt.show()
plot_long_video(video, is_keyframe, every=4, max_frames=25, per_row=25)
plt.show()

# %% [markdown]
# ## 5. A long video
#
# Every 16th frame of a long video, keyframes outlined; then the video itself, every 4th frame.
# The frame count is exact: the sampler plans enough keyframes and cuts the decoded frames.

# %%
long_video = sample_long(pred, interp, LONG_FRAMES, num_videos=1, num_steps=STEPS, seed=0, progress=not QUICK)[0]
assert long_video.shape[0] == LONG_FRAMES
long_plan = long_video_plan(pred, interp, LONG_FRAMES)
plot_long_video(long_video, long_plan.frame_is_keyframe(), every=16, max_frames=64)
plt.show()
scrub_video(long_video[::4], fps=16, title=f"{LONG_FRAMES} frames, every 4th")

# %% [markdown]
# ## 6. Continuing a real clip
#
# LVDM starts from an unconditional clip. Given a real first latent instead, the prediction model
# continues a real test clip. Moving MNIST is deterministic given its start, so the true
# continuation is known: the top strip is the real clip, the bottom one the continuation.

# %%
num_frames = 32 * frames_per_latent  # 32 latents: 8 keyframe intervals
real = generate_moving_mnist(1, num_frames, PRESET.data.size, 2, "test", seed=7)  # uint8 (1, F, H, W, 1)
start = encode_videos(vae, real[:, :frames_per_latent], progress=False)  # the first latent (1, c, 1, h, w)
continued = sample_long(pred, interp, num_frames, start=start, num_steps=STEPS, seed=0, progress=False)[0]
assert continued.shape == real[0].shape
every = max(1, num_frames // 16)
plot_frame_strip(real[0], every=every, title="real clip")
plot_frame_strip(continued, every=every, title="continued from its first latent")
plt.show()

# %% [markdown]
# **What the strips show.** The given digits do not come back. From the first predicted keyframe on,
# the continuation draws other shapes: the shipped models, and the tiny ones of `LVDM_QUICK=1`, use
# the given latent for its first neighbour at most. The hierarchy probes ([docs/studies/hierarchy_probes.md](../docs/studies/hierarchy_probes.md)) measure this on 128 held-out
# clips for eight prediction models: more context per step (`--max-given 3`), a clean condition
# (s = 0), joint attention, and warm starts from the short model
# ([`benchmarks/prediction_context.py`](../benchmarks/prediction_context.py)).
# Each gains a little on the first made latent (frames 4-7) and nothing after it. In frames 8-15 the
# clip's own digits show in a few clips, where holding the last given frame still shows them in most.
# The next cell reads that run of record and checks it.

# %%
context = json.loads((SHIPPED_DIR.parents[1] / "benchmarks" / "results" / "prediction_context.json").read_text())
held = context["references"]["hold the last given frame"]
print(f"{'continuation (frames 0-3 given)':72s} PSNR 4-7 / 8-11 / 12-15   true digits in 8-15")
for name, row in {**context["models"], "hold the last given frame": held}.items():
    print(f"{name:72s} {' / '.join(f'{v:5.2f}' for v in row['psnr_by_latent'])}   {row['true_digits']:.3f}")
assert all(row["true_digits"] < 0.05 for row in context["models"].values()) and held["true_digits"] > 0.8
for name, gap in context["differences"].items():  # past the first made latent, no change helps
    assert all(abs(latent["mean"]) < 0.15 for latent in gap["psnr_by_latent"][1:]), name

# %% [markdown]
# **What to remember.** Two models of one UNet class with a mask channel and an $s$ embedding;
# conditions written into the input, perturbed, and dropped sometimes so guidance can work;
# keyframes first, then every pair filled. Notebook 09 measures the drift that perturbation and
# guidance are meant to slow.
