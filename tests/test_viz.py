"""Viewers: grid and strip layouts checked tile by tile, the inline GIF decoded back, saving."""
from __future__ import annotations

import base64
import re

import numpy as np
import pytest
import torch

from lvdm_ref.utils import to_uint8
from lvdm_ref.video_io import read_video
from lvdm_ref.viz import as_video, frame_strip, plot_frame_strip, save_video, show_video, video_grid


def random_clips(num: int, num_frames: int = 3, height: int = 6, width: int = 5, channels: int = 1) -> np.ndarray:
    rng = np.random.default_rng(num)
    return rng.integers(0, 200, size=(num, num_frames, height, width, channels), dtype=np.uint8)


def test_video_grid_places_every_tile():
    clips, padding = random_clips(5), 2
    grid = video_grid(clips, nrow=3, padding=padding, pad_value=255)
    height, width = 6, 5
    assert grid.shape == (3, 2 * height + 3 * padding, 3 * width + 4 * padding, 1)  # 2 rows x 3 columns
    covered = np.zeros(grid.shape[1:3], dtype=bool)
    for index in range(6):  # the oracle: where tile i must be, by arithmetic
        row, col = divmod(index, 3)
        top, left = padding + row * (height + padding), padding + col * (width + padding)
        tile = grid[:, top:top + height, left:left + width]
        expected = clips[index] if index < 5 else np.full_like(clips[0], 255)  # the 6th cell is blank
        np.testing.assert_array_equal(tile, expected)
        covered[top:top + height, left:left + width] = True
    assert (grid[:, ~covered] == 255).all()  # everything else is padding


def test_video_grid_accepts_model_tensors():
    tensor = torch.rand(2, 3, 4, 8, 8) * 2 - 1  # (B, C, T, H, W) in [-1, 1]
    grid = video_grid(tensor, nrow=2, padding=0)
    assert grid.shape == (4, 8, 16, 3)
    np.testing.assert_array_equal(grid[:, :, 8:], to_uint8(tensor)[1])


def test_frame_strip_and_plot():
    video = random_clips(1, num_frames=7)[0]  # (T, H, W, 1)
    strip = frame_strip(video, every=3, padding=1)
    assert strip.shape == (6 + 2, 3 * 5 + 4, 1)  # frames 0, 3, 6
    for slot, frame in enumerate((0, 3, 6)):
        np.testing.assert_array_equal(strip[1:7, 1 + slot * 6:6 + slot * 6], video[frame])
    figure = plot_frame_strip(video, every=3)
    image = figure.axes[0].images[0].get_array()
    np.testing.assert_array_equal(np.asarray(image), frame_strip(video, every=3)[..., 0])
    assert [label.get_text() for label in figure.axes[0].get_xticklabels()] == ["t=0", "t=3", "t=6"]
    import matplotlib.pyplot as plt

    plt.close(figure)


def test_show_video_embeds_a_gif_that_decodes_to_the_input(tmp_path):
    video = random_clips(1, num_frames=4, height=16, width=16)[0]
    shown = show_video(video, fps=4, scale=3, title="a <clip>")
    markup = shown.data
    assert 'width="48"' in markup and "a &lt;clip&gt;" in markup
    payload = re.search(r'src="data:image/gif;base64,([^"]+)"', markup).group(1)
    (tmp_path / "shown.gif").write_bytes(base64.b64decode(payload))
    np.testing.assert_array_equal(read_video(tmp_path / "shown.gif", channels=1), video)  # gray GIF is exact


def test_as_video_layouts():
    tensor = torch.rand(1, 4, 8, 8) * 2 - 1  # (C, T, H, W)
    np.testing.assert_array_equal(as_video(tensor), to_uint8(tensor))
    assert as_video(np.zeros((4, 8, 8), np.uint8)).shape == (4, 8, 8, 1)
    assert as_video(random_clips(4), nrow=2).shape == video_grid(random_clips(4), nrow=2).shape
    with pytest.raises(ValueError, match="uint8"):
        as_video(np.zeros((4, 8, 8, 1), np.float32))


@pytest.mark.parametrize("extension", [".gif", ".mp4", ".png", ".npz"])
def test_save_video(tmp_path, extension):
    clips = random_clips(2, height=8, width=8)
    path = save_video(tmp_path / f"out{extension}", clips, nrow=2)
    assert path.exists() and path.stat().st_size > 0
    if extension == ".gif":
        np.testing.assert_array_equal(read_video(path, channels=1), video_grid(clips, nrow=2))
    if extension == ".npz":
        with np.load(path) as saved:
            np.testing.assert_array_equal(saved["videos"], clips)
    with pytest.raises(ValueError, match="'.png', '.npz'"):
        save_video(tmp_path / "out.txt", clips)


