"""The 3D video autoencoder: compress clips in space and time (LVDM Sec. 3.1).

LVDM (He et al. 2022, arXiv:2211.13221) runs diffusion in the latent space of a video
autoencoder built from full 3D convolutions: x (B, C, F, H, W) -> z (B, c, f, h, w) with
f = F / temporal_downsample and h = H / spatial_downsample (official: x4 in time, x8 in space,
4 channels). Here:

- Encoder/decoder: 3D convs (kernel 3, replicate padding), residual blocks of GroupNorm + SiLU,
  no attention; down-sampling by strided convs, up-sampling by transposed convs whose kernel
  equals their stride (each latent voxel paints its own block: no uneven overlap, so no
  checkerboard pattern, and the 3x3x3 convs after it blend the blocks).
- Loss: per-pixel L1 (official; "l2" and "l1+l2" as options), optional KL (weight 0 by default,
  as in every official config) and an optional frame-wise PatchGAN that starts late. No LPIPS: it
  needs network weights downloaded from a hub at run time, which this project never does.
  Moving MNIST frames are ~95 % black, and L1 (whose minimiser is the median) sat at the
  all-black output for hundreds of steps in our runs; the mmnist preset therefore uses L2.
- Latent normalisation from data: `fit_latent_stats` stores the per-channel mean and std of
  encoded training clips; `encode` returns (z - shift) / scale and `decode` inverts it. (The
  official code uses hand-set per-dataset constants; its users asked how to pick them.)
- `decode(z, chunk_size=k)` decodes long latent sequences k latent frames at a time, each chunk
  padded with its neighbours by the decoder's temporal receptive field; the kept centres equal
  the one-shot decode (tests/test_vae3d.py), and memory stays flat in the video length.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn
from torch.func import functional_call
from tqdm.auto import tqdm

from lvdm_ref.checkpoint import load_weights, save_weights
from lvdm_ref.config import VAEConfig, from_dict, to_dict
from lvdm_ref.utils import file_sha256, from_uint8

SPATIAL_FACTORS = (2, 4, 8)
TEMPORAL_FACTORS = (1, 2, 4)
RECON_LOSSES = ("l1", "l2", "l1+l2")


def validate_config(config: VAEConfig) -> None:
    """Raise a ValueError naming the numbers and what would work."""
    if config.spatial_downsample not in SPATIAL_FACTORS:
        raise ValueError(f"spatial_downsample must be one of {SPATIAL_FACTORS}, got {config.spatial_downsample}")
    if config.recon_loss not in RECON_LOSSES:
        raise ValueError(f"recon_loss must be one of {RECON_LOSSES}, got {config.recon_loss!r}")
    if config.temporal_downsample not in TEMPORAL_FACTORS:
        raise ValueError(f"temporal_downsample must be one of {TEMPORAL_FACTORS}, got {config.temporal_downsample}")
    num_down = int(math.log2(config.spatial_downsample))
    if len(config.channel_mult) != num_down + 1:
        raise ValueError(f"spatial_downsample={config.spatial_downsample} takes {num_down} halvings, so channel_mult "
                         f"needs {num_down + 1} levels, got {len(config.channel_mult)}: {config.channel_mult}")
    if config.temporal_downsample > config.spatial_downsample:
        raise ValueError(f"temporal_downsample={config.temporal_downsample} needs as many down-sampling stages; "
                         f"spatial_downsample={config.spatial_downsample} has only {num_down}")
    if config.latent_channels < 1 or config.base_channels < 1 or config.num_res_blocks < 0:
        raise ValueError(f"latent_channels and base_channels must be >= 1 and num_res_blocks >= 0, got "
                         f"{config.latent_channels}, {config.base_channels}, {config.num_res_blocks}")


# ----------------------------------------------------------------------------- building blocks
def conv3d(in_channels: int, out_channels: int, stride: tuple[int, int, int] = (1, 1, 1)) -> nn.Conv3d:
    return nn.Conv3d(in_channels, out_channels, 3, stride=stride, padding=1, padding_mode="replicate")


class FrameGroupNorm(nn.GroupNorm):
    """GroupNorm with statistics per frame, over (C/G, H, W).

    Differs from the official code (statistics over the whole clip): per-frame statistics keep
    the decoder local in time, which is what makes the chunked decode equal the one-shot decode.
    """

    def __init__(self, channels: int):
        super().__init__(math.gcd(channels, 8), channels)  # 8 groups (official: 32 at >= 128 channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        frames = rearrange(x, "b c f h w -> (b f) c h w")  # (B*F, C, H, W)
        frames = super().forward(frames)
        return rearrange(frames, "(b f) c h w -> b c f h w", b=x.shape[0])  # (B, C, F, H, W)


class ResBlock3d(nn.Module):
    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.norm1, self.conv1 = FrameGroupNorm(in_channels), conv3d(in_channels, out_channels)
        self.norm2, self.conv2 = FrameGroupNorm(out_channels), conv3d(out_channels, out_channels)
        self.skip = nn.Conv3d(in_channels, out_channels, 1) if in_channels != out_channels else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(F.silu(self.norm2(h)))
        return self.skip(x) + h


def _strides(config: VAEConfig) -> list[tuple[int, int, int]]:
    """(f, h, w) stride of each down-sampling stage; time is halved in the first stages (cheapest)."""
    num_down = len(config.channel_mult) - 1
    num_time = int(math.log2(config.temporal_downsample))
    return [(2 if stage < num_time else 1, 2, 2) for stage in range(num_down)]


class Encoder(nn.Module):
    def __init__(self, config: VAEConfig):
        super().__init__()
        widths = [config.base_channels * m for m in config.channel_mult]
        self.conv_in = conv3d(config.in_channels, widths[0])
        self.levels = nn.ModuleList()
        channels = widths[0]
        for level, width in enumerate(widths):
            blocks = []
            for _ in range(config.num_res_blocks):
                blocks.append(ResBlock3d(channels, width))
                channels = width
            if level < len(widths) - 1:
                blocks.append(conv3d(channels, channels, stride=_strides(config)[level]))  # strided down-sampling
            self.levels.append(nn.Sequential(*blocks))
        self.mid = ResBlock3d(channels, channels)
        self.norm_out = FrameGroupNorm(channels)
        out_channels = config.latent_channels * (2 if config.kl_weight > 0 else 1)  # KL: mean and log-variance
        self.conv_out = conv3d(channels, out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv_in(x)  # (B, C0, F, H, W)
        for level in self.levels:
            h = level(h)
        h = self.mid(h)  # (B, Ck, f, h, w)
        return self.conv_out(F.silu(self.norm_out(h)))  # (B, c or 2c, f, h, w)


class Decoder(nn.Module):
    def __init__(self, config: VAEConfig):
        super().__init__()
        widths = [config.base_channels * m for m in config.channel_mult]
        strides = _strides(config)
        channels = widths[-1]
        self.conv_in = conv3d(config.latent_channels, channels)
        self.mid = ResBlock3d(channels, channels)
        self.levels = nn.ModuleList()
        for level in reversed(range(len(widths))):
            blocks = []
            for _ in range(config.num_res_blocks):
                blocks.append(ResBlock3d(channels, widths[level]))
                channels = widths[level]
            if level > 0:  # transposed conv, kernel = stride: up-sampling without overlap
                stride = strides[level - 1]
                blocks.append(nn.ConvTranspose3d(channels, channels, kernel_size=stride, stride=stride))
            self.levels.append(nn.Sequential(*blocks))
        self.norm_out = FrameGroupNorm(channels)
        self.conv_out = conv3d(channels, config.in_channels)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.mid(self.conv_in(z))  # (B, Ck, f, h, w)
        for level in self.levels:
            h = level(h)
        return self.conv_out(F.silu(self.norm_out(h)))  # (B, C, F, H, W)

    def temporal_halo(self) -> int:
        """Latent frames on each side that an output frame can depend on (an upper bound).

        Each kernel-3 conv widens the dependency by one frame at its own frame rate, i.e. by 1 / (the
        temporal up-sampling done before it) latent frames; the transposed convs (kernel = stride) add nothing.
        """
        reach, rate = 0.0, 1
        for module in self.modules():  # registration order = the order of the forward pass
            if isinstance(module, nn.ConvTranspose3d):
                rate *= module.stride[0]
            elif isinstance(module, nn.Conv3d) and module.kernel_size[0] == 3:
                reach += 1 / rate
        return math.ceil(reach)


# ----------------------------------------------------------------------------- the autoencoder
class VideoAutoencoder(nn.Module):
    """x (B, C, F, H, W) in [-1, 1] <-> normalised z (B, c, F/ft, H/fs, W/fs)."""

    def __init__(self, config: VAEConfig):
        super().__init__()
        validate_config(config)
        self.config = config
        self.encoder = Encoder(config)
        self.decoder = Decoder(config)
        self.register_buffer("latent_shift", torch.zeros(config.latent_channels))  # set by fit_latent_stats
        self.register_buffer("latent_scale", torch.ones(config.latent_channels))

    # ------------------------------------------------------------------ shapes
    def check_video(self, video: torch.Tensor) -> None:
        cfg = self.config
        if video.ndim != 5 or video.shape[1] != cfg.in_channels:
            raise ValueError(f"expected a (B, {cfg.in_channels}, F, H, W) video, got shape {tuple(video.shape)}")
        frames, height, width = video.shape[2:]
        if frames % cfg.temporal_downsample:
            raise ValueError(f"{frames} frames are not divisible by temporal_downsample={cfg.temporal_downsample}; "
                             f"use {frames - frames % cfg.temporal_downsample} or "
                             f"{frames + cfg.temporal_downsample - frames % cfg.temporal_downsample} frames")
        for name, size in (("height", height), ("width", width)):
            if size % cfg.spatial_downsample:
                raise ValueError(f"{name} {size} is not divisible by spatial_downsample={cfg.spatial_downsample}; "
                                 f"crop or resize to {size - size % cfg.spatial_downsample} or "
                                 f"{size + cfg.spatial_downsample - size % cfg.spatial_downsample}")

    def latent_shape(self, num_frames: int, height: int, width: int) -> tuple[int, int, int, int]:
        """(c, f, h, w) for a (C, F, H, W) clip."""
        cfg = self.config
        self.check_video(torch.empty(1, cfg.in_channels, num_frames, height, width, device="meta"))
        return (cfg.latent_channels, num_frames // cfg.temporal_downsample,
                height // cfg.spatial_downsample, width // cfg.spatial_downsample)

    def compression_ratio(self, num_frames: int, height: int, width: int) -> float:
        """Numbers in the pixels / numbers in the latent."""
        return self.config.in_channels * num_frames * height * width / math.prod(
            self.latent_shape(num_frames, height, width))

    # ------------------------------------------------------------------ encode / decode
    def posterior(self, video: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Raw (un-normalised) latent mean and, with KL on, log-variance: (B, c, f, h, w) each."""
        self.check_video(video)
        moments = self.encoder(video)
        if self.config.kl_weight > 0:
            mean, logvar = moments.chunk(2, dim=1)
            return mean, logvar.clamp(-30.0, 20.0)
        # Differs from the official code, which samples a posterior whose KL weight is 0 (its variance
        # just shrinks to nothing): with weight 0 we use a plain, deterministic autoencoder.
        return moments, None

    def encode(self, video: torch.Tensor, sample: bool = False) -> torch.Tensor:
        """(B, C, F, H, W) -> normalised z (B, c, f, h, w): (z - shift) / scale."""
        mean, logvar = self.posterior(video)
        z = mean + torch.randn_like(mean) * (0.5 * logvar).exp() if sample and logvar is not None else mean
        return (z - _per_channel(self.latent_shift)) / _per_channel(self.latent_scale)

    def decode(self, z: torch.Tensor, chunk_size: int | None = None) -> torch.Tensor:
        """Normalised z (B, c, f, h, w) -> video (B, C, f * ft, H, W).

        chunk_size: decode that many latent frames at a time (plus a halo of neighbours on each
        side, cut off afterwards): memory flat in f, result equal to the one-shot decode.
        """
        if z.ndim != 5 or z.shape[1] != self.config.latent_channels:
            raise ValueError(f"expected latents (B, {self.config.latent_channels}, f, h, w), got {tuple(z.shape)}")
        z = z * _per_channel(self.latent_scale) + _per_channel(self.latent_shift)  # raw latent
        length = z.shape[2]  # latent frames
        if chunk_size is None or chunk_size >= length:
            return self.decoder(z)
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1 latent frame, got {chunk_size}")
        halo, factor = self.decoder.temporal_halo(), self.config.temporal_downsample
        pieces = []
        for start in range(0, length, chunk_size):
            stop = min(start + chunk_size, length)
            lo, hi = max(0, start - halo), min(length, stop + halo)
            video = self.decoder(z[:, :, lo:hi])  # (B, C, (hi - lo) * ft, H, W)
            pieces.append(video[:, :, (start - lo) * factor:(stop - lo) * factor])  # keep the centre
        return torch.cat(pieces, dim=2)  # (B, C, f * ft, H, W)

    def forward(self, video: torch.Tensor, sample: bool = True):
        """Training path on raw latents: (reconstruction, mean, logvar)."""
        mean, logvar = self.posterior(video)
        z = mean + torch.randn_like(mean) * (0.5 * logvar).exp() if sample and logvar is not None else mean
        return self.decoder(z), mean, logvar

    @torch.no_grad()
    def reconstruct(self, video: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(video)).clamp(-1, 1)

    @torch.no_grad()
    def fit_latent_stats(self, clips: torch.Tensor, batch_size: int = 16) -> dict[str, list[float]]:
        """Set shift/scale to the per-channel mean and std of the raw latents of `clips` (B, C, F, H, W)."""
        raw = torch.cat([self.posterior(clips[i:i + batch_size])[0] for i in range(0, len(clips), batch_size)])
        self.latent_shift.copy_(raw.mean(dim=(0, 2, 3, 4)))  # (c,)
        self.latent_scale.copy_(raw.std(dim=(0, 2, 3, 4)).clamp_min(1e-6))  # (c,)
        return {"latent_shift": self.latent_shift.tolist(), "latent_scale": self.latent_scale.tolist()}

    # ------------------------------------------------------------------ checkpoints
    def save(self, path: str | Path, metadata: dict | None = None) -> Path:
        meta = {"kind": "vae3d", "vae": to_dict(self.config), **(metadata or {})}
        return save_weights(path, self.state_dict(), meta)

    @classmethod
    def load(cls, path: str | Path, device: str | torch.device = "cpu") -> "VideoAutoencoder":
        tensors, meta = load_weights(path, device)
        if meta.get("kind") != "vae3d":
            raise ValueError(f"{path} holds a {meta.get('kind')!r} checkpoint, not a 'vae3d' one")
        model = cls(from_dict(VAEConfig, meta["vae"])).to(device)
        model.load_state_dict(tensors)
        model.metadata = meta
        model.file_sha256 = file_sha256(path)  # which file it came from: models trained on it check this
        return model.eval()


