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
from recipe_study import Study, plot  # noqa: E402  (benchmarks/recipe_study.py)

import torch  # noqa: E402  (after recipe_study, which sets OMP_WAIT_POLICY before torch loads)


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
    parser.add_argument("--vae", type=Path, default=ROOT / "data" / "checkpoints" / "mmnist_vae.safetensors")
    parser.add_argument("--minutes", type=float, default=45.0, help="CPU minutes of training per variant")
    parser.add_argument("--num", type=int, default=256, help="clips per FVD set")
    parser.add_argument("--num-clips", type=int, default=2048, help="encoded training clips (shared)")
    parser.add_argument("--calibration-steps", type=int, default=10)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--only", nargs="*", default=None, help="variants to run (default: all)")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "ablations" / "attention.json")
    parser.add_argument("--work", type=Path, default=ROOT / "runs" / "ablations")
    args = parser.parse_args(argv)
    if args.minutes <= 0 or args.num < 2 or args.num_clips < 16 or args.calibration_steps < 1 or args.threads < 1:
        parser.error("--minutes > 0, --num >= 2, --num-clips >= 16, --calibration-steps >= 1, --threads >= 1")
    if not args.vae.exists():
        parser.error(f"--vae {args.vae} does not exist")
    variants = attention_variants()
    unknown = set(args.only or ()) - set(variants)
    if unknown:
        parser.error(f"unknown variants {sorted(unknown)}; known: {list(variants)}")
    torch.set_num_threads(args.threads)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    study = Study(args, section="variants")
    for name, (describe, apply) in variants.items():
        if args.only is None or name in args.only:
            study.run(name, describe, apply)
    plot(study.results, args.out.with_suffix(".png"), section="variants",
         title="attention kinds at one CPU budget")
    print(json.dumps(study.results))
    return study.results


if __name__ == "__main__":
    main()
