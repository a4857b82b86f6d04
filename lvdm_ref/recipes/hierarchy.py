"""The recipe of the long-video hierarchy's two models (`hierarchy.py`, LVDM Sec. 3.3): prediction on the
keyframes, interpolation on the 5-latent windows, of long clips encoded once.

`resolve_hierarchy_run` checks a whole run from the checkpoints' headers and the data's file headers, in
seconds, and returns a `HierarchyRun`; `fit_hierarchy` only works (encodes, builds, trains).
`train_hierarchy_model` is the two in a row, and the `train` command calls them apart, so that a bad
argument is refused before the autoencoder loads.
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from lvdm_ref.checkpoint import PRED_KIND, SHORT_KIND
from lvdm_ref.config import HierarchyConfig, Preset, TrainConfig, from_dict, hierarchy_config, to_dict
from lvdm_ref.diffusion import GaussianDiffusion
from lvdm_ref.hierarchy import hierarchy_loss, warm_start
from lvdm_ref.lvdm import LatentVideoDiffusion
from lvdm_ref.perturbation import train_max_level
from lvdm_ref.recipes.common import (LatentDataset, Snapshots, check_num_clips, check_run_folder, encoded_training_set,
                                     preset_for_autoencoder, run_settings, short_model_header, short_model_weights)
from lvdm_ref.train import Trainer
from lvdm_ref.unet import UNet
from lvdm_ref.utils import file_sha256, get_device
from lvdm_ref.vae3d import VideoAutoencoder
from lvdm_ref.video_datasets import open_video_dataset

MAX_KEYFRAME_STRIDE = 16  # latents between keyframes: LVDM's 4 (16 frames); 16 already asks for 256-frame clips


# ----------------------------------------------------------------------------- training samples
def sample_span(config: HierarchyConfig) -> int:
    """Latents one training sample covers: keyframes `keyframe_stride` apart (pred), or consecutive ones (interp)."""
    return (config.num_latents - 1) * config.keyframe_stride + 1 if config.role == "pred" else config.num_latents


def sample_starts(config: HierarchyConfig, length: int) -> range:
    """Where the samples of a long clip of `length` latents start (`training_latents`)."""
    span, stride = sample_span(config), config.keyframe_stride
    if span > length:
        raise ValueError(f"a {config.role} sample spans {span} latents, the clips have {length}: use longer clips")
    step = 1 if config.every_start else stride
    return range(0, 1 if config.role == "pred" and not config.every_start else length - span + 1, step)


def training_latents(long_latents: torch.Tensor, config: HierarchyConfig) -> torch.Tensor:
    """Latents of long clips (N, c, L, h, w) -> the model's training samples.

    pred: every `keyframe_stride`-th latent, the first `num_latents` of them (N, c, 4, h, w);
    interp: every window of `num_latents` consecutive latents starting on a keyframe (N * W, c, 5, h, w).
    With `config.every_start` a window may start at any latent, not only at a keyframe: the same clips give
    `keyframe_stride` times more distinct samples (W windows per clip, (N * W, ...) for pred too).
    """
    span = sample_span(config)
    take = config.keyframe_stride if config.role == "pred" else 1  # keyframes, or consecutive latents
    starts = sample_starts(config, long_latents.shape[2])
    return torch.cat([long_latents[:, :, s:s + span:take] for s in starts]).contiguous()


def long_clip_frames(preset: Preset, config: HierarchyConfig) -> int:
    """Frames of the long training clips: enough for `num_latents` keyframes, and at least 16 latents
    (official: 64 frames), so that a short keyframe stride gets several windows per clip (`every_start`).
    The preset's autoencoder (`preset_for_autoencoder` puts the one trained on in it) sets the frames per latent."""
    needed = config.num_latents * config.keyframe_stride if config.role == "pred" else 4 * config.keyframe_stride
    return max(needed, 16) * preset.vae.temporal_downsample


