"""A trainer that knows nothing about the model (in the spirit of minGPT's trainer).

You give it a module, a loss function and data; it gives you AdamW with warm-up and gradient
clipping, an EMA of the weights (LVDM: decay 0.9999), bf16 autocast (on GPU, and on CPUs with native
bfloat16: `cpu_has_bf16`), tqdm progress, a JSON-lines log and a loss plot, callbacks, atomic
checkpoints that resume exactly, a guard
against NaN losses, DistributedDataParallel under `torchrun`, and optionally `torch.compile`.

Exact resume: the batch at step k is a pure function of (seed, k), and the checkpoint holds the
model, EMA, optimiser, step and torch RNG state. So N steps + stop + resume + N steps gives the
same weights as 2N steps in one run (tests/test_train.py checks it on CPU).

Data can be
- a map-style `Dataset`: the trainer draws a seeded permutation per epoch and slices it, or
- a callable `batch_fn(step, rank, world_size) -> batch`, e.g. freshly generated clips.
Under DDP each rank takes its slice of the same global batch, so 2 processes with batch B/2
each match 1 process with batch B.

compile=True runs the loss through `torch.compile(model)` (inductor); the first step then
compiles (minutes on a CPU) and later steps are faster (docs/studies/speed.md). Only the
loss goes through the compiled wrapper: checkpoints and the EMA hold the plain module's state,
so a compiled run writes the same keys as an eager one, and either can resume the other.
"""
from __future__ import annotations

import copy
import io
import json
import math
import os
import time
from pathlib import Path
from typing import Any, Callable, Iterable

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import Dataset, default_collate
from tqdm.auto import tqdm

from lvdm_ref.checkpoint import atomic_write, dumps
from lvdm_ref.config import TrainConfig, to_dict
from lvdm_ref.utils import get_device

STATE_FILE = "train_state.pt"
LOG_FILE = "log.jsonl"
LR_SCHEDULES = ("constant", "cosine")

LossFn = Callable[[nn.Module, Any, int], "torch.Tensor | tuple[torch.Tensor, dict[str, float]]"]


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


class Callback:
    """Override what you need. `logs` holds the step's loss and the loss function's extras."""

    def on_step_end(self, trainer: "Trainer", step: int, logs: dict[str, float]) -> None:
        pass

    def on_fit_end(self, trainer: "Trainer", summary: dict) -> None:
        pass


class LossHistory(Callback):
    """Keeps every step's loss in memory (e.g. for a plot in a notebook)."""

    def __init__(self):
        self.steps: list[int] = []
        self.losses: list[float] = []

    def on_step_end(self, trainer: "Trainer", step: int, logs: dict[str, float]) -> None:
        self.steps.append(step)
        self.losses.append(logs["loss"])


class EMA:
    """Exponential moving average of parameters and buffers, with the usual warm-up:
    decay_k = min(decay, (1 + k) / (10 + k)), so early averages are not dominated by the init."""

    def __init__(self, model: nn.Module, decay: float):
        self.decay = decay
        self.num_updates = 0
        self.model = copy.deepcopy(model).eval().requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        self.num_updates += 1
        decay = min(self.decay, (1 + self.num_updates) / (10 + self.num_updates))
        for ema_tensor, tensor in zip(self.model.state_dict().values(), model.state_dict().values()):
            if ema_tensor.dtype.is_floating_point:
                ema_tensor.lerp_(tensor, 1 - decay)
            else:
                ema_tensor.copy_(tensor)


