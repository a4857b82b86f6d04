"""LVDM's hierarchical long-video generation (Sec. 3.3; LVDM_NOTES.md sections 4-6).

Two latent diffusion models of the same UNet class, each with a condition-mask input channel and,
with perturbation on, an embedding of the perturbation level s:

- the prediction model works on keyframe latents (every 4th latent, i.e. 16 frames apart): given
  the first one, it makes the next 3; unconditional in half of its training samples;
- the interpolation model works on 5 consecutive latents: given both ends, it makes the 3 between;
  unconditional in 10 % of its training samples.

How a condition is given. The mask m (B, 1, f, 1, 1) is 1 at given latent frames; the given latents,
perturbed to level s (`perturbation.py`), are written into the noisy input at their own positions,
`x_in = x_t * (1 - m) + z_c^s * m`, and m is concatenated as an input channel.

The loss counts only the frames to generate (`loss_mask = 1 - m`). The official code also trains
the given frames, on a target that merges the two noises; sampling overwrites the model's output
there at every step, so those frames teach the network nothing it uses, and no single eps/x0/v target
describes a frame held at level s while the timestep says t.

Long videos (`sample_long`): an unconditional first keyframe clip (or a real first latent:
continuation), autoregressive prediction keeping the 3 new keyframes per step, interpolation of
EVERY keyframe pair (the official `interpolate` fills only about a third of them: 1024 frames asked
give ~356), then decoding in temporal chunks; exactly the number of frames asked for comes back.
Each video and each keyframe pair has its own random stream, so a video does not depend on the
batch it was sampled in, or on which other pairs were sampled (`pairs=` samples only some).
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from lvdm_ref.config import HierarchyConfig
from lvdm_ref.diffusion import GaussianDiffusion
from lvdm_ref.guidance import guide
from lvdm_ref.perturbation import TRAIN_MAX_LEVEL, perturb, sampling_levels, training_levels
from lvdm_ref.utils import randn, stream

ROLES = ("pred", "interp")


# ----------------------------------------------------------------------------- masks
def given_frames(role: str, num_latents: int) -> torch.Tensor:
    """(f,) 1 at the latent frames the role is given: the first (pred), or both ends (interp)."""
    if role not in ROLES:
        raise ValueError(f"role must be one of {ROLES}, got {role!r}")
    frames = torch.zeros(num_latents)
    frames[0] = 1
    if role == "interp":
        frames[-1] = 1
    return frames


def training_mask(config: HierarchyConfig, batch: int, device: torch.device | str = "cpu",
                  generator: torch.Generator | None = None) -> torch.Tensor:
    """(B, 1, f, 1, 1): the role's given frames in a `condition_prob` share of samples, nothing in the rest."""
    conditioned = torch.rand(batch, generator=generator, device=device) < config.condition_prob  # (B,)
    frames = given_frames(config.role, config.num_latents).to(device)
    return (conditioned[:, None].float() * frames[None]).reshape(batch, 1, config.num_latents, 1, 1)


def hierarchy_loss(diffusion: GaussianDiffusion, config: HierarchyConfig):
    """loss_fn for the trainer: the diffusion loss of a prediction or interpolation UNet on clean latents."""

    def loss_fn(unet: nn.Module, z0: torch.Tensor, step: int) -> torch.Tensor:
        batch = z0.shape[0]
        if z0.shape[2] != config.num_latents:
            raise ValueError(f"a {config.role} model trains on {config.num_latents} latent frames, got {z0.shape[2]}")
        mask = training_mask(config, batch, z0.device)  # (B, 1, f, 1, 1)
        level = training_levels(batch, config.max_perturbation_level, z0.device)  # s (B,) or None
        given = perturb(diffusion, z0, level)  # z_c^s, with its own noise
        t = torch.randint(0, diffusion.num_timesteps, (batch,), device=z0.device)
        noise = torch.randn_like(z0)
        x_in = diffusion.q_sample(z0, t, noise) * (1 - mask) + given * mask  # LVDM Sec. 3.3
        return diffusion.training_losses(unet, z0, t=t, noise=noise, x_t=x_in, loss_mask=1 - mask,
                                         model_kwargs={"mask": mask, "perturbation_level": level})["loss"]

    return loss_fn


