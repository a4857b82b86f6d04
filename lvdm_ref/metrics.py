"""Video metrics: FVD and KVD on I3D features, PSNR and SSIM, and the autoencoder's scores.

References:
1) Unterthiner et al., *Towards Accurate Generative Models of Video: A New Metric and
   Challenges*, arXiv:1812.01717 (FVD: Frechet distance between I3D features, Eq. 1).
2) Binkowski et al., *Demystifying MMD GANs*, ICLR 2018 (KID, here on video features: KVD).
3) Wang et al., *Image Quality Assessment: From Error Visibility to Structural Similarity*,
   IEEE TIP 2004 (SSIM, Eq. 13, 11x11 Gaussian window with sigma 1.5).

The feature network is the Kinetics-400 Inception-I3D of `i3d.py`. Protocol (docs/fvd.md, "FVD
protocol and reference points"): uint8 clips of 16 frames, grayscale repeated to RGB, resized to 224x224 (bilinear where
a side grows, a box filter where it shrinks: `resize_weights`), scaled to [-1, 1]; features are
the 400 logits averaged over time; Frechet distance in float64 with unbiased (N - 1) covariances.
Features of a clip file are cached per file (`file_features`), so a real set is embedded once. `windowed_fvd` scores the 16-frame windows of long videos (the
drift of the hierarchy), and `evaluate_reconstruction` gives the autoencoder's per-frame PSNR
and SSIM (the ceiling for LVDM's samples).
"""
from __future__ import annotations

import hashlib
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from einops import rearrange
from tqdm.auto import tqdm

from lvdm_ref.checkpoint import atomic_write
from lvdm_ref.i3d import I3D_SHA256, RESOLUTION, InceptionI3d, load_i3d
from lvdm_ref.utils import cache_dir, file_sha256, from_uint8
from lvdm_ref.video_io import READ_EXTENSIONS, read_clips

if TYPE_CHECKING:  # for annotations only: a metrics file reads models, models never import it
    from lvdm_ref.vae3d import VideoAutoencoder

NUM_FRAMES = 16  # the protocol's clip length
# Changing anything that alters features must change this string: it keys the feature cache.
PROTOCOL = f"i3d-k400({I3D_SHA256[:12]})/logits/{NUM_FRAMES}f/{RESOLUTION}-bilinear/gray2rgb/[-1,1]"
# Clips with a side above 224 px are shrunk with a box filter, which the first protocol did not do: their
# features are cached under this longer key, and those of clips up to 224 px are unchanged.
PROTOCOL_SHRINK = f"{PROTOCOL}/box-shrink"
BATCH_SIZE = 2  # clips per I3D call: on a CPU 2 beat 8 by 1.3x (benchmarks/i3d_speed.py); a GPU may like more


# ----------------------------------------------------------------------------- features
def check_clips(videos: np.ndarray, name: str = "videos", num_frames: int | None = NUM_FRAMES) -> np.ndarray:
    """Validate uint8 (N, F, H, W, C) clips with C in {1, 3}; integer arrays within [0, 255] are accepted."""
    videos = np.asarray(videos)
    if videos.ndim != 5 or videos.shape[-1] not in (1, 3):
        raise ValueError(f"{name} must be (N, F, H, W, C) with C = 1 or 3, got shape {videos.shape}")
    if videos.dtype != np.uint8:
        low, high = (videos.min(), videos.max()) if videos.size else (0, 0)
        if videos.dtype.kind not in "iu" or low < 0 or high > 255:
            raise ValueError(f"{name} must hold uint8 values in [0, 255]; got dtype {videos.dtype} with values "
                             f"in [{low}, {high}] (convert float videos in [-1, 1] with lvdm_ref.utils.to_uint8)")
        videos = videos.astype(np.uint8)
    if num_frames is not None and videos.shape[1] != num_frames:
        raise ValueError(f"{name} has {videos.shape[1]} frames per clip; the FVD protocol uses {num_frames} "
                         f"(cut long videos into windows with windowed_fvd)")
    return videos


