"""`export`: keep only the weights sampling needs (EMA) of a diffusion checkpoint (`checkpoint.export_for_sampling`)."""
from __future__ import annotations

import argparse

from lvdm_ref.checkpoint import export_for_sampling
from lvdm_ref.cli.checks import check_not_overwriting, header, input_file, output_file, user_input


def register(commands) -> None:
    export = commands.add_parser("export", help="keep only the weights sampling needs (EMA) of a diffusion checkpoint")
    export.add_argument("--ckpt", type=input_file(".safetensors"), required=True)
    export.add_argument("--out", type=output_file(".safetensors"), required=True)
    export.add_argument("--fp16", action="store_true", help="store the weights as float16 (half the bytes; loaded "
                        "back as float32)")
    export.set_defaults(resolve=resolve_export, run=run_export)


def resolve_export(args: argparse.Namespace) -> argparse.Namespace:
    check_not_overwriting({"--out": args.out}, {"--ckpt": args.ckpt})
    header(args.ckpt)  # a file that is not a checkpoint
    return args


def run_export(args: argparse.Namespace) -> dict:
    with user_input():  # not a diffusion checkpoint
        return export_for_sampling(args.ckpt, args.out, fp16=args.fp16)
