"""Make the offline fixture of tests/test_official.py from the official LVDM code (run by a maintainer, not CI).

The fixture records what the official code (github.com/YingqingHe/LVDM) computes, so the tests can check the
converter, the `norm="clip"` / `temporal_attention="lvdm"` UNet and the official autoencoder class against it
without the official code or Lightning installed. Every weight is `lvdm_ref.official.closed_form.fill(key, shape)`
(the official random init zeroes the output layers, which would make any mapping pass); the fixture stores key
lists, inputs and outputs, never weights.

Usage, with the official repository checked out at OFFICIAL (commit d251dcc was used) and, in a separate
environment, torch, einops, numpy, omegaconf, pytorch-lightning and safetensors (torchvision, cv2 and imageio are
only imported for image logging and are stubbed here):

    python tools/make_official_fixture.py --official OFFICIAL --out tests/fixtures

Writes official_lvdm.safetensors (inputs and outputs; JSON metadata: the tiny configs, scale/shift, EMA counter),
official_lvdm_keys.json.gz (the key lists with shapes of the tiny models and of the full-size released and
unreleased ones) and official_lightning.ckpt (a small pickle that names a real Lightning class, for the loader).
"""
from __future__ import annotations

import argparse
import gzip
import json
import subprocess
import sys
import types
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from lvdm_ref.official.closed_form import fill, is_filled  # noqa: E402  (the project's, not the official code)

TIMESTEP = [617, 42]  # two different diffusion timesteps in one batch
SKY_SCALE, SKY_SHIFT = 0.33422927, 1.4606637  # configs/lvdm_short/sky.yaml


def stub_image_logging() -> None:
    """The official modules import torchvision, cv2 and imageio only to log images: empty stand-ins suffice
    (installed after Lightning has looked for the real torchvision and found none)."""
    import pytorch_lightning  # noqa: F401
    for name in ("torchvision", "torchvision.utils", "torchvision.transforms", "torchvision.transforms.functional",
                 "cv2", "imageio"):
        module = types.ModuleType(name)
        module.make_grid = module.to_tensor = None
        sys.modules.setdefault(name, module)


def tiny_unet_params(**changes) -> dict:
    params = dict(image_size=8, in_channels=4, out_channels=4, model_channels=32, attention_resolutions=[2],
                  num_res_blocks=1, channel_mult=[1, 2], num_heads=2, use_temporal_transformer=False,
                  use_checkpoint=False, legacy=False, kernel_size_t=1, padding_t=0, temporal_length=4,
                  use_relative_position=True, use_scale_shift_norm=True)
    return {**params, **changes}


def autoencoder_config(downsample: list[int]) -> dict:
    stage = dict(n_hiddens=32, z_channels=4, image_channel=3, norm_type="group")
    return {"target": "lvdm.models.autoencoder3d.AutoencoderKL",
            "params": {"embed_dim": 4, "lossconfig": "__is_first_stage__", "ddconfig": {
                "double_z": True, "z_channels": 4,
                "encoder": {"target": "lvdm.models.modules.aemodules3d.Encoder",
                            "params": {**stage, "downsample": downsample, "padding_type": "replicate",
                                       "double_z": True}},
                "decoder": {"target": "lvdm.models.modules.aemodules3d.Decoder",
                            "params": {**stage, "upsample": downsample}}}}}


def tiny_latent_diffusion_config() -> dict:
    return {"target": "lvdm.models.ddpm3d.LatentDiffusion", "params": dict(
        linear_start=0.0015, linear_end=0.0155, timesteps=1000, loss_type="l1", image_size=8, video_length=4,
        channels=4, monitor=None, cond_stage_trainable=False, concat_mode=False, scale_by_std=False,
        scale_factor=SKY_SCALE, shift_factor=SKY_SHIFT, cond_stage_config="__is_unconditional__",
        encoder_type="3d", use_ema=True,
        unet_config={"target": "lvdm.models.modules.openaimodel3d.UNetModel", "params": tiny_unet_params()},
        first_stage_config=autoencoder_config([2, 4, 4]))}