def resize_weights(size_in: int, size_out: int) -> torch.Tensor:
    """(size_out, size_in) weights that resize one axis: output = weights @ input.

    Growing (or keeping) an axis: bilinear with half-pixel centres (what F.interpolate does). Shrinking:
    a box filter, each output pixel the mean of the input span it covers, [i, i + 1) * size_in / size_out,
    partly covered pixels weighted by their share (OpenCV's INTER_AREA). The box smooths before it
    samples, so texture finer than the output grid averages out instead of aliasing into a moire.
    """
    if size_in <= size_out:
        source = np.clip((np.arange(size_out) + 0.5) * size_in / size_out - 0.5, 0, size_in - 1)
        low = np.floor(source).astype(int)
        high = np.minimum(low + 1, size_in - 1)
        weights = np.zeros((size_out, size_in))
        np.add.at(weights, (np.arange(size_out), low), 1 - (source - low))
        np.add.at(weights, (np.arange(size_out), high), source - low)
    else:
        edges = np.arange(size_out + 1) * size_in / size_out  # output pixel i covers [edges[i], edges[i + 1])
        pixels = np.arange(size_in)
        overlap = np.minimum(edges[1:, None], pixels[None] + 1) - np.maximum(edges[:-1, None], pixels[None])
        weights = np.clip(overlap, 0, None) / (size_in / size_out)  # (size_out, size_in), rows sum to 1
    return torch.from_numpy(weights).float()


def preprocess(videos: np.ndarray) -> torch.Tensor:
    """uint8 (N, F, H, W, C) -> float (N, 3, F, 224, 224) in [-1, 1], the I3D input."""
    x = torch.from_numpy(np.ascontiguousarray(videos)).float()  # (N, F, H, W, C) in [0, 255]
    num_clips, height, width = x.shape[0], x.shape[2], x.shape[3]
    frames = rearrange(x, "n f h w c -> (n f) c h w")
    if max(height, width) <= RESOLUTION:
        frames = F.interpolate(frames, size=(RESOLUTION, RESOLUTION), mode="bilinear", align_corners=False)
    else:  # a side shrinks: separable box filter there, bilinear on a side that grows
        rows, cols = resize_weights(height, RESOLUTION), resize_weights(width, RESOLUTION)
        frames = torch.einsum("yh,bchw,xw->bcyx", rows, frames, cols)  # (N F, C, 224, 224)
    # Differs from the FVD paper's code (TF1 resize_bilinear: source = target * in / out, no
    # half-pixel offset, no smoothing when shrinking): we sample at half-pixel centres like torch and
    # TF2, and shrink with a box filter (bilinear alone aliases at 256 px and up). Stated in docs/fvd.md.
    x = rearrange(frames, "(n f) c h w -> n c f h w", n=num_clips) / 127.5 - 1  # (N, C, F, 224, 224)
    return x.expand(-1, 3, -1, -1, -1) if x.shape[1] == 1 else x  # grayscale -> RGB


@torch.no_grad()
def i3d_features(videos: np.ndarray, batch_size: int = BATCH_SIZE, model: InceptionI3d | None = None,
                 device: str | torch.device = "cpu", progress: bool = True) -> np.ndarray:
    """uint8 (N, 16, H, W, C) clips -> (N, 400) float64 I3D logits, in batches."""
    videos = check_clips(videos)
    model = model if model is not None else load_i3d(device)
    device = next(model.parameters()).device
    features = []
    for begin in tqdm(range(0, len(videos), batch_size), desc="I3D features", unit="batch",
                      disable=not progress, file=sys.stderr):
        batch = preprocess(videos[begin:begin + batch_size]).to(device)  # (b, 3, 16, 224, 224)
        features.append(model(batch).double().cpu().numpy())  # (b, 400)
    return np.concatenate(features) if features else np.zeros((0, 400))


