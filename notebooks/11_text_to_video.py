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
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/lvdm-ref/lvdm-ref/blob/main/notebooks/11_text_to_video.ipynb)
#
# # 11 · Beyond the paper: text-to-video on Moving MNIST, with classifier-free guidance
#
# > **Time to run.** Measured with one thread on this project's 2-core CPU, shared with other jobs
# > (`notebooks/timings.json`). Full size (the default): 41 s of wall time, 32 CPU-seconds. Quick mode
# > (`LVDM_QUICK=1`): 20 s of wall time, 20 CPU-seconds. On a Colab GPU runtime: not measured. At full
# > size it loads the shipped `mmnist_t2v` (3,000 steps) and trains nothing; without that file it trains
# > 150 warm-started steps. The run of record (N = 256 at 6 guidance scales) is loaded from
# > `benchmarks/results/caption_guidance.json`, not redone.
#
# LVDM's experiments are unconditional; its official code and its successors are text-to-video
# models. This notebook conditions the short LVDM (notebook 05) on a caption such as "3 and 7": the
# digits a Moving MNIST clip shows, which the generator knows. Read it for the machinery: at this
# project's budget the model shows its caption's digits in under half of its samples at best (section 5),
# so a grid of a few samples (section 4) may hold no clip that shows the digits asked for. Two ideas
# carry it:
#
# - **the caption as an input**: the digits' counts, a vector $c \in \mathbb{N}^{10}$, enter the UNet
#   the way the timestep does, added to its embedding ($W c + b$: one learned vector per digit shown);
# - **classifier-free guidance** (Ho & Salimans 2022): the caption is dropped (set to $c = 0$, the
#   null caption) in 10 % of the training samples, so the same network predicts both
#   $\epsilon_\theta(z_t \mid c)$ and $\epsilon_\theta(z_t)$, and sampling uses
#
# $$\hat\epsilon = \epsilon_\theta(z_t) + g\,\big(\epsilon_\theta(z_t \mid c) - \epsilon_\theta(z_t)\big).$$
#
# $g = 0$ is the unconditional model, $g = 1$ the conditional one, $g > 1$ pushes each sample toward
# what makes it *this* caption's clip. It is the formula of LVDM's unconditional guidance
# (notebook 09), $\hat\epsilon = (1 + w)\,\epsilon_{cond} - w\,\epsilon_{uncond}$ with $w = g - 1$; there
# the condition is the given latents of a long video and $w = 0.1$ keeps close to the conditional
# model, here $g$ of 2-7 trades sample diversity for faithfulness to the caption.
#
# 1. captions and their embedding; 2. the model: warm-started from the short model (the same function
# at step 0, checked) and trained; 3. the two branches and guidance in one step, checked against the
# formula; 4. samples for a grid of captions and scales, read back by the digit classifier; 5. the
# accuracy/FVD trade-off of the run of record.

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
import dataclasses
import json
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch
from IPython.display import display

from lvdm_ref.captions import CAPTION_DIM, caption_text, encode_captions, parse_caption
from lvdm_ref.checkpoint import SHIPPED_DIR, load_weights, unprefixed
from lvdm_ref.config import UNetConfig, from_dict, get_preset
from lvdm_ref.data import generate_moving_mnist
from lvdm_ref.digits import SHIPPED_DIGITS, DigitClassifier, clip_digits
from lvdm_ref.recipes import train_t2v_model
from lvdm_ref.studies import plot_caption_guidance
from lvdm_ref.text_to_video import CaptionDenoiser, TextToVideo, warm_start_captions
from lvdm_ref.train import LossHistory
from lvdm_ref.unet import UNet
from lvdm_ref.utils import check_quoted, is_quick, scratch_dir, stream
from lvdm_ref.vae3d import encode_videos
from lvdm_ref.viz import plot_frame_strip
from lvdm_ref.widgets import caption_explorer, scrub_video

