"""The short-video LVDM: a denoising UNet in the latent space of a frozen 3D autoencoder.

LVDM Sec. 3 (He et al. 2022): compress clips with the video autoencoder (`vae3d.py`), normalise
the latents with the shift/scale stored in the autoencoder, and train an eps-predicting UNet
(`unet.py`) on them with the diffusion loss (`diffusion.py`, uniform t, L1). Sampling runs the
reverse chain in the latent space and decodes once at the end. The same class, with a `hierarchy`
config and a UNet with a mask input, is a prediction or interpolation model (`hierarchy.py`).

Training: `diffusion_loss` is the model's objective; `recipes.train_short_model` is the whole recipe
(latents encoded once, then the trainer; `python -m lvdm_ref train` calls it).

A short checkpoint (`.safetensors`) holds the raw and EMA UNet weights and, in its metadata, the
UNet and diffusion configs, the latent shape and the autoencoder file it expects (its sha256).
"""
from __future__ import annotations

import dataclasses

import os
from pathlib import Path

import numpy as np
import torch
from torch import nn

from lvdm_ref.checkpoint import INTERP_KIND, PRED_KIND, SHORT_KIND, load_weights, prefixed, save_weights, unprefixed
from lvdm_ref.config import DiffusionConfig, HierarchyConfig, UNetConfig, from_dict, to_dict
from lvdm_ref.diffusion import GaussianDiffusion
from lvdm_ref.perturbation import train_max_level
from lvdm_ref.pixel import PixelSpace
from lvdm_ref.unet import UNet
from lvdm_ref.utils import file_sha256, randn, stream, to_uint8
from lvdm_ref.official.autoencoder import OfficialAutoencoder
from lvdm_ref.vae3d import VideoAutoencoder

KIND = SHORT_KIND  # hierarchy models: PRED_KIND, INTERP_KIND


def diffusion_loss(diffusion: GaussianDiffusion):
    """loss_fn for the trainer: the diffusion loss of the UNet on a batch of clean latents."""

    def loss_fn(unet: nn.Module, z0: torch.Tensor, step: int):
        return diffusion.training_losses(unet, z0)["loss"]

    return loss_fn


# The UNet options a continued short model may add to its checkpoint's: each starts as the identity (a
# zero-initialised residual), so the continuation is the checkpoint's function at its first step.
ADDED_AT_ZERO = ("temporal_levels", "temporal_conv")


def continuation_differences(init: UNetConfig, config: UNetConfig) -> str:
    """The fields where `config` differs from the checkpoint's `init` other than `ADDED_AT_ZERO` options switched
    on ("" where it continues it), for an error message."""
    added = {"temporal_levels": set(init.temporal_levels) <= set(config.temporal_levels),
             "temporal_conv": config.temporal_conv}
    return ", ".join(f"{f.name} {getattr(config, f.name)!r} vs --init's {getattr(init, f.name)!r}"
                     for f in dataclasses.fields(UNetConfig)
                     if getattr(config, f.name) != getattr(init, f.name) and not added.get(f.name, False))


def continue_from(unet: nn.Module, init_config: UNetConfig, state: dict[str, torch.Tensor]) -> nn.Module:
    """Initialise a short model's UNet with a trained one's weights (`init_config`, `state`): every weight is
    copied and the options it adds (`ADDED_AT_ZERO`) keep their zero initialisation. Checked, not assumed: the
    result must compute what the checkpoint's UNet computes on a random input. Raises ValueError."""
    differ = continuation_differences(init_config, unet.config)
    if differ:
        raise ValueError(f"this UNet does not continue the checkpoint's: {differ}")
    missing, unexpected = unet.load_state_dict(state, strict=False)
    if unexpected:
        raise ValueError(f"the checkpoint has weights this UNet lacks: {unexpected[:4]} ...")
    original = UNet(init_config)
    original.load_state_dict(state)
    size = 8 * 2 ** (len(init_config.channel_mult) - 1)
    x = randn((2, init_config.in_channels, 4, size, size), torch.Generator().manual_seed(0))
    t = torch.tensor([10, 900])
    with torch.no_grad():
        gap = (unet(x, t) - original(x, t)).abs().max().item()
    if gap > 1e-4:
        raise ValueError(f"the added options {missing[:4]} ... change the checkpoint's function (largest "
                         f"difference {gap:.2g}); they must start at zero")
    return unet


