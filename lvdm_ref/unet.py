"""The factorised space-time denoising UNet of LVDM (He et al. 2022, Sec. 3.2 and LVDM_NOTES.md section 2).

- Every convolution is per frame (a 3x3 Conv2d on each frame = a 1x3x3 Conv3d) and down/up-sampling is
  in space only: time is never resampled, frames talk to each other only through attention.
- Inside, activations are kept as frames, `(b t) c h w`, so convolutions and GroupNorm are 2D and per
  frame; the interface is `(B, c, t, h, w)`. GroupNorm statistics are per frame (the official code pools
  them over the clip), so frames meet only in attention and `"spatial"` is exactly an image model.
- ResBlocks take the timestep embedding as a FiLM scale and shift (as in improved-diffusion / LDM).
- Attention `kind`:
  `"factorized"` spatial self-attention over (h w) in each frame, then temporal self-attention over t
               at each pixel, with learned relative positions for keys and values (Shaw et al. 2018,
               Eq. 3-4, distances clipped to +-max_relative_position); LVDM's choice.
  `"joint"`    one attention over all t*h*w tokens (the ablation the paper found less effective).
  `"spatial"`  no temporal mixing at all: an image model applied frame by frame (the baseline).
  Each attention is residual with its own GroupNorm and a zero-initialised output projection.
- Optional inputs for the hierarchy and conditioning (absent ones cost nothing): a condition-mask channel
  concatenated to the input, a perturbation-level embedding and a class / pooled text embedding, each
  added to the timestep embedding.
- `capture_attention()` records attention weights for the notebooks; when it is off, the forward pass
  only checks one global for None.
"""
from __future__ import annotations

import math
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from lvdm_ref.config import UNetConfig

ATTENTION_KINDS = ("factorized", "joint", "spatial")


# ----------------------------------------------------------------------------- attention capture
class AttentionMaps:
    """Attention weights recorded inside `capture_attention()`; one dict per attention call.

    Each record has `name` (module path), `kind` and `weights` (CPU, softmax rows sum to 1):
    spatial (B, t, heads, h*w, h*w), temporal (B, h, w, heads, t, t), joint (B, heads, t*h*w, t*h*w).
    """

    def __init__(self):
        self.records: list[dict] = []

    def of_kind(self, kind: str) -> list[dict]:
        return [record for record in self.records if record["kind"] == kind]


_RECORDER: AttentionMaps | None = None


@contextmanager
def capture_attention():
    """`with capture_attention() as maps: model(x, t)` then read `maps.records`."""
    global _RECORDER
    previous, _RECORDER = _RECORDER, AttentionMaps()
    try:
        yield _RECORDER
    finally:
        _RECORDER = previous


def _attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Softmax attention of (N, heads, L, d) tensors; the weights only when a recorder is listening."""
    if _RECORDER is None:  # fast path: fused kernel, the (L, L) weights are never materialised
        return F.scaled_dot_product_attention(q, k, v), None
    weights = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1]), dim=-1)  # (N, heads, L, L)
    return weights @ v, weights


def flop_counter() -> "torch.utils.flop_counter.FlopCounterMode":
    """`FlopCounterMode` that also counts the fused CPU attention kernel.

    torch's FLOP table knows the CUDA attention kernels but not `_scaled_dot_product_flash_attention_for_cpu`,
    so on a CPU every attention would silently count as zero FLOPs.
    """
    from torch.utils import flop_counter as fc

    def forward(query, key, value, *args, out_shape=None, **kwargs):  # tensors arrive as their shapes
        return fc.sdpa_flop_count(query, key, value)

    def backward(grad_out, query, key, value, *args, out_shape=None, **kwargs):
        return fc.sdpa_backward_flop_count(grad_out, query, key, value)

    aten, mapping = torch.ops.aten, {}
    for name, formula in (("_scaled_dot_product_flash_attention_for_cpu", forward),
                          ("_scaled_dot_product_flash_attention_for_cpu_backward", backward)):
        if hasattr(aten, name):
            mapping[getattr(aten, name)] = formula
    return fc.FlopCounterMode(display=False, custom_mapping=mapping)


def _record(module: nn.Module, kind: str, weights: torch.Tensor) -> None:
    _RECORDER.records.append({"name": getattr(module, "record_name", ""), "kind": kind,
                              "weights": weights.detach().float().cpu()})


# ----------------------------------------------------------------------------- building blocks
def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10_000.0) -> torch.Tensor:
    """Sinusoidal embedding (B,) -> (B, dim) of (possibly fractional) timesteps (Transformer / DDPM)."""
    half = dim // 2
    frequencies = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    angles = t.float()[:, None] * frequencies[None]  # (B, half)
    embedding = torch.cat([torch.cos(angles), torch.sin(angles)], dim=1)
    return F.pad(embedding, (0, dim % 2))


def group_norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(math.gcd(32, channels), channels)  # 32 groups as in LDM, fewer for narrow layers


def zero_init(module: nn.Module) -> nn.Module:
    for parameter in module.parameters():
        nn.init.zeros_(parameter)
    return module


def frame_conv(in_channels: int, out_channels: int, stride: int = 1) -> nn.Conv2d:
    """A 3x3 convolution of every frame of `(b t) c h w`: LVDM's Conv3d with kernel (1, 3, 3)."""
    return nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1)


