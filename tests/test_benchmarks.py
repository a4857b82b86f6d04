"""The studies' harness (lvdm_ref/studies.py, lvdm_ref/budget_study.py) and the benchmark scripts on tiny settings."""
import itertools
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
def test_attention_ablation_holds_every_figure_the_notebook_plots(tmp_path):
    import ablations

    argv = ["--minutes", "0.02", "--num", "3", "--num-clips", "16", "--calibration-steps", "1", "--sample-steps", "2",
            "--only", "joint",
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
        curve = entry["loss_curve"]  # from the run's log, for the notebook's loss-against-CPU-minutes plot
        assert curve["step"][0] == 1 and len(curve["step"]) == len(curve["cpu_minutes"]) == len(curve["loss"])
        assert curve["cpu_minutes"][0] == pytest.approx(entry["cpu_seconds_per_step"] / 60, abs=1e-3)
    samples = np.load(tmp_path / "attention_samples.npz")  # the notebook's strips
    assert set(samples) == {"joint", "spatial"} and samples["joint"].shape == (4, 16, 64, 64, 1)
    assert samples["joint"].dtype == np.uint8
    assert (tmp_path / "attention_summary.png").exists() and (tmp_path / "attention_summary.svg").exists()
    rows = ablations.table(saved).splitlines()
    assert [row.split(" | ")[0] for row in rows[2:4]] == ["| joint", "| spatial"]
    assert rows[2].endswith(f"| {saved['variants']['joint']['end']['fvd']:.1f} |")
    again = ablations.main(argv)  # resumable: everything is there, nothing is trained again
    assert again["variants"] == saved["variants"]


def test_two_studies_of_one_file_keep_each_others_results(tmp_path):
    """`--only a` and `--only b` run at once (one per core) write one JSON: neither loses the other's entries."""
    import argparse

    from lvdm_ref.budget_study import Study

    vae = tmp_path / "vae.safetensors"
    vae.write_bytes(b"weights")
    args = argparse.Namespace(vae=vae, minutes=1.0, num=2, num_clips=16, threads=1, out=tmp_path / "study.json",
                              work=tmp_path / "work")
    first, second = Study(args), Study(args)  # both read the file before either writes
    for study, name in ((first, "a"), (second, "b")):
        study.touched.add(name)
        study.results["recipes"][name] = {"steps": 1}
        study.save()
    first.results["recipes"]["a"]["end"] = {"fvd": 1.0}  # the first goes on with its stale view of "b"
    first.results.setdefault("reference", {})["real_vs_real"] = 0.5
    first.save()
    saved = json.loads(args.out.read_text())
    assert saved["recipes"] == {"a": {"steps": 1, "end": {"fvd": 1.0}}, "b": {"steps": 1}}
    assert saved["reference"] == {"real_vs_real": 0.5} and first.results == saved


def test_study_table_is_made_from_the_json():
    from lvdm_ref.budget_study import budget_table as table

    results = {"setting": {"num": 8}, "reference": {"real_vs_real": 1.25, "static_first_frames": 9.0},
               "recipes": {"a": {"change": "one thing", "steps": 10, "cpu_seconds_per_step": 0.5,
                                 "half": {"fvd": 7.04}, "end": {"fvd": 3.96}},
                           "b": {"change": "another", "steps": 4, "cpu_seconds_per_step": 1.25}},
               "samplers": {"model": "a", "ddim_50_eta1": {"fvd": 3.96, "sample_cpu_seconds": 12.0}}}
    lines = table(results).splitlines()
    assert lines[2] == "| a | one thing | 10 | 0.50 | 7.0 | 4.0 |"
    assert lines[3] == "| b | another | 4 | 1.25 |  |  |"  # unfinished: empty cells, not zeros
    assert "| *real vs real* | reference at N = 8 | | | | 1.2 |" in lines  # 1.25 rounds half to even
    assert lines[-1] == "| ddim_50_eta1 | 4.0 | 12 |"


def test_hierarchy_card_scores_a_perfect_model_as_the_ceiling(tmp_path, monkeypatch):
    """With the sampler replaced by the truth (the real latents kept), the model's rows equal the ceiling's,
    and its outputs follow their condition exactly as far as the truth does (sensitivity 1)."""
    import hierarchy_card
    import torch

    from lvdm_ref import studies
    from lvdm_ref.config import get_preset
    from lvdm_ref.recipes import build_hierarchy_model
    from lvdm_ref.vae3d import VideoAutoencoder

    torch.manual_seed(0)
    preset = get_preset("quick")
    VideoAutoencoder(preset.vae).save(tmp_path / "vae.safetensors")
    vae = VideoAutoencoder.load(tmp_path / "vae.safetensors")
    for role in ("pred", "interp"):
        build_hierarchy_model(preset, role, vae, preset.vae.latent_channels, 25).save(
            tmp_path / f"{role}.safetensors", vae_path=str(tmp_path / "vae.safetensors"))
    monkeypatch.setattr(studies, "fill", lambda model, latents, *args, **kwargs: latents)
    results = hierarchy_card.main(["--pred", str(tmp_path / "pred.safetensors"), "--interp",
                                   str(tmp_path / "interp.safetensors"), "--num", "3", "--no-fvd",
                                   "--out", str(tmp_path / "card.json")])
    assert results["prediction"]["model"] == results["prediction"]["ceiling"]
    assert results["interpolation"]["model"] == results["interpolation"]["ceiling"]
    assert results["prediction"]["model"] != results["prediction"]["repeat the given keyframe"]
    for part, generated in (("prediction", [1, 2, 3]), ("interpolation", [1, 2, 3])):  # the truth follows its condition
        sensitivity = results[part]["condition_sensitivity"]
        assert sensitivity["frames"] == generated and sensitivity["ratio"] == pytest.approx([1.0] * 3, abs=1e-3)
    assert json.loads((tmp_path / "card.json").read_text()) == json.loads(json.dumps(results))


def test_recorded_recipes_are_what_the_study_builds_now():
    """The study pins its baseline, so a later change of the mmnist preset does not change what a recipe
    name means: each recipe in the committed JSON is rebuilt exactly."""
    import dataclasses

    from recipe_study import recipes

    from lvdm_ref.config import get_preset

    recorded = json.loads((ROOT / "benchmarks" / "results" / "recipe_study.json").read_text())["recipes"]
    built = recipes()
    checked = 0
    for name, entry in recorded.items():
        if "preset" in entry:
            preset = built[name][1](get_preset("mmnist"))
            now = json.loads(json.dumps({group: dataclasses.asdict(getattr(preset, group))
                                         for group in ("unet", "diffusion", "train")}))
            for group, recorded_fields in entry["preset"].items():
                assert {key: now[group][key] for key in recorded_fields} == recorded_fields, (name, group)
                # a field added since the run must default to what the run did (the field did not exist)
                defaults = json.loads(json.dumps(dataclasses.asdict(type(getattr(preset, group))())))
                added = set(now[group]) - set(recorded_fields)
                assert {key: now[group][key] for key in added} == {key: defaults[key] for key in added}, (name, group)
            checked += 1
    assert checked >= 2


SHIPPED = ROOT / "data" / "checkpoints"
CARD_16 = ROOT / "benchmarks" / "results" / "hierarchy_card_16.json"


@pytest.mark.slow
@pytest.mark.skipif(not (SHIPPED / "mmnist_pred.safetensors").exists() or not CARD_16.exists(),
                    reason="needs the shipped prediction and interpolation models and their N = 16 card row")
def test_shipped_hierarchy_models_measure_what_the_model_card_says(tmp_path):
    """The model card's N = 16 rows, measured again (the N = 256 rows come from the same script)."""
    import hierarchy_card

    recorded = json.loads(CARD_16.read_text())
    again = hierarchy_card.main(["--pred", str(SHIPPED / "mmnist_pred.safetensors"), "--interp",
                                 str(SHIPPED / "mmnist_interp.safetensors"), "--num", "16", "--no-fvd", "--threads", "1",
                                 "--sensitivity-clips", "0", "--out", str(tmp_path / "card.json")])
    for part in ("prediction", "interpolation"):
        for row, values in recorded[part].items():
            if isinstance(values, dict) and "psnr" in values:
                assert again[part][row]["psnr"] == pytest.approx(values["psnr"], abs=0.05), (part, row)
                assert again[part][row]["ssim"] == pytest.approx(values["ssim"], abs=0.002), (part, row)


def test_sampler_comparison_keeps_every_entry_it_writes(tmp_path):
    """Every sampler row reaches the file (save() re-reads it, so a held reference would go stale)."""
    import argparse

    from lvdm_ref.budget_study import Study

    vae = tmp_path / "vae.safetensors"
    vae.write_bytes(b"weights")
    args = argparse.Namespace(vae=vae, minutes=1.0, num=2, num_clips=16, threads=1, out=tmp_path / "study.json",
                              work=tmp_path / "work")
    study = Study(args)
    study.results["recipes"]["a"] = {"end": {"fvd": 5.0, "sample_cpu_seconds": 2.0}}
    study.evaluate = lambda checkpoint, key, sampler, steps, eta, seed: {"fvd": float(len(key)), "sample_cpu_seconds": 1.0}
    study.samplers()
    saved = json.loads(args.out.read_text())["samplers"]
    assert saved["model"] == "a" and len(saved) == 1 + 7
    assert saved["ddim_50_eta1"]["fvd"] == 5.0  # the recipe's own end point, not sampled again


def test_calibration_ignores_a_burst_of_slow_steps():
    from lvdm_ref.budget_study import seconds_per_step

    steps = [5.0] * 3 + [0.75] * 12 + [3.0] * 5  # warm-up, steady steps, a burst (another job's compile)
    clean = [5.0] * 3 + [0.75] * 17  # the oracle: the same run without the burst
    with_burst, without = (seconds_per_step(list(itertools.accumulate(run))) for run in (steps, clean))
    assert with_burst == pytest.approx(without) == pytest.approx(0.75)


@pytest.mark.skipif(not (weights_path().exists() and (VAE.parent / "mmnist_short.safetensors").exists()),
                    reason="needs the I3D weights and the shipped short model")
def test_fp16_check_scores_both_storages_on_the_same_noise(tmp_path):
    import fp16_check

    import copy

    from lvdm_ref.lvdm import LatentVideoDiffusion

    shipped = VAE.parent / "mmnist_short.safetensors"  # stored as float16: the check refuses it as its input
    with pytest.raises(SystemExit):
        fp16_check.main(["--ckpt", str(shipped), "--num", "2", "--steps", "2", "--out", str(tmp_path / "no.json")])
    model = LatentVideoDiffusion.load(shipped)  # a float32 checkpoint with raw and EMA weights, as training writes
    fp32 = model.save(tmp_path / "fp32.safetensors", ema_unet=copy.deepcopy(model.unet), vae_path=model.metadata["vae"]["path"])
    results = fp16_check.main(["--ckpt", str(fp32), "--num", "2", "--steps", "2", "--out", str(tmp_path / "check.json")])
    assert json.loads((tmp_path / "check.json").read_text()) == results
    assert results["bytes"]["float16"] < 0.3 * results["bytes"]["float32"]  # EMA only, and half the bytes each
    assert results["float32"]["fvd"] > 0 and results["float16"]["fvd"] > 0
    assert results["pixel_difference"]["mean"] < 1.0  # same noise, weights rounded: nearly the same clips


def test_short_model_curve_draws_the_measured_cards(tmp_path):
    """The training-curve figure of the model card holds the numbers of the card files, nothing typed."""
    import matplotlib

    matplotlib.use("Agg")
    import short_model_curve

    def card(steps: int, fvd: float) -> dict:
        return {"steps": steps, "generated": {"fvd": fvd, "num": 8}, "real_b": {"fvd": 3.0},
                "reconstructed_b": {"fvd": 7.0}}

    for steps, fvd in ((1000, 90.0), (4000, 50.0)):
        (tmp_path / f"step_{steps}.json").write_text(json.dumps(card(steps, fvd)))
    ablation = tmp_path / "attention.json"
    ablation.write_text(json.dumps({"reference": {"static_first_frames": 60.0}, "variants": {"factorized": {
        "half": {"step": 500, "fvd": 120.0}, "end": {"step": 1000, "fvd": 95.0}}}}))
    curve = short_model_curve.points(tmp_path, ablation)
    assert curve["this_run"] == {"1000": 90.0, "4000": 50.0} and curve["same_recipe_ablation_run"] == {"500": 120.0, "1000": 95.0}
    assert (curve["num"], curve["real_vs_real"], curve["autoencoder_ceiling"], curve["static_first_frames"]) == (8, 3.0, 7.0, 60.0)
    lines = {line.get_label(): line for line in short_model_curve.plot(curve).axes[0].get_lines()}
    assert list(lines["mmnist_short (this run)"].get_ydata()) == [90.0, 50.0]
    assert list(lines["goal: 2x the ceiling (14)"].get_ydata()) == [14.0, 14.0]
    with pytest.raises(SystemExit, match="no step_"):
        short_model_curve.points(tmp_path / "empty", ablation)


def test_evaluation_samples_resume_batch_by_batch_and_equal_one_call(tmp_path, monkeypatch):
    """A stopped evaluation keeps its finished batches; the clips equal `sample` in one call, same seed."""
    import dataclasses

    from lvdm_ref.config import get_preset
    from lvdm_ref.diffusion import GaussianDiffusion
    from lvdm_ref.lvdm import LatentVideoDiffusion
    from lvdm_ref.pixel import PixelSpace
    from lvdm_ref.studies import sample_in_batches
    from lvdm_ref.unet import UNet

    preset = get_preset("quick")
    unet_config = dataclasses.replace(preset.unet, in_channels=1, out_channels=1)
    model = LatentVideoDiffusion(PixelSpace(1), UNet(unet_config), GaussianDiffusion(preset.diffusion), (1, 4, 8, 8))
    checkpoint = model.save(tmp_path / "model.safetensors", extra={"space": "pixel"})
    expected = LatentVideoDiffusion.load(checkpoint).sample(5, sampler="ddim", num_steps=2, eta=1.0, seed=3, batch_size=2)
    calls = []
    original = LatentVideoDiffusion.sample
    monkeypatch.setattr(LatentVideoDiffusion, "sample", lambda self, num, **k: calls.append(num) or original(self, num, **k))
    folder = tmp_path / "samples"
    first, seconds = sample_in_batches(checkpoint, 5, folder, "ddim", 2, 1.0, 3, batch_size=2)
    assert np.array_equal(first, expected) and calls == [2, 2, 1] and seconds > 0
    (folder / "batch_0001.npz").unlink()  # stopped while the middle batch was being made
    again, _ = sample_in_batches(checkpoint, 5, folder, "ddim", 2, 1.0, 3, batch_size=2)
    assert np.array_equal(again, expected) and calls == [2, 2, 1, 2]
    model.save(checkpoint, extra={"space": "pixel", "retrained": True})  # another checkpoint at the same path
    sample_in_batches(checkpoint, 5, folder, "ddim", 2, 1.0, 3, batch_size=2)
    assert calls == [2, 2, 1, 2, 2, 2, 1]


@pytest.mark.parametrize("name", ["attention", "pixel"])
def test_committed_ablation_results_hold_every_figure_their_notebook_plots(name):
    """The runs of record that notebooks 06 and 07 load: every finished variant has what they print and plot."""
    folder = ROOT / "benchmarks" / "results" / "ablations"
    results = json.loads((folder / f"{name}.json").read_text())
    finished = {key: entry for key, entry in results["variants"].items() if "end" in entry}
    assert {"factorized", *(["pixel"] if name == "pixel" else ["joint"])} <= set(finished)
    assert results["setting"]["num"] == results["reference"]["num"] == 256
    assert set(results["reference"]) >= {"real_vs_real", "static_first_frames", "autoencoder_ceiling"}
    samples = np.load(folder / f"{name}_samples.npz")
    for key, entry in finished.items():
        assert entry["steps"] > 0 and entry["cpu_seconds_per_step"] > 0 and entry["peak_rss_mib"] > 0
        assert entry["end"]["fvd"] > results["reference"]["real_vs_real"] and entry["end"]["sample_cpu_seconds"] > 0
        assert entry["end"]["step"] == entry["steps"] and len(entry["loss_curve"]["loss"]) > 1
        assert samples[key].shape == (4, 16, 64, 64, 1) and samples[key].dtype == np.uint8
    assert (folder / f"{name}_summary.png").exists()


def test_condition_sensitivity_is_zero_for_a_model_that_ignores_its_condition(tmp_path):
    """A sampler whose output depends on the noise alone scores 0 at every generated frame."""
    import torch

    from lvdm_ref import studies
    from lvdm_ref.config import get_preset
    from lvdm_ref.recipes import build_hierarchy_model
    from lvdm_ref.utils import stream
    from lvdm_ref.vae3d import VideoAutoencoder

    torch.manual_seed(0)
    preset = get_preset("quick")
    vae = VideoAutoencoder(preset.vae)
    model = build_hierarchy_model(preset, "pred", vae, preset.vae.latent_channels, 0)
    latents = torch.randn(3, preset.vae.latent_channels, 4, 4, 4)
    # every output frame is x_T drawn from the clip's own stream: the condition never enters
    noise_only = lambda model, given, seed, batch_size, **kwargs: torch.stack(  # noqa: E731
        [torch.randn(given.shape[1:], generator=stream(seed, i)) for i in range(len(given))])
    original = studies.fill
    try:
        studies.fill = noise_only
        result = studies.condition_sensitivity(model, latents, seed=0, batch_size=2)
    finally:
        studies.fill = original
    assert result["frames"] == [1, 2, 3] and result["ratio"] == pytest.approx([0.0] * 3, abs=1e-6)


@pytest.mark.parametrize("num", [128, 256])
def test_committed_seed_spread_holds_disjoint_sets_and_their_recomputed_summary(num):
    """Notebook 06 and docs/studies/recipe_study.md quote these runs: their summaries must be those of their own FVDs."""
    import numpy as np

    recorded = json.loads((ROOT / "benchmarks" / "results" / f"seed_spread_{num}.json").read_text())
    for num, sets in ((str(num), 4), (str(num // 2), 8)):
        entry = recorded[num]
        assert len(entry["fvd"]) == sets
        assert entry["std"] == pytest.approx(np.std(entry["fvd"], ddof=1), abs=0.01)
        assert entry["mean"] == pytest.approx(np.mean(entry["fvd"]), abs=0.01)
        assert entry["range"] == pytest.approx(max(entry["fvd"]) - min(entry["fvd"]), abs=0.01)
        assert entry["real_vs_real"] < entry["min"]  # the floor lies below every generated set


def test_probe_table_is_written_from_the_json():
    """The probe table of docs/studies/hierarchy_probes.md comes from benchmarks/results/hierarchy_probes.json: one row per
    probe, its figures."""
    import hierarchy_probes

    results = json.loads((ROOT / "benchmarks" / "results" / "hierarchy_probes.json").read_text())
    rows = hierarchy_probes.table(results).splitlines()[2:]
    assert len(rows) == len(results["probes"])
    for row, (name, entry) in zip(rows, results["probes"].items()):
        assert row.startswith(f"| {name} |") and f"{entry['card']['model']['psnr']:.2f} dB" in row
        assert name in hierarchy_probes.PROBES  # every measured probe can be run again by name


def test_digit_stability_tells_a_clip_that_keeps_its_digits_from_one_that_swaps_them():
    import torch
    from digit_stability import stability

    from lvdm_ref.data import generate_moving_mnist
    from lvdm_ref.digits import SHIPPED_DIGITS, DigitClassifier

    torch.manual_seed(0)
    classifier = DigitClassifier.load(SHIPPED_DIGITS).eval()
    clips, labels = generate_moving_mnist(24, 16, 64, 2, "test", seed=5, return_labels=True)
    real = stability(classifier, clips, labels)
    assert real["keeps"] >= 0.75 and real["true_digits"] >= 0.75  # 19 of these 24 (seeded) clips; 0.99 of the 256 of record
    assert real["keeps"] == pytest.approx(np.mean(real["keeps_per_clip"]), abs=1e-4)
    # frames 8-15 from the clips of a disjoint set of digit pairs: the halves agree only by chance
    other = [i for i in range(len(clips)) if not (set(labels[i]) & set(labels[0]))][0]
    swapped = np.concatenate([clips[:, :8], np.roll(clips, 1, axis=0)[:, 8:]], axis=1)
    assert stability(classifier, swapped)["keeps"] <= 0.25
    assert not stability(classifier, np.concatenate([clips[:1, :8], clips[other:other + 1, 8:]], 1))["keeps_per_clip"][0]


@pytest.mark.skipif(not (ROOT / "benchmarks" / "results" / "digit_stability.json").exists(), reason="no run of record yet")
def test_committed_digit_stability_shares_are_the_means_of_their_clips():
    results = json.loads((ROOT / "benchmarks" / "results" / "digit_stability.json").read_text())
    assert results["real"]["keeps"] >= 0.95  # the measure reads real clips as keeping their digits
    for name, entry in results.items():
        if isinstance(entry, dict):
            assert entry["num"] == results["num"] == len(entry["keeps_per_clip"])
            for key in ("keeps", "true_digits"):
                if key in entry:
                    assert entry[key] == pytest.approx(np.mean(entry[f"{key}_per_clip"]), abs=1e-4)


def test_probe_help_lists_every_probe(capsys):
    """`--help` prints (probe names hold a '%', which argparse reads as a format character unless doubled)."""
    import hierarchy_probes

    with pytest.raises(SystemExit) as stopped:
        hierarchy_probes.main(["--help"])
    shown = " ".join(capsys.readouterr().out.split())
    assert stopped.value.code == 0 and "pred v, condition in 90 %, no perturbation" in shown


def test_logged_loss_is_the_last_row_at_or_before_the_step(tmp_path):
    from lvdm_ref.budget_study import logged_loss
    from lvdm_ref.train import LOG_FILE

    assert logged_loss(tmp_path, 10) is None  # no log
    (tmp_path / LOG_FILE).write_text("".join(json.dumps({"step": s, "loss": s / 100}) + "\n" for s in (1, 25, 50)))
    assert logged_loss(tmp_path, 49) == 0.25 and logged_loss(tmp_path, 50) == 0.5 and logged_loss(tmp_path, 0) is None


def test_a_calibration_made_on_another_machine_is_measured_again_where_the_variant_trains(tmp_path, monkeypatch):
    """A variant calibrated elsewhere that has trained nothing yet is calibrated again here (its steps would
    otherwise be priced at the other machine's rate); one with scored points keeps its calibration until
    `--recalibrate` measures it here and prices those points again."""
    import argparse

    from lvdm_ref import budget_study
    from lvdm_ref.train import cpu_has_bf16, cpu_name

    here = {"device": cpu_name(), "bf16": cpu_has_bf16()}
    calls = []

    def calibrate(train, preset, vae, folder, steps, threads, common):
        calls.append(threads)
        return {"cpu_seconds_per_step": 0.6, "peak_rss_mib": 1, **here}

    def train(preset, vae, folder, *, steps, stop_at, resume, **common):
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "train_state.pt").write_bytes(b"")
        return {"checkpoint": str(folder / "short.safetensors"), "final_loss": 0.1}

    monkeypatch.setattr(budget_study, "calibrate", calibrate)
    monkeypatch.setattr(budget_study.Study, "evaluate", lambda self, checkpoint, key, **kwargs: {"fvd": 1.0})
    vae = tmp_path / "vae.safetensors"
    vae.write_bytes(b"weights")
    args = argparse.Namespace(vae=vae, minutes=1.0, num=2, num_clips=16, threads=1, out=tmp_path / "study.json",
                              work=tmp_path / "work", calibration_steps=1, sample_steps=50, recalibrate=False)
    study = budget_study.Study(args)
    elsewhere = {"cpu_seconds_per_step": 5.0, "device": "another CPU", "bf16": not here["bf16"], "threads": 2}
    study.results["recipes"]["fresh"] = {"change": "x", "steps": 12, **elsewhere}
    study.run("fresh", "x", lambda preset: preset, train)
    entry = study.results["recipes"]["fresh"]
    assert calls == [1] and entry["device"] == here["device"] and entry["threads"] == 1
    assert entry["steps"] == 100 and entry["end"]["cpu_minutes"] == pytest.approx(1.0)  # 60 s at 0.6 s a step

    scored = {"change": "y", "steps": 400, **elsewhere, "half": {"step": 200, "cpu_minutes": 16.67, "final_loss": 0.1},
              "end": {"step": 400, "cpu_minutes": 33.33, "final_loss": 0.1}}
    study.results["recipes"]["scored"] = json.loads(json.dumps(scored))
    study.run("scored", "y", lambda preset: preset, train)
    assert calls == [1] and study.results["recipes"]["scored"] == scored  # finished: nothing measured or trained
    args.recalibrate = True
    study.run("scored", "y", lambda preset: preset, train)
    entry = study.results["recipes"]["scored"]
    assert calls == [1, 1] and entry["device"] == here["device"] and entry["steps"] == 400
    assert entry["half"]["cpu_minutes"] == pytest.approx(2.0) and entry["end"]["cpu_minutes"] == pytest.approx(4.0)
    assert json.loads(args.out.read_text())["recipes"]["scored"] == entry
