"""Which short-model design keeps its digits? Designs at one CPU budget, ranked by digit stability.

    python benchmarks/stability_study.py --minutes 45 --num 256 --threads 1 [--only NAME ...]
    python benchmarks/stability_study.py --models data/checkpoints/mmnist_short.safetensors ...  # score files
    python benchmarks/stability_study.py --table

FVD does not see whether a generated clip keeps its digits: a 3 that turns into a 6 halfway through moves
plausibly. Digit stability does: the share of clips whose digits, read by the shipped classifier
(`lvdm_ref/digits.py`), are the same in frames 0-7 and in frames 8-15 (real test clips: about 0.95, the
autoencoder's reconstructions of them 0.93; two unrelated clips agree with probability 0.02).

Each design changes one thing from `baseline` (the `mmnist` preset) and trains with the budget-study harness
of `lvdm_ref/budget_study.py` (the same encoded clips, seed and optimiser; a calibration fixes the number of
steps from the CPU seconds per step), under `torch.compile` and, where the CPU computes bfloat16 natively
(AVX512-BF16 or AMX), bfloat16 autocast: the trainer's defaults. A calibration records its CPU and arithmetic;
on a machine that is not the control's, `--equal-steps` compares continuations at the control's steps. A
design is scored at half its steps on N samples and at its end on 2N (DDIM 50, eta 1, EMA weights, one noise
stream per clip): stability on two disjoint seed sets of N clips each (clips 0..N-1 and N..2N-1), with a 90 %
bootstrap interval over all 2N, and FVD of the first N against the fixed real set. `baseline` is also scored
at step 3,434, where the float32 eager run of the attention ablation (`mmnist_attention_factorized`, the same
preset, seed and clips) ended: with the same noise streams, the two are a paired check of bfloat16 training.
The default budget, 45 CPU-minutes, is that run's: at equal CPU, `baseline` shows what bfloat16 and compiling
buy.

Designs are compared by paired differences (the same noise streams give each design's clip i):
`differences` holds each design's end point minus `baseline`'s, per seed set and pooled, with 90 %
intervals. Resumable: the JSON is rewritten after every finished piece, training runs resume from their
state files, samples are kept batch by batch in `--work`.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads its OpenMP runtime
import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout without installing
from lvdm_ref.budget_study import Study, add_study_arguments, run_study  # noqa: E402
from lvdm_ref.checkpoint import SHIPPED_DIR  # noqa: E402
from lvdm_ref.digits import SHIPPED_DIGITS, DigitClassifier, chance_of_same_digits  # noqa: E402
from lvdm_ref.metrics import fvd_from_features  # noqa: E402
from lvdm_ref.recipes import train_short_model  # noqa: E402
from lvdm_ref.studies import (OTHER_REAL_SEED, bits, from_bits, interval, real_clips, reconstruct,  # noqa: E402
                              sample_in_batches)

FP32_MATCH_STEP = 3434  # where the attention ablation's float32 factorised run (45 CPU-minutes eager) ended
MORE_CLIPS = 16_384  # the data design: 8x the preset's 2,048 encoded clips
CONTINUED = SHIPPED_DIR / "mmnist_short.safetensors"  # where the `continue_*` designs start (scored under `models`)
CONTROL = "continue_2k"  # what the other continuations are compared with
# Continuations that take the steps of one of the control's points and are scored at their end only, on N clips.
AT_CONTROL_POINT = {"continue_anneal": "half"}
# `--equal-steps` for a design from scratch: the steps of baseline's point that the float32 run also reached, so
# that a design of another cost is compared with the same training (and the shipped float32 checkpoint) step for step.
AT_BASELINE_STEP = f"baseline, step_{FP32_MATCH_STEP}"


def keeps_per_clip(classifier, videos: np.ndarray) -> np.ndarray:
    """bool (N,): the digits read in frames 0-7 equal those read in frames 8-15."""
    from lvdm_ref.digits import keeps_digits

    return keeps_digits(classifier, videos, first=slice(0, 8), last=slice(8, 16), per_video=True).numpy()


def stability_summary(keeps: np.ndarray, num: int) -> dict:
    """Pooled share, the share in each seed set of `num` clips, the interval and the per-clip bits."""
    sets = [keeps[first:first + num] for first in range(0, len(keeps), num)]
    return {"keeps": round(float(keeps.mean()), 4), "keeps_seed_sets": [round(float(part.mean()), 4) for part in sets],
            "keeps_interval": interval(keeps.astype(float)), "keeps_bits": bits(keeps)}


# ----------------------------------------------------------------------------- the designs
def train_compiled(preset, vae, folder, **kwargs) -> dict:
    """`train_short_model` through `torch.compile`, as the `train` command trains."""
    return train_short_model(preset, vae, folder, compile=True, **kwargs)


def train_more_clips(preset, vae, folder, *, num_clips, latents_cache, **kwargs) -> dict:
    """The same on `MORE_CLIPS` encoded clips (a cache of their own beside the shared one)."""
    cache = Path(latents_cache).with_name(f"latents_{MORE_CLIPS}.pt")
    return train_short_model(preset, vae, folder, compile=True, num_clips=MORE_CLIPS, latents_cache=cache, **kwargs)


def train_continued(preset, vae, folder, *, num_clips, latents_cache, **kwargs) -> dict:
    """The shipped `mmnist_short` (15,000 steps) continued by the design's recipe (`train --init`)."""
    return train_compiled(preset, vae, folder, num_clips=num_clips, latents_cache=latents_cache, init=CONTINUED,
                          **kwargs)


