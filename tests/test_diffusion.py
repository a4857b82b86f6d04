"""Oracle tests for lvdm_ref.diffusion: closed forms against iterated / Bayes-rule / Monte-Carlo computations."""
import math

import numpy as np
import pytest
import torch

from lvdm_ref.config import DiffusionConfig
from lvdm_ref.diffusion import (GaussianDiffusion, EmpiricalDenoiser, make_beta_schedule, SCHEDULES)
from lvdm_ref.guidance import guide


def make(num_timesteps=50, **kwargs) -> GaussianDiffusion:
    return GaussianDiffusion(DiffusionConfig(num_timesteps=num_timesteps, **kwargs)).double()


def toy_model(x, t, **unused):
    """A fixed, non-trivial stand-in for a network."""
    return torch.tanh(x) * 0.5 + 0.01 * t.to(x.dtype).reshape(-1, *([1] * (x.ndim - 1)))


# ----------------------------------------------------------------------------- schedules
def test_scaled_linear_is_lvdm_formula():
    betas = make_beta_schedule("scaled_linear", 1000)
    expected = np.linspace(np.sqrt(0.0015), np.sqrt(0.0155), 1000) ** 2
    np.testing.assert_allclose(betas.numpy(), expected, rtol=1e-12)


def test_linear_and_cosine_closed_forms():
    np.testing.assert_allclose(make_beta_schedule("linear", 1000, 1e-4, 0.02).numpy(),
                               np.linspace(1e-4, 0.02, 1000), rtol=1e-12)
    # cosine: alphas_cumprod = f(t) / f(0), f(t) = cos^2(((t/T + s) / (1 + s)) pi / 2) (until beta clipping)
    T, s = 200, 0.008
    abar = torch.cumprod(1 - make_beta_schedule("cosine", T), 0).numpy()
    f = np.cos(((np.arange(1, T + 1) / T + s) / (1 + s)) * np.pi / 2) ** 2
    f0 = np.cos(s / (1 + s) * np.pi / 2) ** 2
    np.testing.assert_allclose(abar[:-5], (f / f0)[:-5], rtol=1e-9)


def test_short_chains_end_as_noisy_as_long_ones():
    for schedule in SCHEDULES:
        end_short = GaussianDiffusion(DiffusionConfig(num_timesteps=100, schedule=schedule)).alphas_cumprod[-1]
        end_long = GaussianDiffusion(DiffusionConfig(num_timesteps=1000, schedule=schedule)).alphas_cumprod[-1]
        assert end_long < 1e-3 and end_short < 3 * end_long + 1e-4, schedule


def test_bad_names_list_the_options():
    with pytest.raises(ValueError, match="scaled_linear"):
        make_beta_schedule("quadratic", 10)
    with pytest.raises(ValueError, match="eps"):
        GaussianDiffusion(DiffusionConfig(parameterization="score"))
    with pytest.raises(ValueError, match="ddim"):
        make().sampling_timesteps("euler")


# ----------------------------------------------------------------------------- forward process
def test_q_sample_closed_form_equals_iterated_steps():
    diffusion = make(num_timesteps=40, schedule="cosine")
    betas = diffusion.betas
    # Exact moments: iterate q(x_t | x_{t-1}) = N(sqrt(1 - beta_t) x_{t-1}, beta_t) from x_0 = 1.5
    mean, variance = torch.tensor(1.5, dtype=torch.float64), torch.tensor(0.0, dtype=torch.float64)
    for t in range(40):
        mean, variance = (1 - betas[t]).sqrt() * mean, (1 - betas[t]) * variance + betas[t]
        closed_mean = diffusion.q_sample(torch.full((1,), 1.5, dtype=torch.float64), torch.tensor([t]),
                                         noise=torch.zeros(1, dtype=torch.float64))
        torch.testing.assert_close(closed_mean[0], mean)
        torch.testing.assert_close(1 - diffusion.alphas_cumprod[t], variance)
    # Monte Carlo: the iterated chain and q_sample agree in distribution at t = 39
    generator = torch.Generator().manual_seed(0)
    x0 = torch.full((200_000,), 1.5, dtype=torch.float64)
    x = x0.clone()
    for t in range(40):
        x = (1 - betas[t]).sqrt() * x + betas[t].sqrt() * torch.randn(x.shape, generator=generator, dtype=x.dtype)
    direct = diffusion.q_sample(x0, torch.full((200_000,), 39), torch.randn(x.shape, generator=generator,
                                                                            dtype=x.dtype))
    assert abs(x.mean() - direct.mean()) < 0.01 and abs(x.var() - direct.var()) < 0.01