QUICK = is_quick()
torch.manual_seed(0)
VAE_PATH = SHIPPED_DIR / "mmnist_vae.safetensors"
SHORT_PATH = SHIPPED_DIR / "mmnist_short.safetensors"
T2V_PATH = SHIPPED_DIR / "mmnist_t2v.safetensors"  # the run of record, once it is made and shipped
RESULTS = Path(SHIPPED_DIR).parents[1] / "benchmarks" / "results" / "caption_guidance.json"
TRAIN_CLIPS = 64 if QUICK else 256  # clips (1, 2 and 3 digits) encoded for the training run here
TRAIN_STEPS = 40 if QUICK else 150  # full size: warm-started from the shipped short model, ~1.5 CPU-s per step
DDIM_STEPS = 10 if QUICK else 50
CAPTIONS = ["1", "3 and 7", "0, 4 and 8"]
SCALES = [0.0, 1.0, 3.0, 7.0]
print(f"quick={QUICK}; shipped: autoencoder {VAE_PATH.exists()}, short model {SHORT_PATH.exists()}, "
      f"text-to-video {T2V_PATH.exists()}; run of record {RESULTS.exists()}")

# %% [markdown]
# ## 1. Captions and their embedding
#
# A caption names the digits of a clip, order-free: "3 and 7", "3, 7", "a 3 and a 7" and
# "seven and three" are the same caption. `parse_caption` reads them and refuses what a Moving
# MNIST clip here cannot show (a digit outside 0-9, more than three digits), saying what a caption
# may hold. The generator knows every clip's digits (`generate_moving_mnist(..., return_labels=True)`),
# so every training clip comes with its caption.

# %%
for text in ["3 and 7", "a 7 and a 3", "seven, three", "1, 3 and 3"]:
    print(f"{text!r:>16} -> {parse_caption(text)} -> {caption_text(parse_caption(text))!r}")
for bad in ["3 and 12", "1, 2, 3 and 4"]:
    try:
        parse_caption(bad)
    except ValueError as error:
        print(f"{bad!r:>16} -> error: {error}")

clips, labels = generate_moving_mnist(4, 16, 64, 2, "train", seed=0, return_labels=True)  # uint8, (4, 2)
display(scrub_video(clips, nrow=4, title=" | ".join(caption_text(row) for row in labels)))

# %% [markdown]
# **The embedding.** A caption is encoded as its digit counts, $c_d$ = how many $d$'s it names (so
# "3 and 3" is not "3"), and the UNet's pooled-context input maps it linearly into the timestep
# embedding: $W c + b$ is the bias plus one learned vector per digit shown. Why a label set rather
# than pooled token embeddings of the text: the words "a" and "and" carry nothing, so pooled tokens
# would be the same bag of digit vectors plus noise, and a real text encoder (CLIP, T5) is hundreds of
# times this UNet and knows nothing of Moving MNIST. The slot it would fill is the same one.

# %%
examples = ["1", "3 and 7", "3 and 3", "0, 4 and 8"]
vectors = encode_captions(examples)  # (4, 10) counts
plt.figure(figsize=(5, 2))
plt.imshow(vectors, cmap="Greys", vmin=0, vmax=2)
plt.yticks(range(len(examples)), examples), plt.xticks(range(CAPTION_DIM)), plt.xlabel("digit d")
plt.title("captions as digit counts c (the null caption is all zeros)")
plt.show()

# %% [markdown]
# ## 2. The model: a warm start, then training
#
# The caption model is the short model's UNet with one more input. Every weight is copied from the
# shipped short model and the caption embedding ($W$ and $b$) starts at zero, so at step 0 it *is* the
# short model, whatever the caption: training starts from a good unconditional video model and only
# has to learn what the caption adds. We check that the function is unchanged, bit for bit.

