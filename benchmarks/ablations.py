"""The paper's two ablations at one CPU budget: factorised vs joint (vs spatial-only) attention, and
diffusion in the autoencoder's latent space vs in pixel space.

    python benchmarks/ablations.py --which attention --minutes 45 --num 256 --threads 1
    python benchmarks/ablations.py --which pixel --minutes 45 --num 256 --threads 1

The short model of the `mmnist` preset with only `UNetConfig.attention` changed, trained on the same
encoded latents with the same seed, optimiser and schedule for the same CPU budget (calibrated per
variant from its CPU seconds per step: the budget-study harness, lvdm_ref/budget_study.py),
then scored by FVD at N = `--num` against one real set, next to the real-vs-real floor, real first
frames held still and the autoencoder's ceiling at the same N. Both attention kinds use learned
relative temporal positions (joint: a bias per head; factorised: Shaw's key/value vectors), so what
differs is the factorisation. "spatial" (no temporal mixing at all) is the floor of the comparison.

`--which pixel`: the same preset's model trained in pixel space (`lvdm_ref/pixel.py`: the latent UNet
with two more levels in front, on (1, 16, 64, 64) clips, same diffusion and recipe) for the same CPU
budget as the latent one (the autoencoder's own training, done once, is not in that budget; the model
card gives it). Its latent model is the `factorized` run of the attention ablation: both files share the
work folder, and a finished entry of either is copied into the other, not trained twice.

Resumable like the recipe study (training state every 250 steps and at each evaluation point, samples
batch by batch); each variant's calibration also records the peak resident memory of a process that
only trains it. Besides OUT (the JSON, with each finished variant's loss against CPU-minutes)
and OUT.png (FVD against CPU-minutes): OUT_samples.npz (4 clips per variant, DDIM 50, seed 0) and
OUT_summary.png/svg (`budget_study.plot_budget_study`: FVD bars with floor and ceiling, loss curves, sample strips).
`--table` prints the JSON as the Markdown table of docs/studies/ablations.md.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout without installing
from lvdm_ref.budget_study import add_study_arguments, plot_budget_curves, run_study, study_setting  # noqa: E402
from lvdm_ref.checkpoint import atomic_write  # noqa: E402
from lvdm_ref.pixel import pixel_preset  # noqa: E402
from lvdm_ref.recipes import train_pixel_model  # noqa: E402
from lvdm_ref.studies import markdown_table  # noqa: E402

SHARED = "factorized"  # the preset's latent model: a variant of both ablations


def attention_variants() -> dict:
    def kind(name: str):
        return lambda preset: dataclasses.replace(preset, unet=dataclasses.replace(preset.unet, attention=name))

    return {"factorized": ("LVDM's factorised attention: spatial, then temporal with Shaw relative positions",
                           kind("factorized")),
            "joint": ("one attention over all frames and pixels, relative temporal bias per head", kind("joint")),
            "spatial": ("spatial attention only: no temporal mixing (the floor of the comparison)", kind("spatial"))}


def pixel_variants() -> dict:
    return {SHARED: attention_variants()[SHARED],
            "pixel": ("the same UNet with two more levels in front, on pixels (1, 16, 64, 64); same diffusion and recipe",
                      pixel_preset, train_pixel_model)}


ABLATIONS = {"attention": (attention_variants, "attention kinds at one CPU budget"),
             "pixel": (pixel_variants, "latent vs pixel diffusion at one CPU budget")}


def share_finished(out: Path, other: Path, setting: dict) -> None:
    """Copy the shared variant's finished entry from the other ablation's JSON into `out`, if both are (or
    will be) of `setting`."""
    theirs = json.loads(other.read_text()) if other.exists() else {}
    entry = theirs.get("variants", {}).get(SHARED, {})
    ours = json.loads(out.read_text()) if out.exists() else {"setting": setting}
    if "end" in entry and theirs["setting"] == setting == ours.get("setting") and \
            "end" not in ours.get("variants", {}).get(SHARED, {}):
        ours.setdefault("variants", {})[SHARED] = entry
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(ours, indent=1) + "\n")


def add_curves_and_samples(study, only: list[str] | None = None, num_samples: int = 4) -> None:
    """For every finished variant: its training loss against CPU-minutes (from the run's log) into the JSON,
    and `num_samples` clips (DDIM 50, eta 1, seed 0) into OUT_samples.npz, for the notebooks' curves and
    strips. Idempotent; run it only when no other process of this ablation is training (it rewrites entries)."""
    from lvdm_ref.lvdm import LatentVideoDiffusion
    from lvdm_ref.train import LOG_FILE

    args = study.args
    path = args.out.with_name(f"{args.out.stem}_samples.npz")
    samples = dict(np.load(path)) if path.exists() else {}
    for name, entry in study.results["variants"].items():
        folder = args.work / name
        if "end" not in entry or (only is not None and name not in only) or not folder.exists():
            continue
        if "loss_curve" not in entry and (folder / LOG_FILE).exists():
            rows = map(json.loads, (folder / LOG_FILE).read_text().splitlines())
            by_step = {row["step"]: row["loss"] for row in rows if row["step"] <= entry["steps"]}  # resumed: the last
            steps = sorted(by_step)
            entry["loss_curve"] = {"step": steps, "cpu_minutes": [round(s * entry["cpu_seconds_per_step"] / 60, 3) for s in steps],
                                   "loss": [round(by_step[s], 5) for s in steps]}
            study.touched.add(name)
        if name not in samples:
            model = LatentVideoDiffusion.load(folder / "short.safetensors")
            samples[name] = model.sample(num_samples, sampler="ddim", num_steps=getattr(args, "sample_steps", 50), eta=1.0,
                                         seed=0)  # uint8 (n, F, H, W, C)
            atomic_write(path, lambda tmp: np.savez_compressed(open(tmp, "wb"), **samples))
    study.save()


def table(results: dict) -> str:
    """An ablation as a Markdown table (what docs/studies/ablations.md shows), from the JSON alone."""
    reference, num = results.get("reference", {}), results["setting"]["num"]
    rows = []
    for name, entry in results["variants"].items():
        fvd = [f"{entry[p]['fvd']:.1f}" if p in entry else "" for p in ("half", "end")]
        sampling = f"{entry['end']['sample_cpu_seconds'] / num:.2f}" if "end" in entry else ""
        rows.append([name, f"{entry.get('steps', '')}", f"{entry.get('cpu_seconds_per_step', '')}",
                     f"{entry.get('peak_rss_mib', '')}", sampling, fvd[0], fvd[1]])
    lines = markdown_table(["variant", "steps", "CPU-s/step", "peak RSS (MiB)", "sampling CPU-s/clip", "FVD at half",
                            "FVD at end"], rows)
    for key in ("real_vs_real", "autoencoder_ceiling", "static_first_frames"):
        if key in reference:
            lines.append(f"| *{key.replace('_', ' ')}* (N = {num}) | | | | | | {reference[key]:.1f} |")
    return "\n".join(lines)


def plot_summary(results: dict, out: Path) -> list[Path]:
    """FVD bars, loss curves and sample strips in one figure (`budget_study.plot_budget_study`): OUT_summary.png/svg."""
    import matplotlib

    matplotlib.use("Agg")
    from lvdm_ref.budget_study import plot_budget_study
    from lvdm_ref.viz import save_figure

    if not any("end" in entry for entry in results["variants"].values()):
        return []
    samples = out.with_name(f"{out.stem}_samples.npz")
    return save_figure(plot_budget_study(results, dict(np.load(samples)) if samples.exists() else None),
                       out.with_name(f"{out.stem}_summary"))


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--which", choices=tuple(ABLATIONS), default="attention")
    known, _ = parser.parse_known_args(argv)
    add_study_arguments(parser, minutes=45.0, num=256, out=ROOT / "benchmarks" / "results" / "ablations" / f"{known.which}.json",
                        work=ROOT / "runs" / "ablations", what="variant")
    parser.add_argument("--table", action="store_true", help="only print the JSON as a Markdown table")
    args = parser.parse_args(argv)
    if args.table:
        print(table(json.loads(args.out.read_text())))
        return {}
    variants, title = ABLATIONS[args.which]
    if args.vae.exists():
        for other in ABLATIONS:
            if other != args.which:
                share_finished(args.out, args.out.with_name(f"{other}.json"), study_setting(args))
    study = run_study(parser, args, variants(), "variants")
    add_curves_and_samples(study, args.only)
    plot_budget_curves(study.results, args.out.with_suffix(".png"), section="variants", title=title)
    plot_summary(study.results, args.out)
    print(json.dumps(study.results))
    return study.results


if __name__ == "__main__":
    main()
