"""`sample`: short videos from a short model (`lvdm.py`) or, with a caption, a text-to-video model
(`text_to_video.py`). Also `write_videos`, how every command writes clips."""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from lvdm_ref.captions import caption_text, parse_caption
from lvdm_ref.checkpoint import INTERP_KIND, PRED_KIND, SHORT_KIND, T2V_KIND
from lvdm_ref.cli.checks import UsageError, caption, check_autoencoder, check_sampler_steps, device, header, \
    input_file, integer, number, output_file, renamed, user_input
from lvdm_ref.lvdm import LatentVideoDiffusion
from lvdm_ref.text_to_video import DEFAULT_GUIDANCE, TextToVideo
from lvdm_ref.utils import file_sha256, get_device
from lvdm_ref.viz import SAVE_EXTENSIONS, save_video

OUT_HELP = ".npz (uint8 (N, F, H, W, C)), .gif, .mp4 or .avi (a grid), .png (a strip)"


def register(commands) -> None:
    sample = commands.add_parser("sample", help="sample short videos from a trained model")
    sample.add_argument("--ckpt", type=input_file(".safetensors"), required=True,
                        help="short or text-to-video model checkpoint (.safetensors)")
    sample.add_argument("--vae", type=input_file(".safetensors"), default=None,
                        help="autoencoder (default: the one recorded in --ckpt; another must be the same file)")
    sample.add_argument("--num", type=integer(1), default=8)
    sample.add_argument("--sampler", choices=("ddpm", "ddim"), default="ddpm")
    sample.add_argument("--steps", type=integer(1), default=None, help="DDIM steps (DDPM always takes all)")
    sample.add_argument("--eta", type=number(0.0, 1.0), default=None, help="DDIM eta in [0, 1] (default: the "
                        "model's, 1.0)")
    sample.add_argument("--seed", type=integer(0), default=0)
    sample.add_argument("--caption", type=caption, default=None,
                        help="text-to-video checkpoints: the digits of every clip, 1 to 3 of them, e.g. \"3 and 7\"")
    sample.add_argument("--guidance-scale", type=number(0.0, 100.0), default=None,
                        help=f"text-to-video: classifier-free guidance scale g, as in diffusers (0: unconditional, "
                             f"1: conditional; default {DEFAULT_GUIDANCE})")
    sample.add_argument("--cfg", type=renamed("--guidance-scale", "g as in diffusers: 1 is conditional"),
                        help=argparse.SUPPRESS)
    sample.add_argument("--out", type=output_file(*SAVE_EXTENSIONS), required=True, help=OUT_HELP)
    sample.add_argument("--device", type=device, default="auto")
    sample.set_defaults(resolve=resolve_sample, run=run_sample)


def resolve_sample(args: argparse.Namespace) -> argparse.Namespace:
    meta = header(args.ckpt)
    kind = meta.get("kind")
    if kind not in (SHORT_KIND, T2V_KIND):
        raise UsageError(f"--ckpt {args.ckpt} holds a {kind!r} checkpoint; `sample` takes a short model "
                         f"({SHORT_KIND!r}, `train`) or a text-to-video model ({T2V_KIND!r}, `train --model t2v`)"
                         + ("; long videos: `sample-long`" if kind in (PRED_KIND, INTERP_KIND) else ""))
    check_sampler_steps(args.ckpt, args.sampler, args.steps)
    if args.eta is not None and args.sampler != "ddim":
        raise UsageError("--eta is for --sampler ddim (DDPM has no eta)")
    if kind == T2V_KIND and args.caption is None:
        raise UsageError(f"--ckpt {args.ckpt} is a text-to-video model: pass --caption, e.g. --caption \"3 and 7\"")
    if kind != T2V_KIND and (args.caption is not None or args.guidance_scale is not None):
        raise UsageError(f"--caption and --guidance-scale need a text-to-video checkpoint ({T2V_KIND!r}, written by "
                         f"`train --model t2v`); --ckpt {args.ckpt} holds a {kind!r} one")
    if args.vae:
        check_autoencoder(args.vae, "--vae")
        recorded = meta.get("vae", {}).get("sha256")
        if recorded is not None and recorded != file_sha256(args.vae):
            raise UsageError(f"--vae {args.vae} is not the autoencoder {args.ckpt} was trained with (sha256 differs); "
                             f"pass that one ({meta['vae'].get('path')}), or leave out --vae")
    args.kind = kind
    return args


def run_sample(args: argparse.Namespace) -> dict:
    t2v = args.kind == T2V_KIND
    with user_input():  # a broken file past its header, the recorded autoencoder not found
        model = (TextToVideo if t2v else LatentVideoDiffusion).load(args.ckpt, vae=args.vae,
                                                                   device=get_device(args.device))
    start = time.perf_counter()
    result = {}
    if t2v:
        digits = parse_caption(args.caption)
        scale = DEFAULT_GUIDANCE if args.guidance_scale is None else args.guidance_scale
        videos = model.sample([digits] * args.num, guidance_scale=scale, sampler=args.sampler, num_steps=args.steps,
                              eta=args.eta, seed=args.seed, progress=True)  # uint8 (N, F, H, W, C)
        result = {"caption": caption_text(digits), "guidance_scale": scale}
    else:
        videos = model.sample(args.num, sampler=args.sampler, num_steps=args.steps, eta=args.eta, seed=args.seed,
                              progress=True)  # uint8 (N, F, H, W, C)
    seconds = time.perf_counter() - start
    out = write_videos(args.out, videos)
    return {"out": str(out), "shape": list(videos.shape), **result, "sampler": args.sampler, "steps": args.steps,
            "seconds": round(seconds, 2), "samples_per_second": round(args.num / seconds, 4)}


def write_videos(out: Path, videos: np.ndarray, fps: float = 8) -> Path:
    """uint8 (N, F, H, W, C) -> .npz (`videos`), or one grid video (.gif, .mp4, .avi), or a .png strip."""
    return save_video(out, videos, fps=fps, nrow=min(8, len(videos)))
