"""Pixel-space diffusion (the latent-vs-pixel ablation's baseline): shapes, the level layout, an overfit,
the checkpoint round trip, and the ablation harness sharing the latent model between its two files."""
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from lvdm_ref.config import UNetConfig, get_preset
from lvdm_ref.diffusion import GaussianDiffusion
from lvdm_ref.lvdm import LatentVideoDiffusion
from lvdm_ref.pixel import PixelSpace, pixel_preset, pixel_unet_config
from lvdm_ref.recipes import train_pixel_model
from lvdm_ref.unet import UNet

ROOT = Path(__file__).resolve().parents[1]


def level_widths(config: UNetConfig, size: int) -> dict[int, int]:
    """resolution -> channels of each UNet level."""
    return {size // 2 ** level: config.model_channels * mult for level, mult in enumerate(config.channel_mult)}


def test_pixel_unet_has_the_latent_widths_and_attention_at_the_same_resolutions():
    latent = get_preset("mmnist").unet  # on 16x16 latents
    pixel = pixel_unet_config(latent)  # on 64x64 frames
    latent_widths, pixel_widths = level_widths(latent, 16), level_widths(pixel, 64)
    assert pixel_widths == {64: 16, 32: 32, **latent_widths}
    attention_at = lambda config, size: {size // 2 ** level for level in config.attention_levels}  # noqa: E731
    assert attention_at(pixel, 64) == attention_at(latent, 16) == {8, 4}


def test_pixel_unet_maps_clips_to_clips():
    config = pixel_unet_config(get_preset("quick").unet, extra_levels=1)
    unet = UNet(UNetConfig(**{**config.__dict__, "in_channels": 1, "out_channels": 1}))
    x = torch.randn(2, 1, 8, 32, 32)  # (B, C, T, H, W)
    assert unet(x, torch.tensor([3, 70])).shape == x.shape


def test_pixel_space_is_the_identity():
    video = torch.rand(2, 1, 4, 8, 8) * 2 - 1
    space = PixelSpace(1)
    assert torch.equal(space.decode(space.encode(video)), video)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """The quick preset's pixel model, 40 steps on 8 clips of (1, 8, 32, 32)."""
    torch.manual_seed(0)
    preset = pixel_preset(get_preset("quick"))
    out = tmp_path_factory.mktemp("pixel")
    return preset, train_pixel_model(preset, None, out, steps=60, num_clips=8, progress=False, device="cpu")


def held_loss(model: LatentVideoDiffusion, clips: torch.Tensor) -> float:
    """The diffusion loss on `clips` at fixed timesteps and noise (the same for every model)."""
    generator = torch.Generator().manual_seed(1)
    t = torch.linspace(5, model.diffusion.num_timesteps - 5, 8).long().repeat_interleave(len(clips))
    x0 = clips.repeat(8, 1, 1, 1, 1)
    noise = torch.randn(x0.shape, generator=generator)
    with torch.no_grad():
        return model.diffusion.training_losses(model.unet, x0, t=t, noise=noise)["loss"].item()


def test_pixel_model_overfits_a_few_clips(trained):
    from lvdm_ref.recipes import training_clips
    from lvdm_ref.utils import from_uint8

    preset, summary = trained
    clips = from_uint8(training_clips(preset.data, 8))  # the clips it trained on
    model = LatentVideoDiffusion.load(summary["checkpoint"], use_ema=False)
    torch.manual_seed(0)
    untrained = LatentVideoDiffusion(PixelSpace(1), UNet(model.unet.config), model.diffusion, model.latent_shape)
    before, after = held_loss(untrained, clips), held_loss(model, clips)
    assert after < 0.75 * before, (before, after)  # measured 0.80 -> 0.52; predicting 0 scores E|eps| = 0.80


def test_pixel_checkpoint_loads_without_an_autoencoder_and_samples_clips(trained):
    preset, summary = trained
    model = LatentVideoDiffusion.load(summary["checkpoint"])
    assert isinstance(model.vae, PixelSpace) and model.metadata["space"] == "pixel" and "vae" not in model.metadata
    assert model.latent_shape == (1, preset.data.num_frames, preset.data.size, preset.data.size)
    videos = model.sample(3, sampler="ddim", num_steps=4, eta=1.0, seed=0, batch_size=2)
    assert videos.shape == (3, preset.data.num_frames, preset.data.size, preset.data.size, 1)
    assert videos.dtype == np.uint8
    again = model.sample(3, sampler="ddim", num_steps=4, eta=1.0, seed=0, batch_size=2)
    assert np.array_equal(videos, again)


def test_pixel_and_latent_models_share_the_diffusion():
    preset = get_preset("mmnist")
    assert pixel_preset(preset).diffusion == preset.diffusion and pixel_preset(preset).train == preset.train
    assert GaussianDiffusion(pixel_preset(preset).diffusion).config == preset.diffusion


def test_ablations_share_the_finished_latent_model(tmp_path):
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import ablations

    setting = {"vae_sha256": "x", "minutes": 1.0, "num": 2, "num_clips": 16, "threads": 1}
    finished = {"steps": 4, "half": {"fvd": 3.0}, "end": {"fvd": 2.0}}
    attention, pixel = tmp_path / "attention.json", tmp_path / "pixel.json"
    attention.write_text(json.dumps({"setting": setting, "variants": {ablations.SHARED: finished,
                                                                       "joint": {"steps": 2}}}))
    ablations.share_finished(pixel, attention, {**setting, "num": 3})  # other settings: nothing copied
    assert not pixel.exists()
    ablations.share_finished(pixel, attention, setting)
    assert json.loads(pixel.read_text()) == {"setting": setting, "variants": {ablations.SHARED: finished}}
    unfinished = {"setting": setting, "variants": {ablations.SHARED: {"steps": 4}}}
    attention.write_text(json.dumps(unfinished))
    pixel.unlink()
    ablations.share_finished(pixel, attention, setting)  # only a finished entry is shared
    assert not pixel.exists()
