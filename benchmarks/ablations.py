"""The paper's attention ablation: factorised vs joint (vs spatial-only) attention at one CPU budget.

    python benchmarks/ablations.py --which attention --minutes 45 --num 256 --threads 1 \
        --out benchmarks/results/ablations/attention.json

The short model of the `mmnist` preset with only `UNetConfig.attention` changed, trained on the same
encoded latents with the same seed, optimiser and schedule for the same CPU budget (calibrated per
variant from its CPU seconds per step, as in benchmarks/recipe_study.py, whose harness this reuses),
then scored by FVD at N = `--num` against one real set, next to the real-vs-real floor, real first
frames held still and the autoencoder's ceiling at the same N. Both attention kinds use learned
relative temporal positions (joint: a bias per head; factorised: Shaw's key/value vectors), so what
differs is the factorisation. "spatial" (no temporal mixing at all) is the floor of the comparison.
Resumable like the recipe study. (The latent-vs-pixel ablation is not implemented yet.)
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from recipe_study import add_study_arguments, plot, run_study  # noqa: E402  (benchmarks/recipe_study.py)


def attention_variants() -> dict:
    def kind(name: str):
        return lambda preset: dataclasses.replace(preset, unet=dataclasses.replace(preset.unet, attention=name))

    return {"factorized": ("LVDM's factorised attention: spatial, then temporal with Shaw relative positions",
                           kind("factorized")),
            "joint": ("one attention over all frames and pixels, relative temporal bias per head", kind("joint")),
            "spatial": ("spatial attention only: no temporal mixing (the floor of the comparison)", kind("spatial"))}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--which", choices=("attention",), default="attention")
    add_study_arguments(parser, minutes=45.0, num=256, out=ROOT / "benchmarks" / "results" / "ablations" / "attention.json",
                        work=ROOT / "runs" / "ablations", what="variant")
    args = parser.parse_args(argv)
    study = run_study(parser, args, attention_variants(), "variants")
    plot(study.results, args.out.with_suffix(".png"), section="variants", title="attention kinds at one CPU budget")
    print(json.dumps(study.results))
    return study.results


if __name__ == "__main__":
    main()
