"""The harness the benchmark studies share: data sets, kept samples and features, results, statistics.

Every study in `benchmarks/` (`benchmarks/README.md` lists them) is a script with `main(argv) -> dict` that
imports what it shares with the others from here, so that two studies that say "the real set" or "a 90 %
interval" mean the same thing:

- **sets**: the studies' fixed real set (`real_clips`, test digits, seed 1), the second real set (seed 2:
  floor, still frames, the autoencoder's ceiling) and the hierarchy card's held-out clips (`held_out`);
- **kept work**: generated clips kept batch by batch as they are made (`sample_in_batches`, `kept_batches`,
  `kept_clips`) and I3D features kept per set (`FeatureCache`), so a stopped study goes on where it was;
- **the results file**: `merge_results` writes one process's entries into a JSON that other processes of the
  same study write too (`--only a b` on one core, `--only c d` on the other), under a lock;
- **statistics**: `interval` (90 % percentile bootstrap of a mean over clips), `paired_differences` (one model
  minus another on the same clips, condition and noise) and `fvd_interval`;
- **budget studies** (`Study`, `run_study`): variants of a model, each trained for the same CPU budget
  (calibrated from its CPU seconds per step) and scored at half and all of it, in `budget_study.py`, whose
  `plot_budget_curves`, `plot_budget_study` and `budget_table` draw and print their JSON;
- **figures of result files**: `plot_drift` and `plot_caption_guidance` draw the drift and caption runs of
  record (benchmarks/drift.py, benchmarks/caption_guidance.py) for their notebooks;
- **set-up**: `load_pair` (a prediction and an interpolation model on one autoencoder), `set_threads`,
  `markdown_table`, `slug`.
"""
from __future__ import annotations

import json
import re
import time
from pathlib import Path

import numpy as np
import torch

from lvdm_ref.checkpoint import atomic_write
from lvdm_ref.data import generate_moving_mnist
from lvdm_ref.metrics import fvd_from_features, i3d_features
from lvdm_ref.utils import file_sha256

REAL_SEED = 1  # the studies' real set: 2-digit 16-frame test clips (also the short model card's)
OTHER_REAL_SEED = 2  # the second real set: the real-vs-real floor, still frames and the autoencoder's ceiling
HELD_OUT_SEED = 20_000  # the hierarchy card's held-out clips, given to conditional models


# ----------------------------------------------------------------------------- sets
def real_clips(num: int, seed: int = REAL_SEED, *, labels: bool = False):
    """uint8 (N, 16, 64, 64, 1) Moving MNIST test clips with 2 digits (and their labels (N, 2) with `labels`)."""
    return generate_moving_mnist(num, 16, 64, 2, "test", seed=seed, return_labels=labels)


def held_out(num: int, frames: int = 16, *, labels: bool = True):
    """The hierarchy card's held-out test clips, uint8 (N, frames, 64, 64, 1) (and labels (N, 2))."""
    return generate_moving_mnist(num, frames, 64, 2, "test", seed=HELD_OUT_SEED, return_labels=labels)


def reconstruct(vae_path: Path, videos: np.ndarray) -> np.ndarray:
    """uint8 clips -> the autoencoder's reconstructions, uint8 (the ceiling of any model on its latents)."""
    from lvdm_ref.utils import from_uint8, to_uint8
    from lvdm_ref.vae3d import VideoAutoencoder

    vae = VideoAutoencoder.load(vae_path)
    with torch.no_grad():
        return np.concatenate([to_uint8(vae.reconstruct(from_uint8(videos[i:i + 16]))) for i in range(0, len(videos), 16)])


def load_pair(pred_path: Path, interp_path: Path | None = None, device: str | torch.device = "cpu"):
    """(prediction model, interpolation model or None), the second on the first's autoencoder."""
    from lvdm_ref.lvdm import LatentVideoDiffusion

    pred = LatentVideoDiffusion.load(pred_path, kind="lvdm_pred", device=device)
    interp = None if interp_path is None else LatentVideoDiffusion.load(interp_path, kind="lvdm_interp", vae=pred.vae,
                                                                        device=device)
    return pred, interp


def set_threads(threads: int | None) -> None:
    """torch's CPU threads for this process; None or 0 leaves torch's choice."""
    if threads:
        torch.set_num_threads(threads)


