"""Where in a clip do the generator's digits change? Per latent frame, and frame to frame.

    python benchmarks/where_digits_change.py --short data/checkpoints/mmnist_short.safetensors --num 256 --threads 1

Digit stability (`stability_study.py`) says whether a clip's digits in frames 0-7 equal those in 8-15;
this says where they stop being equal. The `mmnist` autoencoder compresses time 4x, so a 16-frame clip is
4 latent frames, each decoded into 4 frames. Two readings of the shipped classifier (`lvdm_ref/digits.py`):

- per latent frame: the digits of frames 4k..4k+3, and the 4x4 matrix of the share of clips whose
  readings in latent frames i and j agree (`agreement_matrix`). A generator that mixes its latent frames
  too little shows agreement falling with the distance |i - j| faster than real clips do;
- frame to frame: the share of clips whose single-frame readings at t and t+1 agree, t = 0..14. A real
  clip's readings flicker where its two digits overlap; a generator whose digits change between latent
  frames shows dips at t = 3, 7, 11 (the last decoded frame of one latent and the first of the next) that
  real clips and reconstructions do not.

Real clips are the studies' set (seed 1), reconstructions are the shipped autoencoder's of them, and
samples are DDIM 50, eta 1, seed 0 (one noise stream per clip, as the stability study draws them), kept
in --work by the checkpoint's sha256 so a rerun only scores. Writes benchmarks/results/where_digits_change.json
and a figure beside it.
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
from lvdm_ref.checkpoint import write_json  # noqa: E402
from lvdm_ref.digits import (SHIPPED_DIGITS, DigitClassifier, agreement_matrix, digits_from_probabilities,  # noqa: E402
                             frame_probabilities, window_digits)
from lvdm_ref.studies import interval, real_clips, reconstruct, sample_in_batches, set_threads  # noqa: E402
from lvdm_ref.utils import file_sha256  # noqa: E402
from lvdm_ref.vae3d import VideoAutoencoder  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "where_digits_change.json"


def profile(classifier, videos: np.ndarray, window: int) -> dict:
    """The two readings of one set of clips (N, 16, H, W, 1), with 90 % intervals over clips."""
    threshold = getattr(classifier, "threshold", 0.5)
    probabilities = frame_probabilities(classifier, videos)  # (N, F, 10)
    num, frames = probabilities.shape[:2]
    per_frame = digits_from_probabilities(probabilities.reshape(num * frames, -1), 2, threshold).reshape(num, frames, 2)
    steps = (per_frame[:, 1:] == per_frame[:, :-1]).all(dim=-1).float().numpy()  # (N, F - 1): t and t+1 agree
    latent = window_digits(probabilities, window, 2, threshold)  # (N, F // window, 2)
    same = (latent[:, :, None] == latent[:, None]).all(dim=-1).float().numpy()  # (N, W, W)
    by_distance = {}  # |i - j| -> [share of (clip, pair) agreeing, 90 % interval over clips]
    for distance in range(1, same.shape[1]):
        per_clip = np.diagonal(same, distance, 1, 2).mean(1)  # (N,): over the pairs at this distance
        by_distance[str(distance)] = [round(float(v), 4) for v in (per_clip.mean(), *interval(per_clip))]
    top_two = probabilities.topk(2, dim=-1).values[..., 1]  # (N, F): how strongly the weaker digit is read
    return {"num": num,
            "frame_to_frame": [round(float(v), 4) for v in steps.mean(0)],
            "latent_agreement": [[round(float(v), 4) for v in row] for row in agreement_matrix(latent).tolist()],
            "latent_agreement_by_distance": by_distance,  # distance: [share, low, high]
            "second_digit_probability": [round(float(v), 4) for v in top_two.mean(0)]}


def boundary_contrast(frame_to_frame: list[float], window: int) -> float:
    """Mean frame-to-frame agreement across latent boundaries minus within latent frames."""
    values = np.asarray(frame_to_frame)
    across = np.array([(t + 1) % window == 0 for t in range(len(values))])
    return round(float(values[across].mean() - values[~across].mean()), 4)


def plot(results: dict, path: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sets = results["sets"]
    window = results["window"]
    figure, axes = plt.subplots(1, 2 + len(sets), figsize=(4.2 * (2 + len(sets)), 3.6),
                                gridspec_kw={"width_ratios": [2, 2] + [1] * len(sets)})
    for name, entry in sets.items():
        steps = entry["frame_to_frame"]
        axes[0].plot(np.arange(len(steps)) + 0.5, steps, marker="o", ms=3, label=name)
        axes[1].plot(entry["second_digit_probability"], marker="o", ms=3, label=name)
    for boundary in range(window, len(steps) + 1, window):
        for axis in axes[:2]:  # between the last frame of one latent and the first of the next
            axis.axvline(boundary - 0.5, color="0.8", lw=0.8, zorder=0)
    axes[0].set(xlabel="between frame t and t+1 (grey: latent frame boundaries)", ylabel="share of clips",
                title="single-frame readings agree", ylim=(0, 1.02))
    axes[1].set(xlabel="frame", ylabel="mean probability", title="the weaker of the two digits is read with",
                ylim=(0, 1.02))
    axes[0].legend(fontsize=7)
    for axis, (name, entry) in zip(axes[2:], sets.items()):
        matrix = np.asarray(entry["latent_agreement"])
        axis.imshow(matrix, vmin=0, vmax=1, cmap="viridis")
        for i in range(len(matrix)):
            for j in range(len(matrix)):
                axis.text(j, i, f"{matrix[i, j]:.2f}", ha="center", va="center", fontsize=7,
                          color="white" if matrix[i, j] < 0.6 else "black")
        axis.set(title=name, xlabel="latent frame", ylabel="latent frame", xticks=range(len(matrix)),
                 yticks=range(len(matrix)))
    figure.suptitle(f"Where digits change (N = {results['num']} clips a set)")
    figure.tight_layout()
    paths = []
    for suffix in (".png", ".svg"):
        figure.savefig(path.with_suffix(suffix), dpi=110)
        paths.append(path.with_suffix(suffix))
    plt.close(figure)
    return paths


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--short", type=Path, nargs="*",
                        default=[ROOT / "data" / "checkpoints" / "mmnist_short.safetensors"])
    parser.add_argument("--vae", type=Path, default=ROOT / "data" / "checkpoints" / "mmnist_vae.safetensors")
    parser.add_argument("--num", type=int, default=256)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--work", type=Path, default=ROOT / "runs" / "where_digits_change")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if args.num < 2:
        parser.error(f"--num must be at least 2 (intervals are over clips), got {args.num}")
    set_threads(args.threads)
    if not args.vae.exists():
        parser.error(f"--vae {args.vae} does not exist: give the autoencoder the --short checkpoints were trained on")
    window = VideoAutoencoder.load(args.vae).config.temporal_downsample  # frames per latent frame
    classifier = DigitClassifier.load(SHIPPED_DIGITS).eval()
    clips = real_clips(args.num)
    sets = {"real": clips, "reconstructed": reconstruct(args.vae, clips)}
    models = {}
    for path in args.short:
        sha = file_sha256(path)
        videos, _ = sample_in_batches(path, args.num, args.work / f"{path.stem}_{sha[:12]}")
        sets[path.stem] = videos
        shown = path.resolve().relative_to(ROOT) if path.resolve().is_relative_to(ROOT) else path
        models[path.stem] = {"checkpoint": str(shown),
                             "sha256": sha, "sampler": "ddim 50, eta 1, seed 0"}
    command = " ".join(argv if argv is not None else sys.argv[1:])
    results = {"command": f"python benchmarks/where_digits_change.py {command}",
               "num": args.num, "window": window, "models": models, "sets": {}}
    for name, videos in sets.items():
        entry = profile(classifier, videos, window)
        entry["boundary_contrast"] = boundary_contrast(entry["frame_to_frame"], window)
        results["sets"][name] = entry
        print(f"{name}: frame-to-frame {entry['frame_to_frame']}, across - within boundaries "
              f"{entry['boundary_contrast']:+.3f}, latent agreement by distance {entry['latent_agreement_by_distance']}")
    write_json(args.out, results)
    plot(results, args.out.with_suffix(""))
    return results


if __name__ == "__main__":
    main()