def fill_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Load closed-form weights into every weight of `model`; an alias (`x.weight` of `x.conv.weight`) gets its
    target's values. Returns the state dict."""
    state = model.state_dict()
    for name, tensor in state.items():
        target = name[:-len("weight")] + "conv.weight" if name.endswith(".weight") else None
        if target in state:
            state[name] = fill(target, tuple(tensor.shape))
        elif is_filled(name):
            state[name] = fill(name, tuple(tensor.shape))
    model.load_state_dict(state, strict=True)
    return model.state_dict()


def shapes(state: dict[str, torch.Tensor], prefix: str = "") -> list[list]:
    return [[prefix + name, list(tensor.shape)] for name, tensor in state.items()]


def config_for_meta(path: Path, key: str) -> dict:
    from omegaconf import OmegaConf
    config = OmegaConf.load(path)
    OmegaConf.update(config, "model.params.first_stage_config.params.ckpt_path", None, force_add=True)
    return OmegaConf.to_container(config.model if key == "model" else config.model.params[key], resolve=False)


def full_size_keys(official: Path) -> dict[str, list]:
    """The key lists with shapes of the released short model (UNet, EMA, autoencoder) and of the never-released
    prediction / interpolation UNets, built on the meta device."""
    import lvdm.models.ddpm3d as ddpm3d
    from lvdm.utils.common_utils import instantiate_from_config
    schedule = ddpm3d.DDPM.register_schedule

    def cpu_schedule(*args, **kwargs):  # the schedule goes through numpy and checks values: make it on the CPU
        with torch.device("cpu"):
            return schedule(*args, **kwargs)

    ddpm3d.DDPM.register_schedule = cpu_schedule
    keys = {}
    with torch.device("meta"):
        model = instantiate_from_config(config_for_meta(official / "configs/lvdm_short/sky.yaml", "model"))
        keys["short"] = shapes(model.state_dict())
        for role in ("pred", "interp"):
            unet = instantiate_from_config(config_for_meta(official / f"configs/lvdm_long/sky_{role}.yaml",
                                                           "unet_config"))
            keys[role] = shapes(unet.state_dict(), "model.diffusion_model.")
    return keys


