"""Real-start continuations scored against the truth: does a long video follow the clip it was given?

    python benchmarks/continuation.py --pred data/checkpoints/mmnist_pred.safetensors \
        --interp data/checkpoints/mmnist_interp.safetensors --num 64 --frames 64 --threads 1 \
        --out benchmarks/results/continuation.json

Moving MNIST is deterministic given its start, so a continuation can be scored frame by frame. Each of
`--num` held-out test clips (the `sample-long --start real` clips, seed 0) gives its first latent (frames
0-3) to `sample_long` (DDIM 50, s = 100, w = 0.1: the long-video settings); the generated frames are
compared with the true ones, next to the trivial guess that holds the last given frame (frame 3) still.
Reported: PSNR/SSIM per frame and over frames 16 to F - 1 (what the prediction model made, not frames
the autoencoder decodes from the given latent), and the gain over holding still (goal: >= 4 dB).
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
sys.path.insert(0, str(ROOT))
from lvdm_ref.checkpoint import write_json  # noqa: E402
from lvdm_ref.data import generate_moving_mnist  # noqa: E402
from lvdm_ref.long_video import sample_long  # noqa: E402
from lvdm_ref.lvdm import LatentVideoDiffusion  # noqa: E402
from lvdm_ref.metrics import psnr, ssim  # noqa: E402
from lvdm_ref.utils import from_uint8  # noqa: E402
from lvdm_ref.vae3d import encode_videos  # noqa: E402

SCORED_FROM = 16  # frames before this come from the given latent's neighbourhood; the goal is on the rest


def per_frame(fake: np.ndarray, real: np.ndarray) -> dict:
    """PSNR (dB) and SSIM of uint8 (N, F, H, W, C) clips, per frame (averaged over clips)."""
    fake01, real01 = (from_uint8(fake) + 1) / 2, (from_uint8(real) + 1) / 2  # (N, C, F, H, W) in [0, 1]
    return {"psnr": psnr(fake01, real01).mean(0).tolist(), "ssim": ssim(fake01, real01).mean(0).tolist()}


def score(videos: np.ndarray, real: np.ndarray, held: np.ndarray) -> dict:
    rows = {"model": per_frame(videos, real), "hold the last given frame": per_frame(held, real)}
    summary = {name: {metric: round(float(np.mean(values[SCORED_FROM:])), 3) for metric, values in row.items()}
               for name, row in rows.items()}
    return {"frames_scored": [SCORED_FROM, real.shape[1] - 1], "summary": summary,
            "gain_db": round(summary["model"]["psnr"] - summary["hold the last given frame"]["psnr"], 3),
            "per_frame": {name: {metric: [round(v, 3) for v in values] for metric, values in row.items()}
                          for name, row in rows.items()}}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pred", type=Path, required=True)
    parser.add_argument("--interp", type=Path, default=None,
                        help="interpolation model (not for a prediction model with keyframes 1 latent apart)")
    parser.add_argument("--num", type=int, default=64)
    parser.add_argument("--frames", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=16, help="videos sampled together")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "continuation.json")
    args = parser.parse_args(argv)
    if args.frames <= SCORED_FROM or args.num < 1 or args.batch_size < 1:
        parser.error(f"--frames > {SCORED_FROM}, --num >= 1, --batch-size >= 1")
    torch.set_num_threads(args.threads)
    pred = LatentVideoDiffusion.load(args.pred, kind="lvdm_pred")
    interp = None if args.interp is None else LatentVideoDiffusion.load(args.interp, vae=pred.vae, kind="lvdm_interp")
    per_latent = pred.vae.config.temporal_downsample
    real = generate_moving_mnist(args.num, args.frames, 64, 2, "test", seed=args.seed)  # as `sample-long --start real`
    start_latents = encode_videos(pred.vae, real[:, :per_latent], progress=False)  # (N, c, 1, h, w)
    began, videos = time.process_time(), []
    for first in range(0, args.num, args.batch_size):
        # each batch draws from its own seed (seed + index of its first video), so no two videos share a stream
        videos.append(sample_long(pred, interp, args.frames, len(start_latents[first:first + args.batch_size]),
                                  seed=args.seed + first, start=start_latents[first:first + args.batch_size],
                                  progress=False))
    videos = np.concatenate(videos)  # uint8 (N, F, H, W, C)
    held = np.repeat(real[:, per_latent - 1:per_latent], args.frames, axis=1)
    results = {"command": " ".join(["python", *sys.argv]) if argv is None else "main(" + " ".join(argv) + ")",
               "pred": str(args.pred), "interp": args.interp and str(args.interp), "num": args.num, "frames": args.frames,
               "settings": "DDIM 50, eta 1, s = model default (100 for s_max = 250), guidance 0.1",
               "sample_cpu_seconds": round(time.process_time() - began, 1), **score(videos, real, held)}
    write_json(args.out, results)
    print(json.dumps({k: v for k, v in results.items() if k != "per_frame"}))
    return results


if __name__ == "__main__":
    main()
