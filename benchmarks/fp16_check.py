"""Is a model stored in float16 (`python -m lvdm_ref export --fp16`) as good as the float32 one it came from?

    python benchmarks/fp16_check.py --ckpt runs/X/short.safetensors --num 256 --threads 1 \
        --out benchmarks/results/fp16_check_X.json

Both are loaded as float32 models (the fp16 file's weights rounded), sample the same `--num` clips (DDIM 50,
eta 1, seed 0), and are scored by FVD against one set of real test clips (the studies' set: seed 1), in one
run. Also the pixel difference between their clips: with the same noise, rounding the weights moves each
sample only a little, or the sampler's trajectory diverges. Ship fp16 only if the FVD does not move by
more than the seed-to-seed spread (benchmarks/seed_spread.py).
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout without installing


def main(argv: list[str] | None = None) -> dict:
    from lvdm_ref.checkpoint import export_for_sampling
    from lvdm_ref.i3d import load_i3d
    from lvdm_ref.lvdm import LatentVideoDiffusion
    from lvdm_ref.metrics import fvd_from_features, i3d_features
    from lvdm_ref.studies import real_clips, set_threads

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ckpt", type=Path, required=True, help="a diffusion checkpoint (float32)")
    parser.add_argument("--num", type=int, default=256)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, required=True, help="JSON to write")
    args = parser.parse_args(argv)
    if not args.ckpt.exists():
        parser.error(f"--ckpt {args.ckpt} does not exist")
    if args.num < 2 or args.steps < 1 or args.threads < 1:
        parser.error("--num >= 2, --steps >= 1, --threads >= 1")
    from lvdm_ref.checkpoint import load_weights

    if load_weights(args.ckpt)[1].get("storage") == "float16":
        parser.error(f"--ckpt {args.ckpt} is already stored as float16: pass the float32 checkpoint it was "
                     f"exported from (the run folder's short.safetensors)")
    set_threads(args.threads)
    i3d = load_i3d()
    real = i3d_features(real_clips(args.num), model=i3d)  # the studies' real set
    results = {"ckpt": str(args.ckpt), "num": args.num, "sampler": f"DDIM {args.steps}, eta 1, seed 0",
               "command": " ".join(["python", *sys.argv])}
    clips = {}
    with tempfile.TemporaryDirectory() as folder:
        half = Path(folder) / "fp16.safetensors"
        export_for_sampling(args.ckpt, half, fp16=True)
        results["bytes"] = {"float32": args.ckpt.stat().st_size, "float16": half.stat().st_size}
        vae = None  # the fp32 model finds its autoencoder beside it (by sha256); the fp16 copy shares it
        for name, path in (("float32", args.ckpt), ("float16", half)):
            model = LatentVideoDiffusion.load(path, vae=vae)
            vae = model.vae
            start = time.process_time()
            clips[name] = model.sample(args.num, sampler="ddim", num_steps=args.steps, eta=1.0, seed=0)
            results[name] = {"fvd": round(fvd_from_features(real, i3d_features(clips[name], model=i3d)), 2),
                             "sample_cpu_seconds": round(time.process_time() - start, 1)}
    difference = np.abs(clips["float32"].astype(np.int16) - clips["float16"].astype(np.int16))
    results["pixel_difference"] = {"mean": round(float(difference.mean()), 3), "max": int(difference.max()),
                                   "share_over_8": round(float((difference > 8).mean()), 5)}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1) + "\n")
    print(json.dumps(results))
    return results


if __name__ == "__main__":
    main()