def test_q_posterior_equals_bayes_rule():
    diffusion = make(num_timesteps=30)
    x0, xt = torch.randn(6, dtype=torch.float64), torch.randn(6, dtype=torch.float64)
    for t in range(1, 30):
        abar_prev, alpha, beta = diffusion.alphas_cumprod[t - 1], 1 - diffusion.betas[t], diffusion.betas[t]
        # q(x_{t-1} | x_0) q(x_t | x_{t-1}) as a Gaussian in x_{t-1}: precisions add
        precision = 1 / (1 - abar_prev) + alpha / beta
        expected_mean = (abar_prev.sqrt() * x0 / (1 - abar_prev) + alpha.sqrt() * xt / beta) / precision
        mean, var, log_var = diffusion.q_posterior(x0, xt, torch.full((6,), t))
        torch.testing.assert_close(mean, expected_mean)
        torch.testing.assert_close(var[0], 1 / precision)
        torch.testing.assert_close(log_var[0], torch.log(1 / precision))


@pytest.mark.parametrize("parameterization", ["eps", "x0", "v"])
def test_parameterizations_recover_x0_and_eps(parameterization):
    diffusion = make(num_timesteps=50, parameterization=parameterization)
    x0, noise = torch.randn(4, 3, 2, 2, 2, dtype=torch.float64), torch.randn(4, 3, 2, 2, 2, dtype=torch.float64)
    t = torch.tensor([0, 7, 30, 49])
    xt = diffusion.q_sample(x0, t, noise)
    pred_x0, pred_eps = diffusion.model_predictions(diffusion.training_target(x0, noise, t), xt, t)
    torch.testing.assert_close(pred_x0, x0)
    torch.testing.assert_close(pred_eps, noise)
    torch.testing.assert_close(diffusion.predict_start_from_noise(xt, t, noise), x0)


# ----------------------------------------------------------------------------- losses
@pytest.mark.parametrize("loss", ["l1", "l2"])
def test_training_losses_against_hand_computation(loss):
    diffusion = make(num_timesteps=50, loss=loss, parameterization="v")
    x0, noise, t = torch.randn(3, 2, 4, 4, 4, dtype=torch.float64), torch.randn(3, 2, 4, 4, 4, dtype=torch.float64), \
        torch.tensor([1, 20, 49])
    out = diffusion.training_losses(toy_model, x0, t=t, noise=noise)
    abar = diffusion.alphas_cumprod[t].reshape(-1, 1, 1, 1, 1)
    xt = abar.sqrt() * x0 + (1 - abar).sqrt() * noise
    error = toy_model(xt, t) - (abar.sqrt() * noise - (1 - abar).sqrt() * x0)
    error = error.abs() if loss == "l1" else error ** 2
    torch.testing.assert_close(out["loss"], error.mean())
    mask = torch.zeros(3, 1, 4, 1, 1, dtype=torch.float64)
    mask[:, :, 1:3] = 1  # loss only on frames 1 and 2
    masked = diffusion.training_losses(toy_model, x0, t=t, noise=noise, loss_mask=mask)
    torch.testing.assert_close(masked["loss_per_sample"], error[:, :, 1:3].flatten(1).mean(1))


