"""Autoencoder training speed: torch.compile and the memory format, against eager, in one run.

    python benchmarks/vae_speed.py [--preset mmnist] [--threads 1] [--rounds 7] [--steps-per-round 2]

Prints one JSON object. Each variant takes full training steps as `train-vae` does
(`AutoencoderWithLoss(batch, step)` -> loss, backward, gradient clipping, AdamW) on the preset's
batch of fresh Moving MNIST clips (mmnist: 4 clips of (1, 16, 64, 64)):

- `eager+channels_last_3d`: today's `train-vae` (model and batch in channels_last_3d), the baseline;
- `eager`: contiguous (NCDHW) model and batch;
- `compiled+...`: the same with `torch.compile(model)` (inductor). The module is compiled, not the
  step: its forward returns a dict of python floats, which dynamo cannot trace into a graph.

The variants run interleaved in one process (`lvdm_ref.profiling.interleaved`); each ratio is baseline /
variant step time, median over rounds. `first_step_seconds` of a compiled variant includes the
compilation. Set OMP_WAIT_POLICY=PASSIVE on a shared machine (this script does, unless set).
"""
from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads its OpenMP runtime
import argparse  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing
from lvdm_ref.config import get_preset  # noqa: E402
from lvdm_ref.data import FreshMovingMNIST  # noqa: E402
from lvdm_ref.profiling import first_call, interleaved, machine, optimizer_step  # noqa: E402
from lvdm_ref.vae3d import AutoencoderWithLoss  # noqa: E402


def optimizer_step_fn(model: AutoencoderWithLoss, forward, batch: torch.Tensor, grad_clip: float):
    """One trainer step through `forward` (the module or its compiled wrapper); returns the loss."""
    return optimizer_step(lambda: forward(batch, 0)[0], model.parameters(), grad_clip)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="mmnist")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--rounds", type=int, default=7, help="interleaved rounds")
    parser.add_argument("--steps-per-round", type=int, default=2, help="steps of each variant per round")
    parser.add_argument("--no-compile", action="store_true", help="only eager: the memory formats")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    preset = get_preset(args.preset)
    data, train = preset.data, preset.vae_train
    clips = FreshMovingMNIST(train.batch_size, data.num_frames, data.size, data.num_digits, seed=data.seed)(0)
    # (B, 1, F, H, W) in [-1, 1]

    steps, first = {}, {}
    for compiled in ((False,) if args.no_compile else (False, True)):
        for channels_last in (True, False):
            name = ("compiled" if compiled else "eager") + ("+channels_last_3d" if channels_last else "")
            torch.manual_seed(0)
            model = AutoencoderWithLoss(preset.vae)
            batch = clips.clone()
            if channels_last:
                model = model.to(memory_format=torch.channels_last_3d)
                batch = batch.to(memory_format=torch.channels_last_3d)
            forward = torch.compile(model) if compiled else model
            steps[name] = optimizer_step_fn(model, forward, batch, train.grad_clip)
            loss = []
            first[name] = {"first_step_seconds": round(first_call(lambda: loss.append(steps[name]())), 2),
                           "first_loss": loss[0]}
            print(f"{name}: first step {first[name]['first_step_seconds']} s", file=sys.stderr)

    result = interleaved(steps, args.rounds, args.steps_per_round, baseline="eager+channels_last_3d")
    for name, row in result["variants"].items():
        row.update(first[name])
        row["compile_seconds"] = round(row["first_step_seconds"] - result["variants"]["eager+channels_last_3d"]
                                       ["seconds_per_step_median"], 1) if name.startswith("compiled") else 0.0
    result = {**machine(), "preset": args.preset, "batch_shape": list(clips.shape),
              "parameters_millions": round(sum(p.numel() for p in model.parameters()) / 1e6, 3),
              "step": "AutoencoderWithLoss + backward + grad clip + AdamW", **result}
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