class Trainer:
    def __init__(self, model: nn.Module, loss_fn: LossFn, train_data: Dataset | Callable, config: TrainConfig,
                 out_dir: str | os.PathLike, callbacks: Iterable[Callback] = (), device: str = "auto",
                 metadata: dict | None = None, resume: bool = False, progress: bool = True, compile: bool = False):
        self.config = config
        self.out_dir = Path(out_dir)
        self.loss_fn = loss_fn
        self.train_data = train_data
        self.callbacks = list(callbacks)
        self.metadata = dict(metadata or {})
        self.progress = progress
        if config.lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"lr_schedule must be one of {LR_SCHEDULES}, got {config.lr_schedule!r}")
        self.rank, self.world_size = _init_distributed()
        self.device = get_device(device) if self.world_size == 1 or device != "auto" else _ddp_device(self.rank)
        if config.batch_size % self.world_size:
            raise ValueError(f"batch_size {config.batch_size} must be divisible by the number of processes "
                             f"{self.world_size}: each process takes an equal slice of the global batch")

        torch.manual_seed(config.seed)
        self.model = model.to(self.device)
        self.ema = EMA(self.model, config.ema_decay) if config.ema_decay > 0 else None
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=config.lr,
                                           weight_decay=config.weight_decay)
        self.step = 0
        # time spent on the steps that count, summed over resumed calls (what a run's model card reports);
        # a state written before this was recorded is timed from its step ("from_step")
        self.clock = {"wall_seconds": 0.0, "cpu_seconds": 0.0, "from_step": 0}
        self._mark = (time.perf_counter(), time.process_time())
        self.history: list[dict] = []  # the logged steps (every log_every)
        self.last_logs: dict | None = None
        if resume:
            self.load_state()
        elif self.is_main and (self.out_dir / STATE_FILE).exists():
            raise FileExistsError(f"{self.out_dir / STATE_FILE} exists: pass resume=True (--resume) to continue "
                                  f"that run, or choose another output folder")
        self.wrapped = (nn.parallel.DistributedDataParallel(self.model) if self.world_size > 1 else self.model)
        self.compile = compile
        if compile:  # the loss runs through the compiled wrapper; self.model (same parameters) is what is saved
            self.wrapped = torch.compile(self.wrapped)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def ema_model(self) -> nn.Module:
        return self.ema.model if self.ema is not None else self.model

    # ------------------------------------------------------------------ data
    def batch(self, step: int) -> Any:
        """This process's share of the global batch for `step` (a pure function of seed and step)."""
        if callable(self.train_data) and not isinstance(self.train_data, Dataset):
            return self.train_data(step, self.rank, self.world_size)
        size, num = self.config.batch_size, len(self.train_data)
        if num < size:
            raise ValueError(f"the dataset has {num} items, fewer than batch_size {size}")
        per_epoch = num // size  # drop the last partial batch
        epoch, position = divmod(step, per_epoch)
        generator = torch.Generator().manual_seed(self.config.seed * 1_000_003 + epoch)
        order = torch.randperm(num, generator=generator)
        indices = order[position * size:(position + 1) * size]  # the global batch
        share = size // self.world_size
        indices = indices[self.rank * share:(self.rank + 1) * share]
        return default_collate([self.train_data[int(i)] for i in indices])

    def learning_rate(self, step: int) -> float:
        """Linear warm-up to `lr`, then constant or a cosine decay to `min_lr` at `steps`."""
        cfg = self.config
        if step < cfg.warmup_steps:
            return cfg.lr * (step + 1) / cfg.warmup_steps
        if cfg.lr_schedule == "constant":
            return cfg.lr
        progress = min(1.0, (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps))
        return cfg.min_lr + (cfg.lr - cfg.min_lr) * 0.5 * (1 + math.cos(math.pi * progress))

    # ------------------------------------------------------------------ loop
    @property
    def uses_bf16(self) -> bool:
        """bfloat16 autocast: on CUDA unless `config.bf16` is off; on a CPU as `config.bf16_cpu` says, where
        None (the default) means wherever the CPU computes bfloat16 natively (`cpu_has_bf16`)."""
        if self.device.type == "cuda":
            return self.config.bf16
        if self.device.type != "cpu":
            return False
        return cpu_has_bf16() if self.config.bf16_cpu is None else self.config.bf16_cpu

    def fit(self, steps: int | None = None) -> dict:
        """Train until `steps` (default config.steps) total steps; returns a summary dict."""
        total = steps if steps is not None else self.config.steps
        start_time, start_step = time.perf_counter(), self.step
        self._mark = (time.perf_counter(), time.process_time())
        bar = tqdm(total=total, initial=self.step, desc="train", disable=not (self.progress and self.is_main),
                   dynamic_ncols=True)
        autocast = torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.uses_bf16)
        self.model.train()
        try:
            while self.step < total:
                batch = _to_device(self.batch(self.step), self.device)
                for group in self.optimizer.param_groups:
                    group["lr"] = self.learning_rate(self.step)
                with autocast:
                    output = self._loss(batch)
                loss, extras = output if isinstance(output, tuple) else (output, {})
                if not torch.isfinite(loss.detach()):
                    raise TrainingDiverged(
                        f"loss is {loss.item()} at step {self.step}. The last good checkpoint is kept in "
                        f"{self.out_dir / STATE_FILE}. Try a lower learning rate (now {self.config.lr}), "
                        f"gradient clipping (grad_clip, now {self.config.grad_clip}), more warm-up steps, "
                        f"or check the data for NaNs; resume with --resume.")
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if self.config.grad_clip:
                    grad_norm = nn.utils.clip_grad_norm_(self.model.parameters(), self.config.grad_clip)
                    extras = {**extras, "grad_norm": float(grad_norm)}
                self.optimizer.step()
                if self.ema is not None:
                    self.ema.update(self.model)
                self.step += 1

                logs = {"step": self.step, "loss": float(loss.detach()), "lr": self.learning_rate(self.step - 1),
                        **{k: float(v) for k, v in extras.items()}}
                self._log(logs)
                bar.update(1)
                bar.set_postfix(loss=f"{logs['loss']:.4f}")
                for callback in self.callbacks:
                    callback.on_step_end(self, self.step, logs)
                if self.step % self.config.ckpt_every == 0 or self.step == total:
                    self.save_state()
        except KeyboardInterrupt:
            self.save_state()  # nothing lost: resume with resume=True
            raise
        finally:
            bar.close()
        seconds = time.perf_counter() - start_time
        self._tick()
        # the last step's loss; a resumed call with nothing left to train reports the last logged step's
        last = self.last_logs or (self.history[-1] if self.history else None)
        summary = {"steps": self.step, "seconds": round(seconds, 2),
                   "total_wall_seconds": round(self.clock["wall_seconds"], 3),
                   "total_cpu_seconds": round(self.clock["cpu_seconds"], 3), "timed_from_step": self.clock["from_step"],
                   "steps_per_second": round((self.step - start_step) / max(seconds, 1e-9), 3),
                   "final_loss": self._mean_over_processes(last["loss"] if last else None),
                   "compiled": self.compile, "out_dir": str(self.out_dir)}
        if self.is_main:
            self.plot_loss()
        for callback in self.callbacks:
            callback.on_fit_end(self, summary)
        return summary

    def _mean_over_processes(self, value: float | None) -> float | None:
        """`value` averaged over the DDP processes (each has its own slice of the batch, so the mean of
        their losses is the loss of the global batch); `value` itself in one process."""
        if value is None or self.world_size == 1:
            return value
        total = torch.tensor(value, dtype=torch.float64, device=self.device)
        dist.all_reduce(total)  # a sum: gloo has no ReduceOp.AVG
        return total.item() / self.world_size

    def _loss(self, batch: Any) -> Any:
        if not self.compile:
            return self.loss_fn(self.wrapped, batch, self.step)
        try:
            return self.loss_fn(self.wrapped, batch, self.step)
        except torch._dynamo.exc.BackendCompilerFailed as error:  # e.g. no C++ compiler for inductor on a CPU
            raise RuntimeError(f"torch.compile could not compile the model ({type(error).__name__}); train "
                               f"without it: Trainer(compile=False), or --no-compile on the command line") from error

    def _log(self, logs: dict) -> None:
        self.last_logs = logs
        if self.step % self.config.log_every == 0 or self.step == 1:
            self.history.append(logs)
        if self.is_main and self.history and self.history[-1] is logs:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            with open(self.out_dir / LOG_FILE, "a") as handle:
                handle.write(dumps(logs) + "\n")  # strict: an infinite grad_norm is null

    # ------------------------------------------------------------------ checkpoints
    def _tick(self) -> None:
        """Add the time since the last tick to the run's clock."""
        wall, cpu = time.perf_counter(), time.process_time()
        self.clock["wall_seconds"] += wall - self._mark[0]
        self.clock["cpu_seconds"] += cpu - self._mark[1]
        self._mark = (wall, cpu)

    def elapsed(self) -> dict:
        """The run's wall and CPU seconds so far, summed over resumed calls."""
        self._tick()
        return {"cpu_seconds": round(self.clock["cpu_seconds"], 1), "wall_seconds": round(self.clock["wall_seconds"], 1)}

    def state_dict(self) -> dict:
        self._tick()
        state = {"step": self.step, "clock": json.dumps(self.clock), "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                 "torch_rng": torch.get_rng_state(), "config": json.dumps(to_dict(self.config)),
                 "metadata": json.dumps(self.metadata)}
        if self.ema is not None:
            state["ema"] = self.ema.model.state_dict()
            state["ema_num_updates"] = self.ema.num_updates
        if torch.cuda.is_available():
            state["cuda_rng"] = torch.cuda.get_rng_state_all()
        return state

    def save_state(self) -> Path | None:
        """Write out_dir/train_state.pt atomically (temp file + rename); only rank 0 writes."""
        if not self.is_main:
            return None
        buffer = io.BytesIO()
        torch.save(self.state_dict(), buffer)
        return atomic_write(self.out_dir / STATE_FILE, lambda tmp: Path(tmp).write_bytes(buffer.getvalue()))

    def load_state(self) -> None:
        path = self.out_dir / STATE_FILE
        if not path.exists():
            raise FileNotFoundError(f"cannot resume: no {STATE_FILE} in {self.out_dir}")
        state = torch.load(path, map_location=self.device, weights_only=True)
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.ema is not None:
            if "ema" not in state:
                raise ValueError(f"{path} has no EMA weights but ema_decay={self.config.ema_decay}")
            self.ema.model.load_state_dict(state["ema"])
            self.ema.num_updates = int(state["ema_num_updates"])
        torch.set_rng_state(state["torch_rng"].cpu())
        if "cuda_rng" in state and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda_rng"])
        self.step = int(state["step"])
        self.clock = json.loads(state["clock"]) if "clock" in state else {"wall_seconds": 0.0, "cpu_seconds": 0.0,
                                                                           "from_step": self.step}
        if (self.out_dir / LOG_FILE).exists():
            logged = [json.loads(line) for line in open(self.out_dir / LOG_FILE)]
            self.history = [entry for entry in logged if entry["step"] <= self.step]

    def plot_loss(self) -> Path | None:
        if not self.history:
            return None
        from matplotlib.figure import Figure

        steps = [h["step"] for h in self.history]
        figure = Figure(figsize=(5, 3))
        axes = figure.add_subplot()
        axes.plot(steps, [h["loss"] for h in self.history], lw=0.8)
        axes.set(xlabel="step", ylabel="loss", yscale="log", title=self.out_dir.name)
        figure.tight_layout()
        path = self.out_dir / "loss.png"
        self.out_dir.mkdir(parents=True, exist_ok=True)
        figure.savefig(path, dpi=100)
        return path


