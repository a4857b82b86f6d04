"""The attention ablation on a task that needs frames to talk to each other: prediction from real latents.

    python benchmarks/attention_prediction.py --minutes 25 --num 256 --threads 1 [--only factorized joint spatial]

The unconditional ablation (`ablations.py --which attention`) ended level: at its budget, FVD of unconditional
samples does not separate a model that mixes frames from one that does not. Here the three attention kinds
(`factorized`, `joint`, `spatial`) are trained on a task they can only do by mixing frames, and scored against
the truth, clip by clip, which is far less noisy than FVD:

- the model: the hierarchy's prediction model of the `mmnist` preset (`hierarchy_unet`, `hierarchy_train`), with
  the design the probes chose (`hierarchy_probes.py`): v-prediction, keyframes one latent (4 frames) apart, so it
  is given the first latent of a 16-frame clip and makes the next three. Only `UNetConfig.attention` differs;
  the same encoded 64-frame clips, seed and recipe, each for the same CPU budget (`--minutes`, calibrated from
  its CPU seconds per step: the budget-study harness, `lvdm_ref/budget_study.py`), scored at half and all of it.
- the score, on N = `--num` held-out test clips (seed 20,000, with their digit labels): the latent of frames
  0-3 given (perturbed to the model's default s, guidance 0.1, DDIM 50, eta 1: the long-video settings), the
  16 frames decoded together, and frames 4-15 compared with the truth: PSNR and SSIM per clip; the share of
  clips whose frames 8-15 show the clip's true digits (the shipped digit classifier, `lvdm_ref/digits.py`); FVD
  of the 16 frames against the unconditional ablation's real set (seed 1) at the same N.
- references on the same clips: the autoencoder's own reconstruction (the ceiling), the last given frame
  (frame 3) held still (the trivial guess) and black frames (PSNR favours a dim, blurred guess over a sharp
  digit in the wrong place; this says how much). `spatial` cannot see the given latent at all (its convolutions
  and attention are per frame), so it is the floor of what a model makes of the condition.
- the differences (factorized - joint, factorized - spatial, joint - spatial) with 90 % bootstrap intervals
  over resampled clips (paired: the same clips, condition and noise for every variant).

Resumable like the other studies (training state every 250 steps and at each evaluation point; generated clips
batch by batch). Writes OUT (JSON), OUT.png/svg (the figure), OUT_samples.npz (4 clips per variant and the truth,
for notebook 06) and OUT_scores.npz (every per-clip score behind the JSON). `--table` prints the table of docs/studies/ablations.md from the JSON.
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
from lvdm_ref.checkpoint import atomic_write  # noqa: E402
from lvdm_ref.config import get_preset  # noqa: E402
from lvdm_ref.digits import SHIPPED_DIGITS, DigitClassifier  # noqa: E402
from lvdm_ref.guidance import LONG_VIDEO_GUIDANCE  # noqa: E402
from lvdm_ref.metrics import fvd_from_features  # noqa: E402
from lvdm_ref.recipes import train_hierarchy_model  # noqa: E402
from lvdm_ref.studies import (HELD_OUT_SEED, fill, fvd_interval, held_out, interval, kept_batches,  # noqa: E402, F401
                              paired_differences, per_clip_scores, reconstruct, summary_of)
from lvdm_ref.utils import to_uint8  # noqa: E402

KINDS = {"factorized": "LVDM's factorised attention: spatial, then temporal with Shaw relative positions",
         "joint": "one attention over all frames and pixels, relative temporal bias per head",
         "spatial": "spatial attention only: the given latent cannot reach the other frames (the floor)"}
PAIRS = (("factorized", "joint"), ("factorized", "spatial"), ("joint", "spatial"))
GIVEN = 1  # latents given: frames 0-3 (`studies.per_clip_scores` scores frames 4-15 and reads digits in 8-15)
BATCH = 16
KEPT_SAMPLES = 4
# Scored like the models: the autoencoder's reconstruction (the ceiling), frame 3 held still (the trivial guess), and
# black frames (PSNR rewards a dim, blurred guess over a sharp digit in the wrong place: this shows how much)
REFERENCES = ("ceiling", "hold the last given frame", "blank frames")  # clips per variant for the notebook's strips


def prediction_preset(kind: str):
    """The `mmnist` preset's prediction model with attention `kind` and v-prediction. `unet` and `train` are set
    to the hierarchy's too, so that the study's record of the preset (`unet`, `diffusion`, `train`) is what trains."""
    preset = get_preset("mmnist")
    unet = dataclasses.replace(preset.hierarchy_unet, attention=kind)
    return dataclasses.replace(preset, unet=unet, hierarchy_unet=unet, train=preset.hierarchy_train,
                               diffusion=dataclasses.replace(preset.diffusion, parameterization="v"))


def train_prediction(preset, vae_path, out, *, steps: int, stop_at: int | None = None, resume: bool = False,
                     callbacks=(), num_clips: int | None = None, latents_cache=None, progress: bool = True) -> dict:
    """`recipes.train_short_model`'s signature (what the study calls) for the prediction model of this study."""
    return train_hierarchy_model(preset, "pred", vae_path, out, steps=steps, stop_at=stop_at, resume=resume,
                                 callbacks=callbacks, num_clips=num_clips, latents_cache=latents_cache,
                                 progress=progress, device="cpu", keyframe_stride=1, num_frames=64)


