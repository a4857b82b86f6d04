"""The official LVDM 3D autoencoder, to run the released Sky and TaiChi weights (LVDM Sec. 3.1).

The project's own autoencoder (`vae3d.py`) is a different network; this class is the topology of the official
code (github.com/YingqingHe/LVDM, which takes it from TATS, Ge et al. 2022), written from its description, with
the state-dict names of the official checkpoints (`first_stage_model.*` without the prefix):

- Every conv is a Conv3d with replicate "same" padding, the larger half first: kernel 4, stride 2 pads (1, 1);
  kernel 4, stride 1 (time, in the last stages) pads (2, 1); kernel 3 pads (1, 1).
- Encoder: conv_first (k3, C -> n); per stage a strided k4 conv doubling the channels, then a ResBlock; the time
  axis is halved in the first log2(ft) stages, space in every stage; final_block GroupNorm-SiLU-k3 -> 2c
  (mean and log-variance); quant_conv 1x1x1.
- Decoder: post_quant_conv 1x1x1; per stage a transposed k4 conv (after the same replicate padding, with padding
  k - 1 inside it) that halves the channels, then two ResBlocks; conv_out k3 -> C, with no final norm.
- ResBlock: GroupNorm-SiLU-conv twice, residual. GroupNorm has 32 groups, eps 1e-6, and its statistics are
  pooled over the whole clip, (C/G, F, H, W): every output frame depends on every input frame through them.
  So decoding a long latent in chunks is not exact, and `decode(chunk_size=...)` refuses (the official code
  decodes in one pass, or approximately with overlapping windows); `vae3d.VideoAutoencoder`'s per-frame
  statistics are what give it an exact chunked decode.
- Latent normalisation: the official z = scale_factor (z_raw + shift_factor), with hand-set per-dataset
  constants that are not in the checkpoint; here, as in `vae3d`, z = (z_raw - latent_shift) / latent_scale with
  latent_scale = 1 / scale_factor and latent_shift = -shift_factor (`official/convert.py` has the table).

`OfficialAutoencoder` offers what `LatentVideoDiffusion` and the commands use of `vae3d.VideoAutoencoder`:
`encode`, `decode`, `posterior`, `reconstruct`, `latent_scale` / `latent_shift`, `config.in_channels` and
`config.temporal_downsample`, and `save` / `load` with its own checkpoint kind.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from lvdm_ref.checkpoint import load_weights, save_weights
from lvdm_ref.config import from_dict, to_dict
from lvdm_ref.utils import file_sha256

KIND = "official_vae3d"


@dataclass
class OfficialAEConfig:
    in_channels: int = 3  # RGB (official `image_channel`)
    base_channels: int = 32  # official `n_hiddens`: channels after conv_first, doubled in every stage
    downsample: tuple[int, int, int] = (4, 8, 8)  # (time, height, width) factors; Sky/TaiChi: [4, 8, 8]
    latent_channels: int = 4  # official `embed_dim` (= `z_channels` in every released config)

    @property
    def temporal_downsample(self) -> int:
        return self.downsample[0]

    @property
    def spatial_downsample(self) -> int:
        return self.downsample[1]


def stage_strides(downsample: tuple[int, int, int]) -> list[tuple[int, int, int]]:
    """The (f, h, w) stride of each stage: 2 along an axis while it still has halvings left."""
    halvings = [int(math.log2(factor)) for factor in downsample]
    return [tuple(2 if stage < count else 1 for count in halvings) for stage in range(max(halvings))]


def same_padding(kernel: tuple[int, ...], stride: tuple[int, ...]) -> tuple[int, ...]:
    """F.pad widths (w, h, f order) for "same" output size / stride: k - s in total, the larger half first."""
    widths = []
    for k, s in reversed(list(zip(kernel, stride))):
        total = k - s
        widths += [total - total // 2, total // 2]
    return tuple(widths)


class SameConv3d(nn.Module):
    """Conv3d after replicate "same" padding. (The official module also exposes its weight as `weight`, so its
    checkpoints hold each of these weights twice; the converter drops the copies.)"""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride=(1, 1, 1)):
        super().__init__()
        self.conv = nn.Conv3d(in_channels, out_channels, kernel_size, stride=stride)
        self.pad = same_padding(self.conv.kernel_size, self.conv.stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.pad(x, self.pad, mode="replicate"))


class SameConvTranspose3d(nn.Module):
    """Transposed Conv3d that multiplies each axis by its stride: replicate padding as `SameConv3d`, then
    padding k - 1 inside the transposed conv crops the border it paints (kernel 4, stride 2: 2n -> exactly 2n)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride=(1, 1, 1)):
        super().__init__()
        self.convt = nn.ConvTranspose3d(in_channels, out_channels, kernel_size, stride=stride,
                                        padding=kernel_size - 1)
        self.pad = same_padding(self.convt.kernel_size, self.convt.stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.convt(F.pad(x, self.pad, mode="replicate"))


def clip_group_norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(32, channels, eps=1e-6)  # on (B, C, F, H, W): statistics over the clip


class ResBlock(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.norm1, self.conv1 = clip_group_norm(channels), SameConv3d(channels, channels, 3)
        self.norm2, self.conv2 = clip_group_norm(channels), SameConv3d(channels, channels, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        return x + self.conv2(F.silu(self.norm2(h)))


class Encoder(nn.Module):
    def __init__(self, config: OfficialAEConfig):
        super().__init__()
        channels = config.base_channels
        self.conv_first = SameConv3d(config.in_channels, channels, 3)
        self.conv_blocks = nn.ModuleList()
        for stride in stage_strides(config.downsample):
            stage = nn.Module()
            stage.down, stage.res = SameConv3d(channels, 2 * channels, 4, stride), ResBlock(2 * channels)
            self.conv_blocks.append(stage)
            channels *= 2
        self.final_block = nn.Sequential(clip_group_norm(channels), nn.SiLU(),
                                         SameConv3d(channels, 2 * config.latent_channels, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv_first(x)  # (B, n, F, H, W)
        for stage in self.conv_blocks:
            h = stage.res(stage.down(h))  # (B, 2 C, F', H / 2, W / 2)
        return self.final_block(h)  # (B, 2c, f, h, w)


class Decoder(nn.Module):
    def __init__(self, config: OfficialAEConfig):
        super().__init__()
        strides = stage_strides(config.downsample)
        channels = config.latent_channels
        self.conv_blocks = nn.ModuleList()
        for index, stride in enumerate(strides):  # time is doubled in the first stages, as the encoder halved it last
            width = config.base_channels * 2 ** (len(strides) - index)
            stage = nn.Module()
            stage.up = SameConvTranspose3d(channels, width, 4, stride)
            stage.res1, stage.res2 = ResBlock(width), ResBlock(width)
            self.conv_blocks.append(stage)
            channels = width
        self.conv_out = SameConv3d(channels, config.in_channels, 3)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = z  # (B, c, f, h, w)
        for stage in self.conv_blocks:
            h = stage.res2(stage.res1(stage.up(h)))
        return self.conv_out(h)  # (B, C, F, H, W)


class OfficialAutoencoder(nn.Module):
    """x (B, C, F, H, W) in [-1, 1] <-> normalised z (B, c, F/ft, H/fs, W/fs), with the official network."""

    def __init__(self, config: OfficialAEConfig | None = None):
        super().__init__()
        config = config or OfficialAEConfig()
        if config.downsample[1] != config.downsample[2]:
            raise ValueError(f"height and width must be down-sampled alike, got downsample={config.downsample}")
        self.config = config
        self.encoder, self.decoder = Encoder(config), Decoder(config)
        self.quant_conv = SameConv3d(2 * config.latent_channels, 2 * config.latent_channels, 1)
        self.post_quant_conv = SameConv3d(config.latent_channels, config.latent_channels, 1)
        self.register_buffer("latent_shift", torch.zeros(config.latent_channels))  # -shift_factor (convert.py)
        self.register_buffer("latent_scale", torch.ones(config.latent_channels))  # 1 / scale_factor

    def check_video(self, video: torch.Tensor) -> None:
        ft, fs = self.config.temporal_downsample, self.config.spatial_downsample
        if video.ndim != 5 or video.shape[1] != self.config.in_channels:
            raise ValueError(f"expected a (B, {self.config.in_channels}, F, H, W) video, got {tuple(video.shape)}")
        frames, height, width = video.shape[2:]
        if frames % ft or height % fs or width % fs:
            raise ValueError(f"frames must be divisible by {ft} and height and width by {fs}, got "
                             f"{(frames, height, width)}")

    def posterior(self, video: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Raw latent mean and log-variance (clamped to [-30, 20], as the official Gaussian), (B, c, f, h, w) each."""
        self.check_video(video)
        mean, logvar = self.quant_conv(self.encoder(video)).chunk(2, dim=1)
        return mean, logvar.clamp(-30.0, 20.0)

    def encode(self, video: torch.Tensor, sample: bool = False) -> torch.Tensor:
        """(B, C, F, H, W) -> normalised z: the posterior mean (or a sample), then (z - shift) / scale."""
        mean, logvar = self.posterior(video)
        z = mean + torch.randn_like(mean) * (0.5 * logvar).exp() if sample else mean
        return (z - self.latent_shift.view(1, -1, 1, 1, 1)) / self.latent_scale.view(1, -1, 1, 1, 1)

    def decode(self, z: torch.Tensor, chunk_size: int | None = None) -> torch.Tensor:
        """Normalised z (B, c, f, h, w) -> video (B, C, f * ft, H, W), in one pass.

        A `chunk_size` below f is refused: the clip-pooled GroupNorm makes every frame depend on all the others,
        so a chunked decode would differ from this one (no halo makes it exact).
        """
        if z.ndim != 5 or z.shape[1] != self.config.latent_channels:
            raise ValueError(f"expected latents (B, {self.config.latent_channels}, f, h, w), got {tuple(z.shape)}")
        if chunk_size is not None and chunk_size < z.shape[2]:
            raise ValueError(f"the official autoencoder decodes {z.shape[2]} latent frames in one pass: its GroupNorm "
                             f"pools over the clip, so chunks of {chunk_size} would not give the same video")
        z = z * self.latent_scale.view(1, -1, 1, 1, 1) + self.latent_shift.view(1, -1, 1, 1, 1)  # raw latent
        return self.decoder(self.post_quant_conv(z))

    @torch.no_grad()
    def reconstruct(self, video: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(video)).clamp(-1, 1)

    # ------------------------------------------------------------------ checkpoints
    def save(self, path: str | Path, metadata: dict | None = None) -> Path:
        return save_weights(path, self.state_dict(), {"kind": KIND, "vae": to_dict(self.config), **(metadata or {})})

    @classmethod
    def from_weights(cls, tensors: dict[str, torch.Tensor], config: dict,
                     device: str | torch.device = "cpu") -> "OfficialAutoencoder":
        """Build from a `to_dict(config)` and a state dict (e.g. the `vae.` part of a converted checkpoint); without
        `latent_scale` / `latent_shift` in it, they stay 1 and 0."""
        model = cls(from_dict(OfficialAEConfig, config)).to(device)
        model.load_state_dict({"latent_shift": model.latent_shift, "latent_scale": model.latent_scale, **tensors})
        return model.eval()

    @classmethod
    def load(cls, path: str | Path, device: str | torch.device = "cpu") -> "OfficialAutoencoder":
        tensors, meta = load_weights(path, device)
        if meta.get("kind") != KIND:
            raise ValueError(f"{path} holds a {meta.get('kind')!r} checkpoint, not an {KIND!r} one")
        model = cls.from_weights(tensors, meta["vae"], device)
        model.metadata = meta
        model.file_sha256 = file_sha256(path)
        return model
