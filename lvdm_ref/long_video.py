"""LVDM's long-video sampler (Sec. 3.3): keyframes, then interpolation.

Two conditional models of the same UNet class (`hierarchy.py` says how a condition is given and
trained) make a video of any length, in latent space, then the autoencoder decodes it:

1. keyframes (`sample_keyframes`): an unconditional first clip of 4 keyframe latents (or a real
   first latent: continuation), then autoregressive prediction, each sample given the last keyframe
   and keeping the 3 new ones (a model trained with `max_given` k: given the last k, keeping the
   rest); keyframes are `keyframe_stride` latents (16 frames) apart;
2. interpolation (`interpolate`): EVERY keyframe pair is filled with the 3 latents between (the
   official `interpolate` fills only about a third of them: 1024 frames asked give ~356);
3. decoding (`decode_frames`) in temporal chunks; exactly the number of frames asked for comes back.

`LongVideoPlan` says where every frame comes from. Each video and each keyframe pair has its own
random stream (`utils.stream`), so a video does not depend on the batch it was sampled in, or on
which other pairs were sampled (`pairs=` samples only some; `sample_windows` uses it to make only the
windows a drift measurement needs). The defaults are LVDM's long-video settings: DDIM, 50 steps,
eta = 1 (`diffusion.py`), guidance w = 0.1 on the prediction stage (`guidance.py`) and the perturbation
level s = 100 of s_max = 250 (`perturbation.py`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from tqdm.auto import tqdm

from lvdm_ref.config import HierarchyConfig
from lvdm_ref.diffusion import LONG_VIDEO_DDIM_ETA, LONG_VIDEO_DDIM_STEPS
from lvdm_ref.guidance import LONG_VIDEO_GUIDANCE
from lvdm_ref.hierarchy import given_frames, sample_conditional
from lvdm_ref.utils import stream, to_uint8


# ----------------------------------------------------------------------------- the plan
@dataclass(frozen=True)
class LongVideoPlan:
    """Where every frame of an F-frame video comes from.

    Latent k covers frames [k * ft, (k + 1) * ft); keyframe j is latent j * stride; pair j fills the
    latents between keyframes j and j + 1.
    """
    num_frames: int
    frames_per_latent: int  # the autoencoder's temporal factor
    keyframe_stride: int  # latents between keyframes (the interpolation model makes stride - 1 of them)
    clip_keyframes: int  # keyframes per prediction sample (the first is given after the first clip)
    advance: int | None = None  # new keyframes kept per conditioned sample (default clip_keyframes - 1)

    @property
    def keyframes_per_step(self) -> int:
        return self.clip_keyframes - 1 if self.advance is None else self.advance

    @property
    def num_keyframes(self) -> int:  # enough for ceil(F / ft) latents on the keyframe grid
        needed = math.ceil(self.num_frames / self.frames_per_latent)
        return math.ceil((needed - 1) / self.keyframe_stride) + 1

    @property
    def num_latents(self) -> int:
        return (self.num_keyframes - 1) * self.keyframe_stride + 1

    @property
    def num_pairs(self) -> int:
        return self.num_keyframes - 1

    @property
    def fills_pairs(self) -> bool:
        """Whether the interpolation stage has latents to make (none with keyframes 1 latent apart)."""
        return self.num_pairs > 0 and self.keyframe_stride > 1

    @property
    def prediction_steps(self) -> int:
        """Prediction samples from a generated start: the first clip, then one per `keyframes_per_step` new keyframes."""
        extra = max(0, self.num_keyframes - self.clip_keyframes)
        return 1 + math.ceil(extra / self.keyframes_per_step)

    def prediction_samples(self, real_start: bool = False) -> int:
        """Prediction samples of a video: `prediction_steps` from a generated start; from a real first
        keyframe, one per `keyframes_per_step` of the other keyframes."""
        if not real_start:
            return self.prediction_steps
        return math.ceil((self.num_keyframes - 1) / self.keyframes_per_step)

    def frame_is_keyframe(self) -> np.ndarray:
        """(F,) bool: the frame was decoded from a keyframe latent (prediction) rather than an interpolated one."""
        latent = np.arange(self.num_frames) // self.frames_per_latent
        return latent % self.keyframe_stride == 0

    def pairs_for_frames(self, start: int, stop: int, halo: int = 0) -> list[int]:
        """The pairs whose latents frames [start, stop) need, with `halo` latents of context on each side."""
        first = max(0, start // self.frames_per_latent - halo)
        last = min(self.num_latents - 1, (stop - 1) // self.frames_per_latent + halo)
        pairs = range(first // self.keyframe_stride, math.ceil(last / self.keyframe_stride))
        return [j for j in pairs if j < self.num_pairs]


def check_pair(pred_config: HierarchyConfig, interp_config: HierarchyConfig | None,
               pred_vae_sha256: str | None = None, interp_vae_sha256: str | None = None) -> None:
    """The two models must be a prediction and an interpolation model on the same keyframe grid, trained on
    the same autoencoder (the sha256 of its file, where known). A prediction model whose keyframes are 1 latent
    apart makes every latent itself: it takes no interpolation model. (`long_video_plan` checks loaded models
    with it; the `sample-long` command, their checkpoints' headers.)"""
    if pred_config.role != "pred":
        raise ValueError(f"--pred must be a prediction model, got a {pred_config.role!r} model")
    if pred_config.keyframe_stride == 1:
        if interp_config is not None:
            raise ValueError("the prediction model makes every latent (keyframes 1 latent apart): leave out --interp")
        return
    if interp_config is None:
        raise ValueError(f"the prediction model's keyframes are {pred_config.keyframe_stride} latents apart: give an "
                         f"interpolation model (--interp) spanning {pred_config.keyframe_stride + 1} latents")
    if interp_config.role != "interp":
        raise ValueError(f"--interp must be an interpolation model, got a {interp_config.role!r} model")
    if interp_config.num_latents != pred_config.keyframe_stride + 1:
        raise ValueError(f"the prediction model's keyframes are {pred_config.keyframe_stride} latents apart, so the "
                         f"interpolation model must span {pred_config.keyframe_stride + 1} latents, "
                         f"got {interp_config.num_latents}")
    if pred_vae_sha256 != interp_vae_sha256:
        raise ValueError("the prediction and interpolation models (--pred, --interp) were trained on different "
                         f"autoencoders (sha256 {pred_vae_sha256} vs {interp_vae_sha256}); train both on the same one")


@torch.no_grad()
def sample_keyframes(pred, plan: LongVideoPlan, num_videos: int, seed: int, *, start: torch.Tensor | None = None,
                     num_steps: int = LONG_VIDEO_DDIM_STEPS, eta: float = LONG_VIDEO_DDIM_ETA, perturbation_level: int | None = None,
                     guidance_weight: float = LONG_VIDEO_GUIDANCE, progress: bool = True, first_index: int = 0) -> torch.Tensor:
    """Keyframe latents (N, c, K, h, w) by autoregressive prediction; `start` (N, c, 1, h, w) gives the first.
    Video i draws from the streams of video `first_index + i`: N videos in one batch equal N batches of one.

    Each conditioned sample is given the last `max_given` keyframes made so far (LVDM: the last one) and
    keeps the next `num_latents - max_given` (LVDM: 3), also while fewer are known: a model given up to
    3 latents makes 1 new one per sample, always right next to what it was given."""
    config, (channels, _, height, width) = pred.hierarchy, pred.latent_shape
    device = next(pred.unet.parameters()).device
    shape = (num_videos, channels, config.num_latents, height, width)
    advance = config.num_latents - config.max_given
    keyframes = None if start is None else start.to(device)
    bar = tqdm(total=plan.num_keyframes, desc="keyframes (prediction)", disable=not progress)
    step = 0
    while keyframes is None or keyframes.shape[2] < plan.num_keyframes:
        given, mask = torch.zeros(shape, device=device), torch.zeros(num_videos, 1, config.num_latents, 1, 1, device=device)
        known = 0 if keyframes is None else min(config.max_given, keyframes.shape[2])
        if known:  # condition on the last keyframes: LVDM's autoregressive step
            given[:, :, :known], mask[:, :, :known] = keyframes[:, :, -known:], 1
        generators = [stream(seed, first_index + video, 0, step) for video in range(num_videos)]
        clip = sample_conditional(pred.unet, pred.diffusion, config, given, mask, generators, num_steps=num_steps,
                                  eta=eta, perturbation_level=perturbation_level,
                                  guidance_weight=guidance_weight if known else 0.0)  # nothing to guide from
        new = clip[:, :, known:known + advance] if known else clip
        keyframes = new if keyframes is None else torch.cat([keyframes, new], dim=2)
        bar.update(min(new.shape[2], bar.total - bar.n))
        step += 1
    bar.close()
    return keyframes[:, :, :plan.num_keyframes]  # (N, c, K, h, w)


@torch.no_grad()
def interpolate(interp, keyframes: torch.Tensor, seed: int, *, pairs: list[int] | None = None,
                batch_size: int = 64, num_steps: int = LONG_VIDEO_DDIM_STEPS, eta: float = LONG_VIDEO_DDIM_ETA, perturbation_level: int | None = None,
                guidance_weight: float = 0.0, progress: bool = True, first_index: int = 0) -> torch.Tensor:
    """Fill keyframe pairs: (N, c, K, h, w) keyframes -> (N, c, (K - 1) * stride + 1, h, w) latents.

    All pairs of all videos go through the model together, `batch_size` at a time. With `pairs`, only
    those pairs are filled (the others stay zero): each pair has its own random stream, so a pair
    comes out the same whichever others are sampled with it.
    """
    config = interp.hierarchy
    num_videos, channels, num_keyframes, height, width = keyframes.shape
    stride, device = config.num_latents - 1, keyframes.device
    latents = torch.zeros(num_videos, channels, (num_keyframes - 1) * stride + 1, height, width, device=device)
    latents[:, :, ::stride] = keyframes
    pairs = list(range(num_keyframes - 1)) if pairs is None else sorted(set(pairs))
    jobs = [(video, pair) for video in range(num_videos) for pair in pairs]  # every pair of every video
    mask = given_frames("interp", config.num_latents).reshape(1, 1, -1, 1, 1).to(device)
    for start in tqdm(range(0, len(jobs), batch_size), desc="interpolation", disable=not progress):
        chunk = jobs[start:start + batch_size]
        given = torch.zeros(len(chunk), channels, config.num_latents, height, width, device=device)
        for row, (video, pair) in enumerate(chunk):
            given[row, :, 0], given[row, :, -1] = keyframes[video, :, pair], keyframes[video, :, pair + 1]
        generators = [stream(seed, first_index + video, 1, pair) for video, pair in chunk]
        filled = sample_conditional(interp.unet, interp.diffusion, config, given, mask.expand(len(chunk), -1, -1, -1, -1),
                                    generators, num_steps=num_steps, eta=eta, perturbation_level=perturbation_level,
                                    guidance_weight=guidance_weight)
        for row, (video, pair) in enumerate(chunk):
            latents[video, :, pair * stride:(pair + 1) * stride + 1] = filled[row]
    return latents


@torch.no_grad()
def sample_long(pred, interp, num_frames: int, num_videos: int = 1, *, seed: int = 0,
                start: torch.Tensor | None = None, num_steps: int = LONG_VIDEO_DDIM_STEPS, eta: float = LONG_VIDEO_DDIM_ETA,
                perturbation_level: int | None = None, guidance_weight: float = LONG_VIDEO_GUIDANCE,
                interp_perturbation_level: int | None = None, interp_guidance_weight: float = 0.0,
                batch_size: int = 64, decode_chunk: int = 32, progress: bool = True) -> np.ndarray:
    """`num_videos` videos of exactly `num_frames` frames, uint8 (N, F, H, W, C).

    Args:
        pred, interp: `lvdm.LatentVideoDiffusion` models with a `hierarchy` config, on the same autoencoder;
            interp is None where the prediction model's keyframes are 1 latent apart (it makes every latent).
        num_frames, num_videos: the frames of each video (exactly) and how many videos.
        seed: video i draws from the streams of (seed, i): the same video in any batch.
        start: real first latents (N, c, 1, h, w) to continue, or None for an unconditional first clip.
        num_steps, eta: DDIM for every sample (LVDM: 50 steps, eta 1).
        perturbation_level: s of the given keyframe on the prediction stage (None: 2/5 of the model's s_max,
            LVDM's 100 of 250); 0 for a model trained without perturbation.
        guidance_weight: LVDM's w on the prediction stage, where errors compound (0 = the conditional model;
            diffusers' guidance_scale g is w + 1).
        interp_perturbation_level, interp_guidance_weight: the same for the interpolation stage (by default the
            model's fixed s and no guidance).
        batch_size: interpolation samples per batch; decode_chunk: latents decoded at a time.
    """
    if num_frames < 1 or num_videos < 1:
        raise ValueError(f"num_frames and num_videos must be >= 1, got {num_frames} and {num_videos}")
    plan = long_video_plan(pred, interp, num_frames)
    keyframes = sample_keyframes(pred, plan, num_videos, seed, start=start, num_steps=num_steps, eta=eta,
                                 perturbation_level=perturbation_level, guidance_weight=guidance_weight,
                                 progress=progress)
    latents = interpolate(interp, keyframes, seed, batch_size=batch_size, num_steps=num_steps, eta=eta,
                          perturbation_level=interp_perturbation_level, guidance_weight=interp_guidance_weight,
                          progress=progress) if plan.fills_pairs else keyframes[:, :, :plan.num_latents]
    return decode_frames(pred, latents, num_frames, decode_chunk, progress)


@torch.no_grad()
def sample_windows(pred, interp, num_frames: int, starts: list[int], window: int = 16, num_videos: int = 1, *,
                   seed: int = 0, start: torch.Tensor | None = None, num_steps: int = LONG_VIDEO_DDIM_STEPS, eta: float = LONG_VIDEO_DDIM_ETA,
                   perturbation_level: int | None = None, guidance_weight: float = LONG_VIDEO_GUIDANCE,
                   interp_perturbation_level: int | None = None, interp_guidance_weight: float = 0.0,
                   batch_size: int = 64, progress: bool = True, first_index: int = 0) -> np.ndarray:
    """Only the `window`-frame windows starting at `starts` of the videos `sample_long` would make:
    uint8 (N, len(starts), window, H, W, C). With `first_index`, they are videos first_index.. of that seed.

    All keyframes are predicted (each depends on the ones before), but only the keyframe pairs whose
    latents a window's frames depend on are interpolated, with the decoder's temporal halo, and only
    those latents are decoded. Each pair has its own random stream, so the windows are those of the full
    video with the same seed (tests/test_hierarchy.py), at a fraction of the interpolation and decoding.
    """
    plan = long_video_plan(pred, interp, num_frames)
    if any(s < 0 or s + window > num_frames for s in starts):
        raise ValueError(f"every window [start, start + {window}) must lie in [0, {num_frames}), got starts {starts}")
    keyframes = sample_keyframes(pred, plan, num_videos, seed, start=start, num_steps=num_steps, eta=eta,
                                 perturbation_level=perturbation_level, guidance_weight=guidance_weight,
                                 progress=progress, first_index=first_index)
    halo, ft = pred.vae.decoder.temporal_halo(), plan.frames_per_latent
    pairs = sorted({pair for s in starts for pair in plan.pairs_for_frames(s, s + window, halo)})
    latents = interpolate(interp, keyframes, seed, pairs=pairs, batch_size=batch_size, num_steps=num_steps, eta=eta,
                          perturbation_level=interp_perturbation_level, guidance_weight=interp_guidance_weight,
                          progress=progress, first_index=first_index) if plan.fills_pairs else keyframes[:, :, :plan.num_latents]
    windows = []
    for s in starts:
        low = max(0, s // ft - halo)
        high = min(latents.shape[2], math.ceil((s + window) / ft) + halo)
        frames = to_uint8(pred.decode(latents[:, :, low:high]))  # (N, (high - low) * ft, H, W, C)
        windows.append(frames[:, s - low * ft:s - low * ft + window])
    return np.stack(windows, axis=1)


def long_video_plan(pred, interp, num_frames: int) -> LongVideoPlan:
    """The plan of a `num_frames` video; `interp` is None for a prediction model with keyframes 1 latent apart."""
    check_pair(pred.hierarchy, None if interp is None else interp.hierarchy, pred.vae_sha256,
               None if interp is None else interp.vae_sha256)
    return LongVideoPlan(num_frames, pred.vae.config.temporal_downsample, pred.hierarchy.keyframe_stride,
                         pred.hierarchy.num_latents, pred.hierarchy.num_latents - pred.hierarchy.max_given)


@torch.no_grad()
def decode_frames(model, latents: torch.Tensor, num_frames: int, chunk_size: int = 32,
                  progress: bool = True) -> np.ndarray:
    """Latents (N, c, L, h, w) -> uint8 (N, num_frames, H, W, C), decoding `chunk_size` latents at a time."""
    videos = [to_uint8(model.decode(latents[i:i + 1], chunk_size=chunk_size))[0, :num_frames]
              for i in tqdm(range(len(latents)), desc="decode", disable=not progress)]
    return np.stack(videos)
