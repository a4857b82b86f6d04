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
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/lvdm-ref/lvdm-ref/blob/main/notebooks/06_attention_ablation.ipynb)
#
# # 06 · Factorised or joint attention?
#
# > **Time to run.** Measured with one thread on this project's 2-core CPU, shared with other jobs
# > (`notebooks/timings.json`). Full size (the default): 16 s of wall time, 15 CPU-seconds. Quick mode
# > (`LVDM_QUICK=1`): 4 s of wall time, 4 CPU-seconds. On a Colab GPU runtime: not measured. The runs of
# > record (45 CPU-minutes of training per kind, and 25 per kind on prediction) are loaded from
# > `benchmarks/results/ablations/`, not redone.
#
# LVDM's UNet lets frames talk to each other only through attention, and it factorises that
# attention: each block first attends over the $h \times w$ positions of one frame, then over the
# $f$ frames at one position. The paper reports that joint space-time attention, one attention over
# all $f \cdot h \cdot w$ tokens, "was less effective". This notebook sets up that comparison
# fairly: both kinds use learned *relative* temporal positions (the factorised block Shaw's
# key/value vectors, the joint block a bias per head), so the factorisation is what differs;
# `"spatial"` (no temporal mixing at all) is the floor.
#
# 1. the cost model: FLOPs of one block against the number of latent frames;
# 2. why a short live run cannot compare them: every kind starts as the same function;
# 3. the runs of record, loaded from their committed JSON: FVD at one CPU budget, with the floor and
#    the ceiling;
# 4. the same kinds on a task that needs frames to talk, prediction from a real latent, scored against
#    the truth clip by clip with 90 % intervals (committed JSON);
# 5. whether the unconditional runs of record hold their digits within a sample (committed JSON; one seed
#    set separated joint from factorised, another did not).

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

from lvdm_ref.budget_study import plot_budget_study
from lvdm_ref.checkpoint import SHIPPED_DIR
from lvdm_ref.config import get_preset
from lvdm_ref.profiling import attention_cost, attention_seconds
from lvdm_ref.unet import ATTENTION_KINDS, UNet
from lvdm_ref.utils import check_quoted, is_quick
from lvdm_ref.viz import plot_frame_strip

# %% tags=["parameters"]
torch.manual_seed(0)
QUICK = is_quick()
FRAMES = [4, 8, 16] if QUICK else [4, 8, 16, 32, 64]  # latent frames for the cost model
RESULTS = SHIPPED_DIR.parents[1] / "benchmarks" / "results" / "ablations" / "attention.json"  # in the checkout
SPREAD = RESULTS.parents[1] / "seed_spread_256.json"  # FVD of disjoint sample sets of one model, N = 256
STABILITY = RESULTS.parents[1] / "digit_stability.json"  # benchmarks/digit_stability.py: digits kept within a sample

# %% [markdown]
# ## 1. What each kind costs
#
# One attention block on 8x8 latents with 128 channels (the mmnist UNet's attention resolution),
# forward and backward, FLOPs counted by `torch.utils.flop_counter` (`lvdm_ref.profiling.attention_cost`).
# Factorised attention grows linearly in $f$ (the spatial part once per frame, the temporal part
# $f^2$ per pixel but tiny); joint attention compares all $(f h w)^2$ pairs. FLOPs are what a GPU pays;
# a CPU also pays for memory traffic, so the right panel times the same blocks on this machine (median
# process-CPU seconds; they vary from machine to machine, so nothing is asserted about them).

# %%
costs = {kind: [attention_cost(kind, frames) for frames in FRAMES] for kind in ATTENTION_KINDS}
seconds = {kind: [attention_seconds(kind, frames) for frames in FRAMES] for kind in ATTENTION_KINDS}
figure, axes = plt.subplots(1, 2, figsize=(10, 3.2))
for ax, values_of, ylabel in ((axes[0], costs, "GFLOP per block (fwd + bwd)"),
                              (axes[1], seconds, "CPU seconds per block (fwd + bwd)")):
    for kind, values in values_of.items():
        ax.loglog(FRAMES, values, "o-", label=kind)
    ax.minorticks_off()
    ax.set_xticks(FRAMES, [str(f) for f in FRAMES])
    ax.set(xlabel="latent frames f", ylabel=ylabel)
    ax.legend(fontsize=8)
