"""Gaussian diffusion: noise schedules, the forward process, the training loss, DDPM and DDIM samplers.

References (equation numbers are used in comments below):
- DDPM: Ho, Jain, Abbeel 2020, "Denoising Diffusion Probabilistic Models" (Eq. 4, 6, 7, 14, 15; Alg. 1, 2).
- DDIM: Song, Meng, Ermon 2021, "Denoising Diffusion Implicit Models" (Eq. 12, 16).
- Cosine schedule: Nichol & Dhariwal 2021, "Improved DDPM" (Eq. 17); v-target: Salimans & Ho 2022.
- Min-SNR-gamma loss weighting: Hang et al. 2023, "Efficient Diffusion Training via Min-SNR Weighting".
- LVDM (He et al. 2022) uses T = 1000 "scaled linear" betas, eps-prediction, an L1 loss, DDPM for
  short clips and DDIM (50 steps, eta = 1) for long videos (the official sampling scripts).

The names follow DDPM/improved-diffusion: `betas`, `alphas_cumprod`, `q_sample`,
`predict_start_from_noise`, `q_posterior`, `p_sample`, `ddim_sample`.

How other modules plug into the sampler (`GaussianDiffusion.sample`) without touching it:
- `model(x_t, t, **model_kwargs)` is any callable; `model_kwargs` carries mask, perturbation level, class.
  Guidance is such a callable: a wrapper that calls the network for both branches and combines them
  with `guidance.guide` (`hierarchy.ConditionalDenoiser`).
- `callback(step, t, x_t, pred_x0)` sees every step (progress plots, attention snapshots).
The sampler never rewrites x_t itself: a model that needs given latents written into its input (the
hierarchy, `hierarchy.ConditionalDenoiser`) does it inside its own call, so its unconditional branch
in the same step sees the untouched x_t (the official code's guidance saw the rewritten one).

DDIM timesteps: `timestep_spacing="uniform"` (default) spaces S steps evenly over [0, T-1], ending at
t = 0 and stepping to alpha = 1; `"leading"` is LVDM's: `range(0, T, T // S) + 1` (981, 961, ..., 1 for
S = 50) with the last step going to abar_0 (diffusers: "leading", steps_offset=1, set_alpha_to_one=False);
it takes at most T // 2 steps (beyond, its stride is 1 and it would start far below t = T - 1).
Min-SNR-gamma weights an L2 loss only (its weights convert squared errors between targets).
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from lvdm_ref.config import DiffusionConfig
from lvdm_ref.utils import randn

SCHEDULES = ("linear", "scaled_linear", "cosine")
PARAMETERIZATIONS = ("eps", "x0", "v")
LOSSES = ("l1", "l2")
SAMPLERS = ("ddpm", "ddim")
TIMESTEP_SPACINGS = ("uniform", "leading")
LONG_VIDEO_DDIM_STEPS = 50  # LVDM's long-video script: DDIM, 50 steps ...
LONG_VIDEO_DDIM_ETA = 1.0  # ... with eta = 1 (the official long-video script)


def make_beta_schedule(schedule: str, num_timesteps: int, linear_start: float = 0.0015,
                       linear_end: float = 0.0155, cosine_s: float = 0.008) -> torch.Tensor:
    """betas (num_timesteps,) in float64.

    `linear` and `scaled_linear` are given for T = 1000 and scaled by 1000 / T, so a short chain ends as
    noisy as the long one (as improved-diffusion does; LVDM always uses T = 1000, where this is a no-op).
    """
    if schedule not in SCHEDULES:
        raise ValueError(f"schedule must be one of {SCHEDULES}, got {schedule!r}")
    scale = 1000 / num_timesteps
    if schedule == "linear":  # DDPM used linear_start=1e-4, linear_end=0.02
        betas = torch.linspace(linear_start, linear_end, num_timesteps, dtype=torch.float64) * scale
    elif schedule == "scaled_linear":  # LVDM / LDM: linear in sqrt(beta)
        betas = torch.linspace(math.sqrt(linear_start), math.sqrt(linear_end), num_timesteps,
                               dtype=torch.float64) ** 2 * scale
    else:  # Improved DDPM Eq. 17: alpha_bar(t) = cos^2(((t / T + s) / (1 + s)) * pi / 2)
        steps = torch.arange(num_timesteps + 1, dtype=torch.float64) / num_timesteps
        alphas_bar = torch.cos((steps + cosine_s) / (1 + cosine_s) * math.pi / 2) ** 2
        betas = 1 - alphas_bar[1:] / alphas_bar[:-1]
    return betas.clamp(max=0.999)  # Improved DDPM: avoid a singular last step


def _extract(buffer: torch.Tensor, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """buffer[t] shaped (B, 1, 1, ...) to broadcast against x."""
    return buffer[t].to(x.dtype).reshape(-1, *([1] * (x.ndim - 1)))


@dataclass
class Trajectory:
    """What the sampler saw, for plots and the notebook's scrubber (tensors on the CPU)."""
    timesteps: list[int]  # the S model timesteps, in sampling order (descending)
    x_t: torch.Tensor  # (S + 1, B, ...): the input of every step, then the final sample
    pred_x0: torch.Tensor  # (S, B, ...): the model's clean-data estimate at every step