# ----------------------------------------------------------------------------- kept work
def sample_in_batches(checkpoint: Path, num: int, folder: Path, sampler: str = "ddim", steps: int | None = 50,
                      eta: float = 1.0, seed: int = 0, batch_size: int = 16) -> tuple[np.ndarray, float]:
    """`LatentVideoDiffusion.sample(num, ..., seed)` of `checkpoint`, the same clips (each clip has its own
    stream, so batching changes nothing), with each batch kept in `folder` as it is made: an evaluation stopped halfway
    (a pixel model's 256 samples take most of an hour) goes on where it was. Returns the uint8 clips and the
    sampling CPU seconds of all batches (those of earlier calls included). A batch file of another
    checkpoint (by sha256) is sampled again."""
    from lvdm_ref.lvdm import LatentVideoDiffusion

    sha, model, batches, cpu_seconds = file_sha256(checkpoint), None, [], 0.0
    for index, first in enumerate(range(0, num, batch_size)):
        path = folder / f"batch_{index:04d}.npz"
        count = min(batch_size, num - first)
        saved = dict(np.load(path)) if path.exists() else {}
        if not saved or str(saved["sha256"]) != sha or len(saved["videos"]) != count or "streams" not in saved:
            model = model or LatentVideoDiffusion.load(checkpoint)
            start = time.process_time()
            videos = model.sample(count, sampler=sampler, num_steps=steps, eta=eta, seed=seed, first_index=first)
            saved = {"videos": videos, "cpu_seconds": np.float64(time.process_time() - start), "sha256": np.str_(sha),
                     "streams": np.str_("one per clip")}  # batches of the older seed + i idiom are redone
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write(path, lambda tmp: np.savez(open(tmp, "wb"), **saved))
        batches.append(saved["videos"])
        cpu_seconds += float(saved["cpu_seconds"])
    return np.concatenate(batches), cpu_seconds


def kept_batches(folder: Path, num: int, make, batch: int = 16, progress: bool = False) -> tuple[np.ndarray, float]:
    """`make(first)` (uint8 clips first..first + batch) for every batch of `num` clips, each kept in FOLDER as it is
    made (with its CPU seconds) and read back on a rerun: the clips and the CPU seconds they took in all."""
    from tqdm.auto import tqdm

    folder.mkdir(parents=True, exist_ok=True)
    out, seconds = [], 0.0
    for first in tqdm(range(0, num, batch), desc=folder.name, disable=not progress):
        path = folder / f"{first:05d}.npz"
        if not path.exists():
            start = time.process_time()
            with torch.no_grad():
                videos = make(first)
            took = time.process_time() - start
            atomic_write(path, lambda tmp: np.savez(open(tmp, "wb"), videos=videos, cpu_seconds=took))
        saved = np.load(path)
        out.append(saved["videos"])
        seconds += float(saved["cpu_seconds"])
    return np.concatenate(out), seconds


def kept_clips(path: Path, sha: str, make) -> np.ndarray:
    """The uint8 clips in `path` when they were made by the checkpoint `sha`, else make and keep them."""
    if path.exists():
        saved = np.load(path)
        if str(saved["sha256"]) == sha:
            return saved["videos"]
    videos = make()

    def write(tmp: str) -> None:
        with open(tmp, "wb") as handle:
            np.savez(handle, videos=videos, sha256=np.str_(sha))

    atomic_write(path, write)
    return videos


class FeatureCache:
    """I3D features of clip sets, kept as FOLDER/NAME.npy; the network is loaded at the first set it embeds."""

    def __init__(self, folder: Path):
        self.folder, self.i3d = Path(folder), None

    def __call__(self, name: str, videos_fn) -> np.ndarray:
        """The features of `videos_fn()` (uint8 clips), from FOLDER/NAME.npy when it is there."""
        path = self.folder / f"{name}.npy"
        if path.exists():
            return np.load(path)
        if self.i3d is None:
            from lvdm_ref.i3d import load_i3d

            self.i3d = load_i3d()
        features = i3d_features(videos_fn(), model=self.i3d)
        atomic_write(path, lambda tmp: np.save(open(tmp, "wb"), features))
        return features