class ResBlock(nn.Module):
    """GroupNorm-SiLU-conv, FiLM from the embedding, GroupNorm-SiLU-conv (zero-init), residual."""

    def __init__(self, in_channels: int, out_channels: int, emb_dim: int, dropout: float = 0.0):
        super().__init__()
        self.in_layers = nn.Sequential(group_norm(in_channels), nn.SiLU(), frame_conv(in_channels, out_channels))
        self.emb_layers = nn.Sequential(nn.SiLU(), nn.Linear(emb_dim, 2 * out_channels))
        self.out_norm = group_norm(out_channels)
        self.out_layers = nn.Sequential(nn.SiLU(), nn.Dropout(dropout), zero_init(frame_conv(out_channels, out_channels)))
        self.skip = nn.Identity() if in_channels == out_channels else nn.Conv2d(in_channels, out_channels, 1)

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        """x (b t, C_in, h, w), emb (b t, E) -> (b t, C_out, h, w)."""
        h = self.in_layers(x)  # (b t, C_out, h, w)
        scale, shift = rearrange(self.emb_layers(emb), "n c -> n c 1 1").chunk(2, dim=1)
        h = self.out_layers(self.out_norm(h) * (1 + scale) + shift)  # FiLM scale-shift
        return self.skip(x) + h


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
        return self.conv(F.interpolate(x, scale_factor=2, mode="nearest"))  # (b t, C, 2h, 2w)