figure.suptitle("one attention block, 8x8 latents, C = 128")
plt.show()
growth = {kind: values[-1] / values[-2] for kind, values in costs.items()}
print("FLOPs growth when f doubles:", {kind: round(value, 2) for kind, value in growth.items()})
assert growth["spatial"] < 2.05 and growth["factorized"] < 2.3 < 2.9 < growth["joint"]

# %% [markdown]
# ## 2. Why a short live run cannot compare them
#
# Training the three kinds here for a few dozen steps and plotting their losses draws one line three
# times: the UNet's last convolution starts at zero, so at step 0 every kind predicts $\epsilon_\theta = 0$,
# the same function, and in the first steps (inside the recipe's 200 warm-up steps) the curves stay
# together. The kinds differ in their weights, not in where they start: below, the `mmnist` UNet with each
# kind, built from the same seed, its parameter count, and its output on the same noisy latents. A
# comparison needs the long runs of sections 3-5, loaded from their committed JSON rather than redone
# (45 CPU-minutes per kind).

# %%
unet_config = get_preset("mmnist").unet
z_t = torch.randn(2, 4, 4, 16, 16, generator=torch.Generator().manual_seed(0))  # (B, c, f, h, w) latents
t = torch.tensor([10, 700])
parameters, outputs = {}, {}
for kind in ATTENTION_KINDS:
    torch.manual_seed(0)
    unet = UNet(dataclasses.replace(unet_config, attention=kind)).eval()
    parameters[kind] = sum(weight.numel() for weight in unet.parameters())
    with torch.no_grad():
        outputs[kind] = unet(z_t, t)
    print(f"{kind:>10}: {parameters[kind] / 1e6:.2f} M parameters, output at step 0: "
          f"max |eps| = {outputs[kind].abs().max().item():.1f}")
figure, ax = plt.subplots(figsize=(5, 2.2))
ax.barh(list(parameters), [count / 1e6 for count in parameters.values()])
ax.set(xlabel="parameters (millions)", title="the mmnist UNet with each attention kind")
plt.show()
assert all(torch.equal(output, torch.zeros_like(output)) for output in outputs.values())  # one function at step 0
assert get_preset("mmnist").train.warmup_steps == 200  # the warm-up the text above names
check_quoted(parameters["joint"] / 1e6, "4.95")  # the counts section 3 quotes
check_quoted(parameters["factorized"] / 1e6, "5.43")

# %% [markdown]
# ## 3. The runs of record
#
# `python benchmarks/ablations.py --which attention --minutes 45 --num 256 --threads 1` trains each
# kind for the same CPU budget (calibrated per kind from its CPU seconds per step, so a slower kind
# gets fewer steps) and scores it by FVD against one set of real clips, next to the real-vs-real floor,
# real first frames held still and the autoencoder's ceiling, all at the same N.

# %%
results = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
finished = {name: entry for name, entry in results.get("variants", {}).items() if "end" in entry}
if finished:
    print(f"made by: {results['command']}")
    for name, entry in finished.items():
        print(f"{name:>10}: {entry['steps']} steps ({entry['cpu_seconds_per_step']:.2f} CPU-s each), "
              f"FVD {entry['end']['fvd']:.1f}, peak RSS {entry.get('peak_rss_mib', float('nan')):.0f} MiB "
              f"(a process that only trains it)")
    samples_path = RESULTS.with_name("attention_samples.npz")  # 4 clips per kind, sampled by the same command
    plot_budget_study(results, dict(np.load(samples_path)) if samples_path.exists() else None)
    plt.show()
    spread = json.loads(SPREAD.read_text())["256"]  # disjoint sample sets of the factorised model, N = 256
    print(f"one model, {len(spread['fvd'])} disjoint sets of 256 clips: FVD {spread['min']:.1f} to {spread['max']:.1f} "
          f"(std {spread['std']:.1f})")
    if {"factorized", "joint", "spatial"} <= set(finished):  # the takeaway below, checked against the JSON
        ends = [entry["end"]["fvd"] for entry in finished.values()]
        # the three kinds (N = 256) lie closer together than one standard deviation of sample sets of ONE
        # model at the same N: no kind wins at this budget
        assert max(ends) - min(ends) < spread["std"]
        fvd_of = {name: entry["end"]["fvd"] for name, entry in finished.items()}  # the numbers the text below quotes
        check_quoted(fvd_of["joint"], "230.1"), check_quoted(fvd_of["factorized"], "234.3")
        check_quoted(fvd_of["spatial"], "235.3"), check_quoted(fvd_of["factorized"] - fvd_of["joint"], "4")
        check_quoted(spread["min"], "232.9"), check_quoted(spread["max"], "251.5"), check_quoted(spread["std"], "8.4")
        joint, factorized = finished["joint"], finished["factorized"]
        check_quoted(100 * (1 - joint["cpu_seconds_per_step"] / factorized["cpu_seconds_per_step"]), "6")
        check_quoted(joint["peak_rss_mib"], "1,656"), check_quoted(factorized["peak_rss_mib"], "1,084")
        check_quoted(joint["peak_rss_mib"] / factorized["peak_rss_mib"], "1.5x")
        check_quoted(results["reference"]["static_first_frames"], "201.8")
