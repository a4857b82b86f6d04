"""Conditional latent perturbation (LVDM Sec. 3.3).

An autoregressive video model conditions on its own earlier outputs, which are never quite like the
real latents it was trained on; the errors compound into drift. LVDM's remedy is to never show the
model a perfect condition: the given latents z_c are noised to a level s with the diffusion's own
forward process,

    z_c^s = sqrt(abar_s) z_c + sqrt(1 - abar_s) eps,          (= q_sample(z_c, s), DDPM Eq. 4)

and s is given to the network as an embedding (added to the timestep embedding, `unet.py`).

- Training: s ~ U{0, ..., s_max - 1} per sample, s_max = 250 of T = 1000 (official): T/4 for any chain
  (`train_max_level`), resolved where T is known (`hierarchy.py`, the recipes).
- Sampling: one fixed s (100 in the official long-video script); the condition is noised once, with
  fixed noise, and the same z_c^s is written into the input at every denoising step.
- s_max = 0 turns perturbation off entirely: conditions are written in clean and the model has no
  s embedding (the ablation of the drift experiment).
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:  # only for annotations
    from lvdm_ref.diffusion import GaussianDiffusion

TRAIN_MAX_LEVEL = 250  # s ~ U{0, ..., 249} in training (official, T = 1000)
SAMPLE_LEVEL = 100  # the fixed s at sampling (official long-video script): 2/5 of s_max


def train_max_level(num_timesteps: int, given: int | None = None) -> int:
    """The training s_max of a chain of `num_timesteps`: `given` (a config's `max_perturbation_level`), or by
    default LVDM's 250 of 1000, the same share (T/4) of another chain."""
    return num_timesteps * TRAIN_MAX_LEVEL // 1000 if given is None else given


def perturb(diffusion: GaussianDiffusion, given: torch.Tensor, level: torch.Tensor | None,
            noise: torch.Tensor | None = None) -> torch.Tensor:
    """z_c^s for given latents (B, c, f, h, w) at levels s (B,); `level=None` (perturbation off) returns them as they are."""
    if level is None:
        return given
    if level.min() < 0 or level.max() >= diffusion.num_timesteps:
        raise ValueError(f"perturbation levels must be in [0, {diffusion.num_timesteps - 1}], "
                         f"got {level.min().item()}..{level.max().item()}")
    return diffusion.q_sample(given, level, noise)  # LVDM Sec. 3.3: z_c^s = sqrt(abar_s) z_c + sqrt(1 - abar_s) eps


def training_levels(batch: int, max_level: int, device: torch.device | str = "cpu",
                    generator: torch.Generator | None = None) -> torch.Tensor | None:
    """s ~ U{0, ..., max_level - 1}, one per sample (B,); None when max_level = 0 (perturbation off)."""
    if max_level < 0:
        raise ValueError(f"max_level must be >= 0 (0 turns perturbation off), got {max_level}")
    if max_level == 0:
        return None
    return torch.randint(0, max_level, (batch,), device=device, generator=generator)


def default_level(max_level: int) -> int:
    """The sampling s for a model trained with s_max = max_level: 100 for 250 (official), the same share otherwise."""
    return max_level * SAMPLE_LEVEL // TRAIN_MAX_LEVEL


def sampling_levels(batch: int, level: int | None, max_level: int,
                    device: torch.device | str = "cpu") -> torch.Tensor | None:
    """The fixed s of every sample (B,) for a model trained with `max_level`, or None for a model without perturbation.

    `level=None` takes the official 100 for s_max = 250 (the same fraction of other s_max).

    A model trained without perturbation (max_level = 0) has no s embedding, so it can only take clean
    conditions: asking it for s > 0 is an error rather than a silent no-op.
    """
    if max_level == 0:
        if level:
            raise ValueError(f"this model was trained without perturbation (s_max = 0): it has no s embedding, so "
                             f"perturbation level {level} cannot be applied; use --perturbation-level 0")
        return None
    level = default_level(max_level) if level is None else level
    if not 0 <= level < max_level:
        raise ValueError(f"perturbation level (--perturbation-level) must be in [0, {max_level - 1}] (the levels seen "
                         f"in training), got {level}")
    return torch.full((batch,), level, device=device, dtype=torch.long)
