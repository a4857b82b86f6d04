"""Conditioning for LVDM's hierarchy (Sec. 3.3): masks, the loss, the denoiser.

Two latent diffusion models of the same UNet class, each with a condition-mask input channel and,
with perturbation on, an embedding of the perturbation level s:

- the prediction model works on keyframe latents (every 4th latent, i.e. 16 frames apart): given
  the first one, it makes the next 3; unconditional in half of its training samples (`max_given` k > 1,
  beyond the paper: given the first 1..k, it makes the rest);
- the interpolation model works on 5 consecutive latents: given both ends, it makes the 3 between;
  unconditional in 10 % of its training samples.

How a condition is given. The mask m (B, 1, f, 1, 1) is 1 at given latent frames; the given latents,
perturbed to level s (`perturbation.py`), are written into the noisy input at their own positions,
`x_in = x_t * (1 - m) + z_c^s * m`, and m is concatenated as an input channel.

The loss counts only the frames to generate (`loss_mask = 1 - m`). The official code also trains
the given frames, on a target that merges the two noises; sampling overwrites the model's output
there at every step, so those frames teach the network nothing it uses, and no single eps/x0/v target
describes a frame held at level s while the timestep says t.

This file makes one conditional sample (`sample_conditional`, with guidance in `ConditionalDenoiser`);
`long_video.py` chains them into a long video, `recipes.train_hierarchy_model` trains the two models.
"""
from __future__ import annotations

import torch
from torch import nn

from lvdm_ref.config import HierarchyConfig
from lvdm_ref.diffusion import LONG_VIDEO_DDIM_ETA, LONG_VIDEO_DDIM_STEPS, GaussianDiffusion
from lvdm_ref.guidance import guide
from lvdm_ref.perturbation import perturb, sampling_levels, train_max_level, training_levels
from lvdm_ref.utils import randn

ROLES = ("pred", "interp")


# ----------------------------------------------------------------------------- masks
def given_frames(role: str, num_latents: int) -> torch.Tensor:
    """(f,) 1 at the latent frames the role is given: the first (pred), or both ends (interp)."""
    if role not in ROLES:
        raise ValueError(f"role must be one of {ROLES}, got {role!r}")
    frames = torch.zeros(num_latents)
    frames[0] = 1
    if role == "interp":
        frames[-1] = 1
    return frames


def training_mask(config: HierarchyConfig, batch: int, device: torch.device | str = "cpu",
                  generator: torch.Generator | None = None) -> torch.Tensor:
    """(B, 1, f, 1, 1): the role's given frames in a `condition_prob` share of samples, nothing in the rest.

    A prediction model with `max_given` k > 1 is given its first 1, ..., k latents (uniformly), so that in
    a long video it can be given the last k it made and asked for the next one only."""
    conditioned = torch.rand(batch, generator=generator, device=device) < config.condition_prob  # (B,)
    if config.max_given > 1:
        count = torch.randint(1, config.max_given + 1, (batch,), generator=generator, device=device)  # (B,)
        frames = (torch.arange(config.num_latents, device=device)[None] < count[:, None]).float()  # (B, f)
    else:
        frames = given_frames(config.role, config.num_latents).to(device)[None]  # (1, f)
    return (conditioned[:, None].float() * frames).reshape(batch, 1, config.num_latents, 1, 1)


def hierarchy_loss(diffusion: GaussianDiffusion, config: HierarchyConfig):
    """loss_fn for the trainer: the diffusion loss of a prediction or interpolation UNet on clean latents."""

    def loss_fn(unet: nn.Module, z0: torch.Tensor, step: int) -> torch.Tensor:
        batch = z0.shape[0]
        if z0.shape[2] != config.num_latents:
            raise ValueError(f"a {config.role} model trains on {config.num_latents} latent frames, got {z0.shape[2]}")
        mask = training_mask(config, batch, z0.device)  # (B, 1, f, 1, 1)
        max_level = train_max_level(diffusion.num_timesteps, config.max_perturbation_level)
        level = training_levels(batch, max_level, z0.device)  # s (B,) or None
        given = perturb(diffusion, z0, level)  # z_c^s, with its own noise
        t = torch.randint(0, diffusion.num_timesteps, (batch,), device=z0.device)
        noise = torch.randn_like(z0)
        x_in = diffusion.q_sample(z0, t, noise) * (1 - mask) + given * mask  # LVDM Sec. 3.3
        return diffusion.training_losses(unet, z0, t=t, noise=noise, x_t=x_in, loss_mask=1 - mask,
                                         model_kwargs={"mask": mask, "perturbation_level": level})["loss"]

    return loss_fn