def _per_channel(values: torch.Tensor) -> torch.Tensor:
    return values.view(1, -1, 1, 1, 1)  # (1, c, 1, 1, 1)


@torch.no_grad()
def encode_videos(vae: VideoAutoencoder, videos: np.ndarray, batch_size: int = 16,
                  progress: bool = True) -> torch.Tensor:
    """uint8 clips (N, F, H, W, C) -> normalised latents (N, c, f, h, w) on the CPU, `batch_size` clips at a time."""
    vae.eval()
    device = vae.latent_scale.device
    latents = []
    for start in tqdm(range(0, len(videos), batch_size), desc="encode", disable=not progress):
        clips = from_uint8(videos[start:start + batch_size]).to(device)  # (B, C, F, H, W)
        latents.append(vae.encode(clips).cpu())  # (B, c, f, h, w)
    return torch.cat(latents)


# ----------------------------------------------------------------------------- losses
class FramePatchDiscriminator(nn.Module):
    """PatchGAN (Isola et al. 2017) on single frames: each output logit judges a patch of one frame."""

    def __init__(self, in_channels: int = 1, channels: int = 32):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(in_channels, channels, 4, stride=2, padding=1), nn.LeakyReLU(0.2),
            nn.Conv2d(channels, 2 * channels, 4, stride=2, padding=1), nn.GroupNorm(8, 2 * channels),
            nn.LeakyReLU(0.2),
            nn.Conv2d(2 * channels, 1, 4, stride=1, padding=1))

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        frames = rearrange(video, "b c f h w -> (b f) c h w")  # (B*F, C, H, W): judged frame by frame
        return self.net(frames)  # (B*F, 1, h', w') patch logits


