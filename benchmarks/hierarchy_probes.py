"""Short probes of the hierarchy's design: which choices let a prediction/interpolation model use its condition.

    python benchmarks/hierarchy_probes.py --vae data/checkpoints/mmnist_vae.safetensors --steps 2000 \
        --num 64 --threads 1 --out benchmarks/results/hierarchy_probes.json [--only NAME ...]

Each probe trains one model of the `mmnist` preset with one change (its `overrides`) for the same number
of steps, from scratch, on the same encoded long clips and seed, then scores it with the model card's
protocol (`hierarchy_card.py`: `lvdm_ref.studies.prediction_card`, held-out clips, DDIM 50, N = --num): PSNR/SSIM of the generated latents
against the true frames, next to the trivial guess and the autoencoder's ceiling. The CPU seconds of
training come from the trainer's clock.

Resumable: a finished probe's entry is kept in the JSON and skipped; an unfinished one resumes from its
run folder (runs/probes/NAME). Delete an entry to redo it.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads its OpenMP runtime
import torch  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout without installing
from lvdm_ref.checkpoint import write_json  # noqa: E402
from lvdm_ref.config import get_preset  # noqa: E402
from lvdm_ref.lvdm import LatentVideoDiffusion  # noqa: E402
from lvdm_ref.recipes import train_hierarchy_model  # noqa: E402
from lvdm_ref.studies import held_out, interpolation_card, markdown_table, prediction_card, slug  # noqa: E402

# name -> (role, overrides). Overrides: parameterization, attention_levels, attention, condition_prob, every_start,
# keyframe_stride, max_perturbation_level.
PROBES = {
    "pred eps (LVDM's, the shipped recipe)": ("pred", {}),
    "pred v": ("pred", {"parameterization": "v"}),
    "pred v, attention at 16x16 too": ("pred", {"parameterization": "v", "attention_levels": (0, 1, 2)}),
    "pred v, condition in 90 %": ("pred", {"parameterization": "v", "condition_prob": 0.9}),
    "pred v, joint attention": ("pred", {"parameterization": "v", "attention": "joint"}),
    "pred v, windows at every latent": ("pred", {"parameterization": "v", "every_start": True}),
    "pred v, keyframes 8 frames apart": ("pred", {"parameterization": "v", "keyframe_stride": 2}),
    "pred v, keyframes 4 frames apart": ("pred", {"parameterization": "v", "keyframe_stride": 1}),
    "pred v, keyframes 4 frames apart, attention at 16x16 too": ("pred", {"parameterization": "v", "keyframe_stride": 1,
                                                                          "attention_levels": (0, 1, 2)}),
    "pred v, condition in 90 %, no perturbation": ("pred", {"parameterization": "v", "condition_prob": 0.9,
                                                            "max_perturbation_level": 0}),
    "interp eps (LVDM's, the shipped recipe)": ("interp", {}),
    "interp v": ("interp", {"parameterization": "v"}),
}


def probe_preset(overrides: dict):
    preset = get_preset("mmnist")
    diffusion = dataclasses.replace(preset.diffusion, parameterization=overrides.get("parameterization", "eps"))
    unet = dataclasses.replace(preset.hierarchy_unet,
                               attention_levels=overrides.get("attention_levels", preset.hierarchy_unet.attention_levels),
                               attention=overrides.get("attention", preset.hierarchy_unet.attention))
    return dataclasses.replace(preset, diffusion=diffusion, hierarchy_unet=unet)


def run_probe(name: str, args) -> dict:
    role, overrides = PROBES[name]
    out = args.runs / slug(name)[:60]
    resume = (out / "train_state.pt").exists()
    shared = args.runs / "latents.pt"  # every probe trains on the same encoded clips: encode them once
    out.mkdir(parents=True, exist_ok=True)
    if shared.exists() and not (out / "latents.pt").exists():
        os.link(shared, out / "latents.pt")
    summary = train_hierarchy_model(probe_preset(overrides), role, args.vae, out, steps=args.steps,
                                    condition_prob=overrides.get("condition_prob"), resume=resume, device="cpu",
                                    every_start=overrides.get("every_start", False),
                                    keyframe_stride=overrides.get("keyframe_stride"),
                                    max_perturbation_level=overrides.get("max_perturbation_level"),
                                    num_frames=64)  # the same 64-frame clips for every probe (one encoding)
    if not shared.exists():
        os.link(out / "latents.pt", shared)
    model = LatentVideoDiffusion.load(summary["checkpoint"], kind=f"lvdm_{role}")
    clips = held_out(args.num, 64, labels=False)  # the card's held-out clips
    card_args = argparse.Namespace(seed=0, batch_size=32, steps=50, guidance=0.1, no_fvd=True)
    start = time.process_time()
    card = prediction_card(model, clips, card_args) if role == "pred" else interpolation_card(model, clips, None, card_args)
    return {"role": role, "overrides": {k: list(v) if isinstance(v, tuple) else v for k, v in overrides.items()},
            "steps": summary["steps"], "train_cpu_seconds": summary["total_cpu_seconds"],
            "final_loss": summary["final_loss"],
            "card": card, "card_cpu_seconds": round(time.process_time() - start, 1)}


def table(results: dict) -> str:
    """The probe table of docs/studies/hierarchy_probes.md in Markdown, from the JSON alone: one row per probe."""
    rows = []
    for name, entry in results["probes"].items():
        card = entry["card"]
        baseline = "repeat the given keyframe" if entry["role"] == "pred" else "straight line between the ends"
        sensitivity = card.get("condition_sensitivity")
        ratios = ", ".join(f"{r:.2f}" for r in sensitivity["ratio"]) if sensitivity else "not measured"
        rows.append([name, f"{entry['steps']:,} steps, {entry['train_cpu_seconds'] / 60:.1f} CPU-min",
                     f"{card['model']['psnr']:.2f} dB ({card[baseline]['psnr']:.2f} / {card['ceiling']['psnr']:.2f})",
                     ratios])
    return "\n".join(markdown_table(["probe", "training", "card PSNR (repeat / ceiling)",
                                      "sensitivity (frames 1, 2, 3)"], rows))


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vae", type=Path, default=ROOT / "data" / "checkpoints" / "mmnist_vae.safetensors")
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--num", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--only", nargs="*", default=None, help="probe names, from: " + "; ".join(PROBES).replace("%", "%%"))
    parser.add_argument("--runs", type=Path, default=ROOT / "runs" / "probes")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "hierarchy_probes.json")
    parser.add_argument("--table", action="store_true", help="print the Markdown table of OUT and exit")
    args = parser.parse_args(argv)
    if args.table:
        print(table(json.loads(args.out.read_text())))
        return {}
    unknown = set(args.only or ()) - set(PROBES)
    if unknown:
        parser.error(f"unknown probes {sorted(unknown)}; known: {list(PROBES)}")
    torch.set_num_threads(args.threads)
    results = json.loads(args.out.read_text()) if args.out.exists() else {"probes": {}}
    results.update(command=" ".join(["python", *sys.argv]), steps=args.steps, num=args.num)
    for name in args.only or PROBES:
        if name in results["probes"]:
            continue
        results["probes"][name] = run_probe(name, args)
        saved = json.loads(args.out.read_text()) if args.out.exists() else {"probes": {}}  # another run may have
        saved["probes"][name] = results["probes"][name]  # added its probes meanwhile: keep them
        write_json(args.out, saved | {k: v for k, v in results.items() if k != "probes"})
        card = results["probes"][name]["card"]
        print(json.dumps({"probe": name, "psnr": card["model"]["psnr"]}), flush=True)
    return results


if __name__ == "__main__":
    main()
