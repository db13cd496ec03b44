# The two set-up commands: `make lab` and `make test`.
PYTHON ?= python3.11
VENV   ?= .venv
BIN    := $(VENV)/bin
LAB    ?= lab_data
PORT   ?= 8501
# Where the app listens. Anything but loopback needs SAE_LAB_TOKEN (see README, Security).
ADDRESS ?= 127.0.0.1
SERVE   = $(BIN)/python -m lab_app.serve --lab $(LAB) --port $(PORT) --address $(ADDRESS)

.PHONY: lab test install dev-install chromium freeze clean-lab

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# torch first, with pip, pinned to the CPU build on disk, so no later requirement can pull CUDA wheels.
# The rest with uv (pinned here): the same exact pins in ~7 s instead of pip's ~110 s on a fresh machine
# (measured side by side, no cache), a third of the CI budget's set-up. uv keeps the installed torch
# (2.13.0+cpu satisfies ==2.13.0); where uv cannot reach an index, pip installs the same file.
UV_VERSION = 0.13.9
UV = $(BIN)/uv pip install -q --python $(BIN)/python
$(VENV)/.runtime-installed: requirements.txt | $(BIN)/python
	$(BIN)/pip install -q torch==2.13.0 uv==$(UV_VERSION)
	$(UV) -r requirements.txt || $(BIN)/pip install -q -r requirements.txt
	touch $@

$(VENV)/.dev-installed: requirements-dev.txt $(VENV)/.runtime-installed
	$(UV) -r requirements-dev.txt || $(BIN)/pip install -q -r requirements-dev.txt
	touch $@

# The lab's own packages (core, db, engine, findings, lab_app), installed in place from this folder:
# `python -m engine`, the app and its worker processes import them from anywhere, no sys.path edits.
$(VENV)/.lab-installed: pyproject.toml $(VENV)/.runtime-installed
	$(BIN)/pip install -q --no-deps --no-build-isolation -e .
	touch $@

install: $(VENV)/.lab-installed
dev-install: $(VENV)/.dev-installed $(VENV)/.lab-installed

# Debian's chromium for the real-browser app test (the test skips, saying why, where it is missing).
chromium:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    (apt-get install -y -q chromium >/dev/null 2>&1 || (apt-get update -q >/dev/null && apt-get install -y -q chromium >/dev/null)) \
	      || echo "chromium could not be installed: the browser test will skip"; \
	  else echo "no root/apt-get: the browser test will skip"; fi; }

# Fill an empty lab with the default experiment, then start the app (on 127.0.0.1 unless ADDRESS=...).
# The address and token are checked first, so a refused exposure does not wait for the experiment.
lab: install
	@$(SERVE) --check
	HF_HUB_OFFLINE=$${HF_HUB_OFFLINE:-1} $(BIN)/python -m engine --lab $(LAB) init
	$(SERVE)

test: dev-install chromium
	$(BIN)/ruff check .
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -n 2 --dist loadfile --durations=25

# Regenerate the exact pins from requirements*.in in a throwaway venv.
freeze:
	rm -rf /tmp/sae-lab-freeze && $(PYTHON) -m venv /tmp/sae-lab-freeze
	/tmp/sae-lab-freeze/bin/pip install -q torch==2.13.0 && /tmp/sae-lab-freeze/bin/pip install -q -r requirements.in
	/tmp/sae-lab-freeze/bin/pip freeze | sed 's/+cpu//' > requirements.txt

clean-lab:
	rm -rf $(LAB)
