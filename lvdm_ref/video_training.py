"""Training on real video: clips decoded in DataLoader workers, for the autoencoder and the latent set.

Moving MNIST is generated in about a millisecond per batch (`data.FreshMovingMNIST`); a clip of real
video must be decoded (a seek to the key frame before it, then every frame up to its end) and resized,
tens to hundreds of milliseconds. So here the clips are decoded by DataLoader worker processes while
the model trains, and what a step sees is still a pure function of (seed, step), as the trainer's exact
resume needs (`train.py`):

- `VideoClipBatches`: the trainer's `batch_fn` for the autoencoder. Clip j of step k is drawn from the
  stream `utils.stream(seed, k, j)`: which video, then which start. Workers decode the next batches
  ahead of the training step; a resumed run asks for step k and gets the same batch again.
- `encode_video_clips`: the latent set of the diffusion models. Clip i is video i mod N (every video
  is used) at a start drawn from `stream(seed, -1, i)`; clips are decoded in workers with a progress
  bar and encoded batch by batch, so the pixels of the whole set are never held at once.
- `video_files_fingerprint`: the names, sizes and dates of the files under the data root, which key
  the cached latent set (`recipes.encoded_training_set`) with the data config and the autoencoder.
- `train_video_autoencoder`: `recipes.train_autoencoder` for a video data set (`config.DataConfig`
  with `dataset="ucf101"` or `"folder"`); it writes the same vae.safetensors.

Bad data: `open_video_dataset` refuses a root without videos, a set where every file is unreadable and
clips longer than every video, each with an error that says so. A file that breaks later (truncated
after a good header) is skipped for the next video, counted in `.failed` and warned about once: never
fatal. Differs from the official LVDM, which draws a new random clip every step for the diffusion model
too: here a fixed, encoded latent set keeps the 3D encoder out of the diffusion loop (`recipes/__init__.py` says
why), and seeded draws keep resume exact.
"""
from __future__ import annotations

import dataclasses
import hashlib
import os
import sys
import warnings
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from lvdm_ref.config import DataConfig, Preset, to_dict
from lvdm_ref.train import Trainer
from lvdm_ref.utils import file_sha256, stream
from lvdm_ref.vae3d import AutoencoderWithLoss, VideoAutoencoder, autoencoder_loss
from lvdm_ref.video_datasets import IMAGE_EXTENSIONS, VideoClipDataset, is_ucf101_layout, open_video_dataset
from lvdm_ref.video_io import READ_EXTENSIONS


def video_preset(preset: Preset, root: str | Path, split: str = "train", channels: int = 3) -> Preset:
    """`preset` reading the real videos under `root`: the official UCF-101 layout (its `split`, "train" or
    "all": `video_datasets.open_video_dataset`) when `root` has it, else every video file and frame folder
    under it (`VideoFolderDataset`, recorded as split "all": a folder has no held-out videos). Frames are
    read in RGB (`channels` 3) or gray (1); sizes, frames, stride and models stay the preset's."""
    root = Path(root).expanduser().resolve()
    kind = "ucf101" if is_ucf101_layout(root) else "folder"
    data = dataclasses.replace(preset.data, dataset=kind, root=str(root), channels=channels,
                               split=split if kind == "ucf101" else "all")
    return dataclasses.replace(preset, data=data, vae=dataclasses.replace(preset.vae, in_channels=channels))


def default_workers() -> int:
    """DataLoader workers: one per core but one (the training step's), at most 8."""
    return max(1, min(8, (os.cpu_count() or 2) - 1))


class SeededClips(Dataset):
    """`dataset`'s clips addressed by a key: `(*stream_keys, video)` -> (clip (C, F, H, W), failures).

    The stream `utils.stream(seed, *stream_keys)` draws the video (when `video` is None) and the clip's
    start, so a key always gives the same clip, in any worker. A video that fails to load is replaced
    by the next one; the failures (path -> reason) travel back with the clip, to be counted by the caller.
    """

    def __init__(self, dataset: VideoClipDataset, seed: int = 0):
        self.dataset, self.seed = dataset, seed

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple) -> tuple[torch.Tensor, dict[str, str]]:
        *keys, video = key
        generator = stream(self.seed, *keys)
        items = self.dataset.items
        if video is None:
            video = int(torch.randint(0, len(items), (), generator=generator))
        failures: dict[str, str] = {}
        for attempt in range(self.dataset.max_retries + 1):
            item = items[(video + attempt) % len(items)]
            try:
                return self.dataset.load_clip(item, generator), failures
            except Exception as error:  # PyAV raises many error types for a broken file: all mean "skip it"
                failures[str(item.path)] = f"{type(error).__name__}: {error}"
        raise RuntimeError(f"{self.dataset.name}: {len(failures)} videos in a row failed to load: {failures}")