def designs() -> dict:
    """name -> (what changes, Preset -> Preset, train function). bfloat16 autocast where the CPU computes it
    natively (the trainer's default: every design of the tables so far), float32 elsewhere."""
    def change(**fields_of):
        def apply(preset):
            groups = dict(fields_of)
            return dataclasses.replace(preset, **{group: dataclasses.replace(getattr(preset, group), **fields)
                                                  for group, fields in groups.items()})
        return apply

    return {
        "baseline": ("the mmnist preset: factorised attention at 8x8 and 4x4, per-frame convolutions",
                     change(), train_compiled),
        "temporal16": ("+ temporal attention at 16x16 (the full latent resolution, where LVDM's UNet has none)",
                       change(unet={"temporal_levels": (0,)}), train_compiled),
        "temporal_conv": ("+ a 3-tap temporal convolution in every ResBlock",
                          change(unet={"temporal_conv": True}), train_compiled),
        "pooled_norm": ("GroupNorm statistics pooled over the clip (the official code's) instead of per frame",
                        change(unet={"norm": "clip"}), train_compiled),
        "joint": ("joint attention over all frames and pixels instead of factorised",
                  change(unet={"attention": "joint"}), train_compiled),
        "clips_16k": (f"{MORE_CLIPS:,} encoded training clips instead of 2,048",
                      change(), train_more_clips),
        # Real clips noised to t = 300 and denoised lose a third of their digits, as much after 3,434 steps as
        # after 15,000 (where_digits_change.py --from-real): is the denoiser too small rather than undertrained?
        "wide": ("model_channels 96 instead of 64 (2.25x the FLOPs of a step)",
                 change(unet={"model_channels": 96}), train_compiled),
        # `wide` gives the real digits back more often than baseline at 1,000 steps: does width go on paying?
        "wider": ("model_channels 128 instead of 64 (4x the FLOPs of a step)",
                  change(unet={"model_channels": 128}), train_compiled),
        # The preset has one ResBlock per level (the official short models' configs three, the ucf101 preset
        # two): capacity by depth rather than width (8.0 M parameters against 5.4 M; 12.2 M for `wide`).
        "deep": ("num_res_blocks 2 instead of 1 (two ResBlocks per level; the official short UNets have three)",
                 change(unet={"num_res_blocks": 2}), train_compiled),
        # A continuation of the shipped model: the control for the long run of record (`--curve`), which
        # continues it on MORE_CLIPS clips, compared at the same steps.
        "continue_2k": ("mmnist_short (15,000 steps) continued on its own 2,048 clips", change(), train_continued),
        "continue_temporal_conv": ("continue_2k with a zero-started 3-tap temporal convolution in every ResBlock",
                                   change(unet={"temporal_conv": True}), train_continued),
        "continue_temporal16": ("continue_2k with zero-started temporal attention at 16x16",
                                change(unet={"temporal_levels": (0,)}), train_continued),
        # mmnist_short was trained at a constant lr and never annealed: does a decay to 0 bring out what it knows?
        "continue_anneal": (f"continue_2k for {CONTROL}'s half steps, its lr decayed to 0 on a cosine after warm-up",
                            change(train={"lr_schedule": "cosine"}), train_continued),
    }