else:
    print(f"No finished runs of record yet at {RESULTS}: no finding to show. Make them with\n"
          f"    python benchmarks/ablations.py --which attention --minutes 45 --num 256 --threads 1\n"
          f"(about 45 CPU-minutes of training per kind plus evaluation; rerun to resume).")

# %% [markdown]
# **What to take away.** At these sizes attention is a small part of the UNet's cost, so the
# factorisation matters little for speed at 4 latent frames and a lot at 64. In the runs of record
# (45 CPU-minutes each, N = 256) joint attention with a relative temporal bias ended at FVD 230.1 and
# LVDM's factorised attention at 234.3. Four disjoint sets of 256 samples of one model (the factorised
# one) spread FVD from 232.9 to 251.5 (standard deviation 8.4; `benchmarks/seed_spread.py`), so a gap
# of 4 is not a finding: at this budget neither wins. Joint took
# 6 % less CPU per step (one attention layer per block where factorised has two: 4.95 M against 5.43 M
# parameters, section 2) and 1.5x the peak memory of a process that only trains it (1,656 against 1,084 MiB).
# Both are still above real first frames held still (201.8), so this says nothing about which wins
# once the models are good: the paper's claim (factorised better) is neither confirmed nor refuted
# here. `spatial`, no temporal mixing at all (an image model on each latent frame), trained the same
# way afterwards, ended at 235.3: at this budget FVD does not separate a model that mixes frames from
# one that does not, although its strips above change shape abruptly every 4 frames (one latent
# frame) where the others change more gradually.

# %% [markdown]
# ## 4. On a task that needs frames to talk: prediction from a real latent
#
# FVD of unconditional samples could not separate even `spatial` from the others, so the comparison is
# made again where mixing frames is the whole job: `python benchmarks/attention_prediction.py --minutes 25
# --num 256 --threads 1`. Each kind is the hierarchy's prediction model (v-prediction, keyframes one latent
# apart: the probes' best design, notebook 08), trained for 25 CPU-minutes (steps calibrated per kind), then
# given the first latent (frames 0-3) of 256 held-out test clips; frames 4-15 are scored against the truth
# clip by clip (PSNR, SSIM, and whether frames 8-15 show the clip's true digits), with FVD of the 16 frames.
# Every kind sees the same clips, condition and noise, so the differences are paired, and each comes with
# a 90 % interval over resampled clips. `spatial` cannot see the given latent at all (per-frame
# convolutions and attention): whatever it scores is what a model makes without the condition.

