"""The factorised space-time denoising UNet of LVDM (He et al. 2022, Sec. 3.2; docs/ARCHITECTURE.md).

- Every convolution is per frame (a 3x3 Conv2d on each frame = a 1x3x3 Conv3d) and down/up-sampling is
  in space only: time is never resampled, frames talk to each other only through attention.
- Inside, activations are kept as frames, `(b f) c h w`, so convolutions and GroupNorm are 2D and per
  frame; the interface is `(B, c, f, h, w)` (f latent frames; `t` is always the diffusion timestep).
  GroupNorm statistics are per frame by default (the official code pools them over the clip), so frames
  meet only in attention and `"spatial"` is exactly an image model.
- Two options beyond LVDM, off by default, mix frames where LVDM's UNet does not (the stability study,
  benchmarks/stability_study.py, measures whether they help a generator keep its digits):
  `temporal_levels`: temporal attention alone (no spatial attention) after each ResBlock of those levels,
               e.g. (0,) at the full latent resolution, where spatial attention would cost (h w)^2;
  `temporal_conv`: a residual, zero-initialised 3-tap convolution over time after every ResBlock (the
               "pseudo-3D" convolution of later video UNets).
- Two options reproduce the official code (its released Sky/TaiChi weights, `official/`), defaults unchanged:
  `norm="clip"`: ResBlock and output GroupNorm statistics pooled over the whole clip, (C/G, f, h, w), as the
               official 5D GroupNorm does; frames then interact through the statistics too, not only in
               attention. The paper's intent is the factorised design (frames meet in temporal attention);
               per-frame statistics ("frame") keep it exact.
  `temporal_attention="lvdm"`: the official temporal attention: its GroupNorm per pixel over (C/G, f), and a
               relative-key term computed transposed, logit_ij += q_j . a^K_clip(i-j) / d^(1/4), where Shaw et al.
               (Eq. 4, the paper's citation and the default "shaw") have q_i . a^K_clip(j-i) / sqrt(d). The value
               term is Shaw's in both.
- ResBlocks take the timestep embedding as a FiLM scale and shift (as in improved-diffusion / LDM).
- Attention `kind`:
  `"factorized"` spatial self-attention over (h w) in each frame, then temporal self-attention over the f
               frames at each pixel, with learned relative positions for keys and values (Shaw et al. 2018,
               Eq. 3-4, distances clipped to +-max_relative_position); LVDM's choice.
  `"joint"`    one attention over all f*h*w tokens (the ablation the paper found less effective).
  `"spatial"`  no temporal mixing at all: an image model applied frame by frame (the baseline).
  Each attention is residual with its own GroupNorm and a zero-initialised output projection.
- Optional inputs (absent ones cost nothing), each enabled by a `UNetConfig` flag: for the hierarchy
  (`hierarchy.py`), a condition-mask channel concatenated to the input and a perturbation-level
  embedding added to the timestep embedding; an enabled perturbation embedding must be given its s,
  and the mask column of the input conv and the last layer of the s embedding start at zero (warm
  starts). `num_classes` / `context_dim` add a class or a pooled text embedding the same way: the inputs
  of class-conditional UCF-101 (no recipe uses it yet) and of text-to-video (LVDM Sec. 3.4;
  `text_to_video.py` feeds captions through `context_dim`).
- Each attention layer can also form its softmax weights explicitly (`attention_weights`), which
  `viz.capture_attention(model)` records with forward hooks; the forward pass itself uses the fused
  kernel wherever it can. FLOP counting and attention timing live in `profiling.py`.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from lvdm_ref.attention import (  # noqa: F401  (the attention layers live in attention.py; re-exported here)
    ATTENTION_KINDS, TEMPORAL_ATTENTIONS, FactorizedAttention, JointAttention, SelfAttention, SpatialAttention,
    TemporalAttention, attention_block, group_norm, level_attention, relative_index, softmax_weights, zero_init)
from lvdm_ref.config import UNetConfig

NORMS = ("frame", "clip")  # GroupNorm statistics of ResBlocks and the output layer: per frame, or over the clip


# ----------------------------------------------------------------------------- building blocks
def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10_000.0) -> torch.Tensor:
    """Sinusoidal embedding (B,) -> (B, dim) of (possibly fractional) timesteps (Transformer / DDPM)."""
    half = dim // 2
    frequencies = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    angles = t.float()[:, None] * frequencies[None]  # (B, half)
    embedding = torch.cat([torch.cos(angles), torch.sin(angles)], dim=1)
    return F.pad(embedding, (0, dim % 2))


def frame_group_norm(norm: nn.GroupNorm, x: torch.Tensor, num_frames: int, over_clip: bool) -> torch.Tensor:
    """GroupNorm of frames (b f, C, h, w) with statistics per frame, or pooled over each clip's f frames."""
    if not over_clip:
        return norm(x)
    clip = rearrange(x, "(b f) c h w -> b c f h w", f=num_frames)  # a 5D GroupNorm pools over (C/G, f, h, w)
    return rearrange(norm(clip), "b c f h w -> (b f) c h w")


