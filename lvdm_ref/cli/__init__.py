"""`python -m lvdm_ref <command>` (also `lvdm <command>`): one module per command group, each declaring its
arguments next to its body, and `checks.py` beside them.

Every command shows progress on stderr and ends by printing one JSON object on the last line of stdout with
its results (strict JSON: no NaN or Infinity), so scripts and tests can read it.

A command is two steps. `resolve(args)` checks the whole command, from the arguments, the checkpoints'
headers and the inputs' file headers, in seconds, and returns what the command needs (for `train`, a
recipe's run: `recipes.resolve_hierarchy_run` and its siblings); `run(plan)` only works. `main` wraps
`resolve` in the usage-error handling: a `checks.UsageError`, or a ValueError or FileNotFoundError from a
library's resolve step, ends with `error: <one line>` and exit status 2, before any model loads. While
`run` works, only the loading of a file the user passed is wrapped (`checks.user_input`); any other
exception is a bug and keeps its traceback. No command writes over one of its inputs or over a finished
training run (a run folder goes on only with --resume).

Adding a command: a module with `register(commands)`, which adds its parser to the subparsers `commands`
with `set_defaults(resolve=..., run=...)` (`resolve` may be left out when argparse's checks are all it
needs), named in `COMMAND_MODULES`.
"""
from __future__ import annotations

import argparse
import sys

from lvdm_ref.cli import autoencoder, data, demo, export, fvd, sample, sample_long, train
from lvdm_ref.cli.checks import UsageError, user_input
from lvdm_ref.official import command as convert_official
from lvdm_ref.utils import is_quick, print_result

COMMAND_MODULES = (data, fvd, autoencoder, train, sample, sample_long, export, convert_official, demo)  # in the order of `--help`


class Parser(argparse.ArgumentParser):
    """argparse, with its errors in one line too (no usage block before them); every subcommand's parser is one."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="lvdm", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True, metavar="command")
    for module in COMMAND_MODULES:
        module.register(commands)
    return parser


def main(argv: list[str] | None = None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "quick", False) or is_quick():
        args.quick = True
    try:
        with user_input():  # every check: a library's ValueError here is about the arguments
            plan = args.resolve(args) if "resolve" in args else args
        result = args.run(plan)
    except UsageError as error:  # a bad argument or input file: one line; anything else keeps its traceback
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    print_result(result)  # strict JSON: a NaN or infinite number prints as null


if __name__ == "__main__":
    main()
