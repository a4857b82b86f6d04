"""The trainer: exact resume, atomic checkpoints, the NaN guard, DDP equivalence."""
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from torch import nn

from lvdm_ref.config import TrainConfig, get_preset
from lvdm_ref.train import STATE_FILE, Trainer, TrainingDiverged
from lvdm_ref.vae3d import AutoencoderWithLoss

ROOT = Path(__file__).resolve().parents[1]


class TinyModel(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(6, 16), nn.SiLU(), nn.Dropout(0.1), nn.Linear(16, 1))

    def forward(self, x):
        return self.net(x)


class RegressionSet(torch.utils.data.Dataset):
    def __init__(self, num=40):
        generator = torch.Generator().manual_seed(0)
        self.x = torch.randn(num, 6, generator=generator)
        self.y = 0.5 * self.x.sum(dim=1, keepdim=True)  # learnable exactly

    def __len__(self):
        return len(self.x)

    def __getitem__(self, index):
        return self.x[index], self.y[index]


def mse(model, batch, step):
    x, y = batch
    return nn.functional.mse_loss(model(x), y), {"scale": 1.0}


def make_trainer(out_dir, resume=False, steps=8, compile=False, **overrides):
    torch.manual_seed(1)
    config = TrainConfig(batch_size=4, lr=1e-2, steps=steps, ema_decay=0.9, ckpt_every=3, log_every=1,
                         warmup_steps=2, grad_clip=1.0, **overrides)
    return Trainer(TinyModel(), mse, RegressionSet(), config, out_dir, resume=resume, progress=False,
                   compile=compile)


def flat(module):
    return torch.cat([p.detach().flatten() for p in module.state_dict().values()])


def test_resume_is_exact(tmp_path):
    straight = make_trainer(tmp_path / "straight", steps=14)
    straight.fit()

    first = make_trainer(tmp_path / "split", steps=14)
    first.fit(steps=7)  # stops mid-epoch (10 batches per epoch) and off the ckpt_every grid
    second = make_trainer(tmp_path / "split", resume=True, steps=14)
    assert second.step == 7
    second.fit()
    assert torch.equal(flat(straight.model), flat(second.model))
    assert torch.equal(flat(straight.ema_model), flat(second.ema_model))


def test_resumed_run_reports_the_time_of_all_its_calls(tmp_path):
    first = make_trainer(tmp_path / "run", steps=14)
    part = first.fit(steps=7)
    assert part["timed_from_step"] == 0 and part["total_cpu_seconds"] > 0
    whole = make_trainer(tmp_path / "run", resume=True, steps=14).fit()
    assert whole["timed_from_step"] == 0 and whole["total_cpu_seconds"] > part["total_cpu_seconds"]
    assert whole["total_wall_seconds"] >= whole["seconds"] - 0.01  # this call and the first one (rounding)
    state = torch.load(tmp_path / "run" / "train_state.pt", weights_only=True)  # a state from before clocks
    del state["clock"]
    torch.save(state, tmp_path / "run" / "train_state.pt")
    assert make_trainer(tmp_path / "run", resume=True, steps=20).fit()["timed_from_step"] == 14


def test_a_resumed_call_with_nothing_to_train_reports_the_last_logged_loss(tmp_path):
    done = make_trainer(tmp_path / "run", steps=6).fit()  # log_every=1: every step is logged
    again = make_trainer(tmp_path / "run", resume=True, steps=6).fit()  # already at step 6: trains nothing
    assert again["steps"] == 6 and again["final_loss"] == pytest.approx(done["final_loss"], rel=1e-12)


def _can_compile() -> bool:
    """torch.compile on a CPU needs dynamo support for this Python and a C++ compiler for inductor."""
    import torch._dynamo

    return torch._dynamo.is_dynamo_supported() and any(shutil.which(name) for name in ("g++", "c++", "clang++"))


