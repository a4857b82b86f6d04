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
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/lvdm-ref/lvdm-ref/blob/main/notebooks/04_unet.ipynb)
#
# # 04 · The factorised space-time UNet
#
# > **Time to run.** Measured with one thread on this project's 2-core CPU, shared with other jobs
# > (`notebooks/timings.json`). Full size (the default): 41 s of wall time, 34 CPU-seconds, peak memory
# > 3.9 GiB. Quick mode (`LVDM_QUICK=1`): 4 s of wall time, 4 CPU-seconds. On a Colab GPU runtime: not
# > measured.
#
# The network that predicts the noise $\epsilon_\theta(z_t, t)$ on video latents $z_t$ of shape
# $(c, f, h, w)$. LVDM's design choice: everything that looks at pixels works **frame by frame**
# (2D convolutions, spatial attention), and frames only meet in **temporal attention**, a
# self-attention over the $f$ frames at each pixel. This notebook walks through the blocks with
# their shapes, parameters and FLOPs, draws what each attention kind lets a token see, and
# measures why LVDM factorises attention instead of attending jointly over all $f \cdot h \cdot w$
# tokens.

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

QUICK = is_quick()  # LVDM_QUICK=1: smaller cost curves, about a minute on a CPU
COST_FRAMES = (2, 4, 8, 16) if QUICK else (4, 8, 16, 32)  # latent frames for the cost curves
COST_SIZE = 8 if QUICK else 16  # latent height = width for the cost curves
COST_CHANNELS = 64
SEED = 0

# %%
import dataclasses
import time

import matplotlib.pyplot as plt
import numpy as np
import torch
from einops import rearrange

from lvdm_ref.config import get_preset
from lvdm_ref.profiling import flop_counter
from lvdm_ref.unet import FactorizedAttention, JointAttention, SpatialAttention, TemporalAttention, UNet, relative_index
from lvdm_ref.viz import capture_attention

_ = torch.manual_seed(SEED)  # (the generator it returns is not shown)

# %% [markdown]
# ## 1. The blocks, with shapes, parameters and FLOPs
#
# The Moving MNIST preset: latents $(c, f, h, w) = (4, 4, 16, 16)$ from the autoencoder of notebook 02.
# The UNet halves $h, w$ at each level and **never** touches $f$; inside, activations are kept as a
# stack of frames, `(b f) c h w`, so every convolution and GroupNorm is 2D and per frame.
#
# - **ResBlock**: GroupNorm, SiLU, 3x3 conv; then the timestep embedding enters as a FiLM scale and
#   shift, $h \leftarrow \mathrm{GN}(h)(1 + s(t)) + b(t)$; GroupNorm, SiLU, 3x3 conv; plus the input.
# - **Attention** at the coarser levels and in the middle: spatial over $h \cdot w$, then temporal over $f$.
# - Skip connections concatenate encoder features onto the decoder, as in every UNet.
#
# Forward hooks record each block's output; `flop_counter()` (torch's `FlopCounterMode`, taught to
# count the fused CPU attention kernel) counts its FLOPs: convolutions, matmuls and attention;
# element-wise ops are not counted.

