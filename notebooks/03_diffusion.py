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
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/lvdm-ref/lvdm-ref/blob/main/notebooks/03_diffusion.ipynb)
#
# # 03 · Diffusion: destroy a clip with noise, then learn to undo it
#
# > **Time to run.** Measured with one thread on this project's 2-core CPU, shared with other jobs
# > (`notebooks/timings.json`). Full size (the default): 14 s of wall time, 11 CPU-seconds. Quick mode
# > (`LVDM_QUICK=1`): 5 s of wall time, 5 CPU-seconds. On a Colab GPU runtime: not measured. No network
# > is trained here.
#
# LVDM generates latents with a denoising diffusion model (DDPM, Ho et al. 2020). This notebook
# shows the **forward process** on real Moving MNIST clips, the **noise schedules** and their
# signal-to-noise ratio, and the two **samplers** LVDM uses, DDPM and DDIM, with controls to choose the
# noise level, scrub through a denoising trajectory and set a guidance weight. No network is trained here: for the sampler we use the *exact*
# denoiser of a small set of clips, the function a perfectly trained network would compute.

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

QUICK = is_quick()  # LVDM_QUICK=1: the same code on fewer clips and steps, about a minute on a CPU
NUM_CLIPS = 8 if QUICK else 32  # the "training set" of the exact denoiser
NUM_SAMPLES = 4  # clips drawn by each sampler
FRAMES, SIZE = (8, 32) if QUICK else (16, 64)  # clip length and frame size
DDIM_STEP_COUNTS = (2, 5, 10, 25, 50, 100, 250, 1000)  # cheap: section 5 samples 1-D Gaussian data
SEED = 0

# %%
import matplotlib.pyplot as plt
import numpy as np
import torch
from IPython.display import display

from lvdm_ref.checkpoint import SHIPPED_DIR
from lvdm_ref.config import DiffusionConfig
from lvdm_ref.data import generate_moving_mnist
from lvdm_ref.diffusion import SCHEDULES, EmpiricalDenoiser, GaussianDiffusion
from lvdm_ref.utils import from_uint8, to_uint8
from lvdm_ref.viz import frame_strip
from lvdm_ref.widgets import guidance_explorer, noise_level_explorer, scrub_video, trajectory_explorer

torch.manual_seed(SEED)
videos = generate_moving_mnist(NUM_CLIPS, num_frames=FRAMES, size=SIZE, num_digits=2, split="train", seed=SEED)
clips = from_uint8(videos)  # (N, 1, F, H, W) in [-1, 1]
print("clips", tuple(clips.shape), clips.dtype)
scrub_video(videos[:4], fps=8, title="four training clips")

# %% [markdown]
# ## 1. The forward process
#
# Diffusion adds Gaussian noise in $T = 1000$ small steps,
# $q(x_t \mid x_{t-1}) = \mathcal{N}(\sqrt{1-\beta_t}\,x_{t-1}, \beta_t I)$. Composing the steps gives a
# closed form for any $t$ (DDPM Eq. 4), which is what training uses:
#
# $$q(x_t \mid x_0) = \mathcal{N}\big(\sqrt{\bar\alpha_t}\,x_0,\ (1-\bar\alpha_t) I\big), \qquad
# \bar\alpha_t = \prod_{s \le t} (1 - \beta_s),$$
#
# so $x_t = \sqrt{\bar\alpha_t}\,x_0 + \sqrt{1-\bar\alpha_t}\,\epsilon$ in one line (`q_sample`).
# Below: one clip (every third frame or so, left to right) at growing $t$ (top to bottom) with LVDM's
# schedule. Look for the level at which the digits stop being readable: that is where the
# sampler has to decide *what* the clip shows.

