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

from lvdm_ref.config import UNetConfig

ATTENTION_KINDS = ("factorized", "joint", "spatial")
NORMS = ("frame", "clip")  # GroupNorm statistics of ResBlocks and the output layer: per frame, or over the clip
TEMPORAL_ATTENTIONS = ("shaw", "lvdm")  # Shaw et al.'s relative positions, or the official code's (above)


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


def frame_group_norm(norm: nn.GroupNorm, x: torch.Tensor, num_frames: int, over_clip: bool) -> torch.Tensor:
    """GroupNorm of frames (b f, C, h, w) with statistics per frame, or pooled over each clip's f frames."""
    if not over_clip:
        return norm(x)
    clip = rearrange(x, "(b f) c h w -> b c f h w", f=num_frames)  # a 5D GroupNorm pools over (C/G, f, h, w)
    return rearrange(norm(clip), "b c f h w -> (b f) c h w")


def zero_init(module: nn.Module) -> nn.Module:
    for parameter in module.parameters():
        nn.init.zeros_(parameter)
    return module


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
