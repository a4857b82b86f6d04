"""Text-to-video with classifier-free guidance (captions.py, text_to_video.py), against oracles:
guidance in one batched call against the formula on two separate calls, g = 0 / g = 1 against the
unconditional / conditional model, the warm start against the short model it starts from."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from lvdm_ref.captions import (CAPTION_DIM, caption_text, caption_vector, chance_of_caption, encode_captions,
                               parse_caption)
from lvdm_ref.config import DiffusionConfig, UNetConfig
from lvdm_ref.data import generate_moving_mnist
from lvdm_ref.diffusion import GaussianDiffusion
from lvdm_ref.text_to_video import (CaptionDenoiser, caption_counts, caption_loss, classifier_free_guidance,
                                    warm_start_captions)
from lvdm_ref.unet import UNet

ROOT = Path(__file__).resolve().parents[1]
SHORT = ROOT / "data" / "checkpoints" / "mmnist_short.safetensors"
TINY = UNetConfig(in_channels=4, out_channels=4, model_channels=16, channel_mult=(1, 2), num_heads=2)


def randomised(unet: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Every weight drawn at random (a fresh UNet's zero-initialised layers would hide differences)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in unet.parameters():
            parameter.copy_(torch.rand(parameter.shape, generator=generator) * 0.2 - 0.1)
    return unet.eval()


# ----------------------------------------------------------------------------- captions
@pytest.mark.parametrize("text", ["3 and 7", "7 and 3", "3, 7", "a 3 and a 7", "three and seven", "3 7", " 3 ,7 "])
def test_captions_name_the_same_digits_in_any_wording_and_order(text):
    assert parse_caption(text) == (3, 7)


def test_caption_text_reads_back_and_counts_copies():
    for digits in [(5,), (3, 7), (1, 3, 3), (0, 0, 0)]:
        assert parse_caption(caption_text(digits)) == digits
    assert caption_text((7, 1, 3)) == "1, 3 and 7"
    assert caption_vector((3, 3)).tolist() == [0, 0, 0, 2, 0, 0, 0, 0, 0, 0]  # "3 and 3" is not "3"
    assert torch.equal(encode_captions(["3 and 7"]), encode_captions(np.array([[7, 3]])))


@pytest.mark.parametrize("text, words", [
    ("3 and 12", ["12 is not a digit 0-9", "'1 and 2'"]),
    ("3 and -1", ["-1 is not a digit 0-9"]),
    ("1, 2, 3 and 4", ["names 4 digits", "at most 3"]),
    ("a cat", ["cannot read 'cat'", "'3 and 7'"]),
    ("and", ["names no digit"]),
])
def test_a_bad_caption_says_what_a_caption_may_hold(text, words):
    with pytest.raises(ValueError) as error:
        parse_caption(text)
    assert all(word in str(error.value) for word in words), str(error.value)


def test_chance_of_a_random_caption_is_the_multinomial_probability():
    assert chance_of_caption(np.array([[3, 7]])) == pytest.approx(0.02)
    assert chance_of_caption(np.array([[3, 3]])) == pytest.approx(0.01)
    labels = torch.randint(0, 10, (20000, 2), generator=torch.Generator().manual_seed(0))
    assert chance_of_caption(labels) == pytest.approx(0.019, abs=0.001)  # uniform pairs: 45 x 0.02^2/.. -> 0.019


def test_training_clips_split_by_number_of_digits():
    assert caption_counts(2048) == {1: 512, 2: 1024, 3: 512}
    counts = caption_counts(10)
    assert sum(counts.values()) == 10 and counts[2] >= counts[1]


# ----------------------------------------------------------------------------- guidance
def test_guidance_in_one_batched_call_is_the_formula_on_two_separate_calls():
    unet = randomised(UNet(UNetConfig(**{**TINY.__dict__, "context_dim": CAPTION_DIM})))
    x_t = torch.randn(3, 4, 2, 8, 8, generator=torch.Generator().manual_seed(1))
    t = torch.tensor([5, 50, 95])
    captions = encode_captions(["3 and 7", "1", "2, 2 and 9"])
    with torch.no_grad():
        cond = unet(x_t, t, context=captions)  # two separate calls: the oracle
        uncond = unet(x_t, t, context=torch.zeros_like(captions))
        batched_cond, batched_uncond = CaptionDenoiser(unet, captions).branches(x_t, t)
        torch.testing.assert_close(batched_cond, cond, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(batched_uncond, uncond, rtol=1e-5, atol=1e-5)
        for scale in (0.5, 3.0, 7.0):
            guided = CaptionDenoiser(unet, captions, scale)(x_t, t)
            torch.testing.assert_close(guided, uncond + scale * (cond - uncond), rtol=1e-5, atol=1e-5)
        # g = 0 is the unconditional model and g = 1 the conditional one, by the formula and by the denoiser
        torch.testing.assert_close(classifier_free_guidance(batched_cond, batched_uncond, 0.0), batched_uncond)
        torch.testing.assert_close(classifier_free_guidance(batched_cond, batched_uncond, 1.0), batched_cond)
        assert torch.equal(CaptionDenoiser(unet, captions, 0.0)(x_t, t), uncond)
        assert torch.equal(CaptionDenoiser(unet, captions, 1.0)(x_t, t), cond)
    assert not torch.allclose(cond, uncond)  # the caption matters, so the checks above mean something


def test_training_drops_the_caption_in_the_stated_share():
    seen = []

    def model(x_t, t, context):
        seen.append(context)
        return torch.zeros_like(x_t)

    diffusion = GaussianDiffusion(DiffusionConfig(num_timesteps=10))
    captions = encode_captions(np.full((20000, 2), 4))  # every caption "4 and 4"
    torch.manual_seed(0)
    caption_loss(diffusion, 0.1)(model, (torch.zeros(20000, 1, 1, 2, 2), captions), 0)
    dropped = (seen[0].sum(1) == 0).float().mean().item()
    assert abs(dropped - 0.1) < 0.01
    assert torch.equal(seen[0][seen[0].sum(1) > 0], captions[: int((seen[0].sum(1) > 0).sum())])  # kept as given
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        caption_loss(diffusion, 1.0)


# ----------------------------------------------------------------------------- warm start
def test_warm_start_is_the_short_model_exactly_for_any_caption():
    short = randomised(UNet(TINY), seed=2)
    caption_unet = warm_start_captions(UNet(UNetConfig(**{**TINY.__dict__, "context_dim": CAPTION_DIM})),
                                       short.state_dict()).eval()
    x_t = torch.randn(4, 4, 2, 8, 8, generator=torch.Generator().manual_seed(3))
    t = torch.tensor([1, 30, 60, 99])
    with torch.no_grad():
        expected = short(x_t, t)
        for captions in (encode_captions(["3 and 7", "1", "0, 0 and 9", "5"]), torch.zeros(4, CAPTION_DIM)):
            assert torch.equal(caption_unet(x_t, t, context=captions), expected)
    with pytest.raises(ValueError, match="does not fit"):
        warm_start_captions(UNet(UNetConfig(**{**TINY.__dict__, "model_channels": 32, "context_dim": 10})),
                            short.state_dict())


@pytest.mark.skipif(not SHORT.exists(), reason="needs the shipped short model")
def test_warm_start_from_the_shipped_short_model_keeps_its_function():
    from lvdm_ref.checkpoint import load_weights, unprefixed
    from lvdm_ref.config import from_dict

    tensors, meta = load_weights(SHORT)
    state = {name: tensor.float() for name, tensor in unprefixed(tensors, "ema").items()}
    short = UNet(from_dict(UNetConfig, meta["unet"]))
    short.load_state_dict(state)
    config = UNetConfig(**{**from_dict(UNetConfig, meta["unet"]).__dict__, "context_dim": CAPTION_DIM})
    caption_unet = warm_start_captions(UNet(config), state).eval()
    x_t = torch.randn(2, *meta["latent_shape"], generator=torch.Generator().manual_seed(4))
    t = torch.tensor([100, 900])
    with torch.no_grad():
        assert torch.equal(caption_unet(x_t, t, context=encode_captions(["3 and 7", "2"])), short.eval()(x_t, t))


# ----------------------------------------------------------------------------- end to end
def cli(*args, cwd=ROOT):
    env = {**os.environ, "LVDM_QUICK": "1", "OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE"}
    return subprocess.run([sys.executable, "-m", "lvdm_ref", *map(str, args)], capture_output=True, text=True,
                          env=env, cwd=cwd, timeout=600)


def result(done):
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def quick_t2v(tmp_path_factory):
    """A quick autoencoder and a quick text-to-video model, each trained 2 steps from the command line."""
    folder = tmp_path_factory.mktemp("t2v")
    vae = result(cli("train-vae", "--out", folder / "vae", "--steps", "2"))["ckpt"]
    trained = result(cli("train", "--model", "t2v", "--vae", vae, "--out", folder / "t2v", "--steps", "2",
                         "--num-clips", "8"))
    return folder, vae, trained


@pytest.mark.slow
def test_a_quick_model_trained_two_steps_samples_captions_from_the_command_line(quick_t2v):
    folder, vae, trained = quick_t2v
    assert trained["steps"] == 2 and trained["num_clips"] == 8 and trained["caption_drop_prob"] == 0.1
    from lvdm_ref.checkpoint import read_metadata

    meta = read_metadata(trained["checkpoint"])
    assert meta["kind"] == "lvdm_t2v" and meta["unet"]["context_dim"] == CAPTION_DIM
    assert meta["digit_counts"] == {"1": 2, "2": 4, "3": 2}
    sampled = result(cli("sample", "--ckpt", trained["checkpoint"], "--caption", "a 3 and a 7", "--guidance-scale", "3",
                         "--num", "3", "--sampler", "ddim", "--steps", "2", "--out", folder / "samples.npz"))
    assert sampled["shape"] == [3, 8, 32, 32, 1] and sampled["caption"] == "3 and 7" and sampled["guidance_scale"] == 3.0
    assert np.load(folder / "samples.npz")["videos"].shape == (3, 8, 32, 32, 1)
    # a text-to-video checkpoint needs a caption; errors are one line, exit status 2
    done = cli("sample", "--ckpt", trained["checkpoint"], "--num", "1", "--out", folder / "none.npz")
    assert done.returncode == 2 and "pass --caption" in done.stderr.strip().splitlines()[-1]
    assert not (folder / "none.npz").exists()


@pytest.mark.parametrize("args, words", [
    (["--caption", "3 and 12"], ["--caption", "12 is not a digit"]),
    (["--caption", "1 2 3 4"], ["--caption", "names 4 digits", "at most 3"]),
    (["--caption", "3 and 7"], ["--caption and --guidance-scale need a text-to-video checkpoint", "'lvdm_short'"]),
])
def test_a_bad_caption_or_a_short_checkpoint_stops_sample_at_once(tmp_path, args, words):
    if not SHORT.exists():
        pytest.skip("needs the shipped short model")
    done = cli("sample", "--ckpt", SHORT, *args, "--num", "1", "--out", tmp_path / "x.npz")
    message = done.stderr.strip().splitlines()[-1]
    assert done.returncode == 2 and all(word in message for word in words), message
    assert not (tmp_path / "x.npz").exists()


@pytest.mark.slow
def test_the_guidance_benchmark_smoke_run_writes_its_json_and_figure_and_resumes(tmp_path):
    """A quick model of 16-frame clips (so FVD applies) trained 2 steps, 4 clips per scale, 1 DDIM step."""
    import dataclasses

    from lvdm_ref.config import get_preset
    from lvdm_ref.i3d import weights_path
    from lvdm_ref.recipes import train_autoencoder, train_t2v_model

    sys.path.insert(0, str(ROOT / "benchmarks"))
    import caption_guidance

    quick = get_preset("quick")
    preset = dataclasses.replace(quick, data=dataclasses.replace(quick.data, num_frames=16))
    vae = train_autoencoder(preset, tmp_path / "vae", steps=2, stats_clips=4, progress=False)["ckpt"]
    ckpt = train_t2v_model(preset, vae, tmp_path / "t2v", steps=2, num_clips=8, progress=False)["checkpoint"]
    args = ["--ckpt", ckpt, "--scales", "0,1,3", "--num", "4", "--steps", "1", "--batch-size", "3",
            "--work", str(tmp_path / "work"), "--out", str(tmp_path / "results" / "guidance.json")]
    if not weights_path().exists():
        pytest.skip("I3D weights not set up (python -m lvdm_ref setup-weights)")
    results = caption_guidance.main(args)
    saved = json.loads((tmp_path / "results" / "guidance.json").read_text())
    assert saved["scales"] == results["scales"] and list(saved["scales"]) == ["0", "1", "3"]
    for entry in saved["scales"].values():
        assert 0 <= entry["accuracy"] <= 1 and entry["fvd"] > 0
    _, labels = generate_moving_mnist(4, 16, 32, 2, "test", seed=1, return_labels=True)  # the benchmark's real set
    assert saved["real"]["chance"] == pytest.approx(chance_of_caption(labels), abs=1e-4)
    assert set(saved["goal"]) >= {"met", "scales_meeting_both"} and saved["protocol"]["frames"] == 16
    assert (tmp_path / "results" / "guidance.png").exists() and (tmp_path / "results" / "guidance.svg").exists()
    samples = sorted((tmp_path / "work" / "samples").rglob("*.npz"))
    assert len(samples) == 6  # 3 scales x 2 batches of at most 3
    stamps = [path.stat().st_mtime_ns for path in samples]
    again = caption_guidance.main(args)  # resumable: every batch and feature file is found, nothing is redone
    assert again["scales"] == results["scales"] and [path.stat().st_mtime_ns for path in samples] == stamps


@pytest.mark.parametrize("args, words", [
    (["--init", "{vae}"], ["--init", "'vae3d'", "short model", "mmnist_short.safetensors"]),
    (["--caption-drop", "1"], ["--caption-drop", "below 1"]),
    (["--condition-prob", "0.5"], ["--condition-prob", "--model pred or interp"]),
])
def test_train_t2v_refuses_bad_arguments_at_once(tmp_path, args, words):
    vae = ROOT / "data" / "checkpoints" / "mmnist_vae.safetensors"
    if not vae.exists():
        pytest.skip("needs the shipped autoencoder")
    done = cli("train", "--model", "t2v", "--vae", vae, "--out", tmp_path / "run",
               *(arg.format(vae=vae) for arg in args))
    message = done.stderr.strip().splitlines()[-1]
    assert done.returncode == 2 and all(word in message for word in words), message
    assert not (tmp_path / "run").exists()
