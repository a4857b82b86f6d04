"""Convert a released official LVDM checkpoint (Lightning `.ckpt`) into one project checkpoint.

The official short models (`short_sky.ckpt`, `short_taichi.ckpt`) are Lightning pickles whose `state_dict` holds
  `model.diffusion_model.*`  the UNet (668 tensors; Conv3d kernels (O, I, 1, 3, 3), Conv1d (O, I, 1)),
  `model_ema.*`              its EMA copy, under the same names with every dot removed (LitEma), and a counter,
  `first_stage_model.*`      the 3D autoencoder (each conv weight twice: `x.weight` is `x.conv.weight`),
  `betas`, ...               the schedule (recomputed here, and checked against the file).
The project's UNet (`unet.py`) has the same parameters one to one, renamed, with the singleton kernel axes
squeezed; with `norm="clip"` and `temporal_attention="lvdm"` it computes what the official UNet computes. The
autoencoder loads into `official.autoencoder.OfficialAutoencoder` as it is.

Reading the pickle safely: no Lightning, no `weights_only=False`. The only classes a Lightning checkpoint pickles
are Lightning's own (its callbacks' states are keyed by their class); the names in `LIGHTNING_CLASSES` load as
empty stand-ins and any other class is refused before anything is unpickled. The file is memory-mapped.

Not in the checkpoint: the latent scale and shift (plain attributes of the official model), the autoencoder's
down-sampling factors and the clip size. `DATASETS` has them for the released models (from the official configs),
so the dataset must be named; a wrong one would give garbage silently, so it is recorded in the output.
"""
from __future__ import annotations

import math
import re
import zipfile
from pathlib import Path

import torch

from lvdm_ref.checkpoint import prefixed, save_weights
from lvdm_ref.config import DiffusionConfig, UNetConfig, to_dict
from lvdm_ref.diffusion import GaussianDiffusion
from lvdm_ref.official.autoencoder import KIND as AUTOENCODER_KIND, OfficialAEConfig, OfficialAutoencoder
from lvdm_ref.unet import UNet

# configs/lvdm_short/{sky,taichi}.yaml and configs/videoae/*.yaml of the official code (no UCF-101 weights exist)
DATASETS = {
    "sky": dict(scale_factor=0.33422927, shift_factor=1.4606637, downsample=(4, 8, 8), num_frames=16, size=256),
    "taichi": dict(scale_factor=0.175733933, shift_factor=0.03291025, downsample=(4, 8, 8), num_frames=16, size=256),
}
WEIGHTS = ("raw", "ema")  # the official sampling script uses the raw weights (it never enters its EMA scope)
# The classes a Lightning (1.x, 2.x) checkpoint may pickle: callbacks keyed by their class, hyper-parameters.
LIGHTNING_CLASSES = tuple(f"{package}.{name}" for package in ("pytorch_lightning", "lightning.pytorch") for name in (
    "callbacks.model_checkpoint.ModelCheckpoint", "callbacks.lr_monitor.LearningRateMonitor",
    "callbacks.early_stopping.EarlyStopping", "callbacks.progress.ProgressBar",
    "callbacks.progress.tqdm_progress.TQDMProgressBar", "utilities.parsing.AttributeDict"))
SCHEDULE_BUFFERS = ("betas", "alphas_cumprod", "alphas_cumprod_prev", "sqrt_alphas_cumprod",
                    "sqrt_one_minus_alphas_cumprod", "log_one_minus_alphas_cumprod", "sqrt_recip_alphas_cumprod",
                    "sqrt_recipm1_alphas_cumprod", "posterior_variance", "posterior_log_variance_clipped",
                    "posterior_mean_coef1", "posterior_mean_coef2", "scale_factor")
# The official schedule and sampler (configs/lvdm_short/*.yaml, scripts/sample_uncond.py): LDM's "linear" is
# scaled_linear; DDPM over all 1000 steps by default; its DDIM spaces steps as range(0, T, T // S) + 1, eta 1.
OFFICIAL_DIFFUSION = DiffusionConfig(num_timesteps=1000, schedule="scaled_linear", linear_start=0.0015,
                                     linear_end=0.0155, parameterization="eps", loss="l1", sampler="ddpm",
                                     ddim_eta=1.0, timestep_spacing="leading")
