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

.PHONY: install demo test clean

install: $(VENV)/.installed

# torch first and pinned: anything looser pulls a multi-GB CUDA build (see constraints.txt).
$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -c constraints.txt -e ".[test]"
	$(BIN)/python -c "import annotators, torchvision.ops; print('vicl installed; torchvision CPU fallback:', __import__('pipelines.torchvision_compat', fromlist=['x']).fallback_active())"
	touch $@

demo: install
	$(BIN)/dvc repro
	$(BIN)/vicl status

test: install
	$(BIN)/python -m pytest -q

clean:
	rm -rf data .dvc/tmp .dvc/site .hf