# %%
PRED = RESULTS.with_name("attention_pred.json")  # benchmarks/attention_prediction.py's run of record
pred = json.loads(PRED.read_text()) if PRED.exists() else {}
ended = {name: entry for name, entry in pred.get("variants", {}).items() if "end" in entry}
if ended:
    print(f"made by: {pred['command']}")
    print(f"{'':>26} {'steps':>6} {'CPU-s/step':>10} {'PSNR':>6} {'SSIM':>6} {'true digits':>11} {'FVD':>6}")
    for name, entry in ended.items():
        end = entry["end"]
        print(f"{name:>26} {entry['steps']:6d} {entry['cpu_seconds_per_step']:10.3f} {end['psnr']:6.2f} "
              f"{end['ssim']:6.3f} {end['true_digits']:11.3f} {end['fvd']:6.1f}")
    for name, values in pred["prediction_reference"].items():
        if isinstance(values, dict):
            print(f"{name:>26} {'':>6} {'':>10} {values['psnr']:6.2f} {values['ssim']:6.3f} {values['true_digits']:11.3f}")
    print("\ndifferences at the end of the budget, mean [90 % interval over resampled clips]:")
    for pair, row in pred.get("differences", {}).get("end", {}).items():
        print(f"{pair:>22}: " + ", ".join(f"{m} {row[m]['mean']:+.3f} [{row[m]['interval_90'][0]:+.3f}, "
                                          f"{row[m]['interval_90'][1]:+.3f}]" for m in ("psnr", "ssim", "true_digits", "fvd")))
    kept = np.load(PRED.with_name("attention_pred_samples.npz"))  # 4 clips per kind and the truth
    rows = ["truth", *(f"{name}_end" for name in ended)]
    figure, axes = plt.subplots(len(rows), 1, figsize=(12, 1.3 * len(rows)))
    for ax, key in zip(axes, rows):
        plot_frame_strip(kept[key][0], title=f"{key.removesuffix('_end')}: frames 0-3 given" if key != "truth"
                         else "the true clip", ax=ax)
    figure.tight_layout()
    plt.show()
    if {"factorized", "joint", "spatial"} <= set(ended):  # the takeaway below, checked against the JSON
        gaps = pred["differences"]["end"]
        first = {pair: row["psnr_by_latent"][0]["interval_90"] for pair, row in gaps.items()}  # frames 4-7
        assert first["factorized - joint"][0] > 0 and first["factorized - spatial"][0] > 0 and first["joint - spatial"][0] > 0
        assert gaps["factorized - joint"]["psnr"]["interval_90"][0] > 0 and gaps["factorized - joint"]["ssim"]["interval_90"][0] > 0
        assert gaps["factorized - joint"]["fvd"]["interval_90"][0] > 0  # FVD ranks the other way
        later = [entry["end"]["psnr_by_latent"][2] for entry in ended.values()]  # frames 12-15: all at the floor
        assert max(later) - min(later) < 0.2 and max(e["end"]["true_digits"] for e in ended.values()) < 0.05
        check_quoted(gaps["factorized - joint"]["psnr_by_latent"][0]["mean"], "0.65")
        check_quoted(gaps["factorized - spatial"]["psnr_by_latent"][0]["mean"], "0.87")
        check_quoted(gaps["joint - spatial"]["psnr_by_latent"][0]["mean"], "0.22")
        check_quoted(gaps["factorized - joint"]["psnr"]["mean"], "0.18"), check_quoted(gaps["factorized - joint"]["ssim"]["mean"], "0.035")
        assert ended["factorized"]["half"]["psnr_by_latent"][0] > ended["joint"]["end"]["psnr_by_latent"][0]
        blank = pred["prediction_reference"]["blank frames"]  # predicting black frames: above every model
        check_quoted(blank["psnr"], "13.87"), check_quoted(blank["ssim"], "0.722"), check_quoted(blank["psnr_by_latent"][0], "13.88")
        assert all(e["end"]["psnr"] < blank["psnr"] and e["end"]["ssim"] < blank["ssim"] and
                   e["end"]["psnr_by_latent"][0] < blank["psnr_by_latent"][0] for e in ended.values())
        check_quoted(min(e["end"]["psnr"] for e in ended.values()), "12.24"), check_quoted(max(e["end"]["psnr"] for e in ended.values()), "12.46")
        check_quoted(min(e["end"]["ssim"] for e in ended.values()), "0.552"), check_quoted(max(e["end"]["ssim"] for e in ended.values()), "0.601")
        check_quoted(ended["factorized"]["end"]["psnr_by_latent"][0], "13.20")
        check_quoted(pred["prediction_reference"]["hold the last given frame"]["psnr"], "11.79")
        check_quoted(ended["factorized"]["end"]["fvd"], "296.6"), check_quoted(ended["joint"]["end"]["fvd"], "272.3")
        check_quoted(ended["spatial"]["end"]["fvd"], "272.0")
        check_quoted(100 * (1 - ended["joint"]["parameters"] / ended["factorized"]["parameters"]), "9")
        check_quoted(ended["joint"]["cpu_seconds_per_step"] / ended["factorized"]["cpu_seconds_per_step"], "1.3x")
else:
    print(f"No finished run of record yet at {PRED}: make it with\n"
          f"    python benchmarks/attention_prediction.py --minutes 25 --num 256 --threads 1\n"
          f"(25 CPU-minutes of training per kind plus evaluation; rerun to resume).")

