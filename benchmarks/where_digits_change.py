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

And, with --from-real, where in the denoising the digits are lost: the first --num real clips are encoded,
noised to t and denoised by the generator from there (SDEdit, `GaussianDiffusion.denoise_from`, the same
DDIM 50 eta 1 schedule from its first step at or below t, one noise stream per clip shared by every t). At small
t the model only renders details of the real clip's digits; near T it draws everything, as in sampling. Per t:
stability, the share whose frames 8-15 still show the real clip's digits, and how strongly the second digit is read.
With --from-real-clips training the clips are the first of the mmnist preset's 2,048 training clips instead: a
denoiser that had memorised its clips would keep their digits far better than those of new clips.

Real clips are the studies' set (seed 1), reconstructions are the shipped autoencoder's of them, and
samples are DDIM 50, eta 1, seed 0 (one noise stream per clip, as the stability study draws them), kept
in --work by the checkpoint's sha256 so a rerun only scores. Writes benchmarks/results/where_digits_change.json
and a figure beside it.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads its OpenMP runtime
import numpy as np  # noqa: E402
import torch  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout without installing
from lvdm_ref.checkpoint import write_json  # noqa: E402
from lvdm_ref.digits import (SHIPPED_DIGITS, DigitClassifier, agreement_matrix, clip_digits,  # noqa: E402
                             digits_from_probabilities, frame_probabilities, window_digits)
from lvdm_ref.studies import (bits, from_bits, interval, kept_batches, real_clips, reconstruct,  # noqa: E402
                              sample_in_batches, set_threads, unpaired_difference)
from lvdm_ref.utils import file_sha256, randn, stream, to_uint8  # noqa: E402
from lvdm_ref.vae3d import VideoAutoencoder  # noqa: E402
from lvdm_ref.viz import save_figure  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "where_digits_change.json"


def profile(classifier, videos: np.ndarray, window: int) -> dict:
    """The two readings of one set of clips (N, 16, H, W, 1), with 90 % intervals over clips."""
    threshold = getattr(classifier, "threshold", 0.5)
    probabilities = frame_probabilities(classifier, videos)  # (N, F, 10)
    num, frames = probabilities.shape[:2]
    per_frame = digits_from_probabilities(probabilities.reshape(num * frames, -1), 2, threshold).reshape(num, frames, 2)
    steps = (per_frame[:, 1:] == per_frame[:, :-1]).all(dim=-1).float().numpy()  # (N, F - 1): t and t+1 agree
    latent = window_digits(probabilities, window, 2, threshold)  # (N, F // window, 2)
    same = agreement_matrix(latent, per_clip=True).numpy()  # (N, W, W)
    by_distance = {}  # |i - j| -> [share of (clip, pair) agreeing, 90 % interval over clips]
    for distance in range(1, same.shape[1]):
        per_clip = np.diagonal(same, distance, 1, 2).mean(1)  # (N,): over the pairs at this distance
        by_distance[str(distance)] = [round(float(v), 4) for v in (per_clip.mean(), *interval(per_clip))]
    top_two = probabilities.topk(2, dim=-1).values[..., 1]  # (N, F): how strongly the weaker digit is read
    return {"num": num,
            "frame_to_frame": [round(float(v), 4) for v in steps.mean(0)],
            "latent_agreement": [[round(float(v), 4) for v in row] for row in same.mean(0).tolist()],
            "latent_agreement_by_distance": by_distance,  # distance: [share, low, high]
            "second_digit_probability": [round(float(v), 4) for v in top_two.mean(0)]}


CONTROL_CLIPS = 32  # clips on which the RMS distance of the model's output from the real latents is measured


