"""The official LVDM weights: the converter, the UNet's official options and the official autoencoder, against
outputs of the official code recorded in tests/fixtures/official_lvdm.safetensors (tools/make_official_fixture.py).

No official code runs here. Both sides fill every weight from its name (`official.closed_form.fill`), so the
fixture holds only the official key lists, the inputs and the official outputs; the tests rebuild the official
state dict from the key list, convert it and compare. Tolerances: float32 on a CPU, outputs of size ~0.1-10.
"""
import functools
import gzip
import json
import math
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from lvdm_ref.checkpoint import save_weights
from lvdm_ref.config import UNetConfig
from lvdm_ref.diffusion import GaussianDiffusion
from lvdm_ref.lvdm import LatentVideoDiffusion
from lvdm_ref.official import convert
from lvdm_ref.official.autoencoder import OfficialAEConfig, OfficialAutoencoder
from lvdm_ref.official.closed_form import fill, is_filled
from lvdm_ref.unet import UNet

FIXTURES = Path(__file__).parent / "fixtures"
# Absolute, on outputs of size ~0.1-5; relative for the DDIM end point, whose values reach ~20. float32 through a
# deep UNet rounds differently on different CPU kernels: 1.3e-5 at most on an AVX2 AMD EPYC against fixtures made
# on an AVX512 Xeon. Each wrong semantic misses by 0.46 or more (test_project_defaults_do_not_match_...).
TOLERANCE = 1e-4


@functools.lru_cache(maxsize=None)
def fixture() -> tuple[dict[str, torch.Tensor], dict, dict]:
    """(tensors, metadata, key lists)."""
    path = FIXTURES / "official_lvdm.safetensors"
    with safe_open(str(path), framework="pt") as handle:
        metadata = json.loads(handle.metadata()["fixture"])
    with gzip.open(FIXTURES / "official_lvdm_keys.json.gz", "rt") as handle:
        keys = json.load(handle)
    return load_file(str(path)), metadata, keys


def official_state(key_list: list, device: str = "cpu", ema_num_updates: int = 0) -> dict[str, torch.Tensor]:
    """The official state dict the fixture generator filled (on "meta": shapes only), aliases sharing storage."""
    betas = GaussianDiffusion(convert.OFFICIAL_DIFFUSION).betas.float()
    state = {}
    for name, shape in key_list:
        target = name[:-len("weight")] + "conv.weight" if name.endswith(".weight") else None
        if name == "betas":
            state[name] = betas
        elif name == "model_ema.num_updates":
            state[name] = torch.tensor(ema_num_updates, dtype=torch.int32)
        elif device == "meta":
            state[name] = torch.empty(shape, device="meta")
        elif any(target == other for other, _ in key_list):
            state[name] = None  # the alias: set below to its target's tensor
        else:
            state[name] = fill(name, tuple(shape)) if is_filled(name) else torch.zeros(shape)
    for name in [n for n, t in state.items() if t is None]:
        state[name] = state[name[:-len("weight")] + "conv.weight"]
    return state


def max_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    assert actual.shape == expected.shape
    return float((actual - expected).abs().max())


def converted_parts() -> dict:
    _, metadata, keys = fixture()
    return convert.split_official(official_state(keys["tiny"], ema_num_updates=metadata["ema_num_updates"]),
                                  tuple(metadata["autoencoder"]["encoder"]["params"]["downsample"]))


def project_unet(parts: dict, weights: str) -> UNet:
    unet = UNet(parts["unet_config"])
    unet.load_state_dict(parts[weights])
    return unet.eval()


# ----------------------------------------------------------------------------- the UNet
def test_inferred_config_is_the_tiny_official_one():
    config = converted_parts()["unet_config"]
    assert (config.model_channels, config.channel_mult, config.num_res_blocks, config.attention_levels) == \
        (32, (1, 2), 1, (1,))
    assert (config.num_heads, config.max_relative_position, config.norm, config.temporal_attention) == \
        (2, 4, "clip", "lvdm")


