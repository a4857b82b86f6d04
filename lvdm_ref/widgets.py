"""Controls for the notebooks: a frame scrubber for any video, and explorers that redraw a figure when a
control moves (ipywidgets 7.7 or later, so Colab's 7.x front end shows them as well as JupyterLab's 8.x).

A control needs a running kernel: in nbval, on GitHub or in a notebook reopened without one, a widget
shows nothing (or "Error displaying widget"). So every control here comes with a static fallback that
the notebook displays too: `scrub_video` shows the looping GIF of `viz.show_video` above its scrubber, and
each explorer's `draw(**values)` is the same drawing function the control calls, which a notebook calls
at fixed settings for the figure that stays.

Each redraw is kept near a second on a 2-core CPU: what a control can reach is either precomputed (every
step of a trajectory, decoded once) or cheap (one decoder pass, one UNet call, a few DDIM steps), and
results are cached per setting. `tests/test_widgets.py` moves every control without a browser and checks
that the image changes and shows what the drawing function draws.

Only the widgets common to ipywidgets 7 and 8 are used (Play, IntSlider, FloatSlider, Text, Button,
Image, HTML, HBox, VBox, jslink), and displayed with `display(...)`, which both versions support.
"""
from __future__ import annotations

import html
import io
from typing import Callable

import numpy as np
import torch
from PIL import Image

from lvdm_ref.utils import to_uint8
from lvdm_ref.viz import as_video, frame_strip, show_attention, show_video


def png_bytes(image: np.ndarray, scale: int = 1) -> bytes:
    """uint8 (H, W) or (H, W, C) -> PNG bytes, each pixel repeated `scale` times (crisp, not smoothed)."""
    image = np.asarray(image)
    if image.ndim == 3 and image.shape[-1] == 1:
        image = image[..., 0]
    image = image.repeat(scale, axis=0).repeat(scale, axis=1)
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="png")
    return buffer.getvalue()


def figure_png(figure, dpi: int = 72) -> bytes:
    """A matplotlib figure -> PNG bytes; the figure is closed (an explorer draws a new one per redraw)."""
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=dpi)
    plt.close(figure)
    return buffer.getvalue()


def _display(*objects) -> None:
    from IPython.display import display

    display(*objects)


