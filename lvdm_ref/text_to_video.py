"""Text-to-video on Moving MNIST with classifier-free guidance (beyond the paper; Ho & Salimans 2022).

LVDM's experiments are unconditional, while its official code and successors are text-to-video models
(the UNet takes a text embedding; Sec. 3.4 sketches it). This file is the smallest such model that trains
on a CPU: the short LVDM (`lvdm.py`) whose UNet also reads a caption, "3 and 7", as a (10,) digit-count
vector through its pooled-context input (`captions.py` says why a label set and not text tokens).

- Training (`caption_loss`): the short model's diffusion loss, with each sample's caption replaced by the
  null caption (zeros) with probability `CAPTION_DROP_PROB` = 0.1, so one network learns both
  eps(z_t | c) and eps(z_t). 0.1 is the share Stable Diffusion and Imagen use, within the 0.1-0.2 that
  Ho & Salimans (2022, Table 1) found best; the unconditional branch starts as the shipped short model
  (`warm_start_captions`), so it only has to be kept, and 90 % of the updates go to the caption.
- Warm start: every weight of the short model is copied and the caption embedding starts at zero, so at
  step 0 the model computes the short model's function exactly, whatever the caption (tested).
- Sampling (`CaptionDenoiser`): eps = eps_uncond + g (eps_cond - eps_uncond), both branches in one
  batched UNet call. g = 0 is the unconditional model, g = 1 the conditional one, g > 1 pushes samples
  toward what distinguishes the caption. It is `guidance.guide` with w = g - 1: LVDM's unconditional
  guidance is the same formula, but its condition is the given latents of a long video and its scale is
  small (w = 0.1, g = 1.1), to stay near the conditional model; caption guidance uses g of 2-7 to trade
  sample diversity (and FVD) for faithfulness to the caption (benchmarks/caption_guidance.py).

The model is `TextToVideo`: a `LatentVideoDiffusion` whose checkpoints are kind "lvdm_t2v" and whose
`sample` takes captions. `recipes.train_t2v_model` is the recipe (`python -m lvdm_ref train --model t2v`).
"""
from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from lvdm_ref.captions import CAPTION_DIM, encode_captions
from lvdm_ref.checkpoint import T2V_KIND
from lvdm_ref.diffusion import GaussianDiffusion
from lvdm_ref.guidance import guide
from lvdm_ref.lvdm import LatentVideoDiffusion
from lvdm_ref.utils import stream, to_uint8

CAPTION_DROP_PROB = 0.1  # share of training samples whose caption is dropped (the null caption)
DEFAULT_GUIDANCE = 3.0  # g of `sample --guidance-scale`; benchmarks/caption_guidance.py measures the range
DIGIT_SHARES = {1: 0.25, 2: 0.5, 3: 0.25}  # training clips by number of digits; 2 as the short model's data


def classifier_free_guidance(cond: torch.Tensor, uncond: torch.Tensor, scale: float) -> torch.Tensor:
    """eps_uncond + g (eps_cond - eps_uncond): `guidance.guide` with w = g - 1 (it is linear in g)."""
    return guide(cond, uncond, scale - 1)


def caption_loss(diffusion: GaussianDiffusion, drop_prob: float = CAPTION_DROP_PROB):
    """loss_fn for the trainer: the diffusion loss on (latents (B, c, f, h, w), captions (B, 10)), each
    caption dropped (set to the null caption) with probability `drop_prob`."""
    if not 0 <= drop_prob < 1:
        raise ValueError(f"drop_prob must be in [0, 1), got {drop_prob}")

    def loss_fn(unet: nn.Module, batch, step: int) -> torch.Tensor:
        z0, captions = batch
        keep = (torch.rand(len(z0), device=z0.device) >= drop_prob).to(captions.dtype)  # (B,)
        context = captions * keep[:, None]  # (B, 10): dropped rows are the null caption
        return diffusion.training_losses(unet, z0, model_kwargs={"context": context})["loss"]

    return loss_fn


def warm_start_captions(unet: nn.Module, short_state: dict[str, torch.Tensor]) -> nn.Module:
    """Initialise a caption UNet from a short model's weights, its caption embedding at zero.

    Every weight of the short model is copied; `context_embed` (weight and bias) is set to zero, so the
    caption adds nothing to the timestep embedding and the model is the short model, for any caption,
    until training teaches the embedding (the analogue of `hierarchy.warm_start`)."""
    try:
        missing, unexpected = unet.load_state_dict(short_state, strict=False)
    except RuntimeError as error:  # a weight of another shape: another UNet size
        raise ValueError(f"the short model does not fit this UNet (build it with the short model's UNetConfig "
                         f"and context_dim={CAPTION_DIM}): {str(error).splitlines()[1].strip()} ...") from None
    if unexpected or any(not name.startswith("context_embed.") for name in missing):
        raise ValueError(f"the short model does not fit this UNet: missing {missing}, unexpected {unexpected}")
    with torch.no_grad():
        for parameter in unet.context_embed.parameters():
            parameter.zero_()
    return unet