class LatentVideoDiffusion(nn.Module):
    """Frozen autoencoder + UNet + diffusion: `sample` draws videos, `save`/`load` one checkpoint file."""

    def __init__(self, vae: VideoAutoencoder, unet: UNet, diffusion: GaussianDiffusion,
                 latent_shape: tuple[int, int, int, int], hierarchy: HierarchyConfig | None = None):
        super().__init__()
        self.vae = vae.eval().requires_grad_(False)
        self.unet = unet
        self.diffusion = diffusion
        self.latent_shape = tuple(latent_shape)  # (c, f, h, w)
        if hierarchy is not None and hierarchy.max_perturbation_level is None:  # LVDM's T/4, now that T is known
            hierarchy = dataclasses.replace(hierarchy, max_perturbation_level=train_max_level(diffusion.num_timesteps))
        self.hierarchy = hierarchy  # None: the short model; else a prediction or interpolation model
        self.vae_sha256: str | None = None  # the autoencoder file it was trained on, when known
        if unet.config.in_channels != latent_shape[0] or unet.config.out_channels != latent_shape[0]:
            raise ValueError(f"the UNet maps {unet.config.in_channels} -> {unet.config.out_channels} channels but "
                             f"the autoencoder's latents have {latent_shape[0]}: set UNetConfig in/out_channels")

    @torch.no_grad()
    def sample_latents(self, num: int, sampler: str = "ddpm", num_steps: int | None = None,
                       eta: float | None = None, seed: int = 0, progress: bool = False, first_index: int = 0,
                       **sample_kwargs):
        """(num, c, f, h, w) normalised latents: samples first_index, ..., first_index + num - 1 of `seed`.

        Sample i draws from its own stream, `stream(seed, i)`, so it is the same whatever batch it is
        drawn in and however many are asked for, and different seeds give disjoint sets.
        """
        device = next(self.unet.parameters()).device
        generators = [stream(seed, index) for index in range(first_index, first_index + num)]
        self.unet.eval()
        return self.diffusion.sample(self.unet, (num, *self.latent_shape), sampler=sampler, num_steps=num_steps,
                                     eta=eta, generator=generators, progress=progress, device=device,
                                     **sample_kwargs)

    @torch.no_grad()
    def decode(self, latents: torch.Tensor, chunk_size: int | None = None) -> torch.Tensor:
        """Normalised latents -> videos (B, C, F, H, W) in [-1, 1]."""
        return self.vae.decode(latents.to(self.vae.latent_scale.device), chunk_size=chunk_size).clamp(-1, 1)

    @torch.no_grad()
    def sample(self, num: int, sampler: str = "ddpm", num_steps: int | None = None, eta: float | None = None,
               seed: int = 0, progress: bool = False, batch_size: int = 16, first_index: int = 0) -> np.ndarray:
        """Samples first_index, ..., first_index + num - 1 of `seed` as uint8 (N, F, H, W, C), `batch_size` at a
        time; the batch size changes nothing but memory (see `sample_latents`)."""
        videos = []
        for start in range(0, num, batch_size):
            latents = self.sample_latents(min(batch_size, num - start), sampler, num_steps, eta, seed=seed,
                                          progress=progress, first_index=first_index + start)
            videos.append(to_uint8(self.decode(latents)))  # (b, F, H, W, C)
        return np.concatenate(videos)

    # ------------------------------------------------------------------ checkpoints
    @property
    def kind(self) -> str:
        return KIND if self.hierarchy is None else {"pred": PRED_KIND, "interp": INTERP_KIND}[self.hierarchy.role]

    def save(self, path: str | os.PathLike, ema_unet: nn.Module | None = None, vae_path: str | None = None,
             extra: dict | None = None) -> Path:
        """Write the UNet (and EMA) weights with the configs; sampling uses the EMA weights when present."""
        tensors = prefixed(self.unet.state_dict(), "unet")
        if ema_unet is not None:
            tensors.update(prefixed(ema_unet.state_dict(), "ema"))
        metadata = {"kind": self.kind, "unet": to_dict(self.unet.config), "diffusion": to_dict(self.diffusion.config),
                    "latent_shape": list(self.latent_shape), **(extra or {})}
        if self.hierarchy is not None:
            metadata["hierarchy"] = to_dict(self.hierarchy)
        if vae_path is not None:
            metadata["vae"] = {"path": str(vae_path), "sha256": file_sha256(vae_path)}
        return save_weights(path, tensors, metadata)

    @classmethod
    def load(cls, path: str | os.PathLike, vae: VideoAutoencoder | str | os.PathLike | None = None,
             device: str | torch.device = "cpu", use_ema: bool = True, kind: str = KIND) -> "LatentVideoDiffusion":
        """Load a checkpoint of `kind` (short, or "lvdm_pred" / "lvdm_interp"); `vae` defaults to the
        autoencoder file recorded in it."""
        tensors, meta = load_weights(path, device)
        if meta.get("kind") != kind:
            raise ValueError(f"{path} holds a {meta.get('kind')!r} checkpoint, not a {kind!r} one")
        if meta.get("space") == "pixel":  # the pixel-space ablation (pixel.py): no autoencoder
            vae = PixelSpace(meta["latent_shape"][0]).to(device)
        if vae is None and meta.get("vae", {}).get("embedded"):  # a converted official model: its autoencoder inside
            vae = OfficialAutoencoder.from_weights(unprefixed(tensors, "vae"), meta["vae"]["config"], device)
        if vae is None:
            vae = find_autoencoder(Path(path), meta["vae"])
        if not isinstance(vae, nn.Module):
            vae = VideoAutoencoder.load(vae, device)
        given = getattr(vae, "file_sha256", None)  # None: built in memory, the caller vouches for it
        if "vae" in meta and given is not None and given != meta["vae"]["sha256"]:
            raise ValueError(f"the autoencoder given is not the one {path} was trained with (sha256 differs); "
                             f"pass the right one with --vae, or none to use the one recorded")
        unet = UNet(from_dict(UNetConfig, meta["unet"])).to(device)
        weights = unprefixed(tensors, "ema") if use_ema and any(k.startswith("ema.") for k in tensors) else \
            unprefixed(tensors, "unet")
        unet.load_state_dict(weights)
        hierarchy = from_dict(HierarchyConfig, meta["hierarchy"]) if "hierarchy" in meta else None
        model = cls(vae, unet, GaussianDiffusion(from_dict(DiffusionConfig, meta["diffusion"])).to(device),
                    tuple(meta["latent_shape"]), hierarchy)
        model.metadata = meta
        model.vae_sha256 = meta.get("vae", {}).get("sha256")
        return model.eval()


def find_autoencoder(path: Path, recorded: dict) -> Path:
    """The autoencoder file a checkpoint was trained with: the recorded path, else a file beside the
    checkpoint with the recorded sha256 (shipped models keep the autoencoder they were trained on, even
    after a newer one takes the default name)."""
    candidates = [Path(recorded["path"]), path.resolve().parent / Path(recorded["path"]).name,
                  *sorted(path.resolve().parent.glob("*.safetensors"))]
    for candidate in candidates:
        if candidate.is_file() and file_sha256(candidate) == recorded["sha256"]:
            return candidate
    raise ValueError(f"no autoencoder with sha256 {recorded['sha256']} (recorded as {recorded['path']}) beside {path}; "
                     f"put it back there or beside the checkpoint (`sample` also takes it as --vae)")