@pytest.mark.slow
@pytest.mark.skipif(not _can_compile(), reason="torch.compile unavailable here (no dynamo support or C++ compiler)")
def test_compiled_run_writes_eager_checkpoints_and_eager_resumes_it(tmp_path):
    """compile=True: state dict keys without `_orig_mod.`, strict loading into an eager model, and
    4 compiled steps + 4 eager resumed steps match 8 eager steps (up to the fused kernels' rounding)."""
    import torch._dynamo
    import torch._inductor.config
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()
    with torch._inductor.config.patch(fallback_random=True):  # dropout draws from torch's RNG, as in eager
        make_trainer(tmp_path / "split", compile=True, bf16_cpu=False).fit(steps=4)  # float32: rounding, not bf16
    assert counters["stats"]["unique_graphs"] == 1  # compiled once, and no recompiles step after step
    state = torch.load(tmp_path / "split" / STATE_FILE, weights_only=True)
    keys = list(TinyModel().state_dict())
    assert list(state["model"]) == keys and list(state["ema"]) == keys
    TinyModel().load_state_dict(state["model"])  # strict
    resumed = make_trainer(tmp_path / "split", resume=True, bf16_cpu=False)  # eager
    assert resumed.step == 4
    resumed.fit()
    straight = make_trainer(tmp_path / "straight", bf16_cpu=False)
    straight.fit()
    torch.testing.assert_close(flat(resumed.model), flat(straight.model), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(flat(resumed.ema_model), flat(straight.ema_model), rtol=1e-4, atol=1e-5)


def test_refuses_to_overwrite_a_run(tmp_path):
    make_trainer(tmp_path).fit(steps=3)
    with pytest.raises(FileExistsError, match="--resume"):
        make_trainer(tmp_path)


@pytest.mark.parametrize("has_bf16, setting, expected",
                         [(True, None, True), (False, None, False), (True, False, False), (False, True, True)])
def test_bf16_on_a_cpu_follows_the_cpu_unless_set(tmp_path, monkeypatch, has_bf16, setting, expected):
    import lvdm_ref.train as train_module

    monkeypatch.setattr(train_module, "cpu_has_bf16", lambda: has_bf16)
    assert make_trainer(tmp_path, bf16_cpu=setting).uses_bf16 is expected


def test_bf16_training_follows_float32(tmp_path):
    """The same batches under bfloat16 autocast give float32's loss at every step within bfloat16's precision
    (the check behind the default: benchmarks/stability_study.py compares a whole run's curve this way)."""
    runs, losses = {}, {}
    for bf16 in (False, True):  # made and run one after the other: the same seeded dropout draws
        runs[bf16] = make_trainer(tmp_path / str(bf16), steps=6, bf16_cpu=bf16)
        runs[bf16].fit()
        losses[bf16] = [json.loads(line)["loss"] for line in open(tmp_path / str(bf16) / "log.jsonl")]
    assert runs[True].uses_bf16 and not runs[False].uses_bf16
    assert losses[True] != losses[False]  # autocast did act
    assert losses[True] == pytest.approx(losses[False], rel=0.03)


def test_loss_falls_and_log_is_written(tmp_path):
    trainer = make_trainer(tmp_path, steps=100)
    summary = trainer.fit()
    logged = [json.loads(line) for line in open(tmp_path / "log.jsonl")]
    assert [entry["step"] for entry in logged] == list(range(1, 101))
    losses = [entry["loss"] for entry in logged]
    assert sum(losses[-10:]) / 10 < 0.5 * sum(losses[:10]) / 10
    assert summary["steps"] == 100 and (tmp_path / "loss.png").exists()


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path):
    def explodes(model, batch, step):
        loss, logs = mse(model, batch, step)
        return (loss * float("nan") if step == 4 else loss), logs

    config = TrainConfig(batch_size=4, lr=1e-2, steps=10, ema_decay=0.0, ckpt_every=3, log_every=1)
    trainer = Trainer(TinyModel(), explodes, RegressionSet(), config, tmp_path, progress=False)
    with pytest.raises(TrainingDiverged, match="at step 4"):
        trainer.fit()
    state = torch.load(tmp_path / STATE_FILE, weights_only=True)
    assert state["step"] == 3
    assert all(torch.isfinite(t).all() for t in state["model"].values())


