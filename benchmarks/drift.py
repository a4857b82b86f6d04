"""Long-video drift: FVD of 16-frame windows against their position in 1024-frame videos, with and
without conditional latent perturbation and unconditional guidance (LVDM Sec. 3.3; issue "drift").

    python benchmarks/drift.py --pred data/checkpoints/mmnist_pred.safetensors \
        --pred-noperturb data/checkpoints/mmnist_pred_noperturb.safetensors \
        --interp data/checkpoints/mmnist_interp.safetensors --num 64 --frames 1024 --steps 50 \
        --threads 1 --compile --out benchmarks/results/drift/

Protocol. Every variant samples the same `--num` videos (same seeds) with DDIM `--steps` and the shared
interpolation model; only the windows that are measured are interpolated and decoded
(`long_video.sample_windows`, equal to the full sampler's windows: tests/test_hierarchy.py). Windows
start at 0, `--window-every`, 2 * `--window-every`, ... Each window's `--num` clips are compared by
FVD with `--num` real 16-frame test clips (one fixed set). The floor: the same windows of `--num` real
`--frames`-frame test clips against that set (Moving MNIST is stationary, so it should be flat).
Also: the perturbed and guided model continuing the real clips from their first latent, with
PSNR/SSIM per window against the true frames. Content: per window, the share of videos whose two digits
(read by the shipped digit classifier, `lvdm_ref/digits.py`) are those of the first window
(`keeps_digits`; real clips keep theirs, unrelated clips agree by chance about 2 % of the time).

Variants: the prediction model trained with perturbation (s_max = 250) or without (s_max = 0), each with
guidance w = 0.1 or without; the first sampled at s = 100 and, with guidance, also at s = 0 (set against
"guidance", the same sampling of the model trained without, this separates training from sampling).

Resumable: I3D features of every (variant, window) are kept in OUT/features/<variant>.npz (float32,
small; committed with the results, with each video's last window as uint8 for notebook 09's strips) after every chunk of videos, and a rerun skips what is there. The
JSON and the figure (PNG, SVG) are written from those features at the end of every variant; the
figure is drawn from the JSON only (`plot`). Every curve carries 90 % bootstrap intervals of its
last/first ratio and slope (`bootstrap`); `--table` prints the table of docs/studies/drift.md from the JSON.
"""
from __future__ import annotations

import argparse
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
from lvdm_ref.digits import SHIPPED_DIGITS, DigitClassifier, clip_digits  # noqa: E402
from lvdm_ref.diffusion import LONG_VIDEO_DDIM_STEPS  # noqa: E402
from lvdm_ref.guidance import LONG_VIDEO_GUIDANCE as W  # noqa: E402
from lvdm_ref.studies import load_pair, markdown_table, set_threads, slug  # noqa: E402

# name -> (prediction model: "perturbed" or "unperturbed", perturbation level s, guidance w);
# s None = the model's sampling level, 100 for s_max = 250 (perturbation.sampling_levels); W = LVDM's 0.1
VARIANTS = {
    "perturbation + guidance": ("perturbed", None, W),
    "perturbation": ("perturbed", None, 0.0),
    "guidance": ("unperturbed", 0, W),
    "neither": ("unperturbed", 0, 0.0),
    "perturbed model at s=0, guidance": ("perturbed", 0, W),  # next to "guidance": only the training differs
}
REAL_START = "real start: perturbation + guidance"


def window_starts(frames: int, every: int, window: int = 16) -> list[int]:
    return list(range(0, frames - window + 1, every))


def summarise(curve: dict[str, float]) -> dict:
    """First and last window FVD, their ratio and the slope of a least-squares line (FVD per 100 frames)."""
    starts = np.array([int(s) for s in curve])
    values = np.array(list(curve.values()))
    slope = float(np.polyfit(starts, values, 1)[0]) * 100 if len(starts) > 1 else 0.0
    return {"first": float(values[0]), "last": float(values[-1]), "last_over_first": float(values[-1] / values[0]),
            "slope_per_100_frames": slope}


def keep_share(digits: np.ndarray, starts: list[int]) -> dict[str, float]:
    """Per window: the share of videos whose digits there (int (N, W, K) from `digits.clip_digits`) are
    those of the first window: the content measure (1 for real clips, about 0.02 for unrelated ones)."""
    same = (digits == digits[:, :1]).all(axis=2)  # (N, W)
    return {str(s): round(float(same[:, w].mean()), 4) for w, s in enumerate(starts)}


