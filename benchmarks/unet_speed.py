"""UNet training speed and model FLOP utilisation (MFU) on this machine; prints one JSON object.

    python benchmarks/unet_speed.py [--preset mmnist] [--seconds 8] [--frames 4 8 16 32]
    python benchmarks/unet_speed.py --threads 1 --compile --seconds 0 --frames   # torch.compile vs eager only

- `matmul_gflops`: the machine's fp32 matmul rate, measured in this run (best of a few 2048^2 products, at
  the start and at the end; the higher is used, so a busy machine cannot flatter the MFU).
- `train`: forward+backward of the preset's UNet on a batch of latents (no optimizer step): samples/s,
  GFLOP per sample counted by `torch.utils.flop_counter` (convolutions, matmuls and attention, with the
  fused CPU attention kernel added by `lvdm_ref.profiling.flop_counter`; element-wise ops are not counted), achieved GFLOP/s and `mfu` = achieved / matmul_gflops.
- `attention_scaling`: "factorized" vs "joint" at batch 1 as the number of latent frames grows: FLOPs and
  time of a forward+backward and the peak extra resident memory it needed (Linux: VmHWM after a reset).
  Attention here is a fused kernel, so joint attention never stores its (t h w)^2 weights.
- `compile` (with `--compile`): a full training step as the trainer takes it (diffusion loss, backward,
  gradient clipping, AdamW) for eager and `torch.compile(unet)` (inductor), each also with channels_last
  weights; the variants run interleaved in one process (`lvdm_ref.profiling.interleaved`) and each ratio is
  eager / variant step time, median over rounds. `first_step_seconds` includes the compilation.

OpenMP threads that wait by spinning collapse when other jobs share the cores: on this 2-core machine, with
two other jobs running, 2 threads gave ~10 GFLOP/s spinning and ~140 GFLOP/s with OMP_WAIT_POLICY=PASSIVE.
So this script sets OMP_WAIT_POLICY=PASSIVE unless you set it yourself (it must be set before torch loads).
"""
from __future__ import annotations

import argparse
import ctypes
import gc
import json
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads its OpenMP runtime (see above)
import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing
from lvdm_ref.config import get_preset  # noqa: E402
from lvdm_ref.diffusion import GaussianDiffusion  # noqa: E402
from lvdm_ref.profiling import INDUCTOR_CACHE, first_call, flop_counter, interleaved, optimizer_step  # noqa: E402
from lvdm_ref.unet import UNet  # noqa: E402


def matmul_gflops(size: int = 2048, repeats: int = 5) -> float:
    a, b = torch.randn(size, size), torch.randn(size, size)
    a @ b  # warm-up
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - start)
    return 2 * size ** 3 / best / 1e9


def train_step(unet: UNet, x: torch.Tensor, t: torch.Tensor) -> None:
    unet.zero_grad(set_to_none=True)
    unet(x, t).square().mean().backward()


def count_gflop(unet: UNet, x: torch.Tensor, t: torch.Tensor) -> tuple[float, float]:
    """(forward, forward+backward) GFLOP for the whole batch."""
    with flop_counter() as counter:
        unet(x, t)
    forward = counter.get_total_flops()
    with flop_counter() as counter:
        train_step(unet, x, t)
    return forward / 1e9, counter.get_total_flops() / 1e9


def time_steps(unet: UNet, x: torch.Tensor, t: torch.Tensor, seconds: float, min_steps: int) -> list[float]:
    times = []
    start = time.perf_counter()
    while len(times) < min_steps or time.perf_counter() - start < seconds:
        step_start = time.perf_counter()
        train_step(unet, x, t)
        times.append(time.perf_counter() - step_start)
    return times


# ----------------------------------------------------------------------------- torch.compile vs eager
def optimizer_step_fn(unet: UNet, forward, diffusion: GaussianDiffusion, z0: torch.Tensor, grad_clip: float):
    """One trainer step: diffusion loss through `forward` (the module or its compiled wrapper), backward,
    clipping and AdamW on `unet`'s parameters (no EMA, no logging); returns the loss."""
    return optimizer_step(lambda: diffusion.training_losses(forward, z0)["loss"], unet.parameters(), grad_clip)