def frame_conv(in_channels: int, out_channels: int, stride: int = 1) -> nn.Conv2d:
    """A 3x3 convolution of every frame of `(b f) c h w`: LVDM's Conv3d with kernel (1, 3, 3)."""
    return nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1)


class ResBlock(nn.Module):
    """GroupNorm-SiLU-conv, FiLM from the embedding, GroupNorm-SiLU-conv (zero-init), residual; optionally
    followed by a `TemporalConv` (beyond LVDM). `clip_norm`: GroupNorm statistics over the clip (official)."""

    def __init__(self, in_channels: int, out_channels: int, emb_dim: int, dropout: float = 0.0,
                 temporal_conv: bool = False, clip_norm: bool = False):
        super().__init__()
        self.clip_norm = clip_norm
        self.in_layers = nn.Sequential(group_norm(in_channels), nn.SiLU(), frame_conv(in_channels, out_channels))
        self.emb_layers = nn.Sequential(nn.SiLU(), nn.Linear(emb_dim, 2 * out_channels))
        self.out_norm = group_norm(out_channels)
        self.out_layers = nn.Sequential(nn.SiLU(), nn.Dropout(dropout), zero_init(frame_conv(out_channels, out_channels)))
        self.skip = nn.Identity() if in_channels == out_channels else nn.Conv2d(in_channels, out_channels, 1)
        self.temporal = TemporalConv(out_channels) if temporal_conv else None

    def forward(self, x: torch.Tensor, emb: torch.Tensor, num_frames: int = 1) -> torch.Tensor:
        """x (b f, C_in, h, w), emb (b f, E) -> (b f, C_out, h, w)."""
        norm, activation, conv = self.in_layers
        hidden = conv(activation(frame_group_norm(norm, x, num_frames, self.clip_norm)))  # (b f, C_out, h, w)
        scale, shift = rearrange(self.emb_layers(emb), "n c -> n c 1 1").chunk(2, dim=1)
        hidden = frame_group_norm(self.out_norm, hidden, num_frames, self.clip_norm)
        hidden = self.out_layers(hidden * (1 + scale) + shift)  # FiLM scale-shift
        out = self.skip(x) + hidden
        return out if self.temporal is None else self.temporal(out, num_frames)


class TemporalConv(nn.Module):
    """A residual 3-tap convolution over time at each pixel (GroupNorm-SiLU-conv, zero-initialised): the
    "pseudo-3D" convolution of video UNets after LVDM (Make-A-Video, VideoLDM). Beyond LVDM, whose UNet
    mixes frames only in attention; a `UNetConfig.temporal_conv` option, off by default."""

    def __init__(self, channels: int):
        super().__init__()
        self.norm = group_norm(channels)
        self.conv = zero_init(nn.Conv1d(channels, channels, 3, padding=1))

    def forward(self, x: torch.Tensor, num_frames: int) -> torch.Tensor:
        """x (b f, C, h, w) -> same; frames past the ends count as zeros."""
        height, width = x.shape[-2:]
        series = rearrange(F.silu(self.norm(x)), "(b f) c h w -> (b h w) c f", f=num_frames)
        out = rearrange(self.conv(series), "(b h w) c f -> (b f) c h w", h=height, w=width)
        return x + out