class StabilityStudy(Study):
    """The budget study scored by digit stability on 2N samples, FVD beside it."""
    classifier = None

    def run(self, name: str, describe: str, apply, train=train_short_model) -> None:
        """`--equal-steps-threads`: a design at equal steps trains and samples on that many threads (its budget is
        steps, so threads change only its recorded cost: the calibration's CPU seconds, summed over threads)."""
        threads = getattr(self.args, "equal_steps_threads", None)
        if not (threads and self.at_baseline_step(name)):
            return super().run(name, describe, apply, train)
        import torch

        saved = self.args.threads
        self.args.threads = threads
        torch.set_num_threads(threads)
        self.results[self.section].setdefault(name, {"change": describe})["threads"] = threads
        try:
            super().run(name, describe, apply, train)
        finally:
            self.args.threads = saved
            torch.set_num_threads(saved)

    def at_baseline_step(self, name: str) -> bool:
        """`--equal-steps` and a design from scratch other than baseline: it takes baseline's match point."""
        return self.args.equal_steps and not name.startswith("continue_") and name != "baseline"

    def budget(self, name: str, cpu_seconds_per_step: float) -> int:
        """`--equal-steps`: a continuation takes the control's steps, whatever a step costs on this machine (a
        control calibrated on another CPU bought more steps with its minutes); otherwise the CPU budget."""
        control = self.results[self.section].get(CONTROL, {})
        if name in AT_CONTROL_POINT:
            point = AT_CONTROL_POINT[name]
            if point not in control:
                raise SystemExit(f"{name} takes the steps of {CONTROL}'s {point} point: run {CONTROL} first")
            self.results[self.section][name]["steps_of"] = f"{CONTROL}, {point}"
            return control[point]["step"]
        if self.at_baseline_step(name):
            self.results[self.section][name]["steps_of"] = AT_BASELINE_STEP
            return FP32_MATCH_STEP
        if self.args.equal_steps and name.startswith("continue_") and name != CONTROL:
            if "steps" not in control:
                raise SystemExit(f"--equal-steps: {CONTROL} has no steps yet; run it first (--only {CONTROL})")
            self.results[self.section][name]["steps_of"] = CONTROL
            return control["steps"]
        return super().budget(name, cpu_seconds_per_step)

    def points(self, name: str, steps: int) -> list[tuple[str, int]]:
        if name in AT_CONTROL_POINT:
            return [("end", steps)]
        points = super().points(name, steps)
        if name == "baseline" and FP32_MATCH_STEP < steps:  # the bfloat16 check against the float32 run
            points = sorted(points + [(f"step_{FP32_MATCH_STEP}", FP32_MATCH_STEP)], key=lambda point: point[1])
        return points

    def stability(self, videos: np.ndarray) -> dict:
        if self.classifier is None:
            self.classifier = DigitClassifier.load(SHIPPED_DIGITS).eval()
        return stability_summary(keeps_per_clip(self.classifier, videos), self.args.num)

    def reference(self) -> np.ndarray:
        real = super().reference()
        reference = self.results["reference"]
        if "stability_real" not in reference:  # the second real set (seed 2) and its reconstructions
            clips = real_clips(2 * self.args.num, OTHER_REAL_SEED)
            reference["stability_real"] = self.stability(clips)
            reference["stability_reconstructed"] = self.stability(reconstruct(self.args.vae, clips))
            reference["stability_chance"] = round(chance_of_same_digits(), 4)
            self.save()
        return real

    def evaluate(self, checkpoint: Path, key: str, sampler: str = "ddim", steps: int = 50, eta: float = 1.0,
                 seed: int = 0, seed_sets: int | None = None) -> dict:
        """FVD of the first N samples; stability of 2N (two seed sets) at a design's end, of the first N (one
        seed set) at the points along the way (sampling costs about as much CPU as training)."""
        real, num = self.reference(), self.args.num
        if seed_sets is None:
            name, point = key.rsplit("_", 1)
            seed_sets = 1 if point in ("half", str(FP32_MATCH_STEP)) or name in AT_CONTROL_POINT else 2
        count = seed_sets * num
        videos, sample_cpu = sample_in_batches(checkpoint, count, self.work / "samples" / key, sampler, steps,
                                               eta, seed)
        fvd = fvd_from_features(real, self.features(key, lambda: videos[:num]))
        return {"fvd": round(fvd, 2), **self.stability(videos), "sample_cpu_seconds": round(sample_cpu, 1),
                "sampler": sampler, "steps": steps, "eta": eta, "seed": seed}

    def score_models(self, paths: list[Path], seed_sets: int = 2) -> None:
        """Score checkpoints trained elsewhere (shipped files) the same way, under `models`, on `seed_sets`
        sets of N clips (a file scored on one set and asked for two is scored again, its kept samples reused)."""
        from lvdm_ref.utils import file_sha256

        for path in paths:
            entry = self.results.get("models", {}).get(path.stem)
            if (entry is None or entry.get("sha256") != file_sha256(path)
                    or len(entry["keeps_bits"]) < seed_sets * self.args.num):
                scores = self.evaluate(path, f"model_{path.stem}", seed_sets=seed_sets)  # may save(): new results
                self.results.setdefault("models", {})[path.stem] = {
                    "checkpoint": str(path.relative_to(ROOT) if path.is_relative_to(ROOT) else path),
                    "sha256": file_sha256(path), **scores}
                self.save()
            print(f"{path.stem}: keeps {self.results['models'][path.stem]['keeps']}", file=sys.stderr)


    def score_curve(self, folder: Path, steps: list[int] | None = None) -> None:
        """Score every snapshot of a long run (`train --model short --snapshot-every K`, FOLDER/snapshots/) not
        scored yet (only those at `steps`, when given), on one seed set of N clips, into `curve`, keyed
        "SEGMENT:STEP" (a finished entry never changes). A segment is one run folder: a run that starts again elsewhere (its folder lost with a
        machine) is a new segment, from the checkpoint it starts from (`steps_after_start`)."""
        from lvdm_ref.checkpoint import read_metadata
        from lvdm_ref.utils import file_sha256

        snapshots = {path: read_metadata(path) for path in sorted((folder / "snapshots").glob("short_*.safetensors"))}
        shas = {meta["steps"]: file_sha256(path) for path, meta in snapshots.items()}
        segment = segment_of(self.results.get("curve", {}), shas)
        for path, meta in snapshots.items():
            key = f"{segment}:{meta['steps']}"
            if key in self.results.get("curve", {}) or (steps and meta["steps"] not in steps):
                continue
            offset = steps_after_start(resolve_init(meta["init"])) if meta.get("init") else None
            if offset is None:
                raise SystemExit(f"{path} does not continue {CONTINUED.name}: train the run with --init")
            scores = self.evaluate(path, f"curve{segment}_{folder.name}_{path.stem}", seed_sets=1)
            self.results.setdefault("curve", {})[key] = {
                **scores, "sampler_steps": scores["steps"], "segment": segment,
                "steps": meta["steps"], "after_start": offset + meta["steps"],  # the run's steps; after CONTINUED
                "init": Path(meta["init"]).name, "init_steps": meta.get("init_steps"),
                "num_clips": meta["num_clips"], "cpu_minutes": round(meta["cpu_seconds"] / 60, 1),
                "device": meta.get("device"), "bf16": meta.get("bf16"), "sha256": shas[meta["steps"]]}
            self.save()
            print(f"{path.name} (segment {segment}): keeps {scores['keeps']}, FVD {scores['fvd']}", file=sys.stderr)


