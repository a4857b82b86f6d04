"""The paper's two ablations at one CPU budget: factorised vs joint (vs spatial-only) attention, and
diffusion in the autoencoder's latent space vs in pixel space.

    python benchmarks/ablations.py --which attention --minutes 45 --num 256 --threads 1
    python benchmarks/ablations.py --which pixel --minutes 45 --num 256 --threads 1

The short model of the `mmnist` preset with only `UNetConfig.attention` changed, trained on the same
encoded latents with the same seed, optimiser and schedule for the same CPU budget (calibrated per
variant from its CPU seconds per step, as in benchmarks/recipe_study.py, whose harness this reuses),
then scored by FVD at N = `--num` against one real set, next to the real-vs-real floor, real first
frames held still and the autoencoder's ceiling at the same N. Both attention kinds use learned
relative temporal positions (joint: a bias per head; factorised: Shaw's key/value vectors), so what
differs is the factorisation. "spatial" (no temporal mixing at all) is the floor of the comparison.

`--which pixel`: the same preset's model trained in pixel space (`lvdm_ref/pixel.py`: the latent UNet
with two more levels in front, on (1, 16, 64, 64) clips, same diffusion and recipe) for the same CPU
budget as the latent one (the autoencoder's own training, done once, is not in that budget; the model
card gives it). Its latent model is the `factorized` run of the attention ablation: both files share the
work folder, and a finished entry of either is copied into the other, not trained twice.

Resumable like the recipe study; each variant's calibration also records the peak resident memory of a
process that only trains it.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from recipe_study import add_study_arguments, plot, run_study, study_setting  # noqa: E402  (benchmarks/recipe_study.py)

from lvdm_ref.pixel import pixel_preset, train_pixel_model  # noqa: E402

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


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--which", choices=tuple(ABLATIONS), default="attention")
    known, _ = parser.parse_known_args(argv)
    add_study_arguments(parser, minutes=45.0, num=256, out=ROOT / "benchmarks" / "results" / "ablations" / f"{known.which}.json",
                        work=ROOT / "runs" / "ablations", what="variant")
    args = parser.parse_args(argv)
    variants, title = ABLATIONS[args.which]
    if args.vae.exists():
        for other in ABLATIONS:
            if other != args.which:
                share_finished(args.out, args.out.with_name(f"{other}.json"), study_setting(args))
    study = run_study(parser, args, variants(), "variants")
    plot(study.results, args.out.with_suffix(".png"), section="variants", title=title)
    print(json.dumps(study.results))
    return study.results


if __name__ == "__main__":
    main()
