"""What the UNet costs: FLOPs counted by torch, and measured time of one attention block.

The notebooks that compare attention kinds (04, 06) and spaces (07) and `benchmarks/unet_speed.py`
count FLOPs with torch's own `FlopCounterMode` (convolutions, matmuls and attention; element-wise
ops are not counted), taught here to count the fused CPU attention kernel too. LVDM's argument for
factorised attention (Sec. 3.2) is a cost argument: `attention_cost` measures it.

Timing on a shared machine (`interleaved`, used by the speed scripts in `benchmarks/`): absolute step times
drift by tens of percent on a shared CPU as other jobs come and go, so a speed-up is only believable as a
ratio measured at the same moment. Each round runs every variant for a few steps (the order reversed every
other round, so no variant always goes first), and the ratio is taken per round, then the median over rounds.
"""
from __future__ import annotations

import getpass
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Callable

import torch
from torch.utils import flop_counter as fc

from lvdm_ref.config import UNetConfig
from lvdm_ref.unet import UNet, attention_block


def flop_counter() -> fc.FlopCounterMode:
    """`FlopCounterMode` that also counts the fused CPU attention kernel.

    torch's FLOP table knows the CUDA attention kernels but not `_scaled_dot_product_flash_attention_for_cpu`,
    so on a CPU every attention would silently count as zero FLOPs.
    """

    def forward(query, key, value, *args, out_shape=None, **kwargs):  # tensors arrive as their shapes
        return fc.sdpa_flop_count(query, key, value)

    def backward(grad_out, query, key, value, *args, out_shape=None, **kwargs):
        return fc.sdpa_backward_flop_count(grad_out, query, key, value)

    aten, mapping = torch.ops.aten, {}
    for name, formula in (("_scaled_dot_product_flash_attention_for_cpu", forward),
                          ("_scaled_dot_product_flash_attention_for_cpu_backward", backward)):
        if hasattr(aten, name):
            mapping[getattr(aten, name)] = formula
    return fc.FlopCounterMode(display=False, custom_mapping=mapping)


def attention_cost(kind: str, num_frames: int, channels: int = 128, size: int = 8, num_heads: int = 4) -> float:
    """GFLOP of a forward and backward pass of one attention block of `kind` on one clip of `num_frames`
    latent frames of size x size with `channels` channels, counted by `flop_counter`."""
    config = UNetConfig(num_heads=num_heads, attention=kind)
    block = attention_block(kind, channels, config)
    x = torch.randn(num_frames, channels, size, size, requires_grad=True)  # (b f, C, h, w), b = 1
    with flop_counter() as counter:
        block(x, num_frames).sum().backward()
    return counter.get_total_flops() / 1e9


def attention_seconds(kind: str, num_frames: int, channels: int = 128, size: int = 8, num_heads: int = 4,
                      repeat: int = 3) -> float:
    """Median process-CPU seconds of the forward and backward pass `attention_cost` counts (after one warm-up)."""
    block = attention_block(kind, channels, UNetConfig(num_heads=num_heads, attention=kind))
    x = torch.randn(num_frames, channels, size, size, requires_grad=True)  # (b f, C, h, w), b = 1
    times = []
    for _ in range(repeat + 1):
        start = time.process_time()
        block(x, num_frames).sum().backward()
        times.append(time.process_time() - start)
    return statistics.median(times[1:])


def unet_cost(config: UNetConfig, shape: tuple[int, int, int, int]) -> float:
    """GFLOP of a forward and backward pass of the whole UNet on one clip of `shape` (C, f, h, w)."""
    unet = UNet(config)
    x = torch.randn(1, *shape)
    with flop_counter() as counter:
        unet(x, torch.tensor([500])).sum().backward()
    return counter.get_total_flops() / 1e9


# ----------------------------------------------------------------------------- timing on a shared machine
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
