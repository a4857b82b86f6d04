"""Caption accuracy and FVD of the text-to-video model against the classifier-free guidance scale.

    python benchmarks/caption_guidance.py --ckpt data/checkpoints/mmnist_t2v.safetensors --num 256 \
        --threads 1 --out benchmarks/results/caption_guidance.json

Protocol. The real set is the short model's card set: `--num` Moving MNIST test clips (test digits, seed
`--real-seed` 1, `--digits` 2 per clip). Sample i is drawn for the caption of real clip i (its digits), with
DDIM `--steps` 50, eta 1, seed 0, at each guidance scale g in `--scales` (0 = the unconditional model,
1 = the conditional one). Per scale:
- caption accuracy: the share of samples whose digits, read by the shipped digit classifier
  (`lvdm_ref/digits.py`, `digit_accuracy`: the multiset of the clip's digits), are the caption's;
- FVD against the real set (16-frame clips only): the same real set, sampler and N as the short model's
  card (benchmarks/results/short_model/step_15000.json), so the unconditional short model's FVD there is the
  reference the goal names: caption accuracy >= 90 % at some g with FVD no worse than the short model's.
The measure is checked on the real clips themselves: with their true captions (near 1: what the classifier
gets right) and with uniformly random captions (near chance, `captions.chance_of_caption`, 0.019 for pairs).

Resumable: samples are kept per scale and batch in --work/samples/g<scale>/ (keyed by the checkpoint's
sha256) and I3D features per set in --work/features/; a rerun samples and scores only what is missing.
The JSON is written after every scale; the figure (PNG, SVG beside it) is drawn from the JSON alone
(`studies.plot_caption_guidance`).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads its OpenMP runtime
import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout without installing
from lvdm_ref.captions import chance_of_caption, random_labels  # noqa: E402
from lvdm_ref.checkpoint import atomic_write, write_json  # noqa: E402
from lvdm_ref.data import generate_moving_mnist  # noqa: E402
from lvdm_ref.digits import SHIPPED_DIGITS, DigitClassifier, digit_accuracy  # noqa: E402
from lvdm_ref.metrics import NUM_FRAMES, fvd_from_features  # noqa: E402
from lvdm_ref.studies import FeatureCache, set_threads  # noqa: E402
from lvdm_ref.text_to_video import TextToVideo  # noqa: E402
from lvdm_ref.utils import file_sha256, stream  # noqa: E402

SCALES = (0.0, 1.0, 2.0, 3.0, 5.0, 7.0)
REFERENCE = ROOT / "benchmarks" / "results" / "short_model" / "step_15000.json"
GOAL_ACCURACY = 0.9


def sample_scale(model: TextToVideo, sha: str, labels: np.ndarray, scale: float, folder: Path, steps: int, eta: float,
                 seed: int, batch_size: int) -> tuple[np.ndarray, float]:
    """Clips for captions `labels` (N, K) at guidance `scale`, each batch kept in `folder` as it is made (a
    batch of another checkpoint, sampler or caption set is made again). Returns uint8 clips and CPU seconds."""
    batches, cpu_seconds = [], 0.0
    for index, first in enumerate(range(0, len(labels), batch_size)):
        path, captions = folder / f"batch_{index:04d}.npz", labels[first:first + batch_size]
        key = f"{sha}/ddim{steps}/eta{eta}/seed{seed}/{captions.tolist()}"
        saved = dict(np.load(path)) if path.exists() else {}
        if not saved or str(saved["key"]) != key:
            start = time.process_time()
            videos = model.sample(captions, guidance_scale=scale, sampler="ddim", num_steps=steps, eta=eta, seed=seed,
                                  batch_size=batch_size, first_index=first)  # uint8 (b, F, H, W, C)
            saved = {"videos": videos, "cpu_seconds": np.float64(time.process_time() - start), "key": np.str_(key)}
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write(path, lambda tmp: np.savez(open(tmp, "wb"), **saved))
        batches.append(saved["videos"])
        cpu_seconds += float(saved["cpu_seconds"])
    return np.concatenate(batches), cpu_seconds


def reference_fvd(num: int) -> dict | None:
    """The unconditional short model's FVD (and the real-vs-real floor) on the same protocol, when recorded."""
    if not REFERENCE.exists():
        return None
    card = json.loads(REFERENCE.read_text())
    if card["generated"]["num"] != num:
        return None
    return {"short_model_fvd": round(card["generated"]["fvd"], 2), "real_vs_real_fvd": round(card["real_b"]["fvd"], 2),
            "source": str(REFERENCE.relative_to(ROOT)), "sampler": card["sampler"]}