SAVE_FOREVER = """
import os, sys, torch
from torch import nn
from lvdm_ref.config import TrainConfig
from lvdm_ref.train import Trainer
model = nn.Linear(512, 512)
resume = os.path.exists(os.path.join(sys.argv[1], "train_state.pt"))
data = lambda step, rank, world: torch.randn(4, 512)
trainer = Trainer(model, lambda m, x, s: m(x).pow(2).mean(), data, TrainConfig(batch_size=4, steps=1, ema_decay=0.0),
                  sys.argv[1], progress=False, resume=resume)
trainer.save_state()  # one whole checkpoint first: the kills below land in later writes, however slow this one is
print("ready", flush=True)
while True:
    trainer.step += 1
    trainer.save_state()
"""


def test_killed_mid_write_never_leaves_a_broken_checkpoint(tmp_path):
    script = tmp_path / "save_forever.py"
    script.write_text(SAVE_FOREVER)
    for delay in (0.05, 0.13, 0.29):
        process = subprocess.Popen([sys.executable, str(script), str(tmp_path / "run")], stdout=subprocess.PIPE,
                                   cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
        assert process.stdout.readline().strip() == b"ready"
        time.sleep(delay)
        process.send_signal(signal.SIGKILL)
        process.wait()
        state = torch.load(tmp_path / "run" / STATE_FILE, weights_only=True)  # must load
        assert state["model"]["weight"].shape == (512, 512)


DDP_SCRIPT = """
import sys, torch
from lvdm_ref.config import TrainConfig
from lvdm_ref.train import Trainer
sys.path.insert(0, sys.argv[2])
from test_train import TinyModel, RegressionSet, mse
torch.manual_seed(1)
config = TrainConfig(batch_size=4, lr=1e-2, steps=6, ema_decay=0.9, ckpt_every=100, log_every=1, grad_clip=None,
                     bf16_cpu=False)  # float32: the equivalence is exact only without bfloat16's rounding
model = TinyModel()
model.net[2].p = 0.0  # dropout masks differ per process; the equivalence is about the gradients
trainer = Trainer(model, mse, RegressionSet(), config, sys.argv[1], progress=False)
trainer.fit()
if trainer.is_main:
    torch.save(trainer.model.state_dict(), sys.argv[1] + "/final.pt")
"""


@pytest.mark.slow
def test_ddp_two_processes_match_one(tmp_path):
    script = tmp_path / "ddp.py"
    script.write_text(DDP_SCRIPT)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    for name, nproc in (("one", 1), ("two", 2)):
        subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc),
                        "--master_port", str(29500 + nproc), str(script), str(tmp_path / name),
                        str(Path(__file__).parent)], check=True, env=env, cwd=ROOT, capture_output=True)
    one = torch.load(tmp_path / "one" / "final.pt", weights_only=True)
    two = torch.load(tmp_path / "two" / "final.pt", weights_only=True)
    for key in one:
        torch.testing.assert_close(one[key], two[key], rtol=1e-5, atol=1e-6)


DDP_VAE_SCRIPT = """
import sys, torch
from lvdm_ref.config import get_preset
from lvdm_ref.train import Callback
from lvdm_ref.recipes import train_autoencoder
from lvdm_ref.utils import print_result

class SaveEveryRank(Callback):
    def on_fit_end(self, trainer, summary):
        torch.save(trainer.model.state_dict(), f"{sys.argv[1]}/rank{trainer.rank}.pt")
        open(f"{sys.argv[1]}/rank{trainer.rank}_loss.txt", "w").write(repr(trainer.last_logs["loss"]))

print_result(train_autoencoder(get_preset("quick"), sys.argv[1], steps=3, callbacks=[SaveEveryRank()],
                               progress=False, stats_clips=4))  # as `python -m lvdm_ref train-vae` ends
"""


