"""Weights + config in one safetensors file (no pickle), written atomically.

`save_weights` stores tensors and a JSON `metadata` dict (the config, which VAE a model
expects, latent scale/shift, ...). `load_weights` returns both. Every write goes to a temp
file in the same folder and is renamed over the target, so an interrupted write never leaves
a broken file behind (rename is atomic on POSIX and Windows).
"""
from __future__ import annotations

import json
import math
import numbers
import os
import tempfile
from pathlib import Path
from typing import Callable

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, safe_open, save_file

METADATA_KEY = "lvdm_ref"
# What a checkpoint holds, recorded as its metadata's "kind" (the loaders and the commands check it).
VAE_KIND = "vae3d"  # the 3D autoencoder (vae3d.py)
SHORT_KIND = "lvdm_short"  # the short LVDM (lvdm.py)
PRED_KIND, INTERP_KIND = "lvdm_pred", "lvdm_interp"  # the hierarchy's two models (hierarchy.py)
T2V_KIND = "lvdm_t2v"  # the caption-conditioned model (text_to_video.py)
SHIPPED_DIR = Path(__file__).resolve().parents[1] / "data" / "checkpoints"  # weights trained by this project


def atomic_write(path: str | os.PathLike, write: Callable[[str], None]) -> Path:
    """Call `write(tmp_path)`, then rename tmp over `path`. On any error the target is untouched."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes files private (0600); a checkpoint is an ordinary file
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    return path


def strict(value):
    """`value` with every float that is not finite (NaN, Infinity) replaced by None: strict JSON parsers refuse
    the `NaN` and `Infinity` that Python's json writes by default."""
    if isinstance(value, numbers.Real) and not math.isfinite(value):  # Python and numpy numbers
        return None
    if isinstance(value, dict):
        return {key: strict(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [strict(item) for item in value]
    return value


def dumps(value, **options) -> str:
    """Strict JSON text of `value` (`strict`): what every file and result line of the project holds."""
    return json.dumps(strict(value), allow_nan=False, **options)


def write_json(path: str | os.PathLike, data: dict) -> Path:
    """`data` as indented JSON at `path`, written atomically (a run of record is never left half-written)."""
    text = dumps(data, indent=1) + "\n"
    return atomic_write(path, lambda tmp: Path(tmp).write_text(text))


def save_weights(path: str | os.PathLike, tensors: dict[str, torch.Tensor], metadata: dict) -> Path:
    """Write `tensors` (contiguous CPU copies) and `metadata` (JSON-able) to a .safetensors file."""
    tensors = {name: t.detach().to("cpu").contiguous() for name, t in tensors.items()}
    header = {METADATA_KEY: dumps(metadata)}
    return atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=header))


def load_weights(path: str | os.PathLike, device: str | torch.device = "cpu") -> tuple[dict[str, torch.Tensor], dict]:
    """Read a file written by `save_weights`: (tensors, metadata)."""
    metadata = read_metadata(path)  # checks the file first: exists, safetensors, written here
    try:
        tensors = load_file(str(path), device=str(device))
    except SafetensorError as error:
        raise ValueError(f"{path} is not a readable safetensors file ({error}); was the write interrupted?") from error
    return tensors, metadata


def read_metadata(path: str | os.PathLike) -> dict:
    """Only the metadata of a file written by `save_weights` (reads the header, not the tensors)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no checkpoint at {path}; train one first or pass the path of a shipped file "
                                f"in data/checkpoints/")
    try:
        with safe_open(str(path), framework="pt") as handle:
            header = handle.metadata() or {}
    except SafetensorError as error:
        raise ValueError(f"{path} is not a readable safetensors file ({error}); was the write interrupted?") from error
    if METADATA_KEY not in header:
        raise ValueError(f"{path} has no '{METADATA_KEY}' metadata: it was not written by lvdm_ref.checkpoint")
    return json.loads(header[METADATA_KEY])


def prefixed(state: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """Namespace a state dict: {'w': t} -> {'prefix.w': t}."""
    return {f"{prefix}.{name}": tensor for name, tensor in state.items()}


def unprefixed(tensors: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """Inverse of `prefixed`: the entries under `prefix.`, with the prefix removed."""
    start = prefix + "."
    return {name[len(start):]: tensor for name, tensor in tensors.items() if name.startswith(start)}


def export_for_sampling(source: str | os.PathLike, target: str | os.PathLike, fp16: bool = False) -> dict:
    """Copy a diffusion checkpoint keeping only what sampling loads: the EMA weights (or the raw ones when
    it has none), with the same metadata. `LatentVideoDiffusion.load` gives the same model from either.
    `fp16` stores the float weights as float16 (half the bytes); loading casts them back to float32, so the
    model is the fp32 one with each weight rounded to fp16 (check its quality before shipping it)."""
    if Path(source).resolve() == Path(target).resolve():
        raise ValueError(f"export to a new file, not over {source} (it keeps the raw weights too)")
    tensors, metadata = load_weights(source)
    keep = "ema." if any(name.startswith("ema.") for name in tensors) else "unet."
    kept = {name: tensor for name, tensor in tensors.items() if name.startswith(keep)}
    if not kept:
        raise ValueError(f"{source} holds no 'ema.' or 'unet.' weights: it is not a diffusion model checkpoint")
    if fp16:
        kept = {name: tensor.half() if tensor.is_floating_point() else tensor for name, tensor in kept.items()}
    save_weights(target, kept, {**metadata, "exported_from": Path(source).name, "kept": keep.rstrip("."),
                                "storage": "float16" if fp16 else "as trained"})
    return {"out": str(target), "kept": keep.rstrip("."), "tensors": len(kept),
            "bytes": Path(target).stat().st_size, "source_bytes": Path(source).stat().st_size}
