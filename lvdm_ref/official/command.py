"""`convert-official`: a released official short model (Lightning `.ckpt`) -> one project checkpoint (`convert.py`).

    python -m lvdm_ref convert-official short_sky.ckpt --dataset sky --weights raw --out sky.safetensors

The result is an ordinary short-model checkpoint: `sample --ckpt sky.safetensors` draws videos from it and
`fvd` scores them (docs/OFFICIAL_WEIGHTS.md). Reading and checking the file (a memory-mapped pickle, never
unpickled beyond Lightning's known classes) is the resolve step; bad input ends there with one line, exit 2.
"""
from __future__ import annotations

import argparse

from lvdm_ref.cli.checks import check_not_overwriting, input_file, output_file, user_input
from lvdm_ref.official.convert import DATASETS, WEIGHTS, read_official, write_official


def register(commands) -> None:
    convert = commands.add_parser(
        "convert-official", help="convert a released official LVDM short model (short_sky.ckpt, short_taichi.ckpt)",
        description="Convert a released official LVDM short model (a Lightning .ckpt) into one project checkpoint "
        "(UNet with the official semantics and the official autoencoder inside) that `sample` uses as it is.")
    convert.add_argument("ckpt", type=input_file(), help="short_sky.ckpt or short_taichi.ckpt (about 4.5 GB)")
    convert.add_argument("--dataset", choices=tuple(DATASETS), required=True,
                         help="which model it is: sets the latent scale and shift, which the file does not hold "
                         "(a wrong one gives garbage videos silently)")
    convert.add_argument("--weights", choices=WEIGHTS, default="raw",
                         help="the raw UNet weights (what the official sampling script uses) or the EMA copy")
    convert.add_argument("--out", type=output_file(".safetensors"), required=True)
    convert.set_defaults(resolve=resolve_convert, run=run_convert)


def resolve_convert(args: argparse.Namespace) -> dict:
    check_not_overwriting({"--out": args.out}, {"CKPT": args.ckpt})
    with user_input():  # not a checkpoint, truncated, a foreign pickled class, the text-to-video model, ...
        return {"official": read_official(args.ckpt, args.dataset, args.weights), "out": args.out}


def run_convert(plan: dict) -> dict:
    return write_official(plan["official"], plan["out"])