def load_clips(path: str | Path, num: int | None = None, skipped: dict[str, str] | None = None) -> np.ndarray:
    """uint8 (N, F, H, W, C) clips, the first `num` of them: an .npz's array `videos`, or the consecutive
    16-frame clips of a video file or of each video file in a folder (`video_io.read_clips`, RGB; a broken or
    too short file is skipped and listed in `skipped`)."""
    path = Path(path)
    if path.is_dir() or path.suffix.lower() != ".npz":
        videos = read_clips(path, NUM_FRAMES, skipped)  # (N, 16, H, W, 3)
    else:
        with np.load(path) as archive:
            if "videos" not in archive.files:
                raise ValueError(f"{path} holds {archive.files} but no array 'videos'; clips are read from `videos`, "
                                 f"uint8 (N, F, H, W, C), as `data moving-mnist` and `sample --out x.npz` write "
                                 f"them (np.savez(path, videos=clips))")
            videos = archive["videos"]
    if num is not None:
        if num > len(videos):
            raise ValueError(f"--num {num} asks for more clips than {path} holds ({len(videos)})")
        videos = videos[:num]
    return videos


def file_features(path: str | Path, num: int | None = None, batch_size: int = BATCH_SIZE,
                  model: InceptionI3d | None = None, progress: bool = True,
                  videos: np.ndarray | None = None) -> tuple[np.ndarray, bool]:
    """Features of the first `num` clips of an .npz, a video file or a folder of them (all when None),
    cached per file (`videos`: those clips when already read by `load_clips(path, num)`).

    The cache is keyed by the file's contents (a folder's: its video files') and PROTOCOL and holds the
    features of a prefix of its clips; a later call computes only the clips it lacks (so the real-set
    statistics are computed once, and N = 256, 512, 1024 of one file share work). Returns (features, cache_hit).
    """
    path = Path(path)
    if path.is_dir():  # a folder of videos: the names and bytes of its video files, in reading order
        files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in READ_EXTENSIONS)
        contents = hashlib.sha256("".join(f"{p.name}:{file_sha256(p)}/" for p in files).encode()).hexdigest()
    else:
        contents = file_sha256(path)
    digest = hashlib.sha256(f"{contents}/{PROTOCOL}".encode()).hexdigest()  # the file's bytes + protocol
    videos = load_clips(path, num) if videos is None else videos
    if max(videos.shape[2:4], default=0) > RESOLUTION:  # shrunk with the box filter: its own key
        digest = hashlib.sha256(f"{contents}/{PROTOCOL_SHRINK}".encode()).hexdigest()
    cached_path = cache_dir() / "features" / f"{digest[:32]}.npy"
    cached = np.load(cached_path) if cached_path.exists() else np.zeros((0, 400))  # (k, 400)
    if len(cached) >= len(videos):
        return cached[:len(videos)], True
    new = i3d_features(videos[len(cached):], batch_size=batch_size, model=model, progress=progress)
    features = np.concatenate([cached, new])  # (num, 400)

    def write(tmp: str) -> None:
        with open(tmp, "wb") as handle:  # a handle: np.save would add ".npy" to the temp name
            np.save(handle, features)

    atomic_write(cached_path, write)
    return features, False


