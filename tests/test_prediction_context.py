"""The prediction-context probe (benchmarks/prediction_context.py) on tiny settings: real-start continuations of
held-out clips by a tiny untrained model on the shipped autoencoder."""
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from lvdm_ref.config import DiffusionConfig, HierarchyConfig, UNetConfig  # noqa: E402
from lvdm_ref.diffusion import GaussianDiffusion  # noqa: E402
from lvdm_ref.lvdm import LatentVideoDiffusion  # noqa: E402
from lvdm_ref.unet import UNet  # noqa: E402
from lvdm_ref.vae3d import VideoAutoencoder  # noqa: E402

VAE = ROOT / "data" / "checkpoints" / "mmnist_vae.safetensors"


def tiny_chain(path: Path, max_given: int) -> Path:
    torch.manual_seed(0)
    vae = VideoAutoencoder.load(VAE)
    unet = UNet(UNetConfig(in_channels=4, out_channels=4, model_channels=8, channel_mult=(1, 2), attention_levels=(1,),
                           num_heads=2, use_mask=True, use_perturbation_embedding=True))
    with torch.no_grad():  # zero-initialised output layers would make every sample the same
        for parameter in unet.parameters():
            parameter.copy_(torch.randn_like(parameter) * 0.1)
    config = HierarchyConfig(keyframe_stride=1, every_start=True, max_given=max_given)
    model = LatentVideoDiffusion(vae, unet, GaussianDiffusion(DiffusionConfig(parameterization="v")), (4, 4, 16, 16),
                                 config)
    return model.save(path, vae_path=str(VAE))


def test_continuations_are_scored_against_the_truth_paired_and_resumed(tmp_path):
    import prediction_context

    given1, given3 = tiny_chain(tmp_path / "one.safetensors", 1), tiny_chain(tmp_path / "three.safetensors", 3)
    out, work = tmp_path / "context.json", tmp_path / "work"
    argv = ["--num", "2", "--steps", "1", "--threads", "1", "--out", str(out), "--work", str(work),
            "--model", f"given 1={given1}", "--model", f"given 1-3={given3}", "--model", f"again={given1}", "--model", f"s=0={given1}@0"]
    results = prediction_context.main(argv)
    assert json.loads(out.read_text()) == json.loads(json.dumps(results))
    assert results["models"]["given 1"]["max_given"] == 1 and results["models"]["given 1-3"]["max_given"] == 3
    same = results["differences"]["again - given 1"]  # the same model and streams: exactly the same clips
    assert same["psnr"]["mean"] == 0 and same["psnr"]["interval_90"] == [0, 0] and same["true_digits"]["mean"] == 0
    hold = results["references"]["hold the last given frame"]  # frame 3 held still, scored independently here
    clips, _ = prediction_context.held_out(prediction_context.HELD_OUT_CLIPS)
    fake, real = np.repeat(clips[:2, 3:4], 12, axis=1) / 255.0, clips[:2, 4:16] / 255.0
    mse = ((fake - real) ** 2).mean(axis=(2, 3, 4))  # (2, 12)
    assert hold["psnr"] == pytest.approx(float((10 * np.log10(1 / mse)).mean()), abs=1e-3)
    per_clip = np.load(tmp_path / "context_scores.npz")
    assert per_clip["given_1_3__psnr_by_latent"].shape == (2, 3)
    assert results["models"]["given 1-3"]["psnr"] == pytest.approx(per_clip["given_1_3__psnr"].mean(), abs=1e-4)
    kept = sorted((work / "samples").rglob("*.npz"))
    assert results["models"]["s=0"]["perturbation_level"] == 0 and results["models"]["again"]["perturbation_level"] == 100
    assert len(kept) == 4 and np.load(kept[0])["videos"].shape == (2, 16, 64, 64, 1)
    stamps = [path.stat().st_mtime_ns for path in kept]
    again = prediction_context.main(argv)  # resumes: every batch read back, nothing sampled again
    assert again["models"] == results["models"] and [path.stat().st_mtime_ns for path in kept] == stamps
    assert "| given 1-3 - given 1 |" in prediction_context.table(again)
