"""What every diffusion recipe shares: the latent training set, encoded once, and the autoencoder it
is encoded with, checked against the preset before any work starts."""
from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import numpy as np
import torch

from lvdm_ref.checkpoint import PRED_KIND, SHORT_KIND, VAE_KIND, atomic_write, load_weights, read_metadata, unprefixed
from lvdm_ref.config import DataConfig, DiffusionConfig, Preset, UNetConfig, VAEConfig, from_dict, to_dict
from lvdm_ref.data import generate_moving_mnist
from lvdm_ref.lvdm import LatentVideoDiffusion
from lvdm_ref.train import STATE_FILE, Callback, Trainer, cpu_name
from lvdm_ref.utils import file_sha256
from lvdm_ref.vae3d import VideoAutoencoder, encode_videos
from lvdm_ref.video_training import encode_video_data, video_files_fingerprint


# ----------------------------------------------------------------------------- checks before any work
def run_kind(metadata: dict) -> str:
    """What kind of run a training state belongs to, from the metadata its recipe gave the trainer:
    "vae", "short", "pred", "interp" or "t2v"."""
    if metadata.get("model") == "t2v":
        return "t2v"
    if "role" in metadata:
        return metadata["role"]
    return "vae" if "data" in metadata else "short"


def run_settings(**settings) -> dict:
    """What a run was started with that a resumed call must repeat (the model's shape, its target, its warm
    start), as the training state records it: a config given as a dict is spread into "name.field" keys, so a
    difference names its field (JSON: tuples become lists)."""
    flat = {}
    for name, value in settings.items():
        flat.update({f"{name}.{key}": item for key, item in value.items()} if isinstance(value, dict) else {name: value})
    return json.loads(json.dumps(flat, default=str))


def check_run_folder(out: str | Path, resume: bool, kind: str, preset: str | None = None,
                     settings: dict | None = None) -> None:
    """Before any work: a new run needs a folder without a training state (a finished or interrupted run is
    never overwritten), and `resume` needs the state of a run of the same `kind`, preset and `settings`
    (`run_settings`, where the state records them) in it: the fields that differ are named."""
    state = Path(out) / STATE_FILE
    if not resume:
        if state.exists():
            raise ValueError(f"--out {out} holds a run already ({STATE_FILE}): pass --resume to continue it, or "
                             f"choose another --out")
        return
    if not state.is_file():
        raise ValueError(f"--resume: no {STATE_FILE} in {out}; pass the folder of an earlier run, or drop --resume "
                         f"to start a new one")
    try:  # memory-mapped: only the small metadata string is read
        metadata = json.loads(torch.load(state, map_location="cpu", weights_only=True, mmap=True).get("metadata", "{}"))
    except Exception as error:  # a truncated or foreign file: torch raises several kinds
        raise ValueError(f"--resume: {state} is not a training state written by this project "
                         f"({type(error).__name__}); pass the folder of an earlier run") from None
    found = run_kind(metadata)
    if found != kind:
        raise ValueError(f"--resume: {out} holds a {found!r} run, not a {kind!r} one; pass the folder of a {kind!r} "
                         f"run, or drop --resume and choose a new --out")
    if preset is not None and metadata.get("preset", preset) != preset:
        raise ValueError(f"--resume: {out} is a run of preset {metadata['preset']!r}, not {preset!r}; pass the same "
                         f"--preset (or --quick) as that run")
    recorded = metadata.get("settings")
    if settings is not None and recorded is not None and recorded != settings:
        differ = ", ".join(f"{key} {recorded.get(key)!r} vs {settings.get(key)!r}"
                           for key in sorted(set(recorded) | set(settings)) if recorded.get(key) != settings.get(key))
        raise ValueError(f"--resume: {out} was started with other settings ({differ}; the run's vs now): pass the "
                         f"same flags as that run, or drop --resume and choose a new --out")


def preset_for_autoencoder(preset: Preset, vae_path: str | os.PathLike, *, check_clip_length: bool = True) -> Preset:
    """`preset` with the autoencoder in `vae_path` (read from its header only): its own config replaces the
    preset's (its temporal and spatial factors decide the latent clips), and the frames it was trained on
    must be the preset's data: the same channels, frame size and (for a short model, `check_clip_length`)
    clip length. An autoencoder saved without a record of its data is taken as it is."""
    meta = read_metadata(vae_path)
    if meta.get("kind") != VAE_KIND:
        raise ValueError(f"--vae {vae_path} holds a {meta.get('kind')!r} checkpoint, not an autoencoder "
                         f"({VAE_KIND!r}); pass one written by `train-vae`, e.g. --vae "
                         f"data/checkpoints/mmnist_vae.safetensors")
    vae = from_dict(VAEConfig, meta["vae"])
    if vae.in_channels != preset.data.channels:
        raise ValueError(f"--vae {vae_path} takes {vae.in_channels}-channel frames, the data has "
                         f"{preset.data.channels}: train the autoencoder on the same data")
    recorded = meta.get("data") or {}
    fields = [("size", "frame size"), *([("num_frames", "clip length")] if check_clip_length else [])]
    differ = [f"{label} {recorded[name]} vs {getattr(preset.data, name)}" for name, label in fields
              if name in recorded and recorded[name] != getattr(preset.data, name)]
    if differ:
        raise ValueError(f"--vae {vae_path} was trained on other clips than the preset {preset.name!r} makes "
                         f"({', '.join(differ)}, the autoencoder's vs the preset's): pass the preset it was trained "
                         f"with (--preset {meta.get('preset')}), or train an autoencoder with this one")
    return dataclasses.replace(preset, vae=vae)


