"""3D video autoencoder: shapes, errors, over-fitting, chunked decode, checkpoints, losses, and the
shipped weights against their model card (reconstruction metrics: tests/test_metrics.py)."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from lvdm_ref.config import VAEConfig, get_preset
from lvdm_ref.data import FreshMovingMNIST
from lvdm_ref.vae3d import AutoencoderWithLoss, FrameGroupNorm, VideoAutoencoder, autoencoder_loss

REPO = Path(__file__).resolve().parents[1]
SHIPPED = REPO / "data" / "checkpoints" / "mmnist_vae.safetensors"
CARD = REPO / "data" / "checkpoints" / "README.md"


def tiny(**overrides) -> VAEConfig:
    values = dict(base_channels=4, channel_mult=(1, 2, 2), num_res_blocks=1, latent_channels=3,
                  spatial_downsample=4, temporal_downsample=2)
    values.update(overrides)
    return VAEConfig(**values)


def levels(spatial: int) -> tuple[int, ...]:
    return (1,) + (2,) * {2: 1, 4: 2, 8: 3}[spatial]


# ----------------------------------------------------------------------------- shapes and errors
@pytest.mark.parametrize("spatial", [2, 4, 8])
@pytest.mark.parametrize("temporal", [1, 2, 4])
def test_shapes_for_every_factor(spatial, temporal):
    if temporal > spatial:
        pytest.skip("x4 in time needs two down-sampling stages")
    torch.manual_seed(0)
    model = VideoAutoencoder(tiny(spatial_downsample=spatial, temporal_downsample=temporal,
                                  channel_mult=levels(spatial))).eval()
    video = torch.rand(1, 1, 8, 16, 24) * 2 - 1  # (B, C, T, H, W), non-square on purpose
    with torch.no_grad():
        z = model.encode(video)
        out = model.decode(z)
    assert z.shape == (1, 3, 8 // temporal, 16 // spatial, 24 // spatial)
    assert tuple(z.shape[1:]) == model.latent_shape(8, 16, 24)
    assert out.shape == video.shape
    assert model.compression_ratio(8, 16, 24) == pytest.approx(8 * 16 * 24 / (3 * (8 // temporal) * (16 // spatial)
                                                                             * (24 // spatial)))


@pytest.mark.parametrize("shape, message", [
    ((1, 1, 7, 16, 16), r"7 frames are not divisible by temporal_downsample=2; use 6 or 8 frames"),
    ((1, 1, 8, 18, 16), r"height 18 is not divisible by spatial_downsample=4; crop or resize to 16 or 20"),
    ((1, 1, 8, 16, 30), r"width 30 is not divisible by spatial_downsample=4; crop or resize to 28 or 32"),
    ((1, 3, 8, 16, 16), r"expected a \(B, 1, F, H, W\) video, got shape \(1, 3, 8, 16, 16\)"),
])
def test_bad_inputs_name_the_numbers(shape, message):
    model = VideoAutoencoder(tiny())
    with pytest.raises(ValueError, match=message):
        model.encode(torch.zeros(shape))


@pytest.mark.parametrize("overrides, message", [
    (dict(spatial_downsample=3), r"spatial_downsample must be one of \(2, 4, 8\), got 3"),
    (dict(temporal_downsample=8), r"temporal_downsample must be one of \(1, 2, 4\), got 8"),
    (dict(recon_loss="l3"), r"recon_loss must be one of \('l1', 'l2', 'l1\+l2'\), got 'l3'"),
    (dict(channel_mult=(1, 2)), r"spatial_downsample=4 takes 2 halvings, so channel_mult needs 3 levels, got 2"),
    (dict(spatial_downsample=2, channel_mult=(1, 2), temporal_downsample=4),
     r"temporal_downsample=4 needs as many down-sampling stages; spatial_downsample=2 has only 1"),
])
def test_bad_configs_say_what_would_work(overrides, message):
    with pytest.raises(ValueError, match=message):
        VideoAutoencoder(tiny(**overrides))


def test_every_preset_builds_and_mmnist_compresses_16x():
    for name in ("quick", "mmnist", "ucf101"):
        VideoAutoencoder(get_preset(name).vae)
    preset = get_preset("mmnist")
    model = VideoAutoencoder(preset.vae)
    assert model.compression_ratio(preset.data.num_frames, preset.data.size, preset.data.size) >= 16


def test_frame_group_norm_is_group_norm_per_frame():
    torch.manual_seed(0)
    norm = FrameGroupNorm(16)
    torch.nn.init.normal_(norm.weight), torch.nn.init.normal_(norm.bias)
    x = torch.randn(2, 16, 5, 6, 7)  # (B, C, T, H, W)
    per_frame = torch.stack([F.group_norm(x[:, :, t], norm.num_groups, norm.weight, norm.bias, norm.eps)
                             for t in range(5)], dim=2)
    torch.testing.assert_close(norm(x), per_frame)


# ----------------------------------------------------------------------------- decoding in chunks
@pytest.mark.parametrize("temporal", [1, 2, 4])
@pytest.mark.parametrize("chunk_size", [1, 2, 3])
def test_chunked_decode_equals_one_shot(temporal, chunk_size):
    torch.manual_seed(0)
    model = VideoAutoencoder(tiny(temporal_downsample=temporal, num_res_blocks=2)).eval()
    model.latent_shift.normal_(), model.latent_scale.uniform_(0.5, 2)
    z = torch.randn(2, 3, 9, 4, 4)  # (B, c, t, h, w): 9 latent frames, longer than a chunk plus its halo
    seen = []
    hook = model.decoder.conv_in.register_forward_hook(lambda m, inputs, out: seen.append(inputs[0].shape[2]))
    with torch.no_grad():
        one_shot = model.decode(z)
        seen.clear()
        chunked = model.decode(z, chunk_size=chunk_size)
    hook.remove()
    assert chunked.shape == (2, 1, 9 * temporal, 16, 16)
    torch.testing.assert_close(chunked, one_shot, rtol=0, atol=1e-5)
    assert max(seen) <= chunk_size + 2 * model.decoder.temporal_halo()  # memory bounded by the chunk, not t


def test_halo_is_needed():
    """Without the halo, chunk borders differ: the equality above is not an accident of the test."""
    torch.manual_seed(0)
    model = VideoAutoencoder(tiny()).eval()
    z = torch.randn(1, 3, 6, 4, 4)
    with torch.no_grad():
        naive = torch.cat([model.decoder(z[:, :, i:i + 2]) for i in range(0, 6, 2)], dim=2)
        assert (naive - model.decode(z)).abs().max() > 1e-3


# ----------------------------------------------------------------------------- latent statistics, checkpoints
def test_fit_latent_stats_normalises_the_latents():
    torch.manual_seed(0)
    model = VideoAutoencoder(tiny()).eval()
    clips = torch.rand(6, 1, 8, 16, 16) * 2 - 1
    model.fit_latent_stats(clips, batch_size=4)
    with torch.no_grad():
        z = model.encode(clips)  # (B, c, t, h, w)
    torch.testing.assert_close(z.mean(dim=(0, 2, 3, 4)), torch.zeros(3), atol=1e-5, rtol=0)
    torch.testing.assert_close(z.std(dim=(0, 2, 3, 4)), torch.ones(3), atol=1e-5, rtol=0)
    with torch.no_grad():  # decode inverts the normalisation: equal to decoding the raw latent
        torch.testing.assert_close(model.decode(z), model.decoder(model.posterior(clips)[0]), atol=1e-5, rtol=0)


def test_checkpoint_round_trip(tmp_path):
    torch.manual_seed(0)
    model = VideoAutoencoder(tiny(kl_weight=1e-6)).eval()
    model.fit_latent_stats(torch.rand(2, 1, 8, 16, 16) * 2 - 1)
    path = model.save(tmp_path / "vae.safetensors", {"steps": 7})
    loaded = VideoAutoencoder.load(path)
    assert loaded.config == model.config and loaded.metadata["steps"] == 7
    video = torch.rand(1, 1, 8, 16, 16) * 2 - 1
    with torch.no_grad():
        torch.testing.assert_close(loaded.encode(video), model.encode(video), rtol=0, atol=0)
        torch.testing.assert_close(loaded.reconstruct(video), model.reconstruct(video), rtol=0, atol=0)
    torch.testing.assert_close(loaded.latent_scale, model.latent_scale)


# ----------------------------------------------------------------------------- losses and training
def test_overfits_one_batch(tmp_path):
    from lvdm_ref.config import TrainConfig
    from lvdm_ref.train import Trainer

    batch = FreshMovingMNIST(1, num_frames=4, size=16, num_digits=1)(0)  # (1, 1, 4, 16, 16)
    config = TrainConfig(batch_size=1, lr=5e-3, warmup_steps=10, steps=60, log_every=1, ckpt_every=1000,
                         ema_decay=0.0, grad_clip=1.0)
    torch.manual_seed(0)
    model = AutoencoderWithLoss(tiny(base_channels=4, latent_channels=4))
    trainer = Trainer(model, autoencoder_loss, lambda step, rank, world: batch, config, tmp_path, progress=False)
    trainer.fit()
    losses = [entry["loss"] for entry in trainer.history]
    assert losses[-1] < losses[0] / 10, (losses[0], losses[-1])


@pytest.mark.parametrize("kind", ["l1", "l2", "l1+l2"])
def test_reconstruction_losses(kind):
    torch.manual_seed(0)
    model = AutoencoderWithLoss(tiny(recon_loss=kind))
    video = torch.rand(1, 1, 4, 16, 16) * 2 - 1
    torch.manual_seed(1)
    loss, logs = autoencoder_loss(model, video, step=0)
    error = model.autoencoder(video)[0] - video
    expected = {"l1": error.abs().mean(), "l2": error.pow(2).mean(), "l1+l2": error.abs().mean() + error.pow(2).mean()}
    assert loss.item() == pytest.approx(expected[kind].item(), rel=1e-6)


def test_kl_term_and_posterior_sampling():
    torch.manual_seed(0)
    model = AutoencoderWithLoss(tiny(kl_weight=0.5))
    video = torch.rand(2, 1, 8, 16, 16) * 2 - 1
    loss, logs = autoencoder_loss(model, video, step=0)
    mean, logvar = model.autoencoder.posterior(video)
    posterior = torch.distributions.Normal(mean, (0.5 * logvar).exp())
    kl = torch.distributions.kl_divergence(posterior, torch.distributions.Normal(0.0, 1.0)).sum(dim=(1, 2, 3, 4))
    assert logs["kl"] == pytest.approx(kl.mean().item(), rel=1e-4)
    ae = model.autoencoder
    with torch.no_grad():
        samples = torch.stack([ae.encode(video, sample=True) for _ in range(200)])  # normalised, scale 1, shift 0
    assert not torch.equal(samples[0], samples[1])
    torch.testing.assert_close(samples.mean(0), mean, atol=4 * (0.5 * logvar).exp().max().item() / 200 ** 0.5, rtol=0)


def test_patchgan_terms_do_not_push_each_other():
    """One loss, one backward: the discriminator gets only the grad of its hinge loss, the
    autoencoder only that of L1 + the generator term (oracle: each term differentiated alone)."""
    torch.manual_seed(0)
    config = tiny(disc_weight=0.7, disc_start=3)
    model = AutoencoderWithLoss(config)
    video = torch.rand(1, 1, 4, 16, 16) * 2 - 1
    _, logs = autoencoder_loss(model, video, step=2)
    assert "g_loss" not in logs  # the PatchGAN starts at disc_start

    loss, logs = autoencoder_loss(model, video, step=3)
    model.zero_grad()
    loss.backward()
    got = {name: p.grad.clone() for name, p in model.named_parameters()}

    ae, disc = model.autoencoder, model.discriminator
    recon = ae(video)[0]
    g_loss = -disc(recon).mean()
    ae_grads = torch.autograd.grad((recon - video).abs().mean() + 0.7 * g_loss, list(ae.parameters()))
    d_loss = 0.5 * (F.relu(1 - disc(video)).mean() + F.relu(1 + disc(recon.detach())).mean())
    disc_grads = torch.autograd.grad(0.7 * d_loss, list(disc.parameters()))
    assert logs["g_loss"] == pytest.approx(g_loss.item(), rel=1e-5)
    assert logs["d_loss"] == pytest.approx(d_loss.item(), rel=1e-5)
    for (name, _), grad in zip(ae.named_parameters(), ae_grads):
        torch.testing.assert_close(got["autoencoder." + name], grad, atol=1e-6, rtol=1e-4)
    for (name, _), grad in zip(disc.named_parameters(), disc_grads):
        torch.testing.assert_close(got["discriminator." + name], grad, atol=1e-6, rtol=1e-4)


def test_fresh_batches_are_a_function_of_the_step():
    data = FreshMovingMNIST(4, num_frames=4, size=32, seed=3)
    torch.testing.assert_close(data(5), data(5))
    assert not torch.equal(data(5), data(6))
    torch.testing.assert_close(torch.cat([data(5, rank, 2) for rank in (0, 1)]), data(5))


# ----------------------------------------------------------------------------- commands and shipped weights
def run_cli(capsys, *argv) -> dict:
    from lvdm_ref.cli import main

    main(list(argv))
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_train_vae_and_eval_vae_commands(tmp_path, capsys):
    result = run_cli(capsys, "train-vae", "--quick", "--steps", "3", "--stats-clips", "4", "--out", str(tmp_path))
    assert result["steps"] == 3 and (tmp_path / "log.jsonl").exists() and (tmp_path / "loss.png").exists()
    evaluation = run_cli(capsys, "eval-vae", "--ckpt", result["ckpt"], "--num", "2", "--seed", "1")
    assert evaluation["compression_ratio"] == result["compression_ratio"] == 8.0
    assert 0 < evaluation["psnr"] < 100 and -1 <= evaluation["ssim"] <= 1


def card_rows() -> dict[tuple[int, int], tuple[float, float]]:
    """(num, seed) -> (psnr, ssim) from the eval rows of the mmnist_vae entry of the model card."""
    rows = {}
    for line in CARD.read_text().splitlines():
        match = re.match(r"\|\s*`python -m lvdm_ref eval-vae --ckpt data/checkpoints/mmnist_vae.safetensors "
                         r"--num (\d+) --seed (\d+)`\s*\|\s*(\d+)\s*\|\s*([\d.]+)\s*\|\s*([\d.]+)\s*\|", line)
        if match:
            assert match[1] == match[3], f"the clips column disagrees with --num: {line}"
            rows[int(match[1]), int(match[2])] = float(match[4]), float(match[5])
    return rows


def test_shipped_weights_reproduce_the_model_card(capsys):
    rows = card_rows()
    assert (32, 0) in rows, "the model card must report eval-vae --num 32 --seed 0"
    result = run_cli(capsys, "eval-vae", "--ckpt", str(SHIPPED), "--num", "32", "--seed", "0")
    assert result["psnr"] == pytest.approx(rows[32, 0][0], abs=1e-3)
    assert result["ssim"] == pytest.approx(rows[32, 0][1], abs=1e-3)
    assert result["compression_ratio"] >= 16
    assert SHIPPED.stat().st_size < 8 * 2 ** 20  # a few MB
