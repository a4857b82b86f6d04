"""`train`: the diffusion models on a frozen autoencoder: the short LVDM, the hierarchy's prediction and
interpolation models, and the caption model (`lvdm_ref/recipes/`).

`resolve_train` turns the arguments into a preset and hands it to the recipe's own resolve step
(`recipes.resolve_short_run`, `recipes.resolve_hierarchy_run`), which checks the whole run from the
checkpoints' and the videos' headers; `run_train` then only trains. A flag that the chosen model does
not use is refused, never ignored (`MODEL_FLAGS`)."""
from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import torch

from lvdm_ref.checkpoint import SHIPPED_DIR
from lvdm_ref.cli.checks import UsageError, device, header, input_file, integer, number, output_folder, video_root
from lvdm_ref.config import PRESET_NAMES, RECIPES, get_preset, with_recipe
from lvdm_ref.diffusion import PARAMETERIZATIONS
from lvdm_ref.perturbation import TRAIN_MAX_LEVEL
from lvdm_ref.recipes import fit_hierarchy, fit_short, fit_t2v, resolve_hierarchy_run, resolve_short_run
from lvdm_ref.recipes.hierarchy import MAX_KEYFRAME_STRIDE
from lvdm_ref.text_to_video import CAPTION_DROP_PROB
from lvdm_ref.video_training import video_preset

MODELS = ("short", "pred", "interp", "t2v")
HIERARCHY = ("pred", "interp")
# The flags that only some models use: flag -> (argument, models). Any other model refuses them.
MODEL_FLAGS = {
    "--max-perturbation-level": ("max_perturbation_level", HIERARCHY),
    "--condition-prob": ("condition_prob", HIERARCHY),
    "--snapshot-every": ("snapshot_every", ("short", *HIERARCHY)),
    "--every-start": ("every_start", HIERARCHY),
    "--keyframe-stride": ("keyframe_stride", HIERARCHY),
    "--max-given": ("max_given", ("pred",)),
    "--init": ("init", MODELS),
    "--caption-drop": ("caption_drop", ("t2v",)),
    "--parameterization": ("parameterization", ("short", "pred", "interp")),
    "--data": ("data", ("short", "pred", "interp")),
    "--split": ("split", ("short", "pred", "interp")),
}


def register(commands) -> None:
    train = commands.add_parser("train", help="train the latent diffusion model on a frozen autoencoder")
    train.add_argument("--model", choices=MODELS, default="short",
                       help="short clips, the hierarchy's prediction / interpolation model, or text-to-video "
                            "(captions such as '3 and 7', classifier-free guidance)")
    train.add_argument("--preset", choices=PRESET_NAMES, default="mmnist")
    train.add_argument("--vae", type=input_file(".safetensors"), required=True,
                       help="autoencoder checkpoint (.safetensors), trained on the preset's frames")
    train.add_argument("--out", type=output_folder, required=True,
                       help="run folder: state, log, loss plot, <model>.safetensors")
    train.add_argument("--steps", type=integer(1), default=None, help="total steps (default: the preset's)")
    train.add_argument("--num-clips", type=integer(1), default=None,
                       help="clips to encode (default: the preset's; at least one batch of training samples)")
    train.add_argument("--data", type=video_root, default=None,
                       help="real videos (as train-vae --data, read in the autoencoder's channels): the latent set "
                       "is encoded from them once and cached, keyed by the files and the autoencoder")
    train.add_argument("--split", choices=("all",), default=None,
                       help="--data: every video, test videos included (needed for a UCF-101 folder without its "
                       "split lists; by default UCF-101's train list)")
    train.add_argument("--recipe", choices=RECIPES, default="preset",
                       help="the preset's training recipe, or LVDM's own (L1 on eps, lr 6e-5/8e-5 constant, EMA 0.9999)")
    train.add_argument("--max-perturbation-level", type=integer(0), default=None,
                       help=f"pred/interp: training s_max of the conditional latent perturbation (default: "
                            f"{TRAIN_MAX_LEVEL} of 1000 timesteps, T/4); 0 trains without it")
    train.add_argument("--parameterization", choices=PARAMETERIZATIONS, default=None,
                       help="short/pred/interp: what the UNet predicts (default: the preset's, eps, or --init's); v "
                            "keeps a conditional model's x0 estimate bounded at high noise; with --init the model "
                            "learns the new target from the old weights")
    train.add_argument("--condition-prob", type=number(0.0, 1.0, above=True), default=None,
                       help="pred/interp: share of training samples given their condition (LVDM: 0.5 pred, 0.9 interp)")
    train.add_argument("--snapshot-every", type=integer(1), default=None,
                       help="short/pred/interp: keep the EMA model every N steps in OUT/snapshots/ (to score it along the way)")
    train.add_argument("--every-start", action="store_true",
                       help="pred/interp: train on windows starting at every latent, not only at keyframes (LVDM's); "
                       "the same clips give 4x more distinct samples")
    train.add_argument("--keyframe-stride", type=integer(1, MAX_KEYFRAME_STRIDE), default=None,
                       help="pred/interp: latents between keyframes (LVDM: 4, i.e. 16 frames; 1 makes the prediction "
                       "model continue latent by latent, with no interpolation stage)")
    train.add_argument("--max-given", type=integer(1), default=None,
                       help="pred: a conditioned sample is given its first 1..K latents (default and LVDM: 1); a long "
                       "video then gives it the last K latents made and keeps the rest (beyond the paper)")
    train.add_argument("--bf16", action=argparse.BooleanOptionalAction, default=None,
                       help="bfloat16 autocast on a CPU: --bf16 on, --no-bf16 off (default: on where the CPU has "
                            "AVX512-BF16 or AMX, except the quick preset and autoencoders; on CUDA it is always on)")
    train.add_argument("--init", type=input_file(".safetensors"), default=None,
                       help="short: a short model to continue with this run's schedule and clips (e.g. the "
                            "shipped one on more clips; it may add temporal_conv or temporal_levels); "
                            "t2v: the short model to warm-start from (default: the shipped mmnist_short for "
                            "--preset mmnist, none for --quick); pred/interp: a short model to warm-start from "
                            "(default: none, trained from scratch at the preset's hierarchy size); pred: also a "
                            "prediction model of the same stride, to go on from with other settings (e.g. --max-given)")
    train.add_argument("--caption-drop", type=number(0.0, 1.0, below=True), default=None,
                       help=f"t2v: share of training captions dropped for classifier-free guidance "
                            f"(default {CAPTION_DROP_PROB})")
    train.add_argument("--resume", action="store_true", help="continue the run in --out")
    train.add_argument("--device", type=device, default="auto")
    train.add_argument("--quick", action="store_true", help="the quick preset (also LVDM_QUICK=1)")
    train.add_argument("--threads", type=integer(1), default=None, help="CPU threads for torch (default: all cores)")
    train.add_argument("--no-compile", action="store_true",
                       help="train eagerly instead of through torch.compile (the default except with --quick, "
                            "whose runs are shorter than the compile)")
    train.set_defaults(resolve=resolve_train, run=run_train)


