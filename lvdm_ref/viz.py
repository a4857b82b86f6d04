"""Viewers: inline videos, grids of clips, frame strips, and saving (STYLE.md: show, don't print).

`show_video` embeds a looping GIF, base64-encoded, in an HTML <img> tag. That one output plays
in JupyterLab, classic Jupyter, VS Code, Colab and in notebooks rendered on GitHub, with no
JavaScript and no separate file. GIFs of 64x64 gray clips are a few kB; keep grids small so the
notebooks stay small. Pixels are magnified by the browser (`scale`), not resampled in the file.

Every viewer takes uint8 (T, H, W, C) (or (T, H, W)), a batch uint8 (N, T, H, W, C) (shown as a
grid), or a model tensor float (C, T, H, W) / (B, C, T, H, W) in [-1, 1].
"""
from __future__ import annotations

import base64
import html
import math
import warnings
from pathlib import Path

import numpy as np
import torch
from einops import rearrange

from lvdm_ref.utils import to_uint8
from lvdm_ref.video_io import WRITE_EXTENSIONS, encode_gif, write_video

MAX_INLINE_BYTES = 2_000_000  # above this an inline GIF makes the notebook heavy: warn


def as_video(video: np.ndarray | torch.Tensor, nrow: int | None = None) -> np.ndarray:
    """Any of the accepted layouts -> one uint8 video (T, H, W, C); batches become a grid."""
    if isinstance(video, torch.Tensor):
        if video.dtype == torch.uint8:  # already pixels in the I/O layout
            video = video.cpu().numpy()
        else:
            video = to_uint8(video)  # (C, T, H, W) -> (T, H, W, C) or (B, C, T, H, W) -> (B, T, H, W, C)
    video = np.asarray(video)
    if video.dtype != np.uint8:
        raise ValueError(f"numpy videos must be uint8 (T, H, W, C); got {video.dtype}. "
                         "Float tensors in [-1, 1] are accepted as torch tensors (C, T, H, W)")
    if video.ndim == 3:
        return video[..., None]  # (T, H, W) -> (T, H, W, 1)
    if video.ndim == 4:
        return video
    if video.ndim == 5:
        return video_grid(video, nrow=nrow or math.ceil(math.sqrt(len(video))))
    raise ValueError(f"expected a video (T, H, W[, C]) or a batch (N, T, H, W, C), got shape {video.shape}")


# ----------------------------------------------------------------------------- layouts
def video_grid(videos: np.ndarray | torch.Tensor, nrow: int = 8, padding: int = 2,
               pad_value: int = 255) -> np.ndarray:
    """Tile N clips uint8 (N, T, H, W, C) into one video uint8 (T, H', W', C), `nrow` clips per
    row, `padding` pixels of `pad_value` around every tile (white lines: MNIST is black)."""
    if isinstance(videos, torch.Tensor):
        videos = to_uint8(videos) if videos.dtype != torch.uint8 else videos.cpu().numpy()  # (N, T, H, W, C)
    videos = np.asarray(videos)
    if videos.ndim != 5 or videos.dtype != np.uint8:
        raise ValueError(f"expected uint8 clips (N, T, H, W, C), got {videos.dtype} {videos.shape}")
    if nrow < 1 or padding < 0:
        raise ValueError(f"need nrow >= 1 and padding >= 0, got nrow={nrow}, padding={padding}")
    num = len(videos)
    columns = min(nrow, num)
    rows = math.ceil(num / columns)
    blank = np.full((rows * columns - num, *videos.shape[1:]), pad_value, dtype=np.uint8)
    tiles = np.concatenate([videos, blank])  # (rows*columns, T, H, W, C)
    tiles = np.pad(tiles, ((0, 0), (0, 0), (padding, 0), (padding, 0), (0, 0)), constant_values=pad_value)
    grid = rearrange(tiles, "(r c) t h w ch -> t (r h) (c w) ch", r=rows, c=columns)  # (T, H', W', C)
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

    video = as_video(video, nrow)  # (T, H, W, C)
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


# ----------------------------------------------------------------------------- saving
def save_video(path: str | Path, video: np.ndarray | torch.Tensor, fps: float = 8, nrow: int | None = None) -> Path:
    """Save by extension: .mp4 / .avi / .gif (video_io; batches as a grid), .png (frame strip),
    .npz (`videos`, the uint8 array as given)."""
    path = Path(path)
    extension = path.suffix.lower()
    if extension in WRITE_EXTENSIONS:
        return write_video(path, as_video(video, nrow), fps=fps)
    if extension == ".png":
        from PIL import Image

        strip = frame_strip(video)  # (H, W', C)
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(strip[..., 0] if strip.shape[-1] == 1 else strip).save(path)
        return path
    if extension == ".npz":
        array = to_uint8(video) if isinstance(video, torch.Tensor) and video.dtype != torch.uint8 else np.asarray(video)
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(path, videos=array)
        return path
    raise ValueError(f"extension must be one of {WRITE_EXTENSIONS + ('.png', '.npz')}, got {path.name!r}")


# ----------------------------------------------------------------------------- model views
# Attention maps and latent plots go below (later issues).