# ----------------------------------------------------------------------------- the results file
def merge_results(path: Path, results: dict, section: str, touched: set[str]) -> dict:
    """Write this process's entries into the JSON at `path`, under a lock, and return what the file now holds:
    in `section`, the entries named in `touched` replace those on disk and the others on disk stay; every other
    dict is updated key by key and anything else is kept as the file has it. So two studies of one file (for
    example `--only a b` and `--only c d`, one per core) never drop each other's results."""
    import fcntl

    with open(path.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        disk = json.loads(path.read_text()) if path.exists() else {}
        for key, value in results.items():
            if isinstance(value, dict) and isinstance(disk.get(key), dict):
                disk[key].update(value) if key != section else disk[key].update(
                    {name: entry for name, entry in value.items() if name in touched})
            else:
                disk.setdefault(key, value)
        disk.setdefault(section, {})
        merged = {**disk, section: {**disk[section], **{
            name: entry for name, entry in results[section].items() if name in touched}}}
        text = json.dumps(merged, indent=1) + "\n"
        atomic_write(path, lambda tmp: Path(tmp).write_text(text))
    return merged


# ----------------------------------------------------------------------------- statistics
def bits(flags: np.ndarray) -> str:
    """Per-clip 0/1 flags as a string ("1011"), how the results files keep them for pairing clip by clip."""
    return "".join("1" if flag else "0" for flag in flags)


def from_bits(text: str) -> np.ndarray:
    """The flags of `bits`, as floats (N,)."""
    return np.array([char == "1" for char in text], dtype=float)


def interval(values: np.ndarray, resamples: int = 2000, seed: int = 0) -> list[float]:
    """90 % percentile interval of the mean of per-clip `values` over `resamples` resamplings of the clips."""
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, len(values), (resamples, len(values)))].mean(1)
    return [round(float(q), 4) for q in np.percentile(means, [5, 95])]


def unpaired_difference(a: np.ndarray, b: np.ndarray, resamples: int = 2000, seed: int = 0) -> dict:
    """mean(a) - mean(b) of per-clip values on two different sets of clips, with the 90 % percentile interval
    of the gap over independent resamplings of each set."""
    rng = np.random.default_rng(seed)
    gaps = [a[rng.integers(0, len(a), len(a))].mean() - b[rng.integers(0, len(b), len(b))].mean()
            for _ in range(resamples)]
    return {"difference": round(float(a.mean() - b.mean()), 4),
            "interval": [round(float(q), 4) for q in np.percentile(gaps, [5, 95])],
            "num": [len(a), len(b)], "paired": False}


def paired_differences(scores_a: dict, scores_b: dict, measures=("psnr", "ssim", "true_digits")) -> dict:
    """Per-clip scores of a minus those of b on the same clips (same condition and noise): the mean and 90 %
    interval of each measure, and of each generated latent's PSNR (`psnr_by_latent`, (N, 3)) when both have it."""
    row = {}
    for measure in measures:
        gap = np.asarray(scores_a[measure]) - np.asarray(scores_b[measure])
        row[measure] = {"mean": round(float(gap.mean()), 4), "interval_90": interval(gap)}
    if "psnr_by_latent" in scores_a and "psnr_by_latent" in scores_b:  # (N, 3): each generated latent's frames
        gaps = np.asarray(scores_a["psnr_by_latent"]) - np.asarray(scores_b["psnr_by_latent"])
        row["psnr_by_latent"] = [{"mean": round(float(gap.mean()), 4), "interval_90": interval(gap)} for gap in gaps.T]
    return row


def fvd_interval(reference: np.ndarray, a: np.ndarray, b: np.ndarray, resamples: int = 200, seed: int = 0) -> list[float]:
    """90 % interval of FVD(a) - FVD(b) over resampled clips: the same picks for both (paired), reference fixed."""
    rng = np.random.default_rng(seed)
    gaps = []
    for _ in range(resamples):
        pick = rng.integers(0, len(a), len(a))
        gaps.append(fvd_from_features(reference, a[pick]) - fvd_from_features(reference, b[pick]))
    return [round(float(q), 2) for q in np.percentile(gaps, [5, 95])]


# ----------------------------------------------------------------------------- prediction scored against the truth
SCORED = slice(4, 16)  # the frames made from generated latents when frames 0-3 (one latent) are given
CONTENT = slice(8, 16)  # where the digits are read: made only from generated latents, 4+ frames after the given ones


