"""Viewers: inline videos, grids of clips, frame strips, and saving (show, don't print).

`show_video` embeds a looping GIF, base64-encoded, in an HTML <img> tag. That one output plays
in JupyterLab, classic Jupyter, VS Code, Colab and in notebooks rendered on GitHub, with no
JavaScript and no separate file. GIFs of 64x64 gray clips are a few kB; keep grids small so the
notebooks stay small. Pixels are magnified by the browser (`scale`), not resampled in the file.

Every viewer takes uint8 (F, H, W, C) (or (F, H, W)), a batch uint8 (N, F, H, W, C) (shown as a
grid), or a model tensor float (C, F, H, W) / (B, C, F, H, W) in [-1, 1].

Model views: `capture_attention(model)` records a model's attention maps with forward hooks;
`show_attention` and `plot_latents` draw them. matplotlib is imported inside the drawing functions
only: it is slow to import, and the command line and the trainer use this module without drawing.
"""
from __future__ import annotations

import base64
import html
import math
import warnings
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from einops import rearrange
from PIL import Image
from torch import nn

from lvdm_ref.unet import SelfAttention
from lvdm_ref.utils import to_uint8
from lvdm_ref.video_io import WRITE_EXTENSIONS, encode_gif, write_video

MAX_INLINE_BYTES = 2_000_000  # above this an inline GIF makes the notebook heavy: warn
SAVE_EXTENSIONS = WRITE_EXTENSIONS + (".png", ".npz")  # what `save_video` writes


def as_video(video: np.ndarray | torch.Tensor, nrow: int | None = None) -> np.ndarray:
    """Any of the accepted layouts -> one uint8 video (F, H, W, C); batches become a grid."""
    if isinstance(video, torch.Tensor):
        if video.dtype == torch.uint8:  # already pixels in the I/O layout
            video = video.cpu().numpy()
        else:
            video = to_uint8(video)  # (C, F, H, W) -> (F, H, W, C) or (B, C, F, H, W) -> (B, F, H, W, C)
    video = np.asarray(video)
    if video.dtype != np.uint8:
        raise ValueError(f"numpy videos must be uint8 (F, H, W, C); got {video.dtype}. "
                         "Float tensors in [-1, 1] are accepted as torch tensors (C, F, H, W)")
    if video.ndim == 3:
        return video[..., None]  # (F, H, W) -> (F, H, W, 1)
    if video.ndim == 4:
        return video
    if video.ndim == 5:
        return video_grid(video, nrow=nrow or math.ceil(math.sqrt(len(video))))
    raise ValueError(f"expected a video (F, H, W[, C]) or a batch (N, F, H, W, C), got shape {video.shape}")


# ----------------------------------------------------------------------------- layouts
def video_grid(videos: np.ndarray | torch.Tensor, nrow: int = 8, padding: int = 2,
               pad_value: int = 255) -> np.ndarray:
    """Tile N clips uint8 (N, F, H, W, C) into one video uint8 (F, H', W', C), `nrow` clips per
    row, `padding` pixels of `pad_value` around every tile (white lines: MNIST is black)."""
    if isinstance(videos, torch.Tensor):
        videos = to_uint8(videos) if videos.dtype != torch.uint8 else videos.cpu().numpy()  # (N, F, H, W, C)
    videos = np.asarray(videos)
    if videos.ndim != 5 or videos.dtype != np.uint8:
        raise ValueError(f"expected uint8 clips (N, F, H, W, C), got {videos.dtype} {videos.shape}")
    if nrow < 1 or padding < 0:
        raise ValueError(f"need nrow >= 1 and padding >= 0, got nrow={nrow}, padding={padding}")
    num = len(videos)
    columns = min(nrow, num)
    rows = math.ceil(num / columns)
    blank = np.full((rows * columns - num, *videos.shape[1:]), pad_value, dtype=np.uint8)
    tiles = np.concatenate([videos, blank])  # (rows*columns, F, H, W, C)
    tiles = np.pad(tiles, ((0, 0), (0, 0), (padding, 0), (padding, 0), (0, 0)), constant_values=pad_value)
    grid = rearrange(tiles, "(r c) f h w ch -> f (r h) (c w) ch", r=rows, c=columns)  # (F, H', W', C)
    return np.pad(grid, ((0, 0), (0, padding), (0, padding), (0, 0)), constant_values=pad_value)


