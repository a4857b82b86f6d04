"""Notebooks 03, 05 and 11 as a learner meets them: in JupyterLab, in a real (headless) Chromium.

`make test-browser` runs this (it is skipped in `make test`: it needs Debian's `chromium` package, about five
minutes, and the `browser` extra, Playwright's Python package, which drives the system Chromium and never
downloads a browser). For each notebook, in quick mode (LVDM_QUICK=1): JupyterLab, started on a local port
on a copy of the notebook (running it must not write outputs into the repository), runs every cell; no cell
may end in an error, none may be left unexecuted, and no widget may fail to display. Then one control is
moved and the image it draws must change. Screenshots of the control before and after go to docs/browser/.
"""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = Path(os.environ.get("LVDM_CHROMIUM", "/usr/bin/chromium"))
SCREENSHOTS = ROOT / "docs" / "browser"
TOKEN = "lvdm-browser-test"
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]

pytestmark = pytest.mark.skipif(os.environ.get("LVDM_BROWSER") != "1",
                                reason="the browser test runs with `make test-browser` (LVDM_BROWSER=1)")

# notebook -> the control to move: (the slider's or text box's label, the value to enter), and a screenshot name
CONTROLS = {
    "03_diffusion": ("t", "900", "03_noise_level_t"),
    "05_short_lvdm": ("step", "5", "05_trajectory_step"),
    "11_text_to_video": ("caption", "1 and 8", "11_caption"),
}


def screenshot(element, path: Path) -> None:
    """An element's screenshot, saved with a 256-colour palette: tens of kB to commit, not a hundred."""
    from PIL import Image

    element.screenshot(path=str(path))
    Image.open(path).convert("RGB").quantize(colors=256).save(path, optimize=True)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """JupyterLab on a local port, serving copies of the notebooks; its settings, workspaces and runtime
    files in a temporary folder (every cell rendered, not only those on screen; no autosave)."""
    if not CHROMIUM.exists():
        pytest.fail(f"no Chromium at {CHROMIUM}: `apt-get install -y chromium chromium-driver` (Debian), "
                    "or set LVDM_CHROMIUM to its path")
    home = tmp_path_factory.mktemp("lab")
    served = home / "notebooks"
    served.mkdir()
    for name in CONTROLS:
        shutil.copy(ROOT / "notebooks" / f"{name}.ipynb", served)
    settings = home / "settings"
    for plugin, values in {"@jupyterlab/notebook-extension/tracker": {"windowingMode": "none"},
                           "@jupyterlab/docmanager-extension/plugin": {"autosave": False},
                           "@jupyterlab/apputils-extension/notification": {"fetchNews": "false",
                                                                           "checkForUpdates": False}}.items():
        path = settings / f"{plugin}.jupyterlab-settings"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(values))
    port = free_port()
    env = {**os.environ, "LVDM_QUICK": "1", "OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE",
           "JUPYTERLAB_SETTINGS_DIR": str(settings), "JUPYTERLAB_WORKSPACES_DIR": str(home / "workspaces"),
           "JUPYTER_RUNTIME_DIR": str(home / "runtime")}
    server = subprocess.Popen([sys.executable, "-m", "jupyter", "lab", "--no-browser", f"--port={port}",
                               "--ip=127.0.0.1", f"--ServerApp.token={TOKEN}", f"--ServerApp.root_dir={served}",
                               "--LabApp.expose_app_in_browser=True", *(["--allow-root"] if os.geteuid() == 0 else [])],
                              env=env, stdout=subprocess.DEVNULL, stderr=open(home / "lab.log", "w"))
    url = f"http://127.0.0.1:{port}"
    for _ in range(240):
        assert server.poll() is None, f"JupyterLab exited: {(home / 'lab.log').read_text()[-2000:]}"
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            time.sleep(0.5)
    yield url, home
    server.terminate()
    server.wait(timeout=30)