def segment_of(curve: dict, shas: dict[int, str]) -> int:
    """The segment a run folder's snapshots (step -> sha256) belong to: the one that already holds any of them,
    or a new one after the last."""
    for entry in curve.values():
        if shas.get(entry["steps"]) == entry["sha256"]:
            return entry["segment"]
    return max((entry["segment"] for entry in curve.values()), default=0) + 1


def resolve_init(recorded: str) -> Path:
    """A checkpoint path as a run recorded it (relative to where it ran: the repository root)."""
    path = Path(recorded)
    return path if path.is_absolute() or path.exists() else ROOT / path


def steps_after_start(path: Path, depth: int = 0) -> int | None:
    """Training steps from `CONTINUED` to the checkpoint at `path`: 0 for the same file, else its own steps plus
    those of the checkpoint it continued (`init` in its metadata, followed back); None if the chain does not
    lead to `CONTINUED`."""
    from lvdm_ref.checkpoint import read_metadata
    from lvdm_ref.utils import file_sha256

    if not path.exists() or depth > 16:
        return None
    if file_sha256(path) == file_sha256(CONTINUED):
        return 0
    meta = read_metadata(path)
    if not meta.get("init") or "steps" not in meta:
        return None
    before = steps_after_start(resolve_init(meta["init"]), depth + 1)
    return None if before is None else before + meta["steps"]


