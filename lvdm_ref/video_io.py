"""Video files <-> uint8 arrays (F, H, W, C), with PyAV (the FFmpeg libraries inside its wheel).

The only place where videos meet the file system: everything else in lvdm_ref works on float
tensors (B, C, F, H, W) in [-1, 1] (see `lvdm_ref.utils.to_uint8` / `from_uint8`).

- `.mp4`: H.264 in yuv420p (plays in every browser). yuv420p stores colour at half resolution,
  so odd heights/widths are padded by one replicated row/column; grayscale is repeated to RGB.
- `.avi`: MPEG-4 part 2 at a high bit rate (the codec of UCF-101's Xvid files).
- `.gif`: 8-bit palette, looping. Grayscale is stored exactly (a 256-gray palette); RGB gets one
  median-cut palette for the whole clip (Pillow), so colours are approximate.

`read_video(path, start, num_frames, stride)` seeks to the key frame before `start` instead of
decoding the whole file, which is what makes random clips from long videos cheap.
`read_clips(path, num_frames)` cuts a video file, or a folder of them, into consecutive clips
(what `python -m lvdm_ref fvd` reads from video files).
"""
from __future__ import annotations

import io
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from PIL import Image

WRITE_EXTENSIONS = (".mp4", ".avi", ".gif")
READ_EXTENSIONS = (".mp4", ".avi", ".gif", ".mov", ".mkv", ".webm", ".m4v")
_CODECS = {".mp4": "libx264", ".avi": "mpeg4"}


@dataclass
class VideoInfo:
    num_frames: int  # from the container header when it has one, else counted
    fps: float
    height: int
    width: int


# ----------------------------------------------------------------------------- write
def write_video(path: str | Path, video: np.ndarray, fps: float = 8) -> Path:
    """Write uint8 (F, H, W, C) with C = 1 or 3 (or (F, H, W), grayscale) to .mp4, .avi or .gif."""
    path = Path(path)
    extension = path.suffix.lower()
    if extension not in WRITE_EXTENSIONS:
        raise ValueError(f"extension must be one of {WRITE_EXTENSIONS}, got {path.name!r}")
    video = _check_video(video)
    path.parent.mkdir(parents=True, exist_ok=True)
    if extension == ".gif":
        path.write_bytes(encode_gif(video, fps))
    else:
        with av.open(str(path), mode="w") as container:
            _encode_yuv420(container, _CODECS[extension], video, fps)
    return path


def encode_gif(video: np.ndarray, fps: float = 8) -> bytes:
    """uint8 (F, H, W, C) -> the bytes of a looping GIF (what `viz.show_video` embeds)."""
    video = _check_video(video)
    buffer = io.BytesIO()
    with av.open(buffer, mode="w", format="gif", options={"loop": "0"}) as container:  # loop 0: forever
        stream = container.add_stream("gif", rate=_rate(fps))
        stream.height, stream.width = video.shape[1:3]
        grayscale = video.shape[-1] == 1
        stream.pix_fmt = "gray" if grayscale else "pal8"
        palette = None if grayscale else _palette(video)
        for index, image in enumerate(video):
            if grayscale:
                frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image[..., 0]), format="gray")
            else:
                frame = av.VideoFrame.from_ndarray(_to_palette(image, palette), format="pal8")
            frame.pts = index
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))  # flush
    return buffer.getvalue()


def _encode_yuv420(container, codec: str, video: np.ndarray, fps: float) -> None:
    video = _even_size(np.repeat(video, 3, axis=-1) if video.shape[-1] == 1 else video)  # (F, H', W', 3)
    stream = container.add_stream(codec, rate=_rate(fps))
    stream.height, stream.width = video.shape[1:3]
    stream.pix_fmt = "yuv420p"
    if codec == "libx264":
        stream.options = {"crf": "17", "preset": "medium"}  # crf 17: visually lossless
    else:
        stream.bit_rate = 8_000_000  # MPEG-4 part 2 has no crf; a high rate keeps it near-lossless
    for index, image in enumerate(video):
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
        frame.pts = index
        container.mux(stream.encode(frame))
    container.mux(stream.encode(None))  # flush the encoder's delayed frames


def _even_size(video: np.ndarray) -> np.ndarray:
    """yuv420p needs even sizes: pad odd ones with a copy of the last row/column."""
    pad_h, pad_w = video.shape[1] % 2, video.shape[2] % 2
    if pad_h or pad_w:
        video = np.pad(video, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)), mode="edge")  # (F, H', W', C)
    return video