def check_num_clips(num_samples: int, batch_size: int, what: str = "training clips") -> None:
    """A run needs at least one batch of training samples."""
    if num_samples < batch_size:
        raise ValueError(f"{num_samples} {what} are fewer than one batch of {batch_size}; encode at least "
                         f"{batch_size} samples' worth (--num-clips)")


def short_model_header(init: str | os.PathLike, vae_path: str | os.PathLike | None = None,
                       kinds: tuple[str, ...] = (SHORT_KIND,)) -> dict:
    """The metadata of a checkpoint to warm-start from, checked: it is a short model (or one of `kinds`) and,
    given `vae_path`, was trained on that autoencoder. Reads the header only."""
    meta = read_metadata(init)
    if meta.get("kind") not in kinds:
        raise ValueError(f"--init {init} holds a {meta.get('kind')!r} checkpoint; warm-start from a short model "
                         f"({SHORT_KIND!r}), e.g. data/checkpoints/mmnist_short.safetensors"
                         + (f" or a prediction model ({PRED_KIND!r})" if PRED_KIND in kinds else ""))
    if vae_path is not None and meta.get("vae", {}).get("sha256") != file_sha256(vae_path):
        raise ValueError(f"--init {init} was trained on another autoencoder than {vae_path}; pass the one it "
                         f"records (--vae {meta.get('vae', {}).get('path')})")
    return meta


def short_model_weights(init: str | os.PathLike) -> tuple[UNetConfig, DiffusionConfig, dict[str, torch.Tensor], dict]:
    """What a warm start takes from a checkpoint (checked by `short_model_header`): its UNet and diffusion
    configs, its (EMA) weights in float32 and its metadata."""
    tensors, meta = load_weights(init)
    weights = unprefixed(tensors, "ema") if any(k.startswith("ema.") for k in tensors) else unprefixed(tensors, "unet")
    return (from_dict(UNetConfig, meta["unet"]), from_dict(DiffusionConfig, meta["diffusion"]),
            {name: tensor.float() for name, tensor in weights.items()}, meta)


# ----------------------------------------------------------------------------- data
def training_clips(data: DataConfig, num: int, num_frames: int | None = None) -> np.ndarray:
    """uint8 (N, F, H, W, C) clips of the preset's data set, to encode once for training."""
    if data.dataset == "moving_mnist":
        return generate_moving_mnist(num, num_frames or data.num_frames, data.size, data.num_digits, "train", data.seed)
    raise ValueError(f"training encodes a Moving MNIST set here; for {data.dataset!r} build the latent set "
                     f"from its dataset (lvdm_ref.video_datasets) and call lvdm_ref.vae3d.encode_videos")


class LatentDataset(torch.utils.data.Dataset):
    """Pre-encoded latents (N, c, f, h, w) as a Dataset for the trainer."""

    def __init__(self, latents: torch.Tensor):
        self.latents = latents

    def __len__(self) -> int:
        return len(self.latents)

    def __getitem__(self, index: int) -> torch.Tensor:
        return self.latents[index]


def encoded_training_set(vae: VideoAutoencoder, vae_path: Path, data: DataConfig, num_clips: int,
                         cache: Path, *, num_frames: int | None = None, progress: bool = True) -> torch.Tensor:
    """Training clips encoded once into `cache` (N, c, f, h, w), and read back from it afterwards.

    The clips are a pure function of (data, num_clips, num_frames), so a cache that records the same
    ones and the same autoencoder (its sha256) is reused: by a resumed run, or by runs that share it.
    Real video (`data.dataset` "ucf101" or "folder") is decoded in DataLoader workers and keyed by its
    files too (`video_training.py`).
    """
    key = {"vae_sha256": file_sha256(vae_path), "num_clips": num_clips,
           "num_frames": num_frames or data.num_frames, "data": to_dict(data)}
    if data.dataset == "moving_mnist":  # generated clips have no split: caches written before it was a field stay valid
        del key["data"]["split"]
    if data.dataset != "moving_mnist":  # real video: the files' names, sizes and dates key the cache too
        key["files"] = video_files_fingerprint(data)
    if cache.exists():
        cached = torch.load(cache, weights_only=True)
        if {name: cached.get(name) for name in key} == key:
            return cached["latents"]
    if data.dataset == "moving_mnist":
        latents = encode_videos(vae, training_clips(data, num_clips, num_frames), progress=progress)
    else:
        latents = encode_video_data(vae, data, num_clips, num_frames, progress=progress)
    atomic_write(cache, lambda tmp: torch.save({"latents": latents, **key}, tmp))
    return latents


def machine_of(trainer: Trainer) -> dict:
    """Where a run trains and in what arithmetic: its CPU seconds mean little without them."""
    device = torch.cuda.get_device_name(trainer.device) if trainer.device.type == "cuda" else cpu_name()
    return {"device": device, "bf16": trainer.uses_bf16}


class Snapshots(Callback):
    """Every `every` steps, the model with the trainer's EMA weights as FOLDER/{name}_{step:06d}.safetensors, with
    the run's CPU seconds so far (`Trainer.clock`, summed over resumed calls), its device and arithmetic in its
    metadata."""

    def __init__(self, model: LatentVideoDiffusion, folder: Path, name: str, every: int, vae_path: Path, extra: dict):
        self.model, self.folder, self.name, self.every, self.vae_path, self.extra = model, folder, name, every, vae_path, extra

    def on_step_end(self, trainer: Trainer, step: int, logs: dict) -> None:
        path = self.folder / f"{self.name}_{step:06d}.safetensors"
        if step % self.every or not trainer.is_main or path.exists():  # a run resumed before it: kept as scored
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        self.model.save(path, vae_path=str(self.vae_path),
                        ema_unet=trainer.ema_model if trainer.ema else None,
                        extra={**self.extra, "steps": step, **trainer.elapsed(), **machine_of(trainer)})
