"""The attention ablation on prediction from real latents (benchmarks/attention_prediction.py) on tiny settings.

A file of its own so that the two pytest workers of `make test` (one file each at a time) share the slow
harness tests evenly."""
import json
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from lvdm_ref.i3d import weights_path  # noqa: E402

VAE = ROOT / "data" / "checkpoints" / "mmnist_vae.safetensors"


@pytest.mark.slow
@pytest.mark.skipif(not (weights_path().exists() and VAE.exists()), reason="needs the I3D weights and the shipped autoencoder")
def test_attention_prediction_scores_a_variant_with_its_references_and_resumes(tmp_path):
    import attention_prediction as study

    argv = ["--minutes", "0.02", "--num", "4", "--num-clips", "16", "--calibration-steps", "1", "--sample-steps", "1",
            "--only", "spatial", "--out", str(tmp_path / "pred.json"), "--work", str(tmp_path / "work")]
    results = study.main(argv)
    saved = json.loads((tmp_path / "pred.json").read_text())
    assert saved == json.loads(json.dumps(results)) and (tmp_path / "pred.png").exists()
    entry = saved["variants"]["spatial"]
    assert entry["preset"]["unet"]["attention"] == "spatial" and entry["preset"]["unet"]["model_channels"] == 32
    assert entry["preset"]["diffusion"]["parameterization"] == "v" and entry["parameters"] > 0
    for point in ("half", "end"):
        assert entry[point]["fvd"] > 0 and 0 <= entry[point]["true_digits"] <= 1 and entry[point]["psnr"] > 0
    scores = np.load(tmp_path / "work" / "scores" / "spatial_end.npz")  # per clip, for the paired intervals
    assert scores["psnr"].shape == (4,) and entry["end"]["psnr"] == pytest.approx(scores["psnr"].mean(), abs=1e-4)
    assert scores["psnr_by_latent"].shape == (4, 3) and len(entry["end"]["psnr_by_latent"]) == 3
    reference = saved["prediction_reference"]
    assert set(reference) >= set(study.REFERENCES)
    assert reference["ceiling"]["psnr"] > 20 > reference["hold the last given frame"]["psnr"]  # the autoencoder: ~28 dB
    assert reference["blank frames"]["true_digits"] == 0
    assert saved["differences"] == {}  # one variant: no pair to compare
    kept_scores = np.load(tmp_path / "pred_scores.npz")  # every per-clip score behind the JSON, for the record
    assert np.array_equal(kept_scores["spatial_end/psnr"], scores["psnr"]) and "blank frames/ssim" in kept_scores.files
    kept = np.load(tmp_path / "pred_samples.npz")
    assert kept["spatial_end"].shape == kept["truth"].shape == (4, 16, 64, 64, 1)
    assert np.array_equal(kept["truth"], study.held_out(4)[0])  # the clips whose first latent was given
    table = study.table(saved).splitlines()
    assert table[2].startswith("| spatial |") and table[2].endswith(f"| {entry['end']['fvd']:.1f} |")
    again = study.main(argv)  # resumable: everything is there, nothing is trained or sampled again
    assert again["variants"] == saved["variants"]
    older = json.loads((tmp_path / "pred.json").read_text())  # a file written before per-latent PSNR existed
    for values in (older["variants"]["spatial"]["end"], older["prediction_reference"]["blank frames"]):
        del values["psnr_by_latent"]
    (tmp_path / "pred.json").write_text(json.dumps(older))
    filled = study.main(argv)  # rescored from the kept samples
    assert filled["variants"] == saved["variants"] and filled["prediction_reference"] == saved["prediction_reference"]


