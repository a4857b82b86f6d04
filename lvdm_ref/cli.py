"""`python -m lvdm_ref <command>` (also `lvdm <command>`).

Every command shows progress on stderr and ends by printing one JSON object on the last line
of stdout with its results, so scripts and tests can read it (DESIGN.md, command line).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from lvdm_ref.config import PRESET_NAMES
from lvdm_ref.utils import is_quick, print_result


# ----------------------------------------------------------------------------- data
def cmd_data(args: argparse.Namespace) -> dict:
    from lvdm_ref.data import generate_moving_mnist

    start = time.perf_counter()
    videos = generate_moving_mnist(args.num, num_frames=args.frames, size=args.size,
                                   num_digits=args.digits, split=args.split, seed=args.seed,
                                   progress=True)  # uint8 (N, T, S, S, 1)
    seconds = time.perf_counter() - start
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(out, videos=videos)
    return {"out": str(out), "shape": list(videos.shape), "dtype": str(videos.dtype),
            "seconds": round(seconds, 3), "clips_per_second": round(args.num / max(seconds, 1e-9), 1)}


# ----------------------------------------------------------------------------- parser
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lvdm", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True, metavar="command")

    data = commands.add_parser("data", help="make or fetch data sets")
    data_kinds = data.add_subparsers(dest="kind", required=True, metavar="kind")
    mm = data_kinds.add_parser("moving-mnist", help="write Moving MNIST clips to an .npz (`videos`: uint8 (N, T, S, S, 1))")
    mm.add_argument("--num", type=int, default=256, help="number of clips")
    mm.add_argument("--frames", type=int, default=16, help="frames per clip")
    mm.add_argument("--size", type=int, default=64, help="frame height and width")
    mm.add_argument("--digits", type=int, default=2, help="digits per clip (1-3)")
    mm.add_argument("--split", choices=("train", "test"), default="train", help="digit set (disjoint)")
    mm.add_argument("--seed", type=int, default=0)
    mm.add_argument("--out", required=True, help="output .npz")
    mm.set_defaults(handler=cmd_data)
    return parser


def main(argv: list[str] | None = None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "quick", False) or is_quick():
        args.quick = True
    try:
        result = args.handler(args)
    except (ValueError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    print_result(result)


if __name__ == "__main__":
    main()