# ----------------------------------------------------------------------------- the model
def check_init(init: str | os.PathLike, meta: dict, config: HierarchyConfig, latent_size: tuple[int, int, int]) -> None:
    """A checkpoint to warm-start from (its metadata `meta`, checked by `short_model_header`) fits the model:
    its latent channels and frame size (`latent_size` (c, h, w)), and a prediction model's keyframe grid."""
    shape = meta.get("latent_shape")
    if shape is not None and (shape[0], *shape[2:]) != tuple(latent_size):
        raise ValueError(f"--init {init} works on latents of {shape[0]} channels and {shape[2]}x{shape[3]}, this "
                         f"model on {latent_size[0]} channels and {latent_size[1]}x{latent_size[2]}: warm-start "
                         f"from a model of the same autoencoder and preset")
    if meta["kind"] == PRED_KIND:
        given = from_dict(HierarchyConfig, meta["hierarchy"])
        if (given.num_latents, given.keyframe_stride, given.max_perturbation_level) != (
                config.num_latents, config.keyframe_stride, config.max_perturbation_level):
            raise ValueError(f"--init {init} is a prediction model on {given.num_latents} latents "
                             f"{given.keyframe_stride} apart with s_max {given.max_perturbation_level}; this one "
                             f"is on {config.num_latents} latents {config.keyframe_stride} apart with s_max "
                             f"{config.max_perturbation_level}: pass the same --keyframe-stride and "
                             f"--max-perturbation-level")


def init_kinds(role: str) -> tuple[str, ...]:
    """What a model of `role` may warm-start from: a short model, or (pred) a prediction model too."""
    return (SHORT_KIND, PRED_KIND) if role == "pred" else (SHORT_KIND,)


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
    size = preset.data.size // vae.config.spatial_downsample
    unet_config, diffusion_config, weights = preset.hierarchy_unet, preset.diffusion, None
    if init is not None:
        check_init(init, short_model_header(init, vae_path, init_kinds(role)), config, (latent_channels, size, size))
        unet_config, diffusion_config, weights, _ = short_model_weights(init)
    if parameterization is not None:
        diffusion_config = dataclasses.replace(diffusion_config, parameterization=parameterization)
    unet_config = dataclasses.replace(unet_config, in_channels=latent_channels, out_channels=latent_channels,
                                      use_mask=True, use_perturbation_embedding=max_perturbation_level > 0)
    unet = UNet(unet_config)
    if weights is not None:
        warm_start(unet, weights)
    latent_shape = (latent_channels, config.num_latents, size, size)
    diffusion = GaussianDiffusion(diffusion_config).to(vae.latent_scale.device)
    return LatentVideoDiffusion(vae, unet.to(vae.latent_scale.device), diffusion, latent_shape, config)


# ----------------------------------------------------------------------------- resolve, then run
@dataclass(frozen=True)
class HierarchyRun:
    """A prediction or interpolation run, checked (`resolve_hierarchy_run`): what `fit_hierarchy` trains."""
    preset: Preset  # with the autoencoder's own config
    config: HierarchyConfig  # role, keyframe grid, s_max, condition share, max_given
    train_config: TrainConfig
    num_clips: int  # long clips to encode
    num_frames: int  # frames per long clip
    vae_path: Path
    out: Path
    resume: bool = False
    init: Path | None = None
    parameterization: str | None = None
    snapshot_every: int | None = None

    @property
    def settings(self) -> dict:
        """What a resumed call must repeat (`common.check_run_folder`)."""
        return run_settings(hierarchy=to_dict(self.config), parameterization=self.parameterization, init=self.init)


