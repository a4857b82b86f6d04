"""safetensors checkpoints: round trip, metadata, atomic writes, clear errors."""
import pytest
import torch

from lvdm_ref.checkpoint import atomic_write, load_weights, prefixed, save_weights, unprefixed
from lvdm_ref.config import UNetConfig, from_dict, get_preset, to_dict


def test_round_trip_keeps_tensors_and_metadata(tmp_path):
    tensors = {"a.weight": torch.randn(3, 4), "b.bias": torch.arange(5, dtype=torch.int64)}
    metadata = {"config": to_dict(UNetConfig()), "latent_scale": 0.123}
    path = save_weights(tmp_path / "m.safetensors", tensors, metadata)
    loaded, meta = load_weights(path)
    assert meta["latent_scale"] == metadata["latent_scale"]  # JSON turns tuples into lists:
    assert loaded.keys() == tensors.keys()
    for name in tensors:
        assert torch.equal(loaded[name], tensors[name])
    assert from_dict(UNetConfig, meta["config"]) == UNetConfig()


def test_failed_write_leaves_the_previous_file_untouched(tmp_path):
    path = save_weights(tmp_path / "m.safetensors", {"w": torch.ones(2)}, {"v": 1})
    before = path.read_bytes()

    def fails_halfway(tmp):
        open(tmp, "wb").write(b"partial")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        atomic_write(path, fails_halfway)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["m.safetensors"]  # no temp file left behind


def test_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="data/checkpoints"):
        load_weights(tmp_path / "missing.safetensors")
    (tmp_path / "broken.safetensors").write_bytes(b"\x00" * 20)
    with pytest.raises(ValueError, match="not a readable safetensors"):
        load_weights(tmp_path / "broken.safetensors")


def test_prefix_round_trip():
    state = {"w": torch.zeros(1), "b": torch.ones(1)}
    assert unprefixed(prefixed(state, "unet"), "unet").keys() == state.keys()


def test_presets_and_their_errors():
    for name in ("quick", "mmnist", "ucf101"):
        assert get_preset(name).name == name
    with pytest.raises(ValueError, match="quick"):
        get_preset("tiny")
    with pytest.raises(ValueError, match="unknown UNetConfig fields"):
        from_dict(UNetConfig, {"channels": 3})
