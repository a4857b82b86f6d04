"""Long-video sampling speed and memory on this machine; prints one JSON object (and writes it with --out).

    python benchmarks/long_video_speed.py [--frames 1024] [--steps 50] [--threads 2] [--out F.json]

- `long_video`: one `--frames`-frame 64x64 video with the hierarchy (DDIM `--steps`, guidance 0.1 on
  the prediction stage, s = 100): seconds per stage (keyframes, interpolation, decoding) and in total.
- `interpolation`: the same `--pairs` keyframe pairs filled all in one batch and one pair at a time,
  interleaved in one process (`lvdm_ref.profiling.interleaved`); the ratio is pair-at-a-time / batched time.
- `memory`: peak resident memory (ru_maxrss of a fresh child process) of sampling 256, 1024 and 4096
  frames with 2 DDIM steps (memory does not depend on the number of steps), to show it is flat in length.

The models are the shipped `mmnist_pred` / `mmnist_interp` when they exist (`--pred`, `--interp`), else
fresh ones of the `mmnist` preset's size on the shipped autoencoder: time and memory depend on the sizes,
not on the weights, and the JSON says which was used.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads its OpenMP runtime
import torch  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout without installing
from lvdm_ref.checkpoint import SHIPPED_DIR  # noqa: E402
from lvdm_ref.config import get_preset  # noqa: E402
from lvdm_ref.diffusion import LONG_VIDEO_DDIM_STEPS  # noqa: E402
from lvdm_ref.guidance import LONG_VIDEO_GUIDANCE  # noqa: E402
from lvdm_ref.long_video import LongVideoPlan, decode_frames, interpolate, long_video_plan, sample_keyframes  # noqa: E402
from lvdm_ref.perturbation import SAMPLE_LEVEL, TRAIN_MAX_LEVEL  # noqa: E402
from lvdm_ref.profiling import interleaved  # noqa: E402
from lvdm_ref.recipes import build_hierarchy_model  # noqa: E402
from lvdm_ref.studies import load_pair  # noqa: E402
from lvdm_ref.vae3d import VideoAutoencoder  # noqa: E402


def load_models(pred_path: Path, interp_path: Path, vae_path: Path):
    """(pred, interp, description): the checkpoints when both exist, else untrained models of the preset's size."""
    if pred_path.exists() and interp_path.exists():
        pred, interp = load_pair(pred_path, interp_path)
        return pred, interp, f"checkpoints {pred_path.name}, {interp_path.name}"
    vae = VideoAutoencoder.load(vae_path)
    preset = get_preset("mmnist")
    torch.manual_seed(0)
    pred, interp = (build_hierarchy_model(preset, role, vae, vae.config.latent_channels, TRAIN_MAX_LEVEL).eval()
                    for role in ("pred", "interp"))
    pred.vae_sha256 = interp.vae_sha256 = "untrained"
    return pred, interp, "untrained models of the mmnist preset's size (timing does not depend on the weights)"


def time_long_video(pred, interp, num_frames: int, steps: int) -> dict:
    plan = long_video_plan(pred, interp, num_frames)
    start = time.perf_counter()
    keyframes = sample_keyframes(pred, plan, 1, seed=0, num_steps=steps, guidance_weight=LONG_VIDEO_GUIDANCE,
                                 progress=False)
    after_keyframes = time.perf_counter()
    latents = interpolate(interp, keyframes, seed=0, num_steps=steps, progress=False)
    after_interp = time.perf_counter()
    videos = decode_frames(pred, latents, num_frames, progress=False)
    end = time.perf_counter()
    return {"frames": int(videos.shape[1]), "keyframes": plan.num_keyframes, "prediction_samples": plan.prediction_steps,
            "pairs": plan.num_pairs, "seconds_keyframes": round(after_keyframes - start, 2),
            "seconds_interpolation": round(after_interp - after_keyframes, 2),
            "seconds_decode": round(end - after_interp, 2), "seconds_total": round(end - start, 2)}


def peak_memory_child(args: argparse.Namespace, num_frames: int) -> dict:
    """Sample one video in a fresh process and read its peak RSS."""
    command = [sys.executable, __file__, "--memory-child", str(num_frames), "--threads", str(args.threads),
               "--pred", str(args.pred), "--interp", str(args.interp), "--vae", str(args.vae)]
    result = subprocess.run(command, capture_output=True, text=True, check=True)
    peak_kib = json.loads(result.stdout.strip().splitlines()[-1])["peak_rss_kib"]  # the child's own ru_maxrss
    return {"frames": num_frames, "peak_rss_mib": round(peak_kib / 1024, 1)}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=1024)
    parser.add_argument("--steps", type=int, default=LONG_VIDEO_DDIM_STEPS)
    parser.add_argument("--pairs", type=int, default=16, help="pairs for the batched vs pair-at-a-time comparison")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--memory-frames", type=int, nargs="*", default=[256, 1024, 4096])
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--pred", type=Path, default=SHIPPED_DIR / "mmnist_pred.safetensors")
    parser.add_argument("--interp", type=Path, default=SHIPPED_DIR / "mmnist_interp.safetensors")
    parser.add_argument("--vae", type=Path, default=SHIPPED_DIR / "mmnist_vae.safetensors")
    parser.add_argument("--out", type=Path, default=None, help="also write the JSON here")
    parser.add_argument("--memory-child", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    for name in ("frames", "steps", "pairs", "rounds", "threads"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be >= 1, got {getattr(args, name)}")
    torch.set_num_threads(args.threads)
    pred, interp, models = load_models(args.pred, args.interp, args.vae)

    if args.memory_child is not None:  # the child of peak_memory_child
        time_long_video(pred, interp, args.memory_child, steps=2)
        result = {"peak_rss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}
        print(json.dumps(result))
        return result

    result = {"models": models, "threads": args.threads, "steps": args.steps, "guidance": LONG_VIDEO_GUIDANCE,
              "perturbation_level": SAMPLE_LEVEL, "device": "cpu", "torch": torch.__version__}
    result["long_video"] = time_long_video(pred, interp, args.frames, args.steps)
    print(f"{args.frames} frames: {result['long_video']['seconds_total']} s", file=sys.stderr)

    plan = LongVideoPlan(16 * (args.pairs + 1), pred.vae.config.temporal_downsample, 4, 4)
    keyframes = sample_keyframes(pred, plan, 1, seed=0, num_steps=2, progress=False)[:, :, :args.pairs + 1]
    result["interpolation"] = {"pairs": args.pairs, **interleaved({
        "batched": lambda: interpolate(interp, keyframes, 0, num_steps=args.steps, progress=False),
        "pair_at_a_time": lambda: interpolate(interp, keyframes, 0, num_steps=args.steps, batch_size=1, progress=False),
    }, rounds=args.rounds, steps_per_round=1, baseline="pair_at_a_time")}
    result["memory"] = [peak_memory_child(args, frames) for frames in args.memory_frames]
    text = json.dumps(result, indent=1)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