def frame_strip(video: np.ndarray | torch.Tensor, every: int = 1, max_frames: int | None = None,
                padding: int = 2, pad_value: int = 255) -> np.ndarray:
    """Frames 0, every, 2*every, ... side by side: one uint8 image (H, W', C), ready for PNG."""
    video = as_video(video)
    if every < 1:
        raise ValueError(f"every must be >= 1, got {every}")
    frames = video[::every][:max_frames]  # (n, H, W, C)
    return video_grid(frames[:, None], nrow=len(frames), padding=padding, pad_value=pad_value)[0]  # (H, W', C)


# ----------------------------------------------------------------------------- showing
def show_video(video: np.ndarray | torch.Tensor, fps: float = 8, scale: int | None = None,
               nrow: int | None = None, title: str | None = None):
    """An inline, looping animation (IPython HTML with an embedded GIF); display it or end a cell with it.

    scale: how many screen pixels per video pixel (default: enough to be about 192 px wide).
    """
    from IPython.display import HTML

    video = as_video(video, nrow)  # (F, H, W, C)
    height, width = video.shape[1:3]
    scale = scale or max(1, min(4, 192 // width))
    data = encode_gif(video, fps)
    if len(data) > MAX_INLINE_BYTES:
        warnings.warn(f"inline GIF is {len(data) / 1e6:.1f} MB; show fewer or smaller clips to keep notebooks small",
                      stacklevel=2)
    source = base64.b64encode(data).decode("ascii")
    image = (f'<img src="data:image/gif;base64,{source}" width="{width * scale}" height="{height * scale}" '
             f'style="image-rendering: pixelated" alt="{html.escape(title or "video")}"/>')
    caption = f"<div><b>{html.escape(title)}</b></div>" if title else ""
    return HTML(f"<div>{caption}{image}</div>")


def plot_frame_strip(video: np.ndarray | torch.Tensor, every: int = 1, max_frames: int | None = 16,
                     title: str | None = None, ax=None):
    """A matplotlib figure of `frame_strip`, each tile labelled with its frame index."""
    import matplotlib.pyplot as plt

    video = as_video(video)
    strip = frame_strip(video, every, max_frames, padding=2)  # (H, W', C)
    count = len(video[::every][:max_frames])
    if ax is None:
        _, ax = plt.subplots(figsize=(min(12, 0.9 * count + 0.5), 1.6))
    gray = strip.shape[-1] == 1
    ax.imshow(strip[..., 0] if gray else strip, cmap="gray" if gray else None, vmin=0, vmax=255)
    tile = video.shape[2] + 2  # tile width including its padding
    ax.set_xticks([2 + tile * i + video.shape[2] / 2 for i in range(count)],
                  [f"t={i * every}" for i in range(count)], fontsize=7)
    ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=9)
    return ax.figure


def plot_long_video(video: np.ndarray, is_keyframe: np.ndarray, every: int = 16, max_frames: int = 64,
                    per_row: int = 16, title: str | None = None):
    """Frames 0, every, 2 * every, ... of one long video (uint8 (F, H, W, C)) in rows; frames decoded from
    keyframe latents (the prediction model's) outlined in orange, interpolated ones in blue (as FDM marks them).
    The title names only the kinds drawn: with `every` a multiple of the keyframe spacing (16 frames for
    mmnist), every frame shown comes from a keyframe latent."""
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    video = as_video(video)
    index = np.arange(0, len(video), every)[:max_frames]
    rows = math.ceil(len(index) / per_row)
    figure, axes = plt.subplots(rows, per_row, figsize=(per_row * 0.75, rows * 0.85 + 0.4), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, frame in zip(axes.flat, index):
        ax.imshow(video[frame, ..., 0] if video.shape[-1] == 1 else video[frame], cmap="gray", vmin=0, vmax=255)
        color = "tab:orange" if is_keyframe[frame] else "tab:blue"
        ax.add_patch(Rectangle((0, 0), 1, 1, transform=ax.transAxes, fill=False, lw=2.5, ec=color, clip_on=False))
        ax.set_title(str(frame), fontsize=6, pad=2)
    drawn = {bool(is_keyframe[frame]) for frame in index}
    legend = ", ".join(text for kind, text in ((True, "orange: from keyframe latents"), (False, "blue: interpolated"))
                       if kind in drawn)
    figure.suptitle(title or f"one frame in {every} ({legend})", fontsize=9)
    return figure


# ----------------------------------------------------------------------------- saving
def save_figure(figure, path: str | Path, suffixes: tuple[str, ...] = (".png", ".svg"), **savefig) -> list[Path]:
    """Write a matplotlib figure as `path` with each suffix (PNG for pages, SVG for print) and close it; `savefig`
    options go to `Figure.savefig` (dpi 120 unless given; bbox_inches="tight" keeps a legend outside the axes)."""
    import matplotlib.pyplot as plt

    written = []
    for suffix in suffixes:
        target = Path(path).with_suffix(suffix)
        target.parent.mkdir(parents=True, exist_ok=True)
        figure.savefig(target, **{"dpi": 120, **savefig})
        written.append(target)
    plt.close(figure)
    return written


def save_video(path: str | Path, video: np.ndarray | torch.Tensor, fps: float = 8, nrow: int | None = None) -> Path:
    """Save by extension: .mp4 / .avi / .gif (video_io; batches as a grid), .png (frame strip),
    .npz (`videos`, the uint8 array as given)."""
    path = Path(path)
    extension = path.suffix.lower()
    if extension in WRITE_EXTENSIONS:
        return write_video(path, as_video(video, nrow), fps=fps)
    if extension == ".png":
        strip = frame_strip(as_video(video, nrow))  # (H, W', C)
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(strip[..., 0] if strip.shape[-1] == 1 else strip).save(path)
        return path
    if extension == ".npz":
        array = to_uint8(video) if isinstance(video, torch.Tensor) and video.dtype != torch.uint8 else np.asarray(video)
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(path, videos=array)
        return path
    raise ValueError(f"extension must be one of {SAVE_EXTENSIONS}, got {path.name!r}")


# ----------------------------------------------------------------------------- model views
class AttentionMaps:
    """Attention weights recorded inside `capture_attention(model)`; one dict per attention call.

    Each record has `name` (module path), `kind` and `weights` (CPU, softmax rows sum to 1):
    spatial (B, f, heads, h*w, h*w), temporal (B, h, w, heads, f, f), joint (B, heads, f*h*w, f*h*w).
    """

    def __init__(self):
        self.records: list[dict] = []

    def of_kind(self, kind: str) -> list[dict]:
        return [record for record in self.records if record["kind"] == kind]


@contextmanager
def capture_attention(model: nn.Module):
    """`with capture_attention(unet) as maps: unet(x, t)`, then read `maps.records`.

    A forward hook on every attention layer of `model` (`unet.SelfAttention`) forms the softmax weights
    the layer applied to its input (`attention_weights`), so the forward pass is untouched (fused kernels
    stay fused); the hooks are removed when the block ends.
    """
    maps = AttentionMaps()

    def recorder(name: str):
        def hook(module, args, kwargs, output):
            with torch.no_grad():
                weights = module.attention_weights(*args, **kwargs)
            maps.records.append({"name": name, "kind": module.kind, "weights": weights.detach().float().cpu()})
        return hook

    handles = [module.register_forward_hook(recorder(name), with_kwargs=True)
               for name, module in model.named_modules() if isinstance(module, SelfAttention)]
    try:
        yield maps
    finally:
        for handle in handles:
            handle.remove()


def temporal_attention_matrix(record: dict) -> np.ndarray:
    """A captured temporal attention record (B, h, w, heads, f, f) -> its mean (f, f) matrix:
    row i is how much frame i draws from each frame, averaged over clips, pixels and heads."""
    if record["kind"] != "temporal":
        raise ValueError(f"expected a temporal attention record, got kind {record['kind']!r}")
    return record["weights"].mean(dim=(0, 1, 2, 3)).numpy()  # (f, f)


def spatial_attention_map(record: dict, query: tuple[int, int], frame: int = 0, sample: int = 0) -> np.ndarray:
    """A captured spatial record (B, f, heads, h*w, h*w) -> (h, w): where the query pixel looks,
    in one frame of one clip, averaged over heads."""
    if record["kind"] != "spatial":
        raise ValueError(f"expected a spatial attention record, got kind {record['kind']!r}")
    tokens = record["weights"].shape[-1]
    side = math.isqrt(tokens)
    if side * side != tokens:
        raise ValueError(f"spatial maps are drawn for square latents, got {tokens} tokens")
    row, col = query
    if not (0 <= row < side and 0 <= col < side):
        raise ValueError(f"query {query} is outside the {side}x{side} attention grid")
    weights = record["weights"][sample, frame].mean(dim=0)  # (h*w, h*w)
    return weights[row * side + col].reshape(side, side).numpy()


def show_attention(maps, query: tuple[float, float] = (0.5, 0.5), frame: int = 0, max_layers: int = 4):
    """One figure from `capture_attention(model)` records: the temporal (f x f) matrix of each layer
    on the top row and, on the bottom row, where a spatial query (given as fractions of the height
    and width) looks. Returns the matplotlib figure."""
    import matplotlib.pyplot as plt

    temporal, spatial = maps.of_kind("temporal")[:max_layers], maps.of_kind("spatial")[:max_layers]
    columns = max(len(temporal), len(spatial), 1)
    figure, axes = plt.subplots(2, columns, figsize=(2.6 * columns, 5.2), squeeze=False)
    for ax, record in zip(axes[0], temporal):
        ax.imshow(temporal_attention_matrix(record), cmap="viridis", vmin=0)
        ax.set(title=_short_name(record["name"]), xlabel="key frame", ylabel="query frame")
    for ax, record in zip(axes[1], spatial):
        side = math.isqrt(record["weights"].shape[-1])
        cell = (min(int(query[0] * side), side - 1), min(int(query[1] * side), side - 1))
        ax.imshow(spatial_attention_map(record, cell, frame), cmap="magma")
        ax.scatter([cell[1]], [cell[0]], marker="+", color="cyan", s=80)
        ax.set(title=f"{_short_name(record['name'])} ({side}x{side})", xticks=[], yticks=[])
    for ax in axes.flat:
        if not ax.images:
            ax.axis("off")
    figure.tight_layout()
    return figure


def _short_name(name: str) -> str:
    return name.replace(".attention", "").replace("temporal", "T").replace("spatial", "S")[-22:] or "attention"


def plot_latents(latents: np.ndarray | torch.Tensor, sample: int = 0, title: str | None = None):
    """Every channel (rows) of every latent frame (columns) of one clip (B, c, f, h, w), on one
    colour scale per channel. Returns the matplotlib figure."""
    import matplotlib.pyplot as plt

    z = latents.detach().float().cpu().numpy() if isinstance(latents, torch.Tensor) else np.asarray(latents)
    if z.ndim != 5:
        raise ValueError(f"expected latents (B, c, f, h, w), got shape {z.shape}")
    z = z[sample]  # (c, f, h, w)
    channels, frames = z.shape[:2]
    figure, axes = plt.subplots(channels, frames, figsize=(1.3 * frames + 0.8, 1.3 * channels), squeeze=False)
    for c in range(channels):
        limit = float(np.abs(z[c]).max()) or 1.0
        for frame in range(frames):
            axes[c, frame].imshow(z[c, frame], cmap="RdBu_r", vmin=-limit, vmax=limit)
            axes[c, frame].set(xticks=[], yticks=[])
            if c == 0:
                axes[c, frame].set_title(f"t={frame}", fontsize=8)
        axes[c, 0].set_ylabel(f"ch {c}", fontsize=8)
    if title:
        figure.suptitle(title)
    figure.tight_layout()
    return figure
