"""`sample-long`: long videos with the hierarchy, prediction then interpolation (`long_video.py`, LVDM Sec. 3.3)."""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

from lvdm_ref.checkpoint import INTERP_KIND, PRED_KIND, read_metadata
from lvdm_ref.cli.checks import check_hierarchy_pair, check_not_overwriting, device, input_file, integer, number, \
    output_file, renamed, start_source, user_input
from lvdm_ref.cli.sample import OUT_HELP, write_videos
from lvdm_ref.config import HierarchyConfig, VAEConfig, from_dict
from lvdm_ref.data import generate_moving_mnist
from lvdm_ref.diffusion import LONG_VIDEO_DDIM_STEPS
from lvdm_ref.guidance import LONG_VIDEO_GUIDANCE
from lvdm_ref.long_video import LongVideoPlan, sample_long
from lvdm_ref.lvdm import LatentVideoDiffusion, find_autoencoder
from lvdm_ref.metrics import check_clips, load_clips
from lvdm_ref.perturbation import SAMPLE_LEVEL, default_level
from lvdm_ref.utils import get_device
from lvdm_ref.vae3d import encode_videos
from lvdm_ref.video_io import read_video
from lvdm_ref.viz import SAVE_EXTENSIONS, plot_long_video


def register(commands) -> None:
    long = commands.add_parser("sample-long", help="long videos with the hierarchy (prediction + interpolation)")
    long.add_argument("--pred", type=input_file(".safetensors"), required=True, help="prediction model checkpoint")
    long.add_argument("--interp", type=input_file(".safetensors"), default=None,
                      help="interpolation model checkpoint (not for a prediction model with keyframes 1 latent apart)")
    long.add_argument("--frames", type=integer(1, 100_000), default=1024, help="frames per video (exactly)")
    long.add_argument("--num", type=integer(1), default=1, help="number of videos")
    long.add_argument("--steps", type=integer(1), default=LONG_VIDEO_DDIM_STEPS,
                      help=f"DDIM steps per sample (LVDM: {LONG_VIDEO_DDIM_STEPS})")
    long.add_argument("--perturbation-level", type=integer(0), default=None,
                      help=f"s of the given keyframe (default: {SAMPLE_LEVEL} of 1000 timesteps; 0 for a model "
                      f"trained without)")
    long.add_argument("--guidance-weight", type=number(0.0, 100.0), default=LONG_VIDEO_GUIDANCE,
                      help=f"unconditional guidance weight w, LVDM's (0: the conditional model; LVDM: "
                           f"{LONG_VIDEO_GUIDANCE}; diffusers' scale g is w + 1)")
    long.add_argument("--guidance", type=renamed("--guidance-weight", "LVDM's w: 0 is conditional"),
                      help=argparse.SUPPRESS)
    long.add_argument("--start", type=start_source, default="generated",
                      help="generated: an unconditional first clip (LVDM); real: the first latent of real Moving "
                      "MNIST test clips, whose true frames are also written next to --out as <out>_real.<ext> "
                      "(`real` in the result); or a clip file (.npz with `videos`, .mp4, .gif, ...) whose first "
                      "frames are encoded and continued (one clip starts all --num videos), at the autoencoder's "
                      "frame size and channels"),
    long.add_argument("--batch-size", type=integer(1), default=64, help="interpolation samples per batch")
    long.add_argument("--seed", type=integer(0), default=0)
    long.add_argument("--out", type=output_file(*SAVE_EXTENSIONS), required=True, help=OUT_HELP)
    long.add_argument("--figure", type=output_file(".png", ".svg", ".pdf"), default=None,
                      help="also draw the first video's frames, keyframes outlined")
    long.add_argument("--device", type=device, default="auto")
    long.set_defaults(resolve=resolve_sample_long, run=run_sample_long)


def real_twin(out: Path) -> Path:
    """Where `--start real` writes the true frames: <out>_real.<ext>."""
    return out.with_name(f"{out.stem}_real{out.suffix}")


def resolve_sample_long(args: argparse.Namespace):
    outputs = {"--out": args.out, "--figure": args.figure,
               "--out's <out>_real file": real_twin(args.out) if args.start == "real" else None}
    check_not_overwriting(outputs, {"--pred": args.pred, "--interp": args.interp, "--start": args.start})
    headers = check_hierarchy_pair(args.pred, args.interp, args.steps, args.perturbation_level)
    vae_path = find_autoencoder(args.pred, headers["--pred"]["vae"])  # the one it was trained on
    vae = from_dict(VAEConfig, read_metadata(vae_path)["vae"])
    config = from_dict(HierarchyConfig, headers["--pred"]["hierarchy"])
    plan = LongVideoPlan(args.frames, vae.temporal_downsample, config.keyframe_stride, config.num_latents,
                         config.num_latents - config.max_given)  # `long_video.long_video_plan` from the headers
    first = None
    if isinstance(args.start, Path):  # a clip file: its first frames, checked against the autoencoder now
        size = headers["--pred"]["latent_shape"][-1] * vae.spatial_downsample
        first = start_clips(args.start, args.num, vae, size)  # uint8 (N, temporal_downsample, H, W, C)
    return args, plan, first