def compile_comparison(preset, z0: torch.Tensor, rounds: int, steps_per_round: int, bf16: bool = False) -> dict:
    """Eager vs compiled, each with and without channels_last; with `bf16`, instead each in float32 and under
    bfloat16 autocast (what `TrainConfig.bf16_cpu` turns on in the trainer), channels_last on (as the trainer)."""
    diffusion = GaussianDiffusion(preset.diffusion)
    steps, first = {}, {}
    layouts = ((True, False), (True, True)) if bf16 else ((True, False), (False, False))  # (channels_last, bf16)
    for compiled in (False, True):
        for channels_last, autocast in layouts:  # the first to compile finds an empty inductor cache (if it was)
            name = ("compiled" if compiled else "eager") + ("+channels_last" if channels_last else "") + \
                   ("+bf16" if autocast else "")
            torch.manual_seed(0)
            unet = UNet(preset.unet)
            if channels_last:
                unet = unet.to(memory_format=torch.channels_last)
            forward = torch.compile(unet) if compiled else unet
            if autocast:
                forward = _autocast_bf16(forward)
            steps[name] = optimizer_step_fn(unet, forward, diffusion, z0, preset.train.grad_clip)
            torch.manual_seed(1)  # the same t and noise in every variant's first step
            loss = []
            first[name] = {"first_step_seconds": round(first_call(lambda: loss.append(steps[name]())), 2)}
            first[name]["first_loss"] = loss[0]
            print(f"{name}: first step {first[name]['first_step_seconds']} s", file=sys.stderr)
    baseline = next(iter(steps)) if bf16 else "eager"  # eager float32 (with channels_last under `bf16`)
    result = interleaved(steps, rounds, steps_per_round, baseline=baseline)
    for name, row in result["variants"].items():
        row.update(first[name])
        row["compile_seconds"] = round(row["first_step_seconds"] - result["variants"][baseline]
                                       ["seconds_per_step_median"], 1) if name.startswith("compiled") else 0.0
    return result


def _autocast_bf16(forward):
    """`forward` under CPU bfloat16 autocast, as the trainer runs its loss with `bf16_cpu`."""
    def wrapped(*args, **kwargs):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return forward(*args, **kwargs)
    return wrapped


# ----------------------------------------------------------------------------- peak memory (Linux)
def _status_mib(key: str) -> float | None:
    try:
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith(key):
                    return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def _reset_peak() -> bool:
    gc.collect()
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")  # resets VmHWM to the current resident size
        return True
    except OSError:
        return False


def _return_freed_memory_to_the_os() -> None:
    """Allocations above 128 kB get their own mmap and go back on free, so RSS follows live tensors."""
    try:
        ctypes.CDLL("libc.so.6").mallopt(-3, 128 * 1024)  # M_MMAP_THRESHOLD, fixed
    except OSError:
        pass