def test_prediction_study_intervals_against_closed_forms():
    import attention_prediction as study

    assert study.interval(np.full(50, 0.25)) == [0.25, 0.25]  # no spread: the interval is the point
    values = np.random.default_rng(1).normal(3.0, 2.0, 4000)
    low, high = study.interval(values)
    half_width = 1.645 * 2.0 / np.sqrt(4000)  # the normal 90 % interval of a mean
    assert (high - low) / 2 == pytest.approx(half_width, rel=0.1) and low < 3.0 < high
    rng = np.random.default_rng(2)
    features, reference = rng.normal(size=(64, 8)), rng.normal(size=(64, 8))
    a = {"psnr": rng.normal(13, 1, 64), "ssim": rng.uniform(0.5, 0.7, 64), "true_digits": rng.integers(0, 2, 64)}
    a["psnr_by_latent"] = rng.normal(13, 1, (64, 3))
    b = {**a, "psnr": a["psnr"] - 0.5, "psnr_by_latent": a["psnr_by_latent"] - [1.0, 0.0, 0.0]}  # a better by 0.5 dB
    row = study.pair_difference(a, b, features, features, reference, fvd_resamples=5)
    assert row["psnr"] == {"mean": 0.5, "interval_90": [0.5, 0.5]}
    assert [d["mean"] for d in row["psnr_by_latent"]] == [1.0, 0.0, 0.0]
    assert row["ssim"]["interval_90"] == [0.0, 0.0] and row["fvd"] == {"mean": 0.0, "interval_90": [0.0, 0.0]}
    shifted = study.pair_difference(a, a, features + 1.0, features, features, fvd_resamples=50)
    assert shifted["fvd"]["mean"] == pytest.approx(8.0, abs=1e-3)  # against itself: a shift of 1 in 8 dims costs 8
    low, high = shifted["fvd"]["interval_90"]
    assert low < 8.0 < high  # resampled clips move the mean, so the shift's cost varies around 8


RESULTS = ROOT / "benchmarks" / "results" / "ablations" / "attention_pred.json"


@pytest.mark.skipif(not RESULTS.exists(), reason="no run of record yet")
def test_committed_differences_are_recomputed_from_the_committed_per_clip_scores():
    """The run of record's means and paired intervals (PSNR, per-latent PSNR, SSIM, true digits) follow from
    the per-clip scores committed beside it (the FVD intervals need the I3D features, kept in the work folder)."""
    import attention_prediction as study

    results = json.loads(RESULTS.read_text())
    kept = np.load(RESULTS.with_name("attention_pred_scores.npz"))

    def scores(key: str) -> dict:
        return {name.split("/")[1]: kept[name] for name in kept.files if name.split("/")[0] == key}

    for name, entry in results["variants"].items():
        for point in ("half", "end"):
            measured = study.summary_of(scores(f"{name}_{point}"))
            for measure in ("psnr", "ssim", "true_digits"):
                assert entry[point][measure] == pytest.approx(measured[measure], abs=1e-4)
            assert entry[point]["psnr_by_latent"] == pytest.approx(measured["psnr_by_latent"], abs=1e-4)
    for point, rows in results["differences"].items():
        for pair, row in rows.items():
            a, b = pair.split(" - ")
            features = np.random.default_rng(0).normal(size=(8, 2))  # stand-ins: the FVD part is not checked here
            again = study.pair_difference(scores(f"{a}_{point}"), scores(f"{b}_{point}"), features, features, features, 1)
            for measure in ("psnr", "ssim", "true_digits", "psnr_by_latent"):
                assert_close_intervals(again[measure], row[measure], (point, pair, measure))


def assert_close_intervals(got, expected, where, tolerance: float = 2e-4) -> None:
    """Recomputed means and intervals against the committed ones, stored to 4 decimals: equal within two
    units of the last stored digit (a recomputation may round the other way), never exactly."""
    if isinstance(expected, dict):
        assert set(got) == set(expected), where
        for key in expected:
            assert_close_intervals(got[key], expected[key], (*where, key), tolerance)
    elif isinstance(expected, list):
        assert len(got) == len(expected), where
        for index, (a, b) in enumerate(zip(got, expected)):
            assert_close_intervals(a, b, (*where, index), tolerance)
    else:
        assert got == pytest.approx(expected, abs=tolerance), where
