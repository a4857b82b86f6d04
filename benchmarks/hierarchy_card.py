"""Model-card numbers of the hierarchy's two models on held-out Moving MNIST test clips.

    python benchmarks/hierarchy_card.py --pred data/checkpoints/mmnist_pred.safetensors \
        --interp data/checkpoints/mmnist_interp.safetensors --num 256 --out benchmarks/results/hierarchy_card.json

Moving MNIST is deterministic given its start, so a model given real latents can be scored against the
true frames. Every number comes with two references on the same clips: the autoencoder's own
reconstruction of the true latents, decoded the same way (the ceiling), and a trivial guess (the floor):
- prediction: given the first keyframe latent of a real 64-frame clip (perturbed to s = 100 and with
  guidance 0.1, the long-video settings), the next three keyframes, 16 frames apart, each decoded alone
  (4 frames) and compared with the true frames; the trivial guess repeats the given keyframe.
- interpolation: given the first and fifth latents of a real 20-frame clip, the three between, decoded
  with the ends (20 frames), the middle 12 frames compared with the truth; the trivial guess is the
  straight line between the two given latents. Also FVD of the first 16 decoded frames against another
  set of real clips, next to the ceiling's FVD and the real floor at the same N.
PSNR (dB) and SSIM are per frame, averaged over frames and clips. Each card also measures how much the
output follows its condition (`condition_sensitivity`, on the first 64 clips): the same noise given another
clip's latents, the outputs' distance per generated frame relative to the two true clips' distance there.
The measures live in `lvdm_ref/studies.py` (`prediction_card`, `interpolation_card`), which the probes share.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads its OpenMP runtime
import torch  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout without installing
from lvdm_ref.checkpoint import atomic_write  # noqa: E402
from lvdm_ref.data import generate_moving_mnist  # noqa: E402
from lvdm_ref.diffusion import LONG_VIDEO_DDIM_STEPS  # noqa: E402
from lvdm_ref.guidance import LONG_VIDEO_GUIDANCE  # noqa: E402
from lvdm_ref.studies import (HELD_OUT_SEED, SENSITIVITY_CLIPS, interpolation_card, load_pair,  # noqa: E402
                              prediction_card)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pred", type=Path, required=True)
    parser.add_argument("--interp", type=Path, default=None, help="interpolation model (left out: its card is skipped)")
    parser.add_argument("--num", type=int, default=256)
    parser.add_argument("--steps", type=int, default=LONG_VIDEO_DDIM_STEPS)
    parser.add_argument("--guidance", type=float, default=LONG_VIDEO_GUIDANCE,
                        help="prediction model's guidance (long-video setting)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--no-fvd", action="store_true", help="skip the interpolation FVD (needs the I3D weights)")
    parser.add_argument("--sensitivity-clips", type=int, default=SENSITIVITY_CLIPS,
                        help="clips sampled again with another clip's condition (0 skips the sensitivity)")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "hierarchy_card.json")
    args = parser.parse_args(argv)
    if args.num < 2 or args.steps < 1 or args.batch_size < 1:
        parser.error("--num >= 2, --steps >= 1, --batch-size >= 1")
    for path in (args.pred, args.interp or args.pred):
        if not path.exists():
            parser.error(f"{path} does not exist")
    if args.out.suffix != ".json":
        parser.error(f"--out must be a .json file, got {args.out}")
    torch.set_num_threads(args.threads)
    pred, interp = load_pair(args.pred, args.interp)
    size, digits = pred.vae.metadata.get("data", {}).get("size", 64), 2
    frames = pred.hierarchy.num_latents * pred.hierarchy.keyframe_stride * pred.vae.config.temporal_downsample
    clips = generate_moving_mnist(args.num, frames, size, digits, "test", seed=HELD_OUT_SEED)  # held-out test digits
    reference = generate_moving_mnist(args.num, 16, size, digits, "test", seed=HELD_OUT_SEED + 1)
    results = {"command": " ".join(["python", *sys.argv]) if argv is None else "main(" + " ".join(argv) + ")",
               "num": args.num, "pred": str(args.pred), "interp": str(args.interp),
               "prediction": prediction_card(pred, clips, args)}
    if interp is not None:
        results["interpolation"] = interpolation_card(interp, clips, reference, args)
    text = json.dumps(results, indent=1) + "\n"
    atomic_write(args.out, lambda tmp: Path(tmp).write_text(text))
    print(json.dumps(results))
    return results


if __name__ == "__main__":
    main()