def cpu_has_bf16() -> bool:
    """Whether this CPU has AVX512-BF16 or AMX, the instructions that make bfloat16 autocast pay (a compiled
    training step of the mmnist UNet: 1.55x on such a CPU, benchmarks/results/unet_bf16_speed.json); asked
    of torch's own CPU capability checks, which are private, so a torch without them reads as no."""
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(getattr(torch.cpu, name, lambda: False)() for name in checks)


def cpu_name() -> str:
    """The CPU's model name (Linux: /proc/cpuinfo; elsewhere `platform.processor()`), as snapshots record it: a
    run's CPU seconds per step are only comparable on one kind of machine."""
    import platform

    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _to_device(batch: Any, device: torch.device) -> Any:
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, dict):
        return {k: _to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(_to_device(v, device) for v in batch)
    return batch


def _init_distributed() -> tuple[int, int]:
    """(rank, world_size); joins the process group when launched by torchrun."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size == 1:
        return 0, 1
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if torch.cuda.is_available() else "gloo")
    return dist.get_rank(), world_size


def _ddp_device(rank: int) -> torch.device:
    if torch.cuda.is_available():
        local_rank = int(os.environ.get("LOCAL_RANK", rank))
        torch.cuda.set_device(local_rank)
        return torch.device("cuda", local_rank)
    return torch.device("cpu")
