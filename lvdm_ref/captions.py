"""Captions for text-to-video on Moving MNIST: "3 and 7" names the digits of a clip, and how a UNet reads one.

Not in the LVDM paper (its experiments are unconditional; its text-to-video successors condition on CLIP
text embeddings through cross-attention). Here a caption is what the Moving MNIST generator knows about a
clip: its digits, order-free, 1 to 3 of them ("7", "3 and 7", "1, 3 and 3"). `parse_caption` reads
"3 and 7", "3, 7", "a 3 and a 7", "three and seven" or "3 7"; anything else is an error that says what a
caption may hold.

The embedding: a learned embedding of the label multiset, not pooled token embeddings of the text.
A caption is encoded as its digit counts, a (10,) vector c (c[d] = how many d's; "3 and 3" has c[3] = 2),
and the UNet's pooled-context input (`UNetConfig.context_dim = 10`, unet.py) maps it linearly into the
timestep embedding: W c + b = b + sum of one learned vector per digit shown. Why not tokens: the words
"a", "and" and "," carry nothing, so pooled token embeddings of the text would be this same bag of digit
vectors plus noise from the filler words, and a text encoder worth the name (CLIP, T5) is hundreds of
times the size of this UNet and knows nothing about Moving MNIST. At this size the label set is the
honest input; the slot a text encoder would fill is the same one (a pooled (B, context_dim) vector).
Counts rather than a multi-hot vector, so that "3 and 3" differs from "3".

The null caption (classifier-free guidance's "no condition") is the zero vector: it adds only the
bias b, which training learns as the unconditional embedding. `text_to_video.py` drops captions in
training and guides with them in sampling.
"""
from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np
import torch

from lvdm_ref.data import NUM_CLASSES

CAPTION_DIM = NUM_CLASSES  # the UNet's context_dim: one count per digit
MAX_DIGITS = 3  # Moving MNIST clips here hold 1, 2 or 3 digits (data.generate_moving_mnist)
NUMBER_WORDS = {name: digit for digit, name in enumerate(
    ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"))}
FILLER_WORDS = {"a", "an", "and", "&", "+", "with", "digits", "digit"}
EXAMPLE = "'3 and 7'"


def parse_caption(text: str) -> tuple[int, ...]:
    """"a 3 and a 7" -> (3, 7): the digits a caption names, sorted (order-free), 1 to MAX_DIGITS of them."""
    if not isinstance(text, str):
        raise ValueError(f"a caption is text such as {EXAMPLE}, got {type(text).__name__}")
    digits = []
    for token in re.split(r"[\s,;]+", text.strip().lower()):
        if not token or token in FILLER_WORDS:
            continue
        if token in NUMBER_WORDS:
            digits.append(NUMBER_WORDS[token])
        elif re.fullmatch(r"[+-]?\d+", token):
            if not re.fullmatch(r"\d", token):
                hint = f" (write '{' and '.join(token)}' for the digits {', '.join(token)})" if token.isdigit() else ""
                raise ValueError(f"caption {text!r}: {token} is not a digit 0-9; a caption names 1 to {MAX_DIGITS} "
                                 f"digits 0-9, e.g. {EXAMPLE}{hint}")
            digits.append(int(token))
        else:
            raise ValueError(f"caption {text!r}: cannot read {token!r}; a caption names 1 to {MAX_DIGITS} digits "
                             f"0-9 joined by 'and' or commas, e.g. {EXAMPLE} or 'a 1, a 4 and a 4'")
    if not digits:
        raise ValueError(f"caption {text!r} names no digit; give 1 to {MAX_DIGITS} digits 0-9, e.g. {EXAMPLE}")
    if len(digits) > MAX_DIGITS:
        raise ValueError(f"caption {text!r} names {len(digits)} digits; clips here show 1 to {MAX_DIGITS}, "
                         f"so name at most {MAX_DIGITS}, e.g. {EXAMPLE}")
    return tuple(sorted(digits))


def caption_text(digits: Sequence[int]) -> str:
    """(1, 3, 7) -> "1, 3 and 7": the caption of a clip's digits, sorted (what `parse_caption` reads back)."""
    words = [str(int(d)) for d in sorted(digits)]
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " and " + words[-1]


def caption_vector(digits: Sequence[int]) -> torch.Tensor:
    """Digits -> (10,) float counts: the caption as the UNet reads it (the null caption is all zeros)."""
    digits = [int(d) for d in digits]
    if not 1 <= len(digits) <= MAX_DIGITS or not all(0 <= d < NUM_CLASSES for d in digits):
        raise ValueError(f"a caption has 1 to {MAX_DIGITS} digits in 0-9, got {digits}")
    return torch.bincount(torch.tensor(digits), minlength=NUM_CLASSES).float()


def encode_captions(captions: Sequence[str | Sequence[int]] | np.ndarray | torch.Tensor) -> torch.Tensor:
    """Captions (text, digit lists, or int labels (N, K)) -> (N, 10) counts."""
    if isinstance(captions, (np.ndarray, torch.Tensor)):
        labels = torch.as_tensor(np.asarray(captions), dtype=torch.int64)  # (N, K) digit labels
        return torch.stack([caption_vector(row.tolist()) for row in labels])
    return torch.stack([caption_vector(parse_caption(c) if isinstance(c, str) else c) for c in captions])


def null_captions(num: int) -> torch.Tensor:
    """(num, 10) zeros: "no caption", the unconditional branch of classifier-free guidance."""
    return torch.zeros(num, CAPTION_DIM)


def random_labels(num: int, num_digits: int, generator: torch.Generator) -> torch.Tensor:
    """int64 (num, num_digits) digits drawn uniformly: random captions, the chance level of the measure."""
    return torch.randint(0, NUM_CLASSES, (num, num_digits), generator=generator)


def chance_of_caption(labels: np.ndarray | torch.Tensor) -> float:
    """Mean over clips of P(a uniformly random caption of the same length names the clip's digits).

    For a multiset with counts n_d of K digits that is the multinomial K! / prod(n_d!) / 10^K: 0.02 for
    "3 and 7", 0.01 for "3 and 3". What a caption-accuracy measure scores when captions are random."""
    from math import factorial

    labels = np.asarray(labels)
    chances = []
    for row in labels:
        counts = np.bincount(row, minlength=NUM_CLASSES)
        chances.append(factorial(len(row)) / np.prod([factorial(int(n)) for n in counts]) / NUM_CLASSES ** len(row))
    return float(np.mean(chances))