UNET, EMA, AUTOENCODER = "model.diffusion_model.", "model_ema.", "first_stage_model."


# ----------------------------------------------------------------------------- reading the pickle
def read_checkpoint(path: str | Path) -> tuple[dict[str, torch.Tensor], dict]:
    """(state_dict, {"global_step", "epoch"}) of a Lightning checkpoint, without Lightning; memory-mapped."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    if not zipfile.is_zipfile(path):
        raise ValueError(f"{path} is not a PyTorch checkpoint (no zip directory at its end: another kind of file, "
                         f"or a truncated download)")
    if not hasattr(torch.serialization, "get_unsafe_globals_in_checkpoint"):
        raise ValueError(f"reading Lightning checkpoints without Lightning needs torch >= 2.5, this is "
                         f"{torch.__version__}")
    try:
        names = torch.serialization.get_unsafe_globals_in_checkpoint(str(path))
    except Exception as error:  # a broken zip member or pickle: say so in one line
        raise ValueError(f"{path} is not a readable PyTorch checkpoint ({type(error).__name__}: {error})") from None
    unknown = [name for name in names if name not in LIGHTNING_CLASSES]
    if unknown:
        raise ValueError(f"{path} pickles classes that are not Lightning's: {', '.join(unknown)}; refusing to unpickle "
                         f"it (only {', '.join(sorted({n.rsplit('.', 1)[1] for n in LIGHTNING_CLASSES}))} are stubbed)")
    stubs = [(type(name.rsplit(".", 1)[1], (dict,), {"__module__": name.rsplit(".", 1)[0]}), name) for name in names]
    try:
        with torch.serialization.safe_globals(stubs):
            data = torch.load(path, map_location="cpu", mmap=True, weights_only=True)
    except Exception as error:
        raise ValueError(f"{path} could not be read as a checkpoint ({type(error).__name__}: "
                         f"{str(error).splitlines()[0] if str(error) else ''})") from None
    state = data.get("state_dict", data) if isinstance(data, dict) else None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{path} holds no state dict of tensors: not an LVDM checkpoint")
    return state, {"global_step": data.get("global_step"), "epoch": data.get("epoch")}


# ----------------------------------------------------------------------------- the UNet
_BLOCK_RENAMES = [  # inside a block: official name -> project name
    (r"^out_layers\.0\.", "out_norm."), (r"^out_layers\.3\.", "out_layers.2."), (r"^skip_connection\.", "skip."),
    (r"^op\.", "conv."), (r"^(norm|qkv|proj_out)_s\.", r"spatial.\1."), (r"^(norm|qkv|proj_out)_t\.", r"temporal.\1."),
    (r"^relative_position_k\.embeddings_table$", "temporal.relative_key"),
    (r"^relative_position_v\.embeddings_table$", "temporal.relative_value")]


def unet_key(name: str) -> str:
    """An official UNet parameter name (without `model.diffusion_model.`) -> the project's `unet.UNet` name."""
    if name.startswith("input_blocks.0.0."):
        return "input_conv." + name[len("input_blocks.0.0."):]
    match = (re.match(r"^input_blocks\.(\d+)\.(\d+)\.(.*)$", name) or re.match(r"^(middle)_block\.(\d+)\.(.*)$", name)
             or re.match(r"^output_blocks\.(\d+)\.(\d+)\.(.*)$", name))
    if match is None:
        return re.sub(r"^label_emb\.", "class_embed.", name)  # time_embed.*, out.* keep their names
    block, layer, rest = match.groups()
    block = "middle" if block == "middle" else f"down.{int(block) - 1}" if name.startswith("input") else f"up.{block}"
    for pattern, replacement in _BLOCK_RENAMES:
        rest = re.sub(pattern, replacement, rest)
    return f"{block}.{layer}.{rest}"


def unet_tensor(tensor: torch.Tensor) -> torch.Tensor:
    """Conv3d (O, I, 1, kh, kw) -> Conv2d (O, I, kh, kw); Conv1d (O, I, 1) -> Linear (O, I)."""
    return tensor[:, :, 0] if tensor.ndim in (3, 5) else tensor


