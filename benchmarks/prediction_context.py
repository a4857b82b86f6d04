"""Does a prediction model keep the given digits when it is given more context? Real-start continuations, scored.

    python benchmarks/prediction_context.py --num 128 --threads 1 \
        --model "given 1, 25 CPU-min=runs/ablations_pred/factorized/pred.safetensors" \
        --model "given 1-3, 25 + 21 CPU-min=runs/ctx3_factorized/pred.safetensors"
    python benchmarks/prediction_context.py --table   # the table of docs/studies/hierarchy_probes.md, from the JSON

The prediction ablation (`attention_prediction.py`) found that a model given one real latent carries it one
latent (4 frames) forward, not two: frames 8-15 score at the floor and at most 0.03 of clips show their true
digits there. A model trained with `--max-given 3` is given its first 1, 2 or 3 latents and makes the rest;
in a long video (`long_video.sample_keyframes`) it is given every latent made so far (up to 3) and makes only
the next one, so each latent it makes lies right next to what it was given, where the condition is followed.

Each of the first `--num` of the ablation's 256 held-out test clips (seed 20,000) gives its first latent
(frames 0-3); `sample_keyframes` continues it to 4 latents with the long-video settings (DDIM 50, eta 1, the
model's default s, guidance 0.1): a model given 1 latent makes 3 in one sample (LVDM's step), a model with
`max_given` 3 makes 3 samples of one latent each. Frames 4-15 are scored against the truth as the ablation
scores them (`lvdm_ref.studies.per_clip_scores`: PSNR per generated latent, SSIM, and whether frames 8-15
show the clip's true digits), next to holding frame 3 still and black frames; each model after the first gets
its paired difference to the first with 90 % bootstrap intervals over clips.

Generated clips are kept batch by batch in WORK/samples/ (a rerun resumes), and the JSON is rewritten after
each model. Writes OUT (JSON) and OUT_scores.npz (every per-clip score behind it).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads its OpenMP runtime
import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout without installing
from lvdm_ref.checkpoint import atomic_write, write_json  # noqa: E402
from lvdm_ref.digits import SHIPPED_DIGITS, DigitClassifier  # noqa: E402
from lvdm_ref.guidance import LONG_VIDEO_GUIDANCE  # noqa: E402
from lvdm_ref.long_video import decode_frames, long_video_plan, sample_keyframes  # noqa: E402
from lvdm_ref.lvdm import LatentVideoDiffusion  # noqa: E402
from lvdm_ref.perturbation import default_level  # noqa: E402
from lvdm_ref.studies import (HELD_OUT_SEED, held_out, kept_batches, lower_slug, markdown_table,  # noqa: E402
                              paired_differences, per_clip_scores, set_threads, summary_of)
from lvdm_ref.vae3d import encode_videos  # noqa: E402

HELD_OUT_CLIPS = 256  # the ablation's set; the first --num of it are used (a smaller set would be other clips)
FRAMES = 16
BATCH = 16  # clips continued together; each has its own streams, so the batch changes nothing


def continue_clips(model: LatentVideoDiffusion, clips: np.ndarray, folder: Path, seed: int = 0,
                   steps: int = 50, level: int | None = None) -> tuple[np.ndarray, float]:
    """uint8 (N, 16, H, W, C): each clip's first latent continued to 16 frames, batch by batch into FOLDER
    (kept batches are read back); video i draws from the streams of video i whatever the batch."""
    plan = long_video_plan(model, None, FRAMES)

    def make(first: int) -> np.ndarray:
        latents = encode_videos(model.vae, clips[first:first + BATCH], progress=False)  # (B, c, 4, h, w)
        keyframes = sample_keyframes(model, plan, len(latents), seed, start=latents[:, :, :1], num_steps=steps,
                                     perturbation_level=level, guidance_weight=LONG_VIDEO_GUIDANCE, progress=False,
                                     first_index=first)
        return decode_frames(model, keyframes, FRAMES, progress=False)

    return kept_batches(folder, len(clips), make, progress=True)


def run(models: dict[str, tuple[Path, int | None]], num: int, out: Path, work: Path, steps: int = 50) -> dict:
    """models: name -> (checkpoint, perturbation level s of the condition, None for the model's default)."""
    clips, labels = held_out(HELD_OUT_CLIPS)
    clips, labels = clips[:num], labels[:num]
    classifier = DigitClassifier.load(SHIPPED_DIGITS)
    results = json.loads(out.read_text()) if out.exists() else {}
    results = {"setting": {"num": num, "held_out_seed": HELD_OUT_SEED, "frames": FRAMES, "ddim_steps": steps,
                           "guidance": LONG_VIDEO_GUIDANCE, "scored_frames": [4, 15], "digits_read_in": [8, 15]},
               "models": results.get("models", {})}
    held = np.repeat(clips[:, 3:4], FRAMES, axis=1)
    scores = {"hold the last given frame": per_clip_scores(held, clips, labels, classifier),
              "black frames": per_clip_scores(np.zeros_like(clips), clips, labels, classifier)}
    results["references"] = {name: summary_of(value) for name, value in scores.items()}
    for name, (checkpoint, level) in models.items():
        model = LatentVideoDiffusion.load(checkpoint, kind="lvdm_pred")
        videos, seconds = continue_clips(model, clips, work / "samples" / lower_slug(name), steps=steps, level=level)
        scores[name] = per_clip_scores(videos, clips, labels, classifier)
        config = model.hierarchy
        results["models"][name] = {"checkpoint": str(checkpoint), "max_given": config.max_given,
                                   "keyframe_stride": config.keyframe_stride, "attention": model.unet.config.attention,
                                   "perturbation_level": default_level(config.max_perturbation_level) if level is None
                                   else level,
                                   "sample_cpu_seconds": round(seconds, 1), **summary_of(scores[name])}
        write_json(out, results)
    first, *rest = models
    results["differences"] = {f"{name} - {first}": paired_differences(scores[name], scores[first]) for name in rest}
    write_json(out, results)
    per_clip = {f"{lower_slug(name)}__{measure}": np.asarray(value) for name, row in scores.items()
                for measure, value in row.items()}
    atomic_write(out.with_name(f"{out.stem}_scores.npz"), lambda tmp: np.savez_compressed(open(tmp, "wb"), **per_clip))
    return results


def table(results: dict) -> str:
    """The page's table in Markdown, from the JSON alone: each model and reference, then each paired difference."""
    rows = []
    for name, row in {**results["models"], **results["references"]}.items():
        rows.append([name, " / ".join(f"{v:.2f}" for v in row["psnr_by_latent"]), f"{row['ssim']:.3f}",
                     f"{row['true_digits']:.3f}"])
    for name, row in results.get("differences", {}).items():
        by_latent = " / ".join(f"{d['mean']:+.2f} [{d['interval_90'][0]:+.2f}, {d['interval_90'][1]:+.2f}]"
                               for d in row["psnr_by_latent"])
        digits = row["true_digits"]
        rows.append([name, by_latent, f"{row['ssim']['mean']:+.3f}",
                     f"{digits['mean']:+.3f} [{digits['interval_90'][0]:+.3f}, {digits['interval_90'][1]:+.3f}]"])
    header = ["continuation (frames 0-3 given)", "PSNR frames 4-7 / 8-11 / 12-15 (dB)", "SSIM", "true digits in 8-15"]
    return "\n".join(markdown_table(header, rows, ["---", "---", "---:", "---:"]))


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0].replace("%", "%%"))
    parser.add_argument("--model", action="append", default=[], metavar="NAME=CHECKPOINT[@S]",
                        help="a prediction model with keyframes 1 latent apart, optionally with the perturbation level "
                             "S of its condition (default: the model's, 100 of s_max 250); the first is the one the "
                             "others are compared with")
    parser.add_argument("--num", type=int, default=128, help=f"held-out clips, at most {HELD_OUT_CLIPS}")
    parser.add_argument("--steps", type=int, default=50, help="DDIM steps")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "prediction_context.json")
    parser.add_argument("--work", type=Path, default=ROOT / "runs" / "prediction_context")
    parser.add_argument("--table", action="store_true", help="print the page's table from --out and stop")
    args = parser.parse_args(argv)
    if args.table:
        results = json.loads(args.out.read_text())
        print(table(results))
        return results
    if not args.model:
        parser.error("give at least one --model NAME=CHECKPOINT")
    if not 1 <= args.num <= HELD_OUT_CLIPS:
        parser.error(f"--num must be from 1 to {HELD_OUT_CLIPS}, got {args.num}")
    models = {}
    for spec in args.model:
        name, sep, path = spec.rpartition("=")
        path, at, level = path.partition("@")
        if not sep or not name or not Path(path).is_file() or (at and not level.isdigit()):
            parser.error(f"--model takes NAME=CHECKPOINT[@S] with an existing checkpoint and a whole S, got {spec!r}")
        models[name] = (Path(path), int(level) if at else None)
    set_threads(args.threads)
    results = run(models, args.num, args.out, args.work, args.steps)
    print(table(results))
    return results


if __name__ == "__main__":
    main()
