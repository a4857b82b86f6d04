"""Configs as small dataclasses and named presets (nanoGPT-style), instead of YAML.

Presets:
- `quick`:  the same code path shrunk so that CI and `LVDM_QUICK=1` notebooks run in seconds.
- `mmnist`: Moving MNIST 64x64, 16 frames, sized to train on a 2-core CPU in about 90 minutes.
- `ucf101`: UCF-101, the bigger recipe for one GPU.

Each component module owns the meaning of its fields; this file only holds the numbers.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

PRESET_NAMES = ("quick", "mmnist", "ucf101")


@dataclass
class DataConfig:
    dataset: str = "moving_mnist"  # "moving_mnist", "ucf101" or "folder"
    root: str | None = None  # UCF-101 root or video folder; unused for Moving MNIST
    num_frames: int = 16
    size: int = 64
    channels: int = 1
    num_digits: int = 2  # Moving MNIST only
    frame_stride: int = 1  # UCF-101 / folders: take every k-th frame (the official loaders ignore it)
    split: str = "train"  # UCF-101: the videos trained on, "train" (split list 1) or "all" (test videos too)
    num_train: int = 10_000  # Moving MNIST clips generated for training (a fixed, seeded set)
    seed: int = 0


@dataclass
class VAEConfig:
    in_channels: int = 1
    base_channels: int = 32
    channel_mult: tuple[int, ...] = (1, 2, 2)
    num_res_blocks: int = 1
    latent_channels: int = 4
    spatial_downsample: int = 4  # x2, x4 or x8
    temporal_downsample: int = 2  # x1, x2 or x4
    kl_weight: float = 0.0  # 0 in every official config: effectively a plain autoencoder
    disc_weight: float = 0.0  # frame-wise PatchGAN; 0 switches it off
    disc_start: int = 50_000  # step at which the PatchGAN loss starts (official: 50k)
    recon_loss: str = "l1"  # "l1" (official), "l2" or "l1+l2"; L1 alone can stall on sparse frames (vae3d.py)


@dataclass
class UNetConfig:
    in_channels: int = 4
    out_channels: int = 4
    model_channels: int = 64
    channel_mult: tuple[int, ...] = (1, 2)
    num_res_blocks: int = 1
    attention_levels: tuple[int, ...] = (1,)  # levels (0 = full resolution) with attention
    temporal_levels: tuple[int, ...] = ()  # levels without attention that still get temporal attention (beyond LVDM)
    temporal_conv: bool = False  # a zero-initialised 3-tap convolution over time in every ResBlock (beyond LVDM)
    num_heads: int = 4
    attention: str = "factorized"  # "factorized", "joint" or "spatial"
    max_relative_position: int = 16  # temporal relative positions clipped to +-this
    # The official code's behaviour, for its released weights (unet.py says what each does): ResBlock and output
    # GroupNorm statistics "frame" (per frame) or "clip" (pooled over the clip); temporal attention "shaw" or "lvdm".
    norm: str = "frame"
    temporal_attention: str = "shaw"
    use_mask: bool = False  # hierarchy: a condition-mask channel is concatenated to the input
    use_perturbation_embedding: bool = False  # hierarchy: embed the perturbation level s
    # The inputs of class-conditional (UCF-101, no recipe yet) and text-to-video models (unet.py, text_to_video.py).
    num_classes: int | None = None  # class-conditional: an embedding added to the timestep embedding
    context_dim: int | None = None  # a pooled (B, context_dim) text/other embedding, added the same way
    dropout: float = 0.0


@dataclass
class DiffusionConfig:
    num_timesteps: int = 1000
    schedule: str = "scaled_linear"  # LVDM: linspace(sqrt(0.0015), sqrt(0.0155), T) ** 2
    linear_start: float = 0.0015
    linear_end: float = 0.0155
    parameterization: str = "eps"  # "eps", "x0" or "v"
    loss: str = "l1"  # LVDM uses L1 for unconditional video
    min_snr_gamma: float | None = None  # Min-SNR-gamma loss weighting (Hang et al. 2023; gamma = 5); None = uniform
    sampler: str = "ddpm"  # LVDM: DDPM (all T steps) for short clips, DDIM for long videos
    sample_steps: int | None = None  # None = all num_timesteps; DDIM: any number (LVDM long videos: 50)
    ddim_eta: float = 1.0  # LVDM's long-video DDIM uses eta = 1; 0 makes DDIM deterministic
    timestep_spacing: str = "uniform"  # DDIM: "uniform" over [0, T-1], or "leading" (LVDM's, see diffusion.py)


@dataclass
class HierarchyConfig:
    """One model of LVDM's long-video hierarchy (Sec. 3.3): what it is given and how it was trained."""
    role: str = "pred"  # "pred": given the first latent, make the next ones; "interp": given both ends, the middle
    num_latents: int = 4  # latent frames per sample: 4 keyframes (pred) or 5 latents, ends given (interp)
    keyframe_stride: int = 4  # keyframes are every 4th latent: 16 frames apart with x4 temporal compression
    condition_prob: float = 0.5  # training samples that get the condition; the rest are unconditional (guidance)
    # training s ~ U{0, ..., s_max - 1}; 0 turns perturbation off; None: LVDM's T/4 (250 of 1000 timesteps),
    # resolved where the chain is known (`perturbation.train_max_level`)
    max_perturbation_level: int | None = None
    every_start: bool = False  # train on windows starting at every latent, not only at keyframes (LVDM's)
    max_given: int = 1  # pred: a conditioned sample is given its first k latents, k ~ U{1..max_given} (LVDM: 1)


