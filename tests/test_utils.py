"""The random-stream idiom (`utils.stream`), device-safe noise (`utils.randn`) and one result line per run."""
import ast
import re
import os
from pathlib import Path

import pytest
import torch

from lvdm_ref.utils import print_result, randn, stream

PACKAGE = Path(__file__).resolve().parents[1] / "lvdm_ref"


def test_streams_are_reproducible_and_distinct():
    assert torch.equal(torch.randn(5, generator=stream(0, 1, 2)), torch.randn(5, generator=stream(0, 1, 2)))
    draws = [torch.randn(5, generator=stream(*keys)) for keys in ((0, 0), (0, 1), (1, 0), (0, 0, 0))]
    assert all(not torch.equal(a, b) for i, a in enumerate(draws) for b in draws[i + 1:])


def test_randn_draws_on_the_generators_device_and_moves(monkeypatch):
    """CUDA refuses a CPU generator for a CUDA tensor; emulate that check on this CPU with the meta device."""
    original = torch.randn

    def strict_randn(*args, generator=None, device=None, **kwargs):
        if generator is not None and device is not None and torch.device(device) != generator.device:
            raise RuntimeError(f"Expected a '{torch.device(device).type}' device type for generator")
        return original(*args, generator=generator, device=device, **kwargs)

    monkeypatch.setattr(torch, "randn", strict_randn)
    with pytest.raises(RuntimeError, match="device type for generator"):  # what the samplers did before
        torch.randn((2, 3), generator=stream(0, 0), device="meta")
    on_meta = randn((2, 3), [stream(0, 0), stream(0, 1)], device="meta")
    assert on_meta.device.type == "meta" and on_meta.shape == (2, 3)
    assert randn((2, 3), stream(0, 0), device="meta").device.type == "meta"
    rows = randn((2, 3), [stream(0, 0), stream(0, 1)], device="cpu")  # row i is generator i's first draw
    assert torch.equal(rows[1], original((1, 3), generator=stream(0, 1))[0])


def test_randn_wants_one_generator_per_sample():
    with pytest.raises(ValueError, match="one per sample"):
        randn((3, 2), [stream(0, 0), stream(0, 1)])


def test_every_seeded_draw_in_the_package_goes_through_randn():
    """No `torch.randn(..., generator=...)` outside utils.randn: a CPU generator there breaks CUDA sampling."""
    offenders = []
    for path in PACKAGE.glob("*.py"):
        if path.name == "utils.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "randn"
                    and any(keyword.arg == "generator" for keyword in node.keywords)):
                offenders.append(f"{path.name}:{node.lineno}")
    assert not offenders, f"seeded torch.randn outside utils.randn: {offenders}"


def test_only_rank_0_prints_the_result(monkeypatch, capsys):
    """Under torchrun (RANK set for every process) a command prints one result line, not one per process."""
    for rank, printed in (("1", ""), ("0", '{"final_loss": 0.5}\n')):
        monkeypatch.setenv("RANK", rank)
        print_result({"final_loss": 0.5})
        assert capsys.readouterr().out == printed


def test_scratch_dir_removes_what_killed_processes_left():
    """A folder named after a process that no longer exists (a kernel nbval killed) goes at the next call;
    this process's own folder stays until it exits."""
    import subprocess
    import sys

    from lvdm_ref.utils import scratch_dir

    finished = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(finished.stdout)
    first = scratch_dir("lvdm_test_")
    left = first.parent / f"{dead_pid}_lvdm_test_left"
    left.mkdir()
    (left / "checkpoint.pt").write_bytes(b"x")
    second = scratch_dir("lvdm_test_")
    assert not left.exists() and first.exists() and second.exists() and first != second
    assert first.name.startswith(f"{os.getpid()}_lvdm_test_")


def test_check_quoted_reads_the_digits_the_text_shows():
    from lvdm_ref.utils import check_quoted

    for value, quoted in ((0.6526, "0.65"), (1656, "1,656"), (0.0623, "+0.062"), (12.44, "12.4x"), (4.2, "4")):
        check_quoted(value, quoted)
    for value, quoted in ((0.6561, "0.65"), (1.56, "1.5x"), (-0.062, "+0.062")):
        with pytest.raises(AssertionError, match=re.escape(f"the text says {quoted},")):
            check_quoted(value, quoted)
