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
sys.path.insert(0, str(ROOT))  # run from a checkout without installing
from lvdm_ref.checkpoint import atomic_write  # noqa: E402
from lvdm_ref.data import generate_moving_mnist  # noqa: E402
from lvdm_ref.diffusion import LONG_VIDEO_DDIM_STEPS  # noqa: E402
from lvdm_ref.guidance import LONG_VIDEO_GUIDANCE  # noqa: E402
from lvdm_ref.hierarchy import given_frames, sample_conditional  # noqa: E402
from lvdm_ref.lvdm import LatentVideoDiffusion  # noqa: E402
from lvdm_ref.metrics import psnr, ssim  # noqa: E402
from lvdm_ref.utils import from_uint8, stream, to_uint8  # noqa: E402
from lvdm_ref.vae3d import encode_videos  # noqa: E402


SENSITIVITY_CLIPS = 64  # clips of the card that are sampled again with another clip's condition


def scores(fake: torch.Tensor, real: torch.Tensor) -> dict:
    """Mean per-frame PSNR and SSIM of videos (B, C, F, H, W) in [-1, 1]."""
    fake01, real01 = (fake.clamp(-1, 1) + 1) / 2, (real + 1) / 2
    return {"psnr": round(float(psnr(fake01, real01).mean()), 3), "ssim": round(float(ssim(fake01, real01).mean()), 4)}


def fill(model: LatentVideoDiffusion, latents: torch.Tensor, seed: int, batch_size: int, first_index: int = 0,
         **sample_kwargs) -> torch.Tensor:
    """The model's role applied to real latents (N, c, f, h, w): the given frames kept, the rest sampled.
    Clip i draws from `stream(seed, first_index + i)`: a set sampled in pieces equals the set sampled at once."""
    config = model.hierarchy
    mask = given_frames(config.role, latents.shape[2]).view(1, 1, -1, 1, 1)  # (1, 1, f, 1, 1)
    out = []
    for first in range(0, len(latents), batch_size):
        given = latents[first:first + batch_size]
        generators = [stream(seed, first_index + index) for index in range(first, first + len(given))]
        out.append(sample_conditional(model.unet, model.diffusion, config, given, mask.expand(len(given), -1, -1, -1, -1),
                                      generators, **sample_kwargs))
    return torch.cat(out)


def condition_sensitivity(model: LatentVideoDiffusion, latents: torch.Tensor, seed: int, batch_size: int,
                          own: torch.Tensor | None = None, **sample_kwargs) -> dict:
    """How much the output follows the condition: clip i sampled twice with the same noise, once given its own
    latents and once given those of clip i + 1; the mean absolute difference of the two outputs at each
    generated latent frame, divided by that of the two true clips there (N, c, f, h, w real latents).

    0: the output is set by the noise alone; about 1: two conditions lead as far apart as the truth does.
    `own`: the outputs given their own latents, when already sampled with `fill(model, latents, seed, ...)`.
    """
    swapped = torch.roll(latents, shifts=-1, dims=0)  # clip i given clip i + 1's latents, same streams
    own = fill(model, latents, seed, batch_size, **sample_kwargs) if own is None else own
    other = fill(model, swapped, seed, batch_size, **sample_kwargs)
    generated = (given_frames(model.hierarchy.role, latents.shape[2]) == 0).nonzero().flatten().tolist()
    dims = (0, 1, 3, 4)  # all but the frame axis
    output_gap = (own - other).abs().mean(dims)  # (f,)
    truth_gap = (latents - swapped).abs().mean(dims)
    return {"frames": generated, "ratio": [round(float(output_gap[k] / truth_gap[k]), 4) for k in generated],
            "output_gap": [round(float(output_gap[k]), 4) for k in generated],
            "truth_gap": [round(float(truth_gap[k]), 4) for k in generated]}