@pytest.mark.slow
def test_ddp_autoencoder_ranks_agree_and_match_one_process(tmp_path):
    """The autoencoder's loss runs inside the DDP-wrapped module's forward, so gradients are averaged:
    both ranks end with the same weights, equal to one process taking the whole batch. One process
    prints the result, and its final loss is the global batch's: the mean of the ranks' losses."""
    script = tmp_path / "ddp_vae.py"
    script.write_text(DDP_VAE_SCRIPT)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    printed = {}
    for name, nproc in (("one", 1), ("two", 2)):
        (tmp_path / name).mkdir()
        done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc),
                               "--master_port", str(29510 + nproc), str(script), str(tmp_path / name)],
                              check=True, env=env, cwd=ROOT, capture_output=True, text=True)
        printed[name] = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    assert len(printed["one"]) == len(printed["two"]) == 1, printed
    rank_losses = [float((tmp_path / "two" / f"rank{rank}_loss.txt").read_text()) for rank in (0, 1)]
    assert rank_losses[0] != rank_losses[1]  # each rank's own slice: neither alone is the mean
    assert printed["two"][0]["final_loss"] == pytest.approx(sum(rank_losses) / 2, rel=1e-9)
    one = torch.load(tmp_path / "one" / "rank0.pt", weights_only=True)
    ranks = [torch.load(tmp_path / "two" / f"rank{rank}.pt", weights_only=True) for rank in (0, 1)]
    for key in one:
        torch.testing.assert_close(ranks[0][key], ranks[1][key], rtol=0, atol=0)  # ranks identical
    # = one process with the full batch, compared as functions: a conv bias that a GroupNorm right after it
    # cancels has a gradient of rounding noise only, which Adam's normalisation turns into +-lr steps that
    # differ with the summation order; the network computes the same thing either way.
    models = []
    for state in (one, ranks[0]):
        model = AutoencoderWithLoss(get_preset("quick").vae)
        model.load_state_dict(state)
        models.append(model.autoencoder.eval())
    clip = torch.rand(2, 1, 8, 32, 32) * 2 - 1
    with torch.no_grad():
        torch.testing.assert_close(models[1](clip, sample=False)[0], models[0](clip, sample=False)[0],
                                   rtol=1e-3, atol=1e-4)
    untrained = AutoencoderWithLoss(get_preset("quick").vae).autoencoder.eval()
    with torch.no_grad():  # the check has teeth: three steps of training moved the output by much more
        assert (untrained(clip, sample=False)[0] - models[0](clip, sample=False)[0]).abs().max() > 1e-2
    assert (tmp_path / "two" / "vae.safetensors").exists()


def test_loss_history_callback_sees_every_step(tmp_path):
    from lvdm_ref.train import LossHistory

    history = LossHistory()
    config = TrainConfig(batch_size=4, lr=1e-2, steps=5, ema_decay=0.0, ckpt_every=100, log_every=2)
    trainer = Trainer(TinyModel(), mse, RegressionSet(), config, tmp_path, callbacks=[history], progress=False)
    trainer.fit()
    assert history.steps == [1, 2, 3, 4, 5] and history.losses[-1] == trainer.last_logs["loss"]


def test_a_snapshot_once_written_is_kept_when_a_resumed_run_passes_its_step_again(tmp_path):
    """A resumed run replays the steps after its last state: the snapshot it wrote before (and that may have been
    scored) stays as it was, and the next ones carry the run's device and arithmetic."""
    from types import SimpleNamespace

    from lvdm_ref.recipes.common import Snapshots
    from lvdm_ref.train import cpu_name

    saved = {}
    model = SimpleNamespace(save=lambda path, **kwargs: saved.update({path.name: kwargs["extra"]}))
    trainer = SimpleNamespace(is_main=True, device=torch.device("cpu"), uses_bf16=False, ema=None,
                              elapsed=lambda: {"cpu_seconds": 1.0, "wall_seconds": 2.0})
    callback = Snapshots(model, tmp_path, "short", 2, tmp_path / "vae.safetensors", {"num_clips": 4})
    (tmp_path / "short_000002.safetensors").write_bytes(b"scored")
    for step in (2, 3, 4):
        callback.on_step_end(trainer, step, {})
    assert (tmp_path / "short_000002.safetensors").read_bytes() == b"scored"
    assert list(saved) == ["short_000004.safetensors"]
    assert saved["short_000004.safetensors"] == {"num_clips": 4, "steps": 4, "cpu_seconds": 1.0, "wall_seconds": 2.0,
                                                 "device": cpu_name(), "bf16": False}
