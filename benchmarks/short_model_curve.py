"""The shipped short model's quality against its training steps, from measured files only:

    python benchmarks/short_model_curve.py

Reads every `benchmarks/results/short_model/step_*.json` (`card.json` of `benchmarks/short_model_card.sh`
run on that step's EMA weights: FVD at N = 256 against the test set of seed 1, with the real-vs-real floor
and the autoencoder's ceiling) and, as points of the same recipe from another run, the `factorized` entry
of the attention ablation (benchmarks/results/ablations/attention.json: same preset, latents and real set).
Writes `curve.png` / `curve.svg` and `curve.json` (the points drawn) beside them. The issue's goal, FVD at
most twice the ceiling, is drawn as a line.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout without installing
RESULTS = ROOT / "benchmarks" / "results"


def points(folder: Path = RESULTS / "short_model", ablation: Path = RESULTS / "ablations" / "attention.json") -> dict:
    cards = [json.loads(path.read_text()) for path in sorted(folder.glob("step_*.json"))]
    if not cards:
        raise SystemExit(f"no step_*.json in {folder}: run benchmarks/short_model_card.sh on a checkpoint first")
    reference = json.loads(ablation.read_text())
    entry = reference["variants"]["factorized"]
    return {"num": cards[0]["generated"]["num"],
            "this_run": {str(card["steps"]): round(card["generated"]["fvd"], 2) for card in cards},
            "same_recipe_ablation_run": {str(entry[k]["step"]): entry[k]["fvd"] for k in ("half", "end") if k in entry},
            "real_vs_real": round(cards[-1]["real_b"]["fvd"], 2),
            "autoencoder_ceiling": round(cards[-1]["reconstructed_b"]["fvd"], 2),
            "static_first_frames": round(reference["reference"]["static_first_frames"], 2)}


def plot(curve: dict):
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    figure, ax = plt.subplots(figsize=(8.5, 3.8))
    ax.axhspan(0, curve["real_vs_real"], color="0.85", label=f"real vs real ({curve['real_vs_real']:.0f})")
    ax.axhline(curve["autoencoder_ceiling"], color="k", ls="-.", lw=1,
               label=f"autoencoder ceiling ({curve['autoencoder_ceiling']:.0f})")
    ax.axhline(2 * curve["autoencoder_ceiling"], color="C2", ls=":", lw=1.5,
               label=f"goal: 2x the ceiling ({2 * curve['autoencoder_ceiling']:.0f})")
    ax.axhline(curve["static_first_frames"], color="0.4", ls="--", lw=1,
               label=f"real first frames held still ({curve['static_first_frames']:.0f})")
    for key, style, label in (("same_recipe_ablation_run", "s", "same recipe, attention ablation run"),
                              ("this_run", "o-", "mmnist_short (this run)")):
        steps = [int(s) for s in curve[key]]
        ax.plot(steps, list(curve[key].values()), style, label=label)
        for step, value in zip(steps, curve[key].values()):
            ax.annotate(f"{value:.0f}", (step, value), textcoords="offset points", xytext=(4, 4), fontsize=7)
    ax.set(xscale="log", xlabel="training steps (batch 16)", ylabel=f"FVD (N = {curve['num']})", ylim=(0, None),
           title="the short model's FVD along its training")
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ticks = [1000, 2000, 5000, 10_000, 20_000]
    ax.set_xticks(ticks, [f"{t:,}" for t in ticks])
    ax.set_xlim(1000, 20_000)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1))
    figure.tight_layout()
    return figure


def main(argv: list[str] | None = None) -> dict:
    import argparse

    import matplotlib

    argparse.ArgumentParser(description=__doc__.split("\n\n")[0]).parse_args(argv)  # no options: --help only

    matplotlib.use("Agg")
    from lvdm_ref.checkpoint import atomic_write
    from lvdm_ref.viz import save_figure

    folder = RESULTS / "short_model"
    curve = points(folder)
    atomic_write(folder / "curve.json", lambda tmp: Path(tmp).write_text(json.dumps(curve, indent=1) + "\n"))
    save_figure(plot(curve), folder / "curve")
    print(json.dumps(curve))
    return curve


if __name__ == "__main__":
    main()
