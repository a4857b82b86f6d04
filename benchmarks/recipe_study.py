"""The recipe study of the short model: which training choices buy the most quality per CPU-minute.

    python benchmarks/recipe_study.py --vae data/checkpoints/mmnist_vae.safetensors --minutes 15 \
        --num 128 --threads 1 --out benchmarks/results/recipe_study.json [--only NAME ...] [--samplers]

Every recipe changes one thing from `baseline` (the mmnist preset as it was) except `lvdm` (LVDM's own:
L1 on eps, constant lr 6e-5, EMA 0.9999). Each gets the same CPU budget on the same encoded latents:
a short calibration measures its CPU seconds per step (the median over its steps of process CPU time,
which other jobs on the machine inflate far less than wall time), and that fixes its number of steps. It is evaluated at
half and at all of its steps: FVD of `--num` samples (DDIM 50, eta 1, EMA weights) against one fixed
set of real test clips, next to the real-vs-real floor and real first frames held still, at the same N.
`--samplers` compares samplers on the best recipe's model: DDPM 1000, DDIM 50 and 100 with eta 0 and 1,
and DDIM 50 with two more seeds (how far FVD moves from the sampling noise alone).

Resumable: the JSON is rewritten after every finished piece (calibration, half, end, sampler) and a
rerun skips what is there; training runs resume from their state files; samples (batch by batch)
and I3D features are cached in the work folder (`--work`, git-ignored).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads its OpenMP runtime
import numpy as np  # noqa: E402
import torch  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout without installing
from lvdm_ref.checkpoint import atomic_write  # noqa: E402
from lvdm_ref.config import get_preset, with_recipe  # noqa: E402
from lvdm_ref.data import generate_moving_mnist  # noqa: E402
from lvdm_ref.i3d import load_i3d  # noqa: E402
from lvdm_ref.lvdm import LatentVideoDiffusion  # noqa: E402
from lvdm_ref.metrics import fvd_from_features, i3d_features  # noqa: E402
from lvdm_ref.recipes import train_short_model  # noqa: E402
from lvdm_ref.train import Callback  # noqa: E402
from lvdm_ref.utils import file_sha256  # noqa: E402


# The study's baseline, pinned: the mmnist preset as it was when the study began. The preset has since
# taken the winner, so every recipe starts from these values, not from whatever the preset holds now.
BASELINE = {"diffusion": {"loss": "l1", "parameterization": "eps", "min_snr_gamma": None},
            "unet": {"model_channels": 64},
            "train": {"lr": 3e-4, "lr_schedule": "constant", "warmup_steps": 200, "batch_size": 16, "ema_decay": 0.999}}


def _replace(preset, groups: dict):
    return dataclasses.replace(preset, **{group: dataclasses.replace(getattr(preset, group), **fields)
                                          for group, fields in groups.items()})


def recipes() -> dict:
    """name -> (what changes, a function Preset -> Preset). One change from `baseline` each."""
    def change(**groups):
        return lambda preset: _replace(_replace(preset, BASELINE), groups)

    return {
        "baseline": ("the mmnist preset before the study: L1 on eps, lr 3e-4 constant, batch 16, EMA 0.999, "
                     "64 channels", change()),
        "l2": ("L2 on eps", change(diffusion={"loss": "l2"})),
        "min_snr": ("L2 on eps with Min-SNR-5 weighting", change(diffusion={"loss": "l2", "min_snr_gamma": 5.0})),
        "v": ("v-prediction, L2", change(diffusion={"loss": "l2", "parameterization": "v"})),
        "small": ("32 channels (about 4x fewer FLOPs, more steps)", change(unet={"model_channels": 32})),
        "cosine": ("cosine lr decay to 0", change(train={"lr_schedule": "cosine"})),
        "lr_1e-3": ("lr 1e-3", change(train={"lr": 1e-3})),
        "batch_8": ("batch 8 (twice the steps)", change(train={"batch_size": 8})),
        "ema_0.99": ("EMA 0.99", change(train={"ema_decay": 0.99})),
        "lvdm": ("LVDM's recipe (train --recipe lvdm): L1 on eps, lr 6e-5 constant, no warm-up, EMA 0.9999",
                 lambda preset: with_recipe(_replace(preset, BASELINE), "lvdm")),
    }


class CpuClock(Callback):
    """The process CPU time at the end of every training step."""

    def __init__(self):
        self.times: list[float] = []

    def on_step_end(self, trainer, step: int, logs: dict) -> None:
        self.times.append(time.process_time())


def calibrate(train, preset, vae: Path, folder: Path, steps: int, threads: int, common: dict) -> dict:
    """CPU seconds per training step (after 3 warm-up steps) and the peak resident memory of a fresh process
    that does nothing but train (Python, torch, the training set, the model, its optimiser and activations)."""
    from concurrent.futures import ProcessPoolExecutor
    from multiprocessing import get_context

    with ProcessPoolExecutor(1, mp_context=get_context("spawn")) as pool:
        return pool.submit(_calibrate, train, preset, vae, folder, steps, threads, common).result()


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
            "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)}


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
    the JSON entry that holds them ("recipes" here, "variants" for benchmarks/ablations.py)."""

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
        self.i3d = None

    def save(self) -> None:
        """Write this process's entries into the JSON on disk, under a lock, so that two studies of one
        file (for example `--only a b` and `--only c d`, one per core) never drop each other's results."""
        import fcntl

        with open(self.args.out.with_suffix(".lock"), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            disk = json.loads(self.args.out.read_text()) if self.args.out.exists() else {}
            for key, value in self.results.items():
                if isinstance(value, dict) and isinstance(disk.get(key), dict):
                    disk[key].update(value) if key != self.section else disk[key].update(
                        {name: entry for name, entry in value.items() if name in self.touched})
                else:
                    disk.setdefault(key, value)
            disk.setdefault(self.section, {})
            self.results = {**disk, self.section: {**disk[self.section], **{
                name: entry for name, entry in self.results[self.section].items() if name in self.touched}}}
            text = json.dumps(self.results, indent=1) + "\n"
            atomic_write(self.args.out, lambda tmp: Path(tmp).write_text(text))

    # ------------------------------------------------------------------ features
    def features(self, name: str, videos_fn) -> np.ndarray:
        """I3D features of a clip set, cached in the work folder under `name`."""
        path = self.work / "features" / f"{name}.npy"
        if path.exists():
            return np.load(path)
        if self.i3d is None:
            self.i3d = load_i3d()
        features = i3d_features(videos_fn(), model=self.i3d)
        atomic_write(path, lambda tmp: np.save(open(tmp, "wb"), features))
        return features

    def reference(self) -> np.ndarray:
        """The fixed real set's features; the floor, the static point and the autoencoder's ceiling
        (its reconstructions of a second real set) at the same N, once."""
        num = self.args.num
        real = self.features(f"real_a_{num}", lambda: generate_moving_mnist(num, 16, 64, 2, "test", seed=1))
        reference = self.results.setdefault("reference", {"num": num})
        if "autoencoder_ceiling" not in reference:
            other = generate_moving_mnist(num, 16, 64, 2, "test", seed=2)
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

    # ------------------------------------------------------------------ one recipe
    def points(self, name: str, steps: int) -> list[tuple[str, int]]:
        """(point, step) pairs at which a recipe of `steps` steps is scored, in order: half and all of it."""
        return [("half", steps // 2), ("end", steps)]

    def run(self, name: str, describe: str, apply, train=train_short_model) -> None:
        """Calibrate, then train `apply(mmnist preset)` with `train` (`recipes.train_short_model` or a function of
        its signature, like `recipes.train_pixel_model`) to half and all of the budget, scoring FVD at each."""
        self.touched.add(name)
        args, entry = self.args, self.results[self.section].setdefault(name, {"change": describe})
        preset = apply(get_preset("mmnist"))
        folder, cache = self.work / name, self.work / "latents.pt"
        common = dict(num_clips=args.num_clips, latents_cache=cache, progress=True)
        if "steps" not in entry:  # calibration: CPU seconds per step, then the step count for the budget
            measured = calibrate(train, preset, args.vae, self.work / f"{name}_calibration", args.calibration_steps,
                                 args.threads, common)
            per_step = measured["cpu_seconds_per_step"]
            entry.update(**measured, steps=max(2, int(args.minutes * 60 / per_step)),
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

    def samplers(self) -> None:
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


def sample_in_batches(checkpoint: Path, num: int, folder: Path, sampler: str = "ddim", steps: int | None = 50,
                      eta: float = 1.0, seed: int = 0, batch_size: int = 16) -> tuple[np.ndarray, float]:
    """`LatentVideoDiffusion.sample(num, ..., seed)` of `checkpoint`, the same clips (each clip has its own
    stream, so batching changes nothing), with each batch kept in `folder` as it is made: an evaluation stopped halfway
    (a pixel model's 256 samples take most of an hour) goes on where it was. Returns the uint8 clips and the
    sampling CPU seconds of all batches (those of earlier calls included). A batch file of another
    checkpoint (by sha256) is sampled again."""
    sha, model, batches, cpu_seconds = file_sha256(checkpoint), None, [], 0.0
    for index, first in enumerate(range(0, num, batch_size)):
        path = folder / f"batch_{index:04d}.npz"
        count = min(batch_size, num - first)
        saved = dict(np.load(path)) if path.exists() else {}
        if not saved or str(saved["sha256"]) != sha or len(saved["videos"]) != count or "streams" not in saved:
            model = model or LatentVideoDiffusion.load(checkpoint)
            start = time.process_time()
            videos = model.sample(count, sampler=sampler, num_steps=steps, eta=eta, seed=seed, first_index=first)
            saved = {"videos": videos, "cpu_seconds": np.float64(time.process_time() - start), "sha256": np.str_(sha),
                     "streams": np.str_("one per clip")}  # batches of the older seed + i idiom are redone
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write(path, lambda tmp: np.savez(open(tmp, "wb"), **saved))
        batches.append(saved["videos"])
        cpu_seconds += float(saved["cpu_seconds"])
    return np.concatenate(batches), cpu_seconds


def reconstruct(vae_path: Path, videos: np.ndarray) -> np.ndarray:
    """uint8 clips -> the autoencoder's reconstructions, uint8 (the ceiling of any model on its latents)."""
    from lvdm_ref.utils import from_uint8, to_uint8
    from lvdm_ref.vae3d import VideoAutoencoder

    vae = VideoAutoencoder.load(vae_path)
    with torch.no_grad():
        return np.concatenate([to_uint8(vae.reconstruct(from_uint8(videos[i:i + 16]))) for i in range(0, len(videos), 16)])


def plot(results: dict, path: Path, section: str = "recipes",
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


def table(results: dict, section: str = "recipes") -> str:
    """The study as a Markdown table (what the README shows), from the JSON alone."""
    reference, num = results.get("reference", {}), results["setting"]["num"]
    lines = [f"| {section[:-1]} | change | steps | CPU-s/step | FVD at half | FVD at end |", "|---|---|---|---|---|---|"]
    for name, entry in results[section].items():
        fvd = [f"{entry[p]['fvd']:.1f}" if p in entry else "" for p in ("half", "end")]
        per_step = f"{entry['cpu_seconds_per_step']:.2f}" if "cpu_seconds_per_step" in entry else ""
        lines.append(f"| {name} | {entry['change']} | {entry.get('steps', '')} | {per_step} | {fvd[0]} | {fvd[1]} |")
    for key in ("real_vs_real", "autoencoder_ceiling", "static_first_frames"):
        if key in reference:
            lines.append(f"| *{key.replace('_', ' ')}* | reference at N = {num} | | | | {reference[key]:.1f} |")
    samplers = results.get("samplers", {})
    if len(samplers) > 1:
        lines += ["", f"Samplers on the `{samplers['model']}` model (N = {num}):", "",
                  "| sampler | FVD | sampling CPU-s |", "|---|---|---|"]
        lines += [f"| {key} | {value['fvd']:.1f} | "
                  f"{format(value['sample_cpu_seconds'], '.0f') if 'sample_cpu_seconds' in value else 'not recorded'} |"
                  for key, value in samplers.items() if key != "model"]
    return "\n".join(lines)


def add_study_arguments(parser: argparse.ArgumentParser, *, minutes: float, num: int, out: Path, work: Path,
                        what: str) -> None:
    """The options every budget study shares (this one and benchmarks/ablations.py)."""
    parser.add_argument("--vae", type=Path, default=ROOT / "data" / "checkpoints" / "mmnist_vae.safetensors")
    parser.add_argument("--minutes", type=float, default=minutes, help=f"CPU minutes of training per {what}")
    parser.add_argument("--num", type=int, default=num, help="clips per FVD set")
    parser.add_argument("--num-clips", type=int, default=2048, help="encoded training clips (shared)")
    parser.add_argument("--calibration-steps", type=int, default=20)
    parser.add_argument("--sample-steps", type=int, default=50, help="DDIM steps of the scored samples (LVDM: 50)")
    parser.add_argument("--threads", type=int, default=1)
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_study_arguments(parser, minutes=15.0, num=128, out=ROOT / "benchmarks" / "results" / "recipe_study.json",
                        work=ROOT / "runs" / "recipe_study", what="recipe")
    parser.add_argument("--samplers", action="store_true", help="then compare samplers on the best recipe")
    parser.add_argument("--table", action="store_true", help="only print the JSON as a Markdown table")
    args = parser.parse_args()
    if args.table:
        print(table(json.loads(args.out.read_text())))
        return
    study = run_study(parser, args, recipes(), "recipes")
    if args.samplers:
        study.samplers()
    plot(study.results, args.out.with_suffix(".png"))
    print(json.dumps(study.results))


if __name__ == "__main__":
    main()