@pytest.mark.parametrize("weights", ["raw", "ema"])
def test_unet_matches_the_official_eps(weights):
    tensors, _, _ = fixture()
    unet = project_unet(converted_parts(), weights)
    with torch.no_grad():
        eps = unet(tensors["unet_x"], tensors["unet_t"].long())
    expected = tensors[f"unet_eps_{weights}"]
    assert max_error(eps, expected) < TOLERANCE
    assert float(expected.abs().mean()) > 0.1  # closed-form weights: a real output, not the official init's 0


def test_project_defaults_do_not_match_the_official_code():
    """Each switch matters: the default semantics on the same weights miss the official eps by 0.46 to 0.83."""
    tensors, _, _ = fixture()
    parts = converted_parts()
    errors = {}
    for norm, attention in [("frame", "shaw"), ("clip", "shaw"), ("frame", "lvdm")]:
        config = UNetConfig(**{**parts["unet_config"].__dict__, "norm": norm, "temporal_attention": attention})
        unet = UNet(config).eval()
        unet.load_state_dict(parts["raw"])
        with torch.no_grad():
            errors[norm, attention] = max_error(unet(tensors["unet_x"], tensors["unet_t"].long()),
                                                tensors["unet_eps_raw"])
    assert min(errors.values()) > 1e-2, errors


def test_prediction_unet_with_mask_and_noise_level():
    """FrameInterpPredUNet (configs/lvdm_long): mask as the 5th input channel, s through label_emb."""
    tensors, _, keys = fixture()
    state = {name[len(convert.UNET):]: tensor for name, tensor in official_state(keys["tiny_pred"]).items()}
    config = convert.infer_unet_config(state)
    assert config.use_mask and config.num_classes == 251
    unet = UNet(config).eval()
    unet.load_state_dict(convert.convert_unet(state, config))
    with torch.no_grad():
        eps = unet(tensors["unet_x"], tensors["pred_t"].long(), mask=tensors["pred_mask"],
                   class_labels=tensors["pred_s"].long())
    assert max_error(eps, tensors["pred_eps"]) < TOLERANCE


def test_ddim_trajectory_matches_the_official_sampler():
    """5 DDIM steps, eta 0, LVDM's leading spacing (1, 201, ..., 801), last step to abar_0."""
    tensors, _, _ = fixture()
    unet = project_unet(converted_parts(), "raw")
    diffusion = GaussianDiffusion(convert.OFFICIAL_DIFFUSION)
    x_0, trajectory = diffusion.sample(unet, tuple(tensors["ddim_x_T"].shape), sampler="ddim", num_steps=5, eta=0.0,
                                       noise=tensors["ddim_x_T"].clone(), return_trajectory=True)
    assert trajectory.timesteps == [801, 601, 401, 201, 1]
    assert max_error(trajectory.x_t[1], tensors["ddim_x_first_step"]) < TOLERANCE
    scale = float(tensors["ddim_x_0"].abs().max())  # relative to the size of the values (up to ~36)
    assert max_error(x_0, tensors["ddim_x_0"]) < TOLERANCE * scale


# ----------------------------------------------------------------------------- the autoencoder
def official_autoencoder() -> OfficialAutoencoder:
    _, metadata, _ = fixture()
    parts = converted_parts()
    vae = OfficialAutoencoder.from_weights(parts["vae"], parts["vae_config"].__dict__)
    vae.latent_scale.fill_(1 / metadata["scale_factor"])
    vae.latent_shift.fill_(-metadata["shift_factor"])
    return vae


def test_autoencoder_matches_the_official_encode_and_decode():
    """downsample (2, 4, 4): time strides 2 then 1, i.e. both paddings of the official kernel-4 convs."""
    tensors, _, _ = fixture()
    vae = official_autoencoder()
    with torch.no_grad():
        mean, logvar = vae.posterior(tensors["ae_video"])
        z = vae.encode(tensors["ae_video"])
        video = vae.decode(tensors["ae_decode_z"])
    assert max_error(torch.cat([mean, logvar], dim=1), tensors["ae_moments"]) < TOLERANCE
    assert max_error(z, tensors["ae_z"]) < TOLERANCE
    assert max_error(video, tensors["ae_decoded"]) < TOLERANCE