# %%
if SHORT_PATH.exists():
    tensors, meta = load_weights(SHORT_PATH)
    short_state = {name: tensor.float() for name, tensor in unprefixed(tensors, "ema").items()}
    short = UNet(from_dict(UNetConfig, meta["unet"])).eval()
    short.load_state_dict(short_state)
    caption_unet = warm_start_captions(UNet(dataclasses.replace(short.config, context_dim=CAPTION_DIM)), short_state)
    x_t = torch.randn(3, *meta["latent_shape"], generator=stream(0, 0))
    t = torch.tensor([100, 500, 900])
    with torch.no_grad():
        same = torch.equal(caption_unet.eval()(x_t, t, context=encode_captions(["3 and 7", "1", "2, 5 and 9"])),
                           short(x_t, t))
    print(f"warm start: the caption model at step 0 equals the short model exactly: {same}")
    assert same

# %% [markdown]
# `train_t2v_model` is the recipe `python -m lvdm_ref train --model t2v` runs: it encodes training clips
# with 1, 2 and 3 digits (a quarter, a half, a quarter) once, with their captions, and hands the
# trainer the UNet and `caption_loss`, the diffusion loss with 10 % of the captions dropped. Here: a
# short run (full size: warm-started from the shipped short model; quick mode: a tiny UNet from
# scratch, whose samples only show that the machinery runs). A shipped `mmnist_t2v` is used when present.

# %%
mmnist = get_preset("mmnist")
if T2V_PATH.exists() and not QUICK:
    model = TextToVideo.load(T2V_PATH)
    print(f"the shipped model: {model.metadata.get('steps')} steps")
else:
    preset = dataclasses.replace(mmnist, unet=get_preset("quick").unet if QUICK else mmnist.unet,
                                 train=dataclasses.replace(mmnist.train, lr=1e-3 if QUICK else 3e-4,
                                                           warmup_steps=0 if QUICK else 20, ckpt_every=10**9))
    history = LossHistory()
    summary = train_t2v_model(preset, VAE_PATH, scratch_dir("lvdm_11_"), steps=TRAIN_STEPS,
                              num_clips=TRAIN_CLIPS, init=None if QUICK else SHORT_PATH, callbacks=[history],
                              progress=False)
    print(f"trained {summary['steps']} steps on {summary['num_clips']} clips in {summary['seconds']:.0f} s "
          f"(warm start: {summary['warm_start']})")
    model = TextToVideo.load(summary["checkpoint"])
    plt.figure(figsize=(5, 2.5))
    plt.plot(history.steps, history.losses)
    plt.xlabel("step"), plt.ylabel("loss"), plt.title("training the caption model")
    plt.show()

# %% [markdown]
# ## 3. The two branches, and guidance in one step
#
# At sampling, every step needs $\epsilon_\theta(z_t \mid c)$ and $\epsilon_\theta(z_t)$. `CaptionDenoiser`
# gets both from **one** UNet call on the doubled batch (the captions, then the null captions), and
# combines them. Below: one noisy latent of a real "3 and 7"-like clip at $t = 600$; what each branch
# (and the guided prediction) believes the clean clip is, $\hat z_0 = (z_t - \sqrt{1-\bar\alpha_t}\,
# \hat\epsilon) / \sqrt{\bar\alpha_t}$, decoded. The guided prediction is checked against the formula
# computed from two separate UNet calls.

# %%
real, real_labels = generate_moving_mnist(1, 16, 64, 2, "test", seed=3, return_labels=True)
z0 = encode_videos(model.vae, real, progress=False)  # (1, 4, 4, 16, 16)
t = torch.tensor([600])
z_t = model.diffusion.q_sample(z0, t, torch.randn(z0.shape, generator=stream(0, 1)))
captions = encode_captions(real_labels)  # the clip's own caption
scale = 3.0
denoiser = CaptionDenoiser(model.unet.eval(), captions, scale)
with torch.no_grad():
    eps_cond, eps_uncond = denoiser.branches(z_t, t)  # one batched call
    guided = denoiser(z_t, t)
    separate_cond = model.unet(z_t, t, context=captions)  # the oracle: two separate calls
    separate_uncond = model.unet(z_t, t, context=torch.zeros_like(captions))