# ----------------------------------------------------------------------------- attention and latent views
def _captured_maps():
    from lvdm_ref.config import UNetConfig
    from lvdm_ref.unet import UNet
    from lvdm_ref.viz import capture_attention

    torch.manual_seed(0)
    unet = UNet(UNetConfig(model_channels=16, channel_mult=(1, 2), attention_levels=(1,), num_heads=2))
    with capture_attention(unet) as maps:
        unet(torch.randn(2, 4, 4, 8, 8), torch.tensor([3, 700]))
    return maps


def test_attention_views_are_distributions_over_keys():
    from lvdm_ref.viz import spatial_attention_map, temporal_attention_matrix

    maps = _captured_maps()
    temporal = temporal_attention_matrix(maps.of_kind("temporal")[0])
    assert temporal.shape == (4, 4)
    np.testing.assert_allclose(temporal.sum(axis=1), 1.0, rtol=1e-5)  # each query row is a softmax
    record = maps.of_kind("spatial")[0]
    side = int(record["weights"].shape[-1] ** 0.5)
    spatial = spatial_attention_map(record, (1, 2), frame=3, sample=1)
    assert spatial.shape == (side, side)
    np.testing.assert_allclose(spatial.sum(), 1.0, rtol=1e-5)
    # the same row read straight from the captured tensor, averaged over heads
    expected = record["weights"][1, 3, :, 1 * side + 2].mean(dim=0).reshape(side, side).numpy()
    np.testing.assert_allclose(spatial, expected)


def test_attention_views_reject_the_wrong_record():
    from lvdm_ref.viz import spatial_attention_map, temporal_attention_matrix

    maps = _captured_maps()
    with pytest.raises(ValueError, match="temporal"):
        temporal_attention_matrix(maps.of_kind("spatial")[0])
    with pytest.raises(ValueError, match="outside"):
        spatial_attention_map(maps.of_kind("spatial")[0], (99, 0))


def test_show_attention_and_plot_latents_draw_one_panel_per_layer_and_frame():
    import matplotlib

    matplotlib.use("Agg")
    from lvdm_ref.viz import plot_latents, show_attention

    maps = _captured_maps()
    figure = show_attention(maps)
    drawn = [ax for ax in figure.axes if ax.images]
    assert len(drawn) == len(maps.of_kind("temporal")[:4]) + len(maps.of_kind("spatial")[:4])
    figure = plot_latents(torch.randn(2, 4, 3, 8, 8), sample=1)
    assert len(figure.axes) == 4 * 3


def test_budget_study_figure_is_drawn_from_the_results():
    import matplotlib.pyplot as plt

    from lvdm_ref.budget_study import plot_budget_study

    results = {"setting": {"minutes": 45}, "reference": {"real_vs_real": 25.0, "autoencoder_ceiling": 40.0, "num": 8},
               "variants": {"a": {"steps": 10, "end": {"fvd": 150.0},
                                  "loss_curve": {"cpu_minutes": [0.1, 0.2], "loss": [0.5, 0.25]}},
                            "b": {"steps": 5, "end": {"fvd": 170.0}}, "unfinished": {"steps": 3}}}
    samples = {"a": np.zeros((4, 16, 8, 8, 1), np.uint8)}
    figure = plot_budget_study(results, samples)
    bars, losses, *strips = figure.axes
    assert [p.get_height() for p in bars.containers[0]] == [150.0, 170.0]  # finished variants only, from the JSON
    assert [list(line.get_ydata()) for line in losses.get_lines()] == [[0.5, 0.25]]
    assert len(strips) == 2 and strips[0].get_images()[0].get_array().shape == (4 * 12, 8 * 10 + 2)  # 8 frames, padded
    assert strips[1].get_title() == "b: no samples recorded"
    plt.close(figure)
    with pytest.raises(ValueError, match="no finished variant"):
        plot_budget_study({**results, "variants": {"unfinished": {"steps": 3}}})


def test_long_video_figure_names_only_the_kinds_of_frame_it_draws():
    """sample-long --figure at its default stride shows frames of keyframe latents only: no blue in the legend."""
    import matplotlib.pyplot as plt

    from lvdm_ref.viz import plot_long_video

    video = random_clips(1, num_frames=64, height=4, width=4)[0]  # (64, 4, 4, 1)
    is_keyframe = (np.arange(64) // 4) % 4 == 0  # 4 frames per latent, every 4th latent a keyframe: frames 16k..16k+3
    for every, orange, blue in ((16, True, False), (4, True, True), (2, True, True)):
        figure = plot_long_video(video, is_keyframe, every=every, per_row=8)
        title = figure._suptitle.get_text()
        edges = {patch.get_edgecolor() for ax in figure.axes for patch in ax.patches}
        assert ("orange" in title, "blue" in title) == (orange, blue), (every, title)
        assert len(edges) == orange + blue  # one outline colour per kind named
        plt.close(figure)