class AutoencoderWithLoss(nn.Module):
    """What the trainer optimises: the autoencoder plus, when disc_weight > 0, its discriminator.

    `forward(batch, step)` returns (loss, logs), so the trainer only ever calls the (possibly
    DistributedDataParallel-wrapped) module itself: DDP averages gradients only for what runs
    through the wrapper's `forward`, never for submodules called directly.
    """

    def __init__(self, config: VAEConfig):
        super().__init__()
        self.autoencoder = VideoAutoencoder(config)
        self.discriminator = FramePatchDiscriminator(config.in_channels) if config.disc_weight > 0 else None

    def forward(self, batch: torch.Tensor, step: int) -> tuple[torch.Tensor, dict]:
        """recon (L1, L2 or both) + kl_weight * KL (+ disc_weight * hinge GAN terms after disc_start).

        With one optimiser over all parameters, the two GAN terms must not push each other's weights:
        the generator term sees the discriminator through detached parameters, and the discriminator
        term sees detached reconstructions.
        """
        cfg = self.autoencoder.config
        reconstruction, mean, logvar = self.autoencoder(batch)
        l1 = (reconstruction - batch).abs().mean()
        l2 = (reconstruction - batch).pow(2).mean()
        loss = {"l1": l1, "l2": l2, "l1+l2": l1 + l2}[cfg.recon_loss]
        logs = {"l1": float(l1.detach()), "l2": float(l2.detach())}
        if logvar is not None:
            kl = 0.5 * (mean.pow(2) + logvar.exp() - 1 - logvar).sum(dim=(1, 2, 3, 4)).mean()  # KL(q(z|x) || N(0, I))
            loss = loss + cfg.kl_weight * kl
            logs["kl"] = float(kl.detach())
        # Differs from the official code: a fixed disc_weight instead of the adaptive, gradient-norm-based one.
        if self.discriminator is not None and step >= cfg.disc_start:
            disc = self.discriminator
            frozen = {name: p.detach() for name, p in disc.named_parameters()}
            g_loss = -functional_call(disc, frozen, (reconstruction,)).mean()  # generator: fool the frozen judge
            d_loss = 0.5 * (F.relu(1 - disc(batch)).mean() + F.relu(1 + disc(reconstruction.detach())).mean())  # hinge
            loss = loss + cfg.disc_weight * (g_loss + d_loss)
            logs.update(g_loss=float(g_loss.detach()), d_loss=float(d_loss.detach()))
        return loss, logs


def autoencoder_loss(model: nn.Module, batch: torch.Tensor, step: int) -> tuple[torch.Tensor, dict]:
    """The trainer's loss function: the (wrapped) AutoencoderWithLoss's own forward."""
    return model(batch, step)