# %% [markdown]
# **What to take away.** Here the kinds separate, with intervals that exclude zero. In the four frames
# after the given ones (4-7), factorised beats joint by 0.65 dB and spatial by 0.87 dB, and joint beats
# spatial by 0.22 dB; over frames 4-15 factorised leads joint by 0.18 dB PSNR and 0.035 SSIM, and
# factorised at half its budget beats joint after all of it on frames 4-7. The order agrees with the
# paper's claim (factorised better than joint) at equal CPU.
#
# But read it next to the references: **every model here scores below predicting black frames.** Blank
# frames score 13.87 dB PSNR and 0.722 SSIM over frames 4-15 (13.88 dB on frames 4-7 alone); the models
# score 12.24 to 12.46 dB and 0.552 to 0.601 (factorised, the best, 13.20 dB on frames 4-7). Moving MNIST
# is mostly black, so digits drawn in the wrong place cost more than no digits at all: the ranking is among
# models that do not yet predict the frames, and says nothing about models that do. All three do beat
# holding the last given frame (11.79 dB). No kind carries the condition past the next latent: on frames
# 12-15 all three sit within 0.2 dB of each other and almost none shows the clip's true digits (the
# long-video limit of notebook 09). FVD ranks factorised last (296.6 against 272.3 for joint and 272.0 for
# spatial): it compares sets of clips, not each clip with its truth. Joint has 9 % fewer weights and cost
# 1.3x the CPU per step here, so it got fewer steps.

# %% [markdown]
# ## 5. Do the unconditional models hold their digits?
#
# The same question asked of the runs of record of section 3, without a condition: within one 16-frame
# sample, does the shipped digit classifier read the same digits in frames 0-7 as in frames 8-15
# (`benchmarks/digit_stability.py`, N = 256 samples per model; real clips 0.99, unrelated pairs 0.02)?
# FVD did not separate the kinds; this content measure reads each sample on its own.
#
# **One seed set is not a finding.** On the committed samples (one seed set, N = 256 per model) joint
# keeps its digits in 0.113 of its samples and factorised in 0.051: joint - factorised = +0.062, 90 %
# interval [+0.023, +0.102]. Measured again outside this notebook, the same two checkpoints sampled from
# another seed (N = 128) gave +0.008 [-0.055, +0.063]: no difference. One seed set separated them and
# another did not, so **whether joint attention holds digits better than factorised is not established.**
# What both measurements agree on: each model keeps its digits in a small share of its samples, far from
# real clips.

# %%
stability = json.loads(STABILITY.read_text()) if STABILITY.exists() else {}
names = {kind: f"short mmnist_attention_{kind}.safetensors" for kind in ("factorized", "joint")}
if all(name in stability for name in names.values()):
    keeps = {kind: np.array(stability[name]["keeps_per_clip"], dtype=float) for kind, name in names.items()}
    rng = np.random.default_rng(0)  # the two sample sets are independent: resample each on its own
    gaps = [keeps["joint"][rng.integers(0, 256, 256)].mean() - keeps["factorized"][rng.integers(0, 256, 256)].mean()
            for _ in range(4000)]
    low, high = np.percentile(gaps, [5, 95])
    for kind, values in keeps.items():
        print(f"{kind:>10}: keeps its digits in {values.mean():.3f} of {len(values)} samples")
    print(f"joint - factorized: {keeps['joint'].mean() - keeps['factorized'].mean():+.3f} "
          f"[{low:+.3f}, {high:+.3f}] (90 % interval over resampled samples)")
    # the text above quotes this seed set's figures; the re-measure on another seed is not in this JSON
    check_quoted(keeps["joint"].mean(), "0.113"), check_quoted(keeps["factorized"].mean(), "0.051")
    check_quoted(keeps["joint"].mean() - keeps["factorized"].mean(), "+0.062")
    check_quoted(low, "+0.023"), check_quoted(high, "+0.102")
    check_quoted(stability["real"]["keeps"], "0.99"), check_quoted(stability["chance"], "0.02")
    assert max(v.mean() for v in keeps.values()) < 0.15 < stability["real"]["keeps"]  # both far from real clips
else:
    print(f"{STABILITY} lacks the attention models: run\n    python benchmarks/digit_stability.py --short "
          f"data/checkpoints/mmnist_attention_factorized.safetensors data/checkpoints/mmnist_attention_joint.safetensors")
