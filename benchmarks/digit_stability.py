"""Do the models hold their digits within one 16-frame window? The content measure on short clips.

    python benchmarks/digit_stability.py --short data/checkpoints/mmnist_short.safetensors \
        --pred data/checkpoints/mmnist_pred.safetensors --num 256 --threads 1 \
        --out benchmarks/results/digit_stability.json

The drift run asks whether a 1,024-frame video still shows the digits of its first window
(`drift.py`, `keeps_digits`). This asks the question one level down, where it costs minutes: within a
single 16-frame window, do the digits the shipped classifier (`lvdm_ref/digits.py`) reads in frames 0-7
equal those it reads in frames 8-15? For each set of N clips:

- real: Moving MNIST test clips (test digits, seed 1: the short model card's real set); also the share
  whose frames 8-15 show the clip's true digits (what the classifier gets right);
- short: unconditional samples of each `--short` checkpoint (DDIM 50, eta 1, seed 0);
- pred: real-start continuations by each `--pred` checkpoint: the first latent (frames 0-3) of the real
  clip given, frames 4-15 generated (the long-video settings: DDIM 50, the model's s, guidance 0.1);
  also the share whose generated frames 8-15 show the given clip's true digits.

Two unrelated clips agree by chance (`chance`, 0.019 for pairs of uniform digits). A long video cannot keep for 1,024 frames the digits its model does not keep for 16. Generated clips are
kept in --work per set (keyed by the checkpoint's sha256), so a rerun only scores.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads its OpenMP runtime
import numpy as np  # noqa: E402
import torch  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout without installing
from lvdm_ref.checkpoint import load_weights, write_json  # noqa: E402
from lvdm_ref.diffusion import LONG_VIDEO_DDIM_STEPS  # noqa: E402
from lvdm_ref.digits import SHIPPED_DIGITS, DigitClassifier, chance_of_same_digits, clip_digits  # noqa: E402
from lvdm_ref.guidance import LONG_VIDEO_GUIDANCE  # noqa: E402
from lvdm_ref.lvdm import LatentVideoDiffusion  # noqa: E402
from lvdm_ref.studies import kept_clips, real_clips, set_threads  # noqa: E402
from lvdm_ref.utils import file_sha256  # noqa: E402

FIRST, LAST = slice(0, 8), slice(8, 16)  # the two halves of a 16-frame window


def stability(classifier, videos: np.ndarray, labels: np.ndarray | None = None) -> dict:
    """{"keeps": share whose digits in frames 0-7 equal those in 8-15, "true_digits": share whose frames
    8-15 show `labels` (N, 2) (when given), "num": N}; the per-clip booleans behind the shares as lists."""
    first, last = clip_digits(classifier, videos[:, FIRST]), clip_digits(classifier, videos[:, LAST])  # (N, 2) sorted
    keeps = (first == last).all(dim=1)
    result = {"num": len(videos), "keeps": round(keeps.float().mean().item(), 4), "keeps_per_clip": keeps.tolist()}
    if labels is not None:
        true = (last == torch.as_tensor(labels).sort(dim=1).values).all(dim=1)
        result.update(true_digits=round(true.float().mean().item(), 4), true_digits_per_clip=true.tolist())
    return result


def continuations(model: LatentVideoDiffusion, clips: np.ndarray, batch_size: int = 16) -> np.ndarray:
    """The first 16 frames of `sample-long --start` continuations of `clips` (N, >=4, H, W, C): uint8 (N, 16, ...)."""
    from lvdm_ref.long_video import sample_windows
    from lvdm_ref.vae3d import encode_videos

    ft, windows = model.vae.config.temporal_downsample, []
    for first in range(0, len(clips), batch_size):
        part = clips[first:first + batch_size]
        start = encode_videos(model.vae, part[:, :ft], progress=False)  # (b, c, 1, h, w): the given latent
        windows.append(sample_windows(model, None, 16, [0], num_videos=len(part), seed=0, first_index=first,
                                      start=start, num_steps=LONG_VIDEO_DDIM_STEPS,
                                      guidance_weight=LONG_VIDEO_GUIDANCE, progress=False)[:, 0])
    return np.concatenate(windows)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--short", type=Path, nargs="*", default=[], help="unconditional (short) checkpoints")
    parser.add_argument("--pred", type=Path, nargs="*", default=[],
                        help="prediction checkpoints with keyframes 1 latent apart (keyframe stride 1)")
    parser.add_argument("--num", type=int, default=256)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--work", type=Path, default=ROOT / "runs" / "digit_stability")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "digit_stability.json")
    args = parser.parse_args(argv)
    set_threads(args.threads)
    for path in args.pred:
        meta = load_weights(path, "cpu")[1]
        if meta.get("kind") != "lvdm_pred":
            parser.error(f"--pred {path} holds a {meta.get('kind')!r} checkpoint, not a prediction model")
    classifier = DigitClassifier.load(SHIPPED_DIGITS).eval()
    clips, labels = real_clips(args.num, labels=True)
    results = {"command": "python benchmarks/digit_stability.py " + " ".join(argv if argv is not None else sys.argv[1:]),
               "num": args.num, "chance": round(chance_of_same_digits(), 4),  # two unrelated digit pairs agree
               "real": stability(classifier, clips, labels)}
    for path in args.short:
        sha = file_sha256(path)
        model = LatentVideoDiffusion.load(path)
        videos = kept_clips(args.work / f"short_{sha[:12]}.npz", sha,
                        lambda: model.sample(args.num, "ddim", 50, 1.0, seed=0, progress=True))
        results[f"short {path.name}"] = {"checkpoint": str(path), "sha256": sha, **stability(classifier, videos)}
        write_json(args.out, results)
    for path in args.pred:
        sha = file_sha256(path)
        model = LatentVideoDiffusion.load(path, kind="lvdm_pred")
        if model.hierarchy.keyframe_stride != 1:
            parser.error(f"--pred {path} has keyframes {model.hierarchy.keyframe_stride} latents apart; its first "
                         "window needs an interpolation model too: give a model trained with --keyframe-stride 1")
        videos = kept_clips(args.work / f"pred_{sha[:12]}.npz", sha, lambda: continuations(model, clips))
        results[f"pred {path.name}"] = {"checkpoint": str(path), "sha256": sha,
                                        **stability(classifier, videos, labels)}
        write_json(args.out, results)
    write_json(args.out, results)
    for name, entry in results.items():
        if isinstance(entry, dict):
            print(f"{name}: keeps {entry['keeps']:.3f}" +
                  (f", true digits {entry['true_digits']:.3f}" if "true_digits" in entry else ""))
    return results


if __name__ == "__main__":
    main()