def variants() -> dict:
    return {kind: (describe, lambda preset, kind=kind: prediction_preset(kind), train_prediction)
            for kind, describe in KINDS.items()}


def pair_difference(scores_a: dict, scores_b: dict, features_a: np.ndarray, features_b: np.ndarray,
                    reference: np.ndarray, fvd_resamples: int = 200) -> dict:
    """Variant a minus variant b on the same clips: the mean of the per-clip differences of PSNR, SSIM and the
    true-digit share, and the FVD difference, each with its 90 % interval over resampled clips."""
    row = paired_differences(scores_a, scores_b)  # PSNR, SSIM, true digits, PSNR per generated latent
    row["fvd"] = {"mean": round(fvd_from_features(reference, features_a) - fvd_from_features(reference, features_b), 2),
                  "interval_90": fvd_interval(reference, features_a, features_b, fvd_resamples)}
    return row


class PredictionStudy(Study):
    """The budget study's harness, scored by prediction from real latents instead of unconditional FVD."""

    def __init__(self, args: argparse.Namespace, section: str = "variants"):
        super().__init__(args, section)
        self.classifier = DigitClassifier.load(SHIPPED_DIGITS)
        self.clips, self.labels = held_out(args.num)

    def scores_path(self, key: str) -> Path:
        return self.work / "scores" / f"{key}.npz"

    def score(self, key: str, videos: np.ndarray) -> dict:
        """`per_clip_scores` of `videos` against the held-out clips, kept in WORK/scores/KEY.npz."""
        scores = per_clip_scores(videos, self.clips, self.labels, self.classifier)
        atomic_write(self.scores_path(key), lambda tmp: np.savez(open(tmp, "wb"), **scores))
        return scores

    def generate(self, checkpoint: Path, key: str, steps: int, seed: int) -> tuple[np.ndarray, float]:
        """The 16-frame clips (frames 0-3 given) for every held-out clip, batch by batch into WORK/samples/KEY;
        each clip has its own noise stream (`stream(seed, i)`), so a batch is the same whatever came before."""
        from lvdm_ref.lvdm import LatentVideoDiffusion
        from lvdm_ref.vae3d import encode_videos

        model = LatentVideoDiffusion.load(checkpoint, kind="lvdm_pred")

        def make(first: int) -> np.ndarray:
            latents = encode_videos(model.vae, self.clips[first:first + BATCH], progress=False)  # (B, c, 4, h, w)
            sampled = fill(model, latents, seed, BATCH, first_index=first, num_steps=steps,
                           perturbation_level=None, guidance_weight=LONG_VIDEO_GUIDANCE)  # latent 0 given
            return to_uint8(model.decode(sampled))  # (B, 16, H, W, C)

        return kept_batches(self.work / "samples" / key, len(self.clips), make, BATCH)

    def cached_samples(self, key: str) -> np.ndarray:
        """The clips `generate` kept for `key`, read back (every batch must be there)."""
        paths = sorted((self.work / "samples" / key).glob("*.npz"))
        videos = np.concatenate([np.load(path)["videos"] for path in paths]) if paths else np.zeros((0,))
        if len(videos) != len(self.clips):
            raise SystemExit(f"{self.work / 'samples' / key} holds {len(videos)} clips, not {len(self.clips)}: "
                             f"rerun the study to make the missing batches")
        return videos

    def evaluate(self, checkpoint: Path, key: str, sampler: str = "ddim", steps: int = 50, eta: float = 1.0,
                 seed: int = 0) -> dict:
        real = self.reference()  # the unconditional ablation's real set, for FVD
        self.prediction_reference()
        videos, seconds = self.generate(checkpoint, key, steps, seed)
        scores = self.score(key, videos)
        self.keep_samples(key, videos)
        fvd = fvd_from_features(real, self.features(key, lambda: videos))
        return {**summary_of(scores), "fvd": round(fvd, 2), "sample_cpu_seconds": round(seconds, 1), "sampler": "ddim",
                "steps": steps, "eta": eta, "seed": seed, "guidance": LONG_VIDEO_GUIDANCE}

    def prediction_reference(self) -> None:
        """The ceiling (the autoencoder's reconstruction) and the trivial guess (frame 3 held still), scored
        like the models, once."""
        reference = self.results.setdefault("prediction_reference", {})
        if all("psnr_by_latent" in reference.get(name, {}) for name in REFERENCES):
            return
        held = np.repeat(self.clips[:, 3:4], 16, axis=1)  # frame 3, the last given one, held still
        made = {"ceiling": lambda: reconstruct(self.args.vae, self.clips), "hold the last given frame": lambda: held,
                "blank frames": lambda: np.zeros_like(self.clips)}
        for name, videos in ((name, made[name]()) for name in REFERENCES):
            reference[name] = summary_of(self.score(name, videos))
        reference["real_true_digits"] = summary_of(per_clip_scores(self.clips, self.clips, self.labels,
                                                                   self.classifier))["true_digits"]
        self.save()

    def keep_samples(self, key: str, videos: np.ndarray) -> None:
        path = self.args.out.with_name(f"{self.args.out.stem}_samples.npz")
        kept = dict(np.load(path)) if path.exists() else {}
        kept.update({key: videos[:KEPT_SAMPLES], "truth": self.clips[:KEPT_SAMPLES]})
        atomic_write(path, lambda tmp: np.savez_compressed(open(tmp, "wb"), **kept))

    def compare(self) -> None:
        """Each pair's difference at each evaluation point, with 90 % intervals over resampled clips, and each
        variant's UNet size; only for pairs whose two variants both reached that point."""
        from lvdm_ref.lvdm import LatentVideoDiffusion

        real = self.reference()
        self.prediction_reference()
        variants = self.results[self.section]
        for name, entry in variants.items():
            for point in ("half", "end"):  # points scored before `psnr_by_latent` existed: rescored from their samples
                if point in entry and "psnr_by_latent" not in entry[point]:
                    entry[point].update(summary_of(self.score(f"{name}_{point}", self.cached_samples(f"{name}_{point}"))))
                    self.touched.add(name)
            checkpoint = self.work / name / "pred.safetensors"
            if "parameters" not in entry and checkpoint.exists():
                unet = LatentVideoDiffusion.load(checkpoint, kind="lvdm_pred").unet
                entry["parameters"] = sum(p.numel() for p in unet.parameters())
                self.touched.add(name)
        differences = self.results.setdefault("differences", {})
        for point in ("half", "end"):
            for a, b in PAIRS:
                if point not in variants.get(a, {}) or point not in variants.get(b, {}):
                    continue
                ka, kb = f"{a}_{point}", f"{b}_{point}"
                row = pair_difference(dict(np.load(self.scores_path(ka))), dict(np.load(self.scores_path(kb))),
                                      self.features(ka, None), self.features(kb, None), real)
                differences.setdefault(point, {})[f"{a} - {b}"] = row
        self.save()
        self.keep_scores()

    def keep_scores(self) -> None:
        """Every per-clip score behind the JSON in OUT_scores.npz ("KEY/MEASURE": the variant's point or a
        reference), so that the means and the PSNR/SSIM/digit intervals can be recomputed without the work folder."""
        keys = [f"{name}_{point}" for name, entry in self.results[self.section].items() for point in ("half", "end")
                if point in entry] + list(REFERENCES)
        kept = {f"{key}/{measure}": values for key in keys if self.scores_path(key).exists()
                for measure, values in np.load(self.scores_path(key)).items()}
        path = self.args.out.with_name(f"{self.args.out.stem}_scores.npz")
        atomic_write(path, lambda tmp: np.savez_compressed(open(tmp, "wb"), **kept))