def attention_scaling(preset, frames_list, latent_hw, seconds) -> list[dict]:
    rows = []
    for kind in ("factorized", "joint"):
        config = preset.unet
        config.attention = kind
        torch.manual_seed(0)
        unet = UNet(config)
        train_step(unet, torch.randn(1, config.in_channels, frames_list[0], *latent_hw), torch.tensor([500]))  # warm-up
        for frames in frames_list:
            x, t = torch.randn(1, config.in_channels, frames, *latent_hw), torch.tensor([500])
            can_measure = _reset_peak()
            base = _status_mib("VmRSS")
            with flop_counter() as counter:  # this step also gives the peak memory
                train_step(unet, x, t)
            peak = _status_mib("VmHWM") if can_measure else None
            times = time_steps(unet, x, t, seconds=seconds, min_steps=1)
            rows.append({"attention": kind, "latent_frames": frames, "tokens_per_clip": frames * latent_hw[0] * latent_hw[1],
                         "gflop_forward_backward": round(counter.get_total_flops() / 1e9, 3),
                         "seconds_per_step": round(min(times), 4),
                         "peak_extra_memory_mib": round(peak - base, 1) if peak is not None and base else None})
            print(f"{kind:>10} t={frames:>2}: {min(times):.3f} s, {rows[-1]['peak_extra_memory_mib']} MiB",
                  file=sys.stderr)
    return rows


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="mmnist")
    parser.add_argument("--batch-size", type=int, default=None, help="default: the preset's training batch")
    parser.add_argument("--seconds", type=float, default=8.0, help="time spent measuring training steps")
    parser.add_argument("--frames", type=int, nargs="*", default=[4, 8, 16, 32], help="latent frames for scaling")
    parser.add_argument("--channels-last", action="store_true", help="NHWC memory format for the convolutions")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--compile", action="store_true", help="also compare torch.compile with eager (minutes)")
    parser.add_argument("--bf16", action="store_true",
                        help="with --compile: float32 vs bfloat16 autocast, eager and compiled (channels_last, as the trainer)")
    parser.add_argument("--rounds", type=int, default=7, help="interleaved rounds for --compile")
    parser.add_argument("--steps-per-round", type=int, default=3, help="steps of each variant per round")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    load_before = os.getloadavg()[0]
    _return_freed_memory_to_the_os()

    preset = get_preset(args.preset)
    vae, data = preset.vae, preset.data
    latent_hw = (data.size // vae.spatial_downsample, data.size // vae.spatial_downsample)
    latent_shape = (preset.unet.in_channels, data.num_frames // vae.temporal_downsample, *latent_hw)  # (c, f, h, w)
    batch = args.batch_size or preset.train.batch_size

    matmul_before = matmul_gflops()
    torch.manual_seed(0)
    unet = UNet(preset.unet)
    if args.channels_last:
        unet = unet.to(memory_format=torch.channels_last)
    x, t = torch.randn(batch, *latent_shape), torch.randint(0, 1000, (batch,))
    gflop_forward, gflop_train = count_gflop(unet, x, t)
    train_step(unet, x, t)  # warm-up
    times = time_steps(unet, x, t, seconds=args.seconds, min_steps=3)
    print(f"train: {len(times)} steps, median {statistics.median(times):.3f} s", file=sys.stderr)
    scaling = attention_scaling(get_preset(args.preset), args.frames, latent_hw, seconds=0.0) if args.frames else []
    compiled = compile_comparison(get_preset(args.preset), x, args.rounds, args.steps_per_round, args.bf16) \
        if args.compile \
        else None
    matmul_after = matmul_gflops()

    matmul = max(matmul_before, matmul_after)
    median = statistics.median(times)
    achieved = gflop_train / median
    result = {
        "device": "cpu", "threads": torch.get_num_threads(), "cpu_count": os.cpu_count(), "torch": torch.__version__,
        "load_average_1min_start_end": [round(load_before, 2), round(os.getloadavg()[0], 2)],  # other work on the box
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
        "matmul_gflops": round(matmul, 1), "matmul_gflops_start_end": [round(matmul_before, 1), round(matmul_after, 1)],
        "train": {
            "preset": args.preset, "attention": preset.unet.attention, "batch_size": batch,
            "latent_shape": list(latent_shape), "channels_last": args.channels_last,
            "parameters_millions": round(sum(p.numel() for p in unet.parameters()) / 1e6, 3),
            "gflop_per_sample_forward": round(gflop_forward / batch, 3),
            "gflop_per_sample_forward_backward": round(gflop_train / batch, 3),
            "steps_timed": len(times), "seconds_per_step_median": round(median, 4),
            "seconds_per_step_best": round(min(times), 4),
            "samples_per_second": round(batch / median, 2),
            "achieved_gflops": round(achieved, 1),
            "mfu": round(achieved / matmul, 3),
            "mfu_best_step": round(gflop_train / min(times) / matmul, 3),
        },
        "attention_scaling": scaling,
    }
    if compiled is not None:
        result["compile"] = {"step": "diffusion loss + backward + grad clip + AdamW", "inductor_cache": INDUCTOR_CACHE,
                             **compiled}
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
