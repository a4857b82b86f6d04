"""Pixel-space video diffusion: the baseline of LVDM's latent-vs-pixel ablation (Sec. 4, Table 4).

The same UNet class and the same diffusion (schedule, parameterisation, loss, sampler) as the short
LVDM, run on the clips themselves, (1, 16, 64, 64) on Moving MNIST, instead of on the autoencoder's
(4, 4, 16, 16) latents. The paper's claim is about compute: at an equal training budget, diffusion in
the compressed space wins, because each step is far cheaper and the model need not spend capacity on
pixel detail the autoencoder already handles.

The pixel UNet is the latent UNet with two more levels in front (`pixel_unet_config`): its levels run
at 64, 32, 16, 8 and 4 pixels, so attention sits at 8x8 and 4x4 with 128 channels, as in the latent
model, and the 16x16 level has the latent model's 64 channels at its first level. The two new levels
(64 and 32 pixels) are narrow (16 and 32 channels) so that a step costs ~15x a latent step, not ~45x
(measured at batch 16, one CPU thread: 12 s against 0.8 s).

`PixelSpace` stands where the autoencoder stands in `LatentVideoDiffusion`: encode and decode are the
identity, so sampling, checkpoints and the evaluation code are shared with the latent model. The
training recipe is `recipes.train_pixel_model`.
"""
from __future__ import annotations

import dataclasses

import torch
from torch import nn

from lvdm_ref.config import Preset, UNetConfig


class PixelSpace(nn.Module):
    """The identity 'autoencoder': a clip (B, C, F, H, W) in [-1, 1] is its own latent."""

    def __init__(self, channels: int = 1):
        super().__init__()
        self.channels = channels
        self.register_buffer("latent_scale", torch.ones(()))  # where the samplers look for the device
        self.file_sha256 = None

    def encode(self, video: torch.Tensor) -> torch.Tensor:
        return video

    def decode(self, latents: torch.Tensor, chunk_size: int | None = None) -> torch.Tensor:
        return latents


def pixel_unet_config(latent: UNetConfig, extra_levels: int = 2) -> UNetConfig:
    """The latent UNet with `extra_levels` levels in front: the first level gets 1/2**extra_levels of the
    latent model's width, so every later level has the latent model's width at the same resolution."""
    factor = 2 ** extra_levels
    if latent.model_channels % factor:
        raise ValueError(f"model_channels {latent.model_channels} is not divisible by {factor}")
    channel_mult = tuple(2 ** i for i in range(extra_levels)) + tuple(m * factor for m in latent.channel_mult)
    return dataclasses.replace(latent, model_channels=latent.model_channels // factor, channel_mult=channel_mult,
                               attention_levels=tuple(level + extra_levels for level in latent.attention_levels))


def pixel_preset(preset: Preset) -> Preset:
    """The preset with its UNet made a pixel UNet; diffusion and training unchanged."""
    return dataclasses.replace(preset, unet=pixel_unet_config(preset.unet))