def per_clip_scores(videos: np.ndarray, truth: np.ndarray, labels: np.ndarray, classifier) -> dict:
    """Per clip: PSNR (dB) and SSIM of frames 4-15 (means over frames), PSNR of each generated latent's 4 frames
    (4-7, 8-11, 12-15: how far from the given latent the condition still shows), and whether frames 8-15 show
    the true digits (read by `classifier`, `digits.clip_digits`)."""
    from lvdm_ref.digits import clip_digits
    from lvdm_ref.metrics import psnr, ssim
    from lvdm_ref.utils import from_uint8

    fake, real = from_uint8(videos[:, SCORED]), from_uint8(truth[:, SCORED])  # (N, C, 12, H, W) in [-1, 1]
    fake01, real01 = (fake + 1) / 2, (real + 1) / 2
    per_frame = psnr(fake01, real01)  # (N, 12)
    read = clip_digits(classifier, videos[:, CONTENT])
    true = (read == torch.as_tensor(labels).sort(dim=1).values).all(dim=1)
    return {"psnr": per_frame.mean(1).numpy(), "ssim": ssim(fake01, real01).mean(1).numpy(),
            "psnr_by_latent": per_frame.unflatten(1, (-1, 4)).mean(2).numpy(), "true_digits": true.numpy().astype(float)}


def summary_of(scores: dict) -> dict:
    """The means over clips (a list for a per-clip array of several values, like `psnr_by_latent`)."""
    return {name: (np.round(np.mean(values, axis=0), 4).tolist() if np.ndim(values) > 1 else round(float(np.mean(values)), 4))
            for name, values in scores.items()}


# ----------------------------------------------------------------------------- tables and names
def markdown_table(header: list[str], rows: list[list[str]], align: list[str] | None = None) -> list[str]:
    """The lines of a Markdown table; `align` holds each column's separator ("---", "---:")."""
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(align or ["---"] * len(header)) + "|"]
    return lines + ["| " + " | ".join(row) + " |" for row in rows]


def slug(name: str) -> str:
    """A file name for a variant's name: every character but letters and digits becomes "_" (the rule that named
    the drift run's feature files and the probes' run folders)."""
    return "".join(c if c.isalnum() else "_" for c in name).strip("_")


def lower_slug(name: str) -> str:
    """Lower case, each run of other characters one "_" (the rule that named the context probe's sample folders)."""
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")


# ----------------------------------------------------------------------------- conditional models on real latents
SENSITIVITY_CLIPS = 64  # clips of the card that are sampled again with another clip's condition


def scores(fake: torch.Tensor, real: torch.Tensor) -> dict:
    """Mean per-frame PSNR and SSIM of videos (B, C, F, H, W) in [-1, 1]."""
    from lvdm_ref.metrics import psnr, ssim

    fake01, real01 = (fake.clamp(-1, 1) + 1) / 2, (real + 1) / 2
    return {"psnr": round(float(psnr(fake01, real01).mean()), 3), "ssim": round(float(ssim(fake01, real01).mean()), 4)}


def fill(model, latents: torch.Tensor, seed: int, batch_size: int, first_index: int = 0,
         **sample_kwargs) -> torch.Tensor:
    """The model's role applied to real latents (N, c, f, h, w): the given frames kept, the rest sampled.
    Clip i draws from `stream(seed, first_index + i)`: a set sampled in pieces equals the set sampled at once."""
    from lvdm_ref.hierarchy import given_frames, sample_conditional
    from lvdm_ref.utils import stream

    config = model.hierarchy
    mask = given_frames(config.role, latents.shape[2]).view(1, 1, -1, 1, 1)  # (1, 1, f, 1, 1)
    out = []
    for first in range(0, len(latents), batch_size):
        given = latents[first:first + batch_size]
        generators = [stream(seed, first_index + index) for index in range(first, first + len(given))]
        out.append(sample_conditional(model.unet, model.diffusion, config, given, mask.expand(len(given), -1, -1, -1, -1),
                                      generators, **sample_kwargs))
    return torch.cat(out)


def condition_sensitivity(model, latents: torch.Tensor, seed: int, batch_size: int,
                          own: torch.Tensor | None = None, **sample_kwargs) -> dict:
    """How much the output follows the condition: clip i sampled twice with the same noise, once given its own
    latents and once given those of clip i + 1; the mean absolute difference of the two outputs at each
    generated latent frame, divided by that of the two true clips there (N, c, f, h, w real latents).

    0: the output is set by the noise alone; about 1: two conditions lead as far apart as the truth does.
    `own`: the outputs given their own latents, when already sampled with `fill(model, latents, seed, ...)`.
    """
    from lvdm_ref.hierarchy import given_frames

    swapped = torch.roll(latents, shifts=-1, dims=0)  # clip i given clip i + 1's latents, same streams
    own = fill(model, latents, seed, batch_size, **sample_kwargs) if own is None else own
    other = fill(model, swapped, seed, batch_size, **sample_kwargs)
    generated = (given_frames(model.hierarchy.role, latents.shape[2]) == 0).nonzero().flatten().tolist()
    dims = (0, 1, 3, 4)  # all but the frame axis
    output_gap = (own - other).abs().mean(dims)  # (f,)
    truth_gap = (latents - swapped).abs().mean(dims)
    return {"frames": generated, "ratio": [round(float(output_gap[k] / truth_gap[k]), 4) for k in generated],
            "output_gap": [round(float(output_gap[k]), 4) for k in generated],
            "truth_gap": [round(float(truth_gap[k]), 4) for k in generated]}