# ----------------------------------------------------------------------------- distances
def _sqrtm_psd(matrix: np.ndarray) -> np.ndarray:
    values, vectors = np.linalg.eigh(matrix)
    return (vectors * np.sqrt(np.clip(values, 0, None))) @ vectors.T


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """||mu1 - mu2||^2 + tr(S1 + S2 - 2 (S1 S2)^(1/2)), FVD paper Eq. 1, in float64.

    tr (S1 S2)^(1/2) = sum of sqrt(eigenvalues of S1^(1/2) S2 S1^(1/2)), a symmetric PSD matrix with
    the same eigenvalues as S1 S2, so two `eigh` calls replace a general (complex) sqrtm.
    """
    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    sigma1, sigma2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(np.asarray(sigma2, np.float64))
    root1 = _sqrtm_psd(sigma1)
    middle = root1 @ sigma2 @ root1
    trace_sqrt = np.sqrt(np.clip(np.linalg.eigvalsh((middle + middle.T) / 2), 0, None)).sum()
    distance = np.sum((mu1 - mu2) ** 2) + np.trace(sigma1) + np.trace(sigma2) - 2 * trace_sqrt
    # A distance is >= 0: round-off in the two square roots leaves about -4e-4 for a set against itself.
    return max(float(distance), 0.0)