# ----------------------------------------------------------------------------- a frame scrubber
class FrameScrubber:
    """Play, pause and step through a video: a Play button linked to a frame slider in the browser (it plays
    at `fps` with no kernel round trip for the slider), two step buttons, and the slider's frame, shown
    `scale` times enlarged. Frames are PNG-encoded once, so moving to a frame only swaps bytes.

    Takes any layout `viz.as_video` does (a batch becomes a grid). `self.image.value` is the shown PNG."""

    def __init__(self, video: np.ndarray | torch.Tensor, fps: float = 8, scale: int | None = None,
                 nrow: int | None = None, title: str | None = None):
        import ipywidgets as widgets

        video = as_video(video, nrow)  # (F, H, W, C)
        scale = scale or max(1, min(4, 192 // video.shape[2]))
        self.frames = [png_bytes(frame, scale) for frame in video]
        last = len(self.frames) - 1
        self.play = widgets.Play(value=0, min=0, max=last, step=1, interval=max(10, int(1000 / fps)))
        self.slider = widgets.IntSlider(value=0, min=0, max=last, step=1, description="frame")
        self.link = widgets.jslink((self.play, "value"), (self.slider, "value"))
        self.back = widgets.Button(description="< step", layout=widgets.Layout(width="70px"))
        self.forward = widgets.Button(description="step >", layout=widgets.Layout(width="70px"))
        self.back.on_click(lambda _: self.step(-1))
        self.forward.on_click(lambda _: self.step(+1))
        self.image = widgets.Image(value=self.frames[0], format="png")
        self.slider.observe(self._show, names="value")
        header = [widgets.HTML(f"<b>{html.escape(title)}</b>")] if title else []
        self.widget = widgets.VBox([*header, self.image,
                                    widgets.HBox([self.play, self.back, self.forward, self.slider])])

    def step(self, by: int) -> None:
        """One frame forward (by = 1) or back (by = -1), wrapping around."""
        self.slider.value = (self.slider.value + by) % len(self.frames)

    def _show(self, change) -> None:
        self.image.value = self.frames[change["new"]]

    def _ipython_display_(self):
        _display(self.widget)


class ScrubbedVideo:
    """What `scrub_video` returns: displays the looping GIF (the static fallback) and, under it, the scrubber."""

    def __init__(self, video, fps: float = 8, scale: int | None = None, nrow: int | None = None,
                 title: str | None = None):
        self.gif = show_video(video, fps=fps, scale=scale, nrow=nrow, title=title)
        self.scrubber = FrameScrubber(video, fps=fps, scale=scale, nrow=nrow)

    def _ipython_display_(self):
        _display(self.gif, self.scrubber)


def scrub_video(video, fps: float = 8, scale: int | None = None, nrow: int | None = None,
                title: str | None = None) -> ScrubbedVideo:
    """`viz.show_video`'s GIF (it plays anywhere, and stays when the notebook is reopened) with a frame
    scrubber under it (play, pause, step; it needs a running kernel). End a cell with it or `display` it."""
    return ScrubbedVideo(video, fps=fps, scale=scale, nrow=nrow, title=title)


# ----------------------------------------------------------------------------- explorers
class Explorer:
    """A figure that redraws when its controls move. `draw(**values)` returns a matplotlib figure (one
    keyword per control); each redraw renders it to PNG in `self.image`. A setting `draw` rejects with a
    ValueError (a caption it cannot read) is shown as that message instead of raising.

    `draw` is also the static fallback: `explorer.draw(**values)` at fixed settings, then `plt.show()`."""

    def __init__(self, draw: Callable, controls: dict, title: str | None = None):
        import ipywidgets as widgets

        self.draw, self.controls = draw, controls
        self.image = widgets.Image(format="png")
        self.message = widgets.HTML("")
        for control in controls.values():
            control.observe(self.redraw, names="value")
        header = [widgets.HTML(f"<b>{html.escape(title)}</b>")] if title else []
        self.widget = widgets.VBox([*header, widgets.HBox(list(controls.values())), self.message, self.image])
        self.redraw()

    def values(self) -> dict:
        return {name: control.value for name, control in self.controls.items()}

    def redraw(self, change=None) -> None:
        try:
            self.image.value = figure_png(self.draw(**self.values()))
            self.message.value = ""
        except ValueError as error:
            self.message.value = f"<span style='color: #b00'>{html.escape(str(error))}</span>"

    def _ipython_display_(self):
        _display(self.widget)


def _strip_axes(ax, video: np.ndarray, title: str, every: int = 1):
    strip = frame_strip(video, every=every)  # (H, W', C)
    ax.imshow(strip[..., 0] if strip.shape[-1] == 1 else strip, cmap="gray", vmin=0, vmax=255)
    ax.set_title(title, fontsize=8)
    ax.set_axis_off()


def noise_level_explorer(diffusion, clip: torch.Tensor, noise: torch.Tensor, every: int = 3) -> Explorer:
    """Notebook 03: one clip (1, C, F, H, W) in [-1, 1] noised to level t with one fixed noise, the slider
    choosing t in 0..T-1; frames 0, every, 2 * every, ... (pixels outside [-1, 1] clipped for display)."""
    import ipywidgets as widgets
    import matplotlib.pyplot as plt

    def draw(t: int):
        x_t = diffusion.q_sample(clip, torch.tensor([t]), noise).float()  # (1, C, F, H, W)
        figure, ax = plt.subplots(figsize=(7, 1.4))
        _strip_axes(ax, to_uint8(x_t)[0], f"t = {t}   sqrt(abar_t) = {float(diffusion.sqrt_alphas_cumprod[t]):.3f}   "
                    f"SNR = {float(diffusion.snr(torch.tensor([t]))[0]):.3g}", every)
        figure.tight_layout()
        return figure

    slider = widgets.IntSlider(value=400, min=0, max=diffusion.num_timesteps - 1, step=1, description="t",
                               continuous_update=False)
    return Explorer(draw, {"t": slider})


def trajectory_explorer(trajectory, decoded: np.ndarray | None = None, sample: int = 0) -> Explorer:
    """Notebooks 03 and 05: every step of a sampler's trajectory (`sample(..., return_trajectory=True)`), and
    any frame. Step S (the last) is the finished sample, so the slider reaches the clean clip.

    Pixel space (03): leave `decoded` out. Latent space (05): `decoded` is uint8 (S + 1, F, H, W, C), the
    estimate of every step decoded to pixels and then the decoded final sample, computed once."""
    import ipywidgets as widgets
    import matplotlib.pyplot as plt

    steps = len(trajectory.timesteps)
    estimates = torch.cat([trajectory.pred_x0[:, sample], trajectory.x_t[-1:, sample]]).float()  # (S + 1, C, f, h, w)
    inputs = trajectory.x_t[:, sample].float()  # (S + 1, C, f, h, w): each step's input, then the final sample
    latent = decoded is not None
    if decoded is None:
        decoded = to_uint8(estimates)  # (S + 1, F, H, W, C)
    num_frames = decoded.shape[1]

    def draw(step: int, frame: int):
        done = step == steps
        t = "0: the finished sample" if done else str(trajectory.timesteps[step])
        index = frame * inputs.shape[2] // num_frames  # the latent frame holding this frame (the frame itself in pixels)
        panels = [(inputs[step, 0, index], "x_t" if not done else "x_0", "RdBu_r" if latent else "gray"),
                  (estimates[step, 0, index], "estimate of x_0" if not latent else "estimate of z_0, ch 0",
                   "RdBu_r" if latent else "gray")]
        figure, axes = plt.subplots(1, 3 if latent else 2, figsize=(7.5 if latent else 5, 2.7))
        for ax, (image, label, cmap) in zip(axes, panels):
            limit = 3 if latent else 1
            ax.imshow(image.clamp(-limit, limit).numpy(), cmap=cmap, vmin=-limit, vmax=limit)
            ax.set_title(f"{label}" + (f" (latent frame {index})" if latent else ""), fontsize=8)
        if latent:
            pixels = decoded[step, frame]
            axes[2].imshow(pixels[..., 0] if pixels.shape[-1] == 1 else pixels, cmap="gray", vmin=0, vmax=255)
            axes[2].set_title("the estimate, decoded", fontsize=8)
        for ax in axes:
            ax.set_axis_off()
        figure.suptitle(f"step {step} of {steps}, t = {t}, frame {frame}", fontsize=9)
        figure.tight_layout()
        return figure

    controls = {"step": widgets.IntSlider(value=0, min=0, max=steps, step=1, description="step"),
                "frame": widgets.IntSlider(value=0, min=0, max=num_frames - 1, step=1, description="frame")}
    return Explorer(draw, controls)


def guidance_explorer(sample: Callable[[float], torch.Tensor], sigma: float, max_weight: float = 3.0) -> Explorer:
    """Notebook 03's toy guidance: `sample(w)` returns guided samples (1-D data); the histogram at the chosen
    w against the conditional N(0, sigma^2) and the unconditional N(0, (2 sigma)^2) densities. Cached per w."""
    import ipywidgets as widgets
    import matplotlib.pyplot as plt

    cache: dict[float, np.ndarray] = {}
    grid = np.linspace(-4 * sigma, 4 * sigma, 200)

    def density(scale):
        return np.exp(-grid ** 2 / (2 * scale ** 2)) / (scale * np.sqrt(2 * np.pi))

    def draw(w: float):
        w = round(float(w), 2)
        if w not in cache:
            cache[w] = sample(w).flatten().float().numpy()
        values = cache[w]
        figure, ax = plt.subplots(figsize=(5.5, 2.6))
        ax.hist(values, bins=80, range=(grid[0], grid[-1]), density=True, color="C0", alpha=0.6,
                label=f"guided samples, w = {w:g} (std {values.std():.3f})")
        ax.plot(grid, density(sigma), "k--", lw=1, label=f"conditional data, std {sigma:g}")
        ax.plot(grid, density(2 * sigma), ":", color="0.4", lw=1, label=f"unconditional data, std {2 * sigma:g}")
        ax.set(xlabel="x_0", ylabel="density")
        ax.legend(fontsize=7)
        figure.tight_layout()
        return figure

    slider = widgets.FloatSlider(value=0.0, min=0.0, max=max_weight, step=0.1, description="w",
                                 continuous_update=False)
    return Explorer(draw, {"w": slider})


def attention_explorer(unet, diffusion, z0: torch.Tensor, noise: torch.Tensor) -> Explorer:
    """Notebook 05: the attention maps of one forward pass at level t (one fixed noise) and where a chosen
    latent position looks (`viz.show_attention`). One UNet call per new t, cached; moving the query redraws only."""
    import ipywidgets as widgets

    from lvdm_ref.viz import capture_attention

    cache: dict[int, object] = {}
    side = z0.shape[-1]

    def maps_at(t: int):
        if t not in cache:
            level = torch.tensor([t])
            with capture_attention(unet) as maps, torch.no_grad():
                unet(diffusion.q_sample(z0, level, noise), level)
            cache[t] = maps
        return cache[t]

    def draw(t: int, row: int, col: int):
        figure = show_attention(maps_at(t), query=((row + 0.5) / side, (col + 0.5) / side))
        figure.suptitle(f"t = {t}, query at latent row {row}, column {col} (+)", fontsize=9)
        figure.tight_layout()
        return figure

    controls = {"t": widgets.IntSlider(value=200, min=0, max=diffusion.num_timesteps - 1, step=50, description="t",
                                       continuous_update=False),
                "row": widgets.IntSlider(value=side // 2, min=0, max=side - 1, description="query row"),
                "col": widgets.IntSlider(value=side // 2, min=0, max=side - 1, description="query col")}
    return Explorer(draw, controls)


def perturbation_explorer(diffusion, autoencoder, z: torch.Tensor, noise: torch.Tensor, frames_per_latent: int) -> Explorer:
    """Notebook 09: one latent clip z (1, c, f, h, w) perturbed to level s with one fixed noise (LVDM Sec. 3.3,
    `perturbation.perturb`) and decoded: the first frame of each latent frame. One decoder pass per redraw."""
    import ipywidgets as widgets
    import matplotlib.pyplot as plt

    from lvdm_ref.perturbation import perturb

    def draw(s: int):
        with torch.no_grad():
            video = to_uint8(autoencoder.decode(perturb(diffusion, z, torch.tensor([s]), noise)).clamp(-1, 1))[0]
        figure, ax = plt.subplots(figsize=(6, 1.9))
        _strip_axes(ax, video, f"the condition at s = {s}: sqrt(abar_s) = {float(diffusion.sqrt_alphas_cumprod[s]):.3f}"
                    f"{'' if s < 250 else ' (beyond the training levels, s < 250)'}", frames_per_latent)
        figure.tight_layout()
        return figure

    slider = widgets.IntSlider(value=100, min=0, max=diffusion.num_timesteps - 1, step=5, description="s",
                               continuous_update=False)
    return Explorer(draw, {"s": slider})


def guided_step_explorer(diffusion, autoencoder, x_t: torch.Tensor, t: torch.Tensor, eps_cond: torch.Tensor,
                         eps_uncond: torch.Tensor, truth: np.ndarray, frames_per_latent: int) -> Explorer:
    """Notebook 09: one denoising step on one fixed start (x_t, t and both branches computed once), the guided
    prediction (1 + w) eps_cond - w eps_uncond at the chosen w, its clean estimate decoded under the truth
    (uint8 frames, one per keyframe). One decoder pass per redraw."""
    import ipywidgets as widgets
    import matplotlib.pyplot as plt

    from lvdm_ref.guidance import guide

    def draw(w: float):
        eps = guide(eps_cond, eps_uncond, float(w))
        with torch.no_grad():
            video = to_uint8(autoencoder.decode(diffusion.predict_start_from_noise(x_t, t, eps)).clamp(-1, 1))[0]
        figure, axes = plt.subplots(2, 1, figsize=(6, 2.8))
        _strip_axes(axes[0], truth, "the true keyframes (the first is given)")
        _strip_axes(axes[1], video, f"predicted clean keyframes, guided, w = {float(w):g}", frames_per_latent)
        figure.tight_layout()
        return figure

    slider = widgets.FloatSlider(value=0.1, min=-1.0, max=5.0, step=0.1, description="w", continuous_update=False)
    return Explorer(draw, {"w": slider})


def caption_explorer(model, classifier=None, num_steps: int = 10, seed: int = 0, caption: str = "3 and 7",
                     max_scale: float = 9.0) -> Explorer:
    """Notebook 11: type a caption and pick the guidance scale g; one clip sampled from a fixed seed with
    `num_steps` DDIM steps (few, so a redraw stays near a second), every 2nd frame shown, and, with the digit
    classifier, the digits it reads. Cached per (caption, g); a caption `parse_caption` refuses is shown as
    its error message."""
    import ipywidgets as widgets
    import matplotlib.pyplot as plt

    from lvdm_ref.captions import caption_text, parse_caption

    cache: dict[tuple, np.ndarray] = {}

    def draw(caption: str, g: float):
        digits = parse_caption(caption)  # a ValueError names what a caption may hold
        key = (tuple(sorted(digits)), round(float(g), 2))
        if key not in cache:
            cache[key] = model.sample([caption], guidance_scale=float(g), num_steps=num_steps, seed=seed)[0]
        clip = cache[key]  # uint8 (F, H, W, 1)
        read = ""
        if classifier is not None:
            from lvdm_ref.digits import clip_digits

            read = f"; the classifier reads: {caption_text(clip_digits(classifier, clip[None], num_digits=len(digits))[0].tolist())}"
        figure, ax = plt.subplots(figsize=(7, 1.5))
        _strip_axes(ax, clip, f"caption {caption_text(digits)!r}, g = {float(g):g} (DDIM {num_steps}, seed {seed}){read}", 2)
        figure.tight_layout()
        return figure

    controls = {"caption": widgets.Text(value=caption, description="caption", continuous_update=False),
                "g": widgets.FloatSlider(value=3.0, min=0.0, max=max_scale, step=0.5, description="g",
                                         continuous_update=False)}
    return Explorer(draw, controls)