class Downsample(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv = frame_conv(channels, channels, stride=2)  # space only: (h, w) -> (h/2, w/2) per frame

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class Upsample(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv = frame_conv(channels, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2, mode="nearest"))  # (b f, C, 2h, 2w)


class EmbedSequential(nn.ModuleList):
    """Apply layers in order; ResBlocks also get the embedding, attention the number of frames."""

    def forward(self, x: torch.Tensor, emb: torch.Tensor, num_frames: int) -> torch.Tensor:
        for layer in self:
            if isinstance(layer, ResBlock):
                x = layer(x, emb, num_frames)
            elif isinstance(layer, (Downsample, Upsample)):
                x = layer(x)
            else:
                x = layer(x, num_frames)
        return x


# ----------------------------------------------------------------------------- the UNet
class UNet(nn.Module):
    """eps(z_t, t [, mask, s, class, context]) for latents (B, c, f, h, w); any f, and h and w divisible by 2^levels."""

    def __init__(self, config: UNetConfig | None = None):
        super().__init__()
        config = config or UNetConfig()
        if config.attention not in ATTENTION_KINDS:
            raise ValueError(f"attention must be one of {ATTENTION_KINDS}, got {config.attention!r}")
        if config.norm not in NORMS:
            raise ValueError(f"norm must be one of {NORMS}, got {config.norm!r}")
        if config.temporal_attention not in TEMPORAL_ATTENTIONS:
            raise ValueError(f"temporal_attention must be one of {TEMPORAL_ATTENTIONS}, "
                             f"got {config.temporal_attention!r}")
        self.config = config
        channels = config.model_channels
        emb_dim = 4 * channels
        self.time_embed = nn.Sequential(nn.Linear(channels, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        # LVDM Sec. 3.3: embed s. Its last layer and the mask column of the input conv start at zero, so a
        # prediction/interpolation model initialised from a short model's weights computes the same function.
        self.perturbation_embed = (nn.Sequential(nn.Linear(channels, emb_dim), nn.SiLU(),
                                                 zero_init(nn.Linear(emb_dim, emb_dim)))
                                   if config.use_perturbation_embedding else None)
        # Class / pooled-text conditioning: the caption model (text_to_video.py) uses the context input; the class
        # input waits for class-conditional UCF-101. Either model is this class with one more input.
        self.class_embed = nn.Embedding(config.num_classes, emb_dim) if config.num_classes else None
        self.context_embed = nn.Linear(config.context_dim, emb_dim) if config.context_dim else None

        clip_norm = config.norm == "clip"  # the official code's GroupNorm statistics (module docstring)
        in_channels = config.in_channels + (1 if config.use_mask else 0)  # + the condition-mask channel
        self.input_conv = frame_conv(in_channels, channels)
        if config.use_mask:
            with torch.no_grad():
                self.input_conv.weight[:, config.in_channels:] = 0  # the mask column
        self.down, skip_channels = nn.ModuleList(), [channels]
        for level, mult in enumerate(config.channel_mult):
            for _ in range(config.num_res_blocks):
                layers = [ResBlock(channels, config.model_channels * mult, emb_dim, config.dropout, config.temporal_conv,
                                   clip_norm)]
                channels = config.model_channels * mult
                layers += level_attention(level, channels, config)
                self.down.append(EmbedSequential(layers))
                skip_channels.append(channels)
            if level < len(config.channel_mult) - 1:
                self.down.append(EmbedSequential([Downsample(channels)]))
                skip_channels.append(channels)
        self.middle = EmbedSequential([
            ResBlock(channels, channels, emb_dim, config.dropout, config.temporal_conv, clip_norm),
            attention_block(config.attention, channels, config),
            ResBlock(channels, channels, emb_dim, config.dropout, config.temporal_conv, clip_norm)])
        self.up = nn.ModuleList()
        for level, mult in reversed(list(enumerate(config.channel_mult))):
            for index in range(config.num_res_blocks + 1):
                layers = [ResBlock(channels + skip_channels.pop(), config.model_channels * mult, emb_dim,
                                   config.dropout, config.temporal_conv, clip_norm)]
                channels = config.model_channels * mult
                layers += level_attention(level, channels, config)
                if level > 0 and index == config.num_res_blocks:
                    layers.append(Upsample(channels))
                self.up.append(EmbedSequential(layers))
        self.out = nn.Sequential(group_norm(channels), nn.SiLU(), zero_init(frame_conv(channels, config.out_channels)))

    def forward(self, x: torch.Tensor, t: torch.Tensor, mask: torch.Tensor | None = None,
                perturbation_level: torch.Tensor | None = None, class_labels: torch.Tensor | None = None,
                context: torch.Tensor | None = None) -> torch.Tensor:
        """x (B, c, f, h, w), t (B,) diffusion timesteps -> (B, out_channels, f, h, w).

        mask (B, 1, f, 1, 1) or (B, 1, f, h, w): 1 where a latent frame is given (use_mask; None = nothing given).
        perturbation_level (B,): the noise level s of the given latents; required when the model embeds it.
        class_labels (B,) long; context (B, context_dim), e.g. a pooled text embedding (num_classes /
        context_dim: for class-conditional and text-to-video models; text_to_video.py trains the latter).
        """
        cfg, channels = self.config, self.config.model_channels
        batch, _, num_frames, height, width = x.shape
        factor = 2 ** (len(cfg.channel_mult) - 1)
        if height % factor or width % factor:
            raise ValueError(f"height and width must be divisible by {factor}, got {(height, width)}")
        _check_input("perturbation_level", perturbation_level, cfg.use_perturbation_embedding,
                     "use_perturbation_embedding", required=True)
        _check_input("class_labels", class_labels, cfg.num_classes, "num_classes")
        _check_input("context", context, cfg.context_dim, "context_dim")
        _check_input("mask", mask, cfg.use_mask, "use_mask")

        emb = self.time_embed(timestep_embedding(t, channels).to(x.dtype))  # (B, 4 C): DDPM's timestep embedding
        if self.perturbation_embed is not None:  # LVDM Sec. 3.3: the perturbation level s, added like t
            emb = emb + self.perturbation_embed(timestep_embedding(perturbation_level, channels).to(x.dtype))
        if class_labels is not None:  # class-conditional generation (LVDM Sec. 4, UCF-101)
            emb = emb + self.class_embed(class_labels)
        if context is not None:  # a pooled text embedding (LVDM Sec. 3.4, text-to-video)
            emb = emb + self.context_embed(context)
        if cfg.use_mask:  # LVDM Sec. 3.3: the condition mask, one more input channel
            mask = torch.zeros_like(x[:, :1]) if mask is None else _frame_mask(mask, x)
            x = torch.cat([x, mask], dim=1)  # (B, c + 1, f, h, w)

        emb = emb.repeat_interleave(num_frames, dim=0)  # (B f, 4 C): the same embedding for every frame
        hidden = self.input_conv(rearrange(x, "b c f h w -> (b f) c h w"))  # (B f, C, h, w)
        skips = [hidden]
        for block in self.down:
            hidden = block(hidden, emb, num_frames)
            skips.append(hidden)
        hidden = self.middle(hidden, emb, num_frames)
        for block in self.up:
            hidden = block(torch.cat([hidden, skips.pop()], dim=1), emb, num_frames)  # (B f, C + C_skip, h', w')
        norm, activation, conv = self.out
        out = conv(activation(frame_group_norm(norm, hidden, num_frames, cfg.norm == "clip")))  # (B f, c, h, w)
        return rearrange(out, "(b f) c h w -> b c f h w", f=num_frames)


def _check_input(name: str, value, enabled, flag: str, required: bool = False) -> None:
    """An optional input must match its UNetConfig flag: given only when enabled (and, if required, always)."""
    if value is not None and not enabled:
        raise ValueError(f"{name} given but UNetConfig.{flag} does not enable it")
    if value is None and enabled and required:
        raise ValueError(f"{name} is required: this UNet embeds it (UNetConfig.{flag}); pass a (B,) tensor "
                         f"(0 for clean conditions), or build the model without {flag}")


def _frame_mask(mask: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """A (B, 1, f, 1, 1) per-frame or (B, 1, f, h, w) mask, broadcast to x's (B, 1, f, h, w)."""
    batch, _, num_frames, height, width = x.shape
    if mask.ndim != 5 or mask.shape[1] != 1 or mask.shape[2] != num_frames or mask.shape[0] not in (1, batch):
        raise ValueError(f"mask must be (B, 1, f, 1, 1) or (B, 1, f, h, w) with B={batch}, f={num_frames}; "
                         f"got {tuple(mask.shape)}")
    return mask.to(x.dtype).expand(batch, 1, num_frames, height, width)
