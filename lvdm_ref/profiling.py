"""What the UNet costs: FLOPs counted by torch, and measured time of one attention block.

The notebooks that compare attention kinds (04, 06) and spaces (07) and `benchmarks/unet_speed.py`
count FLOPs with torch's own `FlopCounterMode` (convolutions, matmuls and attention; element-wise
ops are not counted), taught here to count the fused CPU attention kernel too. LVDM's argument for
factorised attention (Sec. 3.2) is a cost argument: `attention_cost` measures it.
"""
from __future__ import annotations

import statistics
import time

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
