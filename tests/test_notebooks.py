"""Notebooks run where Colab runs them: from a folder that is not the repository."""
import os
import shutil
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
