"""The stability study's scoring (benchmarks/stability_study.py), against closed forms and the classifier itself;
and its run of record, recomputed from the per-clip results it keeps."""
import json
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import stability_study  # noqa: E402

from lvdm_ref.data import generate_moving_mnist  # noqa: E402
from lvdm_ref.digits import SHIPPED_DIGITS, DigitClassifier  # noqa: E402

RECORD = ROOT / "benchmarks" / "results" / "stability_study.json"


def test_paired_difference_is_the_mean_gap_per_seed_set():
    a = np.array([1, 1, 0, 0, 1, 1, 1, 1], dtype=float)
    b = np.array([0, 1, 0, 1, 0, 0, 0, 1], dtype=float)
    gap = stability_study.paired_difference(a, b, num=4)
    assert gap["num"] == 8 and gap["difference"] == pytest.approx(0.375)  # (0 + 3) / 8
    assert gap["seed_sets"] == pytest.approx([0.0, 0.75])  # (1 + 0 + 0 - 1) / 4 and (1 + 1 + 1 + 0) / 4
    low, high = gap["interval"]
    assert low <= 0.375 <= high
    same = stability_study.paired_difference(a, a, num=4)
    assert same["difference"] == 0 and same["interval"] == [0, 0]
    shorter = stability_study.paired_difference(a[:4], b, num=4)  # scored on fewer clips: the common ones
    assert shorter["num"] == 4 and shorter["seed_sets"] == pytest.approx([0.0])


def test_real_clips_keep_their_digits_and_a_swap_halfway_does_not():
    classifier = DigitClassifier.load(SHIPPED_DIGITS).eval()
    clips = generate_moving_mnist(16, 16, 64, 2, "test", seed=3)
    keeps = stability_study.keeps_per_clip(classifier, clips)
    assert keeps.mean() >= 0.8  # the classifier reads real clips the same in both halves (0.96 at N = 512)
    swapped = clips.copy()
    swapped[:, 8:] = np.roll(clips, 1, axis=0)[:, 8:]  # frames 8-15 of another clip
    other = stability_study.keeps_per_clip(classifier, swapped)
    assert other.mean() <= 0.3  # unrelated digit pairs agree by chance only (0.02)


def test_summary_splits_seed_sets_and_keeps_the_bits():
    keeps = np.array([True, False, True, True, False, False])
    summary = stability_study.stability_summary(keeps, num=3)
    assert summary["keeps"] == pytest.approx(0.5) and summary["keeps_seed_sets"] == pytest.approx([2 / 3, 1 / 3], abs=1e-4)
    np.testing.assert_array_equal(stability_study.from_bits(summary["keeps_bits"]).astype(bool), keeps)  # 0/1 flags


def test_loss_check_compares_the_same_steps(tmp_path):
    reference = tmp_path / "attention.json"
    reference.write_text(json.dumps({"variants": {"factorized": {"loss_curve": {
        "step": [25, 50, 75], "cpu_minutes": [1, 2, 3], "loss": [0.5, 0.4, 0.2]}}}}))
    (tmp_path / "log.jsonl").write_text("".join(json.dumps({"step": step, "loss": loss}) + "\n"
                                                for step, loss in ((25, 0.5), (50, 0.44), (100, 0.1))))
    check = stability_study.loss_check(tmp_path, reference)
    assert check["steps_compared"] == 2 and check["last_step"] == 50
    assert check["ratio_median"] == pytest.approx(1.05)  # the median of 1.0 and 1.1