class CaptionDataset(torch.utils.data.Dataset):
    """Pre-encoded latents (N, c, f, h, w) with their captions (N, 10) as (latent, caption) pairs."""

    def __init__(self, latents: torch.Tensor, captions: torch.Tensor):
        if len(latents) != len(captions):
            raise ValueError(f"{len(latents)} latents but {len(captions)} captions")
        self.latents, self.captions = latents, captions

    def __len__(self) -> int:
        return len(self.latents)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.latents[index], self.captions[index]


class CaptionDenoiser:
    """`model_fn(x_t, t)` for `GaussianDiffusion.sample`: the caption-guided prediction.

    g = 1 needs only the conditional branch and g = 0 only the unconditional one; any other g runs both in
    one UNet call on the doubled batch (`branches`) and combines them."""

    def __init__(self, unet: nn.Module, captions: torch.Tensor, guidance_scale: float = DEFAULT_GUIDANCE):
        self.unet, self.captions, self.guidance_scale = unet, captions, guidance_scale

    def branches(self, x_t: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """eps(x_t | caption) and eps(x_t | null caption), each (B, c, f, h, w), from one batched call."""
        context = torch.cat([self.captions, torch.zeros_like(self.captions)])  # (2B, 10)
        both = self.unet(torch.cat([x_t, x_t]), torch.cat([t, t]), context=context)  # (2B, c, f, h, w)
        cond, uncond = both.chunk(2)
        return cond, uncond

    def __call__(self, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        if self.guidance_scale == 1:
            return self.unet(x_t, t, context=self.captions)
        if self.guidance_scale == 0:
            return self.unet(x_t, t, context=torch.zeros_like(self.captions))
        return classifier_free_guidance(*self.branches(x_t, t), self.guidance_scale)


class TextToVideo(LatentVideoDiffusion):
    """The short LVDM with a caption input: `sample(captions, guidance_scale)`; checkpoints of kind "lvdm_t2v"."""

    def __init__(self, vae, unet, diffusion, latent_shape, hierarchy=None):
        super().__init__(vae, unet, diffusion, latent_shape, hierarchy)
        if unet.config.context_dim != CAPTION_DIM:
            raise ValueError(f"a text-to-video UNet reads (B, {CAPTION_DIM}) captions: UNetConfig.context_dim must "
                             f"be {CAPTION_DIM}, got {unet.config.context_dim}")

    @property
    def kind(self) -> str:
        return T2V_KIND

    @classmethod
    def load(cls, path: str | os.PathLike, vae=None, device: str | torch.device = "cpu", use_ema: bool = True,
             kind: str = T2V_KIND) -> "TextToVideo":
        return super().load(path, vae=vae, device=device, use_ema=use_ema, kind=kind)

    @torch.no_grad()
    def sample_latents(self, captions, guidance_scale: float = DEFAULT_GUIDANCE, sampler: str = "ddim",
                       num_steps: int | None = 50, eta: float | None = None, seed: int = 0, progress: bool = False,
                       first_index: int = 0) -> torch.Tensor:
        """(N, c, f, h, w) latents for N captions (text, digit lists or (N, 10) counts): samples first_index, ...
        of `seed`, sample i from its own stream (`lvdm.LatentVideoDiffusion.sample_latents` says why)."""
        device = next(self.unet.parameters()).device
        vectors = captions if isinstance(captions, torch.Tensor) and captions.dtype.is_floating_point \
            else encode_captions(captions)
        vectors = vectors.to(device)  # (N, 10)
        generators = [stream(seed, index) for index in range(first_index, first_index + len(vectors))]
        self.unet.eval()
        denoiser = CaptionDenoiser(self.unet, vectors, guidance_scale)
        return self.diffusion.sample(denoiser, (len(vectors), *self.latent_shape), sampler=sampler,
                                     num_steps=num_steps, eta=eta, generator=generators, progress=progress,
                                     device=device)

    @torch.no_grad()
    def sample(self, captions, guidance_scale: float = DEFAULT_GUIDANCE, sampler: str = "ddim",
               num_steps: int | None = 50, eta: float | None = None, seed: int = 0, progress: bool = False,
               batch_size: int = 16, first_index: int = 0) -> np.ndarray:
        """uint8 (N, F, H, W, C) clips, one per caption, `batch_size` at a time (memory only)."""
        captions = encode_captions(captions) if not isinstance(captions, torch.Tensor) else captions
        videos = []
        for start in range(0, len(captions), batch_size):
            latents = self.sample_latents(captions[start:start + batch_size], guidance_scale, sampler, num_steps,
                                          eta, seed=seed, progress=progress, first_index=first_index + start)
            videos.append(to_uint8(self.decode(latents)))  # (b, F, H, W, C)
        return np.concatenate(videos)


def caption_counts(num_clips: int, shares: dict[int, float] = DIGIT_SHARES) -> dict[int, int]:
    """How many of `num_clips` training clips show 1, 2 and 3 digits (the rounding rest goes to 2 digits)."""
    counts = {digits: int(num_clips * share) for digits, share in shares.items()}
    counts[2 if 2 in counts else max(counts)] += num_clips - sum(counts.values())
    return counts


def captions_of(labels: Sequence[np.ndarray]) -> torch.Tensor:
    """Digit labels of several sets (each (N_k, K)) -> (sum N_k, 10) counts."""
    return torch.cat([encode_captions(part) for part in labels])