def test_perfect_eps_model_has_zero_loss_and_x_t_override_is_used():
    diffusion = make(num_timesteps=50, loss="l2")
    x0, noise = torch.randn(2, 4, 2, 4, 4, dtype=torch.float64), torch.randn(2, 4, 2, 4, 4, dtype=torch.float64)
    oracle = lambda xt, t: diffusion.predict_noise_from_start(xt, t, x0)  # noqa: E731
    assert diffusion.loss(oracle, x0, noise=noise) < 1e-20
    seen, t = [], torch.tensor([3, 30])
    x_t = diffusion.q_sample(x0, t, noise)
    x_t[:, :, 0] = 7  # a rewritten frame, kept out of the loss
    loss_mask = torch.ones(2, 1, 2, 1, 1, dtype=torch.float64)
    loss_mask[:, :, 0] = 0
    diffusion.training_losses(lambda xt, t: seen.append(xt) or xt, x0, t=t, noise=noise, x_t=x_t, loss_mask=loss_mask)
    assert torch.all(seen[0][:, :, 0] == 7)


# ----------------------------------------------------------------------------- samplers
@pytest.mark.parametrize("clip", [False, True])
def test_ddim_eta_one_single_step_equals_ddpm_posterior_step(clip):
    diffusion = make(num_timesteps=60)
    x = torch.randn(5, 2, 3, 4, 4, dtype=torch.float64)
    noise = torch.randn_like(x)
    for t_value in [0, 1, 17, 59]:
        t = torch.full((5,), t_value)
        ddpm, ddpm_x0 = diffusion.p_sample(toy_model, x, t, noise=noise, clip_denoised=clip)
        ddim, ddim_x0 = diffusion.ddim_sample(toy_model, x, t, t - 1, eta=1.0, noise=noise, clip_denoised=clip)
        torch.testing.assert_close(ddim, ddpm)
        torch.testing.assert_close(ddim_x0, ddpm_x0)