def keeps_and_true(classifier, videos: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per clip, 0/1: frames 0-7 and 8-15 show the same digits; frames 8-15 show `labels`."""
    first, last = (clip_digits(classifier, videos[:, half]) for half in (slice(0, 8), slice(8, 16)))
    keeps = (first == last).all(dim=1).float().numpy()
    true = (last == torch.as_tensor(labels).sort(dim=1).values).all(dim=1).float().numpy()
    return keeps, true


def from_real(checkpoint: Path, clips: np.ndarray, labels: np.ndarray, t_starts: list[int], folder: Path,
              classifier) -> dict:
    """Per t: the generator's SDEdit of `clips` from t, scored (stability, true digits in frames 8-15, how
    strongly the second digit is read); each batch kept in FOLDER/t_T so a rerun goes on where it stopped
    (`from_real_folder`: one folder per set of clips, since the N real clips are not the first N of a bigger set)."""
    from lvdm_ref.lvdm import LatentVideoDiffusion
    from lvdm_ref.vae3d import encode_videos

    model = LatentVideoDiffusion.load(checkpoint)
    model.unet.eval()
    latents = None
    results = {}
    for t_start in t_starts:
        def make(first, t_start=t_start):
            nonlocal latents
            if latents is None:
                latents = encode_videos(model.vae, clips, progress=False)
            part = latents[first:first + 16]
            generators = [stream(0, index) for index in range(first, first + len(part))]
            denoised = model.diffusion.denoise_from(model.unet, part, t_start, generator=generators)
            return to_uint8(model.decode(denoised))

        videos, cpu_seconds = kept_batches(folder / f"t_{t_start:04d}", len(clips), make, progress=True)
        keeps, true = keeps_and_true(classifier, videos, labels)
        second = frame_probabilities(classifier, videos).topk(2, dim=-1).values[..., 1].mean(dim=1).numpy()
        # The control: is the autoencoder's decoder what breaks the digits? The model's output lies some distance
        # from the real latents; the real latents moved as far at random (isotropic Gaussian noise of the same
        # RMS, measured on the first clips) and decoded show whether any error of that size breaks them.
        if latents is None:
            latents = encode_videos(model.vae, clips, progress=False)
        count = min(CONTROL_CLIPS, len(clips))
        denoised = model.diffusion.denoise_from(model.unet, latents[:count], t_start,
                                                generator=[stream(0, index) for index in range(count)])
        rms = (denoised - latents[:count]).pow(2).mean().sqrt().item()
        moved = latents + rms * randn(tuple(latents.shape), [stream(1, index) for index in range(len(clips))])
        control = np.concatenate([to_uint8(model.decode(moved[i:i + 16])) for i in range(0, len(moved), 16)])
        control_keeps, control_true = keeps_and_true(classifier, control, labels)
        results[str(t_start)] = {"num": len(clips), "keeps": [round(float(keeps.mean()), 4), *interval(keeps)],
                                 "true_digits": [round(float(true.mean()), 4), *interval(true)],
                                 "second_digit_probability": round(float(second.mean()), 4),
                                 "cpu_seconds": round(cpu_seconds, 1), "keeps_bits": bits(keeps),
                                 "true_bits": bits(true), "latent_rms_error": round(rms, 4),
                                 "random_error_of_that_rms": {
                                     "keeps": [round(float(control_keeps.mean()), 4), *interval(control_keeps)],
                                     "true_digits": [round(float(control_true.mean()), 4), *interval(control_true)]}}
        print(f"{checkpoint.stem} from real at t = {t_start}: keeps {results[str(t_start)]['keeps']}, "
              f"true digits {results[str(t_start)]['true_digits']}; latent RMS error {rms:.3f}, random error of "
              f"that size: {results[str(t_start)]['random_error_of_that_rms']}")
    return results


TRAINING_CLIPS = 2048  # the mmnist preset's training set, generated whole (a smaller set is not its prefix)


def own_training_clips(num: int) -> tuple[np.ndarray, np.ndarray]:
    """The first `num` of the mmnist preset's training clips, and their digit labels (N, 2)."""
    from lvdm_ref.config import get_preset
    from lvdm_ref.data import generate_moving_mnist

    data = get_preset("mmnist").data
    if data.num_train != TRAINING_CLIPS or not 2 <= num <= TRAINING_CLIPS:
        raise ValueError(f"--from-real-clips training takes 2..{TRAINING_CLIPS} of the preset's "
                         f"{data.num_train} clips, got --from-real-num {num}")
    clips, labels = generate_moving_mnist(data.num_train, data.num_frames, data.size, data.num_digits, "train",
                                          data.seed, return_labels=True)
    return clips[:num], labels[:num]