def curve_segments(results: dict) -> dict[int, list[dict]]:
    """The run of record's scored snapshots, per segment, in the order of their steps."""
    segments: dict[int, list[dict]] = {}
    for entry in sorted(results.get("curve", {}).values(), key=lambda entry: (entry["segment"], entry["steps"])):
        segments.setdefault(entry["segment"], []).append(entry)
    return segments


def paired_difference(a: np.ndarray, b: np.ndarray, num: int, resamples: int = 2000, seed: int = 0) -> dict:
    """mean(a - b) over the clips both were scored on, paired by noise stream, pooled and per seed set of
    `num` clips, with 90 % intervals."""
    count = min(len(a), len(b))
    gap = a[:count] - b[:count]
    sets = [gap[first:first + num] for first in range(0, count, num)]
    return {"num": count, "difference": round(float(gap.mean()), 4), "interval": interval(gap, resamples, seed),
            "seed_sets": [round(float(part.mean()), 4) for part in sets],
            "seed_set_intervals": [interval(part, resamples, seed) for part in sets]}


def differences(results: dict) -> dict:
    """Each design from scratch minus `baseline`, each continuation minus `CONTROL` and minus its start, at half
    and at all of the budget; `baseline` at step 3,434 minus the float32 run."""
    designs, num = results.get("designs", {}), results["setting"]["num"]
    start = results.get("models", {}).get(CONTINUED.stem)
    out = {}
    for point in ("half", "end"):  # equal CPU: half and all of the budget
        for name, entry in designs.items():
            if point not in entry:
                continue
            against = CONTROL if name.startswith("continue_") else "baseline"
            if entry.get("steps_of") == AT_BASELINE_STEP:  # equal steps: its end against baseline at that step
                reference = designs.get("baseline", {}).get(f"step_{FP32_MATCH_STEP}")
                if point == "end" and reference:
                    out[f"{name} - baseline, step {FP32_MATCH_STEP}"] = paired_difference(
                        from_bits(entry[point]["keeps_bits"]), from_bits(reference["keeps_bits"]), num)
                continue
            if name != against and name not in AT_CONTROL_POINT and point in designs.get(against, {}):
                out[f"{name} - {against}, {point}"] = paired_difference(
                    from_bits(entry[point]["keeps_bits"]), from_bits(designs[against][point]["keeps_bits"]), num)
            for other in ("half", "end") if name in AT_CONTROL_POINT else ():  # at the control's steps, and its end
                if other in designs.get(CONTROL, {}):
                    out[f"{name}, {point} - {CONTROL}, {other}"] = paired_difference(
                        from_bits(entry[point]["keeps_bits"]), from_bits(designs[CONTROL][other]["keeps_bits"]), num)
            if name.startswith("continue_") and start:
                out[f"{name}, {point} - {CONTINUED.stem}"] = paired_difference(
                    from_bits(entry[point]["keeps_bits"]), from_bits(start["keeps_bits"]), num)
    control = designs.get(CONTROL, {})
    segments = curve_segments(results)
    first = {entry["after_start"]: entry for entry in segments[min(segments)]} if segments else {}
    for segment, entries in segments.items():
        at = {entry["after_start"]: entry for entry in entries}
        for point in ("half", "end"):  # the long run at the control's steps: the same start, schedule and step
            entry = at.get(control.get(point, {}).get("step"))
            if entry:
                out[f"curve {segment} at step {entry['after_start']} - {CONTROL}, {point}"] = paired_difference(
                    from_bits(entry["keeps_bits"]), from_bits(control[point]["keeps_bits"]), num)
        for entry in entries if start else ():  # the long run against its start
            out[f"curve {segment} at step {entry['after_start']} - {CONTINUED.stem}"] = paired_difference(
                from_bits(entry["keeps_bits"]), from_bits(start["keeps_bits"]), num)
        for entry in entries if segment != min(segments) else ():  # the same recipe again: how far two runs differ
            if entry["after_start"] in first:
                out[f"curve {segment} - curve {min(segments)} at step {entry['after_start']}"] = paired_difference(
                    from_bits(entry["keeps_bits"]), from_bits(first[entry["after_start"]]["keeps_bits"]), num)
    match = results.get("designs", {}).get("baseline", {}).get(f"step_{FP32_MATCH_STEP}")
    fp32 = results.get("models", {}).get("mmnist_attention_factorized")
    if match and fp32:
        out[f"baseline bf16 - float32, step {FP32_MATCH_STEP}"] = paired_difference(
            from_bits(match["keeps_bits"]), from_bits(fp32["keeps_bits"]), num)
    return out


