"""Oracle tests for the long-video hierarchy: perturbation, guidance, masks, the loss (hierarchy.py) and the
long-video sampler (long_video.py)."""
import dataclasses

import numpy as np
import pytest
import torch

from lvdm_ref.config import DiffusionConfig, UNetConfig, VAEConfig, hierarchy_config
from lvdm_ref.diffusion import GaussianDiffusion
from lvdm_ref.guidance import guide
from lvdm_ref.hierarchy import (ConditionalDenoiser, given_frames, hierarchy_loss, sample_conditional, training_mask,
                                warm_start)
from lvdm_ref.long_video import (LongVideoPlan, check_pair, interpolate, long_video_plan, sample_keyframes, sample_long,
                                 sample_windows)
from lvdm_ref.lvdm import LatentVideoDiffusion
from lvdm_ref.perturbation import perturb, sampling_levels, training_levels
from lvdm_ref.unet import UNet
from lvdm_ref.utils import stream, to_uint8
from lvdm_ref.vae3d import VideoAutoencoder

TINY_UNET = dict(model_channels=8, channel_mult=(1, 2), attention_levels=(1,), num_heads=2)
LATENT = (4, 8, 8)  # (c, h, w) of a 32x32 clip with x4 spatial compression


def randomise(module, seed=0, scale=0.2):
    """Zero-initialised layers make a fresh UNet output zeros; give every weight a value so tests see through it."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in module.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator) * scale)
    return module


def make_model(role, max_level=250, seed=0, vae=None):
    config = hierarchy_config(role, max_level)
    unet = randomise(UNet(UNetConfig(use_mask=True, use_perturbation_embedding=max_level > 0, **TINY_UNET)), seed)
    diffusion = GaussianDiffusion(DiffusionConfig())
    vae = vae or VideoAutoencoder(VAEConfig(base_channels=4, channel_mult=(1, 2, 2), spatial_downsample=4,
                                            temporal_downsample=4))
    model = LatentVideoDiffusion(vae, unet, diffusion, (LATENT[0], config.num_latents, *LATENT[1:]), config).eval()
    model.vae_sha256 = "same"
    return model


@pytest.fixture(scope="module")
def models():
    torch.manual_seed(0)
    pred = make_model("pred")
    return pred, make_model("interp", seed=1, vae=pred.vae)


# ----------------------------------------------------------------------------- perturbation
def test_perturbation_is_the_closed_form_forward_process():
    diffusion = GaussianDiffusion(DiffusionConfig()).double()
    z, eps = torch.randn(3, 4, 1, 2, 2, dtype=torch.float64), torch.randn(3, 4, 1, 2, 2, dtype=torch.float64)
    s = torch.tensor([0, 100, 249])
    abar = diffusion.alphas_cumprod[s].reshape(-1, 1, 1, 1, 1)
    torch.testing.assert_close(perturb(diffusion, z, s, eps), abar.sqrt() * z + (1 - abar).sqrt() * eps)
    assert perturb(diffusion, z, None) is z  # perturbation off
    levels = training_levels(10_000, 250, generator=torch.Generator().manual_seed(0))
    assert levels.min() == 0 and levels.max() == 249 and training_levels(4, 0) is None
    assert sampling_levels(2, None, 250).tolist() == [100, 100] and sampling_levels(2, 0, 0) is None
    with pytest.raises(ValueError, match="without perturbation"):
        sampling_levels(2, 100, 0)
    with pytest.raises(ValueError, match="in \\[0, 249\\]"):
        sampling_levels(2, 300, 250)


# ----------------------------------------------------------------------------- masks and loss
def test_training_masks_give_the_roles_frames_at_the_right_rate():
    assert given_frames("pred", 4).tolist() == [1, 0, 0, 0] and given_frames("interp", 5).tolist() == [1, 0, 0, 0, 1]
    for role, rate in (("pred", 0.5), ("interp", 0.9)):
        config = hierarchy_config(role)
        mask = training_mask(config, 20_000, generator=torch.Generator().manual_seed(0))
        assert mask.shape == (20_000, 1, config.num_latents, 1, 1)
        conditioned = mask.flatten(1).amax(1)
        assert abs(conditioned.mean().item() - rate) < 0.02
        assert torch.equal(mask[conditioned == 1].flatten(1), given_frames(role, config.num_latents).expand(
            int(conditioned.sum()), -1))


def test_loss_covers_generated_frames_only_and_a_perfect_model_scores_zero():
    diffusion = GaussianDiffusion(DiffusionConfig(loss="l2")).double()
    config = dataclasses.replace(hierarchy_config("interp"), condition_prob=1.0)
    z0 = torch.randn(6, 4, 5, 2, 2, dtype=torch.float64)
    seen = {}

    def oracle(x_in, t, mask, perturbation_level):  # the true eps wherever x_in = q_sample(z0, t, eps)
        seen.update(x_in=x_in, mask=mask, level=perturbation_level)
        return diffusion.predict_noise_from_start(x_in, t, z0)

    torch.manual_seed(0)
    loss = hierarchy_loss(diffusion, config)(oracle, z0, step=0)
    assert loss < 1e-20  # the given frames (where the oracle is wrong) do not count
    # the given frames hold z_c^s: the clean latent at a perturbation level below 250
    level = seen["level"]
    assert level.shape == (6,) and level.max() < 250
    given = seen["x_in"][:, :, [0, 4]]
    abar = diffusion.alphas_cumprod[level].reshape(-1, 1, 1, 1, 1)
    assert (given - abar.sqrt() * z0[:, :, [0, 4]]).abs().max() < 4 * (1 - abar).sqrt().max() + 1e-9


# ----------------------------------------------------------------------------- guidance
def test_guidance_endpoints_and_linearity(models):
    pred, _ = models
    torch.manual_seed(0)
    x_t, t = torch.randn(2, 4, 4, 8, 8), torch.tensor([10, 80])
    mask = torch.zeros(2, 1, 4, 1, 1)
    mask[:, :, 0] = 1
    given, level = torch.randn(2, 4, 4, 8, 8), torch.tensor([100, 100])
    with torch.no_grad():
        cond = pred.unet(x_t * (1 - mask) + given * mask, t, mask=mask, perturbation_level=level)
        uncond = pred.unet(x_t, t, mask=torch.zeros_like(mask), perturbation_level=level)
        out = {w: ConditionalDenoiser(pred.unet, mask, given, level, w)(x_t, t) for w in (0.0, -1.0, 0.1, 0.2)}
    generated = (1 - mask).bool().expand_as(x_t)
    torch.testing.assert_close(out[0.0], cond)  # w = 0: the conditional model
    torch.testing.assert_close(out[-1.0][generated], uncond[generated], atol=1e-5, rtol=1e-5)  # w = -1: unconditional
    step = [(out[b] - out[a])[generated] for a, b in ((0.0, 0.1), (0.1, 0.2))]
    torch.testing.assert_close(step[1], step[0], atol=1e-5, rtol=1e-4)  # linear in w (on the frames it makes)
    torch.testing.assert_close(out[0.1][generated], guide(cond, uncond, 0.1)[generated], atol=1e-5, rtol=1e-5)
    assert not torch.allclose(cond, uncond, atol=1e-3)  # the condition matters, so the checks above have teeth


def test_the_given_frames_get_the_unconditional_output_not_the_guided_one(models):
    """With guidance (w != 0) the output at the given frames is the unconditional branch's, exactly: the
    conditional branch's output there is never used (`ConditionalDenoiser`), so x_t at those frames stays an
    honest sample of what the unconditional branch saw in training. A denoiser that gave them the guided
    output (or the conditional one) fails here."""
    pred, _ = models
    torch.manual_seed(1)
    x_t, t = torch.randn(2, 4, 4, 8, 8), torch.tensor([30, 60])
    mask = torch.zeros(2, 1, 4, 1, 1)
    mask[:, :, 0] = 1  # the first latent is given
    given, level = torch.randn(2, 4, 4, 8, 8), torch.tensor([100, 100])
    given_frames_ = mask.bool().expand_as(x_t)
    with torch.no_grad():
        cond = pred.unet(x_t * (1 - mask) + given * mask, t, mask=mask, perturbation_level=level)
        uncond = pred.unet(x_t, t, mask=torch.zeros_like(mask), perturbation_level=level)
        for w in (0.1, 2.0):
            out = ConditionalDenoiser(pred.unet, mask, given, level, w)(x_t, t)
            torch.testing.assert_close(out[given_frames_], uncond[given_frames_], atol=1e-5, rtol=1e-5)
            guided = guide(cond, uncond, w)
            assert (guided - uncond)[given_frames_].abs().max() > 1e-2  # the guided output differs there


def test_unconditional_branch_never_sees_the_given_latents():
    calls = []

    def recording_unet(x, t, mask, perturbation_level):
        calls.append((x.clone(), mask.clone(), perturbation_level.clone()))
        return torch.zeros_like(x)

    x_t, given = torch.randn(3, 4, 5, 2, 2), torch.full((3, 4, 5, 2, 2), 7.0)
    mask = given_frames("interp", 5).reshape(1, 1, 5, 1, 1).expand(3, -1, -1, -1, -1)
    ConditionalDenoiser(recording_unet, mask, given, torch.tensor([100] * 3), 0.1)(x_t, torch.tensor([5] * 3))
    (x, m, s), = calls
    cond_x, uncond_x = x.chunk(2)
    assert torch.all(cond_x[:, :, [0, 4]] == 7.0) and torch.equal(cond_x[:, :, 1:4], x_t[:, :, 1:4])
    assert torch.equal(uncond_x, x_t)  # untouched: the official bug (b) is not here
    assert torch.all(m[3:] == 0) and torch.all(m[:3, :, [0, 4]] == 1)
    assert s.tolist() == [100] * 6  # both branches get s (the official bug (a) drops it)


# ----------------------------------------------------------------------------- sampling
def test_given_latents_come_back_unchanged(models):
    _, interp = models
    given = torch.randn(2, 4, 5, 8, 8)
    mask = given_frames("interp", 5).reshape(1, 1, 5, 1, 1).expand(2, -1, -1, -1, -1)
    out = sample_conditional(interp.unet, interp.diffusion, interp.hierarchy, given, mask,
                             [stream(0, i) for i in range(2)], num_steps=3, guidance_weight=0.1)
    assert torch.equal(out[:, :, [0, 4]], given[:, :, [0, 4]])
    assert not torch.allclose(out[:, :, 1:4], given[:, :, 1:4])


@pytest.mark.parametrize("num_frames", [1, 16, 17, 100, 1024, 1060])
def test_plan_fills_every_pair_and_covers_exactly_the_frames(num_frames):
    plan = LongVideoPlan(num_frames, frames_per_latent=4, keyframe_stride=4, clip_keyframes=4)
    # oracle by search: the fewest latents that cover the frames and end on a keyframe (latents 0, 4, 8, ...)
    fewest = next(n for n in range(1, 10_000) if n * 4 >= num_frames and (n - 1) % 4 == 0)
    assert plan.num_latents == fewest and plan.num_keyframes == len(range(0, fewest, 4))
    assert plan.num_keyframes <= 4 + 3 * (plan.prediction_steps - 1)  # enough keyframes predicted
    assert plan.frame_is_keyframe().shape == (num_frames,) and plan.frame_is_keyframe()[0]
    assert plan.pairs_for_frames(0, num_frames) == list(range(plan.num_pairs))


@pytest.mark.parametrize("num_frames", [1, 16, 17, 100])
def test_sample_long_returns_exactly_the_frames_asked_for(models, num_frames):
    pred, interp = models
    videos = sample_long(pred, interp, num_frames, num_videos=2, num_steps=2, progress=False)
    assert videos.shape == (2, num_frames, 32, 32, 1) and videos.dtype == np.uint8


def test_1024_frames_every_pair_filled(models):
    pred, interp = models
    plan = LongVideoPlan(1024, 4, 4, 4)
    keyframes = sample_keyframes(pred, plan, 1, seed=0, num_steps=1, progress=False)
    assert keyframes.shape[2] == plan.num_keyframes == 65
    latents = interpolate(interp, keyframes, seed=0, num_steps=1, progress=False)
    assert latents.shape[2] == plan.num_latents == 257
    assert latents.flatten(3).abs().amax(-1).amin() > 0  # no latent frame left empty (the official bug)
    torch.testing.assert_close(latents[:, :, ::4], keyframes)
    videos = sample_long(pred, interp, 1024, num_steps=1, progress=False)
    assert videos.shape == (1, 1024, 32, 32, 1)


def test_same_seed_same_video_and_batching_does_not_matter(models):
    pred, interp = models
    a = sample_long(pred, interp, 40, num_videos=2, seed=3, num_steps=2, progress=False)
    b = sample_long(pred, interp, 40, num_videos=2, seed=3, num_steps=2, progress=False)
    c = sample_long(pred, interp, 40, num_videos=2, seed=4, num_steps=2, progress=False)
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    plan = LongVideoPlan(40, 4, 4, 4)
    keyframes = sample_keyframes(pred, plan, 2, seed=3, num_steps=2, progress=False)
    batched = interpolate(interp, keyframes, seed=3, num_steps=2, batch_size=64, progress=False)
    one_by_one = interpolate(interp, keyframes, seed=3, num_steps=2, batch_size=1, progress=False)
    torch.testing.assert_close(batched, one_by_one, atol=1e-4, rtol=1e-4)
    sparse = interpolate(interp, keyframes, seed=3, num_steps=2, pairs=[1], progress=False)
    torch.testing.assert_close(sparse[:, :, 4:9], batched[:, :, 4:9], atol=1e-4, rtol=1e-4)
    single = sample_keyframes(pred, plan, 1, seed=3, num_steps=2, progress=False)  # video 0 alone
    torch.testing.assert_close(single, keyframes[:1], atol=1e-4, rtol=1e-4)


def test_real_start_is_kept(models):
    pred, _ = models
    start = torch.randn(2, 4, 1, 8, 8)
    plan = LongVideoPlan(64, 4, 4, 4)  # 16 latents: keyframes at latents 0, 4, 8, 12 and 16
    keyframes = sample_keyframes(pred, plan, 2, seed=0, start=start, num_steps=2, progress=False)
    assert keyframes.shape[2] == plan.num_keyframes == 5 and torch.equal(keyframes[:, :, :1], start)


def test_mismatched_models_are_refused(models):
    pred, interp = models
    with pytest.raises(ValueError, match="--pred must be a prediction"):
        check_pair(interp.hierarchy, pred.hierarchy)
    other = make_model("interp", vae=pred.vae)
    other.vae_sha256 = "different"
    with pytest.raises(ValueError, match="different autoencoders"):
        sample_long(pred, other, 16, num_steps=1, progress=False)
    with pytest.raises(ValueError, match="num_frames"):
        sample_long(pred, interp, 0, progress=False)


# ----------------------------------------------------------------------------- warm start
def test_warm_start_from_a_short_model_is_the_same_function():
    short = randomise(UNet(UNetConfig(**TINY_UNET)), seed=5)
    pred = warm_start(UNet(UNetConfig(use_mask=True, use_perturbation_embedding=True, **TINY_UNET)), short.state_dict())
    x, t = torch.randn(2, 4, 4, 8, 8), torch.tensor([3, 70])
    mask = torch.zeros(2, 1, 4, 1, 1)
    mask[:, :, 0] = 1
    with torch.no_grad():
        torch.testing.assert_close(pred(x, t, mask=mask, perturbation_level=torch.tensor([0, 200])), short(x, t))


# ----------------------------------------------------------------------------- the commands, end to end
@pytest.mark.slow
def test_train_and_sample_long_commands(tmp_path, monkeypatch, capsys):
    """`train --model pred|interp` then `sample-long` (quick preset): exact frames, a figure, a real start."""
    import json

    from lvdm_ref import cli as commands

    monkeypatch.setenv("LVDM_QUICK", "1")

    def cli(*args):  # in this process: the command line's own entry point, without a new interpreter per command
        commands.main([str(arg) for arg in args])
        return json.loads(capsys.readouterr().out.strip().splitlines()[-1])

    def fails(*args) -> str:
        """The one-line error (exit status 2) of a command that must refuse its arguments."""
        with pytest.raises(SystemExit) as stopped:
            commands.main([str(arg) for arg in args])
        assert stopped.value.code == 2
        return capsys.readouterr().err

    vae = cli("train-vae", "--out", tmp_path / "vae")["ckpt"]
    pred = cli("train", "--model", "pred", "--vae", vae, "--out", tmp_path / "pred", "--steps", "4")
    interp = cli("train", "--model", "interp", "--vae", vae, "--out", tmp_path / "interp", "--steps", "4",
                 "--num-clips", "8")
    assert pred["role"] == "pred" and interp["num_samples"] == 3 * 8  # 3 windows of 5 latents per long clip
    out = cli("sample-long", "--pred", pred["checkpoint"], "--interp", interp["checkpoint"], "--frames", "37",
              "--num", "2", "--steps", "2", "--start", "real", "--out", tmp_path / "long.npz",
              "--figure", tmp_path / "long.png")
    assert out["real"] == str(tmp_path / "long_real.npz")  # the second file --start real writes, named in the result
    videos, real = np.load(out["out"])["videos"], np.load(out["real"])["videos"]
    assert videos.shape == real.shape == (2, 37, 32, 32, 1) and (tmp_path / "long.png").stat().st_size > 0
    flat = cli("train", "--model", "pred", "--vae", vae, "--out", tmp_path / "flat", "--steps", "2",
               "--max-perturbation-level", "0")
    assert flat["max_perturbation_level"] == 0
    assert "trained without perturbation" in fails("sample-long", "--pred", flat["checkpoint"], "--interp",
                                                   interp["checkpoint"], "--perturbation-level", "10", "--out",
                                                   tmp_path / "x.npz")
    chain = cli("train", "--model", "pred", "--vae", vae, "--out", tmp_path / "chain", "--steps", "2",
                "--keyframe-stride", "1", "--every-start", "--num-clips", "8")
    assert chain["num_samples"] == 8 * (16 - 3)  # every start of 4 consecutive latents in 16-latent clips
    out = cli("sample-long", "--pred", chain["checkpoint"], "--frames", "21", "--num", "1", "--steps", "2",
              "--out", tmp_path / "chain.npz")
    assert np.load(out["out"])["videos"].shape == (1, 21, 32, 32, 1) and out["pairs"] == out["keyframes"] - 1
    short = cli("train", "--model", "short", "--vae", vae, "--out", tmp_path / "short", "--steps", "2")["checkpoint"]
    warm = cli("train", "--model", "pred", "--vae", vae, "--out", tmp_path / "warm", "--steps", "2", "--init", short,
               "--keyframe-stride", "1", "--num-clips", "8")
    warm_model = LatentVideoDiffusion.load(warm["checkpoint"], kind="lvdm_pred")
    short_model = LatentVideoDiffusion.load(short)
    assert warm_model.metadata["init"] == str(short)
    assert warm_model.unet.config.model_channels == short_model.unet.config.model_channels  # the short model's size
    assert "give an interpolation model (--interp)" in fails("sample-long", "--pred", pred["checkpoint"], "--out",
                                                             tmp_path / "y.npz")


def test_sparse_windows_equal_the_full_videos_windows(models):
    """Sampling only the measured windows (issue: drift) gives the windows of the full sampler, same seed."""
    pred, interp = models
    full = sample_long(pred, interp, 160, num_videos=2, seed=5, num_steps=2, progress=False)
    starts = [0, 64, 144]
    windows = sample_windows(pred, interp, 160, starts, num_videos=2, seed=5, num_steps=2, progress=False)
    assert windows.shape == (2, 3, 16, 32, 32, 1)
    for index, start in enumerate(starts):
        difference = np.abs(windows[:, index].astype(int) - full[:, start:start + 16].astype(int))
        assert difference.max() <= 1 and difference.mean() < 0.01  # equal up to float rounding at uint8 edges
    second = sample_windows(pred, interp, 160, starts, num_videos=1, seed=5, num_steps=2, progress=False, first_index=1)
    assert np.abs(second[0].astype(int) - windows[1].astype(int)).max() <= 1  # a batch of two = two batches of one
    with pytest.raises(ValueError, match="must lie in"):
        sample_windows(pred, interp, 160, [150], num_steps=1, progress=False)


@pytest.mark.parametrize("role", ["pred", "interp"])
@pytest.mark.parametrize("every_start", [False, True])
def test_training_windows_are_the_latents_a_loop_picks(role, every_start):
    """Each training sample is the latents listed by hand: keyframes 4 apart (pred) or 5 in a row (interp),
    starting on a keyframe (LVDM) or, with every_start, at every latent that leaves room for the window."""
    from lvdm_ref.recipes import training_latents

    config = dataclasses.replace(hierarchy_config(role), every_start=every_start)
    long = torch.arange(2 * 16, dtype=torch.float32).reshape(2, 1, 16, 1, 1)  # latent k of clip n holds 16 n + k
    picks = [0, 4, 8, 12] if role == "pred" else [0, 1, 2, 3, 4]
    last = 16 - 1 - picks[-1]
    starts = range(0, last + 1) if every_start else ([0] if role == "pred" else range(0, last + 1, 4))
    expected = [[16 * n + s + k for k in picks] for s in starts for n in range(2)]
    assert training_latents(long, config)[:, 0, :, 0, 0].tolist() == expected


def test_a_prediction_model_one_latent_apart_makes_every_latent_without_interpolation(models):
    """Keyframes 1 latent apart: the prediction chain is the whole video; an interpolation model is refused."""
    pred, interp = models
    step = dataclasses.replace(pred.hierarchy, keyframe_stride=1)
    chain = LatentVideoDiffusion(pred.vae, pred.unet, pred.diffusion, pred.latent_shape, step).eval()
    chain.vae_sha256 = "same"
    videos = sample_long(chain, None, 37, num_videos=2, seed=5, num_steps=2, progress=False)
    assert videos.shape == (2, 37, 32, 32, 1)
    plan = LongVideoPlan(37, 4, 1, 4)  # 10 latents, all predicted: 1 clip of 4, then 3 steps of 3 new ones
    assert plan.num_latents == plan.num_keyframes == 10 and plan.prediction_steps == 3 and not plan.fills_pairs
    keyframes = sample_keyframes(chain, plan, 2, seed=5, num_steps=2, progress=False)
    torch.testing.assert_close(torch.from_numpy(videos.astype(np.float32)),
                               torch.from_numpy(to_uint8(chain.decode(keyframes))[:, :37].astype(np.float32)), atol=1, rtol=0)
    windows = sample_windows(chain, None, 37, [0, 20], num_videos=2, seed=5, num_steps=2, progress=False)
    assert np.abs(windows[:, 1].astype(int) - videos[:, 20:36].astype(int)).max() <= 1
    with pytest.raises(ValueError, match="leave out --interp"):
        check_pair(step, interp.hierarchy)
    with pytest.raises(ValueError, match="give an interpolation model"):
        check_pair(pred.hierarchy, None)


# ----------------------------------------------------------------------------- more context per step (max_given)
def test_a_model_given_up_to_k_latents_trains_on_every_prefix_and_old_masks_are_unchanged():
    config = dataclasses.replace(hierarchy_config("pred"), max_given=3)
    mask = training_mask(config, 30_000, generator=torch.Generator().manual_seed(0)).flatten(1)  # (B, 4)
    counts = mask.sum(1)
    assert abs((counts > 0).float().mean().item() - 0.5) < 0.02  # conditioned at LVDM's rate
    for k in (1, 2, 3):  # each prefix length in a third of the conditioned samples, and only prefixes
        rows = mask[counts == k]
        assert abs(len(rows) / (counts > 0).sum().item() - 1 / 3) < 0.02
        assert torch.equal(rows, (torch.arange(4) < k).float().expand(len(rows), -1))
    assert counts.max() == 3  # a sample always has a latent to make
    one = training_mask(hierarchy_config("pred"), 64, generator=torch.Generator().manual_seed(3))
    conditioned = torch.rand(64, generator=torch.Generator().manual_seed(3)) < 0.5  # LVDM's draw, as before
    assert torch.equal(one.flatten(1), conditioned[:, None].float() * given_frames("pred", 4)[None])


def test_a_chain_given_up_to_3_latents_makes_one_latent_per_sample_next_to_all_it_was_given(models, monkeypatch):
    """Each sample is given the last min(3, known) latents at positions 0.. and keeps only the next one."""
    pred, _ = models
    config = dataclasses.replace(pred.hierarchy, keyframe_stride=1, max_given=3)
    chain = LatentVideoDiffusion(pred.vae, pred.unet, pred.diffusion, pred.latent_shape, config).eval()
    chain.vae_sha256 = "same"
    import lvdm_ref.long_video as long_video

    calls, real = [], long_video.sample_conditional

    def spy(unet, diffusion, config, given, mask, generators, **kwargs):
        out = real(unet, diffusion, config, given, mask, generators, **kwargs)
        calls.append((given.clone(), mask.flatten(1)[0].tolist(), out))
        return out

    monkeypatch.setattr(long_video, "sample_conditional", spy)
    start = torch.randn(2, *LATENT[:1], 1, *LATENT[1:])
    plan = long_video_plan(chain, None, 24)  # 6 latents: the start, then 5 samples of one new latent
    assert plan.num_keyframes == 6 and plan.keyframes_per_step == 1
    assert plan.prediction_samples(real_start=True) == 5 and plan.prediction_samples() == 3
    keyframes = sample_keyframes(chain, plan, 2, seed=1, start=start, num_steps=2, progress=False)
    assert [mask for _, mask, _ in calls] == [[1, 0, 0, 0], [1, 1, 0, 0], [1, 1, 1, 0], [1, 1, 1, 0], [1, 1, 1, 0]]
    torch.testing.assert_close(keyframes[:, :, :1], start)  # the real start is kept
    for step, (given, mask, out) in enumerate(calls):
        known = int(sum(mask))
        made = step + 1  # latents known before this sample
        torch.testing.assert_close(given[:, :, :known], keyframes[:, :, made - known:made])  # the last ones, in order
        torch.testing.assert_close(keyframes[:, :, made], out[:, :, known])  # the one kept is right after them
    calls.clear()
    generated = sample_keyframes(chain, long_video_plan(chain, None, 24), 2, seed=1, num_steps=2, progress=False)
    assert generated.shape[2] == 6 and [int(sum(mask)) for _, mask, _ in calls] == [0, 3, 3]  # a clip of 4, then 1 + 1
    lvdm = LongVideoPlan(37, 4, 1, 4)  # LVDM's step (given 1, keep 3): 10 latents from a real start in 3 samples
    assert lvdm.prediction_samples(real_start=True) == 3 and lvdm.prediction_samples() == 3


def test_max_given_is_checked_and_a_prediction_model_warm_starts_another(tmp_path):
    from lvdm_ref.config import get_preset
    from lvdm_ref.recipes import build_hierarchy_model, train_hierarchy_model

    preset = get_preset("quick")
    for role, k in (("interp", 2), ("pred", 4), ("pred", 0)):
        with pytest.raises(ValueError, match="max_given is for a prediction model"):
            train_hierarchy_model(preset, role, tmp_path / "vae.safetensors", tmp_path / "x", max_given=k)
    pred = make_model("pred", max_level=25)
    pred.diffusion = GaussianDiffusion(DiffusionConfig(parameterization="v"))
    pred.save(tmp_path / "pred.safetensors")
    vae = pred.vae
    config = dataclasses.replace(hierarchy_config("pred", 25), max_given=3)
    model = build_hierarchy_model(preset, "pred", vae, LATENT[0], 25, config=config, init=tmp_path / "pred.safetensors")
    assert model.diffusion.config.parameterization == "v" and model.hierarchy.max_given == 3
    for name, tensor in pred.unet.state_dict().items():  # the same network: every weight carried over
        torch.testing.assert_close(model.unet.state_dict()[name], tensor)
    relearn = build_hierarchy_model(preset, "pred", vae, LATENT[0], 25, config=config, init=tmp_path / "pred.safetensors",
                                    parameterization="eps")  # the old weights, a new target to learn
    assert relearn.diffusion.config.parameterization == "eps"
    torch.testing.assert_close(relearn.unet.state_dict()["input_conv.weight"], pred.unet.state_dict()["input_conv.weight"])
    other = dataclasses.replace(config, keyframe_stride=1)
    with pytest.raises(ValueError, match="pass the same --keyframe-stride"):
        build_hierarchy_model(preset, "pred", vae, LATENT[0], 25, config=other, init=tmp_path / "pred.safetensors")
    with pytest.raises(ValueError, match="warm-start from a short model"):
        build_hierarchy_model(preset, "interp", vae, LATENT[0], 25, init=tmp_path / "pred.safetensors")