def test_autoencoder_refuses_a_chunked_decode():
    vae = official_autoencoder()
    z = fixture()[0]["ae_decode_z"]
    with pytest.raises(ValueError, match="one pass"):
        vae.decode(z, chunk_size=1)
    assert vae.decode(z, chunk_size=2).shape == (1, 3, 4, 16, 16)  # a chunk as long as the clip is one pass


def test_autoencoder_save_and_load(tmp_path):
    vae = official_autoencoder()
    loaded = OfficialAutoencoder.load(vae.save(tmp_path / "ae.safetensors"))
    z = fixture()[0]["ae_decode_z"]
    with torch.no_grad():
        assert max_error(loaded.decode(z), vae.decode(z)) == 0
    save_weights(tmp_path / "other.safetensors", {}, {"kind": "vae3d"})
    with pytest.raises(ValueError, match="not an 'official_vae3d'"):
        OfficialAutoencoder.load(tmp_path / "other.safetensors")


# ----------------------------------------------------------------------------- full size, on the meta device
def test_full_size_released_model_maps_key_by_key():
    """short_sky.ckpt's key list (built by the official code on the meta device): every tensor is used, and the
    project's UNet and autoencoder built from the inferred config have exactly these shapes."""
    _, _, keys = fixture()
    parts = convert.split_official(official_state(keys["short"], device="meta"), (4, 8, 8))
    config = parts["unet_config"]
    assert (config.model_channels, config.channel_mult, config.num_res_blocks, config.attention_levels,
            config.num_heads, config.max_relative_position) == (256, (1, 2, 3, 4), 3, (1, 2, 3), 4, 4)
    assert sum(math.prod(t.shape) for t in parts["raw"].values()) == 548_904_580
    assert sum(math.prod(t.shape) for t in parts["vae"].values()) == 19_446_759
    assert len(parts["raw"]) == len(parts["ema"]) == 668


@pytest.mark.parametrize("role, frames, classes", [("pred", 4, 251), ("interp", 5, 251)])
def test_full_size_long_video_unets_map(role, frames, classes):
    """Never released, but the mapping holds: mask channel, label_emb as the noise-level embedding."""
    _, _, keys = fixture()
    state = {name[len(convert.UNET):]: t for name, t in official_state(keys[role], device="meta").items()}
    config = convert.infer_unet_config(state)
    assert (config.use_mask, config.num_classes, config.max_relative_position) == (True, classes, frames)
    assert len(convert.convert_unet(state, config)) == 669


# ----------------------------------------------------------------------------- reading Lightning pickles
@pytest.fixture
def fake_lightning(monkeypatch):
    """A throwaway `pytorch_lightning.callbacks.model_checkpoint` for torch.save to reference; the test drops it
    before loading, so the loader runs without any Lightning."""
    names = ["pytorch_lightning", "pytorch_lightning.callbacks", "pytorch_lightning.callbacks.model_checkpoint"]
    for name in names:
        monkeypatch.setitem(sys.modules, name, types.ModuleType(name))
    module = sys.modules[names[-1]]
    module.ModelCheckpoint = type("ModelCheckpoint", (), {"__module__": names[-1]})
    return module.ModelCheckpoint


def drop_lightning() -> None:
    for name in [n for n in sys.modules if n.split(".")[0] == "pytorch_lightning"]:
        del sys.modules[name]


def lightning_checkpoint(path: Path, state: dict, callback_class) -> Path:
    torch.save({"epoch": 7, "global_step": 4321, "pytorch-lightning_version": "1.4.2", "state_dict": state,
                "callbacks": {callback_class: {"best_model_score": None, "dirpath": "x"}}}, path)
    return path


def test_reads_the_lightning_pickle_of_the_fixture_without_lightning():
    """Written by the generator with the real Lightning class in the pickle."""
    assert "pytorch_lightning" not in sys.modules
    state, info = convert.read_checkpoint(FIXTURES / "official_lightning.ckpt")
    assert set(state) == {"model.diffusion_model.out.2.bias", "model_ema.num_updates"}
    assert (info["global_step"], info["epoch"]) == (1234, 3)