def loss_check(folder: Path, reference: Path = ROOT / "benchmarks" / "results" / "ablations" / "attention.json") -> dict:
    """`baseline`'s logged loss (bfloat16, compiled) against the float32 eager run of the attention ablation at
    the same steps: the same seed gives both the same batches, timesteps and noise, so the losses differ only
    by the arithmetic (and what it changed in the weights so far)."""
    from lvdm_ref.train import LOG_FILE

    path = folder / LOG_FILE
    if not path.exists() or not reference.exists():
        return {}
    curve = json.loads(reference.read_text())["variants"]["factorized"]["loss_curve"]
    float32 = dict(zip(curve["step"], curve["loss"]))
    bf16 = {row["step"]: row["loss"] for row in map(json.loads, path.read_text().splitlines())}
    steps = sorted(set(bf16) & set(float32))
    if not steps:
        return {}
    ratio = np.array([bf16[step] / float32[step] for step in steps])
    return {"steps_compared": len(steps), "last_step": steps[-1],
            "mean_loss_bf16": round(float(np.mean([bf16[step] for step in steps])), 5),
            "mean_loss_float32": round(float(np.mean([float32[step] for step in steps])), 5),
            "ratio_median": round(float(np.median(ratio)), 4),
            "ratio_5_95_percent": [round(float(q), 4) for q in np.percentile(ratio, [5, 95])]}


def table(results: dict) -> str:
    """The study as a Markdown table, from the JSON alone."""
    lines = ["| design | CPU-min | steps | stability (seed sets) [90 %] | FVD |", "|---|---|---|---|---|"]

    def row(name: str, point: dict, minutes) -> str:
        sets = ", ".join(f"{value:.3f}" for value in point["keeps_seed_sets"])
        low, high = point["keeps_interval"]
        return (f"| {name} | {minutes} | {point.get('step', '')} | {point['keeps']:.3f} ({sets}) "
                f"[{low:.3f}, {high:.3f}] | {point['fvd']:.1f} |")

    for name, entry in results.get("designs", {}).items():
        for key in (key for key in entry if isinstance(entry[key], dict) and "keeps" in entry[key]):
            where = f"; {describe_device(entry)}" if "device" in entry else ""
            lines.append(row(f"{name} ({key}{where})", entry[key], entry[key].get("cpu_minutes", "")))
    for name, entry in results.get("models", {}).items():
        lines.append(row(f"`{name}`", entry, "shipped"))
    for segment, entries in curve_segments(results).items():
        for entry in entries:
            lines.append(row(f"run of record, segment {segment} ({describe_device(entry)}): {entry['init']} + "
                             f"{entry['steps']:,} steps on {entry['num_clips']:,} clips",
                             {**entry, "step": entry["after_start"]}, entry["cpu_minutes"]))
    reference = results.get("reference", {})
    for key in ("stability_real", "stability_reconstructed"):
        if key in reference:
            point = reference[key]
            lines.append(f"| *{key.split('_')[1]} clips* | | | {point['keeps']:.3f} | |")
    for name, gap in results.get("differences", {}).items():
        sets = ", ".join(f"{value:+.3f}" for value in gap["seed_sets"])
        lines.append(f"\n{name} (N = {gap['num']}): {gap['difference']:+.3f} "
                     f"[{gap['interval'][0]:+.3f}, {gap['interval'][1]:+.3f}]; per seed set {sets}")
    return "\n".join(lines)


def describe_device(entry: dict) -> str:
    """Where a snapshot trained, and in what arithmetic."""
    arithmetic = {True: "bf16", False: "float32"}.get(entry.get("bf16"), "arithmetic not recorded")
    return f"{entry.get('device') or 'device not recorded'}, {arithmetic}"


def draw_points(left, right, x: list[float], points: list[dict], label: str) -> None:
    """One line of scored points: stability with its interval on `left`, FVD on `right`."""
    keeps = np.array([p["keeps"] for p in points])
    errors = np.abs(np.array([p["keeps_interval"] for p in points]).T - keeps)
    left.errorbar(x, keeps, yerr=errors, marker="o", capsize=3, label=label)
    right.plot(x, [p["fvd"] for p in points], "o-", label=label)