def warm_start(unet: nn.Module, short_state: dict[str, torch.Tensor]) -> nn.Module:
    """Initialise a prediction/interpolation UNet from a short model's weights: the same function at first.

    Every shared weight is copied; the input conv's mask column and the s embedding keep their zero
    initialisation (unet.py), so the mask and s change nothing until training teaches them to.
    """
    own = unet.state_dict()
    state = dict(short_state)
    weight = state["input_conv.weight"]  # (C, c, 3, 3) -> (C, c + 1, 3, 3) with the zero mask column
    if own["input_conv.weight"].shape[1] == weight.shape[1] + 1:
        state["input_conv.weight"] = torch.cat([weight, own["input_conv.weight"][:, weight.shape[1]:]], dim=1)
    missing, unexpected = unet.load_state_dict(state, strict=False)
    if unexpected or any(not name.startswith("perturbation_embed.") for name in missing):
        raise ValueError(f"the short model does not fit this UNet: missing {missing}, unexpected {unexpected}")
    return unet


# ----------------------------------------------------------------------------- one conditional sample
class ConditionalDenoiser:
    """`model_fn(x_t, t)` for `GaussianDiffusion.sample`: given latents written in, with optional guidance.

    The conditional branch sees `x_t * (1 - m) + z_c^s * m` and the mask; the unconditional branch sees
    x_t untouched and a mask of zeros, as an unconditional training sample did; both get the same s
    (guidance.py says why). At the given frames the combined output is the unconditional one: the
    conditional output there is never used, and this keeps x_t at those frames an honest sample of
    what the unconditional branch saw in training.
    """

    def __init__(self, unet: nn.Module, mask: torch.Tensor, perturbed: torch.Tensor, level: torch.Tensor | None,
                 guidance_scale: float = 0.0):
        self.unet, self.mask, self.perturbed, self.level = unet, mask, perturbed, level
        self.guidance_scale = guidance_scale

    def __call__(self, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        mask = self.mask.expand(len(x_t), -1, -1, -1, -1)  # (B, 1, f, 1, 1)
        x_cond = x_t * (1 - mask) + self.perturbed * mask  # the given latents written in, for this branch only
        if self.guidance_scale == 0:
            return self.unet(x_cond, t, mask=mask, perturbation_level=self.level)
        level = None if self.level is None else torch.cat([self.level, self.level])
        both = self.unet(torch.cat([x_cond, x_t]), torch.cat([t, t]),  # one batched call for both branches
                         mask=torch.cat([mask, torch.zeros_like(mask)]), perturbation_level=level)
        cond, uncond = both.chunk(2)
        return guide(cond, uncond, self.guidance_scale) * (1 - mask) + uncond * mask


@torch.no_grad()
def sample_conditional(unet: nn.Module, diffusion: GaussianDiffusion, config: HierarchyConfig,
                       given: torch.Tensor, mask: torch.Tensor, generators: list[torch.Generator], *,
                       num_steps: int = 50, eta: float = 1.0, perturbation_level: int | None = None,
                       guidance_scale: float = 0.0, timestep_spacing: str | None = None) -> torch.Tensor:
    """Latents (B, c, f, h, w) with `given` kept exactly where mask (B, 1, f, 1, 1) is 1, the rest sampled.

    The condition is perturbed once, with noise from each sample's own generator, to the fixed level s.
    """
    batch, device = len(given), given.device
    level = sampling_levels(batch, perturbation_level, config.max_perturbation_level, device)
    noise = randn(tuple(given.shape), generators, device)  # each sample's own stream
    perturbed = perturb(diffusion, given, level, noise)
    denoiser = ConditionalDenoiser(unet, mask, perturbed, level, guidance_scale)
    latents = diffusion.sample(denoiser, tuple(given.shape), sampler="ddim", num_steps=num_steps, eta=eta,
                               generator=generators, device=device, timestep_spacing=timestep_spacing)
    return latents * (1 - mask) + given * mask  # the given latents come back as they were


# ----------------------------------------------------------------------------- long videos
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
    def prediction_steps(self) -> int:
        """Prediction samples: the first clip, then one per (clip_keyframes - 1) new keyframes."""
        extra = max(0, self.num_keyframes - self.clip_keyframes)
        return 1 + math.ceil(extra / (self.clip_keyframes - 1))

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


def check_pair(pred_config: HierarchyConfig, interp_config: HierarchyConfig) -> None:
    """The two models must be a prediction and an interpolation model on the same keyframe grid."""
    if pred_config.role != "pred":
        raise ValueError(f"--pred must be a prediction model, got a {pred_config.role!r} model")
    if interp_config.role != "interp":
        raise ValueError(f"--interp must be an interpolation model, got a {interp_config.role!r} model")
    if interp_config.num_latents != pred_config.keyframe_stride + 1:
        raise ValueError(f"the prediction model's keyframes are {pred_config.keyframe_stride} latents apart, so the "
                         f"interpolation model must span {pred_config.keyframe_stride + 1} latents, "
                         f"got {interp_config.num_latents}")


@torch.no_grad()
def sample_keyframes(pred, plan: LongVideoPlan, num_videos: int, seed: int, *, start: torch.Tensor | None = None,
                     num_steps: int = 50, eta: float = 1.0, perturbation_level: int | None = None,
                     guidance_scale: float = 0.1, progress: bool = True, first_video: int = 0) -> torch.Tensor:
    """Keyframe latents (N, c, K, h, w) by autoregressive prediction; `start` (N, c, 1, h, w) gives the first.
    Video i draws from the streams of video `first_video + i`: N videos in one batch equal N batches of one."""
    config, (channels, _, height, width) = pred.hierarchy, pred.latent_shape
    device = next(pred.unet.parameters()).device
    shape = (num_videos, channels, config.num_latents, height, width)
    keyframes = [] if start is None else [start.to(device)]
    bar = tqdm(total=plan.num_keyframes, desc="keyframes (prediction)", disable=not progress)
    for step in range(plan.prediction_steps):
        given, mask = torch.zeros(shape, device=device), torch.zeros(num_videos, 1, config.num_latents, 1, 1, device=device)
        if keyframes:  # condition on the last keyframe: LVDM's autoregressive step
            given[:, :, 0:1], mask[:, :, 0] = keyframes[-1][:, :, -1:], 1
        generators = [stream(seed, first_video + video, 0, step) for video in range(num_videos)]
        clip = sample_conditional(pred.unet, pred.diffusion, config, given, mask, generators, num_steps=num_steps,
                                  eta=eta, perturbation_level=perturbation_level,
                                  guidance_scale=guidance_scale if keyframes else 0.0)  # nothing to guide from
        new = clip[:, :, 1:] if keyframes else clip
        keyframes.append(new)
        bar.update(min(new.shape[2], bar.total - bar.n))
    bar.close()
    return torch.cat(keyframes, dim=2)[:, :, :plan.num_keyframes]  # (N, c, K, h, w)


@torch.no_grad()
def interpolate(interp, keyframes: torch.Tensor, seed: int, *, pairs: list[int] | None = None,
                batch_size: int = 64, num_steps: int = 50, eta: float = 1.0, perturbation_level: int | None = None,
                guidance_scale: float = 0.0, progress: bool = True, first_video: int = 0) -> torch.Tensor:
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
        generators = [stream(seed, first_video + video, 1, pair) for video, pair in chunk]
        filled = sample_conditional(interp.unet, interp.diffusion, config, given, mask.expand(len(chunk), -1, -1, -1, -1),
                                    generators, num_steps=num_steps, eta=eta, perturbation_level=perturbation_level,
                                    guidance_scale=guidance_scale)
        for row, (video, pair) in enumerate(chunk):
            latents[video, :, pair * stride:(pair + 1) * stride + 1] = filled[row]
    return latents


@torch.no_grad()
def sample_long(pred, interp, num_frames: int, num_videos: int = 1, *, seed: int = 0,
                start: torch.Tensor | None = None, num_steps: int = 50, eta: float = 1.0,
                perturbation_level: int | None = None, guidance_scale: float = 0.1,
                interp_perturbation_level: int | None = None, interp_guidance_scale: float = 0.0,
                batch_size: int = 64, decode_chunk: int = 32, progress: bool = True) -> np.ndarray:
    """`num_videos` videos of exactly `num_frames` frames, uint8 (N, F, H, W, C).

    pred, interp: `lvdm.LatentVideoDiffusion` models with a `hierarchy` config (same autoencoder).
    start: real first latents (N, c, 1, h, w) to continue, or None for an unconditional first clip.
    Guidance and the perturbation level set the prediction stage (where errors compound); the
    interpolation stage has its own (`interp_*`, by default the model's fixed s and no guidance).
    """
    if num_frames < 1 or num_videos < 1:
        raise ValueError(f"num_frames and num_videos must be >= 1, got {num_frames} and {num_videos}")
    plan = long_video_plan(pred, interp, num_frames)
    keyframes = sample_keyframes(pred, plan, num_videos, seed, start=start, num_steps=num_steps, eta=eta,
                                 perturbation_level=perturbation_level, guidance_scale=guidance_scale,
                                 progress=progress)
    latents = interpolate(interp, keyframes, seed, batch_size=batch_size, num_steps=num_steps, eta=eta,
                          perturbation_level=interp_perturbation_level, guidance_scale=interp_guidance_scale,
                          progress=progress) if plan.num_pairs else keyframes[:, :, :1]
    return decode_frames(pred, latents, num_frames, decode_chunk, progress)


@torch.no_grad()
def sample_windows(pred, interp, num_frames: int, starts: list[int], window: int = 16, num_videos: int = 1, *,
                   seed: int = 0, start: torch.Tensor | None = None, num_steps: int = 50, eta: float = 1.0,
                   perturbation_level: int | None = None, guidance_scale: float = 0.1,
                   interp_perturbation_level: int | None = None, interp_guidance_scale: float = 0.0,
                   batch_size: int = 64, progress: bool = True, first_video: int = 0) -> np.ndarray:
    """Only the `window`-frame windows starting at `starts` of the videos `sample_long` would make:
    uint8 (N, len(starts), window, H, W, C). With `first_video`, they are videos first_video.. of that seed.

    All keyframes are predicted (each depends on the ones before), but only the keyframe pairs whose
    latents a window's frames depend on are interpolated, with the decoder's temporal halo, and only
    those latents are decoded. Each pair has its own random stream, so the windows are those of the full
    video with the same seed (tests/test_hierarchy.py), at a fraction of the interpolation and decoding.
    """
    from lvdm_ref.utils import to_uint8

    plan = long_video_plan(pred, interp, num_frames)
    if any(s < 0 or s + window > num_frames for s in starts):
        raise ValueError(f"every window [start, start + {window}) must lie in [0, {num_frames}), got starts {starts}")
    keyframes = sample_keyframes(pred, plan, num_videos, seed, start=start, num_steps=num_steps, eta=eta,
                                 perturbation_level=perturbation_level, guidance_scale=guidance_scale,
                                 progress=progress, first_video=first_video)
    halo, ft = pred.vae.decoder.temporal_halo(), plan.frames_per_latent
    pairs = sorted({pair for s in starts for pair in plan.pairs_for_frames(s, s + window, halo)})
    latents = interpolate(interp, keyframes, seed, pairs=pairs, batch_size=batch_size, num_steps=num_steps, eta=eta,
                          perturbation_level=interp_perturbation_level, guidance_scale=interp_guidance_scale,
                          progress=progress, first_video=first_video) if plan.num_pairs else keyframes[:, :, :1]
    windows = []
    for s in starts:
        low = max(0, s // ft - halo)
        high = min(latents.shape[2], math.ceil((s + window) / ft) + halo)
        frames = to_uint8(pred.decode(latents[:, :, low:high]))  # (N, (high - low) * ft, H, W, C)
        windows.append(frames[:, s - low * ft:s - low * ft + window])
    return np.stack(windows, axis=1)


def long_video_plan(pred, interp, num_frames: int) -> LongVideoPlan:
    check_pair(pred.hierarchy, interp.hierarchy)
    if pred.vae_sha256 != interp.vae_sha256:
        raise ValueError("the prediction and interpolation models were trained on different autoencoders "
                         f"(sha256 {pred.vae_sha256} vs {interp.vae_sha256}); train both on the same one")
    return LongVideoPlan(num_frames, pred.vae.config.temporal_downsample, pred.hierarchy.keyframe_stride,
                         pred.hierarchy.num_latents)


@torch.no_grad()
def decode_frames(model, latents: torch.Tensor, num_frames: int, chunk_size: int = 32,
                  progress: bool = True) -> np.ndarray:
    """Latents (N, c, L, h, w) -> uint8 (N, num_frames, H, W, C), decoding `chunk_size` latents at a time."""
    from lvdm_ref.utils import to_uint8

    videos = [to_uint8(model.decode(latents[i:i + 1], chunk_size=chunk_size))[0, :num_frames]
              for i in tqdm(range(len(latents)), desc="decode", disable=not progress)]
    return np.stack(videos)


# ----------------------------------------------------------------------------- the recipe
def training_latents(long_latents: torch.Tensor, config: HierarchyConfig) -> torch.Tensor:
    """Latents of long clips (N, c, L, h, w) -> the model's training samples.

    pred: every `keyframe_stride`-th latent, the first `num_latents` of them (N, c, 4, h, w);
    interp: every window of `num_latents` consecutive latents starting on a keyframe (N * W, c, 5, h, w).
    """
    stride, length = config.keyframe_stride, long_latents.shape[2]
    if config.role == "pred":
        keyframes = long_latents[:, :, ::stride][:, :, :config.num_latents]
        if keyframes.shape[2] < config.num_latents:
            raise ValueError(f"{length} latents hold {keyframes.shape[2]} keyframes; the prediction model needs "
                             f"{config.num_latents}: use longer clips")
        return keyframes.contiguous()
    starts = range(0, length - config.num_latents + 1, stride)
    return torch.cat([long_latents[:, :, s:s + config.num_latents] for s in starts]).contiguous()


def long_clip_frames(preset, config: HierarchyConfig) -> int:
    """Frames of the long training clips: enough for `num_latents` keyframes (official: 64 frames)."""
    return config.num_latents * config.keyframe_stride * preset.vae.temporal_downsample \
        if config.role == "pred" else 4 * config.keyframe_stride * preset.vae.temporal_downsample


def build_model(preset, role: str, vae, latent_channels: int, max_perturbation_level: int):
    """A fresh prediction or interpolation model of the preset's size: `lvdm.LatentVideoDiffusion` with a
    hierarchy config, a UNet with the mask channel and (with perturbation) the s embedding."""
    from lvdm_ref.config import hierarchy_config
    from lvdm_ref.lvdm import LatentVideoDiffusion
    from lvdm_ref.unet import UNet

    config = hierarchy_config(role, max_perturbation_level)
    unet_config = dataclasses.replace(preset.hierarchy_unet, in_channels=latent_channels, out_channels=latent_channels,
                                      use_mask=True, use_perturbation_embedding=max_perturbation_level > 0)
    size = preset.data.size // preset.vae.spatial_downsample
    latent_shape = (latent_channels, config.num_latents, size, size)
    diffusion = GaussianDiffusion(preset.diffusion).to(vae.latent_scale.device)
    return LatentVideoDiffusion(vae, UNet(unet_config).to(vae.latent_scale.device), diffusion, latent_shape, config)


def train_hierarchy_model(preset, role: str, vae_path, out, *, max_perturbation_level: int | None = None,
                          condition_prob: float | None = None, steps: int | None = None, num_clips: int | None = None, resume: bool = False,
                          device: str = "auto", callbacks=(), progress: bool = True) -> dict:
    """Train the preset's prediction (`role="pred"`) or interpolation (`"interp"`) model on a frozen
    autoencoder; write OUT/{role}.safetensors.

    Long clips (64 frames on Moving MNIST) are encoded once into OUT/latents.pt; the prediction model
    trains on their keyframe latents, the interpolation model on their 5-latent windows.
    `max_perturbation_level`: s_max, by default LVDM's 250 of 1000 timesteps (the same share of a shorter
    chain); 0 trains without conditional latent perturbation (no s embedding). `condition_prob`: the share
    of conditioned training samples, by default LVDM's (0.5 pred, 0.9 interp).
    """
    from lvdm_ref.config import hierarchy_config, to_dict
    from lvdm_ref.lvdm import LatentDataset, encoded_training_set
    from lvdm_ref.train import Trainer
    from lvdm_ref.utils import get_device
    from lvdm_ref.vae3d import VideoAutoencoder

    if max_perturbation_level is None:
        max_perturbation_level = TRAIN_MAX_LEVEL * preset.diffusion.num_timesteps // 1000
    config = hierarchy_config(role, max_perturbation_level)
    if condition_prob is not None:
        if not 0 < condition_prob <= 1:
            raise ValueError(f"condition_prob must be in (0, 1], got {condition_prob}")
        config = dataclasses.replace(config, condition_prob=condition_prob)
    if not 0 <= max_perturbation_level <= preset.diffusion.num_timesteps:
        raise ValueError(f"max_perturbation_level must be in [0, {preset.diffusion.num_timesteps}] (the diffusion's "
                         f"timesteps), got {max_perturbation_level}")
    train_config = preset.hierarchy_train if steps is None else dataclasses.replace(preset.hierarchy_train, steps=steps)
    num_clips = preset.hierarchy_clips if num_clips is None else num_clips
    out, vae_path = Path(out), Path(vae_path)
    vae = VideoAutoencoder.load(vae_path, get_device(device))
    long_latents = encoded_training_set(vae, vae_path, preset.data, num_clips, out / "latents.pt",
                                        num_frames=long_clip_frames(preset, config), progress=progress)
    latents = training_latents(long_latents, config)  # (N, c, f, h, w)
    if len(latents) < train_config.batch_size:
        raise ValueError(f"{len(latents)} training samples are fewer than one batch of {train_config.batch_size}")
    model = build_model(preset, role, vae, latents.shape[1], max_perturbation_level)
    model.hierarchy = config  # with the condition share asked for
    if tuple(latents.shape[1:]) != model.latent_shape:
        raise ValueError(f"the encoded latents are {tuple(latents.shape[1:])}, the preset expects {model.latent_shape}")
    unet, diffusion = model.unet, model.diffusion
    trainer = Trainer(unet, hierarchy_loss(diffusion, config), LatentDataset(latents), train_config, out,
                      device=device, resume=resume, callbacks=callbacks, progress=progress,
                      metadata={"preset": preset.name, "role": role})
    summary = trainer.fit()
    path = out / f"{role}.safetensors"
    if trainer.is_main:  # one writer under DDP
        model.save(path, ema_unet=trainer.ema_model if trainer.ema else None, vae_path=str(vae_path),
                   extra={"preset": preset.name, "train": to_dict(train_config), "num_clips": len(long_latents),
                          "steps": trainer.step})
    return {"checkpoint": str(path), "role": role, "latent_shape": list(model.latent_shape),
            "num_samples": len(latents), "max_perturbation_level": max_perturbation_level, **summary}