def _collate(samples: list) -> tuple[torch.Tensor, dict[str, str]]:
    clips = torch.stack([clip for clip, _ in samples])  # (B, C, F, H, W)
    return clips, {path: reason for _, failures in samples for path, reason in failures.items()}


class _FailureCount:
    """Files that failed while loading, warned about once each."""

    def __init__(self, name: str):
        self.name, self.failed = name, {}

    def add(self, failures: dict[str, str]) -> None:
        for path, reason in failures.items():
            if path not in self.failed:
                self.failed[path] = reason
                warnings.warn(f"{self.name}: could not load {path} ({reason}); skipped for the next video "
                              f"({len(self.failed)} failed so far)", stacklevel=3)


# Decoding workers start as fresh interpreters: a worker forked from a process whose threads (torch's, the
# compiler's, the video decoder's) held a lock at that moment can wait on it forever.
WORKER_START = "spawn"


class VideoClipBatches:
    """batch_fn for the trainer: `batch_size` clips per step, decoded ahead in `num_workers` processes.

    Clip j of step k comes from `stream(seed, k, j)`, so the batch of step k is the same whichever step
    the run started from. Steps asked for in order are served from one DataLoader that decodes ahead;
    a jump (resume) starts a new one at that step. `num_workers=0` decodes in this process.
    """

    def __init__(self, dataset: VideoClipDataset, batch_size: int, seed: int = 0, num_workers: int | None = None,
                 channels_last: bool = False):
        self.clips, self.batch_size = SeededClips(dataset, seed), batch_size
        self.num_workers = default_workers() if num_workers is None else num_workers
        self.channels_last = channels_last
        self.failures = _FailureCount(dataset.name)
        self._iterator, self._next_step, self._rank = None, None, None

    @property
    def failed(self) -> dict[str, str]:
        return self.failures.failed

    def _batches(self, first_step: int, rank: int, world_size: int):
        share = self.batch_size // world_size
        step = first_step
        while True:  # this process's slice of each global batch, step after step
            yield [(step, j, None) for j in range(rank * share, (rank + 1) * share)]
            step += 1

    def __call__(self, step: int, rank: int = 0, world_size: int = 1) -> torch.Tensor:
        if self._iterator is None or step != self._next_step or rank != self._rank:
            self.close()
            loader = DataLoader(self.clips, batch_sampler=self._batches(step, rank, world_size),
                                num_workers=self.num_workers, collate_fn=_collate, persistent_workers=False,
                                prefetch_factor=2 if self.num_workers else None,
                                multiprocessing_context=WORKER_START if self.num_workers else None)
            self._iterator, self._rank = iter(loader), rank
        clips, failures = next(self._iterator)  # (B / world, C, F, H, W)
        self._next_step = step + 1
        self.failures.add(failures)
        return clips.to(memory_format=torch.channels_last_3d) if self.channels_last else clips

    def close(self) -> None:
        """Stop the worker processes (a later call starts new ones)."""
        self._iterator = None  # the DataLoader iterator shuts its workers down when it goes


def decode_video_clips(dataset: VideoClipDataset, num_clips: int, seed: int = 0, batch_size: int = 16,
                       num_workers: int | None = None, progress: bool = True, desc: str = "decode clips"):
    """Yield (clips (b, C, F, H, W), failures) batches of the set: clip i is video i mod N at a start drawn
    from `stream(seed, -1, i)` (the middle clip when `dataset.random_start` is False)."""
    keys = [(-1, i, i % len(dataset)) for i in range(num_clips)]
    workers = default_workers() if num_workers is None else num_workers
    loader = DataLoader(SeededClips(dataset, seed), batch_sampler=[keys[i:i + batch_size]
                                                                     for i in range(0, num_clips, batch_size)],
                        num_workers=workers, collate_fn=_collate,
                        multiprocessing_context=WORKER_START if workers else None)
    with tqdm(total=num_clips, desc=desc, unit="clip", disable=not progress, file=sys.stderr) as bar:
        for clips, failures in loader:
            yield clips, failures
            bar.update(len(clips))


@torch.no_grad()
def encode_video_clips(vae: VideoAutoencoder, dataset: VideoClipDataset, num_clips: int, seed: int = 0,
                       batch_size: int = 16, num_workers: int | None = None, progress: bool = True) -> torch.Tensor:
    """Normalised latents (N, c, f, h, w) on the CPU of `num_clips` clips of `dataset` (`decode_video_clips`)."""
    vae.eval()
    device = vae.latent_scale.device
    failures, latents = _FailureCount(dataset.name), []
    for clips, failed in decode_video_clips(dataset, num_clips, seed, batch_size, num_workers, progress,
                                            desc="decode + encode clips"):
        failures.add(failed)
        latents.append(vae.encode(clips.to(device)).cpu())  # (b, c, f, h, w)
    return torch.cat(latents)