def draw_real_lines(axis, reference: dict) -> None:
    """The stability of real clips and of their reconstructions, as horizontal lines."""
    for key, style in (("stability_real", ":"), ("stability_reconstructed", "-.")):
        if key in reference:
            axis.axhline(reference[key]["keeps"], color="gray", ls=style, lw=1,
                         label=f"{key.split('_')[1]} clips ({reference[key]['keeps']:.2f})")


def plot(results: dict, path: Path) -> list[Path]:
    """Stability (with its interval) and FVD against training CPU-minutes, real and reconstructed as lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from lvdm_ref.viz import save_figure

    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    for name, entry in results.get("designs", {}).items():
        points = [entry[key] for key in ("half", "end") if key in entry]
        if points and entry.get("bf16", True):  # float32 on another CPU: its minutes are not this axis's
            draw_points(left, right, [p["cpu_minutes"] for p in points], points, name)
    reference = results.get("reference", {})
    draw_real_lines(left, reference)
    if "autoencoder_ceiling" in reference:
        right.axhline(reference["autoencoder_ceiling"], color="gray", ls="-.", lw=1, label="autoencoder ceiling")
    num = results["setting"]["num"]
    left.set(xlabel="training CPU-minutes (one thread, bf16)",
             ylabel=f"digit stability (N = {num} at half, {2 * num} at the end)",
             ylim=(0, 1), title="keeps its two digits through 16 frames")
    right.set(xlabel="training CPU-minutes (one thread, bf16)", ylabel=f"FVD (N = {num})", yscale="log",
              title="FVD")
    left.legend(fontsize=7)
    right.legend(fontsize=7)
    figure.tight_layout()
    return save_figure(figure, path)


def plot_curve(results: dict, path: Path, goal: float = 0.6) -> list[Path]:
    """The long run of record against training steps after its start (the shipped model, at 0), one line per
    segment (each labelled with its machine and CPU seconds a step), beside the control that continues the same
    model on its own clips and the other continuations: stability (with intervals) and FVD. Steps, not CPU-hours, on the axis: segments on
    different machines cost different CPU time per step."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from lvdm_ref.viz import save_figure

    start = results.get("models", {}).get(CONTINUED.stem)
    lines = {}
    for segment, entries in curve_segments(results).items():
        per_step = entries[-1]["cpu_minutes"] * 60 / entries[-1]["steps"]
        label = (f"run of record on {entries[0]['num_clips']:,} clips, segment {segment} "
                 f"({describe_device(entries[-1])}: {per_step:.2f} CPU-s a step)")
        lines[label] = [(entry["after_start"], entry) for entry in entries]
    for name, entry in results.get("designs", {}).items():  # the control, and the other continuations
        if name.startswith("continue_") and any(key in entry for key in ("half", "end")):
            label = f"on its own 2,048 clips ({CONTROL})" if name == CONTROL else f"{name} ({describe_device(entry)})"
            lines[label] = [(entry[key]["step"], entry[key]) for key in ("half", "end") if key in entry]
    figure, (left, right) = plt.subplots(1, 2, figsize=(12, 4.4))
    for label, points in lines.items():
        points = ([(0, start)] if start else []) + points
        draw_points(left, right, [step / 1000 for step, _ in points], [point for _, point in points], label)
    draw_real_lines(left, results.get("reference", {}))
    left.axhline(goal, color="green", ls="--", lw=1, label=f"goal ({goal})")
    left.set(xlabel=f"thousand training steps after {CONTINUED.stem} (one thread)", ylim=(0, 1),
             ylabel="digit stability [90 %]", title=f"continuing {CONTINUED.stem}: keeps its two digits")
    right.set(xlabel=f"thousand training steps after {CONTINUED.stem}", ylabel=f"FVD (N = {results['setting']['num']})",
              title="FVD")
    left.legend(fontsize=6)
    right.legend(fontsize=6)
    figure.tight_layout()
    return save_figure(figure, path)


def sample_sets(results: dict, folder: Path) -> dict[str, tuple[Path, str]]:
    """What `plot_samples` draws, where its samples are kept: `baseline` at its end, the shipped start of the
    continuations and the run of record's last snapshot."""
    sets = {}
    if "end" in results.get("designs", {}).get("baseline", {}):
        sets["baseline (45 CPU-min)"] = (folder / "baseline_end", results["designs"]["baseline"]["end"]["keeps_bits"])
    if CONTINUED.stem in results.get("models", {}):
        sets[CONTINUED.stem] = (folder / f"model_{CONTINUED.stem}", results["models"][CONTINUED.stem]["keeps_bits"])
    segments = curve_segments(results)
    if segments:
        last = segments[max(segments)][-1]
        runs = sorted(folder.glob(f"curve{last['segment']}_*_short_{last['steps']:06d}"))
        if runs:
            sets[f"+ {last['after_start']:,} steps on {last['num_clips']:,} clips"] = (runs[-1], last["keeps_bits"])
    return {label: entry for label, entry in sets.items() if entry[0].is_dir()}