@pytest.mark.skipif(not RECORD.exists(), reason="no stability study of record")
def test_the_record_recomputes_from_its_per_clip_bits():
    results = json.loads(RECORD.read_text())
    num = results["setting"]["num"]
    points = [point for entry in results["designs"].values() for point in entry.values()
              if isinstance(point, dict) and "keeps_bits" in point] + list(results.get("models", {}).values()) \
        + list(results.get("curve", {}).values())
    assert points
    for point in points:
        keeps = stability_study.from_bits(point["keeps_bits"])
        assert len(keeps) in (num, 2 * num)
        assert point["keeps"] == pytest.approx(keeps.mean(), abs=1e-4)
        assert point["keeps_seed_sets"] == pytest.approx([part.mean() for part in np.split(keeps, len(keeps) // num)],
                                                         abs=1e-4)
    for name, gap in stability_study.differences(results).items():
        assert results["differences"][name]["difference"] == pytest.approx(gap["difference"], abs=1e-4)
        assert results["differences"][name]["interval"] == pytest.approx(gap["interval"], abs=1e-4)


def test_differences_pair_each_design_with_its_reference():
    """From scratch against `baseline`; the continuation against its start (the shipped model); the long run's
    snapshot at the control's step against the control at that step. Gaps in closed form from the bits."""
    def point(bits, step=None):
        return {"keeps_bits": bits, **({"step": step} if step else {})}

    results = {"setting": {"num": 4},
               "designs": {"baseline": {"end": point("0000", 10)},
                           "joint": {"end": point("1100", 10)},
                           "continue_2k": {"half": point("0110", 5), "end": point("1110", 10)},
                           "continue_anneal": {"end": point("1111", 5)}},  # the control's half steps, annealed
               "models": {"mmnist_short": point("0100")},
               "curve": {"1:5": {"segment": 1, "steps": 5, "after_start": 5, **point("1111")},
                         "1:7": {"segment": 1, "steps": 7, "after_start": 7, **point("0000")},
                         # the run again from its start on another machine, and once from a later checkpoint
                         "2:5": {"segment": 2, "steps": 5, "after_start": 5, **point("1011")},
                         "3:3": {"segment": 3, "steps": 3, "after_start": 10, **point("1100")}}}
    gaps = {name: gap["difference"] for name, gap in stability_study.differences(results).items()}
    assert gaps == pytest.approx({"joint - baseline, end": 0.5,
                                  "continue_2k, half - mmnist_short": 0.25, "continue_2k, end - mmnist_short": 0.5,
                                  "continue_anneal, end - continue_2k, half": 0.5,  # the same steps
                                  "continue_anneal, end - continue_2k, end": 0.25,  # against twice the steps
                                  "continue_anneal, end - mmnist_short": 0.75,
                                  "curve 1 at step 5 - continue_2k, half": 0.5,  # no snapshot at step 10 yet
                                  "curve 1 at step 5 - mmnist_short": 0.75, "curve 1 at step 7 - mmnist_short": -0.25,
                                  "curve 2 at step 5 - continue_2k, half": 0.25, "curve 2 at step 5 - mmnist_short": 0.5,
                                  "curve 2 - curve 1 at step 5": -0.25,  # the same recipe twice
                                  "curve 3 at step 10 - continue_2k, end": -0.25, "curve 3 at step 10 - mmnist_short": 0.25})


def test_a_run_folder_is_one_segment_of_the_curve():
    """Snapshots already scored name their segment; a folder none of whose snapshots were scored is a new one."""
    curve = {"1:5": {"segment": 1, "steps": 5, "sha256": "a"}, "2:5": {"segment": 2, "steps": 5, "sha256": "b"}}
    assert stability_study.segment_of(curve, {5: "b", 10: "c"}) == 2  # the second run, resumed: a new snapshot
    assert stability_study.segment_of(curve, {5: "a"}) == 1
    assert stability_study.segment_of(curve, {5: "d", 10: "c"}) == 3  # started again: same steps, other weights
    assert stability_study.segment_of({}, {5: "a"}) == 1


def test_steps_after_start_follow_the_chain_of_inits(tmp_path, monkeypatch):
    """A checkpoint's steps after the shipped start: its own plus those of each checkpoint it continued."""
    import torch

    from lvdm_ref.checkpoint import save_weights

    def checkpoint(name, steps, init=None):
        metadata = {"steps": steps, **({"init": str(init)} if init else {})}
        return save_weights(tmp_path / name, {"w": torch.full((2,), float(steps))}, metadata)

    start = checkpoint("start.safetensors", 15000)
    monkeypatch.setattr(stability_study, "CONTINUED", start)
    first = checkpoint("first.safetensors", 300, start)
    second = checkpoint("second.safetensors", 40, first)
    assert stability_study.steps_after_start(start) == 0
    assert stability_study.steps_after_start(first) == 300
    assert stability_study.steps_after_start(second) == 340
    assert stability_study.steps_after_start(checkpoint("alone.safetensors", 7)) is None  # not a continuation
    assert stability_study.steps_after_start(tmp_path / "missing.safetensors") is None


def test_continuations_take_the_controls_steps_where_asked():
    """`--equal-steps` and the designs fixed at a point of the control take its steps; the rest their CPU budget."""
    import argparse

    study = stability_study.StabilityStudy.__new__(stability_study.StabilityStudy)  # no files: budgets only
    study.section, study.args = "designs", argparse.Namespace(equal_steps=False, minutes=45.0)
    study.results = {"designs": {"continue_2k": {"steps": 10, "half": {"step": 5}}, "continue_anneal": {},
                                 "continue_temporal_conv": {}}}
    assert study.budget("continue_anneal", 1.0) == 5 and study.points("continue_anneal", 5) == [("end", 5)]
    assert study.budget("continue_temporal_conv", 60.0) == 45  # 45 minutes at 60 CPU-seconds a step
    study.args.equal_steps = True
    assert study.budget("continue_temporal_conv", 60.0) == 10
    assert study.results["designs"]["continue_temporal_conv"]["steps_of"] == "continue_2k"
    assert study.budget("baseline", 60.0) == 45  # the reference of equal steps keeps its budget
    study.results["designs"]["wide"] = {}
    assert study.budget("wide", 60.0) == stability_study.FP32_MATCH_STEP  # from scratch: baseline's match point
    assert study.results["designs"]["wide"]["steps_of"] == stability_study.AT_BASELINE_STEP


def test_a_design_at_equal_steps_is_compared_with_baseline_at_that_step():
    """Its end against baseline's point at the same step (not baseline's end, a CPU budget of other steps)."""
    step = f"step_{stability_study.FP32_MATCH_STEP}"
    ones, zeros = stability_study.bits(np.ones(4)), stability_study.bits(np.zeros(4))
    results = {"setting": {"num": 4}, "designs": {
        "baseline": {step: {"keeps_bits": zeros}, "end": {"keeps_bits": ones}},
        "wide": {"steps_of": stability_study.AT_BASELINE_STEP, "half": {"keeps_bits": ones},
                 "end": {"keeps_bits": ones}}}}
    out = stability_study.differences(results)
    assert out[f"wide - baseline, step {stability_study.FP32_MATCH_STEP}"]["difference"] == pytest.approx(1.0)
    assert not any(key.startswith("wide - baseline, ") and "step" not in key for key in out)


def test_curve_scores_new_snapshots_once_and_only_the_steps_asked(tmp_path, monkeypatch):
    """`--curve-steps`: only those snapshots are scored; a later call scores the rest and never an entry twice."""
    import torch

    from lvdm_ref.checkpoint import save_weights

    start = save_weights(tmp_path / "start.safetensors", {"w": torch.zeros(2)}, {"steps": 15000})
    monkeypatch.setattr(stability_study, "CONTINUED", start)
    for steps in (5, 10, 15):
        save_weights(tmp_path / "run" / "snapshots" / f"short_{steps:06d}.safetensors", {"w": torch.full((2,), steps)},
                     {"steps": steps, "init": str(start), "num_clips": 64, "cpu_seconds": 60.0 * steps})
    study = stability_study.StabilityStudy.__new__(stability_study.StabilityStudy)
    study.results, scored = {}, []

    def evaluate(path, key, seed_sets=None):
        scored.append(key)
        return {"keeps": 0.5, "fvd": 100.0, "steps": 50}

    study.evaluate, study.save = evaluate, lambda: None
    study.score_curve(tmp_path / "run", [10])
    assert list(study.results["curve"]) == ["1:10"] and len(scored) == 1
    assert study.results["curve"]["1:10"]["after_start"] == 10 and study.results["curve"]["1:10"]["cpu_minutes"] == 10
    study.score_curve(tmp_path / "run")
    assert sorted(study.results["curve"]) == ["1:10", "1:15", "1:5"] and len(scored) == 3


def test_where_digits_change_sees_a_swap_between_latent_frames():
    """Real clips agree across their latent frames; with latent frames 2-3 (frames 8-15) taken from another clip,
    frames 0-1 and 2-3 agree by chance only, and the frame-to-frame dip sits at the boundary between them."""
    import where_digits_change

    classifier = DigitClassifier.load(SHIPPED_DIGITS).eval()
    clips = generate_moving_mnist(16, 16, 64, 2, "test", seed=3)
    real = where_digits_change.profile(classifier, clips, window=4)
    assert np.min(real["latent_agreement"]) >= 0.7  # 0.90-0.96 at N = 256
    swapped = clips.copy()
    swapped[:, 8:] = np.roll(clips, 1, axis=0)[:, 8:]
    entry = where_digits_change.profile(classifier, swapped, window=4)
    matrix = np.asarray(entry["latent_agreement"])
    assert matrix[0, 1] >= 0.7 and matrix[2, 3] >= 0.7 and matrix[:2, 2:].max() <= 0.3
    steps = entry["frame_to_frame"]
    assert steps[7] <= 0.3 and steps[7] == min(steps)  # between frame 7 and 8
    assert where_digits_change.boundary_contrast([1.0] * 3 + [0.0] + [1.0] * 3, 4) == pytest.approx(-1.0)


def test_committed_where_digits_change_recomputes_from_its_matrices():
    """The committed record's summaries are the means of what it keeps: agreement at each distance is the mean
    of the matrix's entries at that distance, the boundary contrast that of the frame-to-frame shares."""
    import where_digits_change

    record = json.loads(where_digits_change.RESULTS.read_text())
    for name, entry in record["sets"].items():
        matrix = np.asarray(entry["latent_agreement"])
        np.testing.assert_allclose(matrix, matrix.T, atol=1e-4)
        np.testing.assert_allclose(np.diag(matrix), 1.0)
        for distance, (share, low, high) in entry["latent_agreement_by_distance"].items():
            assert share == pytest.approx(np.diagonal(matrix, int(distance)).mean(), abs=1e-3), name
            assert low <= share <= high
        assert entry["boundary_contrast"] == pytest.approx(
            where_digits_change.boundary_contrast(entry["frame_to_frame"], record["window"]), abs=1e-3)
    for name, model in record.get("from_real", {}).get("models", {}).items():
        for t, entry in model["t"].items():
            for measure, flags in (("keeps", "keeps_bits"), ("true_digits", "true_bits")):
                share, low, high = entry[measure]
                assert share == pytest.approx(np.mean([int(c) for c in entry[flags]]), abs=1e-3), (name, t)
                assert low <= share <= high and len(entry[flags]) == entry["num"]
            for share, low, high in entry.get("random_error_of_that_rms", {}).values():
                assert low <= share <= high and entry["latent_rms_error"] > 0


def test_from_real_differences_pair_every_two_models_at_each_shared_step():
    import where_digits_change

    def scored(keeps, true):
        return {"keeps_bits": keeps, "true_bits": true}

    entries = {"a": {"t": {"300": scored("1100", "1000"), "500": scored("0000", "0000")}},
               "b": {"t": {"300": scored("1111", "0000")}},
               "c": {"t": {"300": scored("0011", "0011"), "500": scored("1000", "1000")}}}
    gaps = {name: gap["difference"] for name, gap in where_digits_change.from_real_differences(entries).items()}
    assert gaps == pytest.approx({"b - a, keeps, t = 300": 0.5, "b - a, true, t = 300": -0.25,
                                  "c - a, keeps, t = 300": 0.0, "c - a, true, t = 300": 0.25,
                                  "c - a, keeps, t = 500": 0.25, "c - a, true, t = 500": 0.25,
                                  "c - b, keeps, t = 300": -0.5, "c - b, true, t = 300": 0.5})


def test_a_model_on_its_training_clips_is_compared_with_itself_on_held_out_clips_only():
    """Other clips: no pairing with another model's held-out clips; the unpaired gap of the two shares."""
    import where_digits_change

    def scored(keeps, true):
        return {"keeps_bits": keeps, "true_bits": true}

    entries = {"a": {"t": {"300": scored("1100", "1000")}},
               "b": {"t": {"300": scored("0000", "0000")}},
               "a (training clips)": {"clips": "training", "t": {"300": scored("1111", "1110")}}}
    out = where_digits_change.from_real_differences(entries)
    assert sorted(out) == ["a (training clips) - a, keeps, t = 300", "a (training clips) - a, true, t = 300",
                           "b - a, keeps, t = 300", "b - a, true, t = 300"]
    gap = out["a (training clips) - a, true, t = 300"]
    assert gap["difference"] == pytest.approx(0.5) and gap["paired"] is False
    assert gap["interval"][0] <= 0.5 <= gap["interval"][1]


def test_own_training_clips_are_the_clips_the_trainer_encodes():
    import where_digits_change

    from lvdm_ref.config import get_preset
    from lvdm_ref.recipes.common import training_clips

    clips, labels = where_digits_change.own_training_clips(3)
    assert np.array_equal(clips, training_clips(get_preset("mmnist").data, 2048)[:3]) and labels.shape == (3, 2)
    with pytest.raises(ValueError, match="from-real-num"):
        where_digits_change.own_training_clips(4096)


def test_equal_steps_probe_refuses_continuations_and_steps_past_the_schedule(tmp_path, capsys):
    import equal_steps_probe

    for argv, message in ((["--design", "continue_2k", "--stop-at", "10"], "continues mmnist_short"),
                          (["--design", "wide", "--stop-at", "5000"], "--stop-at takes 1..3434")):
        with pytest.raises(SystemExit):
            equal_steps_probe.main([*argv, "--work", str(tmp_path)])
        assert message in capsys.readouterr().err
    assert equal_steps_probe.folder_of("baseline", tmp_path) == tmp_path / "baseline_equal_steps"
    assert equal_steps_probe.folder_of("wide", tmp_path) == tmp_path / "wide"  # the study's own: it resumes there


def test_from_real_keeps_each_set_of_real_clips_apart(tmp_path):
    """The studies' real clips are drawn as one set: 128 of them are not the first 128 of 256, so their denoised
    batches must not be read back for the other N."""
    import where_digits_change

    from lvdm_ref.studies import real_clips

    assert not np.array_equal(real_clips(4), real_clips(8)[:4])  # why: trajectories depend on N
    folders = {where_digits_change.from_real_folder(tmp_path, "m", "ab" * 32, "test", num) for num in (128, 256)}
    assert len(folders) == 2
    assert where_digits_change.from_real_folder(tmp_path, "m", "ab" * 32, "training", 128) == \
        where_digits_change.from_real_folder(tmp_path, "m", "ab" * 32, "training", 256)  # one fixed set, a prefix


def test_every_design_from_scratch_changes_one_field_of_the_preset():
    """The protocol: each design changes one thing from `baseline`; `deep` doubles the ResBlocks of every level
    (a UNet of L levels and n blocks a level has 2Ln + L + 2 of them: n down and n + 1 up per level, two in the
    middle)."""
    import dataclasses

    from lvdm_ref.config import get_preset
    from lvdm_ref.unet import ResBlock, UNet

    def fields(preset):
        return {(group, name): value for group in ("unet", "diffusion", "train", "data")
                for name, value in dataclasses.asdict(getattr(preset, group)).items()}

    base = fields(get_preset("mmnist"))
    expected = {"baseline": set(), "temporal16": {("unet", "temporal_levels")},
                "temporal_conv": {("unet", "temporal_conv")}, "pooled_norm": {("unet", "norm")},
                "joint": {("unet", "attention")}, "clips_16k": set(), "wide": {("unet", "model_channels")},
                "wider": {("unet", "model_channels")}, "deep": {("unet", "num_res_blocks")}}
    designs = stability_study.designs()
    for name, changed in expected.items():
        got = fields(designs[name][1](get_preset("mmnist")))
        assert {key for key in base if got[key] != base[key]} == changed, name
    deep = designs["deep"][1](get_preset("mmnist")).unet
    levels = len(deep.channel_mult)
    for config, blocks in ((get_preset("mmnist").unet, 1), (deep, 2)):
        found = sum(isinstance(module, ResBlock) for module in UNet(config).modules())
        assert found == 2 * levels * blocks + levels + 2


def test_capacity_series_are_the_scores_of_each_design_by_training_steps(tmp_path):
    """The capacity figure's rows: each design's SDEdit shares in the order of its training steps, models the
    results do not hold left out."""
    import where_digits_change

    def scored(share):
        return {"t": {"300": {"true_digits": [share, share - 0.1, share + 0.1]}}}

    results = {"from_real": {"models": {"mmnist_short": scored(0.68), "baseline_1000": scored(0.59),
                                       "mmnist_attention_factorized": scored(0.69), "wide_1000": scored(0.64)}}}
    series = where_digits_change.capacity_series(results, 300)
    preset, wide = series["64 channels (the preset)"], series["96 channels (wide)"]
    assert preset[:, 0].tolist() == [1000, 3434, 15000] and preset[:, 1].tolist() == [0.59, 0.69, 0.68]
    assert wide.tolist() == [[1000, 0.64, pytest.approx(0.54), pytest.approx(0.74)]]
    assert len(series) == 2 and where_digits_change.capacity_series(results, 500) == {}
    paths = where_digits_change.plot_capacity(results, tmp_path / "capacity", starts=(300,))
    assert all(path.stat().st_size > 0 for path in paths)
