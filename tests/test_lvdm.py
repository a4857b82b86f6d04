"""The short LVDM: train/sample commands end to end (quick preset), shapes, seeds, checkpoint checks."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from lvdm_ref.config import get_preset
from lvdm_ref.diffusion import GaussianDiffusion
from lvdm_ref.lvdm import LatentVideoDiffusion
from lvdm_ref.train import cpu_name
from lvdm_ref.unet import UNet
from lvdm_ref.utils import file_sha256
from lvdm_ref.vae3d import VideoAutoencoder, encode_videos
from lvdm_ref.video_io import read_video

ROOT = Path(__file__).resolve().parents[1]
SHIPPED_SHORT = ROOT / "data" / "checkpoints" / "mmnist_short.safetensors"


def run_cli(*args):
    done = subprocess.run([sys.executable, "-m", "lvdm_ref", *map(str, args)], cwd=ROOT, capture_output=True,
                          text=True, env={"LVDM_QUICK": "1", "PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("short")
    torch.manual_seed(0)
    VideoAutoencoder(get_preset("quick").vae).save(folder / "vae.safetensors")
    result = run_cli("train", "--vae", folder / "vae.safetensors", "--out", folder / "run", "--steps", 6)
    return folder, result


def test_train_command_writes_a_loadable_checkpoint(quick_run):
    folder, result = quick_run
    assert result["steps"] == 6 and Path(result["checkpoint"]).exists()
    model = LatentVideoDiffusion.load(result["checkpoint"])
    assert model.latent_shape == tuple(result["latent_shape"])
    assert model.metadata["vae"]["path"] == str(folder / "vae.safetensors")


def test_resume_continues_without_encoding_again(quick_run):
    folder, _ = quick_run
    result = run_cli("train", "--vae", folder / "vae.safetensors", "--out", folder / "run", "--steps", 9,
                     "--resume")
    assert result["steps"] == 9


def test_sample_command_writes_uint8_clips(quick_run, tmp_path):
    folder, result = quick_run
    out = tmp_path / "samples.npz"
    sampled = run_cli("sample", "--ckpt", result["checkpoint"], "--num", 3, "--sampler", "ddim", "--steps", 5,
                      "--out", out)
    quick = get_preset("quick").data
    videos = np.load(out)["videos"]
    assert videos.dtype == np.uint8 and videos.shape == (3, quick.num_frames, quick.size, quick.size, 1)
    assert sampled["shape"] == list(videos.shape)


@pytest.mark.parametrize("suffix", [".gif", ".mp4"])
def test_videos_are_written_as_a_grid(tmp_path, suffix):
    from lvdm_ref.cli.sample import write_videos

    videos = np.random.default_rng(0).integers(0, 256, (3, 8, 32, 32, 1), dtype=np.uint8)
    frames = read_video(write_videos(tmp_path / f"grid{suffix}", videos))
    assert frames.shape[0] == 8 and frames.shape[2] >= 3 * 32  # three tiles side by side


def test_unknown_extension_is_a_clear_error(tmp_path):
    from lvdm_ref.cli.sample import write_videos

    with pytest.raises(ValueError, match="extension must be one of"):
        write_videos(tmp_path / "x.webm", np.zeros((1, 8, 32, 32, 1), np.uint8))


def test_same_seed_same_videos_other_seed_other_videos(quick_run):
    _, result = quick_run
    model = LatentVideoDiffusion.load(result["checkpoint"])
    first = model.sample(2, sampler="ddim", num_steps=4, seed=3)
    again = model.sample(2, sampler="ddim", num_steps=4, seed=3)
    other = model.sample(2, sampler="ddim", num_steps=4, seed=4)
    assert np.array_equal(first, again) and not np.array_equal(first, other)


def test_checkpoint_refuses_a_different_autoencoder(quick_run, tmp_path):
    _, result = quick_run
    torch.manual_seed(1)
    VideoAutoencoder(get_preset("quick").vae).save(tmp_path / "other.safetensors")
    with pytest.raises(ValueError, match="sha256 differs"):
        LatentVideoDiffusion.load(result["checkpoint"], vae=tmp_path / "other.safetensors")


def test_checkpoint_finds_its_autoencoder_by_sha256_when_a_newer_one_takes_its_name(quick_run, tmp_path):
    import shutil

    _, result = quick_run
    shipped = tmp_path / "shipped"
    shipped.mkdir()
    original = LatentVideoDiffusion.load(result["checkpoint"]).metadata["vae"]
    shutil.copy(result["checkpoint"], shipped / "short.safetensors")
    shutil.copy(original["path"], shipped / "vae_v1.safetensors")  # the old autoencoder, renamed
    torch.manual_seed(1)
    VideoAutoencoder(get_preset("quick").vae).save(shipped / Path(original["path"]).name)  # a newer one, same name
    recorded = Path(original["path"])
    recorded.rename(recorded.with_suffix(".away"))  # the recorded path is gone: only the sha256 search can find it
    try:
        model = LatentVideoDiffusion.load(shipped / "short.safetensors")
        assert file_sha256(shipped / "vae_v1.safetensors") == model.vae_sha256 == original["sha256"]
        (shipped / "vae_v1.safetensors").unlink()
        with pytest.raises(ValueError, match="no autoencoder with sha256"):
            LatentVideoDiffusion.load(shipped / "short.safetensors")
    finally:
        recorded.with_suffix(".away").rename(recorded)


def test_encode_videos_matches_one_batch_encode():
    torch.manual_seed(0)
    vae = VideoAutoencoder(get_preset("quick").vae).eval()
    videos = np.random.default_rng(0).integers(0, 256, (5, 8, 32, 32, 1), dtype=np.uint8)
    batched = encode_videos(vae, videos, batch_size=2, progress=False)
    from lvdm_ref.utils import from_uint8
    with torch.no_grad():
        whole = vae.encode(from_uint8(videos))
    torch.testing.assert_close(batched, whole, rtol=1e-4, atol=1e-5)


def test_channel_mismatch_is_a_clear_error():
    vae = VideoAutoencoder(get_preset("quick").vae)
    unet = UNet(get_preset("quick").unet.__class__(in_channels=3, out_channels=3, model_channels=16))
    with pytest.raises(ValueError, match="channels"):
        LatentVideoDiffusion(vae, unet, GaussianDiffusion(), (4, 4, 8, 8))


@pytest.mark.skipif(not SHIPPED_SHORT.exists(), reason="no shipped short model yet")
def test_sample_on_shipped_weights(tmp_path):
    out = tmp_path / "s.npz"
    result = run_cli("sample", "--ckpt", SHIPPED_SHORT, "--num", 2, "--sampler", "ddim", "--steps", 10, "--out", out)
    videos = np.load(out)["videos"]
    assert videos.shape == (2, 16, 64, 64, 1) and result["shape"] == [2, 16, 64, 64, 1]
    assert videos.std() > 5  # not a blank canvas


def test_demo_writes_the_comparison_from_shipped_weights(tmp_path):
    result = run_cli("demo", "--num", 2, "--steps", 5, "--out", tmp_path)
    expected_rows = ["real"] + (["reconstructed"] if (SHIPPED_SHORT.parent / "mmnist_vae.safetensors").exists()
                                else []) + (["generated"] if SHIPPED_SHORT.exists() else [])
    assert result["rows"] == expected_rows
    frames = read_video(tmp_path / "comparison.mp4")
    assert frames.shape[0] == 16 and frames.shape[1] >= 64 * len(expected_rows)  # one row of clips per kind


def test_export_keeps_only_the_ema_weights_and_the_same_model(quick_run, tmp_path):
    _, result = quick_run
    exported = run_cli("export", "--ckpt", result["checkpoint"], "--out", tmp_path / "small.safetensors")
    assert exported["kept"] == "ema" and exported["bytes"] < 0.6 * exported["source_bytes"]
    full, small = (LatentVideoDiffusion.load(path) for path in (result["checkpoint"], tmp_path / "small.safetensors"))
    for a, b in zip(full.unet.state_dict().values(), small.unet.state_dict().values()):
        assert torch.equal(a, b)
    assert np.array_equal(full.sample(2, sampler="ddim", num_steps=3, seed=1), small.sample(2, sampler="ddim", num_steps=3, seed=1))
    half = run_cli("export", "--ckpt", result["checkpoint"], "--out", tmp_path / "half.safetensors", "--fp16")
    assert half["bytes"] < 0.55 * exported["bytes"]
    rounded = LatentVideoDiffusion.load(tmp_path / "half.safetensors")  # fp32 again: each weight rounded to fp16
    for a, b in zip(small.unet.state_dict().values(), rounded.unet.state_dict().values()):
        assert b.dtype == a.dtype and torch.equal(b, a.half().to(a.dtype))
    with pytest.raises(ValueError, match="new file"):
        from lvdm_ref.checkpoint import export_for_sampling
        export_for_sampling(result["checkpoint"], result["checkpoint"])


def assert_same_clips(got: np.ndarray, expected: np.ndarray) -> None:
    """uint8 clips equal up to one grey level at a few pixels: the noise is the same, but a batch of another
    size may round the network's floats differently in the last bit, which can tip a pixel over a uint8 edge."""
    difference = np.abs(got.astype(int) - expected.astype(int))
    assert got.shape == expected.shape and difference.max() <= 1 and difference.mean() < 0.01, difference.max()