def hierarchy_config(role: str, max_perturbation_level: int | None = None) -> HierarchyConfig:
    """LVDM's two models: prediction on 4 keyframes (condition in 50 %), interpolation of 5 latents (90 %)."""
    if role == "pred":
        return HierarchyConfig("pred", num_latents=4, condition_prob=0.5, max_perturbation_level=max_perturbation_level)
    if role == "interp":
        return HierarchyConfig("interp", num_latents=5, condition_prob=0.9, max_perturbation_level=max_perturbation_level)
    raise ValueError(f"role must be 'pred' or 'interp', got {role!r}")


@dataclass
class TrainConfig:
    batch_size: int = 8
    lr: float = 6e-5  # LVDM short model; 8e-5 for prediction/interpolation
    weight_decay: float = 0.0
    warmup_steps: int = 0
    lr_schedule: str = "constant"  # "constant" (LVDM) or "cosine": decay to min_lr over the run, after warm-up
    min_lr: float = 0.0  # the end of the cosine decay
    grad_clip: float | None = 1.0
    ema_decay: float = 0.9999  # 0 switches EMA off
    bf16: bool = True  # autocast to bfloat16 on GPU (ignored on CPU)
    # bfloat16 autocast on a CPU: None = where the CPU has AVX512-BF16 or AMX (`train.cpu_has_bf16`); there a
    # compiled mmnist UNet step is 1.55x faster and the loss follows float32's step by step (docs/studies/speed.md).
    bf16_cpu: bool | None = None
    steps: int = 10_000
    log_every: int = 50
    ckpt_every: int = 500
    seed: int = 0


@dataclass
class Preset:
    name: str
    data: DataConfig = field(default_factory=DataConfig)
    vae: VAEConfig = field(default_factory=VAEConfig)
    vae_train: TrainConfig = field(default_factory=TrainConfig)
    unet: UNetConfig = field(default_factory=UNetConfig)
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    # The hierarchy's prediction and interpolation models (the mask and s inputs are added by the recipe).
    hierarchy_unet: UNetConfig = field(default_factory=UNetConfig)
    hierarchy_train: TrainConfig = field(default_factory=lambda: TrainConfig(lr=8e-5))  # LVDM: 8e-5
    hierarchy_clips: int = 2048  # long training clips, encoded once (64 frames each on Moving MNIST)