def _palette(video: np.ndarray):
    """One 256-colour median-cut palette for the whole clip, as a Pillow "P" image."""
    step = max(1, len(video) // 16)  # up to 16 frames are enough to see the clip's colours
    sample = np.concatenate(list(video[::step]), axis=0)  # (f*H, W, 3) frames stacked vertically
    return Image.fromarray(sample).quantize(colors=256, method=Image.Quantize.MEDIANCUT)


def _to_palette(image: np.ndarray, palette) -> tuple[np.ndarray, np.ndarray]:
    """Nearest palette colour per pixel -> (indices uint8 (H, W), ARGB palette uint8 (256, 4))."""
    indices = Image.fromarray(image).quantize(palette=palette, dither=Image.Dither.NONE)  # no dithering noise
    colours = np.zeros((256, 3), dtype=np.uint8)
    rgb = np.asarray(palette.getpalette()[: 3 * 256], dtype=np.uint8).reshape(-1, 3)
    colours[: len(rgb)] = rgb
    argb = np.concatenate([np.full((256, 1), 255, np.uint8), colours], axis=1)  # (256, 4) opaque
    return np.asarray(indices, dtype=np.uint8), argb


def _rate(fps: float) -> Fraction:
    if fps <= 0:
        raise ValueError(f"fps must be positive, got {fps}")
    return Fraction(fps).limit_denominator(1001)


def _check_video(video: np.ndarray) -> np.ndarray:
    video = np.asarray(video)
    if video.ndim == 3:
        video = video[..., None]  # (F, H, W) -> (F, H, W, 1)
    if video.dtype != np.uint8 or video.ndim != 4 or video.shape[-1] not in (1, 3) or len(video) == 0:
        raise ValueError(f"expected uint8 (F, H, W, C) with C in (1, 3) and F >= 1, got {video.dtype} {video.shape}")
    return video


# ----------------------------------------------------------------------------- read
def probe_video(path: str | Path) -> VideoInfo:
    """Frame count, fps and size without decoding (raises av.FFmpegError if unreadable)."""
    with av.open(str(path)) as container:
        if not container.streams.video:
            raise ValueError(f"{path} has no video stream")
        stream = container.streams.video[0]
        rate = stream.average_rate or stream.guessed_rate or Fraction(0)
        num_frames = stream.frames
        if num_frames <= 0:  # no count in the header (e.g. gif): count the packets, still no decoding
            num_frames = sum(1 for packet in container.demux(stream) if packet.size > 0)
        return VideoInfo(num_frames, float(rate), stream.codec_context.height, stream.codec_context.width)


def read_video(path: str | Path, start: int = 0, num_frames: int | None = None, stride: int = 1,
               channels: int = 3) -> np.ndarray:
    """Frames start, start + stride, ... (num_frames of them, or to the end) as uint8 (F, H, W, C).

    channels: 3 (RGB) or 1 (gray). Fewer frames come back when the file ends first.
    """
    if start < 0 or stride < 1 or (num_frames is not None and num_frames < 1):
        raise ValueError(f"need start >= 0, stride >= 1, num_frames >= 1; got {start}, {stride}, {num_frames}")
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, got {channels}")
    pixel_format = "rgb24" if channels == 3 else "gray"
    frames, wanted = [], start
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"  # decode with several threads
        for index, frame in _indexed_frames(container, stream, start):
            if index < wanted:
                continue  # decoded (needed to reach the next frame) but not kept
            frames.append(frame.to_ndarray(format=pixel_format))  # (H, W, 3) or (H, W)
            wanted += stride
            if num_frames is not None and len(frames) == num_frames:
                break
    if not frames:
        raise ValueError(f"{path}: no frames at or after frame {start}")
    video = np.stack(frames)  # (F, H, W, 3) or (F, H, W)
    return video if channels == 3 else video[..., None]  # (F, H, W, C)


def read_clips(path: str | Path, num_frames: int, skipped: dict[str, str] | None = None) -> np.ndarray:
    """A video file, or every video file in a folder (in name order), as consecutive clips of `num_frames`
    frames: frames [0, num_frames), [num_frames, 2 num_frames), ... of each file, a shorter rest dropped.
    Returns uint8 (N, num_frames, H, W, 3); the files must be of one size.

    A file that cannot be decoded or is shorter than one clip is skipped, as in the training sets
    (`video_datasets.py`): its path and the reason go into `skipped` when a dict is given (the caller
    reports them); a folder left with no clip, or such a single file, raises a ValueError naming each file."""
    path = Path(path)
    files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in READ_EXTENSIONS) \
        if path.is_dir() else [path]
    if not files:
        raise ValueError(f"{path} holds no video files ({', '.join(READ_EXTENSIONS)})")
    clips, problems = [], {}
    for file in files:
        try:
            video = read_video(file)  # uint8 (F, H, W, 3)
        except Exception as error:  # PyAV raises many error types for a broken file; all mean "unreadable"
            problems[str(file)] = f"unreadable ({type(error).__name__}: {error}): re-encode it or remove it"
            continue
        if len(video) < num_frames:
            problems[str(file)] = f"{file.name} has {len(video)} frames, fewer than the {num_frames} of one clip"
            continue
        if clips and video.shape[1:] != clips[0].shape[2:]:
            raise ValueError(f"{file} is {video.shape[1:3]} (H, W) where the first readable video is "
                             f"{clips[0].shape[2:4]}; pass videos of one size")
        count = len(video) // num_frames
        clips.append(video[:count * num_frames].reshape(count, num_frames, *video.shape[1:]))  # (n, F, H, W, 3)
    if skipped is not None:
        skipped.update(problems)
    if not clips:
        raise ValueError(f"{path}: no usable clip; " + "; ".join(f"{name}: {why}" for name, why in problems.items()))
    return np.concatenate(clips)  # (N, F, H, W, 3)


def _indexed_frames(container, stream, start: int):
    """Yield (frame index, frame), seeking first to the key frame at or before `start`.

    The index comes from the frame's timestamp, so it is right after a seek; formats without
    usable timestamps (gif) or a seek that overshoots fall back to decoding from the beginning.
    """
    rate, time_base = stream.average_rate, stream.time_base
    first_pts = stream.start_time or 0
    seekable = start > 0 and bool(rate) and time_base is not None and container.format.name != "gif"
    if seekable:
        container.seek(first_pts + int(start / rate / time_base), stream=stream, backward=True)
        decoded = container.decode(stream)
        first = next(decoded, None)
        if first is not None and first.pts is not None:
            first_index = round((first.pts - first_pts) * time_base * rate)
            if first_index <= start:  # landed on or before the wanted frame: trust timestamps
                yield first_index, first
                for frame in decoded:
                    if frame.pts is not None:
                        yield round((frame.pts - first_pts) * time_base * rate), frame
                return
        container.seek(0)  # overshoot or no timestamps: start again from the top, counting frames
    yield from enumerate(container.decode(stream))