@pytest.fixture(scope="module")
def browser(lab):
    playwright_api = pytest.importorskip("playwright.sync_api", reason="pip install -e '.[browser]'")
    _, home = lab
    with playwright_api.sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(home / "chromium-profile"), executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_FLAGS,
            viewport={"width": 1280, "height": 900})
        yield context
        context.close()


PANEL = "[...window.jupyterapp.shell.widgets('main')].find(w => w.context && w.context.path === path)"
CELL_STATE = """(path) => {
  const panel = """ + PANEL + """;
  const cells = panel.content.model.cells;
  const report = {code: 0, executed: 0, errors: []};
  for (let i = 0; i < cells.length; i++) {
    const cell = cells.get(i);
    if (cell.type !== 'code') continue;
    report.code += 1;
    if (cell.executionCount !== null) report.executed += 1;
    for (let j = 0; j < cell.outputs.length; j++) {
      const output = cell.outputs.get(j);
      if (output.type === 'error') report.errors.push(`cell ${i}: ${output.toJSON().ename}: ${output.toJSON().evalue}`);
    }
  }
  report.busy = panel.sessionContext.session && panel.sessionContext.session.kernel
      ? panel.sessionContext.session.kernel.status : 'none';
  return report;
}"""


@pytest.mark.parametrize("name", list(CONTROLS))
def test_notebook_runs_in_jupyterlab_and_its_control_redraws(lab, browser, name):
    url, _ = lab
    label, value, shot = CONTROLS[name]
    page = browser.new_page()
    path = f"{name}.ipynb"
    # a workspace of its own, reset: JupyterLab does not reopen the notebooks of the tests before
    page.goto(f"{url}/lab/workspaces/{name.replace('_', '-')}/tree/{path}?reset&token={TOKEN}")
    page.wait_for_function(f"(path) => {{ const panel = {PANEL}; return panel && panel.sessionContext.isReady; }}",
                           arg=path, timeout=120_000)
    page.bring_to_front()
    page.evaluate(f"(path) => window.jupyterapp.shell.activateById(({PANEL}).id)", path)
    page.locator(".jp-Notebook .jp-Cell").first.click()  # the notebook has the focus: "run all" acts on it
    page.evaluate("() => window.jupyterapp.commands.execute('notebook:run-all-cells')")
    deadline = time.monotonic() + 600
    while True:
        state = page.evaluate(CELL_STATE, path)
        if state["errors"] or (state["executed"] == state["code"] and state["busy"] == "idle"):
            break
        assert time.monotonic() < deadline, f"{name}: not finished after 10 minutes: {state}"
        time.sleep(2)
    assert not state["errors"], f"{name}: cells ended in errors: {state['errors']}"
    assert state["executed"] == state["code"] > 0
    page.wait_for_timeout(2000)  # let the last widgets render
    assert page.locator("text=Error displaying widget").count() == 0

    control = page.locator(f".widget-inline-hbox:has(.widget-label:text-is('{label}'))").first
    box = control.locator("xpath=ancestor::div[contains(@class, 'widget-vbox')][1]")
    image = box.locator("img.widget-image").first
    control.scroll_into_view_if_needed()
    page.wait_for_timeout(500)
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    screenshot(box, SCREENSHOTS / f"{shot}_before.png")
    before = image.get_attribute("src")
    editable = control.locator("input[type='text'], .widget-readout").first
    editable.click()
    page.keyboard.press("Control+A")
    page.keyboard.type(value)
    page.keyboard.press("Enter")
    page.wait_for_function("([element, old]) => element.getAttribute('src') !== old",
                           arg=[image.element_handle(), before], timeout=60_000)
    page.wait_for_timeout(500)
    screenshot(box, SCREENSHOTS / f"{shot}_after.png")
    assert image.get_attribute("src") != before
    page.evaluate(f"(path) => ({PANEL}).sessionContext.shutdown()", path)  # free the kernel for the next notebook
    page.close()