def resolve_hierarchy_run(preset: Preset, role: str, vae_path, out, *, max_perturbation_level: int | None = None,
                          condition_prob: float | None = None, steps: int | None = None,
                          num_clips: int | None = None, resume: bool = False, snapshot_every: int | None = None,
                          every_start: bool = False, keyframe_stride: int | None = None,
                          num_frames: int | None = None, init: str | os.PathLike | None = None, max_given: int = 1,
                          parameterization: str | None = None) -> HierarchyRun:
    """Check the whole run before any work and return what it needs (`train_hierarchy_model` says what the
    options mean): the options' ranges, the autoencoder against the preset (`preset_for_autoencoder`), the
    long clips' length with the keyframe stride, at least one batch of training samples, the run folder,
    `init` (from its header) and, for real video, that enough videos are long enough. Raises ValueError."""
    num_timesteps = preset.diffusion.num_timesteps
    if max_perturbation_level is None:
        max_perturbation_level = train_max_level(num_timesteps)
    if not 0 <= max_perturbation_level <= num_timesteps:
        raise ValueError(f"--max-perturbation-level must be in [0, {num_timesteps}] (the diffusion's timesteps), "
                         f"got {max_perturbation_level}")
    config = hierarchy_config(role, max_perturbation_level)
    if condition_prob is not None:
        if not 0 < condition_prob <= 1:
            raise ValueError(f"--condition-prob must be in (0, 1], got {condition_prob}")
        config = dataclasses.replace(config, condition_prob=condition_prob)
    if max_given != 1 and (role != "pred" or not 1 <= max_given < config.num_latents):
        raise ValueError(f"max_given is for a prediction model, from 1 to {config.num_latents - 1} (it must make at "
                         f"least one of its {config.num_latents} latents), got {max_given} for {role!r}")
    config = dataclasses.replace(config, every_start=every_start, max_given=max_given)
    if keyframe_stride is not None:  # the interpolation model spans one keyframe interval: stride + 1 latents
        if role == "interp" and keyframe_stride < 2:
            raise ValueError(f"--keyframe-stride {keyframe_stride}: an interpolation model needs keyframes at least "
                             f"2 latents apart (with 1, train only a prediction model: --model pred)")
        if not 1 <= keyframe_stride <= MAX_KEYFRAME_STRIDE:
            raise ValueError(f"--keyframe-stride must be between 1 and {MAX_KEYFRAME_STRIDE}, got {keyframe_stride}")
        config = dataclasses.replace(config, keyframe_stride=keyframe_stride,
                                     num_latents=config.num_latents if role == "pred" else keyframe_stride + 1)
    train_config = preset.hierarchy_train if steps is None else dataclasses.replace(preset.hierarchy_train, steps=steps)
    num_clips = preset.hierarchy_clips if num_clips is None else num_clips
    preset = preset_for_autoencoder(preset, vae_path, check_clip_length=False)  # long clips: any length
    num_frames = num_frames or long_clip_frames(preset, config)
    windows = len(sample_starts(config, num_frames // preset.vae.temporal_downsample))
    check_num_clips(num_clips * windows, train_config.batch_size,
                    f"training samples ({num_clips} clips x {windows} per clip)")
    if init is not None:
        size = preset.data.size // preset.vae.spatial_downsample
        check_init(init, short_model_header(init, vae_path, init_kinds(role)), config,
                   (preset.vae.latent_channels, size, size))
    if preset.data.dataset != "moving_mnist":  # every video shorter than a long clip: said now, with the length
        open_video_dataset(preset.data, num_frames=num_frames)
    run = HierarchyRun(preset, config, train_config, num_clips, num_frames, Path(vae_path), Path(out), resume,
                       None if init is None else Path(init), parameterization, snapshot_every)
    check_run_folder(out, resume, role, preset.name, run.settings)
    return run


def train_hierarchy_model(preset: Preset, role: str, vae_path, out, *, max_perturbation_level: int | None = None,
                          condition_prob: float | None = None, steps: int | None = None, num_clips: int | None = None,
                          resume: bool = False, device: str = "auto", callbacks=(), progress: bool = True,
                          compile: bool = False, snapshot_every: int | None = None, every_start: bool = False,
                          keyframe_stride: int | None = None, num_frames: int | None = None,
                          init: str | os.PathLike | None = None, latents_cache: str | os.PathLike | None = None,
                          stop_at: int | None = None, max_given: int = 1, parameterization: str | None = None) -> dict:
    """Train the preset's prediction (`role="pred"`) or interpolation (`"interp"`) model on a frozen
    autoencoder; write OUT/{role}.safetensors. `resolve_hierarchy_run`, then `fit_hierarchy`.

    Long clips (64 frames on Moving MNIST) are encoded once into OUT/latents.pt; the prediction model
    trains on their keyframe latents, the interpolation model on their 5-latent windows.

    Args:
        preset, role, vae_path, out: the sizes and schedule, "pred" or "interp", the autoencoder trained on
            the preset's frames (its own config is used: `preset_for_autoencoder`), the run folder.
        max_perturbation_level: s_max, by default LVDM's T/4 (`perturbation.train_max_level`: 250 of 1000
            timesteps); 0 trains without conditional latent perturbation (no s embedding).
        condition_prob: the share of conditioned training samples, by default LVDM's (0.5 pred, 0.9 interp).
        steps, num_clips: the preset's unless given; at least one batch of training samples.
        resume: continue OUT/train_state.pt (a run of the same role, preset and settings).
        device, callbacks, progress, compile: how to train (`train.Trainer`; compile: `torch.compile`).
        snapshot_every: also keep the model every that many steps in OUT/snapshots/ (to score a long run).
        every_start: train on windows starting at every latent, not only at keyframes (`training_latents`).
        keyframe_stride: latents between keyframes (LVDM's 4; at most `MAX_KEYFRAME_STRIDE`).
        num_frames: frames of the long training clips (default: just enough for one sample, `long_clip_frames`).
        init: a short model to warm-start from (its UNet size and diffusion replace the preset's;
            `build_hierarchy_model`), or a prediction model of the same grid to go on from with other settings.
        latents_cache: where the encoded long clips are kept instead of OUT/latents.pt (runs may share it).
        stop_at: end this call at that step of the `steps`-long run and write the model as it is then.
        max_given: k, a conditioned prediction sample is given its first 1..k latents (`hierarchy.training_mask`).
        parameterization: replaces the preset's or the init's target (with `init`: learnt from the old weights).
    """
    run = resolve_hierarchy_run(preset, role, vae_path, out, max_perturbation_level=max_perturbation_level,
                                condition_prob=condition_prob, steps=steps, num_clips=num_clips, resume=resume,
                                snapshot_every=snapshot_every, every_start=every_start,
                                keyframe_stride=keyframe_stride, num_frames=num_frames, init=init,
                                max_given=max_given, parameterization=parameterization)
    return fit_hierarchy(run, device=device, callbacks=callbacks, progress=progress, compile=compile,
                         latents_cache=latents_cache, stop_at=stop_at)


def fit_hierarchy(run: HierarchyRun, *, device: str = "auto", callbacks=(), progress: bool = True,
                  compile: bool = False, latents_cache: str | os.PathLike | None = None,
                  stop_at: int | None = None) -> dict:
    """Train a resolved run: encode the long clips once, cut them into samples, build the model, train it."""
    preset, config, role, out, vae_path = run.preset, run.config, run.config.role, run.out, run.vae_path
    vae = VideoAutoencoder.load(vae_path, get_device(device))
    cache = Path(latents_cache) if latents_cache is not None else out / "latents.pt"
    long_latents = encoded_training_set(vae, vae_path, preset.data, run.num_clips, cache, num_frames=run.num_frames,
                                        progress=progress)  # (N, c, L, h, w)
    latents = training_latents(long_latents, config)  # (N, c, f, h, w)
    model = build_hierarchy_model(preset, role, vae, latents.shape[1], config.max_perturbation_level, config=config,
                                  init=run.init, vae_path=vae_path, parameterization=run.parameterization)
    extra = {"preset": preset.name, "train": to_dict(run.train_config), "num_clips": len(long_latents)}
    if run.init is not None:
        extra.update(init=str(run.init), init_sha256=file_sha256(run.init))
    if run.snapshot_every:
        callbacks = (*callbacks, Snapshots(model, out / "snapshots", role, run.snapshot_every, vae_path, extra))
    trainer = Trainer(model.unet, hierarchy_loss(model.diffusion, config), LatentDataset(latents), run.train_config,
                      out, device=device, resume=run.resume, callbacks=callbacks, progress=progress,
                      metadata={"preset": preset.name, "role": role, "settings": run.settings}, compile=compile)
    summary = trainer.fit(stop_at)
    path = out / f"{role}.safetensors"
    if trainer.is_main:  # one writer under DDP
        model.save(path, ema_unet=trainer.ema_model if trainer.ema else None, vae_path=str(vae_path),
                   extra={**extra, "steps": trainer.step})
    return {"checkpoint": str(path), "role": role, "latent_shape": list(model.latent_shape),
            "num_samples": len(latents), "max_perturbation_level": config.max_perturbation_level, **summary}