def check_model_flags(args: argparse.Namespace) -> None:
    """Every model-specific flag given is one that `--model` uses."""
    for flag, (name, models) in MODEL_FLAGS.items():
        if getattr(args, name) not in (None, False) and args.model not in models:
            raise UsageError(f"{flag} is for --model {' or '.join(models)}, not --model {args.model}; drop it")


def video_data_for(preset, vae_path: Path, data: Path | None, split: str | None):
    """`train`'s preset with `--data`, read in the autoencoder's channels; an autoencoder trained on videos
    needs `--data` (its folder is named in the error)."""
    vae_header = header(vae_path)  # its kind is checked by the recipe's resolve step
    vae_data = vae_header.get("data", {})
    if data is not None:
        channels = vae_header.get("vae", {}).get("in_channels", 3)
        return video_preset(preset, data, split=split or "train", channels=channels)
    if vae_data.get("dataset", "moving_mnist") != "moving_mnist":
        raise UsageError(f"--vae {vae_path} was trained on videos ({vae_data.get('dataset')} under "
                         f"{vae_data.get('root')}); pass --data with the videos to train on")
    return preset


def resolve_train(args: argparse.Namespace):
    check_model_flags(args)
    if args.split is not None and args.data is None:
        raise UsageError("--split is for --data (real videos); Moving MNIST has its own digit split")
    preset = with_recipe(get_preset("quick" if args.quick else args.preset), args.recipe)
    if args.parameterization:
        preset = dataclasses.replace(preset, diffusion=dataclasses.replace(preset.diffusion,
                                                                           parameterization=args.parameterization))
    if args.bf16 is not None:  # else the preset's: on where the CPU computes bfloat16 natively (train.cpu_has_bf16)
        preset = dataclasses.replace(preset, train=dataclasses.replace(preset.train, bf16_cpu=args.bf16),
                                     hierarchy_train=dataclasses.replace(preset.hierarchy_train, bf16_cpu=args.bf16))
    preset = video_data_for(preset, args.vae, args.data, args.split)
    if args.model == "t2v":
        init = args.init
        if init is None and preset.name == "mmnist" and (SHIPPED_DIR / "mmnist_short.safetensors").exists():
            init = SHIPPED_DIR / "mmnist_short.safetensors"  # the caption model warm-starts from the short one
        run = resolve_short_run(preset, args.vae, args.out, steps=args.steps, num_clips=args.num_clips,
                                resume=args.resume, kind="t2v", init=init, drop_prob=args.caption_drop)
    elif args.model == "short":
        run = resolve_short_run(preset, args.vae, args.out, steps=args.steps, num_clips=args.num_clips,
                                resume=args.resume, init=args.init, snapshot_every=args.snapshot_every)
    else:
        run = resolve_hierarchy_run(preset, args.model, args.vae, args.out, steps=args.steps,
                                    num_clips=args.num_clips, max_perturbation_level=args.max_perturbation_level,
                                    resume=args.resume, condition_prob=args.condition_prob,
                                    snapshot_every=args.snapshot_every, every_start=args.every_start,
                                    keyframe_stride=args.keyframe_stride, init=args.init,
                                    max_given=args.max_given or 1, parameterization=args.parameterization)
    return args, run


def run_train(plan) -> dict:
    args, run = plan
    if args.threads:
        torch.set_num_threads(args.threads)
    compile = not (args.no_compile or args.quick)
    if args.model == "t2v":
        result = fit_t2v(run, device=args.device, compile=compile)
    elif args.model == "short":
        result = fit_short(run, device=args.device, compile=compile)
    else:
        result = fit_hierarchy(run, device=args.device, compile=compile)
    return {**result, "split": run.preset.data.split}  # Moving MNIST: its train digits