def test_full_ddim_eta_one_loop_equals_ddpm_loop():
    diffusion = make(num_timesteps=25)
    shape = (2, 1, 2, 3, 3)
    ddpm = diffusion.sample(toy_model, shape, sampler="ddpm", generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    ddim = diffusion.sample(toy_model, shape, sampler="ddim", num_steps=25, eta=1.0,
                            generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    torch.testing.assert_close(ddim, ddpm)


def test_ddim_eta_zero_is_deterministic_and_recovers_a_single_data_point():
    diffusion = make(num_timesteps=100)
    data = torch.randn(1, 2, 3, 4, 4, dtype=torch.float64)
    denoiser = EmpiricalDenoiser(data, diffusion)
    start = torch.randn(3, 2, 3, 4, 4, dtype=torch.float64)
    runs = [diffusion.sample(denoiser, start.shape, sampler="ddim", num_steps=10, eta=0.0, noise=start,
                             generator=torch.Generator().manual_seed(seed)) for seed in (0, 1)]
    torch.testing.assert_close(runs[0], runs[1], rtol=0, atol=0)
    torch.testing.assert_close(runs[0], data.expand_as(start))  # the only point of the data set
    stochastic = [diffusion.sample(toy_model, start.shape, sampler="ddim", num_steps=10, eta=1.0, noise=start,
                                   generator=torch.Generator().manual_seed(seed)) for seed in (0, 1)]
    assert not torch.allclose(stochastic[0], stochastic[1])


@pytest.mark.parametrize("sampler,eta", [("ddpm", 0.0), ("ddim", 0.0), ("ddim", 1.0)])
def test_samplers_reproduce_a_gaussian_data_distribution(sampler, eta):
    """With the exact denoiser of N(0, sigma^2) data, 1000-step samples have standard deviation sigma.

    (Few-step DDIM is biased low here, e.g. about 0.44 instead of 0.5 with 20 steps: discretisation error.)
    """
    sigma = 0.5
    diffusion = make(num_timesteps=1000)

    def exact_eps(xt, t):  # E[x0 | xt] = sqrt(abar) sigma^2 / (abar sigma^2 + 1 - abar) xt
        abar = diffusion.alphas_cumprod[t].reshape(-1, 1)
        x0 = abar.sqrt() * sigma ** 2 / (abar * sigma ** 2 + 1 - abar) * xt
        return diffusion.predict_noise_from_start(xt, t, x0)

    samples = diffusion.sample(exact_eps, (4, 5000), sampler=sampler, eta=eta, dtype=torch.float64,
                               generator=torch.Generator().manual_seed(0))
    assert abs(samples.std().item() - sigma) < 0.02 and abs(samples.mean().item()) < 0.02


@pytest.mark.parametrize("weight", [0.5, -1.0])
def test_guidance_of_two_exact_gaussian_denoisers_samples_the_guided_gaussian(weight):
    """Oracle: for N(mu, sigma^2) data the exact eps is linear in mu, so (1 + w) eps_cond - w eps_uncond is the
    exact eps of N((1 + w) mu_cond - w mu_uncond, sigma^2). Guidance as a model wrapper (as
    hierarchy.ConditionalDenoiser) must sample that mean: 1.5 for w = 0.5, the unconditional 0 for w = -1."""
    sigma, mu_cond, mu_uncond = 0.5, 1.0, 0.0
    diffusion = make(num_timesteps=1000)

    def exact_eps(mu):
        def eps(xt, t):  # E[x0 | xt] = mu + sqrt(abar) sigma^2 / (abar sigma^2 + 1 - abar) (xt - sqrt(abar) mu)
            abar = diffusion.alphas_cumprod[t].reshape(-1, 1)
            x0 = mu + abar.sqrt() * sigma ** 2 / (abar * sigma ** 2 + 1 - abar) * (xt - abar.sqrt() * mu)
            return diffusion.predict_noise_from_start(xt, t, x0)
        return eps

    cond, uncond = exact_eps(mu_cond), exact_eps(mu_uncond)
    guided = diffusion.sample(lambda x, t: guide(cond(x, t), uncond(x, t), weight), (2, 4000), sampler="ddpm",
                              dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    expected = (1 + weight) * mu_cond - weight * mu_uncond
    assert abs(guided.mean().item() - expected) < 0.03 and abs(guided.std().item() - sigma) < 0.02


def test_sampler_callback_and_trajectory():
    diffusion = make(num_timesteps=30)
    shape = (2, 1, 4, 2, 2)
    steps = []
    x0, trajectory = diffusion.sample(toy_model, shape, sampler="ddim", num_steps=6,
                                      callback=lambda step, t, x, pred: steps.append(t), return_trajectory=True,
                                      dtype=torch.float64)
    assert steps == trajectory.timesteps == [29, 23, 17, 12, 6, 0]
    assert trajectory.x_t.shape == (7, *shape) and trajectory.pred_x0.shape == (6, *shape)
    torch.testing.assert_close(trajectory.x_t[-1], x0)
    with pytest.raises(ValueError, match="ddim"):
        diffusion.sample(toy_model, shape, sampler="ddpm", num_steps=10)


def test_leading_spacing_is_lvdms_and_ends_at_alpha_bar_0():
    diffusion = make(num_timesteps=1000)
    assert diffusion.sampling_timesteps("ddim", 50, "leading") == list(range(981, 0, -20))  # 981, 961, ..., 1
    assert diffusion.sampling_timesteps("ddim", 50) == torch.linspace(0, 999, 50).round().long().flip(0).tolist()
    # eta = 0 and the toy model: the final step is x_prev = sqrt(abar_0) x0_hat + sqrt(1 - abar_0) eps_hat
    shape = (1, 1, 2, 2, 2)
    noise = torch.randn(shape, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    x0, trajectory = diffusion.sample(toy_model, shape, sampler="ddim", num_steps=50, eta=0.0, noise=noise,
                                      timestep_spacing="leading", return_trajectory=True)
    x_last, t_last = trajectory.x_t[-2], torch.tensor([1])
    pred_x0, pred_eps = diffusion.model_predictions(toy_model(x_last, t_last), x_last, t_last)
    abar_0 = diffusion.alphas_cumprod[0]
    torch.testing.assert_close(x0, abar_0.sqrt() * pred_x0 + (1 - abar_0).sqrt() * pred_eps)
    with pytest.raises(ValueError, match="timestep_spacing"):
        diffusion.sampling_timesteps("ddim", 50, "trailing")


def test_leading_spacing_refuses_more_than_half_the_steps():
    """Above T // 2 steps LVDM's stride T // S is 1: 600 of 1000 steps would start at t = 600 from pure noise."""
    diffusion = make(num_timesteps=1000)
    assert diffusion.sampling_timesteps("ddim", 500, "leading")[0] == 999  # stride 2: still starts at T - 1
    for num_steps in (501, 600, 1000):
        with pytest.raises(ValueError, match="uniform.*at most 500 steps"):
            diffusion.sampling_timesteps("ddim", num_steps, "leading")
    assert diffusion.sampling_timesteps("ddim", 600)[0] == 999  # uniform spacing takes any number


def test_min_snr_weighting_is_refused_with_an_l1_loss():
    """Min-SNR's weights convert squared errors between eps, x0 and v; they do not apply to an L1 loss."""
    with pytest.raises(ValueError, match="min_snr_gamma.*loss='l2'"):
        make(loss="l1", min_snr_gamma=5.0)
    assert make(loss="l2", min_snr_gamma=5.0).config.min_snr_gamma == 5.0
    assert make(loss="l1", min_snr_gamma=None).config.loss == "l1"


@pytest.mark.parametrize("parameterization", ["eps", "x0", "v"])
def test_given_x_t_needs_its_rewritten_frames_masked_out(parameterization):
    diffusion = make(num_timesteps=100, parameterization=parameterization)
    torch.manual_seed(0)
    x0, noise = torch.randn(2, 1, 4, 2, 2, dtype=torch.float64), torch.randn(2, 1, 4, 2, 2, dtype=torch.float64)
    t = torch.tensor([10, 90])
    mask = torch.zeros(2, 1, 4, 1, 1, dtype=torch.float64)
    mask[:, :, 0] = 1
    x_t = diffusion.q_sample(x0, t, noise) * (1 - mask) + 5.0 * mask  # a given frame written in
    out = diffusion.training_losses(toy_model, x0, t=t, noise=noise, x_t=x_t, loss_mask=1 - mask)
    reference = diffusion.training_losses(toy_model, x0, t=t, noise=noise, loss_mask=1 - mask)
    assert torch.isfinite(out["loss"])
    target = diffusion.training_target(x0, noise, t)
    expected = ((out["model_output"] - target).abs() * (1 - mask)).flatten(1).sum(1) / (3 * 4)
    torch.testing.assert_close(out["loss_per_sample"], expected)  # the target of the untouched frames
    assert reference["loss"].shape == out["loss"].shape
    with pytest.raises(ValueError, match="loss_mask"):
        diffusion.training_losses(toy_model, x0, t=t, noise=noise, x_t=x_t)


def test_empirical_denoiser_matches_brute_force_and_memorises():
    diffusion = make(num_timesteps=50, parameterization="x0")
    data = torch.randn(7, 1, 2, 3, 3, dtype=torch.float64)
    denoiser = EmpiricalDenoiser(data, diffusion)
    xt, t = torch.randn(4, 1, 2, 3, 3, dtype=torch.float64), torch.tensor([0, 3, 20, 49])
    abar = diffusion.alphas_cumprod[t]
    log_weight = torch.stack([-((xt - abar.sqrt().reshape(-1, 1, 1, 1, 1) * d) ** 2).flatten(1).sum(1)
                              / (2 * (1 - abar)) for d in data], dim=1)  # (B, N)
    expected = torch.einsum("bn,nd->bd", log_weight.softmax(1), data.flatten(1)).reshape(xt.shape)
    torch.testing.assert_close(denoiser(xt, t), expected)
    samples = diffusion.sample(denoiser, (5, 1, 2, 3, 3), generator=torch.Generator().manual_seed(0),
                               dtype=torch.float64)
    nearest = torch.cdist(samples.flatten(1), data.flatten(1)).min(1).values
    assert nearest.max() < 0.1 * math.sqrt(18)  # each sample is (almost) one of the seven clips


@pytest.mark.parametrize("parameterization", ["eps", "x0", "v"])
def test_min_snr_weights_are_one_weighting_in_three_units(parameterization):
    """Hang et al. 2023: min(SNR, gamma) on the x0 error. An eps error is an x0 error times SNR, a v error
    one times (SNR + 1) (in squared norm), so the three weights make the same x0-space objective."""
    diffusion = make(num_timesteps=1000, schedule="scaled_linear", parameterization=parameterization,
                     loss="l2", min_snr_gamma=5.0)
    x0, noise = torch.randn(4, 1, 2, 3, 3, dtype=torch.float64), torch.randn(4, 1, 2, 3, 3, dtype=torch.float64)
    t = torch.tensor([1, 50, 300, 999])
    x_t = diffusion.q_sample(x0, t, noise)
    guess = x0 + 0.1 * torch.randn_like(x0)  # an imperfect x0 estimate, expressed in each parameterisation
    output = {"x0": guess, "eps": diffusion.predict_noise_from_start(x_t, t, guess),
              "v": diffusion.get_v(guess, diffusion.predict_noise_from_start(x_t, t, guess), t)}[parameterization]
    loss = diffusion.training_losses(lambda x, t: output, x0, t=t, noise=noise)["loss_per_sample"]
    snr = diffusion.snr(t)
    x0_error = ((guess - x0) ** 2).flatten(1).mean(1)
    torch.testing.assert_close(loss, snr.clamp(max=5.0) * x0_error)


def test_denoise_from_the_last_step_is_sampling_from_the_noised_start():
    """SDEdit from t = T - 1 is `sample` started at q_sample(x_start, T - 1) with the same later noise; from any
    t, the exact denoiser of a one-point data set lands on that point."""
    diffusion = make(num_timesteps=100)
    x_start = torch.randn(2, 2, 3, 4, 4, dtype=torch.float64)
    ours = diffusion.denoise_from(toy_model, x_start, 99, num_steps=10, eta=1.0,
                                  generator=torch.Generator().manual_seed(5))
    generator = torch.Generator().manual_seed(5)
    x_t = diffusion.q_sample(x_start, torch.full((2,), 99), torch.randn(x_start.shape, generator=generator,
                                                                          dtype=torch.float64))
    theirs = diffusion.sample(toy_model, x_start.shape, sampler="ddim", num_steps=10, eta=1.0, noise=x_t,
                              generator=generator)
    torch.testing.assert_close(ours, theirs)
    data = torch.randn(1, 2, 3, 4, 4, dtype=torch.float64)
    denoiser = EmpiricalDenoiser(data, diffusion)
    for t_start in (0, 30, 99):  # t = 0: the schedule's last step alone
        landed = diffusion.denoise_from(denoiser, x_start, t_start, num_steps=10, eta=1.0,
                                        generator=torch.Generator().manual_seed(t_start))
        torch.testing.assert_close(landed, data.expand_as(x_start))
    with pytest.raises(ValueError, match="t_start"):
        diffusion.denoise_from(toy_model, x_start, -1)