def test_a_clip_depends_only_on_its_seed_and_index(quick_run):
    """One stream per clip: the batch it was in and the number asked for change nothing; other seeds share no clip."""
    _, result = quick_run
    model = LatentVideoDiffusion.load(result["checkpoint"])
    kwargs = dict(sampler="ddim", num_steps=3)
    four = model.sample(4, seed=5, batch_size=4, **kwargs)
    assert_same_clips(model.sample(2, seed=5, **kwargs), four[:2])  # fewer asked: the same first clips
    assert_same_clips(model.sample(4, seed=5, batch_size=3, **kwargs), four)  # other batching
    assert_same_clips(model.sample(2, seed=5, first_index=2, **kwargs), four[2:])  # a later slice
    other = model.sample(4, seed=6, batch_size=4, **kwargs)
    assert not any(np.array_equal(a, b) for a in four for b in other)  # seeds 5 and 6: disjoint sets


def test_init_continues_a_short_model_and_records_it(quick_run, tmp_path):
    folder, result = quick_run
    continued = run_cli("train", "--vae", folder / "vae.safetensors", "--out", tmp_path / "more", "--steps", 2,
                        "--init", result["checkpoint"], "--snapshot-every", 1)
    final, start = (LatentVideoDiffusion.load(path) for path in (continued["checkpoint"], result["checkpoint"]))
    assert final.metadata["init_steps"] == start.metadata["steps"] and final.metadata["init_sha256"] == file_sha256(result["checkpoint"])
    snapshots = sorted((tmp_path / "more" / "snapshots").glob("short_*.safetensors"))
    assert [path.name for path in snapshots] == ["short_000001.safetensors", "short_000002.safetensors"]
    last = LatentVideoDiffusion.load(snapshots[-1])  # the EMA model at step 2: the final file's
    assert last.metadata["steps"] == 2 and 0 < last.metadata["cpu_seconds"]
    assert last.metadata["device"] == cpu_name() and last.metadata["bf16"] in (True, False)  # where it trained
    for a, b in zip(last.unet.state_dict().values(), final.unet.state_dict().values()):
        assert torch.equal(a, b)


