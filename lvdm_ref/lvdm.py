"""The short-video LVDM: a denoising UNet in the latent space of a frozen 3D autoencoder.

LVDM Sec. 3 (He et al. 2022): compress clips with the video autoencoder (`vae3d.py`), normalise
the latents with the shift/scale stored in the autoencoder, and train an eps-predicting UNet
(`unet.py`) on them with the diffusion loss (`diffusion.py`, uniform t, L1). Sampling runs the
reverse chain in the latent space and decodes once at the end.

Training data: clips are encoded once, up front, into a latent set kept in memory (and cached in
the run folder, so a resumed run does not encode again). Encoding is a full-resolution 3D conv
pass, far dearer per clip than a UNet step on the small latent; a fixed set keeps it off the
training loop. `train_short_model` is the whole recipe (`python -m lvdm_ref train` calls it).

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
from tqdm.auto import tqdm

from lvdm_ref.checkpoint import atomic_write, load_weights, prefixed, save_weights, unprefixed
from lvdm_ref.config import DataConfig, DiffusionConfig, HierarchyConfig, UNetConfig, from_dict, to_dict
from lvdm_ref.diffusion import GaussianDiffusion
from lvdm_ref.unet import UNet
from lvdm_ref.utils import file_sha256, from_uint8, get_device, stream, to_uint8
from lvdm_ref.vae3d import VideoAutoencoder

KIND = "lvdm_short"  # hierarchy models: "lvdm_pred", "lvdm_interp"


@torch.no_grad()
def encode_videos(vae: VideoAutoencoder, videos: np.ndarray, batch_size: int = 16,
                  progress: bool = True) -> torch.Tensor:
    """uint8 clips (N, T, H, W, C) -> normalised latents (N, c, t, h, w) on the CPU."""
    vae.eval()
    device = vae.latent_scale.device
    latents = []
    for start in tqdm(range(0, len(videos), batch_size), desc="encode", disable=not progress):
        clips = from_uint8(videos[start:start + batch_size]).to(device)  # (B, C, T, H, W)
        latents.append(vae.encode(clips).cpu())  # (B, c, t, h, w)
    return torch.cat(latents)


class LatentDataset(torch.utils.data.Dataset):
    """Pre-encoded latents (N, c, t, h, w) as a Dataset for the trainer."""

    def __init__(self, latents: torch.Tensor):
        self.latents = latents

    def __len__(self) -> int:
        return len(self.latents)

    def __getitem__(self, index: int) -> torch.Tensor:
        return self.latents[index]


def diffusion_loss(diffusion: GaussianDiffusion):
    """loss_fn for the trainer: the diffusion loss of the UNet on a batch of clean latents."""

    def loss_fn(unet: nn.Module, z0: torch.Tensor, step: int):
        return diffusion.training_losses(unet, z0)["loss"]

    return loss_fn


class LatentVideoDiffusion(nn.Module):
    """Frozen autoencoder + UNet + diffusion: `sample` draws videos, `save`/`load` one checkpoint file."""

    def __init__(self, vae: VideoAutoencoder, unet: UNet, diffusion: GaussianDiffusion,
                 latent_shape: tuple[int, int, int, int], hierarchy: HierarchyConfig | None = None):
        super().__init__()
        self.vae = vae.eval().requires_grad_(False)
        self.unet = unet
        self.diffusion = diffusion
        self.latent_shape = tuple(latent_shape)  # (c, t, h, w)
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
        """Normalised latents -> videos (B, C, T, H, W) in [-1, 1]."""
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
        return KIND if self.hierarchy is None else f"lvdm_{self.hierarchy.role}"

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
            from lvdm_ref.pixel import PixelSpace

            vae = PixelSpace(meta["latent_shape"][0]).to(device)
        if vae is None:
            vae = _find_autoencoder(Path(path), meta["vae"])
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


def _find_autoencoder(path: Path, recorded: dict) -> Path:
    """The autoencoder file a checkpoint was trained with: the recorded path, else a file beside the
    checkpoint with the recorded sha256 (shipped models keep the autoencoder they were trained on, even
    after a newer one takes the default name)."""
    candidates = [Path(recorded["path"]), path.resolve().parent / Path(recorded["path"]).name,
                  *sorted(path.resolve().parent.glob("*.safetensors"))]
    for candidate in candidates:
        if candidate.is_file() and file_sha256(candidate) == recorded["sha256"]:
            return candidate
    raise ValueError(f"no autoencoder with sha256 {recorded['sha256']} (recorded as {recorded['path']}) beside {path}; "
                     f"pass the one it was trained with (--vae)")


# ----------------------------------------------------------------------------- the recipe
def _training_clips(data: DataConfig, num: int, num_frames: int | None = None) -> np.ndarray:
    """uint8 (N, T, H, W, C) clips of the preset's data set to encode once for training."""
    if data.dataset == "moving_mnist":
        from lvdm_ref.data import generate_moving_mnist

        return generate_moving_mnist(num, num_frames or data.num_frames, data.size, data.num_digits, "train", data.seed)
    raise ValueError(f"training encodes a Moving MNIST set here; for {data.dataset!r} build the latent set "
                     f"from its dataset (lvdm_ref.video_datasets) and call lvdm_ref.lvdm.encode_videos")