def from_real_folder(work: Path, stem: str, sha: str, clips: str, num: int) -> Path:
    """Where a model's denoised clips are kept: by checkpoint and by set of clips. The studies' N real clips are
    drawn as one set (trajectories depend on N), so another N is another set; the training clips are one set."""
    if clips == "training":
        return work / f"from_training_{stem}_{sha[:12]}"
    return work / (f"from_real_{stem}_{sha[:12]}" + ("" if num == 128 else f"_n{num}"))  # 128: the folders so far


def entry_name(stem: str, clips: str) -> str:
    """A model's entry under `from_real`: its file's stem, marked when scored on its own training clips."""
    return stem if clips == "test" else f"{stem} (training clips)"


def from_real_differences(entries: dict) -> dict:
    """Every later model against every earlier one on the same clips (held-out or training) at each t both were
    scored at, paired clip by clip on their common clips: "B - A, keeps|true, t = T". And a model on its training
    clips against itself on held-out clips (other clips, so unpaired: each share's own resampling):
    "B (training clips) - B, ...". """
    names, out = list(entries), {}
    for name in names:
        other = name.removesuffix(" (training clips)")
        held_out = entries.get(other)
        if entries[name].get("clips") != "training" or held_out is None:
            continue
        for t, entry in entries[name]["t"].items():
            if t in held_out["t"]:
                for measure in ("keeps", "true"):
                    a, b = (from_bits(e[f"{measure}_bits"]) for e in (entry, held_out["t"][t]))
                    out[f"{name} - {other}, {measure}, t = {t}"] = unpaired_difference(a, b)
    for i, first in enumerate(names):
        for name in names[i + 1:]:
            if entries[name].get("clips", "test") != entries[first].get("clips", "test"):
                continue
            for t, entry in entries[name]["t"].items():
                reference = entries[first]["t"].get(t)
                if reference is None:
                    continue
                for measure in ("keeps", "true"):
                    a, b = (from_bits(e[f"{measure}_bits"]) for e in (entry, reference))
                    num = min(len(a), len(b))
                    gap = a[:num] - b[:num]
                    out[f"{name} - {first}, {measure}, t = {t}"] = {
                        "difference": round(float(gap.mean()), 4), "interval": interval(gap), "num": num}
    return out


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
    return save_figure(figure, path, dpi=110)


