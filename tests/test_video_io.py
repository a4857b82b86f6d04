"""Video I/O: round trips through mp4 (lossy: a PSNR bound), avi and gif (palette: exact for
gray, a bound for colour), odd sizes, and seeking reads that return exactly the frames asked for."""
from __future__ import annotations

import numpy as np
import pytest

from lvdm_ref import video_io
from lvdm_ref.video_io import encode_gif, probe_video, read_video, write_video


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float(10 * np.log10(255**2 / max(mse, 1e-12)))


def smooth_video(num_frames: int = 12, height: int = 40, width: int = 48) -> np.ndarray:
    """Smooth colour gradients that move: the kind of content codecs are built for."""
    t, y, x = np.meshgrid(np.arange(num_frames), np.arange(height), np.arange(width), indexing="ij")
    red = 128 + 100 * np.sin(x / 9 + t / 3)
    green = 128 + 100 * np.cos(y / 7 - t / 4)
    blue = 60 + 3 * t + x  # slow drift
    return np.stack([red, green, blue], axis=-1).round().clip(0, 255).astype(np.uint8)  # (T, H, W, 3)


def index_video(num_frames: int, height: int = 32, width: int = 32) -> np.ndarray:
    """Frame t is flat gray 4 * t: the frame index can be read back from the pixels."""
    values = (np.arange(num_frames) * 4).astype(np.uint8)
    return np.broadcast_to(values[:, None, None, None], (num_frames, height, width, 3)).copy()


def read_indices(video: np.ndarray) -> list[int]:
    return np.round(video.astype(np.float64).mean(axis=(1, 2, 3)) / 4).astype(int).tolist()


@pytest.mark.parametrize("extension, bound", [(".mp4", 35.0), (".avi", 35.0), (".gif", 25.0)])
def test_round_trip_rgb(tmp_path, extension, bound):
    video = smooth_video()
    path = write_video(tmp_path / f"clip{extension}", video, fps=8)
    back = read_video(path)
    assert back.shape == video.shape and back.dtype == np.uint8
    assert psnr(back, video) > bound, f"{extension}: PSNR {psnr(back, video):.1f} dB"
    info = probe_video(path)
    assert (info.num_frames, info.height, info.width) == (12, 40, 48)
    assert abs(info.fps - 8) < 0.5  # gif stores delays in 1/100 s: 12 cs -> 8.33 fps


def test_gray_gif_is_exact_and_gray_mp4_repeats_to_rgb(tmp_path):
    gray = np.random.default_rng(0).integers(0, 256, size=(6, 20, 24, 1), dtype=np.uint8)
    np.testing.assert_array_equal(read_video(write_video(tmp_path / "g.gif", gray), channels=1), gray)
    assert encode_gif(gray)[:6] == b"GIF89a"
    smooth = smooth_video(6)[..., :1]  # (T, H, W, 1)
    back = read_video(write_video(tmp_path / "g.mp4", smooth[..., 0]))  # (T, H, W) is accepted as gray
    assert back.shape == (6, 40, 48, 3)
    assert np.abs(back.astype(int) - back[..., :1].astype(int)).max() <= 2  # R = G = B
    assert psnr(read_video(tmp_path / "g.mp4", channels=1), smooth) > 35


def test_odd_sizes_are_padded_for_yuv420(tmp_path):
    video = smooth_video(5, height=33, width=47)
    back = read_video(write_video(tmp_path / "odd.mp4", video))
    assert back.shape == (5, 34, 48, 3)  # one replicated row and column
    assert psnr(back[:, :33, :47], video) > 35
    assert read_video(write_video(tmp_path / "odd.gif", video)).shape == video.shape  # gif keeps odd sizes


@pytest.mark.parametrize("extension", [".mp4", ".avi", ".gif"])
@pytest.mark.parametrize("start, num_frames, stride", [(0, 5, 1), (7, 5, 3), (40, 4, 2), (55, 10, 2), (3, None, 20)])
def test_read_video_returns_the_requested_frames(tmp_path, extension, start, num_frames, stride):
    path = tmp_path / f"index{extension}"
    if not path.exists():
        write_video(path, index_video(60)[..., :1] if extension == ".gif" else index_video(60))
    expected = list(range(start, 60, stride))[:num_frames]  # the oracle: Python slicing of the frame list
    assert read_indices(read_video(path, start, num_frames, stride)) == expected


def test_read_video_seeks_instead_of_decoding_everything(tmp_path):
    path = write_video(tmp_path / "long.avi", index_video(120))  # MPEG-4: a key frame every 12 frames
    with video_io.av.open(str(path)) as container:
        stream = container.streams.video[0]
        decoded = [index for index, _ in video_io._indexed_frames(container, stream, 100)]
    assert decoded[0] <= 100 and len(decoded) <= 20 + 12  # from the key frame before 100, not from 0


def test_errors_list_the_options(tmp_path):
    with pytest.raises(ValueError, match=r"\('.mp4', '.avi', '.gif'\)"):
        write_video(tmp_path / "x.webm", smooth_video(2))
    with pytest.raises(ValueError, match="uint8"):
        write_video(tmp_path / "x.mp4", smooth_video(2).astype(np.float32))
    with pytest.raises(ValueError, match="channels must be 1 or 3"):
        read_video(write_video(tmp_path / "x.gif", smooth_video(2)), channels=4)
    with pytest.raises(ValueError, match="no frames"):
        read_video(tmp_path / "x.gif", start=50)


def test_read_clips_cuts_files_into_consecutive_clips_in_name_order(tmp_path):
    """A file gives frames [0, 16), [16, 32), ... (the rest dropped); a folder its video files by name."""
    rng = np.random.default_rng(0)
    video = rng.integers(0, 256, size=(40, 8, 8, 1), dtype=np.uint8)  # gray gifs are stored exactly
    write_video(tmp_path / "long.gif", video)
    clips = video_io.read_clips(tmp_path / "long.gif", 16)
    np.testing.assert_array_equal(clips, np.repeat(video[:32].reshape(2, 16, 8, 8, 1), 3, axis=-1))  # (2, 16, 8, 8, 3)
    folder = tmp_path / "clips"
    folder.mkdir()
    write_video(folder / "b.gif", video[:16])
    write_video(folder / "a.gif", video[16:33])  # 17 frames: one clip
    (folder / "notes.txt").write_text("not a video")
    clips = video_io.read_clips(folder, 16)
    np.testing.assert_array_equal(clips[..., :1], np.stack([video[16:32], video[:16]]))
    write_video(folder / "c.gif", video[:8])  # shorter than a clip: skipped and named, as in training
    skipped = {}
    np.testing.assert_array_equal(video_io.read_clips(folder, 16, skipped), clips)
    assert list(skipped) == [str(folder / "c.gif")] and "c.gif has 8 frames, fewer than the 16" in skipped[str(folder / "c.gif")]
    with pytest.raises(ValueError, match="c.gif has 8 frames, fewer than the 16"):
        video_io.read_clips(folder / "c.gif", 16)  # a single file with no clip, or a folder left with none
