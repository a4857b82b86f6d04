"""Budget studies: variants of a model, each trained for the same CPU budget, scored at half and all of it.

The recipe study, the paper's two ablations, the attention ablation on prediction and the stability study
(`benchmarks/`) all ask "which of these is better for the same CPU?" the same way:

1. **calibrate**: a fresh process trains the variant for a few steps and measures its CPU seconds per step (the
   median over steps of process CPU time, which other jobs on a shared machine inflate far less than wall
   time) and its peak resident memory; the budget (`--minutes`) then fixes its number of steps;
2. **train** it, on the same encoded clips with the same seed and optimiser as every other variant, to half of
   those steps and then to all of them (the run resumes from its state file);
3. **score** it at both points: FVD of `--num` samples (DDIM 50, eta 1, EMA weights, one noise stream per clip)
   against the studies' fixed real set (`studies.real_clips`), next to the real-vs-real floor, real first
   frames held still and the autoencoder's ceiling at the same N. A subclass scores another way
   (`evaluate`).

Everything is resumable: the JSON is rewritten after every finished piece (`studies.merge_results`, so two
processes of one study can share one file), samples are kept batch by batch and features per set in the work
folder. `plot_budget_curves` and `budget_table` draw and print the JSON alone.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from lvdm_ref.checkpoint import SHIPPED_DIR
from lvdm_ref.config import get_preset
from lvdm_ref.metrics import fvd_from_features
from lvdm_ref.recipes import train_short_model
from lvdm_ref.recipes.common import machine_of
from lvdm_ref.studies import (OTHER_REAL_SEED, FeatureCache, markdown_table, merge_results, real_clips, reconstruct,
                              sample_in_batches)
from lvdm_ref.train import Callback, cpu_has_bf16, cpu_name
from lvdm_ref.utils import file_sha256


class CpuClock(Callback):
    """The process CPU time at the end of every training step, and where the steps ran (`machine_of`)."""

    def __init__(self):
        self.times: list[float] = []
        self.machine: dict = {}

    def on_step_end(self, trainer, step: int, logs: dict) -> None:
        self.times.append(time.process_time())
        self.machine = self.machine or machine_of(trainer)


def calibrate(train, preset, vae: Path, folder: Path, steps: int, threads: int, common: dict) -> dict:
    """CPU seconds per training step (after 3 warm-up steps) and the peak resident memory of a fresh process
    that does nothing but train (Python, torch, the training set, the model, its optimiser and activations)."""
    from concurrent.futures import ProcessPoolExecutor
    from multiprocessing import get_context

    with ProcessPoolExecutor(1, mp_context=get_context("spawn")) as pool:
        return pool.submit(_calibrate, train, preset, vae, folder, steps, threads, common).result()


CALIBRATION_KEYS = ("steps", "cpu_seconds_per_step", "peak_rss_mib", "device", "bf16", "threads")


def calibrated_here(entry: dict, preset) -> bool:
    """Whether a variant's calibration was measured on this CPU in the arithmetic its training uses here."""
    bf16 = cpu_has_bf16() if preset.train.bf16_cpu is None else preset.train.bf16_cpu
    return entry.get("device") == cpu_name() and entry.get("bf16") == bf16


def seconds_per_step(times: list[float], warmup: int = 3) -> float:
    """The median of the per-step differences of cumulative CPU times, after `warmup` steps: a few steps
    slowed by a burst on the machine (another job's compiler workers, say) do not move it, a mean does."""
    return float(np.median(np.diff(times[warmup - 1:])))


def _calibrate(train, preset, vae, folder, steps, threads, common) -> dict:
    import resource

    torch.set_num_threads(threads)
    clock = CpuClock()
    train(preset, vae, folder, steps=steps + 3, callbacks=[clock], **common)
    return {"cpu_seconds_per_step": round(seconds_per_step(clock.times), 4),
            "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
            **clock.machine}  # a CPU second buys different work on another machine