def encode_video_data(vae: VideoAutoencoder, data: DataConfig, num_clips: int, num_frames: int | None = None,
                      progress: bool = True, num_workers: int | None = None) -> torch.Tensor:
    """The latent set of a video `DataConfig` (its training split): what `recipes.encoded_training_set` caches."""
    dataset = open_video_dataset(data, random_start=True, num_frames=num_frames)
    check_channels(data, vae.config.in_channels)
    return encode_video_clips(vae, dataset, num_clips, seed=data.seed, num_workers=num_workers, progress=progress)


def check_channels(data: DataConfig, in_channels: int) -> None:
    if data.channels != in_channels:
        raise ValueError(f"the data has {data.channels} channels per frame, the autoencoder takes {in_channels}: "
                         f"they must match")


def video_files_fingerprint(data: DataConfig) -> str:
    """sha256 of the relative path, size and modification time of every video file and frame image under
    `data.root`: changes when a file is added, removed or rewritten (no file is read, so it is cheap)."""
    root = Path(data.root).expanduser()
    lines = []
    for path in sorted(root.rglob("*")):
        if path.is_file() and path.suffix.lower() in (*READ_EXTENSIONS, *IMAGE_EXTENSIONS, ".txt"):
            stat = path.stat()  # .txt: UCF-101's split lists
            lines.append(f"{path.relative_to(root).as_posix()}:{stat.st_size}:{stat.st_mtime_ns}")
    if not lines:
        raise FileNotFoundError(f"no videos under {root}")
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()


# ----------------------------------------------------------------------------- the autoencoder on video
def train_video_autoencoder(preset: Preset, out: str | Path, train_config, *, init: str | Path | None = None,
                            resume: bool = False, device: str = "auto", stats_clips: int = 256, callbacks=(),
                            progress: bool = True, num_workers: int | None = None) -> dict:
    """`recipes.train_autoencoder` on a video data set: random clips of its split (`data.split`) every step
    (`VideoClipBatches`); the latent shift/scale from `stats_clips` other clips. Writes OUT/vae.safetensors."""
    data = preset.data
    check_channels(data, preset.vae.in_channels)
    dataset = open_video_dataset(data, random_start=True)
    torch.manual_seed(train_config.seed)
    model = AutoencoderWithLoss(preset.vae)
    metadata = {"preset": preset.name, "data": to_dict(data), "num_videos": len(dataset),
                "skipped_videos": len(dataset.skipped)}
    if init is not None:  # checked against the preset by `recipes.resolve_autoencoder_run`
        start = VideoAutoencoder.load(init)
        if not resume:
            model.autoencoder.load_state_dict(start.state_dict())
        metadata.update(init=str(init), init_sha256=file_sha256(init), init_steps=start.metadata.get("steps"))
    model = model.to(memory_format=torch.channels_last_3d)  # faster 3D convs on CPU
    batches = VideoClipBatches(dataset, train_config.batch_size, seed=data.seed, num_workers=num_workers,
                               channels_last=True)
    trainer = Trainer(model, autoencoder_loss, batches, train_config, out, device=device, metadata=metadata,
                      resume=resume, callbacks=callbacks, progress=progress)
    try:
        summary = trainer.fit()
    finally:
        batches.close()
    autoencoder = trainer.ema_model.autoencoder.eval()
    clips = torch.cat([clips for clips, _ in decode_video_clips(dataset, stats_clips, data.seed + 12345,
                                                                num_workers=num_workers, progress=progress,
                                                                desc="clips for the latent statistics")])
    stats = autoencoder.fit_latent_stats(clips.to(trainer.device))  # latent shift/scale from data
    path = Path(out) / "vae.safetensors"
    if trainer.is_main:  # one writer under DDP
        autoencoder.save(path, {**metadata, "train": to_dict(train_config), "steps": summary["steps"],
                                "train_seconds": summary["seconds"], "final_loss": summary["final_loss"],
                                "stats_clips": stats_clips, "failed_videos": len(batches.failed)})
    return {**summary, "ckpt": str(path), **stats, "num_videos": len(dataset), "split": data.split,
            "skipped_videos": len(dataset.skipped), "failed_videos": len(batches.failed),
            "compression_ratio": autoencoder.compression_ratio(data.num_frames, data.size, data.size)}