def plot_from_real(results: dict, path: Path) -> list[Path]:
    """Two panels over t, one line per model: the share that keeps its digits (with its interval), and the share
    whose frames 8-15 show the real clip's digits; the first model's random-error control and the real and
    reconstructed clips' latent agreement as references. A model on its training clips is drawn dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 2, figsize=(13, 4.6), sharey=True)
    sets = results["sets"]
    for axis, measure, title in ((axes[0], "keeps", "keeps its digits (frames 0-7 = 8-15)"),
                                 (axes[1], "true_digits", "frames 8-15 show the real clip's digits")):
        for index, (name, entry) in enumerate(results["from_real"]["models"].items()):
            steps = sorted(int(t) for t in entry["t"])
            values = np.array([entry["t"][str(t)][measure] for t in steps])  # (T, 3): share, low, high
            style = "--" if entry.get("clips") == "training" else "-"
            axis.plot(steps, values[:, 0], ls=style, marker="o", ms=3, color=f"C{index}", label=name)
            axis.fill_between(steps, values[:, 1], values[:, 2], color=f"C{index}", alpha=0.12)
            controls = [entry["t"][str(t)].get("random_error_of_that_rms", {}).get(measure) for t in steps]
            if index == 0 and all(controls):  # the real latents moved at random as far as the model's output lies
                axis.plot(steps, [c[0] for c in controls], ls=":", marker="x", ms=4, color=f"C{index}",
                          label=f"{name}'s real latents + random error of its size")
        for name, style in (("real", ":"), ("reconstructed", "-.")):
            if name in sets:
                share = np.mean([row[0] for row in sets[name]["latent_agreement_by_distance"].values()])
                axis.axhline(share, color="0.5", ls=style, lw=1, label=f"{name} clips: latent frames agree")
        axis.set(xlabel="timestep t (of 1000)", title=title, ylim=(0, 1.02))
    axes[0].set_ylabel("share of clips")
    axes[1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    figure.suptitle("Where in the denoising the digits are lost: real clips noised to t, then denoised by the model "
                    "(dashed: on its own training clips)")
    figure.tight_layout()
    return save_figure(figure, path, dpi=110, bbox_inches="tight")


# The capacity figure: the SDEdit scores of one design at several training steps (entries of `from_real`, all
# trained on the same 2,048 clips, seed and schedule; the 64-channel runs at 3,434 and 15,000 steps are the shipped
# `mmnist_attention_factorized` and `mmnist_short`). Names not in the results are left out.
CAPACITY = {
    "64 channels (the preset)": {1000: "baseline_1000", 3434: "mmnist_attention_factorized", 15000: "mmnist_short"},
    "64 channels, trained again in bfloat16 on an Intel Xeon": {1000: "baseline_1000_bf16"},
    "96 channels (wide)": {1000: "wide_1000", 3434: "wide_3434"},
    "128 channels (wider)": {1000: "wider_1000"},
    "64 channels, 2 ResBlocks a level (deep)": {1000: "deep_1000"},
}


def capacity_series(results: dict, t: int, measure: str = "true_digits") -> dict[str, np.ndarray]:
    """label -> (K, 4) rows of training steps, share, interval low and high at timestep t, for the designs of
    `CAPACITY` that the results hold."""
    entries, series = results.get("from_real", {}).get("models", {}), {}
    for label, points in CAPACITY.items():
        rows = [[steps, *entries[name]["t"][str(t)][measure]] for steps, name in sorted(points.items())
                if name in entries and str(t) in entries[name]["t"]]
        if rows:
            series[label] = np.array(rows, dtype=float)
    return series


def plot_capacity(results: dict, path: Path, starts: tuple[int, ...] = (300, 500)) -> list[Path]:
    """One panel per start t: the share of real clips whose frames 8-15 show their digits after denoising, against
    training steps, one line per width or depth, with 90 % intervals."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, len(starts), figsize=(5.2 * len(starts), 4.2), sharey=True, squeeze=False)
    for axis, t in zip(axes[0], starts):
        for index, (label, rows) in enumerate(capacity_series(results, t).items()):
            axis.errorbar(rows[:, 0] * (1 + 0.03 * index), rows[:, 1],
                          yerr=[rows[:, 1] - rows[:, 2], rows[:, 3] - rows[:, 1]], marker="o", ms=4, capsize=3,
                          color=f"C{index}", label=label)
        axis.set(xscale="log", xlabel="training steps (batch 16)", title=f"denoised from t = {t}")
        axis.set_xticks([1000, 3434, 15000], ["1,000", "3,434", "15,000"])
    axes[0, 0].set_ylabel("share of real clips whose frames 8-15 show their digits")
    axes[0, -1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    figure.suptitle("Capacity: real test clips noised to t and denoised, by width and depth (N = 128, paired)")
    figure.tight_layout()
    return save_figure(figure, path, dpi=110, bbox_inches="tight")


def shown(path: Path) -> str:
    """A checkpoint's path as the results file names it: relative to the checkout where it lies inside it."""
    resolved = path.resolve()
    return str(resolved.relative_to(ROOT) if resolved.is_relative_to(ROOT) else path)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--short", type=Path, nargs="*",
                        default=[ROOT / "data" / "checkpoints" / "mmnist_short.safetensors"])
    parser.add_argument("--vae", type=Path, default=ROOT / "data" / "checkpoints" / "mmnist_vae.safetensors")
    parser.add_argument("--num", type=int, default=256)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--work", type=Path, default=ROOT / "runs" / "where_digits_change")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--from-real", type=int, nargs="*", default=[],
                        help="also denoise real clips from these timesteps (SDEdit) with each --from-real-models model")
    parser.add_argument("--from-real-models", type=Path, nargs="*", default=None,
                        help="models for --from-real (default: the --short ones), each paired with the others")
    parser.add_argument("--from-real-num", type=int, default=128, help="real clips for --from-real")
    parser.add_argument("--from-real-clips", choices=("test", "training"), default="test",
                        help="--from-real on held-out clips of test digits (the studies' set) or on the first of the "
                             "mmnist preset's 2,048 training clips (the clips every mmnist short model trained on)")
    args = parser.parse_args(argv)
    if args.num < 2:
        parser.error(f"--num must be at least 2 (intervals are over clips), got {args.num}")
    set_threads(args.threads)
    if not args.vae.exists():
        parser.error(f"--vae {args.vae} does not exist: give the autoencoder the --short checkpoints were trained on")
    window = VideoAutoencoder.load(args.vae).config.temporal_downsample  # frames per latent frame
    classifier = DigitClassifier.load(SHIPPED_DIGITS).eval()
    previous = json.loads(args.out.read_text()) if args.out.exists() else {}
    clips = real_clips(args.num)
    sets = {"real": clips, "reconstructed": reconstruct(args.vae, clips)}
    models = {}
    for path in args.short:
        sha = file_sha256(path)
        videos, _ = sample_in_batches(path, args.num, args.work / f"{path.stem}_{sha[:12]}")
        sets[path.stem] = videos
        models[path.stem] = {"checkpoint": shown(path),
                             "sha256": sha, "sampler": "ddim 50, eta 1, seed 0"}
    command = " ".join(argv if argv is not None else sys.argv[1:])
    results = {"command": f"python benchmarks/where_digits_change.py {command}",
               "num": args.num, "window": window, "models": models, "sets": {}}
    for name, videos in sets.items():
        entry = profile(classifier, videos, window)
        entry["boundary_contrast"] = boundary_contrast(entry["frame_to_frame"], window)
        results["sets"][name] = entry
        print(f"{name}: frame-to-frame {entry['frame_to_frame']}, across - within boundaries "
              f"{entry['boundary_contrast']:+.3f}, latent agreement by distance "
              f"{entry['latent_agreement_by_distance']}")
    if previous.get("num") == args.num:  # generators scored before at this N and not asked for now stay
        for name, entry in previous.get("models", {}).items():
            if name not in results["models"]:
                results["models"][name], results["sets"][name] = entry, previous["sets"][name]
    if args.from_real:
        if any(not 0 <= t < 1000 for t in args.from_real):
            parser.error(f"--from-real takes timesteps in [0, 999], got {args.from_real}")
        paths = args.short if args.from_real_models is None else args.from_real_models
        if not paths:
            parser.error("--from-real needs a model: --short or --from-real-models")
        if args.from_real_clips == "training":
            clips, labels = own_training_clips(args.from_real_num)
        else:
            clips, labels = real_clips(args.from_real_num, labels=True)
        entries = previous.get("from_real", {}).get("models", {})
        for path in paths:
            sha, key = file_sha256(path), entry_name(path.stem, args.from_real_clips)
            entry = entries.get(key, {})
            if entry.get("sha256") != sha:  # another file under that name: its old scores go
                entry = {"checkpoint": shown(path), "sha256": sha, "clips": args.from_real_clips, "t": {}}
            folder = from_real_folder(args.work, path.stem, sha, args.from_real_clips, args.from_real_num)
            scores = from_real(path, clips, labels, sorted(args.from_real), folder, classifier)
            entries[key] = {**entry, "command": results["command"], "t": {**entry["t"], **scores}}
        results["from_real"] = {"models": entries, "differences": from_real_differences(entries)}
    elif "from_real" in previous:
        results["from_real"] = previous["from_real"]  # kept from an earlier run
    write_json(args.out, results)
    plot(results, args.out.with_suffix(""))
    if "from_real" in results:
        plot_from_real(results, args.out.with_name(args.out.stem + "_from_real"))
        if capacity_series(results, 300):
            plot_capacity(results, args.out.with_name(args.out.stem + "_capacity"))
    return results


if __name__ == "__main__":
    main()
