"""Small helpers used across lvdm_ref. Nothing clever lives here."""
from __future__ import annotations

import atexit
import hashlib
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lvdm_ref.checkpoint import strict


def is_quick() -> bool:
    """True when `LVDM_QUICK=1` asks for the small, fast version of everything."""
    return os.environ.get("LVDM_QUICK", "0").strip().lower() in {"1", "true", "yes", "on"}


def cache_dir() -> Path:
    """Downloads and parsed caches: `$LVDM_CACHE`, else `data/cache/` in a source checkout
    (git-ignored), else `~/.cache/lvdm_ref` for an installed package."""
    if os.environ.get("LVDM_CACHE"):
        return Path(os.environ["LVDM_CACHE"]).expanduser()
    repo = Path(__file__).resolve().parents[1]
    if (repo / "pyproject.toml").exists():
        return repo / "data" / "cache"
    return Path.home() / ".cache" / "lvdm_ref"


def file_sha256(path: str | os.PathLike) -> str:
    """sha256 of a file's bytes, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def get_device(name: str | None = None) -> torch.device:
    """`"auto"`/None picks CUDA when present, else CPU."""
    if name in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def stream(seed: int, *keys: int) -> torch.Generator:
    """A CPU torch.Generator for (seed, keys): one reproducible stream per sample (and per stage, pair, ...).

    The project's one random-stream idiom: sample i of a set drawn with `seed` uses `stream(seed, i, ...)`,
    so it depends only on (seed, i), never on the batch it was drawn in or on how many were asked for.
    """
    text = ",".join(str(int(part)) for part in (seed, *keys))  # keys of any length never collide
    return torch.Generator().manual_seed(int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little"))


def randn(shape: tuple[int, ...], generator: torch.Generator | list[torch.Generator] | None = None,
          device: torch.device | str | None = None, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Standard normal noise of `shape` on `device`, drawn on the generator's own device and moved.

    `generator` is one generator, or a list of one per sample along dim 0 (each draws its row). Drawing
    where the generator lives and moving the result (as diffusers' `randn_tensor` does) lets CPU streams
    feed a CUDA sampler and gives the same numbers on every device.
    """
    if isinstance(generator, (list, tuple)):
        if len(generator) != shape[0]:
            raise ValueError(f"got {len(generator)} generators for {shape[0]} samples: pass one per sample")
        rows = [torch.randn((1, *shape[1:]), generator=g, device=g.device, dtype=dtype) for g in generator]
        return torch.cat(rows).to(device)
    if generator is None:
        return torch.randn(shape, device=device, dtype=dtype)
    return torch.randn(shape, generator=generator, device=generator.device, dtype=dtype).to(device)


def to_uint8(video: torch.Tensor) -> np.ndarray:
    """(B, C, F, H, W) or (C, F, H, W) float in [-1, 1] -> uint8 (B, F, H, W, C) / (F, H, W, C)."""
    video = ((video.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    if video.ndim == 5:
        return video.permute(0, 2, 3, 4, 1).cpu().numpy()  # (B, F, H, W, C)
    if video.ndim == 4:
        return video.permute(1, 2, 3, 0).cpu().numpy()  # (F, H, W, C)
    raise ValueError(f"expected a (B, C, F, H, W) or (C, F, H, W) tensor, got shape {tuple(video.shape)}")


def from_uint8(videos: np.ndarray) -> torch.Tensor:
    """uint8 (B, F, H, W, C) or (F, H, W, C) -> float (B, C, F, H, W) / (C, F, H, W) in [-1, 1]."""
    if videos.dtype != np.uint8:
        raise ValueError(f"expected uint8 videos, got dtype {videos.dtype}")
    tensor = torch.from_numpy(np.ascontiguousarray(videos)).float() / 127.5 - 1
    if tensor.ndim == 5:
        return tensor.permute(0, 4, 1, 2, 3).contiguous()  # (B, C, F, H, W)
    if tensor.ndim == 4:
        return tensor.permute(3, 0, 1, 2).contiguous()  # (C, F, H, W)
    raise ValueError(f"expected (B, F, H, W, C) or (F, H, W, C) uint8 videos, got shape {videos.shape}")


def is_main_process() -> bool:
    """True in a single process and in rank 0 under `torchrun` (which sets RANK before any process group)."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank() == 0
    return int(os.environ.get("RANK", "0")) == 0


def print_result(result: dict) -> None:
    """End a command: one JSON object on the last line of stdout (docs/ARCHITECTURE.md, the command line); under
    `torchrun` only rank 0 prints, so N processes still give one result. Strict JSON: a number that is not
    finite prints as null (`checkpoint.strict`), never as the NaN or Infinity strict parsers refuse."""
    if not is_main_process():
        return
    sys.stdout.flush()
    print(json.dumps(strict(result), default=_jsonable, allow_nan=False))


def _jsonable(value: Any) -> Any:
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def scratch_dir(prefix: str = "lvdm_") -> Path:
    """A new temporary folder for what a notebook writes (checkpoints, latents), removed when the process exits
    (a notebook's kernel: when it shuts down), so they do not pile up in the temp directory. A killed process
    runs no exit handlers (nbval stops its kernels that way): the folders it left, named after its process id,
    are removed by the next call in any process."""
    root = Path(tempfile.gettempdir()) / "lvdm_scratch"
    root.mkdir(exist_ok=True)
    for folder in root.iterdir():  # <pid>_<prefix>...: remove those whose process is gone
        pid = folder.name.split("_", 1)[0]
        if pid.isdigit() and not _process_exists(int(pid)):
            shutil.rmtree(folder, ignore_errors=True)
    path = Path(tempfile.mkdtemp(prefix=f"{os.getpid()}_{prefix}", dir=root))
    atexit.register(shutil.rmtree, path, ignore_errors=True)
    return path


def _process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)  # signal 0: only asks whether the process exists
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, under another user
        return True
    return True


def check_quoted(value: float, quoted: str) -> None:
    """Assert that `quoted`, a number as a notebook's text writes it ("0.65", "1,656", "+0.062", "12.4x"), is
    `value` rounded to the digits it shows. Notebooks check the numbers in their prose with it."""
    text = quoted.replace(",", "").rstrip("x%").strip()
    digits = len(text.split(".")[1]) if "." in text else 0
    if abs(value - float(text)) > 0.5 * 10 ** -digits + 1e-9:
        raise AssertionError(f"the text says {quoted}, the data give {value:.{digits + 3}f}")