@pytest.mark.parametrize("added", [{"temporal_conv": True}, {"temporal_levels": (0,)}])
def test_a_continuation_may_add_zero_started_options_and_starts_as_the_checkpoint(quick_run, added):
    import dataclasses

    from lvdm_ref.lvdm import continue_from
    from lvdm_ref.recipes import short_model_weights
    _, result = quick_run
    original = LatentVideoDiffusion.load(result["checkpoint"]).unet  # the EMA weights, as a continuation takes them
    config, _, weights, _ = short_model_weights(result["checkpoint"])
    torch.manual_seed(3)
    unet = continue_from(UNet(dataclasses.replace(config, **added)), config, weights)
    assert len(unet.state_dict()) > len(weights)  # the option's weights are there, and new
    x, t = torch.randn(2, config.in_channels, 4, 8, 8), torch.tensor([3, 700])
    with torch.no_grad():
        torch.testing.assert_close(unet(x, t), original(x, t), rtol=0, atol=1e-5)


def test_a_continuation_refuses_another_unet(quick_run):
    import dataclasses

    from lvdm_ref.lvdm import continuation_differences, continue_from
    from lvdm_ref.recipes import short_model_weights
    _, result = quick_run
    config, _, weights, _ = short_model_weights(result["checkpoint"])
    wider = dataclasses.replace(config, model_channels=2 * config.model_channels)
    with pytest.raises(ValueError, match="model_channels"):
        continue_from(UNet(wider), config, weights)
    dropped = dataclasses.replace(config, temporal_conv=True)  # removing an option drops trained weights
    assert "temporal_conv" in continuation_differences(dropped, config)
    assert continuation_differences(config, dropped) == ""
    started = UNet(dropped)
    with torch.no_grad():  # an added option that does not start at zero changes the function: refused
        for name, parameter in started.named_parameters():
            if ".temporal." in name:
                parameter.normal_()
    with pytest.raises(ValueError, match="start at zero"):
        continue_from(started, config, weights)
