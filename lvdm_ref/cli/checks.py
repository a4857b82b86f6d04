"""Argument checks for the command line: each finds a bad argument before any work starts.

Two kinds. The argparse `type=` functions (`integer`, `number`, `input_file`, `caption`, `clip_source`,
`start_source`, `video_root`, `output_file`, `output_folder`, `url`, `device`) check one argument as argparse
reads it; argparse then stops with `lvdm <command>: error: argument --x: <problem and fix>` and exit status 2.
Everything that needs two arguments, a checkpoint's header or an input's contents is checked by the
command's `resolve` step (`lvdm_ref/cli/__init__.py`), which calls the `check_*` functions here and the
library's own resolve steps (`recipes.resolve_*`): their `UsageError` or `ValueError` becomes one line,
`error: ...`, with exit status 2, before any model loads. While a command runs, only the loading of a file
the user passed is wrapped (`with user_input():`); any other exception is a bug and keeps its traceback.
"""
from __future__ import annotations

import argparse
import math
import tarfile
import tempfile
import zipfile
from contextlib import contextmanager
from pathlib import Path

import torch

from lvdm_ref.captions import parse_caption
from lvdm_ref.checkpoint import INTERP_KIND, PRED_KIND, VAE_KIND, read_metadata
from lvdm_ref.config import HierarchyConfig, from_dict
from lvdm_ref.long_video import check_pair
from lvdm_ref.metrics import NUM_FRAMES
from lvdm_ref.perturbation import sampling_levels, train_max_level
from lvdm_ref.video_io import READ_EXTENSIONS


class UsageError(ValueError):
    """A bad argument or input file: `cli.main` prints the message as one line and exits with status 2."""


# What reading a file the user passed may raise about its contents: a ValueError (the library's checks, PyAV's
# InvalidDataError), a missing file, a broken archive.
INPUT_ERRORS = (ValueError, FileNotFoundError, zipfile.BadZipFile, tarfile.TarError)


@contextmanager
def user_input():
    """Re-raise an `INPUT_ERRORS` error from reading what the user passed as a `UsageError`.

    Wrap only resolve steps and the loading of user-given files (checkpoints, clips, downloads): an error
    there is about the input. The same error types raised while training or sampling are bugs and keep
    their traceback.
    """
    try:
        yield
    except UsageError:
        raise
    except INPUT_ERRORS as error:
        text = " ".join(line.strip() for line in str(error).splitlines()) or type(error).__name__  # one line
        if isinstance(error, (zipfile.BadZipFile, tarfile.TarError)):
            text = f"not a readable {'zip' if isinstance(error, zipfile.BadZipFile) else 'tar'} archive ({text})"
        raise UsageError(text) from error


def header(path: Path) -> dict:
    """The metadata of a checkpoint the user passed (a file that is not one is a usage error)."""
    with user_input():
        return read_metadata(path)


# ----------------------------------------------------------------------------- one argument
def integer(minimum: int, maximum: int | None = None):
    """argparse type: a whole number in [minimum, maximum]."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if value < minimum or (maximum is not None and value > maximum):
            allowed = f"at least {minimum}" if maximum is None else f"between {minimum} and {maximum}"
            raise argparse.ArgumentTypeError(f"must be {allowed}, got {value}")
        return value

    return parse


def number(minimum: float, maximum: float | None = None, *, above: bool = False, below: bool = False):
    """argparse type: a finite real number in [minimum, maximum] (`above`/`below`: the bound itself excluded)."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        low_ok = value > minimum if above else value >= minimum
        high_ok = maximum is None or (value < maximum if below else value <= maximum)
        if not (math.isfinite(value) and low_ok and high_ok):  # also refuses nan and inf
            low = f"{'above' if above else 'at least'} {minimum:g}"
            allowed = low if maximum is None else f"{low} and {'below' if below else 'at most'} {maximum:g}"
            raise argparse.ArgumentTypeError(f"must be a finite number, {allowed}; got {text}")
        return value

    return parse


def _check_suffix(path: Path, suffixes: tuple[str, ...]) -> None:
    if suffixes and not path.name.lower().endswith(suffixes):
        raise argparse.ArgumentTypeError(f"{str(path)!r} has an unsupported extension; use one of {', '.join(suffixes)}")


def _check_writable(path: Path) -> None:
    """`path` (a file or folder, which may not exist yet) can be created: its nearest existing folder is writable."""
    folder = path.absolute().parent
    while not folder.exists():
        folder = folder.parent
    if not folder.is_dir():
        raise argparse.ArgumentTypeError(f"cannot create {path}: {folder} is a file, not a folder")
    try:  # a real write, not os.access: that says yes to root on read-only or virtual file systems
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as error:
        raise argparse.ArgumentTypeError(f"cannot write {path}: {folder} is not writable ({error.strerror}); "
                                         f"choose another place") from None