def plot_samples(sets: dict[str, tuple[Path, str]], path: Path, clips: int = 4, every: int = 2) -> list[Path]:
    """The first `clips` samples of each set (label -> (its samples folder, its keeps_bits)), every `every`-th
    frame, each titled with what the classifier read: clip i of every set starts from the same noise."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from lvdm_ref.viz import frame_strip, save_figure

    figure, axes = plt.subplots(clips, len(sets), figsize=(5.2 * len(sets), 0.95 * clips + 0.4), squeeze=False)
    for column, (label, (folder, keeps_bits)) in enumerate(sets.items()):
        videos = np.load(sorted(folder.glob("batch_*.npz"))[0])["videos"]
        for row in range(clips):
            axis = axes[row, column]
            axis.imshow(frame_strip(videos[row], every=every).squeeze(-1), cmap="gray", vmin=0, vmax=255)
            axis.set_axis_off()
            verdict = "keeps its digits" if keeps_bits[row] == "1" else "changes a digit"
            axis.set_title(f"{label}, clip {row}: {verdict}" if row == 0 else f"clip {row}: {verdict}", fontsize=8)
    figure.tight_layout()
    return save_figure(figure, path, suffixes=(".png",))  # pixels: an SVG would only wrap them


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_study_arguments(parser, minutes=45.0, num=256, out=ROOT / "benchmarks" / "results" / "stability_study.json",
                        work=ROOT / "runs" / "stability_study", what="design")
    parser.add_argument("--models", type=Path, nargs="*", default=[],
                        help="also score these short-model checkpoints (e.g. the shipped ones)")
    parser.add_argument("--models-seed-sets", type=int, choices=(1, 2), default=2,
                        help="score --models on 1 or 2 seed sets of --num clips")
    parser.add_argument("--curve", type=Path, default=None,
                        help="score the snapshots of this long run's folder (train --snapshot-every) not scored yet")
    parser.add_argument("--curve-steps", type=int, nargs="*", default=None,
                        help="with --curve: score the snapshots at these steps only (each costs about as much CPU as "
                             "training 1,000 steps)")
    parser.add_argument("--equal-steps", action="store_true",
                        help=f"a continuation takes {CONTROL}'s steps instead of its CPU budget, a design from scratch "
                             f"the {FP32_MATCH_STEP:,} of baseline's float32 match point (compare at equal steps, each "
                             f"step's cost recorded)")
    parser.add_argument("--equal-steps-threads", type=int, default=None,
                        help="with --equal-steps: train and sample a design from scratch on this many threads")
    parser.add_argument("--table", action="store_true", help="only print the JSON as a Markdown table")
    args = parser.parse_args(argv)
    if args.table:
        print(table(json.loads(args.out.read_text())))
        return {}
    for path in args.models:
        if not path.exists():
            parser.error(f"--models {path} does not exist")
    if args.curve is not None and not (args.curve / "snapshots").is_dir():
        parser.error(f"--curve {args.curve} has no snapshots/ folder: train it with --snapshot-every")
    only_models = (args.models or args.curve) and args.only == []  # `--only` with no names: score the files alone
    study = run_study(parser, args, {} if only_models else designs(), "designs", StabilityStudy)
    study.score_models([path.resolve() for path in args.models], args.models_seed_sets)
    if args.curve is not None:
        study.score_curve(args.curve, args.curve_steps)
    study.results["differences"] = differences(study.results)
    if "baseline" in study.results.get("designs", {}):
        study.results["bf16_loss_check"] = loss_check(args.work / "baseline")
    study.save()
    plot(study.results, args.out.with_suffix(".png"))
    if study.results.get("curve") or CONTROL in study.results.get("designs", {}):
        plot_curve(study.results, args.out.with_name("stability_curve.png"))
    samples = sample_sets(study.results, args.work / "samples")
    if len(samples) > 1:  # drawn from the kept samples (the work folder), not from the JSON
        plot_samples(samples, args.out.with_name("stability_samples.png"))
    print(table(study.results), file=sys.stderr)
    return study.results


if __name__ == "__main__":
    main()
