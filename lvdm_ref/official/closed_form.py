"""Closed-form weights: every tensor a deterministic function of its name, for testing against the official code.

The official initialisation zeroes every output projection (the UNet's last conv, each attention's proj_out),
so a default-initialised official UNet returns exactly 0 and any key mapping would "match" it. Instead both
sides fill each tensor from its name: `tools/make_official_fixture.py` fills the official model and records
its outputs; `tests/test_official.py` rebuilds the same official state dict from the recorded key list, converts
it and compares. Only the key list travels in the fixture, never the weights.
"""
from __future__ import annotations

import math
import zlib

import torch


def fill(name: str, shape: tuple[int, ...]) -> torch.Tensor:
    """sin(a n + b) over the flat index n, with a and b from crc32(name); float32, the same on every platform.

    Matrices and kernels are scaled by 1/sqrt(fan_in) (activations keep their size through a deep network),
    1-D weights (GroupNorm gains) are 1 + 0.2 sin, biases 0.1 sin.
    """
    crc = zlib.crc32(name.encode())
    frequency = 0.3 + (crc % 997) / 997 * 2.0
    phase = (crc >> 12) % 6283 / 1000
    count = math.prod(shape)
    values = torch.sin(torch.arange(count, dtype=torch.float64) * frequency + phase).reshape(shape)
    if len(shape) >= 2:
        values = values / math.sqrt(math.prod(shape[1:]))
    elif name.endswith("bias"):
        values = 0.1 * values
    else:
        values = 1 + 0.2 * values
    return values.float()


def is_filled(name: str) -> bool:
    """Which official keys carry weights (filled), as opposed to schedule buffers and EMA counters."""
    if name.startswith("model_ema."):
        return name not in ("model_ema.decay", "model_ema.num_updates")
    return name.startswith(("model.diffusion_model.", "first_stage_model."))
