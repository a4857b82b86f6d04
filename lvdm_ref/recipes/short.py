"""The short LVDM's recipe (`lvdm.py`, LVDM Sec. 3.2), the same UNet and diffusion on pixels (`pixel.py`, the
Sec. 4 ablation), and the caption-conditioned model (`text_to_video.py`, beyond the paper)."""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from lvdm_ref.captions import CAPTION_DIM
from lvdm_ref.config import DataConfig, DiffusionConfig, Preset, TrainConfig, UNetConfig, differences, from_dict, to_dict
from lvdm_ref.data import generate_moving_mnist
from lvdm_ref.diffusion import GaussianDiffusion
from lvdm_ref.lvdm import LatentVideoDiffusion, continuation_differences, continue_from, diffusion_loss
from lvdm_ref.pixel import PixelSpace
from lvdm_ref.recipes.common import (LatentDataset, Snapshots, check_num_clips, check_run_folder, encoded_training_set,
                                     preset_for_autoencoder, run_settings, short_model_header, short_model_weights,
                                     training_clips)
from lvdm_ref.text_to_video import (CAPTION_DROP_PROB, CaptionDataset, TextToVideo, caption_counts, caption_loss,
                                    captions_of, warm_start_captions)
from lvdm_ref.train import Trainer
from lvdm_ref.unet import UNet
from lvdm_ref.utils import file_sha256, from_uint8, get_device
from lvdm_ref.vae3d import VideoAutoencoder
from lvdm_ref.video_datasets import open_video_dataset


@dataclass(frozen=True)
class ShortRun:
    """A short or caption model's run, checked (`resolve_short_run`): what `fit_short` / `fit_t2v` train."""
    preset: Preset  # with the autoencoder's own config
    train_config: TrainConfig
    num_clips: int
    vae_path: Path
    out: Path
    resume: bool = False
    init: Path | None = None  # the short model it warm-starts from (short: continues; t2v: adds captions)
    drop_prob: float = CAPTION_DROP_PROB  # t2v: the share of dropped captions
    snapshot_every: int | None = None  # short: also keep the EMA model every that many steps in OUT/snapshots/

    @property
    def settings(self) -> dict:
        """What a resumed call must repeat (`common.check_run_folder`)."""
        return run_settings(unet=to_dict(self.preset.unet), diffusion=to_dict(self.preset.diffusion), init=self.init,
                            drop_prob=self.drop_prob)