# %%
preset = get_preset("mmnist")
config = preset.unet
latent_shape = (config.in_channels, preset.data.num_frames // preset.vae.temporal_downsample,
                preset.data.size // preset.vae.spatial_downsample, preset.data.size // preset.vae.spatial_downsample)
unet = UNet(config).eval()
print(config)
print("latent (c, f, h, w):", latent_shape)

blocks = [("input_conv", unet.input_conv)] + [(f"down.{i}", b) for i, b in enumerate(unet.down)] + \
    [("middle", unet.middle)] + [(f"up.{i}", b) for i, b in enumerate(unet.up)] + [("out", unet.out)]
shapes = {}
hooks = [(module[-1] if name == "out" else module)  # the UNet calls the out block's layers one by one: hook its last
         .register_forward_hook(lambda m, args, out, name=name: shapes.__setitem__(name, tuple(out.shape)))
         for name, module in blocks]
x, t = torch.randn(1, *latent_shape), torch.tensor([500])
with flop_counter() as counter, torch.no_grad():
    out = unet(x, t)
for hook in hooks:
    hook.remove()
flops = {name: sum(counts.values()) for name, counts in counter.get_flop_counts().items()}

frames = latent_shape[1]
print(f"\n{'block':<11}{'layers':<46}{'output (B, C, f, h, w)':<24}{'params':>9}{'MFLOP':>9}")
for name, module in blocks:
    kinds = [type(layer).__name__ for layer in (module if isinstance(module, torch.nn.ModuleList) else [module])]
    n, c, h, w = shapes[name]
    params = sum(p.numel() for p in module.parameters())
    print(f"{name:<11}{' + '.join(kinds)[:45]:<46}{str((n // frames, c, frames, h, w)):<24}{params:>9,}"
          f"{flops.get('UNet.' + name, sum(v for k, v in flops.items() if k.startswith(f'UNet.{name}.'))) / 1e6:>9.1f}")
total_params = sum(p.numel() for p in unet.parameters())
print(f"{'total':<81}{total_params:>9,}{flops['Global'] / 1e6:>9.1f}")
assert out.shape == x.shape
assert all(shape[0] == frames for shape in shapes.values())  # time is never resampled
embedding_params = sum(p.numel() for p in unet.time_embed.parameters())
assert total_params == embedding_params + sum(sum(p.numel() for p in m.parameters()) for _, m in blocks)

# %% [markdown]
# Most parameters sit at the coarse levels (more channels), most FLOPs at the fine ones (more
# pixels). A fresh UNet outputs exactly zero: the last convolution, the second convolution of each
# ResBlock and every attention output projection start at zero, so each block starts as the
# identity and training grows it (as in improved-diffusion and LDM).

# %%
assert torch.all(out == 0)
print("fresh UNet output is all zeros:", bool(torch.all(out == 0)))

# %% [markdown]
# ## 2. What a token can see: the three attention kinds
#
# Think of the latent clip as $f \times h \times w$ tokens. For one query token (red frame), the
# panels show the attention weights it gives every token, **captured from the real layers** with
# `capture_attention(layers)` (untrained weights, so the values are arbitrary; which tokens get *any*
# weight is the point).
#
# - `"spatial"`: tokens in the same frame. No frame ever sees another one: an image model.
# - `"factorized"` (LVDM): spatial, then temporal: the same pixel in every frame. Two hops
#   reach the whole clip, at a cost linear in $f$.
# - `"joint"`: every token sees every token, at a cost quadratic in $f \cdot h \cdot w$.
#
# Temporal attention knows *where in time* a key is through learned **relative positions** (Shaw et
# al. 2018): $e_{ij} = q_i \cdot (k_j + a^K_{j-i}) / \sqrt{d}$ and
# $z_i = \sum_j \mathrm{softmax}(e)_{ij}\,(v_j + a^V_{j-i})$, with $j - i$ clipped to
# $\pm$`max_relative_position`. Only distances matter, so shifting a clip in time shifts the output
# (`tests/test_unet.py` checks this exactly).

# %%
F_DEMO, S_DEMO, C_DEMO = 4, 4, 8  # a small clip: 4 frames of 4x4 tokens
clip = torch.randn(F_DEMO, C_DEMO, S_DEMO, S_DEMO)  # (b f, C, h, w) with b = 1
query_frame, query_pixel = 1, 6  # frame 1, pixel (row 1, column 2)
layers = {"spatial": SpatialAttention(C_DEMO, 2), "temporal": TemporalAttention(C_DEMO, 2, 3),
          "joint": JointAttention(C_DEMO, 2)}
with capture_attention(torch.nn.ModuleDict(layers)) as maps, torch.no_grad():  # forward hooks on each layer
    for layer in layers.values():
        layer(clip, F_DEMO)
by_kind = {record["kind"]: record["weights"][0] for record in maps.records}  # batch element 0

seen = {}  # (f, h w) weight the query gives each token, averaged over heads
seen["spatial"] = torch.zeros(F_DEMO, S_DEMO * S_DEMO)
seen["spatial"][query_frame] = by_kind["spatial"][query_frame].mean(0)[query_pixel]  # (t, heads, hw, hw)
temporal = rearrange(by_kind["temporal"], "h w n i j -> (h w) n i j")  # (h w, heads, f, f)
seen["temporal"] = torch.zeros(F_DEMO, S_DEMO * S_DEMO)
seen["temporal"][:, query_pixel] = temporal[query_pixel].mean(0)[query_frame]
# factorized = temporal(spatial(x)): the query reads pixel p in every frame f', and each of those
# read every pixel of its own frame. Weight of the two-hop path = temporal weight x spatial weight.
spatial_rows = by_kind["spatial"].mean(1)[:, query_pixel]  # (f, h w): pixel p's spatial row in each frame
seen["factorized: 2 hops"] = temporal[query_pixel].mean(0)[query_frame][:, None] * spatial_rows
seen["joint"] = by_kind["joint"].mean(0)[query_frame * S_DEMO * S_DEMO + query_pixel].reshape(F_DEMO, -1)

fig, axes = plt.subplots(len(seen), 1, figsize=(6.5, 1.7 * len(seen)))
for ax, (name, weights) in zip(axes, seen.items()):
    image = rearrange(weights, "f (h w) -> h (f w)", h=S_DEMO)  # frames side by side
    ax.imshow(image, cmap="Blues", vmin=0, vmax=max(image.max().item(), 1e-6))
    ax.add_patch(plt.Rectangle((query_frame * S_DEMO + query_pixel % S_DEMO - 0.5, query_pixel // S_DEMO - 0.5),
                               1, 1, fill=False, ec="red", lw=2))
    for boundary in range(1, F_DEMO):
        ax.axvline(boundary * S_DEMO - 0.5, color="black", lw=1.5)
    ax.set_xticks([S_DEMO * (i + 0.5) - 0.5 for i in range(F_DEMO)], [f"frame {i}" for i in range(F_DEMO)], fontsize=7)
    ax.set_yticks([])
    ax.set_title(f"{name}: {int((weights > 0).sum())} of {weights.numel()} tokens", fontsize=9)
plt.tight_layout()
plt.show()
assert int((seen["spatial"] > 0).sum()) == S_DEMO * S_DEMO and int((seen["temporal"] > 0).sum()) == F_DEMO
assert int((seen["joint"] > 0).sum()) == int((seen["factorized: 2 hops"] > 0).sum()) == F_DEMO * S_DEMO * S_DEMO

# %% [markdown]
# The relative-position tables are indexed by clipped distance. With `max_relative_position = 3`
# and 8 frames, frames more than 3 apart share one entry ("far past" / "far future"):

# %%
layer = TemporalAttention(C_DEMO, 2, max_relative_position=3)
index = relative_index(torch.arange(8), layer.max_relative_position) - layer.max_relative_position  # clip(j - i)
plt.figure(figsize=(3, 2.6))
plt.imshow(index, cmap="coolwarm")
for i in range(8):
    for j in range(8):
        plt.text(j, i, int(index[i, j]), ha="center", va="center", fontsize=6)
plt.xlabel("key frame j")
plt.ylabel("query frame i")
plt.title("clipped distance j - i", fontsize=9)
plt.tight_layout()
plt.show()
assert index.min() == -3 and index.max() == 3

# %% [markdown]
# ## 3. What the optional inputs do
#
# The same class serves the short model, the prediction and interpolation models of the hierarchy
# and class/text conditioning:
# `unet(z_t, t, mask=..., perturbation_level=..., class_labels=..., context=...)`.
# The condition mask is one more input channel; the perturbation level $s$ (LVDM Sec. 3.3), the class
# and a pooled text embedding are each embedded and added to the timestep embedding. Each exists only
# when its config flag asks for it, and an input you do not pass adds nothing.

# %%
for flags in ({}, {"use_mask": True}, {"use_perturbation_embedding": True}, {"num_classes": 10}):
    model = UNet(dataclasses.replace(config, **flags))
    print(f"{str(flags or 'plain'):<38}{sum(p.numel() for p in model.parameters()):>10,} parameters")

# %% [markdown]
# ## 4. Why factorise? The measured cost of joint vs. factorised attention
#
# One attention block on $f$ frames of $h \times w$ latents with $C$ channels:
# joint attention compares all $N = f h w$ tokens, about $4 N^2 C$ FLOPs per forward pass;
# factorised attention compares $h w$ tokens within each of the $f$ frames plus $f$ tokens at each of
# the $h w$ pixels, about $4\,f\,(hw)^2 C + 4\,hw\,f^2 C$. Doubling the clip length doubles the
# factorised cost and quadruples the joint one. Below: counted FLOPs and measured time of a
# forward+backward pass of one block, on this machine, as the number of latent frames grows.
# (`benchmarks/unet_speed.py` measures the same for the whole UNet, with peak memory.)

# %%
def cost(block, frames):
    x = torch.randn(frames, COST_CHANNELS, COST_SIZE, COST_SIZE, requires_grad=True)  # (b f, C, h, w), b = 1
    with flop_counter() as counter:
        block(x, frames).sum().backward()
    times = []
    for _ in range(3):
        start = time.perf_counter()
        block(x, frames).sum().backward()
        times.append(time.perf_counter() - start)
    return counter.get_total_flops() / 1e9, min(times)


blocks_by_kind = {"factorized": FactorizedAttention(COST_CHANNELS, 4, 16), "joint": JointAttention(COST_CHANNELS, 4)}
results = {kind: [cost(block, frames) for frames in COST_FRAMES] for kind, block in blocks_by_kind.items()}

fig, axes = plt.subplots(1, 2, figsize=(9, 3))
for kind, rows in results.items():
    axes[0].loglog(COST_FRAMES, [gflop for gflop, _ in rows], "o-", label=kind)
    axes[1].loglog(COST_FRAMES, [seconds * 1e3 for _, seconds in rows], "o-", label=kind)
axes[0].set_ylabel("GFLOP (forward + backward)")
axes[1].set_ylabel("milliseconds (forward + backward)")
for ax in axes:
    ax.set_xlabel(f"latent frames f  ({COST_SIZE}x{COST_SIZE} latents, C = {COST_CHANNELS})")
    ax.minorticks_off()
    ax.set_xticks(COST_FRAMES, [str(f) for f in COST_FRAMES])
    ax.legend(fontsize=8)
plt.tight_layout()
plt.show()
for kind, rows in results.items():
    print(kind, {frames: f"{gflop:.2f} GFLOP, {seconds * 1e3:.0f} ms" for frames, (gflop, seconds) in zip(COST_FRAMES, rows)})

growth = {kind: rows[-1][0] / rows[-2][0] for kind, rows in results.items()}  # FLOPs ratio for 2x frames
print("FLOPs growth when t doubles:", {kind: round(value, 2) for kind, value in growth.items()})
assert growth["factorized"] < 2.2 < 3.0 < growth["joint"]
assert results["joint"][-1][0] > results["factorized"][-1][0]

# %% [markdown]
# Joint attention's cost runs away with clip length (and its attention matrix, if materialised,
# has $N^2$ entries: $(32 \cdot 16 \cdot 16)^2 \approx 67$M per head for 32 latent frames), while the
# factorised block grows linearly in $f$. That is the practical case for LVDM's factorisation; the
# paper also reports that joint attention gave worse samples. With this repository you can test that
# claim yourself: train the short model with `attention="joint"` and compare FVD (notebook 05).