def encoded_training_set(vae: VideoAutoencoder, vae_path: Path, data: DataConfig, num_clips: int,
                         cache: Path, *, num_frames: int | None = None, progress: bool = True) -> torch.Tensor:
    """Training clips encoded once into `cache` (N, c, t, h, w), and read back from it afterwards.

    The clips are a pure function of (data, num_clips, num_frames), so a cache that records the same
    ones and the same autoencoder (its sha256) is reused: by a resumed run, or by runs that share it.
    """
    key = {"vae_sha256": file_sha256(vae_path), "num_clips": num_clips,
           "num_frames": num_frames or data.num_frames, "data": to_dict(data)}
    if cache.exists():
        cached = torch.load(cache, weights_only=True)
        if {name: cached.get(name) for name in key} == key:
            return cached["latents"]
    latents = encode_videos(vae, _training_clips(data, num_clips, num_frames), progress=progress)
    atomic_write(cache, lambda tmp: torch.save({"latents": latents, **key}, tmp))
    return latents


def train_short_model(preset, vae_path: str | os.PathLike, out: str | os.PathLike, *, steps: int | None = None,
                      num_clips: int | None = None, resume: bool = False, device: str = "auto", callbacks=(),
                      progress: bool = True, latents_cache: str | os.PathLike | None = None,
                      stop_at: int | None = None, compile: bool = False) -> dict:
    """Train the preset's short LVDM on the frozen autoencoder in `vae_path`; write OUT/short.safetensors.

    num_clips training clips (default: the preset's `data.num_train`) are encoded once into
    OUT/latents.pt (or `latents_cache`, which several runs may share) and read back afterwards;
    `resume=True` continues OUT/train_state.pt. The UNet takes its channels from the latents. The
    preset is not changed: `steps` replaces the preset's number of steps in a copy. `stop_at` ends
    this call at that step of the `steps`-long run (its schedule unchanged) and writes the model as
    it is then; resume to go on. `compile=True` trains through `torch.compile` (the `train` command's
    default: 1.25x per step on a CPU after about 2 minutes of compiling; README, "Speed on this CPU").
    """
    train_config = preset.train if steps is None else dataclasses.replace(preset.train, steps=steps)
    num_clips = preset.data.num_train if num_clips is None else num_clips
    if num_clips < train_config.batch_size:
        raise ValueError(f"{num_clips} training clips are fewer than one batch of {train_config.batch_size}; "
                         f"encode at least {train_config.batch_size} (--num-clips)")
    out, vae_path = Path(out), Path(vae_path)
    vae = VideoAutoencoder.load(vae_path, get_device(device))
    cache = Path(latents_cache) if latents_cache is not None else out / "latents.pt"
    latents = encoded_training_set(vae, vae_path, preset.data, num_clips, cache, progress=progress)  # (N, c, t, h, w)
    return fit_diffusion(preset, train_config, vae, latents, out, vae_path=vae_path, resume=resume, device=device,
                         callbacks=callbacks, progress=progress, stop_at=stop_at, compile=compile)


def fit_diffusion(preset, train_config, space: nn.Module, data: torch.Tensor, out: Path, *,
                  vae_path: Path | None = None, resume: bool = False, device: str = "auto", callbacks=(),
                  progress: bool = True, stop_at: int | None = None, compile: bool = False,
                  extra: dict | None = None) -> dict:
    """Train the preset's UNet on `data` (N, c, t, h, w), the clips in the space the diffusion runs in
    (the autoencoder's latents, or pixels for `pixel.py`), and write OUT/short.safetensors."""
    from lvdm_ref.train import Trainer

    latent_shape = tuple(data.shape[1:])  # (c, t, h, w)
    unet_config = dataclasses.replace(preset.unet, in_channels=latent_shape[0], out_channels=latent_shape[0])
    unet, diffusion = UNet(unet_config), GaussianDiffusion(preset.diffusion).to(get_device(device))
    if get_device(device).type == "cpu":  # NHWC per-frame convs: 1.2x per step on a CPU (benchmarks/unet_speed.py)
        unet = unet.to(memory_format=torch.channels_last)
    trainer = Trainer(unet, diffusion_loss(diffusion), LatentDataset(data), train_config, out, device=device,
                      resume=resume, callbacks=callbacks, progress=progress, metadata={"preset": preset.name},
                      compile=compile)
    summary = trainer.fit(stop_at)
    model = LatentVideoDiffusion(space, trainer.model, diffusion, latent_shape)
    path = Path(out) / "short.safetensors"
    if trainer.is_main:  # one writer under DDP
        model.save(path, ema_unet=trainer.ema_model if trainer.ema else None,
                   vae_path=None if vae_path is None else str(vae_path),
                   extra={"preset": preset.name, "train": to_dict(train_config), "num_clips": len(data),
                          "steps": trainer.step, **(extra or {})})
    return {"checkpoint": str(path), "latent_shape": list(latent_shape), "num_clips": len(data), **summary}