def warm_start(unet: nn.Module, short_state: dict[str, torch.Tensor]) -> nn.Module:
    """Initialise a prediction/interpolation UNet from a short model's weights: the same function at first.

    Every shared weight is copied; the input conv's mask column and the s embedding keep their zero
    initialisation (unet.py), so the mask and s change nothing until training teaches them to.
    """
    own = unet.state_dict()
    state = dict(short_state)
    weight = state["input_conv.weight"]  # (C, c, 3, 3) -> (C, c + 1, 3, 3) with the zero mask column
    if own["input_conv.weight"].shape[1] == weight.shape[1] + 1:
        state["input_conv.weight"] = torch.cat([weight, own["input_conv.weight"][:, weight.shape[1]:]], dim=1)
    missing, unexpected = unet.load_state_dict(state, strict=False)
    if unexpected or any(not name.startswith("perturbation_embed.") for name in missing):
        raise ValueError(f"the short model does not fit this UNet: missing {missing}, unexpected {unexpected}")
    return unet


# ----------------------------------------------------------------------------- one conditional sample
class ConditionalDenoiser:
    """`model_fn(x_t, t)` for `GaussianDiffusion.sample`: given latents written in, with optional guidance.

    The conditional branch sees `x_t * (1 - m) + z_c^s * m` and the mask; the unconditional branch sees
    x_t untouched and a mask of zeros, as an unconditional training sample did; both get the same s
    (guidance.py says why). At the given frames the combined output is the unconditional one: the
    conditional output there is never used, and this keeps x_t at those frames an honest sample of
    what the unconditional branch saw in training.
    """

    def __init__(self, unet: nn.Module, mask: torch.Tensor, perturbed: torch.Tensor, level: torch.Tensor | None,
                 guidance_weight: float = 0.0):
        self.unet, self.mask, self.perturbed, self.level = unet, mask, perturbed, level
        self.guidance_weight = guidance_weight

    def __call__(self, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        mask = self.mask.expand(len(x_t), -1, -1, -1, -1)  # (B, 1, f, 1, 1)
        x_cond = x_t * (1 - mask) + self.perturbed * mask  # the given latents written in, for this branch only
        if self.guidance_weight == 0:
            return self.unet(x_cond, t, mask=mask, perturbation_level=self.level)
        level = None if self.level is None else torch.cat([self.level, self.level])
        both = self.unet(torch.cat([x_cond, x_t]), torch.cat([t, t]),  # one batched call for both branches
                         mask=torch.cat([mask, torch.zeros_like(mask)]), perturbation_level=level)
        cond, uncond = both.chunk(2)
        return guide(cond, uncond, self.guidance_weight) * (1 - mask) + uncond * mask


@torch.no_grad()
def sample_conditional(unet: nn.Module, diffusion: GaussianDiffusion, config: HierarchyConfig,
                       given: torch.Tensor, mask: torch.Tensor, generators: list[torch.Generator], *,
                       num_steps: int = LONG_VIDEO_DDIM_STEPS, eta: float = LONG_VIDEO_DDIM_ETA,
                       perturbation_level: int | None = None, guidance_weight: float = 0.0,
                       timestep_spacing: str | None = None) -> torch.Tensor:
    """Latents (B, c, f, h, w) with `given` kept exactly where mask (B, 1, f, 1, 1) is 1, the rest sampled.

    The condition is perturbed once, with noise from each sample's own generator, to the fixed level s.
    """
    batch, device = len(given), given.device
    max_level = train_max_level(diffusion.num_timesteps, config.max_perturbation_level)
    level = sampling_levels(batch, perturbation_level, max_level, device)
    noise = randn(tuple(given.shape), generators, device)  # each sample's own stream
    perturbed = perturb(diffusion, given, level, noise)
    denoiser = ConditionalDenoiser(unet, mask, perturbed, level, guidance_weight)
    latents = diffusion.sample(denoiser, tuple(given.shape), sampler="ddim", num_steps=num_steps, eta=eta,
                               generator=generators, device=device, timestep_spacing=timestep_spacing)
    return latents * (1 - mask) + given * mask  # the given latents come back as they were