@torch.no_grad()
def prediction_card(pred, clips: np.ndarray, args) -> dict:
    """The prediction model given the first keyframe latent of each real clip (N, F, H, W, C): each generated
    keyframe decoded alone and scored against the true frames, next to the autoencoder's reconstruction (the
    ceiling) and the given keyframe repeated (the trivial guess); with the condition sensitivity.
    `args`: seed, batch_size, steps, guidance (and sensitivity_clips)."""
    from lvdm_ref.utils import from_uint8
    from lvdm_ref.vae3d import encode_videos

    config, vae = pred.hierarchy, pred.vae
    stride_frames = config.keyframe_stride * vae.config.temporal_downsample  # 16 frames between keyframes
    latents = encode_videos(vae, clips, progress=False)[:, :, ::config.keyframe_stride][:, :, :config.num_latents]
    start = time.process_time()
    sampled = fill(pred, latents, args.seed, args.batch_size, num_steps=args.steps, perturbation_level=None,
                   guidance_weight=args.guidance)
    seconds = time.process_time() - start
    num = min(len(latents), getattr(args, "sensitivity_clips", SENSITIVITY_CLIPS))
    sensitivity = None if num == 0 else condition_sensitivity(pred, latents[:num], args.seed, args.batch_size, own=sampled[:num],
                                        num_steps=args.steps, perturbation_level=None, guidance_weight=args.guidance)
    real = from_uint8(clips)  # (N, C, 64, H, W)
    rows = {"model": [], "ceiling": [], "repeat the given keyframe": []}
    for k in range(1, config.num_latents):  # each new keyframe decoded alone: 4 frames
        truth = real[:, :, k * stride_frames:k * stride_frames + vae.config.temporal_downsample]
        for name, latent in (("model", sampled[:, :, k:k + 1]), ("ceiling", latents[:, :, k:k + 1]),
                             ("repeat the given keyframe", latents[:, :, :1])):
            rows[name].append(scores(pred.decode(latent), truth))
    per_keyframe = {name: {"psnr": [r["psnr"] for r in values], "ssim": [r["ssim"] for r in values]}
                    for name, values in rows.items()}
    return {name: {"psnr": round(float(np.mean(v["psnr"])), 3), "ssim": round(float(np.mean(v["ssim"])), 4),
                   "per_keyframe": v} for name, v in per_keyframe.items()} | {
        "settings": {"perturbation_level": "model default (100 for s_max = 250)", "guidance": args.guidance,
                     "ddim_steps": args.steps, "eta": 1.0},
        "sample_cpu_seconds": round(seconds, 1), "condition_sensitivity": sensitivity}


@torch.no_grad()
def interpolation_card(interp, clips: np.ndarray, reference: np.ndarray | None, args) -> dict:
    """The interpolation model given the first and last of the first latents of each real clip: the middle
    frames scored against the truth, next to the ceiling and the straight line between the given latents;
    FVD of the first 16 decoded frames against `reference` unless `args.no_fvd`; the condition sensitivity."""
    from lvdm_ref.metrics import compute_fvd
    from lvdm_ref.utils import from_uint8, to_uint8
    from lvdm_ref.vae3d import encode_videos

    config, vae = interp.hierarchy, interp.vae
    per_latent = vae.config.temporal_downsample
    frames = config.num_latents * per_latent  # 20
    short = clips[:, :frames]
    latents = encode_videos(vae, short, progress=False)  # (N, c, 5, h, w)
    start = time.process_time()
    sampled = fill(interp, latents, args.seed, args.batch_size, num_steps=args.steps)
    seconds = time.process_time() - start
    num = min(len(latents), getattr(args, "sensitivity_clips", SENSITIVITY_CLIPS))
    sensitivity = None if num == 0 else condition_sensitivity(interp, latents[:num], args.seed, args.batch_size, own=sampled[:num],
                                        num_steps=args.steps)
    weights = torch.linspace(0, 1, config.num_latents).view(1, 1, -1, 1, 1)
    line = latents[:, :, :1] * (1 - weights) + latents[:, :, -1:] * weights
    real = from_uint8(short)
    middle = slice(per_latent, frames - per_latent)  # the frames of the three generated latents
    result, decoded = {}, {}
    for name, z in (("model", sampled), ("ceiling", latents), ("straight line between the ends", line)):
        decoded[name] = torch.cat([interp.decode(z[i:i + 32]) for i in range(0, len(z), 32)])  # (N, C, 20, H, W)
        result[name] = scores(decoded[name][:, :, middle], real[:, :, middle])
    if not args.no_fvd and frames >= 16:  # FVD takes 16-frame clips
        from lvdm_ref.i3d import load_i3d

        i3d = load_i3d()
        sets = {"model": to_uint8(decoded["model"][:, :, :16]), "ceiling": to_uint8(decoded["ceiling"][:, :, :16]),
                "real_vs_real": short[:, :16]}
        result["fvd"] = {name: round(compute_fvd(reference, clips16, model=i3d, progress=False)["fvd"], 2)
                         for name, clips16 in sets.items()}
    result["settings"] = {"perturbation_level": "model default", "guidance": 0.0, "ddim_steps": args.steps, "eta": 1.0}
    result["sample_cpu_seconds"] = round(seconds, 1)
    result["condition_sensitivity"] = sensitivity
    return result