def test_converts_a_lightning_checkpoint_into_a_model_sample_loads(tmp_path, fake_lightning, monkeypatch):
    tensors, metadata, keys = fixture()
    path = lightning_checkpoint(tmp_path / "short_tiny.ckpt", official_state(keys["tiny"], ema_num_updates=1234),
                                fake_lightning)
    drop_lightning()  # no Lightning from here on
    monkeypatch.setitem(convert.DATASETS, "tiny", dict(scale_factor=metadata["scale_factor"],
                                                       shift_factor=metadata["shift_factor"], downsample=(2, 4, 4),
                                                       num_frames=8, size=32))
    result = convert.convert_official(path, "tiny", "ema", tmp_path / "converted.safetensors")
    assert result["latent_shape"] == [4, 4, 8, 8] and result["ema_num_updates"] == 1234
    model = LatentVideoDiffusion.load(tmp_path / "converted.safetensors")
    assert model.metadata["official"]["dataset"] == "tiny" and model.metadata["official"]["weights"] == "ema"
    with torch.no_grad():
        assert max_error(model.unet(tensors["unet_x"], tensors["unet_t"].long()), tensors["unet_eps_ema"]) < TOLERANCE
        assert max_error(model.vae.decode(tensors["ae_decode_z"]), tensors["ae_decoded"]) < TOLERANCE
    videos = model.sample(1, sampler="ddim", num_steps=2)  # what `sample` does with it
    assert videos.shape == (1, 8, 32, 32, 3)