def goal(results: dict) -> dict:
    """Scales with caption accuracy >= 90 % and FVD no worse than the short model's (when both are known)."""
    reference = (results.get("reference") or {}).get("short_model_fvd")
    accurate = [g for g, entry in results["scales"].items() if entry["accuracy"] >= GOAL_ACCURACY]
    met = [g for g in accurate if reference is not None and entry_fvd(results, g) is not None
           and entry_fvd(results, g) <= reference]
    return {"accuracy_at_least": GOAL_ACCURACY, "fvd_at_most": reference, "scales_accurate": accurate,
            "scales_meeting_both": met, "met": bool(met)}


def entry_fvd(results: dict, scale: str) -> float | None:
    return results["scales"][scale].get("fvd")


def plot(results: dict, path: Path) -> list[Path]:
    """Accuracy and FVD against g from the JSON alone (`studies.plot_caption_guidance`); PNG and SVG."""
    import matplotlib

    matplotlib.use("Agg")
    from lvdm_ref.studies import plot_caption_guidance
    from lvdm_ref.viz import save_figure

    return save_figure(plot_caption_guidance(results), path)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ckpt", type=Path, required=True, help="a text-to-video checkpoint (train --model t2v)")
    parser.add_argument("--scales", type=lambda text: [float(v) for v in text.split(",")], default=list(SCALES),
                        help="guidance scales g, comma-separated (default 0,1,2,3,5,7)")
    parser.add_argument("--num", type=int, default=256, help="clips per scale (and real clips)")
    parser.add_argument("--steps", type=int, default=50, help="DDIM steps")
    parser.add_argument("--eta", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=0, help="sampling seed")
    parser.add_argument("--real-seed", type=int, default=1, help="the real test clips (the short model card's: 1)")
    parser.add_argument("--digits", type=int, default=2, choices=(1, 2, 3), help="digits per real clip and caption")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--work", type=Path, default=ROOT / "runs" / "caption_guidance")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "caption_guidance.json")
    args = parser.parse_args(argv)
    if args.num < 2:
        parser.error("--num must be at least 2 (FVD needs a covariance)")
    set_threads(args.threads)

    model, sha = TextToVideo.load(args.ckpt), file_sha256(args.ckpt)
    channels, latent_frames, height, _ = model.latent_shape
    frames, size = latent_frames * model.vae.config.temporal_downsample, height * model.vae.config.spatial_downsample
    real, labels = generate_moving_mnist(args.num, frames, size, args.digits, "test", seed=args.real_seed,
                                         return_labels=True)  # uint8 (N, F, S, S, 1), (N, K)
    classifier = DigitClassifier.load(SHIPPED_DIGITS)
    guessed = random_labels(args.num, args.digits, stream(args.real_seed, 1)).numpy()  # random captions
    results = {
        "command": " ".join(["python", "benchmarks/caption_guidance.py", *(argv if argv is not None else sys.argv[1:])]),
        "checkpoint": str(args.ckpt), "sha256": sha, "steps_trained": model.metadata.get("steps"),
        "protocol": {"num": args.num, "real_set": f"{args.num} Moving MNIST test clips, {args.digits} digits, seed "
                     f"{args.real_seed}", "captions": "sample i gets real clip i's digits",
                     "sampler": f"ddim, {args.steps} steps, eta {args.eta:g}, seed {args.seed}",
                     "frames": frames, "size": size, "classifier": str(SHIPPED_DIGITS.relative_to(ROOT))},
        "real": {"true_captions": digit_accuracy(classifier, real, labels),
                 "random_captions": digit_accuracy(classifier, real, guessed),
                 "chance": round(chance_of_caption(labels), 4)},
        "reference": reference_fvd(args.num), "scales": {}}
    if frames != NUM_FRAMES:
        results["fvd_note"] = f"no FVD: the model makes {frames}-frame clips, the protocol scores {NUM_FRAMES}"
    features = FeatureCache(args.work / "features")
    real_features = features(f"real_{args.num}_{args.digits}d_seed{args.real_seed}", lambda: real) \
        if frames == NUM_FRAMES else None
    for scale in args.scales:
        videos, cpu = sample_scale(model, sha, labels, scale, args.work / "samples" / f"g{scale:g}", args.steps,
                                   args.eta, args.seed, args.batch_size)
        entry = {"accuracy": digit_accuracy(classifier, videos, labels), "sampling_cpu_seconds": round(cpu, 1)}
        if real_features is not None:
            fake = features(f"g{scale:g}_{args.num}_{sha[:12]}_ddim{args.steps}_seed{args.seed}", lambda: videos)
            entry["fvd"] = round(fvd_from_features(real_features, fake), 2)
        results["scales"][f"{scale:g}"] = entry
        results["goal"] = goal(results)
        write_json(args.out, results)
        plot(results, args.out.with_suffix(""))
        print(json.dumps({"g": scale, **entry}), file=sys.stderr, flush=True)
    print(json.dumps(results))
    return results


if __name__ == "__main__":
    main()
