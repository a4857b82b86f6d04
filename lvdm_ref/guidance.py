"""Unconditional guidance (LVDM Sec. 3.3; classifier-free guidance, Ho & Salimans 2022).

One network trained with condition dropout gives both a conditional prediction eps(x_t | c) and an
unconditional one eps(x_t). LVDM pushes the long-video prediction away from the unconditional one,

    eps = (1 + w) eps_cond - w eps_uncond,          w = 0.1 for long videos (official),

so that, as conditioning errors pile up, the samples are pulled back toward what the model believes
a video looks like. w = 0 is the conditional model, w = -1 the unconditional one, and the result
is linear in w.

What the unconditional branch sees must be what an unconditional training sample saw: a mask of
all zeros and nothing written into x_t. The official sampler writes the conditions into x_t before
both calls (its bug (b)) and drops the s embedding in the unconditional call (bug (a)); here the
conditional writing lives inside `hierarchy.ConditionalDenoiser`, after x_t is split into the two
branches, and both branches get the same s (unconditional training samples carried a random s too,
so any s seen in training is in distribution, and the branches then differ only in the condition).
"""
from __future__ import annotations

import torch

LONG_VIDEO_GUIDANCE = 0.1  # w on the prediction stage of LVDM's long-video script (official)


def guide(cond: torch.Tensor, uncond: torch.Tensor, weight: float) -> torch.Tensor:
    """(1 + w) * cond - w * uncond: the guided prediction (any parameterisation: it is linear).

    Names: `guidance_weight` is this w, LVDM's (0 = the conditional model); `guidance_scale` is g = w + 1 as in
    diffusers and classifier-free guidance papers (1 = the conditional model), used by `text_to_video.py`."""
    return (1 + weight) * cond - weight * uncond