@torch.no_grad()
def prediction_card(pred: LatentVideoDiffusion, clips: np.ndarray, args) -> dict:
    config, vae = pred.hierarchy, pred.vae
    stride_frames = config.keyframe_stride * vae.config.temporal_downsample  # 16 frames between keyframes
    latents = encode_videos(vae, clips, progress=False)[:, :, ::config.keyframe_stride][:, :, :config.num_latents]
    start = time.process_time()
    sampled = fill(pred, latents, args.seed, args.batch_size, num_steps=args.steps, perturbation_level=None,
                   guidance_scale=args.guidance)
    seconds = time.process_time() - start
    num = min(len(latents), getattr(args, "sensitivity_clips", SENSITIVITY_CLIPS))
    sensitivity = None if num == 0 else condition_sensitivity(pred, latents[:num], args.seed, args.batch_size, own=sampled[:num],
                                        num_steps=args.steps, perturbation_level=None, guidance_scale=args.guidance)
    real = from_uint8(clips)  # (N, C, 64, H, W)
    rows = {"model": [], "ceiling": [], "repeat the given keyframe": []}
    for k in range(1, config.num_latents):  # each new keyframe decoded alone: 4 frames
        truth = real[:, :, k * stride_frames:k * stride_frames + vae.config.temporal_downsample]
        for name, latent in (("model", sampled[:, :, k:k + 1]), ("ceiling", latents[:, :, k:k + 1]),
                             ("repeat the given keyframe", latents[:, :, :1])):
            rows[name].append(scores(pred.decode(latent), truth))
    per_keyframe = {name: {"psnr": [r["psnr"] for r in values], "ssim": [r["ssim"] for r in values]}
                    for name, values in rows.items()}
    return {name: {"psnr": round(float(np.mean(v["psnr"])), 3), "ssim": round(float(np.mean(v["ssim"])), 4),
                   "per_keyframe": v} for name, v in per_keyframe.items()} | {
        "settings": {"perturbation_level": "model default (100 for s_max = 250)", "guidance": args.guidance,
                     "ddim_steps": args.steps, "eta": 1.0},
        "sample_cpu_seconds": round(seconds, 1), "condition_sensitivity": sensitivity}


@torch.no_grad()
def interpolation_card(interp: LatentVideoDiffusion, clips: np.ndarray, reference: np.ndarray, args) -> dict:
    from lvdm_ref.metrics import compute_fvd

    config, vae = interp.hierarchy, interp.vae
    per_latent = vae.config.temporal_downsample
    frames = config.num_latents * per_latent  # 20
    short = clips[:, :frames]
    latents = encode_videos(vae, short, progress=False)  # (N, c, 5, h, w)
    start = time.process_time()
    sampled = fill(interp, latents, args.seed, args.batch_size, num_steps=args.steps)
    seconds = time.process_time() - start
    num = min(len(latents), getattr(args, "sensitivity_clips", SENSITIVITY_CLIPS))
    sensitivity = None if num == 0 else condition_sensitivity(interp, latents[:num], args.seed, args.batch_size, own=sampled[:num],
                                        num_steps=args.steps)
    weights = torch.linspace(0, 1, config.num_latents).view(1, 1, -1, 1, 1)
    line = latents[:, :, :1] * (1 - weights) + latents[:, :, -1:] * weights
    real = from_uint8(short)
    middle = slice(per_latent, frames - per_latent)  # the frames of the three generated latents
    result, decoded = {}, {}
    for name, z in (("model", sampled), ("ceiling", latents), ("straight line between the ends", line)):
        decoded[name] = torch.cat([interp.decode(z[i:i + 32]) for i in range(0, len(z), 32)])  # (N, C, 20, H, W)
        result[name] = scores(decoded[name][:, :, middle], real[:, :, middle])
    if not args.no_fvd and frames >= 16:  # FVD takes 16-frame clips
        from lvdm_ref.i3d import load_i3d

        i3d = load_i3d()
        sets = {"model": to_uint8(decoded["model"][:, :, :16]), "ceiling": to_uint8(decoded["ceiling"][:, :, :16]),
                "real_vs_real": short[:, :16]}
        result["fvd"] = {name: round(compute_fvd(reference, clips16, model=i3d, progress=False)["fvd"], 2)
                         for name, clips16 in sets.items()}
    result["settings"] = {"perturbation_level": "model default", "guidance": 0.0, "ddim_steps": args.steps, "eta": 1.0}
    result["sample_cpu_seconds"] = round(seconds, 1)
    result["condition_sensitivity"] = sensitivity
    return result


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
    pred = LatentVideoDiffusion.load(args.pred, kind="lvdm_pred")
    interp = None if args.interp is None else LatentVideoDiffusion.load(args.interp, kind="lvdm_interp", vae=pred.vae)
    size, digits = pred.vae.metadata.get("data", {}).get("size", 64), 2
    frames = pred.hierarchy.num_latents * pred.hierarchy.keyframe_stride * pred.vae.config.temporal_downsample
    clips = generate_moving_mnist(args.num, frames, size, digits, "test", seed=20_000)  # held-out test digits
    reference = generate_moving_mnist(args.num, 16, size, digits, "test", seed=20_001)
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
