"""`demo`: the embedded default: shipped weights, no download, a few minutes on a CPU."""
from __future__ import annotations

import argparse
import sys
import time

import numpy as np
import torch
from PIL import Image

from lvdm_ref.checkpoint import SHIPPED_DIR
from lvdm_ref.cli.checks import check_sampler_steps, integer, output_folder
from lvdm_ref.cli.sample import write_videos
from lvdm_ref.data import generate_moving_mnist
from lvdm_ref.lvdm import LatentVideoDiffusion
from lvdm_ref.utils import from_uint8, to_uint8
from lvdm_ref.vae3d import VideoAutoencoder
from lvdm_ref.viz import as_video, frame_strip, save_video

VAE_PATH, SHORT_PATH = SHIPPED_DIR / "mmnist_vae.safetensors", SHIPPED_DIR / "mmnist_short.safetensors"


def register(commands) -> None:
    demo = commands.add_parser("demo", help="the embedded default: shipped weights, no download")
    demo.add_argument("--num", type=integer(1), default=8, help="clips of each kind")
    demo.add_argument("--steps", type=integer(1), default=50, help="DDIM steps for generated clips")
    demo.add_argument("--seed", type=integer(0), default=0)
    demo.add_argument("--out", type=output_folder, default="outputs/demo", help="folder for the videos and stills")
    demo.set_defaults(resolve=resolve_demo, run=run_demo)


def resolve_demo(args: argparse.Namespace) -> argparse.Namespace:
    if SHORT_PATH.exists():
        check_sampler_steps(SHORT_PATH, "ddim", args.steps)
    return args


def run_demo(args: argparse.Namespace) -> dict:
    """The embedded default: shipped weights, no download. Real test clips (top row), what the
    shipped autoencoder makes of them (middle) and clips the shipped short model generates (bottom),
    as one grid video and a still strip, plus each set on its own."""
    out, vae_path, short_path = args.out, VAE_PATH, SHORT_PATH
    start = time.perf_counter()
    rows = {"real": generate_moving_mnist(args.num, 16, 64, 2, "test", seed=args.seed)}  # uint8 (N, 16, 64, 64, 1)
    if vae_path.exists():
        vae = VideoAutoencoder.load(vae_path)
        with torch.no_grad():
            rows["reconstructed"] = to_uint8(vae.reconstruct(from_uint8(rows["real"])))
    if short_path.exists():
        model = LatentVideoDiffusion.load(short_path)  # with the autoencoder it was trained on
        rows["generated"] = model.sample(args.num, sampler="ddim", num_steps=args.steps, seed=args.seed,
                                         progress=True)
    result: dict = {name: [str(write_videos(out / f"{name}{ext}", videos)) for ext in (".gif", ".mp4")]
                    for name, videos in rows.items()}
    everything = np.concatenate(list(rows.values()))  # one row of `num` clips per kind
    result["comparison"] = [str(save_video(out / f"comparison{ext}", everything, nrow=args.num))
                            for ext in (".gif", ".mp4")]
    strip = frame_strip(as_video(everything, nrow=args.num), every=3)  # frames 0, 3, ..., 15 side by side
    Image.fromarray(strip[..., 0]).save(out / "comparison.png")
    result["comparison"].append(str(out / "comparison.png"))
    result["rows"] = list(rows)
    missing = [p.name for p in (vae_path, short_path) if not p.exists()]
    if missing:
        result["not_shipped"] = missing
    result["seconds"] = round(time.perf_counter() - start, 2)
    print(f"demo videos written to {out}/ (comparison.gif: rows {', '.join(rows)})", file=sys.stderr)
    return result
