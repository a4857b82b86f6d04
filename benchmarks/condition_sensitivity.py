"""Does a prediction or interpolation model follow its condition? The card's sensitivity, for any checkpoints.

    python benchmarks/condition_sensitivity.py data/checkpoints/mmnist_pred.safetensors runs/probes/pred_v/pred.safetensors \
        --num 32 --threads 1 --out benchmarks/results/condition_sensitivity.json

For each checkpoint: the card's held-out clips (`hierarchy_card.py`), sampled twice with the same noise, once
given their own latents and once given the next clip's (`lvdm_ref.studies.condition_sensitivity`; DDIM 50,
and for a prediction model s = 100 and guidance 0.1, the long-video settings). The ratio per generated latent
frame is 0 for a model whose output is set by the noise alone and about 1 when two conditions lead as far
apart as the true clips are. Entries already in --out are kept (a checkpoint is measured again only when its
sha256 changed).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads its OpenMP runtime

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout without installing
from lvdm_ref.checkpoint import load_weights, write_json  # noqa: E402
from lvdm_ref.diffusion import LONG_VIDEO_DDIM_STEPS  # noqa: E402
from lvdm_ref.guidance import LONG_VIDEO_GUIDANCE  # noqa: E402
from lvdm_ref.lvdm import LatentVideoDiffusion  # noqa: E402
from lvdm_ref.studies import condition_sensitivity, held_out, set_threads  # noqa: E402
from lvdm_ref.utils import file_sha256  # noqa: E402
from lvdm_ref.vae3d import encode_videos  # noqa: E402


def measure(path: Path, num: int, seed: int = 0) -> dict:
    _, meta = load_weights(path, "cpu")
    if meta.get("kind") not in ("lvdm_pred", "lvdm_interp"):
        raise SystemExit(f"{path} holds a {meta.get('kind')!r} checkpoint, not a prediction or interpolation model")
    model = LatentVideoDiffusion.load(path, kind=meta["kind"])
    config, vae = model.hierarchy, model.vae
    clips = held_out(num, 64, labels=False)  # the card's held-out clips
    if config.role == "pred":  # keyframes: every keyframe_stride-th latent
        latents = encode_videos(vae, clips, progress=False)[:, :, ::config.keyframe_stride][:, :, :config.num_latents]
        settings = dict(perturbation_level=None, guidance_weight=LONG_VIDEO_GUIDANCE)
    else:  # consecutive latents of the first frames
        latents = encode_videos(vae, clips[:, :config.num_latents * vae.config.temporal_downsample], progress=False)
        settings = {}
    result = condition_sensitivity(model, latents, seed, 32, num_steps=LONG_VIDEO_DDIM_STEPS, **settings)
    return {"role": config.role, "parameterization": model.diffusion.parameterization,
            "steps": meta.get("steps"),
            "sha256": file_sha256(path), "num": num, **result,
            "mean_ratio": round(sum(result["ratio"]) / len(result["ratio"]), 4)}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoints", type=Path, nargs="+")
    parser.add_argument("--num", type=int, default=32)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "condition_sensitivity.json")
    args = parser.parse_args(argv)
    set_threads(args.threads)
    results = json.loads(args.out.read_text()) if args.out.exists() else {}
    for path in args.checkpoints:
        key = str(path)
        if key in results and results[key]["sha256"] == file_sha256(path) and results[key]["num"] == args.num:
            continue
        results[key] = measure(path, args.num)
        print(json.dumps({key: results[key]["mean_ratio"]}), flush=True)
        write_json(args.out, results)
    return results


if __name__ == "__main__":
    main()