def _quick() -> Preset:
    return Preset(
        name="quick",
        data=DataConfig(num_frames=8, size=32, num_train=256),
        vae=VAEConfig(base_channels=8, channel_mult=(1, 2, 2), latent_channels=4, spatial_downsample=4,
                      temporal_downsample=2),
        # float32 throughout: at this size bfloat16 autocast's casts cost more than they save (1.5x per step)
        vae_train=TrainConfig(batch_size=4, lr=1e-3, steps=30, log_every=5, ckpt_every=15, ema_decay=0.0,
                              bf16_cpu=False),
        unet=UNetConfig(model_channels=16, channel_mult=(1, 2), num_heads=2),
        diffusion=DiffusionConfig(num_timesteps=100),
        train=TrainConfig(batch_size=4, lr=1e-3, steps=30, log_every=5, ckpt_every=15, ema_decay=0.99,
                          bf16_cpu=False),
        hierarchy_unet=UNetConfig(model_channels=16, channel_mult=(1, 2), num_heads=2),
        hierarchy_train=TrainConfig(batch_size=4, lr=1e-3, steps=30, log_every=5, ckpt_every=15, ema_decay=0.99,
                                    bf16_cpu=False),
        hierarchy_clips=32,
    )


def _mmnist() -> Preset:
    return Preset(
        name="mmnist",
        # 2,048 training clips: the short model trains on their latents, encoded once (~10 clips/s on CPU).
        data=DataConfig(num_train=2048),
        # x4 space, x4 time, 4 channels (the official factors in time and channels): 16x64x64 -> 4x4x16x16,
        # 16x fewer numbers; ~1.1M parameters, sized for ~1 s per step of 4 clips on one CPU core.
        # L2, not the official L1: on mostly-black frames L1 sat at the all-black median (PSNR 13.5 dB
        # after 275 steps, the all-black output scores 13.7), while L2 pulls the digits out at once.
        vae=VAEConfig(base_channels=16, channel_mult=(1, 2, 4), num_res_blocks=1, latent_channels=4,
                      spatial_downsample=4, temporal_downsample=4, recon_loss="l2"),
        # Not the official 4.5e-6: Adam at 2e-3 converges in a CPU budget, and a cosine decay to 0 gives the
        # last steps small updates (the official constant lr relies on hundreds of thousands of steps).
        # float32 on every CPU: the autoencoder's training was not checked under bfloat16.
        vae_train=TrainConfig(batch_size=4, lr=2e-3, warmup_steps=100, lr_schedule="cosine", steps=5000,
                              ema_decay=0.999, log_every=25, ckpt_every=250, bf16_cpu=False),
        # Short model on (4, 4, 16, 16) latents: 3 levels (16, 8, 4), attention at 8x8 and 4x4.
        unet=UNetConfig(model_channels=64, channel_mult=(1, 2, 2), attention_levels=(1, 2), num_heads=4),
        # Not LVDM's L1 on eps: L2 with Min-SNR-5 weighting gave the lowest FVD of the recipe study at 15
        # CPU-minutes (312 against L1's 372 at N = 128; benchmarks/results/recipe_study.json).
        diffusion=DiffusionConfig(loss="l2", min_snr_gamma=5.0),
        # Not LVDM's 6e-5 / EMA 0.9999 (hundreds of thousands of GPU steps): a CPU budget of a few
        # thousand steps needs a larger lr and a shorter EMA horizon.
        train=TrainConfig(batch_size=16, lr=3e-4, warmup_steps=200, steps=4500, ema_decay=0.999,
                          log_every=25, ckpt_every=250),
        # Half the short model's width (about 1/4 of its FLOPs): a 1024-frame video takes ~22 prediction and
        # 64 interpolation samples, which must stay within a couple of minutes on a CPU.
        hierarchy_unet=UNetConfig(model_channels=32, channel_mult=(1, 2, 2), attention_levels=(1, 2), num_heads=4),
        hierarchy_train=TrainConfig(batch_size=16, lr=3e-4, warmup_steps=200, steps=4500, ema_decay=0.999,
                                    log_every=25, ckpt_every=250),
    )


