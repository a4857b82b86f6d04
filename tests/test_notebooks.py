"""Notebooks as a learner meets them: run from a folder that is not the repository (as on Colab), a first cell
that imports lvdm_ref before torch or says what to do, and time boxes that quote the measured timings."""
import json
import os
import shutil
import sys
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from lvdm_ref.checkpoint import SHIPPED_DIR

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_a_notebook_run_from_another_folder_finds_the_shipped_weights(tmp_path, monkeypatch):
    """Colab clones the repository into a sub-folder and runs the notebook from the folder above it.

    Notebook 03 (the cheapest that loads shipped weights), up to the cell that loads them, is copied into
    an empty folder and run there in quick mode, with the checkout on the path as the Colab cell puts it; it must report
    the shipped autoencoder, found from the package, not fall back to having none.
    """
    content = tmp_path / "content"  # Colab's working directory; the repository is not in it
    content.mkdir()
    path = Path(shutil.copy(ROOT / "notebooks" / "03_diffusion.ipynb", content))
    notebook = nbformat.read(path, as_version=4)
    loads = next(i for i, cell in enumerate(notebook.cells) if "weights: the shipped file" in cell.source)
    notebook.cells = notebook.cells[:loads + 1]  # up to the cell that finds the weights: the rest is nbval's job
    notebook.cells.append(nbformat.v4.new_code_cell("import os\nprint('working directory:', os.getcwd())"))
    monkeypatch.setenv("LVDM_QUICK", "1")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))

    NotebookClient(notebook, timeout=120, kernel_name="python3",
                   resources={"metadata": {"path": str(content)}}).execute()

    printed = "".join(output.get("text", "") for cell in notebook.cells if cell.cell_type == "code"
                      for output in cell.outputs if output.get("output_type") == "stream")
    assert f"working directory: {content}" in printed
    assert f"weights: the shipped file {SHIPPED_DIR / 'mmnist_vae.safetensors'}" in printed
    assert "weights: none" not in printed


# ----------------------------------------------------------------------------- time boxes
def measured(entry: dict) -> str:
    """What a time box says for one entry of notebooks/timings.json (benchmarks/notebook_timings.py)."""
    if entry.get("not_re_measured"):
        return f"not re-measured; last measured {entry['last_measured']}"
    wall = entry["wall_seconds"]
    text = (f"{wall:.0f} s" if wall < 120 else f"{wall / 60:.1f} minutes") + \
        f" of wall time, {entry['cpu_seconds']:.0f} CPU-seconds"
    if entry["peak_rss_mib"] > 2048:  # worth a warning on a small laptop
        text += f", peak memory {entry['peak_rss_mib'] / 1024:.1f} GiB"
    return text


def time_box(path: Path) -> str:
    """The '> **Time to run**' block of a notebook's first cell, its lines joined and spaces collapsed."""
    lines = path.read_text().split("\n")
    start = next(i for i, line in enumerate(lines) if line.startswith("# > **Time to run"))
    box = []
    for line in lines[start:]:
        if not line.startswith("# >"):
            break
        box.append(line[3:].strip())
    return " ".join(" ".join(box).split())


def test_every_time_box_quotes_the_committed_timings():
    """Each notebook's time box states, in quick mode and at full size, what notebooks/timings.json records."""
    timings = json.loads((ROOT / "notebooks" / "timings.json").read_text())["notebooks"]
    paths = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.py"))
    assert {path.stem for path in paths} == set(timings)
    for path in paths:
        box = time_box(path)
        for mode, label in (("quick", "Quick mode (`LVDM_QUICK=1`)"), ("full", "Full size (the default)")):
            expected = f"{label}: {measured(timings[path.stem][mode])}"
            assert expected in box, f"{path.name}: the time box should say {expected!r}; it says {box!r}"


# ----------------------------------------------------------------------------- the first cell
def first_code_cell(path: Path) -> str:
    cells = nbformat.read(path, as_version=4).cells
    return next(cell.source for cell in cells if cell.cell_type == "code")


@pytest.mark.parametrize("path", sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb")), ids=lambda path: path.stem)
def test_the_first_cell_imports_lvdm_ref_or_says_what_to_do(path, monkeypatch):
    """lvdm_ref sets OMP_WAIT_POLICY=PASSIVE when imported, so it must come before torch; a kernel without it
    gets the fix (start JupyterLab from the repository's environment, or install it), not a bare
    `No module named 'lvdm_ref'`."""
    source = first_code_cell(path)
    assert "import lvdm_ref" in source and "import torch" not in source
    assert "LVDM_REPO" in source and "lvdm-ref.zip" in source  # Colab: the user's own copy, not a fixed URL
    monkeypatch.setitem(sys.modules, "lvdm_ref", None)  # as in a kernel where it is not installed
    with pytest.raises(ModuleNotFoundError, match="jupyter lab"):
        exec(compile(source, path.name, "exec"), {})