class _SelfAttention(nn.Module):
    """Shared parts: GroupNorm, one qkv projection, zero-initialised output projection."""

    def __init__(self, channels: int, num_heads: int):
        super().__init__()
        if channels % num_heads:
            raise ValueError(f"channels ({channels}) must be divisible by num_heads ({num_heads})")
        self.num_heads = num_heads
        self.norm = group_norm(channels)
        self.qkv = nn.Linear(channels, 3 * channels)
        self.proj_out = zero_init(nn.Linear(channels, channels))

    def heads(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(N, L, C) -> q, k, v each (N, heads, L, C / heads)."""
        qkv = rearrange(self.qkv(tokens), "n l (three heads d) -> three n heads l d", three=3, heads=self.num_heads)
        return qkv[0], qkv[1], qkv[2]


class SpatialAttention(_SelfAttention):
    """Self-attention over the h*w positions of each frame."""

    def forward(self, x: torch.Tensor, num_frames: int) -> torch.Tensor:
        """x (b t, C, h, w) -> same."""
        h = x.shape[-2]
        tokens = rearrange(self.norm(x), "n c h w -> n (h w) c")  # (b t, h w, C)
        out, weights = _attend(*self.heads(tokens))  # (b t, heads, h w, d)
        if weights is not None:
            _record(self, "spatial", rearrange(weights, "(b t) n i j -> b t n i j", t=num_frames))
        out = self.proj_out(rearrange(out, "n heads l d -> n l (heads d)"))
        return x + rearrange(out, "n (h w) c -> n c h w", h=h)


class TemporalAttention(_SelfAttention):
    """Self-attention over the t frames at each pixel with relative positions (Shaw et al. 2018).

    e_ij = q_i . (k_j + a^K_ij) / sqrt(d),  z_i = sum_j softmax(e)_ij (v_j + a^V_ij),  a_ij = w_clip(j - i, K).
    The weights are formed explicitly: they are only (t, t) per pixel, and the a^V term needs them,
    which a fused kernel does not return. One a^K, a^V table shared by the heads, as in Shaw et al.
    """

    def __init__(self, channels: int, num_heads: int, max_relative_position: int):
        super().__init__(channels, num_heads)
        self.max_relative_position = max_relative_position
        head_dim = channels // num_heads
        self.relative_key = nn.Parameter(torch.randn(2 * max_relative_position + 1, head_dim) * 0.02)
        self.relative_value = nn.Parameter(torch.randn(2 * max_relative_position + 1, head_dim) * 0.02)

    def relative_index(self, positions: torch.Tensor) -> torch.Tensor:
        """(t,) frame positions -> (t, t) table rows clip(j - i, -K, K) + K."""
        distance = positions[None, :] - positions[:, None]  # [i, j] = j - i
        return distance.clamp(-self.max_relative_position, self.max_relative_position) + self.max_relative_position

    def forward(self, x: torch.Tensor, num_frames: int, frame_positions: torch.Tensor | None = None) -> torch.Tensor:
        """x (b t, C, h, w) -> same; `frame_positions` (t,): the time index of each frame, default 0..t-1."""
        t, h = num_frames, x.shape[-2]
        positions = torch.arange(t, device=x.device) if frame_positions is None else frame_positions.to(x.device)
        index = self.relative_index(positions)
        a_key, a_value = self.relative_key[index], self.relative_value[index]  # (t, t, d)
        tokens = rearrange(self.norm(x), "(b t) c h w -> (b h w) t c", t=t)
        q, k, v = self.heads(tokens)  # (b h w, heads, t, d)
        scores = (q @ k.transpose(-1, -2) + torch.einsum("nhid,ijd->nhij", q, a_key)) / math.sqrt(q.shape[-1])
        weights = torch.softmax(scores, dim=-1)  # (b h w, heads, t, t); Shaw Eq. 4, then Eq. 2
        out = weights @ v + torch.einsum("nhij,ijd->nhid", weights, a_value)  # Shaw Eq. 3
        if _RECORDER is not None:
            _record(self, "temporal", rearrange(weights, "(b h w) n i j -> b h w n i j", h=h, w=x.shape[-1]))
        out = self.proj_out(rearrange(out, "n heads l d -> n l (heads d)"))
        return x + rearrange(out, "(b h w) t c -> (b t) c h w", h=h, w=x.shape[-1])


class JointAttention(_SelfAttention):
    """One self-attention over all t*h*w tokens of a clip.

    Time position comes from a sinusoidal frame embedding, projected by a learned linear layer and added to
    the tokens: a relative term as in `TemporalAttention` would need (t h w)^2 tables, the very cost joint
    attention is measured for.
    """

    def __init__(self, channels: int, num_heads: int):
        super().__init__(channels, num_heads)
        self.frame_embedding = nn.Linear(channels, channels)

    def forward(self, x: torch.Tensor, num_frames: int) -> torch.Tensor:
        """x (b t, C, h, w) -> same."""
        t, c, h = num_frames, x.shape[1], x.shape[-2]
        frames = timestep_embedding(torch.arange(t, device=x.device), c).to(x.dtype)
        frames = self.frame_embedding(frames)  # (t, C)
        tokens = rearrange(self.norm(x), "(b t) c h w -> b t (h w) c", t=t) + frames[None, :, None]
        out, weights = _attend(*self.heads(rearrange(tokens, "b t l c -> b (t l) c")))  # (b, heads, t h w, d)
        if weights is not None:
            _record(self, "joint", weights)
        out = self.proj_out(rearrange(out, "n heads l d -> n l (heads d)"))
        return x + rearrange(out, "b (t h w) c -> (b t) c h w", t=t, h=h)


class FactorizedAttention(nn.Module):
    """LVDM's attention block: spatial self-attention in each frame, then temporal at each pixel."""

    def __init__(self, channels: int, num_heads: int, max_relative_position: int):
        super().__init__()
        self.spatial = SpatialAttention(channels, num_heads)
        self.temporal = TemporalAttention(channels, num_heads, max_relative_position)

    def forward(self, x: torch.Tensor, num_frames: int) -> torch.Tensor:
        return self.temporal(self.spatial(x, num_frames), num_frames)


def attention_block(kind: str, channels: int, config: UNetConfig) -> nn.Module:
    if kind == "spatial":
        return SpatialAttention(channels, config.num_heads)
    if kind == "factorized":
        return FactorizedAttention(channels, config.num_heads, config.max_relative_position)
    if kind == "joint":
        return JointAttention(channels, config.num_heads)
    raise ValueError(f"attention must be one of {ATTENTION_KINDS}, got {kind!r}")


class EmbedSequential(nn.ModuleList):
    """Apply layers in order; ResBlocks also get the embedding, attention the number of frames."""

    def forward(self, x: torch.Tensor, emb: torch.Tensor, num_frames: int) -> torch.Tensor:
        for layer in self:
            if isinstance(layer, ResBlock):
                x = layer(x, emb)
            elif isinstance(layer, (Downsample, Upsample)):
                x = layer(x)
            else:
                x = layer(x, num_frames)
        return x


# ----------------------------------------------------------------------------- the UNet
class UNet(nn.Module):
    """eps(z_t, t [, mask, s, class, context]) for latents (B, c, t, h, w); any t, h and w divisible by 2^levels."""

    def __init__(self, config: UNetConfig | None = None):
        super().__init__()
        config = config or UNetConfig()
        if config.attention not in ATTENTION_KINDS:
            raise ValueError(f"attention must be one of {ATTENTION_KINDS}, got {config.attention!r}")
        self.config = config
        channels = config.model_channels
        emb_dim = 4 * channels
        self.time_embed = nn.Sequential(nn.Linear(channels, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        self.perturbation_embed = (nn.Sequential(nn.Linear(channels, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
                                   if config.use_perturbation_embedding else None)  # LVDM Sec. 3.3: embed s
        self.class_embed = nn.Embedding(config.num_classes, emb_dim) if config.num_classes else None
        self.context_embed = nn.Linear(config.context_dim, emb_dim) if config.context_dim else None

        in_channels = config.in_channels + (1 if config.use_mask else 0)  # + the condition-mask channel
        self.input_conv = frame_conv(in_channels, channels)
        self.down, skip_channels = nn.ModuleList(), [channels]
        for level, mult in enumerate(config.channel_mult):
            for _ in range(config.num_res_blocks):
                layers = [ResBlock(channels, config.model_channels * mult, emb_dim, config.dropout)]
                channels = config.model_channels * mult
                if level in config.attention_levels:
                    layers.append(attention_block(config.attention, channels, config))
                self.down.append(EmbedSequential(layers))
                skip_channels.append(channels)
            if level < len(config.channel_mult) - 1:
                self.down.append(EmbedSequential([Downsample(channels)]))
                skip_channels.append(channels)
        self.middle = EmbedSequential([ResBlock(channels, channels, emb_dim, config.dropout),
                                       attention_block(config.attention, channels, config),
                                       ResBlock(channels, channels, emb_dim, config.dropout)])
        self.up = nn.ModuleList()
        for level, mult in reversed(list(enumerate(config.channel_mult))):
            for index in range(config.num_res_blocks + 1):
                layers = [ResBlock(channels + skip_channels.pop(), config.model_channels * mult, emb_dim,
                                   config.dropout)]
                channels = config.model_channels * mult
                if level in config.attention_levels:
                    layers.append(attention_block(config.attention, channels, config))
                if level > 0 and index == config.num_res_blocks:
                    layers.append(Upsample(channels))
                self.up.append(EmbedSequential(layers))
        self.out = nn.Sequential(group_norm(channels), nn.SiLU(), zero_init(frame_conv(channels, config.out_channels)))
        for name, module in self.named_modules():  # names for captured attention maps
            if isinstance(module, _SelfAttention):
                module.record_name = name

    def forward(self, x: torch.Tensor, t: torch.Tensor, mask: torch.Tensor | None = None,
                perturbation_level: torch.Tensor | None = None, class_labels: torch.Tensor | None = None,
                context: torch.Tensor | None = None) -> torch.Tensor:
        """x (B, c, t, h, w), t (B,) -> (B, out_channels, t, h, w).

        mask (B, 1, t, h, w): 1 where a frame is given (use_mask; None = all zeros = nothing given).
        perturbation_level (B,): the noise level s of the given latents (None adds nothing, unlike s = 0).
        class_labels (B,) long; context (B, context_dim), e.g. a pooled text embedding.
        """
        factor = 2 ** (len(self.config.channel_mult) - 1)
        if x.shape[-1] % factor or x.shape[-2] % factor:
            raise ValueError(f"height and width must be divisible by {factor}, got {tuple(x.shape[-2:])}")
        emb = self.time_embed(timestep_embedding(t, self.config.model_channels))  # (B, 4 C)
        for name, value, layer in (("perturbation_level", perturbation_level, self.perturbation_embed),
                                   ("class_labels", class_labels, self.class_embed),
                                   ("context", context, self.context_embed)):
            if value is None:
                continue
            if layer is None:
                raise ValueError(f"{name} given but the UNetConfig does not enable it "
                                 f"(use_perturbation_embedding / num_classes / context_dim)")
            if name == "perturbation_level":
                value = timestep_embedding(value, self.config.model_channels)
            emb = emb + layer(value)
        if self.config.use_mask:
            mask = torch.zeros_like(x[:, :1]) if mask is None else mask.to(x.dtype)
            x = torch.cat([x, mask], dim=1)  # (B, c + 1, t, h, w)
        elif mask is not None:
            raise ValueError("mask given but UNetConfig.use_mask is False")

        num_frames = x.shape[2]
        emb = emb.repeat_interleave(num_frames, dim=0)  # (B t, 4 C): the same embedding for every frame
        h = self.input_conv(rearrange(x, "b c t h w -> (b t) c h w"))  # (B t, C, h, w)
        skips = [h]
        for block in self.down:
            h = block(h, emb, num_frames)
            skips.append(h)
        h = self.middle(h, emb, num_frames)
        for block in self.up:
            h = block(torch.cat([h, skips.pop()], dim=1), emb, num_frames)  # (B t, C + C_skip, h', w')
        return rearrange(self.out(h), "(b t) c h w -> b c t h w", t=num_frames)
