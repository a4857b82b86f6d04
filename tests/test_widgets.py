"""The notebooks' controls, moved without a browser: each move redraws, the image changes, and it shows
what the drawing function (the static fallback) draws at that setting."""
from __future__ import annotations

import io

import matplotlib
import numpy as np
import pytest
import torch
from PIL import Image

matplotlib.use("Agg")

from lvdm_ref.config import DiffusionConfig  # noqa: E402
from lvdm_ref.diffusion import GaussianDiffusion  # noqa: E402
from lvdm_ref.viz import video_grid  # noqa: E402
from lvdm_ref.widgets import (FrameScrubber, caption_explorer, guidance_explorer, noise_level_explorer,  # noqa: E402
                              png_bytes, scrub_video, trajectory_explorer)


def decode_png(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)))


def clips(num: int = 2, frames: int = 5, size: int = 8) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 255, size=(num, frames, size, size, 1), dtype=np.uint8)


def test_frame_scrubber_shows_the_slider_frame_and_steps_around():
    video = clips(1)[0]  # (5, 8, 8, 1)
    scrubber = FrameScrubber(video, scale=3)
    np.testing.assert_array_equal(decode_png(scrubber.image.value), video[0, ..., 0].repeat(3, 0).repeat(3, 1))
    scrubber.slider.value = 3  # what the Play button does, through its link to the slider
    np.testing.assert_array_equal(decode_png(scrubber.image.value), video[3, ..., 0].repeat(3, 0).repeat(3, 1))
    scrubber.step(+1), scrubber.step(+1)  # past the last frame: back to the first
    assert scrubber.slider.value == 0
    scrubber.step(-1)
    assert scrubber.slider.value == 4
    assert scrubber.play.max == scrubber.slider.max == 4
    assert {scrubber.link.source[0], scrubber.link.target[0]} == {scrubber.play, scrubber.slider}


def test_scrub_video_keeps_the_gif_as_its_fallback():
    batch = clips(4)
    shown = scrub_video(batch, nrow=2, scale=1)
    assert "data:image/gif;base64," in shown.gif.data  # the static output: plays with no kernel
    np.testing.assert_array_equal(decode_png(shown.scrubber.frames[2]), video_grid(batch, nrow=2)[2, ..., 0])


@pytest.fixture(scope="module")
def diffusion():
    return GaussianDiffusion(DiffusionConfig())


def test_noise_level_explorer_redraws_the_closed_form(diffusion):
    from lvdm_ref.utils import to_uint8
    from lvdm_ref.viz import frame_strip

    clip = torch.rand(1, 1, 4, 8, 8, generator=torch.Generator().manual_seed(0)) * 2 - 1
    noise = torch.randn(clip.shape, generator=torch.Generator().manual_seed(1))
    explorer = noise_level_explorer(diffusion, clip, noise, every=1)
    before = explorer.image.value
    explorer.controls["t"].value = 900
    assert explorer.image.value != before  # the callback redrew
    for t in (0, 900):
        figure = explorer.draw(t=t)  # the static fallback: the same function
        abar = diffusion.alphas_cumprod[t]
        expected = (abar.sqrt() * clip + (1 - abar).sqrt() * noise).float()  # DDPM Eq. 4
        np.testing.assert_array_equal(figure.axes[0].images[0].get_array(), frame_strip(to_uint8(expected)[0])[..., 0])


def test_trajectory_explorer_reaches_the_finished_sample(diffusion):
    data = torch.rand(3, 1, 2, 4, 4) * 2 - 1
    from lvdm_ref.diffusion import EmpiricalDenoiser

    start = torch.randn(1, 1, 2, 4, 4, generator=torch.Generator().manual_seed(0))
    final, trajectory = diffusion.sample(EmpiricalDenoiser(data, diffusion), start.shape, sampler="ddim", num_steps=5,
                                         noise=start, return_trajectory=True)
    explorer = trajectory_explorer(trajectory)
    step = explorer.controls["step"]
    assert step.max == len(trajectory.timesteps) == 5  # the slider's last position is the finished sample
    shown = explorer.image.value
    step.value = step.max
    assert explorer.image.value != shown
    explorer.controls["frame"].value = 1
    figure = explorer.draw(step=5, frame=1)
    np.testing.assert_allclose(figure.axes[0].images[0].get_array(), final[0, 0, 1].clamp(-1, 1).numpy(), atol=1e-6)
    assert "finished sample" in figure._suptitle.get_text()


def test_guidance_explorer_caches_and_redraws():
    calls = []

    def sample(w):
        calls.append(w)
        return torch.randn(1, 2000, generator=torch.Generator().manual_seed(0)) * 0.5 / (1 + w)

    explorer = guidance_explorer(sample, sigma=0.5)
    first = explorer.image.value
    explorer.controls["w"].value = 1.0
    assert explorer.image.value != first
    explorer.controls["w"].value = 0.0  # cached: no new sampling
    assert calls == [0.0, 1.0] and explorer.image.value == first


class FakeCaptionModel:
    """Samples a clip whose brightness is the guidance scale: enough to see the explorer redraw."""

    def sample(self, captions, guidance_scale, num_steps, seed):
        return np.full((1, 4, 8, 8, 1), int(20 * guidance_scale), np.uint8)


def test_caption_explorer_redraws_and_reports_a_bad_caption():
    explorer = caption_explorer(FakeCaptionModel(), classifier=None, num_steps=2)
    first = explorer.image.value
    explorer.controls["g"].value = 5.0
    assert explorer.image.value != first
    explorer.controls["caption"].value = "3 and 12"  # not a digit: the message says why, nothing raises
    assert explorer.message.value != ""
    explorer.controls["caption"].value = "seven"
    assert explorer.message.value == ""


def test_png_bytes_round_trip():
    image = clips(1)[0, 0]  # (8, 8, 1)
    np.testing.assert_array_equal(decode_png(png_bytes(image, 2)), image[..., 0].repeat(2, 0).repeat(2, 1))