def latent_clip_shape(preset: Preset) -> tuple[int, int, int, int]:
    """(c, f, h, w) of the preset's clips in its autoencoder's latent space (`VideoAutoencoder.latent_shape`)."""
    vae, data = preset.vae, preset.data
    return (vae.latent_channels, data.num_frames // vae.temporal_downsample, data.size // vae.spatial_downsample,
            data.size // vae.spatial_downsample)


def resolve_short_run(preset: Preset, vae_path: str | os.PathLike, out: str | os.PathLike, *,
                      steps: int | None = None, num_clips: int | None = None, resume: bool = False,
                      kind: str = "short", init: str | os.PathLike | None = None,
                      drop_prob: float | None = None, snapshot_every: int | None = None) -> ShortRun:
    """Check a short (`kind` "short") or caption model's ("t2v") whole run before any work, from the
    checkpoints' headers: at least one batch of clips, the autoencoder against the preset's data
    (`preset_for_autoencoder`), the run folder, t2v's `init` (a short model on the same autoencoder and
    latents) and `drop_prob` in [0, 1); for real video, that the data opens. Raises ValueError."""
    train_config = preset.train if steps is None else dataclasses.replace(preset.train, steps=steps)
    num_clips = preset.data.num_train if num_clips is None else num_clips
    check_num_clips(num_clips, train_config.batch_size)
    drop_prob = CAPTION_DROP_PROB if drop_prob is None else drop_prob
    if not 0 <= drop_prob < 1:
        raise ValueError(f"--caption-drop must be in [0, 1) (the share of dropped captions), got {drop_prob}")
    meta = None if init is None else short_model_header(init, vae_path)  # a short model, on this autoencoder
    preset = preset_for_autoencoder(preset, vae_path)
    if meta is not None:
        if tuple(meta["latent_shape"]) != latent_clip_shape(preset):
            raise ValueError(f"--init {init} works on latents {tuple(meta['latent_shape'])}, the data encodes to "
                             f"{latent_clip_shape(preset)}: use the preset it was trained with")
        if kind == "short":  # a continuation: the same objective, the same UNet or one with zero-started additions
            channels = latent_clip_shape(preset)[0]
            unet = dataclasses.replace(preset.unet, in_channels=channels, out_channels=channels)
            differ = continuation_differences(from_dict(UNetConfig, meta["unet"]), unet)
            if differ:
                raise ValueError(f"--init {init} has another UNet than the preset's ({differ}): continue it with "
                                 f"the preset it was trained with")
            given = from_dict(DiffusionConfig, meta["diffusion"])
            if given != preset.diffusion:
                raise ValueError(f"--init {init} was trained with another diffusion ({differences(given, preset.diffusion)}"
                                 f", --init's vs the preset's): a continuation keeps its objective")
    if preset.data.dataset != "moving_mnist":  # no videos, none readable, all shorter than a clip: said now
        open_video_dataset(preset.data)
    run = ShortRun(preset, train_config, num_clips, Path(vae_path), Path(out), resume,
                   None if init is None else Path(init), drop_prob, snapshot_every)
    check_run_folder(out, resume, kind, preset.name, run.settings)
    return run


def train_short_model(preset: Preset, vae_path: str | os.PathLike, out: str | os.PathLike, *, steps: int | None = None,
                      num_clips: int | None = None, resume: bool = False, device: str = "auto", callbacks=(),
                      progress: bool = True, latents_cache: str | os.PathLike | None = None,
                      stop_at: int | None = None, compile: bool = False,
                      init: str | os.PathLike | None = None) -> dict:
    """Train the preset's short LVDM on the frozen autoencoder in `vae_path`; write OUT/short.safetensors.

    num_clips training clips (default: the preset's `data.num_train`) are encoded once into
    OUT/latents.pt (or `latents_cache`, which several runs may share) and read back afterwards;
    `resume=True` continues OUT/train_state.pt. The UNet takes its channels from the latents. The
    preset is not changed: `steps` replaces the preset's number of steps in a copy. `stop_at` ends
    this call at that step of the `steps`-long run (its schedule unchanged) and writes the model as
    it is then; resume to go on. `compile=True` trains through `torch.compile` (the `train` command's
    default: 1.25x per step on a CPU after about 2 minutes of compiling; docs/studies/speed.md). `init`
    continues a trained short model (e.g. the shipped one on other clips) with this run's schedule.
    """
    run = resolve_short_run(preset, vae_path, out, steps=steps, num_clips=num_clips, resume=resume, init=init)
    return fit_short(run, device=device, callbacks=callbacks, progress=progress, latents_cache=latents_cache,
                     stop_at=stop_at, compile=compile)


def fit_short(run: ShortRun, *, device: str = "auto", callbacks=(), progress: bool = True,
              latents_cache: str | os.PathLike | None = None, stop_at: int | None = None,
              compile: bool = False) -> dict:
    """Train a resolved short model's run (`train_short_model` says what the options do)."""
    vae = VideoAutoencoder.load(run.vae_path, get_device(device))
    cache = Path(latents_cache) if latents_cache is not None else run.out / "latents.pt"
    latents = encoded_training_set(vae, run.vae_path, run.preset.data, run.num_clips, cache,
                                   progress=progress)  # (N, c, f, h, w)
    return fit_diffusion(run.preset, run.train_config, vae, latents, run.out, vae_path=run.vae_path,
                         resume=run.resume, device=device, callbacks=callbacks, progress=progress, stop_at=stop_at,
                         compile=compile, settings=run.settings, init=run.init, snapshot_every=run.snapshot_every)


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
    check_num_clips(num_clips, train_config.batch_size)
    check_run_folder(out, resume, "short", preset.name)
    clips = training_clips(preset.data, num_clips)  # uint8 (N, F, H, W, C)
    data = torch.cat([from_uint8(clips[i:i + 256]) for i in range(0, len(clips), 256)])  # (N, C, F, H, W)
    return fit_diffusion(preset, train_config, PixelSpace(data.shape[1]), data, Path(out), resume=resume,
                         device=device, callbacks=callbacks, progress=progress, stop_at=stop_at, compile=compile,
                         extra={"space": "pixel"})


def fit_diffusion(preset: Preset, train_config, space: nn.Module, data: torch.Tensor, out: Path, *,
                  vae_path: Path | None = None, resume: bool = False, device: str = "auto", callbacks=(),
                  progress: bool = True, stop_at: int | None = None, compile: bool = False,
                  extra: dict | None = None, settings: dict | None = None, init: Path | None = None,
                  snapshot_every: int | None = None) -> dict:
    """Train the preset's UNet on `data` (N, c, f, h, w), the clips in the space the diffusion runs in
    (the autoencoder's latents, or pixels for `pixel.py`), and write OUT/short.safetensors. `init`: a short
    model to continue (`lvdm.continue_from`; its EMA weights, a fresh optimiser and EMA), checked beforehand;
    `snapshot_every`: keep the EMA model every that many steps as OUT/snapshots/short_{step}.safetensors."""
    latent_shape = tuple(data.shape[1:])  # (c, f, h, w)
    unet_config = dataclasses.replace(preset.unet, in_channels=latent_shape[0], out_channels=latent_shape[0])
    unet, diffusion = UNet(unet_config), GaussianDiffusion(preset.diffusion).to(get_device(device))
    if init is not None:
        init_config, _, weights, meta = short_model_weights(init)
        unet = continue_from(unet, init_config, weights)
        extra = {**(extra or {}), "init": str(init), "init_sha256": file_sha256(init), "init_steps": meta.get("steps")}
    if get_device(device).type == "cpu":  # NHWC per-frame convs: 1.2x per step on a CPU (benchmarks/unet_speed.py)
        unet = unet.to(memory_format=torch.channels_last)
    model = LatentVideoDiffusion(space, unet, diffusion, latent_shape)
    extra = {"preset": preset.name, "train": to_dict(train_config), "num_clips": len(data), **(extra or {})}
    if snapshot_every:
        callbacks = (*callbacks, Snapshots(model, Path(out) / "snapshots", "short", snapshot_every, vae_path, extra))
    trainer = Trainer(unet, diffusion_loss(diffusion), LatentDataset(data), train_config, out, device=device,
                      resume=resume, callbacks=callbacks, progress=progress, compile=compile,
                      metadata={"preset": preset.name, **({"settings": settings} if settings else {})})
    summary = trainer.fit(stop_at)
    model = LatentVideoDiffusion(space, trainer.model, diffusion, latent_shape)
    path = Path(out) / "short.safetensors"
    if trainer.is_main:  # one writer under DDP
        model.save(path, ema_unet=trainer.ema_model if trainer.ema else None,
                   vae_path=None if vae_path is None else str(vae_path), extra={**extra, "steps": trainer.step})
    return {"checkpoint": str(path), "latent_shape": list(latent_shape), "num_clips": len(data), **summary}




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
    run = resolve_short_run(preset, vae_path, out, steps=steps, num_clips=num_clips, resume=resume, kind="t2v",
                            init=init, drop_prob=drop_prob)
    return fit_t2v(run, device=device, callbacks=callbacks, progress=progress, latents_cache=latents_cache,
                   compile=compile)


def fit_t2v(run: ShortRun, *, device: str = "auto", callbacks=(), progress: bool = True,
            latents_cache: str | os.PathLike | None = None, compile: bool = False) -> dict:
    """Train a resolved caption model's run (`train_t2v_model` says what the options do)."""
    preset, train_config, num_clips, vae_path, out = run.preset, run.train_config, run.num_clips, run.vae_path, run.out
    init, drop_prob, resume = run.init, run.drop_prob, run.resume
    vae = VideoAutoencoder.load(vae_path, get_device(device))
    folder = Path(latents_cache) if latents_cache is not None else out
    latents, captions = caption_training_set(vae, vae_path, preset.data, num_clips, folder, progress=progress)
    shape = tuple(latents.shape[1:])  # (c, f, h, w)
    extra = {"preset": preset.name, "train": to_dict(train_config), "num_clips": len(latents),
             "caption_drop_prob": drop_prob, "digit_counts": {str(k): int((captions.sum(1) == k).sum())
                                                              for k in (1, 2, 3)}}
    if init is not None:  # checked by `resolve_short_run`
        unet_config, diffusion_config, weights, meta = short_model_weights(init)
        unet = warm_start_captions(UNet(dataclasses.replace(unet_config, context_dim=CAPTION_DIM)), weights)
        extra.update(init=str(init), init_sha256=file_sha256(init), init_steps=meta.get("steps"))
    else:
        unet_config = dataclasses.replace(preset.unet, in_channels=shape[0], out_channels=shape[0],
                                          context_dim=CAPTION_DIM)
        diffusion_config, unet = preset.diffusion, UNet(unet_config)
    diffusion = GaussianDiffusion(diffusion_config).to(get_device(device))
    if get_device(device).type == "cpu":  # NHWC per-frame convs, as the short model
        unet = unet.to(memory_format=torch.channels_last)
    trainer = Trainer(unet, caption_loss(diffusion, drop_prob), CaptionDataset(latents, captions), train_config, out,
                      device=device, resume=resume, callbacks=callbacks, progress=progress,
                      metadata={"preset": preset.name, "model": "t2v", "settings": run.settings}, compile=compile)
    summary = trainer.fit()
    model = TextToVideo(vae, trainer.model, diffusion, shape)
    path = out / "t2v.safetensors"
    if trainer.is_main:  # one writer under DDP
        model.save(path, ema_unet=trainer.ema_model if trainer.ema else None, vae_path=str(vae_path),
                   extra={**extra, "steps": trainer.step})
    return {"checkpoint": str(path), "latent_shape": list(shape), "num_clips": len(latents),
            "caption_drop_prob": drop_prob, "warm_start": None if init is None else str(init), **summary}
