# Two commands for a fresh machine (Python 3.11, no GPU, no model hub):
#   make demo   install everything, then `dvc repro` the demo build on the embedded photos
#   make test   install everything, then run the test suite
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# Offline and self-contained: no hub calls, caches inside the checkout, no telemetry.
export HF_HUB_OFFLINE := 1
export HF_HOME := $(CURDIR)/.hf
export DVC_NO_ANALYTICS := 1
export DVC_SITE_CACHE_DIR := $(CURDIR)/.dvc/site
export RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER := 0
export RAY_USAGE_STATS_ENABLED := 0
export PATH := $(CURDIR)/$(BIN):$(PATH)

.PHONY: install lock demo test clean

LOCK := requirements.lock
LOCK_VENV ?= /tmp/vicl-lock-venv

install: $(VENV)/.installed

# torch first and pinned: anything looser pulls a multi-GB CUDA build (see constraints.txt).
# Then every other package at its locked version, then vicl itself without resolving again.
$(VENV)/.installed: pyproject.toml constraints.txt $(LOCK)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -r $(LOCK) -c constraints.txt
	$(BIN)/pip install -q --no-deps -e ".[test]"
	$(BIN)/pip check
	$(BIN)/python -c "import annotators, torchvision.ops; print('vicl installed; torchvision CPU fallback:', __import__('core.torchvision_compat', fromlist=['x']).fallback_active())"
	touch $@

# Refresh the lock: resolve pyproject.toml (with the test extra) within constraints.txt in a
# throwaway venv, the same way as install did before the lock existed, and pin what it got.
# torch loses its local tag (+cpu) so a CUDA build of the same version satisfies the pin.
lock:
	rm -rf $(LOCK_VENV)
	$(PYTHON) -m venv $(LOCK_VENV)
	$(LOCK_VENV)/bin/pip install -q --upgrade pip
	$(LOCK_VENV)/bin/pip install -q torch==2.13.0
	$(LOCK_VENV)/bin/pip install -q -c constraints.txt -e ".[test]"
	$(LOCK_VENV)/bin/pip check
	{ sed -n '/^#/p' $(LOCK); $(LOCK_VENV)/bin/pip freeze --exclude-editable \
	  | grep -v -i -E '^(vicl|pip|setuptools|wheel)==' | sed -E 's/^(torch==[^+]+)\+.*/\1/'; } > $(LOCK).new
	mv $(LOCK).new $(LOCK)
	rm -rf $(LOCK_VENV)
	@echo "$(LOCK): $$(grep -c '==' $(LOCK)) pins"

demo: install
	$(BIN)/dvc repro
	$(BIN)/vicl status

test: install
	$(BIN)/python -m pytest -q

clean:
	rm -rf data .dvc/tmp .dvc/site .hf
