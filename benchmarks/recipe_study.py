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

The harness is `lvdm_ref/budget_study.py` (shared with the ablations and the stability study). Resumable: the
JSON is rewritten after every finished piece (calibration, half, end, sampler) and a rerun skips what is there;
training runs resume from their state files; samples (batch by batch) and I3D features are cached in the work
folder (`--work`, git-ignored). `--table` prints the table of docs/studies/recipe_study.md from the JSON.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads its OpenMP runtime

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout without installing
# The harness, importable from here too (older runs of the stability study spawn workers that look for it here).
from lvdm_ref.budget_study import (CpuClock, Study, _calibrate, add_study_arguments, budget_table,  # noqa: E402, F401
                                   calibrate, logged_loss, plot_budget_curves, run_study, seconds_per_step,
                                   study_setting)
from lvdm_ref.config import with_recipe  # noqa: E402
from lvdm_ref.studies import reconstruct, sample_in_batches  # noqa: E402, F401

plot = plot_budget_curves  # FVD against training CPU-minutes per recipe, from the JSON alone
table = budget_table  # the study as a Markdown table, from the JSON alone


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


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_study_arguments(parser, minutes=15.0, num=128, out=ROOT / "benchmarks" / "results" / "recipe_study.json",
                        work=ROOT / "runs" / "recipe_study", what="recipe")
    parser.add_argument("--samplers", action="store_true", help="then compare samplers on the best recipe")
    parser.add_argument("--table", action="store_true", help="only print the JSON as a Markdown table")
    args = parser.parse_args(argv)
    if args.table:
        print(table(json.loads(args.out.read_text())))
        return {}
    study = run_study(parser, args, recipes(), "recipes")
    if args.samplers:
        study.samplers()
    plot(study.results, args.out.with_suffix(".png"))
    print(json.dumps(study.results))
    return study.results


if __name__ == "__main__":
    main()