def run_sample_long(resolved) -> dict:
    args, plan, first = resolved
    device = get_device(args.device)
    with user_input():  # a broken file past its header, the recorded autoencoder not found
        pred = LatentVideoDiffusion.load(args.pred, device=device, kind=PRED_KIND)
        interp = None if args.interp is None else LatentVideoDiffusion.load(args.interp, vae=pred.vae, device=device,
                                                                            kind=INTERP_KIND)
    level = args.perturbation_level
    if level is None:
        level = default_level(pred.hierarchy.max_perturbation_level)  # SAMPLE_LEVEL for s_max = TRAIN_MAX_LEVEL
    result: dict = {"frames": args.frames, "num": args.num, "keyframes": plan.num_keyframes,
                    "prediction_samples": plan.prediction_samples(args.start == "real"), "pairs": plan.num_pairs,
                    "steps": args.steps, "perturbation_level": level, "guidance_weight": args.guidance_weight,
                    "start": str(args.start)}
    start_latents = None
    if args.start == "real":  # continue real test clips (Moving MNIST: the true continuation is known)
        data = pred.vae.metadata.get("data", {})
        real = generate_moving_mnist(args.num, args.frames, data.get("size", 64), data.get("num_digits", 2), "test",
                                     seed=args.seed, per_clip=True)  # uint8 (N, F, H, W, C); clip i whatever --num
        first = real[:, :pred.vae.config.temporal_downsample]
        truth = real_twin(args.out)
        result["real"] = str(write_videos(truth, real))
        print(f"the real clips' true frames (what the continuations start from): {truth}", file=sys.stderr)
    if first is not None:  # real clips, or a clip file: their first frames are encoded and continued
        start_latents = encode_videos(pred.vae, first, progress=False).to(device)  # (N, c, 1, h, w)
    began = time.perf_counter()
    with torch.no_grad():
        videos = sample_long(pred, interp, args.frames, args.num, seed=args.seed, start=start_latents,
                             num_steps=args.steps, perturbation_level=level,
                             guidance_weight=args.guidance_weight, batch_size=args.batch_size)  # uint8 (N, F, H, W, C)
    result["seconds"] = round(time.perf_counter() - began, 2)
    result["out"] = str(write_videos(args.out, videos))
    if args.figure:
        figure = plot_long_video(videos[0], plan.frame_is_keyframe(), every=max(1, args.frames // 64))
        figure.savefig(args.figure, dpi=120, bbox_inches="tight")
        result["figure"] = str(args.figure)
    result["shape"] = list(videos.shape)
    return result


def start_clips(path: Path, num: int, vae: VAEConfig, size: int) -> np.ndarray:
    """The frames of `path` (.npz `videos`, or a video file) that the autoencoder `vae`'s first latent encodes,
    for `num` videos: uint8 (num, temporal_downsample, size, size, C). A file of one clip starts every video;
    one of several gives its first `num`. Frame size and channels must be the autoencoder's: the error says
    what they must be."""
    first, channels = vae.temporal_downsample, vae.in_channels
    if path.suffix.lower() == ".npz":
        clips = load_clips(path)  # (M, F, H, W, C), or one clip (F, H, W, C)
        clips = clips[None] if clips.ndim == 4 else clips
    else:
        try:
            clips = read_video(path, 0, first)[None]  # (1, F, H, W, 3): video files hold RGB
        except Exception as error:  # PyAV raises many error types for a broken file; all mean "unreadable"
            raise ValueError(f"--start {path} cannot be read as a video ({type(error).__name__}: {error}); "
                             f"re-encode it, or pass the clip as an .npz") from None
        if channels == 1 and np.abs(clips.astype(np.int16) - clips[..., :1]).max() <= 8:  # gray stored as RGB
            clips = read_video(path, 0, first, channels=1)[None]  # (1, F, H, W, 1)
    if clips.ndim != 5:
        raise ValueError(f"--start {path}: expected clips (N, F, H, W, C), got shape {clips.shape}")
    if clips.shape[1] < first:
        raise ValueError(f"--start {path} has {clips.shape[1]} frames per clip; the autoencoder's first latent "
                         f"encodes {first}: give at least {first}")
    if clips.shape[2:] != (size, size, channels):
        kind = "gray (C = 1)" if channels == 1 else "RGB (C = 3)"
        raise ValueError(f"--start {path} holds {clips.shape[2]}x{clips.shape[3]} frames with {clips.shape[4]} "
                         f"channel(s); the models' autoencoder takes {size}x{size} {kind} frames: resize or crop "
                         f"the clip to that (e.g. `data moving-mnist --size {size}` for Moving MNIST)")
    if len(clips) == 1:
        clips = np.repeat(clips, num, axis=0)  # one clip, continued `num` ways
    elif len(clips) < num:
        raise ValueError(f"--start {path} holds {len(clips)} clips, fewer than --num {num}; pass one clip (continued "
                         f"--num ways) or at least {num}")
    return check_clips(clips[:num, :first], f"--start {path}", num_frames=None)
