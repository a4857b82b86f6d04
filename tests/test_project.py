"""Project hygiene: environment.yml matches pyproject.toml, notebooks are paired and stripped."""
import json
import re
import tomllib
from pathlib import Path

import jupytext
import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK_SOURCES = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.py"))


def _requirements(lines):
    """{'torch': 'torch>=2.1', ...}: name (normalised) -> the whole requirement string."""
    found = {}
    for line in lines:
        match = re.match(r"\s*([A-Za-z0-9_.\-]+)", line)
        if match:
            found[match.group(1).lower().replace("_", "-")] = line.strip().replace(" ", "")
    return found


def test_environment_yml_lists_the_pyproject_packages_with_the_same_bounds():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    expected = _requirements(project["dependencies"] + project["optional-dependencies"]["dev"])
    yml = (ROOT / "environment.yml").read_text()
    pip_section = yml.split("- pip:", 1)[1]
    listed = _requirements(re.findall(r"^\s+- (.+)$", pip_section, flags=re.M))
    assert listed == expected


def test_every_notebook_source_has_its_pair():
    assert NOTEBOOK_SOURCES, "no notebooks found"
    for source in NOTEBOOK_SOURCES:
        assert source.with_suffix(".ipynb").exists(), f"run: jupytext --to ipynb {source.relative_to(ROOT)}"


@pytest.mark.parametrize("source", NOTEBOOK_SOURCES, ids=lambda p: p.stem)
def test_notebook_pair_matches_source_and_is_stripped(source):
    paired = json.loads(source.with_suffix(".ipynb").read_text())
    code_cells = [c for c in paired["cells"] if c["cell_type"] == "code"]
    assert all(not c.get("outputs") and c.get("execution_count") is None for c in code_cells), \
        f"{source.stem}.ipynb keeps outputs: commit it stripped"

    def text(cell):
        return "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]

    from_source = [(c.cell_type, text(c)) for c in jupytext.read(source).cells]
    from_pair = [(c["cell_type"], text(c)) for c in paired["cells"]]
    assert from_source == from_pair, f"{source.stem}: run jupytext --sync {source.relative_to(ROOT)}"


@pytest.mark.parametrize("source", NOTEBOOK_SOURCES, ids=lambda p: p.stem)
def test_notebook_opens_with_colab_badge_and_guarded_install(source):
    cells = jupytext.read(source).cells
    assert cells[0].cell_type == "markdown" and "colab-badge.svg" in cells[0].source
    assert f"notebooks/{source.stem}.ipynb" in cells[0].source
    install = cells[1].source
    assert cells[1].cell_type == "code" and '"google.colab" in sys.modules' in install and "pip" in install


@pytest.mark.parametrize("source", NOTEBOOK_SOURCES, ids=lambda p: p.stem)
def test_notebook_says_first_what_running_it_costs(source):
    """A learner sees the cost at full size (the default), on a Colab GPU and in quick mode before running."""
    first = " ".join(jupytext.read(source).cells[0].source.replace("\n>", "\n").split())  # one line, no quote marks
    assert "**Time to run.**" in first and "Full size (the default)" in first and "2-core CPU" in first
    assert "Colab GPU" in first and "Quick mode (`LVDM_QUICK=1`)" in first


def test_lvdm_recipe_is_lvdms_and_leaves_the_preset_alone():
    from lvdm_ref.config import get_preset, with_recipe

    preset = get_preset("mmnist")
    lvdm = with_recipe(preset, "lvdm")
    assert (lvdm.train.lr, lvdm.train.warmup_steps, lvdm.train.ema_decay) == (6e-5, 0, 0.9999)
    assert lvdm.hierarchy_train.lr == 8e-5 and (lvdm.diffusion.loss, lvdm.diffusion.parameterization) == ("l1", "eps")
    assert preset == get_preset("mmnist") and with_recipe(preset, "preset") is preset  # nothing mutated
    with pytest.raises(ValueError, match="recipe must be one of"):
        with_recipe(preset, "fast")


def test_every_shipped_checkpoint_has_a_model_card_entry():
    card = (ROOT / "data" / "checkpoints" / "README.md").read_text()
    shipped = sorted(path.name for path in (ROOT / "data" / "checkpoints").glob("*.safetensors"))
    assert shipped and [name for name in shipped if f"`{name}`" not in card] == []
