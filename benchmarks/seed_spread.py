"""How much FVD moves between disjoint sample sets of one model: the noise floor of every FVD comparison.

    python benchmarks/seed_spread.py --ckpt data/checkpoints/mmnist_attention_factorized.safetensors \
        --seeds 4 --num 256 --threads 1 --out benchmarks/results/seed_spread.json

Sampling seeds 0..S-1 give S disjoint sets of N clips (one random stream per clip, `utils.stream`), each
scored against the same real set as the ablations and the recipe study (256 test clips, seed 1, DDIM 50,
eta 1). Each set of N also splits into two disjoint halves, so the same samples give 2S sets at N / 2.
Reported per N: every FVD, their mean, sample standard deviation and range, with the real-vs-real floor.
Resumable: sample batches and I3D features are kept in --work.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads its OpenMP runtime
import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout without installing
from lvdm_ref.checkpoint import write_json  # noqa: E402
from lvdm_ref.metrics import fvd_from_features  # noqa: E402
from lvdm_ref.studies import OTHER_REAL_SEED, FeatureCache, real_clips, sample_in_batches, set_threads  # noqa: E402


def spread(values: list[float]) -> dict:
    values = [round(v, 2) for v in values]
    return {"fvd": values, "mean": round(float(np.mean(values)), 2), "std": round(float(np.std(values, ddof=1)), 2),
            "min": min(values), "max": max(values), "range": round(max(values) - min(values), 2)}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ckpt", type=Path, default=ROOT / "data" / "checkpoints" / "mmnist_attention_factorized.safetensors")
    parser.add_argument("--seeds", type=int, default=4)
    parser.add_argument("--num", type=int, default=256)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--work", type=Path, default=ROOT / "runs" / "seed_spread")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "seed_spread.json")
    args = parser.parse_args(argv)
    if args.seeds < 2 or args.num < 4 or args.num % 2:
        parser.error("--seeds >= 2 and an even --num >= 4: the spread needs at least two sets of two halves")
    set_threads(args.threads)
    features = FeatureCache(args.work / "features")
    real = features(f"real_a_{args.num}", lambda: real_clips(args.num))
    floor = features(f"real_b_{args.num}", lambda: real_clips(args.num, OTHER_REAL_SEED))
    full, halves, cpu = [], [], 0.0
    for seed in range(args.seeds):
        def sampled(seed=seed):
            nonlocal cpu
            videos, seconds = sample_in_batches(args.ckpt, args.num, args.work / "samples" / f"seed_{seed}", "ddim", 50,
                                                1.0, seed)
            cpu += seconds
            return videos
        fake = features(f"seed_{seed}_{args.num}", sampled)
        full.append(fvd_from_features(real, fake))
        half = args.num // 2
        halves += [fvd_from_features(real[:half], fake[:half]), fvd_from_features(real[:half], fake[half:])]
        print(json.dumps({"seed": seed, "fvd": round(full[-1], 2)}), file=sys.stderr, flush=True)
    results = {"command": " ".join(["python", *sys.argv]), "checkpoint": str(args.ckpt.relative_to(ROOT)
                                                                               if args.ckpt.is_absolute() else args.ckpt),
               "sampler": "DDIM 50, eta 1", "real_set": f"{args.num} Moving MNIST test clips, seed 1",
               str(args.num): spread(full) | {"real_vs_real": round(fvd_from_features(real, floor), 2)},
               str(args.num // 2): spread(halves) | {
                   "real_vs_real": round(fvd_from_features(real[:args.num // 2], floor[:args.num // 2]), 2),
                   "note": f"each set of {args.num} split into two disjoint halves, scored against the first "
                           f"{args.num // 2} real clips"}}
    write_json(args.out, results)
    print(json.dumps(results))
    return results


if __name__ == "__main__":
    main()