def plot(results: dict, path: Path) -> list[Path]:
    """Per variant at the end of its budget: PSNR and the true-digit share with the references, and each
    difference with its 90 % interval; from the JSON alone."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from lvdm_ref.viz import save_figure

    variants = {name: entry["end"] for name, entry in results["variants"].items() if "end" in entry}
    reference = results.get("prediction_reference", {})
    figure, axes = plt.subplots(1, 3, figsize=(14, 3.8))
    latents = ["4-7", "8-11", "12-15"]
    for name, values in variants.items():
        axes[0].plot(latents, values["psnr_by_latent"], "o-", label=name)
    for name, style in (("ceiling", "--"), ("hold the last given frame", ":"), ("blank frames", "-.")):
        if name in reference:
            if name != "ceiling":  # about 28 dB: drawn, it would flatten the models' curves
                axes[0].plot(latents, reference[name]["psnr_by_latent"], color="k", linestyle=style, label=name)
            axes[1].axhline(reference[name]["true_digits"], color="k", linestyle=style, label=name)
    ceiling = f" (ceiling {reference['ceiling']['psnr']:.1f} dB)" if "ceiling" in reference else ""
    axes[0].set(xlabel="generated frames", ylabel="PSNR against the truth (dB)", title="per generated latent" + ceiling)
    axes[0].legend(fontsize=7)
    axes[1].bar(list(variants), [v["true_digits"] for v in variants.values()], color="tab:blue")
    axes[1].set(ylabel="share with the true digits in frames 8-15", ylim=(0, 1))
    axes[1].legend(fontsize=7)
    rows = results.get("differences", {}).get("end", {})
    for i, (pair, row) in enumerate(rows.items()):
        low, high = row["psnr"]["interval_90"]
        axes[2].errorbar(row["psnr"]["mean"], i, xerr=[[row["psnr"]["mean"] - low], [high - row["psnr"]["mean"]]],
                         fmt="o", color="tab:red", capsize=3)
    axes[2].axvline(0, color="k", linewidth=0.8)
    axes[2].set_yticks(range(len(rows)), list(rows))
    axes[2].set_xlabel("PSNR difference (dB), 90 % interval over clips")
    minutes = results["setting"]["minutes"]
    figure.suptitle(f"Attention kinds on prediction from a real latent, {minutes:g} CPU-minutes each, "
                    f"N = {results['setting']['num']}", fontsize=10)
    figure.tight_layout()
    return save_figure(figure, path)


def table(results: dict) -> str:
    """The table of docs/studies/ablations.md in Markdown, from the JSON alone."""
    lines = ["| variant | UNet weights | steps | CPU-s/step | peak RSS (MiB) | PSNR (dB) | PSNR of frames 4-7 / 8-11 / 12-15 "
             "| SSIM | true digits | FVD |", "|---|---|---|---|---|---|---|---|---|---|"]
    for name, entry in results["variants"].items():
        end = entry.get("end", {})
        by_latent = " / ".join(f"{v:.2f}" for v in end["psnr_by_latent"]) if "psnr_by_latent" in end else ""
        cells = [f"{end['psnr']:.2f}" if "psnr" in end else "", by_latent] + \
                [f"{end[k]:.3f}" if k in end else "" for k in ("ssim", "true_digits")] + \
                [f"{end['fvd']:.1f}" if "fvd" in end else ""]
        weights = f"{entry['parameters']:,}" if "parameters" in entry else ""
        lines.append(f"| {name} | {weights} | {entry.get('steps', '')} | {entry.get('cpu_seconds_per_step', '')} | "
                     f"{entry.get('peak_rss_mib', '')} | " + " | ".join(cells) + " |")
    for name, values in results.get("prediction_reference", {}).items():
        if isinstance(values, dict):
            by_latent = " / ".join(f"{v:.2f}" for v in values.get("psnr_by_latent", []))
            lines.append(f"| *{name}* | | | | | {values['psnr']:.2f} | {by_latent} | {values['ssim']:.3f} | "
                         f"{values['true_digits']:.3f} | |")
    for pair, row in results.get("differences", {}).get("end", {}).items():
        cells = [f"{row[m]['mean']:+.{d}f} [{row[m]['interval_90'][0]:+.{d}f}, {row[m]['interval_90'][1]:+.{d}f}]"
                 for m, d in (("psnr", 2), ("ssim", 3), ("true_digits", 3), ("fvd", 1))]
        by_latent = " / ".join(f"{d['mean']:+.2f} [{d['interval_90'][0]:+.2f}, {d['interval_90'][1]:+.2f}]"
                               for d in row.get("psnr_by_latent", []))
        cells.insert(1, by_latent)
        lines.append(f"| *{pair}* (90 % interval) | | | | | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_study_arguments(parser, minutes=25.0, num=256, out=ROOT / "benchmarks" / "results" / "ablations" / "attention_pred.json",
                        work=ROOT / "runs" / "ablations_pred", what="variant")
    parser.add_argument("--table", action="store_true", help="only print the JSON as a Markdown table")
    args = parser.parse_args(argv)
    if args.table:
        print(table(json.loads(args.out.read_text())))
        return {}
    if args.num < 4:
        parser.error("--num >= 4: the per-clip intervals need clips to resample")
    study = run_study(parser, args, variants(), "variants", PredictionStudy)
    study.compare()
    plot(study.results, args.out.with_suffix(""))
    print(json.dumps(study.results))
    return study.results


if __name__ == "__main__":
    main()
