"""The experiment harnesses (benchmarks/recipe_study.py, benchmarks/ablations.py) on tiny settings."""
import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from lvdm_ref.i3d import weights_path  # noqa: E402

VAE = ROOT / "data" / "checkpoints" / "mmnist_vae.safetensors"


@pytest.mark.slow
@pytest.mark.skipif(not (weights_path().exists() and VAE.exists()), reason="needs the I3D weights and the shipped autoencoder")
def test_attention_ablation_holds_every_figure_the_notebook_plots(tmp_path):
    import ablations

    argv = ["--minutes", "0.02", "--num", "3", "--num-clips", "16", "--calibration-steps", "1", "--only", "joint",
            "spatial", "--out", str(tmp_path / "attention.json"), "--work", str(tmp_path / "work")]
    results = ablations.main(argv)
    saved = json.loads((tmp_path / "attention.json").read_text())
    assert saved == json.loads(json.dumps(results)) and (tmp_path / "attention.png").exists()
    assert set(saved["reference"]) >= {"real_vs_real", "static_first_frames", "autoencoder_ceiling", "num"}
    for name in ("joint", "spatial"):
        entry = saved["variants"][name]
        assert entry["preset"]["unet"]["attention"] == name
        assert entry["steps"] >= 1 and entry["cpu_seconds_per_step"] > 0
        for point in ("half", "end"):
            assert entry[point]["fvd"] > 0 and entry[point]["cpu_minutes"] >= 0
    again = ablations.main(argv)  # resumable: everything is there, nothing is trained again
    assert again["variants"] == saved["variants"]