class GaussianDiffusion(nn.Module):
    """The diffusion process of a `DiffusionConfig`; buffers move with `.to(device)`."""

    def __init__(self, config: DiffusionConfig | None = None):
        super().__init__()
        config = config or DiffusionConfig()
        if config.parameterization not in PARAMETERIZATIONS:
            raise ValueError(f"parameterization must be one of {PARAMETERIZATIONS}, got {config.parameterization!r}")
        if config.loss not in LOSSES:
            raise ValueError(f"loss must be one of {LOSSES}, got {config.loss!r}")
        if config.min_snr_gamma is not None and config.loss != "l2":
            raise ValueError(f"min_snr_gamma={config.min_snr_gamma} weights a squared (l2) loss: Min-SNR's weights "
                             f"convert squared errors between eps, x0 and v, which an {config.loss} loss is not; "
                             f"use loss='l2', or min_snr_gamma=None for {config.loss}")
        self.config = config
        self.num_timesteps = config.num_timesteps
        self.parameterization = config.parameterization

        betas = make_beta_schedule(config.schedule, config.num_timesteps, config.linear_start, config.linear_end)
        alphas_cumprod = torch.cumprod(1 - betas, dim=0)
        alphas_cumprod_prev = torch.cat([torch.ones(1, dtype=torch.float64), alphas_cumprod[:-1]])
        # Eq. 7: variance of q(x_{t-1} | x_t, x_0); zero at t = 0
        posterior_variance = betas * (1 - alphas_cumprod_prev) / (1 - alphas_cumprod)
        buffers = {
            "betas": betas,
            "alphas_cumprod": alphas_cumprod,
            "alphas_cumprod_prev": alphas_cumprod_prev,
            "sqrt_alphas_cumprod": alphas_cumprod.sqrt(),
            "sqrt_one_minus_alphas_cumprod": (1 - alphas_cumprod).sqrt(),
            "sqrt_recip_alphas_cumprod": (1 / alphas_cumprod).sqrt(),
            "sqrt_recipm1_alphas_cumprod": (1 / alphas_cumprod - 1).sqrt(),
            "posterior_variance": posterior_variance,
            # log of 0 at t = 0 is clipped to the t = 1 value (only used where noise is added, t > 0)
            "posterior_log_variance_clipped": torch.log(torch.cat([posterior_variance[1:2], posterior_variance[1:]])),
            "posterior_mean_coef1": betas * alphas_cumprod_prev.sqrt() / (1 - alphas_cumprod),  # Eq. 7
            "posterior_mean_coef2": (1 - alphas_cumprod_prev) * (1 - betas).sqrt() / (1 - alphas_cumprod),
        }
        for name, value in buffers.items():  # float64 (a few kB); cast to the data's dtype where used
            self.register_buffer(name, value, persistent=False)

    # ------------------------------------------------------------------ forward process
    def q_sample(self, x_start: torch.Tensor, t: torch.Tensor, noise: torch.Tensor | None = None) -> torch.Tensor:
        """Sample x_t ~ q(x_t | x_0) = N(sqrt(abar_t) x_0, (1 - abar_t) I).  # Eq. 4 (DDPM)"""
        noise = torch.randn_like(x_start) if noise is None else noise
        return _extract(self.sqrt_alphas_cumprod, t, x_start) * x_start + \
            _extract(self.sqrt_one_minus_alphas_cumprod, t, x_start) * noise

    def snr(self, t: torch.Tensor) -> torch.Tensor:
        """Signal-to-noise ratio abar_t / (1 - abar_t)."""
        return self.alphas_cumprod[t] / (1 - self.alphas_cumprod[t])

    def q_posterior(self, x_start: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor):
        """Mean, variance and log-variance of q(x_{t-1} | x_t, x_0).  # Eq. 6-7 (DDPM)"""
        mean = _extract(self.posterior_mean_coef1, t, x_t) * x_start + _extract(self.posterior_mean_coef2, t, x_t) * x_t
        return mean, _extract(self.posterior_variance, t, x_t), _extract(self.posterior_log_variance_clipped, t, x_t)

    # ------------------------------------------------------------------ parameterizations
    def predict_start_from_noise(self, x_t: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """x_0 = (x_t - sqrt(1 - abar_t) eps) / sqrt(abar_t)  (Eq. 4 solved for x_0)."""
        return _extract(self.sqrt_recip_alphas_cumprod, t, x_t) * x_t - \
            _extract(self.sqrt_recipm1_alphas_cumprod, t, x_t) * noise

    def predict_noise_from_start(self, x_t: torch.Tensor, t: torch.Tensor, x_start: torch.Tensor) -> torch.Tensor:
        return (_extract(self.sqrt_recip_alphas_cumprod, t, x_t) * x_t - x_start) / \
            _extract(self.sqrt_recipm1_alphas_cumprod, t, x_t)

    def get_v(self, x_start: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """v = sqrt(abar_t) eps - sqrt(1 - abar_t) x_0 (Salimans & Ho 2022)."""
        return _extract(self.sqrt_alphas_cumprod, t, x_start) * noise - \
            _extract(self.sqrt_one_minus_alphas_cumprod, t, x_start) * x_start

    def training_target(self, x_start: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        if self.parameterization == "eps":
            return noise
        if self.parameterization == "x0":
            return x_start
        return self.get_v(x_start, noise, t)

    def model_predictions(self, model_output: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor,
                          clip_denoised: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """(pred_x0, pred_eps) from the network output, whatever it was trained to predict."""
        if self.parameterization == "eps":
            pred_x0 = self.predict_start_from_noise(x_t, t, model_output)
        elif self.parameterization == "x0":
            pred_x0 = model_output
        else:  # x_0 = sqrt(abar) x_t - sqrt(1 - abar) v
            pred_x0 = _extract(self.sqrt_alphas_cumprod, t, x_t) * x_t - \
                _extract(self.sqrt_one_minus_alphas_cumprod, t, x_t) * model_output
        if clip_denoised:  # pixels live in [-1, 1]; latents are unbounded, so the default is off
            pred_x0 = pred_x0.clamp(-1, 1)
        if self.parameterization == "eps" and not clip_denoised:
            return pred_x0, model_output
        return pred_x0, self.predict_noise_from_start(x_t, t, pred_x0)

    # ------------------------------------------------------------------ training
    def training_losses(self, model: Callable, x_start: torch.Tensor, t: torch.Tensor | None = None,
                        noise: torch.Tensor | None = None, model_kwargs: dict | None = None,
                        x_t: torch.Tensor | None = None, loss_mask: torch.Tensor | None = None) -> dict:
        """Alg. 1 (DDPM) with an L1 or L2 loss on the eps, x0 or v target.

        `x_t`: pass your own noisy input (the hierarchy writes conditioning latents into it); the targets are
        still those of `q_sample(x_start, t, noise)`, so frames where x_t is anything else must have
        `loss_mask` 0 (checked: a ValueError otherwise).
        `loss_mask`: broadcastable to x_start; 1 where the loss counts (e.g. only generated frames).
        Returns {"loss": scalar, "loss_per_sample": (B,), "t": (B,), "model_output": like x_start}.
        """
        batch = x_start.shape[0]
        if t is None:  # uniform t, as in LVDM
            t = torch.randint(0, self.num_timesteps, (batch,), device=x_start.device)
        noise = torch.randn_like(x_start) if noise is None else noise
        if x_t is None:
            x_t = self.q_sample(x_start, t, noise)
        else:  # the targets below are those of q_sample(x_start, t, noise): refuse frames where x_t is not that
            self._check_given_x_t(x_start, t, noise, x_t, loss_mask)
        model_output = model(x_t, t, **(model_kwargs or {}))
        target = self.training_target(x_start, noise, t)
        error = (model_output - target).abs() if self.config.loss == "l1" else (model_output - target) ** 2
        if loss_mask is None:
            per_sample = error.flatten(1).mean(1)  # (B,)
        else:
            weight = loss_mask.to(error.dtype).expand_as(error)
            per_sample = (error * weight).flatten(1).sum(1) / weight.flatten(1).sum(1).clamp(min=1)
        if self.config.min_snr_gamma is not None:
            per_sample = per_sample * self.min_snr_weight(t).to(per_sample.dtype)
        return {"loss": per_sample.mean(), "loss_per_sample": per_sample, "t": t, "model_output": model_output}

    def min_snr_weight(self, t: torch.Tensor) -> torch.Tensor:
        """Min-SNR-gamma (Hang et al. 2023, Eq. 7-9): min(SNR_t, gamma) as an x0-loss weight, in the units of
        the target: divided by SNR_t for eps and by SNR_t + 1 for v. Caps the weight of the easy, low-noise t."""
        snr = self.snr(t)
        weight = snr.clamp(max=self.config.min_snr_gamma)
        if self.parameterization == "eps":
            return weight / snr
        if self.parameterization == "v":
            return weight / (snr + 1)
        return weight

    def _check_given_x_t(self, x_start, t, noise, x_t, loss_mask) -> None:
        """Where the loss counts, a given x_t must equal q_sample(x_start, t, noise), or no target is right.

        The eps, x0 and v targets are all functions of (x_start, noise, t); at frames where x_t is something
        else (e.g. given latents written in at another noise level) none of them describes x_t, so such
        frames must be masked out of the loss.
        """
        expected = self.q_sample(x_start, t, noise)
        weight = torch.ones_like(x_t) if loss_mask is None else loss_mask.to(x_t.dtype).expand_as(x_t)
        mismatch = ((x_t - expected).abs() * weight).amax()
        if mismatch > 1e-4 * (1 + expected.abs().amax()):
            raise ValueError("x_t differs from q_sample(x_start, t, noise) where the loss counts (max difference "
                             f"{float(mismatch):.3g}): no {self.parameterization!r} target is correct there. Pass "
                             "loss_mask = 0 at the frames you rewrote (e.g. 1 - mask for given latents)")

    def loss(self, model: Callable, x_start: torch.Tensor, **kwargs) -> torch.Tensor:
        """The scalar training loss; see `training_losses` for the options."""
        return self.training_losses(model, x_start, **kwargs)["loss"]

    # ------------------------------------------------------------------ one reverse step
    def p_sample(self, model_fn: Callable, x_t: torch.Tensor, t: torch.Tensor, noise: torch.Tensor | None = None,
                 clip_denoised: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """x_{t-1} ~ p(x_{t-1} | x_t) = q(x_{t-1} | x_t, pred_x0): Alg. 2 line 4 (DDPM). Returns (x_{t-1}, pred_x0).

        Uses the posterior variance (DDPM's "sigma^2 = beta tilde", as LVDM does).
        """
        pred_x0, _ = self.model_predictions(model_fn(x_t, t), x_t, t, clip_denoised)
        mean, _, log_variance = self.q_posterior(pred_x0, x_t, t)
        noise = torch.randn_like(x_t) if noise is None else noise
        nonzero = (t > 0).to(x_t.dtype).reshape(-1, *([1] * (x_t.ndim - 1)))  # no noise at the last step
        return mean + nonzero * (0.5 * log_variance).exp() * noise, pred_x0

    def ddim_sample(self, model_fn: Callable, x_t: torch.Tensor, t: torch.Tensor, t_prev: torch.Tensor,
                    eta: float = 0.0, noise: torch.Tensor | None = None,
                    clip_denoised: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """One DDIM step from t to t_prev (t_prev = -1 means "to clean data"). Returns (x_{t_prev}, pred_x0)."""
        pred_x0, pred_eps = self.model_predictions(model_fn(x_t, t), x_t, t, clip_denoised)
        alpha = _extract(self.alphas_cumprod, t, x_t)
        alpha_prev = torch.where(t_prev >= 0, self.alphas_cumprod[t_prev.clamp(min=0)], 1.0).to(x_t.dtype)
        alpha_prev = alpha_prev.reshape_as(alpha)
        sigma = eta * ((1 - alpha_prev) / (1 - alpha) * (1 - alpha / alpha_prev)).sqrt()  # Eq. 16 (DDIM)
        noise = torch.randn_like(x_t) if noise is None else noise
        direction = (1 - alpha_prev - sigma ** 2).clamp(min=0).sqrt() * pred_eps
        return alpha_prev.sqrt() * pred_x0 + direction + sigma * noise, pred_x0  # Eq. 12 (DDIM)

    # ------------------------------------------------------------------ sampling loops
    def sampling_timesteps(self, sampler: str, num_steps: int | None = None,
                           spacing: str = "uniform") -> list[int]:
        """The model timesteps a sampler visits, descending (see the module docstring for `spacing`)."""
        if sampler not in SAMPLERS:
            raise ValueError(f"sampler must be one of {SAMPLERS}, got {sampler!r}")
        if spacing not in TIMESTEP_SPACINGS:
            raise ValueError(f"timestep_spacing must be one of {TIMESTEP_SPACINGS}, got {spacing!r}")
        num_steps = self.num_timesteps if num_steps is None else num_steps
        if sampler == "ddpm" and num_steps != self.num_timesteps:
            raise ValueError(f"ddpm visits all {self.num_timesteps} steps; for {num_steps} steps use "
                             f"sampler='ddim' with eta=1 (the respaced DDPM posterior)")
        if not 1 <= num_steps <= self.num_timesteps:
            raise ValueError(f"num_steps must be in [1, {self.num_timesteps}], got {num_steps}")
        if sampler == "ddim" and spacing == "leading":  # LVDM: range(0, T, T // S) + 1
            if num_steps > self.num_timesteps // 2:  # stride T // S = 1: steps 1, ..., S, started from pure noise
                raise ValueError(f"timestep_spacing='leading' with {num_steps} of {self.num_timesteps} steps has stride "
                                 f"1 and visits only t = 1..{min(num_steps, self.num_timesteps - 1)}, starting from "
                                 f"pure noise far below t = {self.num_timesteps - 1}; use timestep_spacing='uniform', "
                                 f"or at most {self.num_timesteps // 2} steps")
            stride = self.num_timesteps // num_steps
            steps = [min(k * stride + 1, self.num_timesteps - 1) for k in range(num_steps)]
            return steps[::-1]
        steps = torch.linspace(0, self.num_timesteps - 1, num_steps, dtype=torch.float64).round().long()
        return steps.flip(0).tolist()

    @torch.no_grad()
    def sample(self, model: Callable, shape: tuple[int, ...], *, sampler: str | None = None,
               num_steps: int | None = None, eta: float | None = None, noise: torch.Tensor | None = None,
               model_kwargs: dict | None = None, callback: Callable | None = None, clip_denoised: bool = False,
               timestep_spacing: str | None = None, return_trajectory: bool = False, progress: bool = False,
               generator: torch.Generator | list[torch.Generator] | None = None, device: str | torch.device | None = None,
               dtype: torch.dtype = torch.float32):
        """Draw samples of `shape` with DDPM (Alg. 2) or DDIM (Eq. 12, `eta`, `num_steps`).

        `model(x_t, t, **model_kwargs)` predicts the configured target. The `callback` hook
        and `timestep_spacing` are described in the module docstring. `noise` is the starting x_T; `generator`
        (one, or a list of one per sample, which makes each sample independent of the batch it is in)
        makes the run reproducible; `dtype` is that of x_T unless `noise` is given. Returns x_0, or (x_0, Trajectory) with `return_trajectory=True`
        (the trajectory keeps every step on the CPU: mind the memory for long chains and big tensors).
        `sampler`, `num_steps` and `eta` default to the config's `sampler`, `sample_steps`, `ddim_eta`.
        """
        sampler = self.config.sampler if sampler is None else sampler
        num_steps = self.config.sample_steps if num_steps is None else num_steps
        eta = self.config.ddim_eta if eta is None else eta
        spacing = self.config.timestep_spacing if timestep_spacing is None else timestep_spacing
        timesteps = self.sampling_timesteps(sampler, num_steps, spacing)
        # where the last DDIM step lands: clean data (alpha = 1, index -1), or abar_0 for LVDM's spacing
        final_index = 0 if spacing == "leading" else -1
        device = torch.device(device) if device is not None else self.betas.device
        model_kwargs = model_kwargs or {}

        def model_fn(x, t):
            return model(x, t, **model_kwargs)

        dtype = dtype if noise is None else noise.dtype
        draw = functools.partial(randn, shape, generator, device, dtype)  # one stream per sample when a list
        x = draw() if noise is None else noise.to(device)
        seen_x, seen_x0 = [], []
        for step, t_value in enumerate(tqdm(timesteps, desc=f"{sampler} sampling", disable=not progress)):
            t = torch.full((shape[0],), t_value, device=device, dtype=torch.long)
            if sampler == "ddpm":
                x_prev, pred_x0 = self.p_sample(model_fn, x, t, noise=draw(), clip_denoised=clip_denoised)
            else:
                t_prev = torch.full_like(t, timesteps[step + 1] if step + 1 < len(timesteps) else final_index)
                x_prev, pred_x0 = self.ddim_sample(model_fn, x, t, t_prev, eta=eta, noise=draw(),
                                                   clip_denoised=clip_denoised)
            if return_trajectory:
                seen_x.append(x.cpu())
                seen_x0.append(pred_x0.cpu())
            if callback is not None:
                callback(step, t_value, x, pred_x0)
            x = x_prev
        if not return_trajectory:
            return x
        return x, Trajectory(timesteps, torch.stack(seen_x + [x.cpu()]), torch.stack(seen_x0))

    @torch.no_grad()
    def denoise_from(self, model: Callable, x_start: torch.Tensor, t_start: int, *, num_steps: int = 50,
                     eta: float = 1.0, generator: torch.Generator | list[torch.Generator] | None = None) -> torch.Tensor:
        """SDEdit (Meng et al. 2022): noise `x_start` to the first DDIM timestep at or below `t_start` (of the
        uniform `num_steps` schedule `sample` visits), then take the schedule's remaining steps to x_0. From a
        real x_start it shows what the model keeps of data that is only partly noised: at small t the model
        only renders details, near T it draws everything. `generator` as in `sample` (x_t's noise first)."""
        timesteps = [t for t in self.sampling_timesteps("ddim", num_steps) if t <= t_start]
        if not timesteps:
            raise ValueError(f"t_start={t_start} is below every step of the {num_steps}-step schedule: use t_start >= 0")
        draw = functools.partial(randn, tuple(x_start.shape), generator, x_start.device, x_start.dtype)
        full = functools.partial(torch.full, (x_start.shape[0],), device=x_start.device, dtype=torch.long)
        x = self.q_sample(x_start, full(timesteps[0]), draw())
        for index, t_value in enumerate(timesteps):
            t_prev = timesteps[index + 1] if index + 1 < len(timesteps) else -1
            x, _ = self.ddim_sample(model, x, full(t_value), full(t_prev), eta=eta, noise=draw())
        return x


class EmpiricalDenoiser(nn.Module):
    """The exact MMSE denoiser for a finite data set: E[x_0 | x_t] when x_0 is uniform over `data`.

    p(x_0 = d_n | x_t) is a softmax of -|x_t - sqrt(abar_t) d_n|^2 / (2 (1 - abar_t)) over the N clips.
    It is the network a perfect training run on `data` would converge to, so sampling with it shows what
    the samplers do without any training, and it reproduces (memorises) the training clips.
    It returns the target of `diffusion.parameterization`.
    """

    def __init__(self, data: torch.Tensor, diffusion: GaussianDiffusion):
        super().__init__()
        # float64: the expanded squared distance below cancels large terms when abar_t is near 1
        self.register_buffer("data", data.flatten(1).double())  # (N, D)
        self.register_buffer("data_sq_norm", (self.data ** 2).sum(1))  # (N,)
        self.data_shape = tuple(data.shape[1:])
        self.diffusion = diffusion

    def posterior_weights(self, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """p(x_0 = data[n] | x_t) for every clip n: (B, N), rows sum to 1."""
        flat = x_t.flatten(1).to(self.data.dtype)  # (B, D)
        signal = self.diffusion.sqrt_alphas_cumprod[t].to(flat.dtype)[:, None]  # (B, 1)
        variance = (1 - self.diffusion.alphas_cumprod[t]).to(flat.dtype)[:, None]
        # |x_t - s d_n|^2 = |x_t|^2 - 2 s x_t.d_n + s^2 |d_n|^2, without a (B, N, D) tensor
        distance = (flat ** 2).sum(1, keepdim=True) - 2 * signal * flat @ self.data.T + \
            signal ** 2 * self.data_sq_norm[None]  # (B, N)
        return F.softmax(-distance / (2 * variance), dim=1)

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, **unused) -> torch.Tensor:
        pred_x0 = (self.posterior_weights(x_t, t) @ self.data).reshape(x_t.shape).to(x_t.dtype)  # E[x_0 | x_t]
        noise = self.diffusion.predict_noise_from_start(x_t, t, pred_x0)
        if self.diffusion.parameterization == "eps":
            return noise
        if self.diffusion.parameterization == "x0":
            return pred_x0
        return self.diffusion.get_v(pred_x0, noise, t)