def infer_unet_config(state: dict[str, torch.Tensor]) -> UNetConfig:
    """The `UNetConfig` of an official UNet state dict (names without prefix), read from its shapes alone."""
    width = state["time_embed.0.weight"].shape[1]
    input_conv, output_conv = state["input_blocks.0.0.weight"], state["out.2.weight"]
    if input_conv.ndim != 5 or input_conv.shape[2] != 1:
        raise ValueError(f"the UNet's convolutions have temporal kernels {tuple(input_conv.shape[2:])}: not the "
                         f"released short model (1 x 3 x 3), which is the only kind the project's UNet reproduces")
    if any(name.endswith("emb_layers.1.weight") and t.shape[0] != 2 * state[name.replace("emb_layers.1", "in_layers.2")
                                                                       ].shape[0] for name, t in state.items()):
        raise ValueError("the UNet's ResBlocks add the timestep embedding instead of a FiLM scale and shift "
                         "(use_scale_shift_norm: False): not the released short model")
    mults, blocks_per_level, attention_levels, level = [], {}, set(), 0
    for index in range(1, 1 + max(int(n.split(".")[1]) for n in state if n.startswith("input_blocks."))):
        prefix = f"input_blocks.{index}.0."
        if prefix + "op.weight" in state:  # a Downsample: the next level starts
            level += 1
            continue
        channels = state[prefix + "in_layers.2.weight"].shape[0]
        if len(mults) == level:
            mults.append(channels // width)
        blocks_per_level[level] = blocks_per_level.get(level, 0) + 1
        if f"input_blocks.{index}.1.norm_s.weight" in state:
            attention_levels.add(level)
    if len(set(blocks_per_level.values())) != 1:
        raise ValueError(f"the UNet has {blocks_per_level} ResBlocks per level: expected the same number at "
                         f"every level")
    tables = {n: t for n, t in state.items() if n.endswith("relative_position_k.embeddings_table")}
    if not tables:
        raise ValueError("the UNet's temporal attention has no relative positions: not the released short model")
    heads = {state[n.replace("relative_position_k.embeddings_table", "qkv_t.weight")].shape[1] // t.shape[1]
             for n, t in tables.items()}
    distances = {(t.shape[0] - 1) // 2 for t in tables.values()}
    if len(heads) != 1 or len(distances) != 1:
        raise ValueError(f"the UNet's attention layers differ in heads {heads} or relative distances {distances}")
    num_classes = state["label_emb.weight"].shape[0] if "label_emb.weight" in state else None
    return UNetConfig(in_channels=output_conv.shape[0], out_channels=output_conv.shape[0], model_channels=width,
                      channel_mult=tuple(mults), num_res_blocks=blocks_per_level[0],
                      attention_levels=tuple(sorted(attention_levels)), num_heads=heads.pop(), attention="factorized",
                      max_relative_position=distances.pop(), norm="clip", temporal_attention="lvdm",
                      use_mask=input_conv.shape[1] == output_conv.shape[0] + 1, num_classes=num_classes)


def convert_unet(state: dict[str, torch.Tensor], config: UNetConfig | None = None) -> dict[str, torch.Tensor]:
    """An official UNet state dict (names without prefix) -> the project's, checked name by name and shape by
    shape against `UNet(config)` built on the meta device: every tensor used, every parameter filled."""
    config = config or infer_unet_config(state)
    with torch.device("meta"):
        expected = {name: tuple(t.shape) for name, t in UNet(config).state_dict().items()}
    converted = {unet_key(name): unet_tensor(tensor) for name, tensor in state.items()}
    if len(converted) != len(state):
        raise ValueError("two official UNet tensors map to one project name")
    wrong = [f"{name} {tuple(t.shape)} vs {expected.get(name)}" for name, t in converted.items()
             if expected.get(name) != tuple(t.shape)]
    missing = sorted(set(expected) - set(converted))
    if wrong or missing:
        raise ValueError(f"the UNet weights do not fit the inferred config {config}: "
                         f"{'; '.join(wrong[:3] + [f'missing {n}' for n in missing[:3]])}")
    return converted


def undot_ema(state: dict[str, torch.Tensor], unet_names: list[str]) -> dict[str, torch.Tensor]:
    """`model_ema.*` (LitEma: `diffusion_model.` + name, all dots removed) -> {official UNet name: tensor}."""
    by_undotted = {("diffusion_model." + name).replace(".", ""): name for name in unet_names}
    if len(by_undotted) != len(unet_names):
        raise ValueError("two UNet parameter names differ only in their dots: the EMA names are ambiguous")
    ema = {name[len(EMA):]: tensor for name, tensor in state.items()
           if name.startswith(EMA) and name not in (EMA + "decay", EMA + "num_updates")}
    unknown = sorted(set(ema) - set(by_undotted))
    if unknown or len(ema) != len(unet_names):
        raise ValueError(f"the EMA weights do not match the UNet's: {len(ema)} EMA tensors for {len(unet_names)} "
                         f"parameters{', unknown ' + ', '.join(unknown[:3]) if unknown else ''}")
    return {by_undotted[name]: tensor for name, tensor in ema.items()}


# ----------------------------------------------------------------------------- the autoencoder
def convert_autoencoder(state: dict[str, torch.Tensor], downsample: tuple[int, int, int]
                        ) -> tuple[OfficialAEConfig, dict[str, torch.Tensor]]:
    """`first_stage_model.*` -> (config, state dict of `OfficialAutoencoder`): the prefix and the duplicate
    `x.weight` (the same tensor as `x.conv.weight`) dropped, checked against the class built on the meta device."""
    weights = {name[len(AUTOENCODER):]: t for name, t in state.items() if name.startswith(AUTOENCODER)}
    for name in [n for n in weights if n.endswith(".weight") and n[:-len("weight")] + "conv.weight" in weights]:
        if weights[name].shape != weights[name[:-len("weight")] + "conv.weight"].shape:
            raise ValueError(f"autoencoder tensor {name} is not the alias of {name[:-len('weight')]}conv.weight")
        del weights[name]
    first = weights["encoder.conv_first.conv.weight"]
    config = OfficialAEConfig(in_channels=first.shape[1], base_channels=first.shape[0], downsample=tuple(downsample),
                              latent_channels=weights["quant_conv.conv.weight"].shape[0] // 2)
    with torch.device("meta"):
        model = OfficialAutoencoder(config)
    expected = {name: tuple(t.shape) for name, t in model.state_dict().items() if not name.startswith("latent_")}
    if {name: tuple(t.shape) for name, t in weights.items()} != expected:
        raise ValueError(f"the autoencoder weights do not fit {config}: "
                         f"{sorted(set(weights) ^ set(expected))[:4] or 'shapes differ'}")
    return config, weights


# ----------------------------------------------------------------------------- the whole checkpoint
def check_schedule(state: dict[str, torch.Tensor]) -> None:
    if "betas" in state:
        expected = GaussianDiffusion(OFFICIAL_DIFFUSION).betas.to(torch.float64)
        if state["betas"].shape != expected.shape or not torch.allclose(state["betas"].double(), expected, atol=1e-7):
            raise ValueError("the checkpoint's noise schedule (betas) is not the released models' scaled-linear "
                             "0.0015 -> 0.0155 over 1000 steps")


def split_official(state: dict[str, torch.Tensor], downsample: tuple[int, int, int]) -> dict:
    """Every tensor of an official short-model state dict, converted: the UNet (raw and EMA), the autoencoder;
    anything left over is an error."""
    if any(name.startswith("cond_stage_model.") or ".transformer_blocks." in name for name in state):
        raise ValueError("this is the text-to-video checkpoint (a CLIP text encoder, cross-attention transformer "
                         "blocks, a 2D autoencoder): not supported, only the short Sky and TaiChi models are")
    raw = {name[len(UNET):]: t for name, t in state.items() if name.startswith(UNET)}
    if not raw:
        raise ValueError("the checkpoint holds no LVDM UNet (model.diffusion_model.*): an autoencoder-only ae_*.ckpt "
                         "or not an LVDM checkpoint; convert the short_sky.ckpt or short_taichi.ckpt file")
    if not any(name.startswith(AUTOENCODER) for name in state):
        raise ValueError("the checkpoint holds no autoencoder (first_stage_model.*): not a released short model")
    check_schedule(state)
    config = infer_unet_config(raw)
    ema = undot_ema(state, list(raw)) if any(name.startswith(EMA) for name in state) else None
    vae_config, vae = convert_autoencoder(state, downsample)
    used = {n for n in state if n.startswith((UNET, EMA, AUTOENCODER))} | set(SCHEDULE_BUFFERS)
    left = sorted(set(state) - used)
    if left:
        raise ValueError(f"the checkpoint has tensors this converter does not know: {', '.join(left[:5])}")
    return {"unet_config": config, "raw": convert_unet(raw, config),
            "ema": convert_unet(ema, config) if ema is not None else None,
            "ema_num_updates": int(state[EMA + "num_updates"]) if EMA + "num_updates" in state else None,
            "vae_config": vae_config, "vae": vae}


def read_official(path: str | Path, dataset: str, weights: str) -> dict:
    """Read and check a released short model (seconds: the file is memory-mapped); `write_official` writes it."""
    if dataset not in DATASETS:
        raise ValueError(f"dataset must be one of {tuple(DATASETS)} (the released short models; no UCF-101 weights "
                         f"exist), got {dataset!r}")
    if weights not in WEIGHTS:
        raise ValueError(f"weights must be one of {WEIGHTS}, got {weights!r}")
    state, info = read_checkpoint(path)
    try:
        parts = split_official(state, DATASETS[dataset]["downsample"])
    except KeyError as missing:  # a tensor every released short model has
        raise ValueError(f"{path} lacks the tensor {missing}: not a released LVDM short model") from None
    if parts["unet_config"].use_mask or parts["unet_config"].num_classes:
        raise ValueError("this is a prediction or interpolation UNet (mask input, noise-level embedding): no such "
                         "weights were released, and only the short models are supported")
    if weights == "ema" and parts["ema"] is None:
        raise ValueError(f"{path} holds no EMA weights (model_ema.*); use --weights raw")
    return {**parts, **info, "path": Path(path), "dataset": dataset, "weights": weights}


def write_official(official: dict, out: str | Path) -> dict:
    """Write what `read_official` read as one project checkpoint at `out` (kind "lvdm_short": the UNet's chosen
    weights and, inside, the autoencoder with the dataset's scale and shift); `LatentVideoDiffusion.load(out)` and
    `sample` use it as is. Returns the command's result."""
    table, config = DATASETS[official["dataset"]], official["unet_config"]
    vae = OfficialAutoencoder.from_weights(official["vae"], to_dict(official["vae_config"]))
    vae.latent_scale.fill_(1 / table["scale_factor"])  # official z = scale_factor (z_raw + shift_factor)
    vae.latent_shift.fill_(-table["shift_factor"])
    unet_state = official[official["weights"]]  # names and shapes checked against the project's UNet (convert_unet)
    ft, fs = table["downsample"][0], table["downsample"][1]
    latent_shape = [vae.config.latent_channels, table["num_frames"] // ft, table["size"] // fs, table["size"] // fs]
    source = {"source": official["path"].name, "source_bytes": official["path"].stat().st_size,
              "dataset": official["dataset"], "weights": official["weights"], "scale_factor": table["scale_factor"],
              "shift_factor": table["shift_factor"], "ema_num_updates": official["ema_num_updates"],
              "global_step": official["global_step"], "epoch": official["epoch"]}
    metadata = {"kind": "lvdm_short", "unet": to_dict(config), "diffusion": to_dict(OFFICIAL_DIFFUSION),
                "latent_shape": latent_shape, "official": source,
                "vae": {"embedded": True, "kind": AUTOENCODER_KIND, "config": to_dict(vae.config), "sha256": None}}
    save_weights(out, {**prefixed(unet_state, "unet"), **prefixed(vae.state_dict(), "vae")}, metadata)
    return {"out": str(out), "dataset": official["dataset"], "weights": official["weights"],
            "unet_parameters": sum(math.prod(t.shape) for t in unet_state.values()),
            "autoencoder_parameters": sum(math.prod(t.shape) for t in official["vae"].values()),
            "latent_shape": latent_shape, "frames": table["num_frames"], "size": table["size"],
            "ema_num_updates": official["ema_num_updates"], "bytes": Path(out).stat().st_size}


def convert_official(path: str | Path, dataset: str, weights: str, out: str | Path) -> dict:
    """`read_official`, then `write_official`: the released short model at `path` as one project checkpoint."""
    return write_official(read_official(path, dataset, weights), out)