# %%
diffusion = GaussianDiffusion(DiffusionConfig())  # LVDM: T = 1000, scaled-linear betas
levels = [0, 100, 250, 400, 600, 999]
x0 = clips[:1].repeat(len(levels), 1, 1, 1, 1)  # (6, 1, F, H, W)
noise = torch.randn_like(x0)
xt = diffusion.q_sample(x0, torch.tensor(levels), noise).float()

fig, axes = plt.subplots(len(levels), 1, figsize=(7, 1.2 * len(levels)))
for ax, level, video in zip(axes, levels, to_uint8(xt)):  # pixels outside [-1, 1] are clipped for display
    ax.imshow(frame_strip(video, every=FRAMES // 6 + 1)[..., 0], cmap="gray", vmin=0, vmax=255)
    ax.set_axis_off()
    ax.set_title(f"t = {level}   sqrt(abar) = {diffusion.sqrt_alphas_cumprod[level]:.3f}", fontsize=8)
plt.tight_layout()
plt.show()

# the residual x_t - sqrt(abar) x_0 is the noise, with exactly the closed-form standard deviation
residual_std = (xt - diffusion.sqrt_alphas_cumprod[levels].reshape(-1, 1, 1, 1, 1) * x0).flatten(1).std(1).float()
expected_std = diffusion.sqrt_one_minus_alphas_cumprod[levels].float()
assert torch.allclose(residual_std, expected_std, rtol=0.03), (residual_std, expected_std)  # sampling error
assert abs(torch.corrcoef(torch.stack([xt[-1].flatten(), x0[-1].flatten()]))[0, 1]) < 0.05  # t = 999: pure noise

# %% [markdown]
# **Choose $t$ yourself.** The slider noises the same clip with the same noise to any level (it needs a
# running kernel; the figure above is the same view at six levels, and stays when no kernel runs).

# %%
noise_level_explorer(diffusion, clips[:1], noise[:1], every=FRAMES // 6 + 1)

# %% [markdown]
# ## 2. Schedules and their signal-to-noise ratio
#
# A schedule is the sequence $\beta_1 \dots \beta_T$. What matters for the model is the
# signal-to-noise ratio $\mathrm{SNR}(t) = \bar\alpha_t / (1-\bar\alpha_t)$: how much of $x_0$ is
# left at step $t$.
#
# - **linear** (DDPM): $\beta_t$ from $10^{-4}$ to $0.02$.
# - **scaled linear** (LVDM, from latent diffusion): linear in $\sqrt{\beta}$,
#   $\beta_t = (\text{linspace}(\sqrt{0.0015}, \sqrt{0.0155}, T))^2$.
# - **cosine** (Improved DDPM): $\bar\alpha_t = \cos^2\!\big(\frac{t/T + s}{1+s}\frac{\pi}{2}\big)$,
#   which spends fewer steps at the nearly-pure-noise end.
#
# Look at where each $\log \mathrm{SNR}$ curve crosses 0 (as much signal as noise) and how much of
# the chain sits below $-5$, where the clip is essentially gone.

# %%
schedules = {
    "linear (DDPM)": GaussianDiffusion(DiffusionConfig(schedule="linear", linear_start=1e-4, linear_end=0.02)),
    "scaled linear (LVDM)": diffusion,
    "cosine": GaussianDiffusion(DiffusionConfig(schedule="cosine")),
}
assert set(d.config.schedule for d in schedules.values()) == set(SCHEDULES)
steps = torch.arange(1000)
fig, axes = plt.subplots(1, 3, figsize=(11, 3))
for name, process in schedules.items():
    axes[0].plot(process.betas, label=name)
    axes[1].plot(process.alphas_cumprod, label=name)
    axes[2].plot(torch.log(process.snr(steps)), label=name)
    half = int((process.alphas_cumprod < 0.5).nonzero()[0])
    print(f"{name:22s} SNR = 1 at t = {half:4d}, abar_T = {process.alphas_cumprod[-1]:.2e}")
    assert torch.all(process.snr(steps)[1:] < process.snr(steps)[:-1])  # noise only ever grows
axes[0].set_yscale("log")
axes[0].set_title(r"$\beta_t$ (log scale)")
axes[1].set_title(r"$\bar\alpha_t$ (signal kept)")
axes[2].set_title(r"$\log \mathrm{SNR}(t)$")
axes[2].axhline(0, color="gray", lw=0.5)
for ax in axes:
    ax.set_xlabel("t")
axes[1].legend(fontsize=8)
plt.tight_layout()
plt.show()

# %% [markdown]
# ### The same process on latents
#
# LVDM runs this process on the autoencoder's latents, not on pixels (notebook 02). The latents
# are normalised to unit variance per channel, so the same schedule removes the signal at the same
# rate. If the shipped autoencoder is present, here is the forward process on one latent channel.

# %%
SHIPPED_VAE = SHIPPED_DIR / "mmnist_vae.safetensors"  # found from the package, wherever the notebook runs
if SHIPPED_VAE.exists():
    from lvdm_ref.vae3d import VideoAutoencoder

    vae = VideoAutoencoder.load(SHIPPED_VAE)
    print(f"weights: the shipped file {SHIPPED_VAE}")
    with torch.no_grad():
        z0 = vae.encode(clips[:1])  # (1, c, f, h, w), normalised latents
    zt = diffusion.q_sample(z0.repeat(len(levels), 1, 1, 1, 1), torch.tensor(levels))
    fig, axes = plt.subplots(1, len(levels), figsize=(1.6 * len(levels), 1.9))
    for ax, level, latent in zip(axes, levels, zt):
        ax.imshow(latent[0, 0], cmap="RdBu_r", vmin=-3, vmax=3)  # channel 0, first latent frame
        ax.set_title(f"t = {level}", fontsize=8)
        ax.set_axis_off()
    plt.suptitle(f"latent channel 0 of a {tuple(z0.shape[1:])} latent", fontsize=9)
    plt.tight_layout()
    plt.show()
    print("latent std per channel:", z0.std(dim=(0, 2, 3, 4)).numpy().round(2))
else:
    print(f"weights: none, no file at {SHIPPED_VAE}: train an autoencoder with `python -m lvdm_ref train-vae` "
          "(notebook 02)")

# %% [markdown]
# ## 3. Reversing the process: DDPM and DDIM
#
# A network $\epsilon_\theta(x_t, t)$ learns to predict the noise; from it,
# $\hat x_0 = (x_t - \sqrt{1-\bar\alpha_t}\,\epsilon_\theta)/\sqrt{\bar\alpha_t}$ (`predict_start_from_noise`).
#
# **DDPM** (Alg. 2) steps through all $T$ levels, each time sampling the Gaussian posterior
# $q(x_{t-1} \mid x_t, \hat x_0)$ (`q_posterior`, Eq. 6-7) — 1000 network calls per clip.
#
# **DDIM** (Song et al., Eq. 12) jumps along any sub-sequence of levels:
#
# $$x_{t'} = \sqrt{\bar\alpha_{t'}}\,\hat x_0 + \sqrt{1-\bar\alpha_{t'}-\sigma_t^2}\,\epsilon_\theta + \sigma_t z,
# \qquad \sigma_t = \eta\sqrt{\tfrac{1-\bar\alpha_{t'}}{1-\bar\alpha_t}}\sqrt{1-\tfrac{\bar\alpha_t}{\bar\alpha_{t'}}}.$$
#
# With $\eta = 1$ and every step it *is* DDPM; with $\eta = 0$ it is deterministic: the same starting
# noise always gives the same clip. LVDM uses DDPM for short clips and DDIM (50 steps) for long videos.
#
# **The exact denoiser.** If the data were just our $N$ clips, the best possible prediction is
# $E[x_0 \mid x_t] = \sum_n w_n(x_t)\, d_n$ with $w_n \propto \exp(-\lVert x_t - \sqrt{\bar\alpha_t}\, d_n\rVert^2 / 2(1-\bar\alpha_t))$
# (`EmpiricalDenoiser`). A network trained to perfection on these clips would compute exactly
# this, so it lets us watch the samplers work before any training.

# %%
denoiser = EmpiricalDenoiser(clips, diffusion)
shape = (NUM_SAMPLES, *clips.shape[1:])
start = torch.randn(shape, generator=torch.Generator().manual_seed(SEED))  # the same x_T for every sampler

ddpm_record = {"t": [], "top_weight": []}


def watch(step, t, x_t, pred_x0):  # a sampler callback: how sure is the posterior about which clip?
    if t >= 800 or step % 50 == 0:
        ddpm_record["t"].append(t)
        ddpm_record["top_weight"].append(denoiser.posterior_weights(x_t, torch.full((len(x_t),), t)).max(1).values)


ddpm_samples = diffusion.sample(denoiser, shape, sampler="ddpm", noise=start, callback=watch,
                                generator=torch.Generator().manual_seed(1), progress=False)
ddim_samples, trajectory = diffusion.sample(denoiser, shape, sampler="ddim", num_steps=50, eta=0.0, noise=start,
                                            return_trajectory=True)
ddim_again = diffusion.sample(denoiser, shape, sampler="ddim", num_steps=50, eta=0.0, noise=start,
                              generator=torch.Generator().manual_seed(99))
assert torch.equal(ddim_samples, ddim_again)  # eta = 0: deterministic given x_T


def nearest_rms(samples):
    """RMS pixel distance from each sample to its nearest training clip."""
    return torch.cdist(samples.flatten(1), clips.flatten(1)).min(1).values / samples[0].numel() ** 0.5


print("DDPM (1000 steps): RMS to nearest training clip", nearest_rms(ddpm_samples).numpy().round(4))
print("DDIM (50 steps):   RMS to nearest training clip", nearest_rms(ddim_samples).numpy().round(4))
assert nearest_rms(ddpm_samples).max() < 0.05 and nearest_rms(ddim_samples).max() < 0.05  # memorised
scrub_video(torch.cat([ddpm_samples, ddim_samples]), fps=8, nrow=NUM_SAMPLES,
           title="top: DDPM, 1000 steps; bottom: DDIM, 50 steps, eta = 0 (same x_T)")

# %% [markdown]
# Both samplers return training clips, pixel for pixel: the exact denoiser of a finite data set
# *memorises*. A real network generalises because it cannot represent this function exactly; that
# gap is what training buys. The next figure shows **when** the sampler commits to a clip: the
# largest posterior weight $\max_n w_n(x_t)$ along the DDPM chain. With a handful of clips in
# thousands of dimensions the choice is made in the very first steps, while $x_t$ looks like pure
# noise: summed over every pixel, even $\sqrt{\bar\alpha_T} \approx 0.026$ of signal is enough to tell
# 8 clips apart. A trained network cannot do this (it has not stored the clips), so its content is
# decided later, at moderate noise levels.

# %%
top_weight = torch.stack(ddpm_record["top_weight"])  # (recorded steps, samples)
plt.figure(figsize=(6, 2.6))
plt.plot(ddpm_record["t"], top_weight, ".-", ms=3)
plt.gca().invert_xaxis()
plt.xlim(1000, 750)
plt.xlabel("t (sampling goes from t = 999 down)")
plt.ylabel(r"$\max_n\, p(x_0 = d_n \mid x_t)$")
plt.title(f"DDPM with the exact denoiser of {NUM_CLIPS} clips: the first 250 steps", fontsize=9)
plt.tight_layout()
plt.show()
assert torch.all(top_weight[-1] > 0.99)  # by the end, one clip has all the weight
assert top_weight[0].min() < top_weight[-1].min()

# %% [markdown]
# ## 4. Scrub through a DDIM trajectory
#
# `sample(..., return_trajectory=True)` keeps every step's input $x_t$ and the model's current
# guess $\hat x_0$. Move the step slider (in JupyterLab or Colab, with a running kernel) through the
# 50 steps and one more, the finished sample, and the frame slider through the clip: the guess
# $\hat x_0$ is a blurry average of clips early on and sharpens into one clip while $x_t$ is still
# mostly noise. Below the control, the same view as a static figure (it stays when no kernel runs).

# %%
trajectory_explorer(trajectory)

# %%
estimates = torch.cat([trajectory.pred_x0, trajectory.x_t[-1:]])  # (51, B, ...): the last is the finished sample
picked = [0, 10, 20, 30, 40, 50]
fig, axes = plt.subplots(2, len(picked), figsize=(1.5 * len(picked), 3.2))
for column, step in enumerate(picked):
    for row, video in enumerate((trajectory.x_t[step, 0], estimates[step, 0])):
        axes[row, column].imshow(video[0, 0].float().clamp(-1, 1), cmap="gray", vmin=-1, vmax=1)  # frame 0
        axes[row, column].set_axis_off()
    axes[0, column].set_title(f"t = {trajectory.timesteps[step]}" if step < 50 else "finished", fontsize=8)
axes[0, 0].text(-2, SIZE / 2, "x_t", ha="right", va="center", fontsize=8)
axes[1, 0].text(-2, SIZE / 2, "pred x0", ha="right", va="center", fontsize=8)
plt.tight_layout()
plt.show()
assert trajectory.x_t.shape[0] == len(trajectory.timesteps) + 1 == 51
assert torch.equal(trajectory.x_t[-1], ddim_samples.to(trajectory.x_t.dtype))  # the last position is the sample

# %% [markdown]
# ## 5. How many steps does DDIM need?
#
# With the clips above, every sampler lands exactly on a training clip, so it cannot show the cost of
# skipping steps. A case where the answer is known exactly: data $x_0 \sim \mathcal{N}(0, \sigma^2)$.
# Then $x_t \sim \mathcal{N}(0, \bar\alpha_t\sigma^2 + 1 - \bar\alpha_t)$ and the exact denoiser is linear,
# $E[x_0 \mid x_t] = \frac{\sqrt{\bar\alpha_t}\,\sigma^2}{\bar\alpha_t\sigma^2 + 1 - \bar\alpha_t}\, x_t$.
# A perfect sampler returns samples with standard deviation $\sigma$; any shortfall is discretisation
# error of the sampler alone, because the "network" is exact.

# %%
SIGMA = 0.5


def gaussian_data_eps(x_t, t):  # the exact eps-prediction for N(0, SIGMA^2) data
    abar = diffusion.alphas_cumprod[t].reshape(-1, 1).float()
    x0 = abar.sqrt() * SIGMA ** 2 / (abar * SIGMA ** 2 + 1 - abar) * x_t
    return diffusion.predict_noise_from_start(x_t, t, x0)


stds = {eta: [diffusion.sample(gaussian_data_eps, (1, 20_000), sampler="ddim", num_steps=count, eta=eta,
                               generator=torch.Generator().manual_seed(SEED)).std().item()
              for count in DDIM_STEP_COUNTS] for eta in (0.0, 1.0)}
ddpm_std = diffusion.sample(gaussian_data_eps, (1, 20_000), sampler="ddpm",
                            generator=torch.Generator().manual_seed(SEED)).std().item()
plt.figure(figsize=(5.5, 2.8))
for eta, values in stds.items():
    plt.semilogx(DDIM_STEP_COUNTS, values, "o-", ms=4, label=f"DDIM, eta = {eta:g}")
plt.semilogx([1000], [ddpm_std], "k*", ms=9, label="DDPM, 1000 steps")
plt.axhline(SIGMA, color="gray", ls="--", lw=1, label=r"data $\sigma$")
plt.xlabel("sampling steps")
plt.ylabel("std of the samples")
plt.legend(fontsize=7)
plt.tight_layout()
plt.show()
print({count: round(value, 3) for count, value in zip(DDIM_STEP_COUNTS, stds[0.0])})
assert abs(stds[0.0][-1] - SIGMA) < 0.02 and abs(ddpm_std - SIGMA) < 0.02  # all steps: exact
assert stds[0.0][0] < stds[0.0][3] < stds[0.0][-1]  # fewer steps: samples shrink toward the mean

# %% [markdown]
# Few steps give samples that are too concentrated: each big jump trusts $\hat x_0$, a conditional
# *mean*, for too long. 50 DDIM steps (LVDM's choice for long videos) leave a few percent here;
# 1000 DDPM steps (LVDM's short clips) are exact up to sampling noise. With a trained network the
# same trade-off shows up as smoother, less detailed clips at few steps.

# %% [markdown]
# **Guidance is a model, not a sampler option.** The sampler calls one function, `model(x_t, t)`.
# Guidance (LVDM Sec. 3.3, notebook 09) is such a function: it asks the network twice, with and
# without the condition, and returns $(1 + w)\,\epsilon_{cond} - w\,\epsilon_{uncond}$
# (`lvdm_ref.guidance.guide`); the hierarchy's `ConditionalDenoiser` is exactly this wrapper. A toy
# version with exact denoisers: the "conditional" data are $\mathcal{N}(0, \sigma^2)$, the
# "unconditional" ones twice as wide. $w = 0$ is the conditional model; $w > 0$ pushes the samples
# away from the unconditional model, here narrower than $\sigma$.

# %%
from lvdm_ref.guidance import guide


def exact_eps(sigma):  # the exact eps-prediction for N(0, sigma^2) data, as above
    def eps(x_t, t):
        abar = diffusion.alphas_cumprod[t].reshape(-1, 1).float()
        return diffusion.predict_noise_from_start(x_t, t, abar.sqrt() * sigma ** 2 / (abar * sigma ** 2 + 1 - abar) * x_t)
    return eps


def guided(w):  # a model_fn for the sampler: both branches, one guided prediction
    cond, uncond = exact_eps(SIGMA), exact_eps(2 * SIGMA)
    return lambda x_t, t: guide(cond(x_t, t), uncond(x_t, t), w)


guided_stds = {w: diffusion.sample(guided(w), (1, 20_000), sampler="ddim", num_steps=250, eta=0.0,
                                   generator=torch.Generator().manual_seed(SEED)).std().item() for w in (0.0, 0.1, 1.0)}
print({f"w = {w:g}": round(std, 3) for w, std in guided_stds.items()}, f"conditional data: std {SIGMA}")
assert abs(guided_stds[0.0] - SIGMA) < 0.02 and guided_stds[0.0] > guided_stds[0.1] > guided_stds[1.0]

# %% [markdown]
# **Choose $w$ yourself** (a running kernel is needed): the histogram of the guided samples (DDIM 50 steps,
# the same seed) against both data densities. Under the control, the same figure at $w = 1$.

# %%
explorer = guidance_explorer(lambda w: diffusion.sample(guided(w), (1, 20_000), sampler="ddim", num_steps=50, eta=0.0,
                                                        generator=torch.Generator().manual_seed(SEED)), sigma=SIGMA)
display(explorer)
explorer.draw(w=1.0)
plt.show()

# %% [markdown]
# **What to remember.** `q_sample` noises in one line; the schedule sets how fast the SNR falls;
# DDPM walks all 1000 posterior steps, DDIM jumps and can be deterministic. The sampler in
# `lvdm_ref.diffusion` takes any `model(x_t, t)` (guidance is a wrapper around the network, as above)
# and a `callback` for plots like the one above; the hierarchy writes its given frames into $x_t$
# inside its own model call, so the later notebooks reuse it unchanged. Next, notebook 04: the network that replaces the exact denoiser.