torch.testing.assert_close(guided, separate_uncond + scale * (separate_cond - separate_uncond), rtol=1e-4, atol=1e-5)
print(f"guided = uncond + {scale} (cond - uncond), from one batched call: checked against two calls")
print(f"|eps_cond - eps_uncond| / |eps_uncond| = {(eps_cond - eps_uncond).norm() / eps_uncond.norm():.3f}")
estimates = {name: model.diffusion.predict_start_from_noise(z_t, t, eps) for name, eps in
             (("unconditional", eps_uncond), ("conditional", eps_cond), (f"guided g={scale:g}", guided))}
with torch.no_grad():
    decoded = {name: model.decode(latent) for name, latent in estimates.items()}
figure, axes = plt.subplots(len(decoded) + 1, 1, figsize=(8, 1.0 * (len(decoded) + 1)))
plot_frame_strip(real[0], every=2, max_frames=8, ax=axes[0], title=f"the clip: {caption_text(real_labels[0])}")
for ax, (name, video) in zip(axes[1:], decoded.items()):
    plot_frame_strip(video[0], every=2, max_frames=8, ax=ax, title=f"x0 estimate at t = 600, {name}")
plt.tight_layout()
plt.show()

# %% [markdown]
# ## 4. Samples for a grid of captions and guidance scales
#
# Each row is one caption, each column one scale $g$; the same noise (seed) in every cell of a row's
# clips, so the columns differ only by the guidance. Below the grid the shipped digit classifier
# (`lvdm_ref/digits.py`) reads the digits of every sample: the measure of section 5.

# %%
grid_captions = [caption for caption in CAPTIONS for _ in SCALES]
grid = np.concatenate([model.sample([caption], guidance_scale=g, num_steps=DDIM_STEPS, seed=row)
                       for row, caption in enumerate(CAPTIONS) for g in SCALES])  # (rows * columns, F, H, W, 1)
display(scrub_video(grid, nrow=len(SCALES), title="rows: " + " | ".join(CAPTIONS) + "; columns: g = " +
                   ", ".join(f"{g:g}" for g in SCALES)))
if SHIPPED_DIGITS.exists():
    classifier = DigitClassifier.load(SHIPPED_DIGITS)
    print(f"{'caption':>12} " + " ".join(f"{'g=' + format(g, 'g'):>12}" for g in SCALES))
    for row, caption in enumerate(CAPTIONS):
        clips_row = grid[row * len(SCALES):(row + 1) * len(SCALES)]
        read = clip_digits(classifier, clips_row, num_digits=len(parse_caption(caption)))
        print(f"{caption:>12} " + " ".join(f"{caption_text(r.tolist()):>12}" for r in read))

# %% [markdown]
# How to read the grid. At $g = 0$ the caption does not enter the prediction at all: every row is the
# unconditional model, whatever it says. The classifier is told how many digits to read (the caption's
# count), so the "1" row is always read as one digit: a "1" read there at $g = 0$ is a stroke the
# classifier calls 1, not the caption followed. A few samples per caption say little either way; whether
# guidance makes the clips show their caption is measured on 256 clips per scale in section 5, where the
# answer at this budget is: in under half of them at best. In quick mode the tiny model has seen a few
# dozen batches: its clips are blurs, and the classifier's readings are guesses.
#
# **Your caption, your $g$.** Type a caption (then Enter) and move $g$: one clip from a fixed seed, with
# 10 DDIM steps so that a redraw stays near a second (the grid above uses `DDIM_STEPS`), and what the
# classifier reads in it. The control needs a running kernel; the grid above is its static version.

# %%
caption_explorer(model, classifier=DigitClassifier.load(SHIPPED_DIGITS) if SHIPPED_DIGITS.exists() else None,
                 num_steps=10, seed=0, caption="3 and 7")