def input_file(*suffixes: str):
    """argparse type: an existing file (with one of `suffixes`, when given)."""

    def parse(text: str) -> Path:
        path = Path(text)
        if not path.is_file():
            problem = "is a folder, not a file" if path.is_dir() else "does not exist"
            raise argparse.ArgumentTypeError(f"{text} {problem}; check the path")
        _check_suffix(path, suffixes)
        return path

    return parse


def caption(text: str) -> str:
    """argparse type: a caption naming 1 to 3 digits, "3 and 7" (`captions.parse_caption` reads it)."""
    try:
        parse_caption(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    return text


def clip_source(text: str) -> Path:
    """argparse type: clips for FVD: an .npz, a video file, or a folder holding video files."""
    path = Path(text)
    if path.is_dir():
        if not any(p.is_file() and p.suffix.lower() in READ_EXTENSIONS for p in path.iterdir()):
            raise argparse.ArgumentTypeError(f"{text} is a folder with no video files ({', '.join(READ_EXTENSIONS)}); "
                                             f"pass an .npz, a video file or a folder of videos")
        return path
    return input_file(".npz", *READ_EXTENSIONS)(text)


def video_root(text: str) -> Path:
    """argparse type: an existing folder of videos (the UCF-101 layout, or any folder; its contents are
    checked when the command opens it)."""
    path = Path(text).expanduser()
    if not path.is_dir():
        problem = "is a file, not a folder" if path.exists() else "does not exist"
        raise argparse.ArgumentTypeError(f"{text} {problem}; pass the folder that holds the videos (UCF-101: the "
                                         f"folder with UCF-101/ and ucfTrainTestlist/)")
    return path


def start_source(text: str) -> str | Path:
    """argparse type for sample-long --start: "generated", "real", or a clip file (.npz or a video file)."""
    if text in ("generated", "real"):
        return text
    return input_file(".npz", *READ_EXTENSIONS)(text)


def output_file(*suffixes: str):
    """argparse type: a file to write, with one of `suffixes`, whose folder exists or can be made."""

    def parse(text: str) -> Path:
        path = Path(text)
        _check_suffix(path, suffixes)
        if path.is_dir():
            raise argparse.ArgumentTypeError(f"{text} is a folder; pass a file name such as {text}/out{suffixes[0]}")
        _check_writable(path)
        return path

    return parse


def output_folder(text: str) -> Path:
    """argparse type: a folder to write into, existing or not (never an existing file)."""
    path = Path(text)
    if path.exists() and not path.is_dir():
        raise argparse.ArgumentTypeError(f"{text} is a file; pass a folder")
    _check_writable(path)
    return path


def url(text: str) -> str:
    """argparse type: an http(s):// or file:// URL."""
    if not text.startswith(("https://", "http://", "file://")):
        raise argparse.ArgumentTypeError(f"{text!r} is not a URL; pass one that starts with https://, http:// "
                                         f"or file://")
    return text


def device(text: str) -> str:
    """argparse type: "auto", "cpu", or a CUDA device that this machine has (other kinds are not supported)."""
    if text in ("auto", "cpu"):
        return text
    try:
        parsed = torch.device(text)
    except RuntimeError:
        raise argparse.ArgumentTypeError(f"unknown device {text!r}; use auto, cpu, cuda or cuda:N") from None
    if parsed.type != "cuda":
        raise argparse.ArgumentTypeError(f"{text}: device type {parsed.type!r} is not supported here; use auto, cpu, "
                                         f"cuda or cuda:N")
    if not (torch.cuda.is_available() and (parsed.index or 0) < torch.cuda.device_count()):
        raise argparse.ArgumentTypeError(f"{text}: no such CUDA device here ({torch.cuda.device_count()} found); "
                                         f"use --device cpu or auto")
    return text


# ----------------------------------------------------------------------------- across arguments
def check_not_overwriting(outputs: dict[str, Path | None], inputs: dict[str, Path | str | None]) -> None:
    """No file a command writes is one of the files it reads (e.g. `sample-long --start x.npz --out x.npz`),
    nor another of the files it writes (`--out x.png --figure x.png`)."""
    read = {Path(path).resolve(): option for option, path in inputs.items() if isinstance(path, Path)}
    written: dict[Path, str] = {}
    for option, path in outputs.items():
        if path is None:
            continue
        if Path(path).resolve() in read:
            raise UsageError(f"{option} {path} is also {read[Path(path).resolve()]}: the command would overwrite its "
                             f"input; write to another file")
        if Path(path).resolve() in written:
            raise UsageError(f"{option} {path} is also {written[Path(path).resolve()]}: one output would overwrite "
                             f"the other; write to another file")
        written[Path(path).resolve()] = option


def check_autoencoder(path: Path, option: str) -> None:
    """`option` (--vae, --init, --ckpt) names an autoencoder checkpoint (reads only the header)."""
    kind = header(path).get("kind")
    if kind != VAE_KIND:
        raise UsageError(f"{option} {path} holds a {kind!r} checkpoint, not an autoencoder ({VAE_KIND!r}); pass one "
                         f"written by `train-vae`, e.g. {option} data/checkpoints/mmnist_vae.safetensors")


def check_fvd_clips(videos, option: str, path: Path) -> None:
    """The clips of --real / --fake are what FVD scores: uint8 (N, 16, H, W, C)."""
    if videos.ndim == 5 and videos.shape[1] != NUM_FRAMES:
        frames = f"{videos.shape[1]} frame" + ("s" if videos.shape[1] != 1 else "")
        raise UsageError(f"{option} {path} holds clips of {frames}; FVD scores clips of exactly "
                         f"{NUM_FRAMES} frames (its I3D protocol). Make {NUM_FRAMES}-frame clips (`data moving-mnist "
                         f"--frames {NUM_FRAMES}`, `sample --out x.npz`), cut longer ones (videos[:, :{NUM_FRAMES}]), "
                         f"or pass a video file or a folder of them, cut into consecutive {NUM_FRAMES}-frame clips")


def check_sampler_steps(ckpt: Path, sampler: str, steps: int | None) -> None:
    """DDIM steps fit the checkpoint's chain; DDPM takes all of them (reads only the header)."""
    if steps is None:
        return
    diffusion = header(ckpt).get("diffusion", {})
    num_timesteps = diffusion.get("num_timesteps")
    if num_timesteps is None:  # not a diffusion checkpoint: loading it says so
        return
    if sampler == "ddpm" and steps != num_timesteps:
        raise UsageError(f"--steps {steps}: DDPM takes all {num_timesteps} steps of the chain; drop --steps "
                         f"or use --sampler ddim")
    if steps > num_timesteps:
        raise UsageError(f"--steps {steps}: {ckpt.name} has a chain of {num_timesteps} steps; "
                         f"use --steps between 1 and {num_timesteps}")
    if diffusion.get("timestep_spacing") == "leading" and steps > num_timesteps // 2:  # diffusion.py says why
        raise UsageError(f"--steps {steps}: {ckpt.name} samples DDIM with LVDM's 'leading' timesteps, which take "
                         f"at most {num_timesteps // 2} of its {num_timesteps} steps")


def check_hierarchy_pair(pred: Path, interp: Path | None, steps: int, perturbation_level: int | None) -> dict:
    """--pred / --interp are a prediction and an interpolation checkpoint on one autoencoder, the steps fit
    their chains and the perturbation level fits the prediction model (reads only the headers). --interp is
    left out for a prediction model whose keyframes are 1 latent apart."""
    headers = {}
    given = [("--pred", pred, PRED_KIND)] + ([("--interp", interp, INTERP_KIND)] if interp is not None else [])
    for name, path, kind in given:
        meta = header(path)
        if meta.get("kind") != kind:
            raise UsageError(f"{name} {path} holds a {meta.get('kind')!r} checkpoint, not a {kind!r} one "
                             f"(train it with `train --model {kind.split('_')[1]}`)")
        check_sampler_steps(path, "ddim", steps)
        headers[name] = meta
    configs = [from_dict(HierarchyConfig, headers[name]["hierarchy"]) for name in headers]
    shas = [headers[name].get("vae", {}).get("sha256") for name in headers]
    with user_input():  # the library's own checks, on the headers; their messages name the flags
        check_pair(configs[0], configs[1] if interp is not None else None, *shas)
        max_level = train_max_level(headers["--pred"]["diffusion"]["num_timesteps"], configs[0].max_perturbation_level)
        sampling_levels(1, perturbation_level, max_level)  # a level the prediction model was trained with
    return headers


def renamed(new: str, meaning: str):
    """argparse type of a flag's old spelling: always an error that names the new one."""

    def parse(text: str):
        raise argparse.ArgumentTypeError(f"this flag is now {new} ({meaning}); pass {new} {text}")

    return parse