# ----------------------------------------------------------------------------- figures of result files
def plot_drift(results: dict):
    """A drift run of record (benchmarks/drift.py's JSON): FVD of each 16-frame window against its start frame,
    one line per variant, the real videos' windows (the floor) as a band, and the continuation of real clips
    (when measured) dashed. Every number comes from `results`."""
    import matplotlib.pyplot as plt

    figure, ax = plt.subplots(figsize=(7.5, 4.2))
    num, floor = results["num"], results["floor"]["fvd"]
    ax.fill_between([int(s) for s in floor], 0, list(floor.values()), color="0.85", label=f"real videos (floor), N = {num}")
    for name, entry in results["variants"].items():
        ax.plot([int(s) for s in entry["fvd"]], list(entry["fvd"].values()), "o-", ms=3, label=name)
    if "real_start" in results:
        curve = results["real_start"]["fvd"]
        ax.plot([int(s) for s in curve], list(curve.values()), "k--", lw=1, label="real start: perturbation + guidance")
    ax.set(xlabel="window start frame", ylabel=f"FVD of 16-frame windows (N = {num})", ylim=(0, None),
           title=f"drift over {results['frames']} frames, DDIM {results['steps']}")
    ax.legend(fontsize=7)
    figure.tight_layout()
    return figure


def plot_caption_guidance(results: dict):
    """A caption-guidance run (benchmarks/caption_guidance.py's JSON): caption accuracy and FVD against the
    guidance scale g, with the real clips' accuracy, chance, and the short model's FVD as references. Every
    number comes from `results`."""
    import matplotlib.pyplot as plt

    scales = sorted(results["scales"], key=float)
    g = [float(s) for s in scales]
    num = results["protocol"]["num"]
    figure, (left, right) = plt.subplots(1, 2, figsize=(9, 3.6))
    left.plot(g, [results["scales"][s]["accuracy"] for s in scales], "o-", label="generated")
    left.axhline(results["real"]["true_captions"], color="k", ls="--", lw=1, label="real clips, true captions")
    left.axhline(results["real"]["random_captions"], color="0.5", ls=":", lw=1, label="real clips, random captions")
    left.set(xlabel="guidance scale g", ylabel="caption accuracy", ylim=(0, 1.02), title=f"digits as asked (N = {num})")
    left.legend(fontsize=7)
    fvd = [results["scales"][s].get("fvd") for s in scales]
    if any(value is not None for value in fvd):
        right.plot(g, fvd, "o-", color="C1", label="generated, captions of the real clips")
        reference = results.get("reference") or {}
        if "short_model_fvd" in reference:
            right.axhline(reference["short_model_fvd"], color="k", ls="--", lw=1, label="unconditional short model")
            right.axhline(reference["real_vs_real_fvd"], color="0.5", ls=":", lw=1, label="real vs real (floor)")
        right.set(ylim=(0, None))
        right.legend(fontsize=7)
    else:
        right.text(0.5, 0.5, results.get("fvd_note", "no FVD"), ha="center", va="center", wrap=True,
                   transform=right.transAxes, fontsize=8)
    right.set(xlabel="guidance scale g", ylabel=f"FVD (N = {num})", title="quality")
    figure.tight_layout()
    return figure