def feature_statistics(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(N, D) -> mean (D,) and unbiased covariance (D, D), float64."""
    features = np.asarray(features, np.float64)
    return features.mean(axis=0), np.cov(features, rowvar=False, ddof=1)


def fvd_from_features(real: np.ndarray, fake: np.ndarray) -> float:
    for name, features in (("real", real), ("fake", fake)):
        if len(features) < 2:
            raise ValueError(f"FVD needs at least 2 {name} clips (a covariance), got {len(features)}")
    return frechet_distance(*feature_statistics(real), *feature_statistics(fake))


def kvd_from_features(real: np.ndarray, fake: np.ndarray) -> float:
    """Unbiased MMD^2 with the polynomial kernel k(x, y) = (x.y / D + 1)^3 (KID on video features).

    One estimate over all clips; the KID paper also averages over subsets, which we do not.
    """
    x, y = np.asarray(real, np.float64), np.asarray(fake, np.float64)
    m, n, dim = len(x), len(y), x.shape[1]
    if m < 2 or n < 2:
        raise ValueError(f"KVD needs at least 2 clips per set, got {m} and {n}")
    k_xx, k_yy, k_xy = [(a @ b.T / dim + 1) ** 3 for a, b in ((x, x), (y, y), (x, y))]
    return float((k_xx.sum() - np.trace(k_xx)) / (m * (m - 1)) + (k_yy.sum() - np.trace(k_yy)) / (n * (n - 1))
                 - 2 * k_xy.mean())


def compute_fvd(real: np.ndarray, fake: np.ndarray, batch_size: int = BATCH_SIZE, model: InceptionI3d | None = None,
                progress: bool = True) -> dict:
    """FVD and KVD between two sets of uint8 (N, 16, H, W, C) clips; the sets may differ in frame size and
    channels (I3D sees every clip resized to 224x224, gray repeated to RGB)."""
    real, fake = check_clips(real, "real"), check_clips(fake, "fake")
    model = model if model is not None else load_i3d()
    real_features = i3d_features(real, batch_size, model, progress=progress)
    fake_features = i3d_features(fake, batch_size, model, progress=progress)
    return {"fvd": fvd_from_features(real_features, fake_features),
            "kvd": kvd_from_features(real_features, fake_features), "num": len(real), "num_fake": len(fake)}


def windowed_fvd(videos: np.ndarray, real: np.ndarray | None = None, starts: Sequence[int] = (0,),
                 real_features: np.ndarray | None = None, batch_size: int = BATCH_SIZE,
                 model: InceptionI3d | None = None, progress: bool = True) -> dict[int, float]:
    """Long-video drift: FVD of the 16-frame window at each start frame against real 16-frame clips.

    videos: uint8 (N, L, H, W, C) long videos; real: uint8 (M, 16, H, W, C) clips, or pass their
    `real_features` (M, 400) once and reuse them for every window.
    """
    videos = check_clips(videos, "videos", num_frames=None)
    bad = [start for start in starts if start < 0 or start + NUM_FRAMES > videos.shape[1]]
    if bad:
        raise ValueError(f"window starts {bad} do not fit {NUM_FRAMES}-frame windows in {videos.shape[1]} frames "
                         f"(valid: 0..{videos.shape[1] - NUM_FRAMES})")
    model = model if model is not None else load_i3d()
    if real_features is None:
        if real is None:
            raise ValueError("pass real clips or real_features")
        real_features = i3d_features(real, batch_size, model, progress=progress)
    return {int(start): fvd_from_features(real_features, i3d_features(
        videos[:, start:start + NUM_FRAMES], batch_size, model, progress=progress)) for start in starts}


# ----------------------------------------------------------------------------- PSNR and SSIM
def psnr(x: torch.Tensor, y: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """Per-frame PSNR in dB of (B, C, F, H, W) videos with values in [0, data_range] -> (B, F).

    PSNR is shift-invariant, so [-1, 1] videos with data_range=2 give the same numbers.
    """
    mse = (x.double() - y.double()).pow(2).mean(dim=(1, 3, 4))  # (B, F)
    return 10 * torch.log10(data_range ** 2 / mse)


def _gaussian_window(size: int = 11, sigma: float = 1.5) -> torch.Tensor:
    coords = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-coords ** 2 / (2 * sigma ** 2))
    return g / g.sum()  # (size,)


def ssim(x: torch.Tensor, y: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """Per-frame SSIM (Wang et al. 2004, Eq. 13) of (B, C, F, H, W) videos in [0, data_range] -> (B, F).

    11x11 Gaussian window (sigma 1.5), K1 = 0.01, K2 = 0.03, 'valid' filtering as in the authors'
    MATLAB code, averaged over pixels and channels. The luminance term is not shift-invariant:
    pass [-1, 1] videos as (x + 1) / 2, as the standard measures on non-negative pixels.
    """
    batch, channels, frames = x.shape[:3]
    a = rearrange(x.double(), "b c f h w -> (b f c) 1 h w")
    b = rearrange(y.double(), "b c f h w -> (b f c) 1 h w")
    g = _gaussian_window().to(a.device)

    def blur(image: torch.Tensor) -> torch.Tensor:  # separable Gaussian, valid: (n, 1, H-10, W-10)
        return F.conv2d(F.conv2d(image, g.view(1, 1, -1, 1)), g.view(1, 1, 1, -1))

    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    mu_a, mu_b = blur(a), blur(b)
    var_a, var_b = blur(a * a) - mu_a ** 2, blur(b * b) - mu_b ** 2
    cov = blur(a * b) - mu_a * mu_b
    ssim_map = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a ** 2 + mu_b ** 2 + c1) * (var_a + var_b + c2))
    per_plane = ssim_map.mean(dim=(1, 2, 3))  # ((B F C),)
    return rearrange(per_plane, "(b f c) -> b f c", b=batch, f=frames, c=channels).mean(dim=2)  # (B, F)


# ----------------------------------------------------------------------------- the autoencoder
@torch.no_grad()
def evaluate_reconstruction(autoencoder: VideoAutoencoder, videos: np.ndarray, batch_size: int = 8) -> dict:
    """Per-frame PSNR (dB) and SSIM of reconstructions of uint8 clips (N, F, H, W, C), averaged over all frames."""
    autoencoder.eval()
    psnrs, ssims = [], []
    device = autoencoder.latent_scale.device
    for start in range(0, len(videos), batch_size):
        real = from_uint8(videos[start:start + batch_size]).to(device)  # (B, C, F, H, W) in [-1, 1]
        fake = autoencoder.reconstruct(real)
        # SSIM is not shift-invariant (its luminance term), so measure on [0, 1] pixels as the standard does.
        real01, fake01 = (real + 1) / 2, (fake + 1) / 2
        psnrs.append(psnr(fake01, real01, data_range=1.0).flatten())  # (B * F,)
        ssims.append(ssim(fake01, real01, data_range=1.0).flatten())
    return {"psnr": float(torch.cat(psnrs).mean()), "ssim": float(torch.cat(ssims).mean())}
