"""I3D feature extraction speed (the cost of every FVD): variants against the code before the speed-up.

    python benchmarks/i3d_speed.py [--threads 1] [--clips 16] [--rounds 3] [--batch 2] [--compile]

Prints one JSON object. Every variant turns the same uint8 Moving MNIST test clips (N, 16, 64, 64, 1)
into (N, 400) features, preprocessing included, as `lvdm_ref.metrics.i3d_features` does:

- `before, batch 8`: lvdm_ref/i3d.py as it was at the git revision `--before` (F.max_pool3d, explicit
  SAME padding before every conv) at the `fvd` command's batch then, 8: the baseline;
  `before, batch B`: the same code at `--batch`, to tell the batch size's share from the code's;
- `eager, batch B`: today's `load_i3d()` (weights in channels_last_3d on a CPU) at each of `--batch-sizes`;
- `eager NCDHW`: the same with the weights in torch's default (contiguous) layout, at `--batch`;
- with `--compile`, `compiled` (`torch.compile(model)`, inductor) and `compiled+freezing` (inductor's
  `freezing`: weights become constants, so batch norm folds into the convs), at `--batch`.

Each variant's features are compared with the baseline's (`max_relative_difference`: max |difference| /
max |baseline feature|). The variants run interleaved in one process (`lvdm_ref.profiling.interleaved`); the ratio
is baseline / variant time for the N clips, median over rounds; `first_call_seconds` of a compiled
variant includes the compilation.
"""
from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads its OpenMP runtime
import argparse  # noqa: E402
import json  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import types  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout without installing
from lvdm_ref.data import generate_moving_mnist  # noqa: E402
from lvdm_ref.i3d import load_i3d  # noqa: E402
from lvdm_ref.metrics import preprocess  # noqa: E402
from lvdm_ref.profiling import first_call, interleaved, machine  # noqa: E402

BEFORE = "b8cbaab~1"  # the last revision before the pools and paddings were made faster


def i3d_at_revision(revision: str) -> torch.nn.Module:
    """`load_i3d()` of lvdm_ref/i3d.py as committed at `revision` (same weights file)."""
    source = subprocess.run(["git", "-C", str(ROOT), "show", f"{revision}:lvdm_ref/i3d.py"], capture_output=True,
                            text=True, check=True).stdout
    module = types.ModuleType("i3d_before")
    exec(compile(source, f"{revision}:lvdm_ref/i3d.py", "exec"), module.__dict__)
    return module.load_i3d()


@torch.no_grad()
def features(model, clips: np.ndarray, batch_size: int) -> np.ndarray:
    """uint8 (N, F, H, W, C) -> (N, 400) float64, as lvdm_ref.metrics.i3d_features (without its checks)."""
    out = []
    for begin in range(0, len(clips), batch_size):
        x = preprocess(clips[begin:begin + batch_size])  # (b, 3, 16, 224, 224)
        out.append(model(x).double().numpy())  # (b, 400)
    return np.concatenate(out)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--clips", type=int, default=16, help="clips per timed call")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds")
    parser.add_argument("--batch-sizes", type=int, nargs="*", default=[1, 2, 4, 8, 16], help="eager batch sweep")
    parser.add_argument("--batch", type=int, default=2, help="batch of the layout and compile variants")
    parser.add_argument("--before", default=BEFORE, help="git revision of the baseline lvdm_ref/i3d.py")
    parser.add_argument("--compile", action="store_true", help="also torch.compile (minutes)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    clips = generate_moving_mnist(args.clips, num_frames=16, size=64, num_digits=2, split="test", seed=0)

    model, before, batch = load_i3d(), i3d_at_revision(args.before), args.batch
    baseline = "before, batch 8"
    variants = {baseline: lambda: features(before, clips, 8),
                f"before, batch {batch}": lambda: features(before, clips, batch)}
    for size in args.batch_sizes:
        variants[f"eager, batch {size}"] = lambda size=size: features(model, clips, size)
    contiguous = load_i3d().to(memory_format=torch.contiguous_format)
    variants[f"eager NCDHW, batch {batch}"] = lambda: features(contiguous, clips, batch)
    if args.compile:
        compiled = torch.compile(load_i3d())
        frozen = torch.compile(load_i3d(), options={"freezing": True})
        variants[f"compiled, batch {batch}"] = lambda: features(compiled, clips, batch)
        variants[f"compiled+freezing, batch {batch}"] = lambda: features(frozen, clips, batch)

    outputs, first = {}, {}
    for name, run in variants.items():
        first[name] = round(first_call(lambda: outputs.__setitem__(name, run())), 2)
        print(f"{name}: first call {first[name]} s", file=sys.stderr)
    result = interleaved(variants, args.rounds, steps_per_round=1, baseline=baseline)
    reference = outputs[baseline]
    for name, row in result["variants"].items():
        row["clips_per_second"] = round(args.clips / row["seconds_per_step_median"], 3)
        row["first_call_seconds"] = first[name]
        row["max_relative_difference"] = float(np.abs(outputs[name] - reference).max() / np.abs(reference).max())
    result = {**machine(), "clips": [args.clips, 16, 64, 64, 1], "before": args.before,
              "timed_call": f"features of {args.clips} clips, preprocessing included", **result}
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
