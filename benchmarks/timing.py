"""Ratios on a shared machine: run the variants interleaved in one process and compare medians.

Absolute step times drift by tens of percent on a shared CPU as other jobs come and go, so a
speed-up is only believable as a ratio measured at the same moment: each round runs every variant
for a few steps (the order reversed every other round, so no variant always goes first), and the
ratio is taken per round, then the median over rounds. Imported by the other benchmark scripts.
"""
from __future__ import annotations

import getpass
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Callable


def _inductor_cache() -> dict:
    """Where inductor keeps compiled kernels across processes, and whether it held any when we started:
    a warm cache makes the first compiled step much cheaper than a cold one."""
    default = Path(tempfile.gettempdir()) / f"torchinductor_{getpass.getuser()}"
    folder = Path(os.environ.get("TORCHINDUCTOR_CACHE_DIR", default))
    return {"dir": str(folder), "warm_at_start": folder.is_dir() and any(folder.iterdir())}


INDUCTOR_CACHE = _inductor_cache()  # taken at import, before anything compiles


def first_call(step: Callable[[], object]) -> float:
    """Seconds of the first call: for a compiled model, the compilation plus one step."""
    start = time.perf_counter()
    step()
    return time.perf_counter() - start


def interleaved(variants: dict[str, Callable[[], object]], rounds: int, steps_per_round: int,
                baseline: str | None = None) -> dict:
    """Time each variant's step, interleaved; ratios are baseline / variant step time (> 1: faster).

    Returns {"rounds", "steps_per_round", "baseline", "variants": {name: {"seconds_per_step_median",
    "seconds_per_step_best", "speedup_median_of_rounds", "speedup_per_round"}}}.
    """
    names = list(variants)
    baseline = baseline or names[0]
    per_round: dict[str, list[float]] = {name: [] for name in names}  # median step time in each round
    all_steps: dict[str, list[float]] = {name: [] for name in names}
    for index in range(rounds):
        for name in (names if index % 2 == 0 else names[::-1]):
            times = []
            for _ in range(steps_per_round):
                start = time.perf_counter()
                variants[name]()
                times.append(time.perf_counter() - start)
            per_round[name].append(statistics.median(times))
            all_steps[name].extend(times)
    result = {"rounds": rounds, "steps_per_round": steps_per_round, "baseline": baseline, "variants": {}}
    for name in names:
        ratios = [b / v for b, v in zip(per_round[baseline], per_round[name])]
        result["variants"][name] = {
            "seconds_per_step_median": round(statistics.median(all_steps[name]), 4),
            "seconds_per_step_best": round(min(all_steps[name]), 4),
            "speedup_median_of_rounds": round(statistics.median(ratios), 3),
            "speedup_per_round": [round(r, 3) for r in ratios]}
    return result


def machine() -> dict:
    """What the numbers were measured on, and how busy it was."""
    import torch

    return {"device": "cpu", "torch": torch.__version__, "threads": torch.get_num_threads(),
            "cpu_count": os.cpu_count(), "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
            "load_average_1min": round(os.getloadavg()[0], 2), "inductor_cache": INDUCTOR_CACHE}


def optimizer_step(loss_fn: Callable[[], "torch.Tensor"], parameters, grad_clip: float) -> Callable[[], float]:
    """A closure for one trainer-like step: `loss_fn()`, backward, gradient clipping and AdamW on
    `parameters` (no EMA, no logging); it returns the loss."""
    import torch

    parameters = list(parameters)
    optimizer = torch.optim.AdamW(parameters, lr=1e-4)

    def step() -> float:
        loss = loss_fn()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(parameters, grad_clip)
        optimizer.step()
        return float(loss.detach())

    return step