def bootstrap(reference: np.ndarray, features: np.ndarray, starts: list[int], resamples: int = 200,
              seed: int = 0) -> dict:
    """How much of a curve's shape is sampling noise: 90 % percentile intervals of last/first and of the
    slope over `resamples` resamplings of the generated videos with replacement (each resample keeps a
    video's windows together, as they were made; the reference clips stay fixed). A resample repeats
    videos, which raises every window's FVD alike, so read the intervals of the ratio and the slope, not
    the FVD values of the resamples."""
    from lvdm_ref.metrics import fvd_from_features

    rng = np.random.default_rng(seed)
    ratios, slopes = [], []
    for _ in range(resamples):
        pick = rng.integers(0, len(features), len(features))
        summary = summarise({str(s): fvd_from_features(reference, features[pick, w]) for w, s in enumerate(starts)})
        ratios.append(summary["last_over_first"])
        slopes.append(summary["slope_per_100_frames"])
    interval = lambda values: [round(float(q), 3) for q in np.percentile(values, [5, 95])]  # noqa: E731
    return {"resamples": resamples, "last_over_first_90": interval(ratios), "slope_per_100_frames_90": interval(slopes)}


def table(results: dict) -> str:
    """The drift table in Markdown, from the JSON alone: per curve, the first and last windows' FVD, their
    ratio and the fitted slope, with the bootstrap intervals where the JSON has them."""
    def cell(entry: dict, key: str, digits: int) -> str:
        value = f"{entry[key]:.{digits}f}"
        if f"{key}_90" in entry:
            low, high = entry[f"{key}_90"]
            value += f" [{low:.{digits}f}, {high:.{digits}f}]"
        return value

    rows = [("real videos (floor)", "", "", "", results["floor"])]
    for name, entry in results.get("variants", {}).items():
        rows.append((name, entry["model"], str(entry["perturbation_level"]), f"{entry['guidance']:g}", entry))
    if "real_start" in results:
        rows.append((REAL_START, "perturbed", "", f"{W:g}", results["real_start"]))
    header = ["curve", "prediction model", "s", "w", "first", "last", "last / first (90 %)", "slope per 100 frames (90 %)"]
    return "\n".join(markdown_table(header, [
        [name, model, level, guidance, f"{entry['first']:.1f}", f"{entry['last']:.1f}",
         cell(entry, "last_over_first", 2), cell(entry, "slope_per_100_frames", 2)]
        for name, model, level, guidance, entry in rows]))


def plot(results: dict, path: Path) -> list[Path]:
    """The curves of every variant and the floor band, from the JSON alone (`studies.plot_drift`); PNG and SVG."""
    import matplotlib

    matplotlib.use("Agg")
    from lvdm_ref.studies import plot_drift
    from lvdm_ref.viz import save_figure

    return save_figure(plot_drift(results), path)