def lightning_pickle(path: Path, state: dict[str, torch.Tensor]) -> None:
    """A Lightning-1.4-shaped checkpoint: `callbacks` keyed by the ModelCheckpoint class itself, as PL 1.4.2's
    dump_checkpoint writes it (the released files were saved by that version)."""
    from pytorch_lightning.callbacks.model_checkpoint import ModelCheckpoint
    torch.save({"epoch": 3, "global_step": 1234, "pytorch-lightning_version": "1.4.2", "state_dict": state,
                "callbacks": {ModelCheckpoint: {"monitor": None, "best_model_score": None,
                                                "best_model_path": "", "current_score": None, "dirpath": "ckpt"}},
                "optimizer_states": [], "lr_schedulers": []}, path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--official", type=Path, required=True, help="a checkout of YingqingHe/LVDM")
    parser.add_argument("--out", type=Path, default=ROOT / "tests" / "fixtures")
    args = parser.parse_args()
    sys.path.insert(0, str(args.official.resolve()))
    stub_image_logging()
    from lvdm.models.modules.openaimodel3d import FrameInterpPredUNet
    from lvdm.samplers.ddim import DDIMSampler
    from lvdm.utils.common_utils import instantiate_from_config
    from safetensors.torch import save_file
    DDIMSampler.register_buffer = lambda self, name, value: setattr(self, name, value)  # it forces CUDA
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(31)

    def randn(*shape):
        return torch.randn(*shape, generator=generator)

    model = instantiate_from_config(tiny_latent_diffusion_config()).eval()
    state = fill_state(model)
    model.model_ema.num_updates.fill_(1234)
    state = model.state_dict()
    out: dict[str, torch.Tensor] = {}
    with torch.no_grad():
        # the short UNet, raw weights and the EMA copy (LitEma keeps them under un-dotted names)
        out["unet_x"], out["unet_t"] = randn(2, 4, 4, 8, 8), torch.tensor(TIMESTEP)
        out["unet_eps_raw"] = model.model.diffusion_model(out["unet_x"], out["unet_t"])
        with model.ema_scope():
            out["unet_eps_ema"] = model.model.diffusion_model(out["unet_x"], out["unet_t"])
        # 5 DDIM steps, eta 0, from x_T, as scripts/sample_uncond.py runs it (raw weights)
        out["ddim_x_T"] = randn(1, 4, 4, 8, 8)
        sampler = DDIMSampler(model)
        sample, trajectory = sampler.sample(5, 1, (4, 4, 8, 8), eta=0.0, x_T=out["ddim_x_T"].clone(),
                                            verbose=False, log_every_t=1)
        out["ddim_x_0"], out["ddim_x_first_step"] = sample, trajectory["x_inter"][1]
        # the 3D autoencoder (time strides 2 then 1): encoder moments, the normalised latent, a decoded video
        out["ae_video"] = randn(1, 3, 4, 16, 16).clamp(-1, 1)
        posterior = model.first_stage_model.encode(out["ae_video"])
        out["ae_moments"] = posterior.parameters
        out["ae_z"] = model.get_first_stage_encoding(posterior.mode())
        out["ae_decode_z"] = randn(1, 4, 2, 4, 4)
        out["ae_decoded"] = model.decode(out["ae_decode_z"])
        # a prediction UNet (mask channel, noise level s as a class label), as configs/lvdm_long/sky_pred.yaml
        pred = FrameInterpPredUNet(**tiny_unet_params(in_channels=5, num_classes=251)).eval()
        pred_state = {name: fill("model.diffusion_model." + name, tuple(t.shape))
                      for name, t in pred.state_dict().items()}
        pred.load_state_dict(pred_state)
        mask = torch.zeros(2, 1, 4, 8, 8)
        mask[0, :, :1] = 1  # the first latent frame given
        mask[1, :, ::3] = 1  # the first and the last given
        out["pred_mask"], out["pred_t"], out["pred_s"] = mask, torch.tensor([500, 999]), torch.tensor([0, 250])
        out["pred_eps"] = pred(torch.cat([out["unet_x"], mask], dim=1), out["pred_t"], y=out["pred_s"])
    official_commit = subprocess.run(["git", "-C", str(args.official), "rev-parse", "--short", "HEAD"],
                                     capture_output=True, text=True).stdout.strip() or "d251dcc"
    metadata = {
        "official_commit": official_commit, "scale_factor": SKY_SCALE, "shift_factor": SKY_SHIFT,
        "ema_num_updates": int(model.model_ema.num_updates), "unet": tiny_unet_params(),
        "autoencoder": autoencoder_config([2, 4, 4])["params"]["ddconfig"],
    }
    args.out.mkdir(parents=True, exist_ok=True)
    tensors = {name: tensor.detach().contiguous().float() for name, tensor in out.items()}
    save_file(tensors, str(args.out / "official_lvdm.safetensors"), metadata={"fixture": json.dumps(metadata)})
    with gzip.open(args.out / "official_lvdm_keys.json.gz", "wt") as handle:
        json.dump({"official_commit": official_commit, "tiny": shapes(state),
                   "tiny_pred": shapes(pred_state, "model.diffusion_model."), **full_size_keys(args.official)}, handle)
    small = {name: state[name] for name in ("model.diffusion_model.out.2.bias", "model_ema.num_updates")}
    lightning_pickle(args.out / "official_lightning.ckpt", small)
    for name in ("official_lvdm.safetensors", "official_lvdm_keys.json.gz", "official_lightning.ckpt"):
        print(name, (args.out / name).stat().st_size, "bytes")


if __name__ == "__main__":
    main()