def logged_loss(folder: Path, step: int) -> float | None:
    """The training loss of the last step at or before `step` in the run's log (`train.LOG_FILE`), if any."""
    from lvdm_ref.train import LOG_FILE

    path = folder / LOG_FILE
    rows = [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
    rows = [row for row in rows if row["step"] <= step]
    return rows[-1]["loss"] if rows else None


def study_setting(args: argparse.Namespace) -> dict:
    """What makes two studies' numbers comparable: one file holds one setting."""
    setting = {"vae_sha256": file_sha256(args.vae), "minutes": args.minutes, "num": args.num,
               "num_clips": args.num_clips, "threads": args.threads}
    steps = getattr(args, "sample_steps", 50)
    return setting if steps == 50 else {**setting, "sample_steps": steps}  # LVDM's 50 left out: older files match


class Study:
    """Variants of the short model, each trained for the same CPU budget and scored by FVD; `section` names
    the JSON entry that holds them ("recipes" for the recipe study, "variants" for the ablations)."""

    def __init__(self, args: argparse.Namespace, section: str = "recipes"):
        self.args, self.section = args, section
        self.work = args.work
        self.results = json.loads(args.out.read_text()) if args.out.exists() else {}
        setting = study_setting(args)
        if self.results.get("setting", setting) != setting:
            raise SystemExit(f"{args.out} was made with {self.results['setting']}, not {setting}: "
                             f"choose another --out or the same settings")
        self.results.setdefault("setting", setting)
        self.results.setdefault("command", " ".join([Path(sys.executable).name, *sys.argv]))
        self.results.setdefault(section, {})
        self.touched: set[str] = set()  # the entries of `section` this process writes
        self.feature_cache = FeatureCache(self.work / "features")

    def save(self) -> None:
        """Write this process's entries into the JSON on disk (`studies.merge_results`: under a lock, so that
        two studies of one file never drop each other's results) and take what the file now holds."""
        self.results = merge_results(self.args.out, self.results, self.section, self.touched)

    # ------------------------------------------------------------------ features
    def features(self, name: str, videos_fn) -> np.ndarray:
        """I3D features of a clip set, cached in the work folder under `name`."""
        return self.feature_cache(name, videos_fn)

    def reference(self) -> np.ndarray:
        """The fixed real set's features; the floor, the static point and the autoencoder's ceiling
        (its reconstructions of a second real set) at the same N, once."""
        num = self.args.num
        real = self.features(f"real_a_{num}", lambda: real_clips(num))
        reference = self.results.setdefault("reference", {"num": num})
        if "autoencoder_ceiling" not in reference:
            other = real_clips(num, OTHER_REAL_SEED)
            floor = self.features(f"real_b_{num}", lambda: other)
            static = self.features(f"static_b_{num}", lambda: np.repeat(other[:, :1], 16, axis=1))
            recon = self.features(f"reconstructed_b_{num}", lambda: reconstruct(self.args.vae, other))
            reference.update(real_vs_real=fvd_from_features(real, floor),
                             static_first_frames=fvd_from_features(real, static),
                             autoencoder_ceiling=fvd_from_features(real, recon))
            self.save()
        return real

    def evaluate(self, checkpoint: Path, key: str, sampler: str = "ddim", steps: int = 50, eta: float = 1.0,
                 seed: int = 0) -> dict:
        real = self.reference()
        # kept batch by batch in WORK/samples/KEY: a stopped evaluation goes on where it was
        videos, sample_cpu = sample_in_batches(checkpoint, self.args.num, self.work / "samples" / key, sampler, steps,
                                               eta, seed)
        fvd = fvd_from_features(real, self.features(key, lambda: videos))
        return {"fvd": round(fvd, 2), "sample_cpu_seconds": round(sample_cpu, 1), "sampler": sampler, "steps": steps,
                "eta": eta, "seed": seed}

    # ------------------------------------------------------------------ one variant
    def budget(self, name: str, cpu_seconds_per_step: float) -> int:
        """A variant's steps: as many as `--minutes` of CPU buy at its calibrated cost."""
        return max(2, int(self.args.minutes * 60 / cpu_seconds_per_step))

    def points(self, name: str, steps: int) -> list[tuple[str, int]]:
        """(point, step) pairs at which a variant of `steps` steps is scored, in order: half and all of it."""
        return [("half", steps // 2), ("end", steps)]

    def run(self, name: str, describe: str, apply, train=train_short_model) -> None:
        """Calibrate, then train `apply(mmnist preset)` with `train` (`recipes.train_short_model` or a function of
        its signature, like `recipes.train_pixel_model`) to half and all of the budget, scoring FVD at each."""
        self.touched.add(name)
        args, entry = self.args, self.results[self.section].setdefault(name, {"change": describe})
        preset = apply(get_preset("mmnist"))
        folder, cache = self.work / name, self.work / "latents.pt"
        common = dict(num_clips=args.num_clips, latents_cache=cache, progress=True)
        fresh = not (folder / "train_state.pt").exists() and not self.scored_points(name, entry)
        if "steps" in entry and fresh and not calibrated_here(entry, preset):
            # Measured on another machine or in another arithmetic, and nothing trained yet: it would price this
            # run's steps at another machine's rate. Calibrate again here.
            for key in CALIBRATION_KEYS:
                entry.pop(key, None)
        if getattr(args, "recalibrate", False) and "steps" in entry:
            return self.recalibrate(name, entry, preset, train, common)
        if "steps" not in entry:  # calibration: CPU seconds per step, then the step count for the budget
            measured = calibrate(train, preset, args.vae, self.work / f"{name}_calibration", args.calibration_steps,
                                 args.threads, common)
            entry.update(**measured, threads=args.threads, steps=self.budget(name, measured["cpu_seconds_per_step"]),
                         preset={"unet": dataclasses.asdict(preset.unet), "diffusion": dataclasses.asdict(preset.diffusion),
                                 "train": dataclasses.asdict(preset.train)})
            self.save()
        steps = entry["steps"]
        for point, stop in self.points(name, steps):
            if point in entry:
                if entry[point].get("final_loss") is None:  # an older resumed call that trained nothing left none
                    entry[point]["final_loss"] = logged_loss(folder, stop)
                continue
            resume = (folder / "train_state.pt").exists()
            start = time.process_time()
            summary = train(preset, args.vae, folder, steps=steps, stop_at=stop, resume=resume, **common)
            train_cpu = time.process_time() - start  # this call's training only (a resumed run: since the resume)
            result = self.evaluate(Path(summary["checkpoint"]), f"{name}_{point}", steps=getattr(args, "sample_steps", 50))
            entry[point] = {"step": stop, "cpu_minutes": round(stop * entry["cpu_seconds_per_step"] / 60, 2),
                            "train_cpu_seconds_this_call": round(train_cpu, 1),
                            "final_loss": summary["final_loss"], **result}
            self.save()
            print(f"{name} {point}: step {stop}, FVD {result['fvd']}", file=sys.stderr)

    def scored_points(self, name: str, entry: dict) -> list[str]:
        """The points of a variant already trained and scored."""
        return [point for point, _ in self.points(name, entry.get("steps", 0)) if point in entry]

    def recalibrate(self, name: str, entry: dict, preset, train, common: dict) -> None:
        """`--recalibrate`: measure a variant's CPU seconds per step again on this machine (its points trained
        here, under a calibration made elsewhere) and price its recorded points at that rate; its steps stay."""
        measured = calibrate(train, preset, self.args.vae, self.work / f"{name}_calibration",
                             self.args.calibration_steps, self.args.threads, common)
        entry.update(**measured, threads=self.args.threads)
        for point in self.scored_points(name, entry):
            entry[point]["cpu_minutes"] = round(entry[point]["step"] * measured["cpu_seconds_per_step"] / 60, 2)
        self.save()
        print(f"{name}: {measured['cpu_seconds_per_step']} CPU-s a step on {measured['device']}", file=sys.stderr)

    def samplers(self) -> None:
        """Samplers on the finished variant with the lowest end point: DDIM 50 with three seeds, DDIM 50 and 100
        with eta 0 and 1, DDPM 1000."""
        done = {name: entry for name, entry in self.results[self.section].items() if "end" in entry}
        if not done:
            raise SystemExit("no finished recipe yet: run the recipes first")
        best = min(done, key=lambda name: done[name]["end"]["fvd"])
        table = self.results.setdefault("samplers", {"model": best})
        checkpoint = self.work / best / "short.safetensors"
        # the same sampler with other seeds first: how much FVD moves from the sampling noise alone
        for sampler, steps, eta, seed in (("ddim", 50, 1.0, 0), ("ddim", 50, 1.0, 1), ("ddim", 50, 1.0, 2),
                                          ("ddim", 50, 0.0, 0), ("ddim", 100, 1.0, 0), ("ddim", 100, 0.0, 0),
                                          ("ddpm", 1000, 1.0, 0)):
            key = f"{sampler}_{steps}_eta{eta:g}" + (f"_seed{seed}" if seed else "")
            table = self.results["samplers"]  # save() re-reads the file: never keep a stale reference
            if key == "ddim_50_eta1" and key not in table:  # the recipe's own end point: the same samples
                table[key] = {k: v for k, v in done[best]["end"].items() if k in ("fvd", "sample_cpu_seconds")} | {
                    "sampler": sampler, "steps": steps, "eta": eta, "seed": seed}
            if key not in table:
                table[key] = self.evaluate(checkpoint, f"{best}_{key}", sampler, steps if sampler == "ddim" else None,
                                           eta, seed)
                self.save()
                print(f"{best} {key}: FVD {table[key]['fvd']}", file=sys.stderr)


def add_study_arguments(parser: argparse.ArgumentParser, *, minutes: float, num: int, out: Path, work: Path,
                        what: str) -> None:
    """The options every budget study shares."""
    parser.add_argument("--vae", type=Path, default=SHIPPED_DIR / "mmnist_vae.safetensors")
    parser.add_argument("--minutes", type=float, default=minutes, help=f"CPU minutes of training per {what}")
    parser.add_argument("--num", type=int, default=num, help="clips per FVD set")
    parser.add_argument("--num-clips", type=int, default=2048, help="encoded training clips (shared)")
    parser.add_argument("--calibration-steps", type=int, default=20)
    parser.add_argument("--sample-steps", type=int, default=50, help="DDIM steps of the scored samples (LVDM: 50)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--recalibrate", action="store_true",
                        help=f"measure each {what}'s CPU seconds per step again on this machine (where it trained) "
                             "and price its recorded points at that rate; trains nothing else")
    parser.add_argument("--only", nargs="*", default=None, help=f"{what}s to run (default: all, in order)")
    parser.add_argument("--out", type=Path, default=out)
    parser.add_argument("--work", type=Path, default=work)


def run_study(parser: argparse.ArgumentParser, args: argparse.Namespace, variants: dict, section: str,
              study_class: type | None = None) -> Study:
    """Check the shared options, then train and score every variant asked for (skipping finished ones) with a
    `study_class` (`Study`, or a subclass that scores another way)."""
    if (args.minutes <= 0 or args.num < 2 or args.num_clips < 16 or args.calibration_steps < 1 or args.threads < 1
            or args.sample_steps < 1):
        parser.error("--minutes > 0, --num >= 2, --num-clips >= 16, --calibration-steps >= 1, --threads >= 1, "
                     "--sample-steps >= 1")
    if not args.vae.exists():
        parser.error(f"--vae {args.vae} does not exist")
    unknown = set(args.only or ()) - set(variants)
    if unknown:
        parser.error(f"unknown {section} {sorted(unknown)}; known: {list(variants)}")
    torch.set_num_threads(args.threads)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    study = (study_class or Study)(args, section)
    for name, (describe, apply, *train) in variants.items():  # train: optional, recipes.train_short_model by default
        if args.only is None or name in args.only:
            study.run(name, describe, apply, *train)
    return study


def plot_budget_curves(results: dict, path: Path, section: str = "recipes",
                       title: str = "short-model recipes at one CPU budget") -> list[Path]:
    """FVD against training CPU-minutes for every entry of `section`, floor, static point and ceiling as lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from lvdm_ref.viz import save_figure

    figure, ax = plt.subplots(figsize=(7, 4.2))
    for name, entry in results[section].items():
        points = [entry[p] for p in ("half", "end") if p in entry]
        if points:
            ax.plot([p["cpu_minutes"] for p in points], [p["fvd"] for p in points], "o-", label=name)
    reference = results.get("reference", {})
    for key, style in (("real_vs_real", ":"), ("static_first_frames", "--"), ("autoencoder_ceiling", "-.")):
        if key in reference:
            ax.axhline(reference[key], color="gray", ls=style, lw=1, label=f"{key.replace('_', ' ')} ({reference[key]:.0f})")
    ax.set(xlabel="training CPU-minutes (one thread)", ylabel=f"FVD (N = {results['setting']['num']})", yscale="log",
           title=title)
    ax.legend(fontsize=7, ncol=2)
    figure.tight_layout()
    return save_figure(figure, path)


def budget_table(results: dict, section: str = "recipes") -> str:
    """The study as a Markdown table (what its page shows), from the JSON alone; with the samplers when compared."""
    reference, num = results.get("reference", {}), results["setting"]["num"]
    rows = []
    for name, entry in results[section].items():
        fvd = [f"{entry[p]['fvd']:.1f}" if p in entry else "" for p in ("half", "end")]
        per_step = f"{entry['cpu_seconds_per_step']:.2f}" if "cpu_seconds_per_step" in entry else ""
        rows.append([name, entry["change"], str(entry.get("steps", "")), per_step, fvd[0], fvd[1]])
    lines = markdown_table([section[:-1], "change", "steps", "CPU-s/step", "FVD at half", "FVD at end"], rows)
    for key in ("real_vs_real", "autoencoder_ceiling", "static_first_frames"):
        if key in reference:
            lines.append(f"| *{key.replace('_', ' ')}* | reference at N = {num} | | | | {reference[key]:.1f} |")
    samplers = results.get("samplers", {})
    if len(samplers) > 1:
        lines += ["", f"Samplers on the `{samplers['model']}` model (N = {num}):", ""]
        lines += markdown_table(["sampler", "FVD", "sampling CPU-s"], [
            [key, f"{value['fvd']:.1f}",
             format(value['sample_cpu_seconds'], '.0f') if 'sample_cpu_seconds' in value else 'not recorded']
            for key, value in samplers.items() if key != "model"])
    return "\n".join(lines)


def plot_budget_study(results: dict, samples: dict[str, np.ndarray] | None = None, every: int = 2):
    """A budget study of record (benchmarks/ablations.py's JSON), in one figure: FVD per variant with the
    real-vs-real floor as a band and the autoencoder's ceiling as a line, training loss against CPU-minutes,
    and, with `samples` ({variant: uint8 (n, F, H, W, C)}), every `every`-th frame of each variant's clips."""
    import matplotlib.pyplot as plt

    from lvdm_ref.viz import frame_strip

    variants = {name: entry for name, entry in results["variants"].items() if "end" in entry}
    if not variants:
        raise ValueError("no finished variant in these results: nothing to plot")
    reference = results["reference"]
    rows = 1 + (len(variants) if samples else 0)
    figure = plt.figure(figsize=(10, 3.2 + 2.4 * (rows - 1)))
    grid = figure.add_gridspec(rows, 2, height_ratios=[3.2] + [2.4] * (rows - 1))
    bars, losses = figure.add_subplot(grid[0, 0]), figure.add_subplot(grid[0, 1])
    drawn = bars.bar(list(variants), [entry["end"]["fvd"] for entry in variants.values()], color="C0", zorder=2)
    bars.bar_label(drawn, fmt="%.1f", fontsize=8)
    bars.axhspan(0, reference["real_vs_real"], color="0.85", label=f"real vs real ({reference['real_vs_real']:.0f})")
    bars.axhline(reference["autoencoder_ceiling"], color="k", ls="-.", lw=1,
                 label=f"autoencoder ceiling ({reference['autoencoder_ceiling']:.0f})")
    if "static_first_frames" in reference:
        bars.axhline(reference["static_first_frames"], color="0.4", ls="--", lw=1,
                     label=f"real first frames held still ({reference['static_first_frames']:.0f})")
    bars.set(ylabel=f"FVD (N = {reference['num']})", title=f"{results['setting']['minutes']:.0f} CPU-minutes of training each")
    bars.legend(fontsize=7)
    for name, entry in variants.items():
        if "loss_curve" in entry:
            curve = entry["loss_curve"]
            losses.plot(curve["cpu_minutes"], curve["loss"], lw=1, label=f"{name} ({entry['steps']} steps)")
    losses.set(xlabel="training CPU-minutes (one thread)", ylabel="training loss", yscale="log")
    losses.legend(fontsize=7)
    for row, name in enumerate(variants if samples else (), start=1):
        ax = figure.add_subplot(grid[row, :])
        if name in samples:
            ax.imshow(np.concatenate([frame_strip(clip, every=every) for clip in samples[name]]).squeeze(-1), cmap="gray")
        ax.set_title(f"{name}: frames 0, {every}, {2 * every}, ... of {len(samples[name])} samples (DDIM 50, seed 0)"
                     if name in samples else f"{name}: no samples recorded", fontsize=8)
        ax.axis("off")
    figure.tight_layout()
    return figure
