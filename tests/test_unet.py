"""Oracle tests for lvdm_ref.unet: each attention kind against plain full attention with the matching mask."""
import pytest
import torch
from einops import rearrange
from torch import nn

from lvdm_ref.config import UNetConfig
from lvdm_ref.profiling import attention_cost, flop_counter
from lvdm_ref.unet import (ATTENTION_KINDS, JointAttention, SpatialAttention, TemporalAttention, UNet,
                           attention_block, timestep_embedding)
from lvdm_ref.viz import capture_attention

TINY = dict(model_channels=16, channel_mult=(1, 2), num_heads=2, attention_levels=(0, 1), max_relative_position=3)


def randomise_zero_init(module: nn.Module, seed: int = 0) -> nn.Module:
    """Zero-initialised layers make blocks the identity; give them weights so the tests see through them."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in module.parameters():
            if not parameter.any():
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.3)
    return module


def reference_attention(layer, tokens, allowed, positions=None, bias=None):
    """Full softmax attention over all L tokens of each clip, written out token by token.

    tokens (B, L, C) already normalised; allowed (L, L) bool; positions (L,) frame index of each token for
    Shaw relative positions (TemporalAttention only); bias(i, j) -> (heads,) added to the logit of the
    pair (JointAttention's relative bias). Returns the residual branch (B, L, C).
    """
    heads, L = layer.num_heads, tokens.shape[1]
    q, k, v = rearrange(layer.qkv(tokens), "b l (three n d) -> three b n l d", three=3, n=heads)
    d = q.shape[-1]
    out = torch.zeros_like(q)
    for i in range(L):
        scores, values = [], []
        for j in range(L):
            key, value = k[:, :, j], v[:, :, j]
            if positions is not None:
                clipped = max(-layer.max_relative_position, min(layer.max_relative_position, int(positions[j] - positions[i])))
                key = key + layer.relative_key[clipped + layer.max_relative_position]
                value = value + layer.relative_value[clipped + layer.max_relative_position]
            score = (q[:, :, i] * key).sum(-1) / d ** 0.5
            if bias is not None:
                score = score + bias(i, j)
            scores.append(torch.where(allowed[i, j], score, torch.full_like(score, -torch.inf)))
            values.append(value)
        weights = torch.stack(scores, -1).softmax(-1)  # (B, heads, L)
        out[:, :, i] = torch.einsum("bnj,jbnd->bnd", weights, torch.stack(values))
    return layer.proj_out(rearrange(out, "b n l d -> b l (n d)"))


def clip_tokens(x):
    return rearrange(x, "b c t h w -> b (t h w) c")


def as_frames(x):
    return rearrange(x, "b c t h w -> (b t) c h w")  # the UNet's inner layout


def run(layer, clip, **kwargs):
    """Apply an attention layer to a (B, C, t, h, w) clip; return its (B, t h w, C) tokens."""
    out = layer(as_frames(clip), clip.shape[2], **kwargs)
    return clip_tokens(rearrange(out, "(b t) c h w -> b c t h w", t=clip.shape[2]))


def normed_tokens(norm, clip):
    """GroupNorm per frame, as the layers do, as (B, t h w, C) tokens."""
    return clip_tokens(rearrange(norm(as_frames(clip)), "(b t) c h w -> b c t h w", t=clip.shape[2]))


def token_grid(t, h, w):
    frame = torch.arange(t).repeat_interleave(h * w)  # frame index of each (t h w) token
    pixel = torch.arange(h * w).repeat(t)
    return frame, pixel


@pytest.fixture
def clip():
    torch.manual_seed(0)
    return torch.randn(2, 8, 3, 2, 3, dtype=torch.float64)  # (B, C, t, h, w)


def test_spatial_attention_is_full_attention_with_same_frame_mask(clip):
    layer = randomise_zero_init(SpatialAttention(8, 2)).double()
    frame, _ = token_grid(3, 2, 3)
    expected = clip_tokens(clip) + reference_attention(layer, normed_tokens(layer.norm, clip),
                                                       frame[:, None] == frame[None])
    torch.testing.assert_close(run(layer, clip), expected)


def test_temporal_attention_is_full_attention_with_same_pixel_mask_and_relative_positions(clip):
    layer = randomise_zero_init(TemporalAttention(8, 2, max_relative_position=1)).double()
    frame, pixel = token_grid(3, 2, 3)  # 3 frames, clip distance 1: the +-2 pair shares the +-1 entry
    expected = clip_tokens(clip) + reference_attention(layer, normed_tokens(layer.norm, clip),
                                                       pixel[:, None] == pixel[None], positions=frame)
    torch.testing.assert_close(run(layer, clip), expected)


def test_factorized_block_is_spatial_then_temporal_masked_attention(clip):
    block = randomise_zero_init(attention_block("factorized", 8, UNetConfig(num_heads=2, max_relative_position=2)))
    block = block.double()
    spatial, temporal = block.spatial, block.temporal
    frame, pixel = token_grid(3, 2, 3)
    after_space = clip_tokens(clip) + reference_attention(spatial, normed_tokens(spatial.norm, clip),
                                                          frame[:, None] == frame[None])
    after_space_video = rearrange(after_space, "b (t h w) c -> b c t h w", t=3, h=2)
    expected = after_space + reference_attention(temporal, normed_tokens(temporal.norm, after_space_video),
                                                 pixel[:, None] == pixel[None], positions=frame)
    torch.testing.assert_close(run(block, clip), expected)


def test_joint_attention_is_full_attention_with_relative_temporal_bias(clip):
    layer = randomise_zero_init(JointAttention(8, 2, max_relative_position=1)).double()
    frame, _ = token_grid(3, 2, 3)  # clip distance 1: the +-2 frame pairs share the +-1 entry

    def bias(i, j):
        return layer.relative_bias[max(-1, min(1, int(frame[j] - frame[i]))) + 1]  # (heads,)

    expected = clip_tokens(clip) + reference_attention(layer, normed_tokens(layer.norm, clip),
                                                       torch.ones(18, 18, dtype=torch.bool), bias=bias)
    torch.testing.assert_close(run(layer, clip), expected)
    with capture_attention(layer) as maps:  # the hook's explicit weights, applied to v, give the same
        torch.testing.assert_close(run(layer, clip), expected)
    weights = maps.of_kind("joint")[0]["weights"].double()  # (B, heads, L, L), recorded in float32
    assert weights.shape == (2, 2, 18, 18)
    _, _, v = layer.heads(normed_tokens(layer.norm, clip))  # (B, heads, L, d)
    out = layer.proj_out(rearrange(weights @ v, "b n l d -> b l (n d)"))
    torch.testing.assert_close(clip_tokens(clip) + out, expected, rtol=1e-5, atol=1e-6)


def test_temporal_attention_is_shift_equivariant_in_time():
    torch.manual_seed(1)
    layer = randomise_zero_init(TemporalAttention(8, 2, max_relative_position=2))
    x = torch.randn(1, 8, 6, 2, 2)
    positions = torch.arange(6)
    base = run(layer, x, frame_positions=positions).reshape(1, 6, 4, 8)  # (B, t, h w, C)
    shifted = run(layer, x, frame_positions=positions + 37).reshape(1, 6, 4, 8)
    torch.testing.assert_close(shifted, base)  # shifting every frame's time changes nothing
    order = torch.tensor([3, 4, 5, 0, 1, 2])  # frames move with their time stamps: outputs move with them
    moved = run(layer, x[:, :, order], frame_positions=positions[order]).reshape(1, 6, 4, 8)
    torch.testing.assert_close(moved, base[:, order])
    # the positions are not ignored: stretching time (distances change) changes the output
    assert not torch.allclose(run(layer, x, frame_positions=positions * 2).reshape(1, 6, 4, 8), base, atol=1e-4)


@pytest.mark.parametrize("attention", ATTENTION_KINDS)
@pytest.mark.parametrize("frames", [1, 4, 8, 16])
def test_unet_shapes(attention, frames):
    unet = UNet(UNetConfig(attention=attention, **TINY))
    x = torch.randn(2, 4, frames, 8, 8)
    out = unet(x, torch.tensor([3, 999]))
    assert out.shape == x.shape and torch.isfinite(out).all()


def test_fresh_unet_attention_blocks_are_identity_and_output_is_zero():
    unet = UNet(UNetConfig(**TINY))
    x = torch.randn(4, 16, 4, 4)  # (b t, C, h, w)
    for block in (SpatialAttention(16, 2), TemporalAttention(16, 2, 3), JointAttention(16, 2)):
        torch.testing.assert_close(block(x, 4), x)
    assert torch.all(unet(torch.randn(1, 4, 4, 8, 8), torch.tensor([5])) == 0)


def test_spatial_kind_never_mixes_frames_and_factorized_does():
    torch.manual_seed(0)
    x, t = torch.randn(1, 4, 4, 8, 8), torch.tensor([10])
    for attention, mixes in (("spatial", False), ("factorized", True), ("joint", True)):
        unet = randomise_zero_init(UNet(UNetConfig(attention=attention, **TINY)))
        changed = x.clone()
        changed[:, :, 3] += 1.0  # touch the last frame only
        difference = (unet(changed, t) - unet(x, t))[:, :, :3].abs().max()
        assert (difference > 1e-4) == mixes, attention
    spatial = randomise_zero_init(UNet(UNetConfig(attention="spatial", **TINY))).double()  # float64: no rounding doubt
    per_frame = torch.cat([spatial(x[:, :, i:i + 1].double(), t) for i in range(4)], dim=2)  # (B, c, t, h, w)
    whole = spatial(x.double(), t)
    torch.testing.assert_close(whole, per_frame)  # "spatial" is an image model applied frame by frame


@pytest.mark.parametrize("option", [{"temporal_conv": True}, {"temporal_levels": (0,)}])
def test_temporal_options_start_as_the_plain_unet_and_mix_frames(option):
    """Each option adds only zero-initialised residual layers: with the plain UNet's weights copied in it computes
    the same function; once trained (randomised here) it mixes frames where the spatial-only UNet cannot."""
    torch.manual_seed(0)
    x, t = torch.randn(1, 4, 4, 8, 8), torch.tensor([10])
    config = dict(TINY, attention="spatial", attention_levels=(1,))  # level 0 free for temporal_levels
    plain, extended = randomise_zero_init(UNet(UNetConfig(**config))), UNet(UNetConfig(**config, **option))
    missing, unexpected = extended.load_state_dict(plain.state_dict(), strict=False)
    assert missing and not unexpected  # only the new layers' weights are new
    torch.testing.assert_close(extended(x, t), plain(x, t))
    extended = randomise_zero_init(extended)
    changed = x.clone()
    changed[:, :, 3] += 1.0  # touch the last frame only
    assert (extended(changed, t) - extended(x, t))[:, :, :3].abs().max() > 1e-4


def test_optional_inputs_change_the_output_only_when_given():
    torch.manual_seed(0)
    x, t = torch.randn(2, 4, 4, 8, 8), torch.tensor([1, 500])
    plain = randomise_zero_init(UNet(UNetConfig(**TINY)))
    full = UNet(UNetConfig(use_mask=True, num_classes=5, context_dim=6, **TINY))
    randomise_zero_init(full, seed=1)
    state = plain.state_dict()
    conv = full.input_conv.weight.detach().clone()
    conv[:, :4] = state.pop("input_conv.weight")
    conv[:, 4:] = torch.randn_like(conv[:, 4:])  # the mask column starts at zero; give it weights to test it
    full.load_state_dict({**state, "input_conv.weight": conv}, strict=False)
    reference = plain(x, t)
    torch.testing.assert_close(full(x, t), reference)  # nothing given: the plain model
    torch.testing.assert_close(full(x, t, mask=torch.zeros(2, 1, 4, 8, 8)), reference)  # an empty mask = none
    mask = torch.zeros(2, 1, 4, 1, 1)
    mask[:, :, 0] = 1
    torch.testing.assert_close(full(x, t, mask=mask), full(x, t, mask=mask.expand(2, 1, 4, 8, 8)))  # broadcasts
    given = dict(mask=mask, class_labels=torch.tensor([1, 4]), context=torch.randn(2, 6))
    for name, value in given.items():
        assert not torch.allclose(full(x, t, **{name: value}), reference, atol=1e-4), name
    for name, value in {**given, "perturbation_level": torch.tensor([0, 100])}.items():
        with pytest.raises(ValueError, match=name):
            plain(x, t, **{name: value})
    with pytest.raises(ValueError, match="mask must be"):
        full(x, t, mask=torch.zeros(2, 1, 3, 1, 1))


def test_perturbation_embedding_is_required_and_used():
    torch.manual_seed(0)
    x, t = torch.randn(2, 4, 4, 8, 8), torch.tensor([1, 500])
    model = randomise_zero_init(UNet(UNetConfig(use_perturbation_embedding=True, **TINY)))
    with pytest.raises(ValueError, match="perturbation_level is required"):
        model(x, t)
    out_0, out_100 = model(x, t, perturbation_level=torch.tensor([0, 0])), model(x, t, perturbation_level=torch.tensor([100, 100]))
    assert not torch.allclose(out_0, out_100, atol=1e-4)


def test_new_inputs_start_at_zero():
    model = UNet(UNetConfig(use_mask=True, use_perturbation_embedding=True, **TINY))
    assert model.input_conv.weight[:, 4:].abs().max() == 0  # the mask column
    assert all(p.abs().max() == 0 for p in model.perturbation_embed[-1].parameters())


def test_capture_attention_records_without_changing_the_output():
    torch.manual_seed(0)
    unet = randomise_zero_init(UNet(UNetConfig(**TINY)))
    x, t = torch.randn(1, 4, 4, 8, 8), torch.tensor([100])
    baseline = unet(x, t)
    with capture_attention(unet) as maps:
        recorded = unet(x, t)
    torch.testing.assert_close(recorded, baseline, rtol=1e-4, atol=1e-5)
    spatial, temporal = maps.of_kind("spatial"), maps.of_kind("temporal")
    assert len(spatial) == len(temporal) == 7  # down 1 + up 2 at each of levels 0 and 1, + the middle block
    assert spatial[0]["weights"].shape == (1, 4, 2, 64, 64)  # (B, t, heads, h w, h w) at 8x8
    assert temporal[0]["weights"].shape == (1, 8, 8, 2, 4, 4)  # (B, h, w, heads, t, t)
    for record in maps.records:
        torch.testing.assert_close(record["weights"].sum(-1), torch.ones(record["weights"].shape[:-1]))
    unet(x, t)
    assert len(maps.records) == 14  # nothing recorded once the context has closed


def test_flop_counter_counts_fused_attention_in_closed_form():
    n, channels, tokens, heads = 3, 16, 64, 2  # 3 frames of 8x8, d = 8 per head
    layer = SpatialAttention(channels, heads)
    with flop_counter() as counter:
        layer(torch.randn(n, channels, 8, 8), n)
    projections = 2 * n * tokens * channels * (3 * channels + channels)  # qkv and output projections
    attention = 2 * 2 * n * heads * tokens * tokens * (channels // heads)  # q k^T and weights @ v
    assert counter.get_total_flops() == projections + attention


def test_unet_and_diffusion_learn_a_fixed_batch():
    """A tiny end-to-end check: 40 AdamW steps on one batch must cut the diffusion loss."""
    from lvdm_ref.config import DiffusionConfig
    from lvdm_ref.diffusion import GaussianDiffusion

    torch.manual_seed(0)
    unet = UNet(UNetConfig(**TINY))
    diffusion = GaussianDiffusion(DiffusionConfig(num_timesteps=100, loss="l2"))
    z0 = torch.randn(4, 4, 2, 8, 8).sign() * 0.8  # fixed "latents"
    t, noise = torch.tensor([5, 30, 60, 90]), torch.randn(4, 4, 2, 8, 8)
    optimizer = torch.optim.AdamW(unet.parameters(), lr=3e-3)
    losses = []
    for _ in range(40):
        loss = diffusion.loss(unet, z0, t=t, noise=noise)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]


def test_attention_cost_grows_linearly_when_factorised_and_quadratically_when_joint():
    small, large = ({kind: attention_cost(kind, frames, channels=16, size=4) for kind in ATTENTION_KINDS}
                    for frames in (8, 16))
    assert large["spatial"] / small["spatial"] == pytest.approx(2.0, rel=0.01)  # per frame: exactly linear
    # factorised: linear in f plus a small f^2 temporal term; joint: dominated by (f h w)^2
    assert large["factorized"] / small["factorized"] < 2.5 < 3.0 < large["joint"] / small["joint"]