def _ucf101() -> Preset:
    # What it needs on one GPU, estimated from FLOPs, not measured (benchmarks/ucf101_cost.py, at an assumed
    # 100 TFLOP/s): the autoencoder 2.9 TFLOP per clip per step, ~32 GiB of float32 activations at batch 8
    # (about half under bf16), ~0.23 s per step, ~6 h for 100k steps; the UNet 58 GFLOP per clip, ~6 GiB at
    # batch 16 (a step of this size is bound by kernel launches, not FLOPs: its 9 ms is a floor).
    return Preset(
        name="ucf101",
        # num_train: the latent set of the diffusion models, two clips of each of the 9,537 videos of split 1
        # (a fixed, encoded set where LVDM draws a new clip each step: lvdm_ref/recipes/__init__.py says why).
        data=DataConfig(dataset="ucf101", root="data/UCF-101", size=128, channels=3, frame_stride=2,
                        num_train=2 * 9537),
        vae=VAEConfig(in_channels=3, base_channels=64, channel_mult=(1, 2, 4, 4), num_res_blocks=2,
                      latent_channels=4, spatial_downsample=8, temporal_downsample=4,
                      disc_weight=0.5, disc_start=50_000),
        vae_train=TrainConfig(batch_size=8, lr=4.5e-6 * 8, steps=100_000, ema_decay=0.0, bf16_cpu=False),
        unet=UNetConfig(in_channels=4, out_channels=4, model_channels=128, channel_mult=(1, 2, 4),
                        num_res_blocks=2, attention_levels=(1, 2), num_heads=8),
        train=TrainConfig(batch_size=16, lr=6e-5, steps=200_000),
    )


_PRESETS = {"quick": _quick, "mmnist": _mmnist, "ucf101": _ucf101}


def get_preset(name: str) -> Preset:
    """A fresh copy of the named preset."""
    if name not in _PRESETS:
        raise ValueError(f"preset must be one of {PRESET_NAMES}, got {name!r}")
    return _PRESETS[name]()


RECIPES = ("preset", "lvdm")


def with_recipe(preset: Preset, recipe: str) -> Preset:
    """The preset as it is ("preset"), or with LVDM's own diffusion training recipe ("lvdm"): L1 on eps,
    AdamW at a constant 6e-5 (8e-5 for the hierarchy's models) without warm-up, EMA 0.9999. The presets
    depart from it because a CPU budget of a few thousand steps needs a larger lr and a shorter EMA horizon."""
    if recipe not in RECIPES:
        raise ValueError(f"recipe must be one of {RECIPES}, got {recipe!r}")
    if recipe == "preset":
        return preset
    lvdm = dict(warmup_steps=0, lr_schedule="constant", ema_decay=0.9999)
    return dataclasses.replace(
        preset, diffusion=dataclasses.replace(preset.diffusion, parameterization="eps", loss="l1", min_snr_gamma=None),
        train=dataclasses.replace(preset.train, lr=6e-5, **lvdm),
        hierarchy_train=dataclasses.replace(preset.hierarchy_train, lr=8e-5, **lvdm))


def differences(given, expected) -> str:
    """The fields where two configs of one dataclass differ, "name given vs expected, ...", for an error message."""
    return ", ".join(f"{f.name} {getattr(given, f.name)!r} vs {getattr(expected, f.name)!r}"
                     for f in dataclasses.fields(expected) if getattr(given, f.name) != getattr(expected, f.name))


def to_dict(config) -> dict:
    return dataclasses.asdict(config)


def from_dict(cls, values: dict):
    """Rebuild a dataclass from `to_dict` output; lists become tuples where the field is a tuple."""
    known = {f.name: f for f in dataclasses.fields(cls)}
    unknown = set(values) - set(known)
    if unknown:
        raise ValueError(f"unknown {cls.__name__} fields {sorted(unknown)}; known: {sorted(known)}")
    kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}
    return cls(**kwargs)