# %% [markdown]
# ## 5. The trade-off, measured (the run of record)
#
# `benchmarks/caption_guidance.py` samples, at each $g \in \{0, 1, 2, 3, 5, 7\}$, one clip for the caption of
# each of 256 real test clips (2 digits each), and scores (a) the share whose digits, read by the
# classifier, are the caption's, and (b) FVD against those 256 real clips: the real set, sampler
# (DDIM 50, eta 1) and N of the short model's card, so the unconditional short model's FVD (137.8) is
# the reference. The measure is checked on the real clips: with their true captions it should be near
# 1 (what the classifier reads right), with random captions near chance (0.019 for two digits). The
# goal: caption accuracy of at least 90 % at some $g$, with FVD there no worse than the short model's.
#
# The run of record (the shipped `mmnist_t2v`, 3,000 warm-started steps) is loaded below from
# `benchmarks/results/caption_guidance.json`; it was made by:
#
# ```
# python -m lvdm_ref train --model t2v --preset mmnist --vae data/checkpoints/mmnist_vae.safetensors \
#     --init data/checkpoints/mmnist_short.safetensors --out runs/mmnist_t2v --steps 3000 --threads 1
# python -m lvdm_ref export --ckpt runs/mmnist_t2v/t2v.safetensors --out data/checkpoints/mmnist_t2v.safetensors --fp16
# python benchmarks/caption_guidance.py --ckpt data/checkpoints/mmnist_t2v.safetensors --num 256 --threads 1
# ```

# %%
if RESULTS.exists():
    results = json.loads(RESULTS.read_text())
    print(f"made by: {results['command']}\nreal clips: true captions {results['real']['true_captions']:.3f}, "
          f"random captions {results['real']['random_captions']:.3f} (chance {results['real']['chance']:.3f})")
    for g, entry in results["scales"].items():
        print(f"g = {g:>3}: caption accuracy {entry['accuracy']:.3f}, FVD {entry.get('fvd')}")
    print(f"goal (accuracy >= 0.9 with FVD <= the short model's): {results['goal']}")
    plot_caption_guidance(results)
    plt.show()
    scales = sorted(results["scales"], key=float)
    accuracy = [results["scales"][g]["accuracy"] for g in scales]
    fvd = [results["scales"][g]["fvd"] for g in scales]
    assert accuracy[0] < 2 * results["real"]["chance"]  # g = 0, the unconditional branch: about chance
    assert accuracy[:-1] == sorted(accuracy[:-1]) and max(accuracy) > 20 * accuracy[0]  # guidance: more caption...
    assert fvd == sorted(fvd)  # ...at a price in FVD at every step of g: the trade-off
    assert not results["goal"]["met"]  # docs/studies/text_to_video.md says why
    by_scale = results["scales"]  # the numbers the text below quotes
    check_quoted(by_scale["5"]["accuracy"], "0.45"), check_quoted(by_scale["0"]["fvd"], "102")
    check_quoted(by_scale["7"]["fvd"], "586"), check_quoted(results["reference"]["short_model_fvd"], "137.8")
    check_quoted(100 * by_scale["1"]["accuracy"], "9.8"), check_quoted(results["real"]["chance"], "0.019")
    assert sorted(by_scale, key=float) == ["0", "1", "2", "3", "5", "7"] and results["protocol"]["num"] == 256
    assert max(accuracy) == by_scale["5"]["accuracy"]  # the highest accuracy, at g = 5
    assert by_scale["1"]["fvd"] <= results["reference"]["short_model_fvd"] < by_scale["2"]["fvd"]  # g = 1: the last within
else:
    print(f"{RESULTS.name} does not exist yet: no numbers to show (run the commands above to make them)")

# %% [markdown]
# **What the run of record says** (the asserts above check it against the JSON): guidance does what
# the formula says, and costs what it is known to cost. Caption accuracy climbs from chance at $g = 0$ to
# 0.45 at $g = 5$, and FVD climbs with it at every step, from 102 to 586. The goal (90 % with FVD within
# the short model's 137.8) is not met: at $g = 1$, the last scale within that FVD, 9.8 % of clips show their
# caption's digits. The limit is the one notebook 09 shows for long videos: the generator rarely draws the
# same readable digits through one clip, and guidance cannot make it.