class Drift:
    def __init__(self, args: argparse.Namespace):
        from lvdm_ref.lvdm import LatentVideoDiffusion

        self.args = args
        self.starts = window_starts(args.frames, args.window_every)
        self.out = args.out
        device = torch.device("cpu")
        pred, interp = load_pair(args.pred, args.interp, device)
        self.models = {"perturbed": pred}
        if args.pred_noperturb is not None:
            self.models["unperturbed"] = LatentVideoDiffusion.load(args.pred_noperturb, kind="lvdm_pred", vae=pred.vae)
        self.interp, self.vae = interp, pred.vae
        if args.compile:  # measured: 1.33x less CPU per prediction step at batch 8, after about 3 min of compiling
            for model in ([interp] if interp else []) + list(self.models.values()):
                model.unet = torch.compile(model.unet)
        self.i3d = None
        data = self.vae.metadata.get("data", {})
        self.size, self.digits = data.get("size", 64), data.get("num_digits", 2)
        self.classifier = None  # the content measure: the shipped digit classifier reads 2-digit 64x64 clips
        if self.digits == 2 and self.size == 64 and self.vae.config.in_channels == 1 and SHIPPED_DIGITS.exists():
            self.classifier = DigitClassifier.load(SHIPPED_DIGITS).eval()

    # ------------------------------------------------------------------ cached features
    def collect(self, name: str, make, num_windows: int | None = None) -> dict[str, np.ndarray]:
        """Per-video arrays of a variant, filled `--chunk` videos at a time and kept in OUT/features/<name>.npz.

        `make(first, count)` returns {"windows": uint8 (count, W, 16, H, W, C), ...other (count, ...) arrays};
        the windows are stored as their I3D features, (count, W, 400) float32, under "features".
        """
        from lvdm_ref.i3d import load_i3d
        from lvdm_ref.metrics import i3d_features

        path = self.out / "features" / f"{slug(name)}.npz"
        have = dict(np.load(path)) if path.exists() else {}
        num_windows = len(self.starts) if num_windows is None else num_windows
        if have and have["features"].shape[1] != num_windows:
            raise SystemExit(f"{path} holds {have['features'].shape[1]} windows per video, this run "
                             f"{num_windows}: use the same --frames and --window-every, or another --out")
        while not have or len(have["features"]) < self.args.num:
            first = len(have["features"]) if have else 0
            count = min(self.args.chunk, self.args.num - first)
            new = make(first, count)
            windows = new.pop("windows")
            if self.i3d is None:
                self.i3d = load_i3d()
            flat = windows.reshape(-1, *windows.shape[2:])  # (count * W, 16, H, W, C)
            new["features"] = i3d_features(flat, model=self.i3d, progress=False).astype(np.float32).reshape(
                count, windows.shape[1], 400)
            if self.classifier is not None:  # the digits each window shows, int (count, W, 2)
                new["digits"] = clip_digits(self.classifier, flat).numpy().reshape(count, windows.shape[1], -1)
            if have and set(have) != set(new):
                raise SystemExit(f"{path} holds {sorted(have)}, this run makes {sorted(new)}: it was made by an "
                                 "older version; delete it or use another --out")
            have = {key: np.concatenate([have[key], value]) if have else value for key, value in new.items()}
            atomic_write(path, lambda tmp: np.savez_compressed(open(tmp, "wb"), **have))
            print(f"{name}: {len(have['features'])}/{self.args.num} videos", file=sys.stderr)
        return {key: value[:self.args.num] for key, value in have.items()}

    def real_long(self, first: int, count: int) -> np.ndarray:
        from lvdm_ref.data import generate_moving_mnist

        # one clip per seed, so any chunking gives the same clips
        return np.concatenate([generate_moving_mnist(1, self.args.frames, self.size, self.digits, "test",
                                                     seed=10_000 + index) for index in range(first, first + count)])

    def real_windows(self, first: int, count: int) -> np.ndarray:
        """uint8 (count, W, 16, H, W, C): the windows of real long test clips."""
        videos = self.real_long(first, count)
        return np.stack([videos[:, s:s + 16] for s in self.starts], axis=1)

    def sampled(self, model: str, level: int, guidance: float, real_start: bool = False):
        """make(first, count) for `collect`: the windows of videos first..first+count-1 (one seed each);
        with `real_start`, continuations of the real clips, with PSNR/SSIM per window against them."""
        from lvdm_ref.long_video import sample_windows
        from lvdm_ref.vae3d import encode_videos
        from lvdm_ref.metrics import psnr, ssim
        from lvdm_ref.utils import from_uint8

        def make(first: int, count: int) -> dict[str, np.ndarray]:
            start = None
            if real_start:
                first_frames = self.real_long(first, count)[:, :self.vae.config.temporal_downsample]
                start = encode_videos(self.vae, first_frames, progress=False)  # (count, c, 1, h, w)
            # one batch; video i draws from the streams of video first + i, so chunking does not change it
            windows = sample_windows(self.models[model], self.interp, self.args.frames, self.starts, num_videos=count,
                                     seed=self.args.seed, first_index=first, start=start, num_steps=self.args.steps,
                                     perturbation_level=level, guidance_weight=guidance, progress=False)
            result = {"windows": windows, "last_window": windows[:, -1]}  # uint8 (count, 16, H, W, C): for strips
            if real_start:
                truth = self.real_windows(first, count)
                fake01, real01 = ((from_uint8(v.reshape(-1, *v.shape[2:])) + 1) / 2 for v in (windows, truth))
                shape = (count, len(self.starts))
                result["psnr"] = psnr(fake01, real01).mean(1).reshape(shape).numpy()  # per window
                result["ssim"] = ssim(fake01, real01).mean(1).reshape(shape).numpy()
            return result

        return make

    # ------------------------------------------------------------------ the run
    def run(self) -> dict:
        from lvdm_ref.data import generate_moving_mnist
        from lvdm_ref.metrics import fvd_from_features
        from lvdm_ref.perturbation import default_level

        args, started = self.args, time.perf_counter()
        results_path = self.out / "drift.json"
        results = json.loads(results_path.read_text()) if results_path.exists() else {}
        results.update(num=args.num, frames=args.frames, steps=args.steps, window_starts=self.starts,
                       command=" ".join(["python", *sys.argv]))
        reference = self.collect("reference", lambda first, count: {"windows": np.concatenate([
            generate_moving_mnist(1, 16, self.size, self.digits, "test", seed=index + 1)
            for index in range(first, first + count)])[:, None]}, num_windows=1)["features"][:, 0]  # (num, 400)

        def curve(features: np.ndarray) -> dict[str, float]:
            return {str(s): round(fvd_from_features(reference, features[:, w]), 2) for w, s in enumerate(self.starts)}

        floor_arrays = self.collect("floor", lambda first, count: {"windows": self.real_windows(first, count)})
        floor = floor_arrays["features"]
        floor_curve = curve(floor)
        results["floor"] = {"fvd": floor_curve, **summarise(floor_curve), **self.content(floor_arrays),
                            **bootstrap(reference, floor, self.starts, self.args.resamples)}
        variants = results.setdefault("variants", {})
        for name in args.variants:
            model, level, guidance = VARIANTS[name]
            if model not in self.models:
                print(f"skipping {name!r}: no --pred-noperturb", file=sys.stderr)
                continue
            arrays = self.collect(name, self.sampled(model, level, guidance))
            features = arrays["features"]
            level_used = default_level(self.models[model].hierarchy.max_perturbation_level) if level is None else level
            fvd = curve(features)
            variants[name] = {"model": model, "perturbation_level": level_used, "guidance": guidance,
                              "fvd": fvd, **summarise(fvd), **self.content(arrays),
                              **bootstrap(reference, features, self.starts, self.args.resamples)}
            self.save(results, results_path)
        if args.real_start:
            results["real_start"] = self.real_start(curve, reference)
        results["seconds_this_run"] = round(time.perf_counter() - started, 1)
        self.save(results, results_path)
        return results

    def real_start(self, curve, reference: np.ndarray) -> dict:
        """Continuation of the real clips by the perturbed and guided model: FVD and PSNR/SSIM per window."""
        arrays = self.collect(REAL_START, self.sampled("perturbed", None, W, real_start=True))
        fvd = curve(arrays["features"])
        return {"fvd": fvd, **summarise(fvd), **self.content(arrays),
                **bootstrap(reference, arrays["features"], self.starts, self.args.resamples),
                "psnr": {str(s): round(float(arrays["psnr"][:, w].mean()), 3) for w, s in enumerate(self.starts)},
                "ssim": {str(s): round(float(arrays["ssim"][:, w].mean()), 4) for w, s in enumerate(self.starts)}}

    def content(self, arrays: dict[str, np.ndarray]) -> dict:
        """{"keeps_digits": {window start: share}} where the digit classifier applies, else {}."""
        return {"keeps_digits": keep_share(arrays["digits"], self.starts)} if "digits" in arrays else {}

    def save(self, results: dict, path: Path) -> None:
        text = json.dumps(results, indent=1) + "\n"
        atomic_write(path, lambda tmp: Path(tmp).write_text(text))
        plot(results, path)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pred", type=Path, help="prediction model trained with perturbation (required to run)")
    parser.add_argument("--pred-noperturb", type=Path, default=None, help="prediction model trained without")
    parser.add_argument("--interp", type=Path, help="interpolation model (required to run, unless the prediction "
                        "models' keyframes are 1 latent apart)")
    parser.add_argument("--num", type=int, default=64, help="videos per variant (and real clips)")
    parser.add_argument("--frames", type=int, default=1024)
    parser.add_argument("--window-every", type=int, default=128)
    parser.add_argument("--steps", type=int, default=LONG_VIDEO_DDIM_STEPS)
    parser.add_argument("--chunk", type=int, default=8, help="videos per saved chunk")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--resamples", type=int, default=200, help="bootstrap resamples for the 90 %% intervals")
    parser.add_argument("--variants", nargs="*", default=list(VARIANTS), choices=list(VARIANTS), metavar="VARIANT")
    parser.add_argument("--no-real-start", dest="real_start", action="store_false")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--compile", action="store_true", help="sample through torch.compile (same numbers up to "
                        "float rounding, about 1.3x faster after a few minutes of compiling)")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "drift")
    parser.add_argument("--table", action="store_true", help="print the Markdown table of OUT/drift.json and exit")
    args = parser.parse_args(argv)
    if args.table:
        path = args.out / "drift.json"
        if not path.exists():
            parser.error(f"{path} does not exist: run the experiment first (without --table)")
        print(table(json.loads(path.read_text())))
        return {}
    if args.pred is None:
        parser.error("--pred is required to run (or --table to print the table of a finished run)")
    if args.num < 2 or args.frames < 16 or args.window_every < 1 or args.steps < 1 or args.chunk < 1:
        parser.error("--num >= 2, --frames >= 16, --window-every >= 1, --steps >= 1, --chunk >= 1")
    for path in (args.pred,) + tuple(p for p in (args.interp, args.pred_noperturb) if p):
        if not path.exists():
            parser.error(f"{path} does not exist")
    set_threads(args.threads)
    results = Drift(args).run()
    print(json.dumps(results))
    return results


if __name__ == "__main__":
    main()