def test_refuses_what_is_not_a_released_short_model(tmp_path, fake_lightning):
    _, _, keys = fixture()
    (tmp_path / "notes.ckpt").write_text("not a checkpoint")
    with pytest.raises(ValueError, match="not a PyTorch checkpoint"):
        convert.read_checkpoint(tmp_path / "notes.ckpt")
    whole = lightning_checkpoint(tmp_path / "whole.ckpt", {"betas": torch.zeros(3)}, fake_lightning).read_bytes()
    (tmp_path / "truncated.ckpt").write_bytes(whole[:len(whole) // 2])
    with pytest.raises(ValueError, match="truncated"):
        convert.read_checkpoint(tmp_path / "truncated.ckpt")
    drop_lightning()
    evil = types.ModuleType("evil")
    evil.Payload = type("Payload", (), {"__module__": "evil"})
    sys.modules["evil"] = evil
    try:
        torch.save({"state_dict": {}, "callbacks": {evil.Payload: {}}}, tmp_path / "evil.ckpt")
    finally:
        del sys.modules["evil"]
    with pytest.raises(ValueError, match="evil.Payload"):
        convert.read_checkpoint(tmp_path / "evil.ckpt")
    state = official_state(keys["tiny"])
    with pytest.raises(ValueError, match="text-to-video"):
        convert.split_official({**state, "cond_stage_model.transformer.x": torch.zeros(1)}, (2, 4, 4))
    with pytest.raises(ValueError, match="does not know"):
        convert.split_official({**state, "mystery": torch.zeros(1)}, (2, 4, 4))
    with pytest.raises(ValueError, match="dataset must be one of"):
        convert.convert_official(tmp_path / "whole.ckpt", "ucf", "raw", tmp_path / "out.safetensors")


# ----------------------------------------------------------------------------- the options themselves
def test_clip_norm_makes_frames_interact_and_frame_norm_does_not():
    """With attention "spatial", frames meet nowhere but in clip-pooled statistics."""
    torch.manual_seed(0)
    x = torch.randn(1, 4, 4, 8, 8)
    changed = x.clone()
    changed[:, :, 0] += 1.0
    for norm, interacts in [("frame", False), ("clip", True)]:
        unet = UNet(UNetConfig(model_channels=32, channel_mult=(1, 2), num_heads=2, attention="spatial", norm=norm))
        for parameter in unet.parameters():  # zero-initialised output layers would hide everything
            torch.nn.init.normal_(parameter, std=0.1)
        with torch.no_grad():
            last_frame = unet(changed, torch.tensor([10]))[:, :, 3] - unet(x, torch.tensor([10]))[:, :, 3]
        difference = float(last_frame.abs().max())
        assert (difference > 1e-3) == interacts, (norm, difference)


def test_defaults_are_unchanged():
    config = UNetConfig()
    assert (config.norm, config.temporal_attention) == ("frame", "shaw")
    with pytest.raises(ValueError, match="norm must be one of"):
        UNet(UNetConfig(model_channels=32, norm="batch"))
    with pytest.raises(ValueError, match="temporal_attention must be one of"):
        UNet(UNetConfig(model_channels=32, temporal_attention="rope"))


# ----------------------------------------------------------------------------- the command
def run_command(argv: list[str], capsys) -> tuple[int, str, str]:
    from lvdm_ref.cli import main
    try:
        main(argv)
        code = 0
    except SystemExit as stop:
        code = stop.code
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def tiny_dataset(monkeypatch):
    _, metadata, _ = fixture()
    monkeypatch.setitem(convert.DATASETS, "tiny", dict(scale_factor=metadata["scale_factor"],
                                                       shift_factor=metadata["shift_factor"], downsample=(2, 4, 4),
                                                       num_frames=8, size=32))


def test_command_converts_and_sample_uses_the_result(tmp_path, fake_lightning, tiny_dataset, capsys):
    _, _, keys = fixture()
    ckpt = lightning_checkpoint(tmp_path / "short_tiny.ckpt", official_state(keys["tiny"]), fake_lightning)
    drop_lightning()
    code, out, err = run_command(["convert-official", str(ckpt), "--dataset", "tiny", "--out",
                                  str(tmp_path / "tiny.safetensors")], capsys)
    assert code == 0, err
    result = json.loads(out.strip().splitlines()[-1])
    assert (result["weights"], result["latent_shape"]) == ("raw", [4, 4, 8, 8])
    code, out, err = run_command(["sample", "--ckpt", str(tmp_path / "tiny.safetensors"), "--num", "1", "--sampler",
                                  "ddim", "--steps", "2", "--out", str(tmp_path / "samples.npz"), "--device", "cpu"],
                                 capsys)
    assert code == 0, err
    with np.load(tmp_path / "samples.npz") as archive:
        assert archive["videos"].shape == (1, 8, 32, 32, 3) and archive["videos"].dtype == np.uint8


@pytest.mark.parametrize("case, message", [
    ("text", "not a PyTorch checkpoint"), ("truncated", "truncated"), ("foreign class", "evil.Payload"),
    ("text-to-video", "text-to-video"), ("autoencoder only", "no LVDM UNet"), ("missing tensor", "lacks the tensor")])
def test_command_refuses_bad_input_in_one_line(case, message, tmp_path, fake_lightning, tiny_dataset, capsys):
    _, _, keys = fixture()
    state = official_state(keys["tiny"])
    path = tmp_path / "input.ckpt"
    if case == "text":
        path.write_text("model weights, honest")
    elif case == "truncated":
        whole = lightning_checkpoint(path, state, fake_lightning).read_bytes()
        path.write_bytes(whole[:len(whole) // 3])
    elif case == "foreign class":
        evil = types.ModuleType("evil")
        evil.Payload = type("Payload", (), {"__module__": "evil"})
        sys.modules["evil"] = evil
        try:
            torch.save({"state_dict": state, "callbacks": {evil.Payload: {}}}, path)
        finally:
            del sys.modules["evil"]
    else:
        if case == "text-to-video":
            state["cond_stage_model.transformer.text_model.embeddings.position_ids"] = torch.zeros(1, 77)
        elif case == "autoencoder only":
            state = {name: t for name, t in state.items() if name.startswith(convert.AUTOENCODER)}
        else:
            del state["model.diffusion_model.time_embed.0.weight"]
        lightning_checkpoint(path, state, fake_lightning)
    drop_lightning()
    code, out, err = run_command(["convert-official", str(path), "--dataset", "tiny", "--out",
                                  str(tmp_path / "out.safetensors")], capsys)
    assert code == 2 and message in err, err
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err
    assert not (tmp_path / "out.safetensors").exists()


def test_command_needs_a_known_dataset(tmp_path, capsys):
    (tmp_path / "short_ucf.ckpt").write_bytes(b"")
    code, _, err = run_command(["convert-official", str(tmp_path / "short_ucf.ckpt"), "--dataset", "ucf", "--out",
                                str(tmp_path / "out.safetensors")], capsys)
    assert code == 2 and "invalid choice" in err and "sky" in err
