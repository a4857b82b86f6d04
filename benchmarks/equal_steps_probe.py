"""A design of the stability study trained from scratch to an early step of its equal-steps schedule.

    python benchmarks/equal_steps_probe.py --design baseline --stop-at 1000 --threads 1
    python benchmarks/equal_steps_probe.py --design wide --stop-at 1000 --threads 2

`stability_study.py --equal-steps` trains a design from scratch for baseline's 3,434 steps; a wider model
takes hours for them on a CPU without bfloat16. This trains it (or baseline, in a folder of its own) on the
same clips, seed and schedule (200 warm-up steps, then a constant lr: step N is the same whatever the total) to
`--stop-at` steps, resuming the design's folder, so that two designs can be compared step for step at N by
`where_digits_change.py --from-real` (SDEdit) before either reaches its scored points. The checkpoint is written
to FOLDER/short.safetensors; the study resumes the same folder later.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
import stability_study  # noqa: E402
from lvdm_ref.config import get_preset  # noqa: E402


def folder_of(design: str, work: Path) -> Path:
    """The study's own folder for a design; baseline's equal-steps twin gets one beside it (the study's baseline
    ran on another schedule: its CPU budget of 3,818 steps)."""
    return work / ("baseline_equal_steps" if design == "baseline" else design)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--design", required=True, choices=sorted(stability_study.designs()))
    parser.add_argument("--stop-at", type=int, required=True)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--vae", type=Path, default=ROOT / "data" / "checkpoints" / "mmnist_vae.safetensors")
    parser.add_argument("--work", type=Path, default=ROOT / "runs" / "stability_study")
    args = parser.parse_args(argv)
    if args.design.startswith("continue_"):
        parser.error(f"{args.design} continues mmnist_short: the study runs it (--equal-steps --only {args.design})")
    if not 0 < args.stop_at <= stability_study.FP32_MATCH_STEP:
        parser.error(f"--stop-at takes 1..{stability_study.FP32_MATCH_STEP}, got {args.stop_at}")
    torch.set_num_threads(args.threads)
    folder = folder_of(args.design, args.work)
    preset = stability_study.designs()[args.design][1](get_preset("mmnist"))
    summary = stability_study.train_compiled(
        preset, args.vae, folder, steps=stability_study.FP32_MATCH_STEP, stop_at=args.stop_at,
        resume=(folder / "train_state.pt").exists(), num_clips=2048, latents_cache=args.work / "latents.pt",
        progress=True)
    print(summary)
    return summary


if __name__ == "__main__":
    main()
