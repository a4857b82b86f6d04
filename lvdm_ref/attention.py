"""The UNet's attention layers (LVDM Sec. 3.2): spatial, temporal, joint and factorised self-attention.

`"factorized"` (LVDM's): spatial self-attention over the h*w positions of each frame, then temporal
self-attention over the f frames at each pixel with learned relative positions (Shaw et al. 2018);
`"joint"`: one attention over all f*h*w tokens of a clip with a relative temporal bias (the paper's
ablation); `"spatial"`: no temporal mixing (an image model). Layers take frames `(b f, C, h, w)` and the
number of frames, and are residual with a zero-initialised output projection, so a fresh block is the
identity. `unet.py` places them (`attention_block`, `level_attention`) and says what each option means.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from lvdm_ref.config import UNetConfig

ATTENTION_KINDS = ("factorized", "joint", "spatial")
TEMPORAL_ATTENTIONS = ("shaw", "lvdm")  # Shaw et al.'s relative positions, or the official code's (unet.py)


# ----------------------------------------------------------------------------- attention weights
def softmax_weights(q: torch.Tensor, k: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """softmax(q k^T / sqrt(d) + bias) of (N, heads, L, d) queries and keys: (N, heads, L, L), rows sum to 1.

    What the fused `F.scaled_dot_product_attention` applies without forming it; `attention_weights` of
    each layer uses it to show the weights (tests/test_unet.py checks the two agree).
    """
    scores = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])  # (N, heads, L, L)
    return torch.softmax(scores if bias is None else scores + bias, dim=-1)


def relative_index(positions: torch.Tensor, max_distance: int) -> torch.Tensor:
    """(f,) frame positions -> (f, f) table rows clip(j - i, -K, K) + K."""
    distance = positions[None, :] - positions[:, None]  # [i, j] = j - i
    return distance.clamp(-max_distance, max_distance) + max_distance


# ----------------------------------------------------------------------------- layers
def group_norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(math.gcd(32, channels), channels)  # 32 groups as in LDM, fewer for narrow layers


def zero_init(module: nn.Module) -> nn.Module:
    for parameter in module.parameters():
        nn.init.zeros_(parameter)
    return module


class SelfAttention(nn.Module):
    """Shared parts: GroupNorm, one qkv projection, zero-initialised output projection.

    Each kind also has `attention_weights(x, num_frames, ...)`: the softmax weights its forward pass
    applies to the same input, formed explicitly (for `viz.capture_attention`; `kind` names the layout).
    """
    kind = ""

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

    def attention_weights(self, x: torch.Tensor, num_frames: int, **kwargs) -> torch.Tensor:
        raise NotImplementedError


class SpatialAttention(SelfAttention):
    """Self-attention over the h*w positions of each frame."""
    kind = "spatial"

    def forward(self, x: torch.Tensor, num_frames: int) -> torch.Tensor:
        """x (b f, C, h, w) -> same."""
        height = x.shape[-2]
        tokens = rearrange(self.norm(x), "n c h w -> n (h w) c")  # (b f, h w, C)
        out = F.scaled_dot_product_attention(*self.heads(tokens))  # (b f, heads, h w, d), fused
        out = self.proj_out(rearrange(out, "n heads l d -> n l (heads d)"))
        return x + rearrange(out, "n (h w) c -> n c h w", h=height)

    def attention_weights(self, x: torch.Tensor, num_frames: int) -> torch.Tensor:
        """(B, f, heads, h*w, h*w)."""
        q, k, _ = self.heads(rearrange(self.norm(x), "n c h w -> n (h w) c"))
        return rearrange(softmax_weights(q, k), "(b f) n i j -> b f n i j", f=num_frames)


class TemporalAttention(SelfAttention):
    """Self-attention over the f frames at each pixel with relative positions (Shaw et al. 2018).

    e_ij = q_i . (k_j + a^K_ij) / sqrt(d),  z_i = sum_j softmax(e)_ij (v_j + a^V_ij),  a_ij = w_clip(j - i, K).
    The weights are formed explicitly: they are only (f, f) per pixel, and the a^V term needs them,
    which a fused kernel does not return. One a^K, a^V table shared by the heads, as in Shaw et al.
    `variant="lvdm"` is the official code's (module docstring): GroupNorm per pixel over time and the
    transposed key term e_ij += q_j . a^K_clip(i-j) / d^(1/4).
    """
    kind = "temporal"

    def __init__(self, channels: int, num_heads: int, max_relative_position: int, variant: str = "shaw"):
        super().__init__(channels, num_heads)
        if variant not in TEMPORAL_ATTENTIONS:
            raise ValueError(f"temporal_attention must be one of {TEMPORAL_ATTENTIONS}, got {variant!r}")
        self.variant = variant
        self.max_relative_position = max_relative_position
        head_dim = channels // num_heads
        self.relative_key = nn.Parameter(torch.randn(2 * max_relative_position + 1, head_dim) * 0.02)
        self.relative_value = nn.Parameter(torch.randn(2 * max_relative_position + 1, head_dim) * 0.02)

    def _attend(self, x: torch.Tensor, num_frames: int,
                frame_positions: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """x (b f, C, h, w) -> weights (b h w, heads, f, f) and output (b h w, heads, f, d)."""
        positions = (torch.arange(num_frames, device=x.device) if frame_positions is None
                     else frame_positions.to(x.device))
        index = relative_index(positions, self.max_relative_position)
        a_key, a_value = self.relative_key[index], self.relative_value[index]  # (f, f, d): [i, j] = a_clip(j - i)
        head_dim = self.qkv.in_features // self.num_heads
        if self.variant == "shaw":
            tokens = rearrange(self.norm(x), "(b f) c h w -> (b h w) f c", f=num_frames)
            q, k, v = self.heads(tokens)  # (b h w, heads, f, d)
            scores = (q @ k.transpose(-1, -2) + torch.einsum("nhid,ijd->nhij", q, a_key)) / math.sqrt(head_dim)  # Eq. 4
        else:  # the official code: norm over (C/G, f) at each pixel; q_j . a_clip(i - j), scaled by d^-1/4
            series = rearrange(x, "(b f) c h w -> (b h w) c f", f=num_frames)
            q, k, v = self.heads(rearrange(self.norm(series), "n c f -> n f c"))  # (b h w, heads, f, d)
            scores = (q @ k.transpose(-1, -2) / math.sqrt(head_dim)
                      + torch.einsum("nhjd,jid->nhij", q, a_key) / head_dim ** 0.25)
        weights = torch.softmax(scores, dim=-1)  # (b h w, heads, f, f); Shaw Eq. 2
        return weights, weights @ v + torch.einsum("nhij,ijd->nhid", weights, a_value)  # Shaw Eq. 3

    def forward(self, x: torch.Tensor, num_frames: int, frame_positions: torch.Tensor | None = None) -> torch.Tensor:
        """x (b f, C, h, w) -> same; `frame_positions` (f,): the time index of each frame, default 0..f-1."""
        height, width = x.shape[-2:]
        _, out = self._attend(x, num_frames, frame_positions)
        out = self.proj_out(rearrange(out, "n heads l d -> n l (heads d)"))
        return x + rearrange(out, "(b h w) f c -> (b f) c h w", h=height, w=width)

    def attention_weights(self, x: torch.Tensor, num_frames: int,
                          frame_positions: torch.Tensor | None = None) -> torch.Tensor:
        """(B, h, w, heads, f, f)."""
        height, width = x.shape[-2:]
        weights, _ = self._attend(x, num_frames, frame_positions)
        return rearrange(weights, "(b h w) n i j -> b h w n i j", h=height, w=width)


class JointAttention(SelfAttention):
    """One self-attention over all f*h*w tokens of a clip, with a learned relative temporal bias.

    Each head adds b_head[clip(j_frame - i_frame, -K, K)] to the logit of every query-key pair (as
    lucidrains' video UNet does), passed to the fused kernel as an additive mask: like the factorised
    block, time position is relative and learned, so the factorisation is the difference that remains
    (and Shaw's key/value vectors there against a scalar bias per head here). The bias starts at zero.
    """
    kind = "joint"

    def __init__(self, channels: int, num_heads: int, max_relative_position: int = 16):
        super().__init__(channels, num_heads)
        self.max_relative_position = max_relative_position
        self.relative_bias = nn.Parameter(torch.zeros(2 * max_relative_position + 1, num_heads))

    def temporal_bias(self, num_frames: int, tokens_per_frame: int, device: torch.device) -> torch.Tensor:
        """(heads, L, L) additive logits, L = f * h * w, constant within each pair of frames."""
        index = relative_index(torch.arange(num_frames, device=device), self.max_relative_position)
        bias = rearrange(self.relative_bias[index], "i j n -> n i j")  # (heads, f, f)
        return bias.repeat_interleave(tokens_per_frame, 1).repeat_interleave(tokens_per_frame, 2)

    def forward(self, x: torch.Tensor, num_frames: int) -> torch.Tensor:
        """x (b f, C, h, w) -> same."""
        height, width = x.shape[-2:]
        tokens = rearrange(self.norm(x), "(b f) c h w -> b (f h w) c", f=num_frames)
        bias = self.temporal_bias(num_frames, height * width, x.device).to(tokens.dtype)  # (heads, L, L)
        out = F.scaled_dot_product_attention(*self.heads(tokens), attn_mask=bias)  # (b, heads, f h w, d), fused
        out = self.proj_out(rearrange(out, "n heads l d -> n l (heads d)"))
        return x + rearrange(out, "b (f h w) c -> (b f) c h w", f=num_frames, h=height)

    def attention_weights(self, x: torch.Tensor, num_frames: int) -> torch.Tensor:
        """(B, heads, f*h*w, f*h*w)."""
        height, width = x.shape[-2:]
        q, k, _ = self.heads(rearrange(self.norm(x), "(b f) c h w -> b (f h w) c", f=num_frames))
        return softmax_weights(q, k, self.temporal_bias(num_frames, height * width, x.device).to(q.dtype))


class FactorizedAttention(nn.Module):
    """LVDM's attention block: spatial self-attention in each frame, then temporal at each pixel."""

    def __init__(self, channels: int, num_heads: int, max_relative_position: int, temporal_attention: str = "shaw"):
        super().__init__()
        self.spatial = SpatialAttention(channels, num_heads)
        self.temporal = TemporalAttention(channels, num_heads, max_relative_position, temporal_attention)

    def forward(self, x: torch.Tensor, num_frames: int) -> torch.Tensor:
        return self.temporal(self.spatial(x, num_frames), num_frames)


def level_attention(level: int, channels: int, config: UNetConfig) -> list[nn.Module]:
    """The attention layer after each ResBlock of `level`: the configured kind at `attention_levels`, temporal
    attention alone at `temporal_levels` (beyond LVDM: mixes frames at resolutions too large for spatial
    attention), none elsewhere."""
    if level in config.attention_levels:
        return [attention_block(config.attention, channels, config)]
    if level in config.temporal_levels:
        return [TemporalAttention(channels, config.num_heads, config.max_relative_position, config.temporal_attention)]
    return []


def attention_block(kind: str, channels: int, config: UNetConfig) -> nn.Module:
    if kind == "spatial":
        return SpatialAttention(channels, config.num_heads)
    if kind == "factorized":
        return FactorizedAttention(channels, config.num_heads, config.max_relative_position, config.temporal_attention)
    if kind == "joint":
        return JointAttention(channels, config.num_heads, config.max_relative_position)
    raise ValueError(f"attention must be one of {ATTENTION_KINDS}, got {kind!r}")
