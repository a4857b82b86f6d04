# Two commands: `make demo` and `make test`. Each creates .venv if it is missing.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
# A CPU build of torch; users bring their own torch (the package asks only for a range).
TORCH_PIN ?= torch==2.13.0
# Idle OpenMP threads sleep instead of spinning: on a small shared machine spinning costs a lot.
export OMP_WAIT_POLICY ?= PASSIVE

.PHONY: demo test unit fast notebooks test-browser venv clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH_PIN)"
	$(PY) -m pip install -q -e ".[dev]"
	$(PY) -m lvdm_ref setup-weights || echo "I3D weights not installed: FVD tests will say why"
	$(PY) -m lvdm_ref data sample-videos || echo "sample videos not installed: real-video tests will say why"
	touch $@

venv: $(VENV)/.installed

demo: venv
	$(PY) -m lvdm_ref demo

unit: venv
	$(PY) -m pytest tests -q

fast: venv  # the unit tests without the heavy end-to-end ones (marked slow): a couple of minutes
	$(PY) -m pytest tests -q -m "not slow"

notebooks: venv
	LVDM_QUICK=1 $(PY) -m pytest --nbval notebooks/ -q

# Both parts run whatever the first gives; the target fails at the end if either failed. Two pytest
# workers with one thread each (a test file, or a notebook's cells, stay together in one worker).
PARALLEL ?= -n 2 --dist loadfile
test: venv
	@status=0; \
	OMP_NUM_THREADS=1 $(PY) -m pytest tests -q --durations=15 $(PARALLEL) || status=1; \
	OMP_NUM_THREADS=1 LVDM_QUICK=1 $(PY) -m pytest --nbval notebooks/ -q $(PARALLEL) || status=1; \
	exit $$status

# Notebooks 03, 05 and 11 in JupyterLab in headless Chromium (Debian's `chromium` package; Playwright's Python
# package drives it and downloads no browser): each runs in quick mode with no error, one control is moved and
# its image must change; screenshots go to docs/browser/. Not part of `make test` (README: how long it takes).
test-browser: venv
	$(PY) -m pip install -q -e ".[browser]"
	LVDM_BROWSER=1 OMP_NUM_THREADS=1 $(PY) -m pytest tests/browser -q -p no:cacheprovider

clean:
	rm -rf $(VENV) outputs
