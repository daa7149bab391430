# `make book`: set up a virtual environment and build the book (the main job).
# `make test`: set up the same environment and run the package tests, every notebook with nbval, and the check of
# the rendered book (needs Debian's `chromium`; .ci/run installs it). `make test-fast`: the package's fast tests only.
PYTHON ?= python3
VENV ?= .venv
# PyTorch, the version the stored outputs were made with. Where pip finds it without an index (a wheel in pip's
# find-links, as on the team's CPU machines), that one; else from PyTorch's CPU index on a machine without an NVIDIA
# GPU (PyPI's default Linux build is the CUDA one, with about 16 NVIDIA packages), from PyPI with one.
# Override either: make test TORCH=torch, make test TORCH_INDEX= (pip's own configuration).
TORCH ?= torch==2.13.0
TORCH_INDEX ?= $(if $(shell nvidia-smi -L 2>/dev/null),,https://download.pytorch.org/whl/cpu)
BIN := $(VENV)/bin
# The ImageNet-C corruptions (segformer_edu.corruptions; pyproject.toml's `robustness` extra, the same pin), installed
# with --no-deps: the package declares opencv-python, whose cv2 needs the system's libGL, so requirements.txt lists
# its dependencies with OpenCV's headless build instead
CORRUPTIONS := imagecorruptions-imaug==1.1.5
NPM ?= npm
# MathJax, bundled into the book so that math typesets offline (package.json pins it; the lock file fixes it)
MATHJAX := node_modules/mathjax/es5/tex-mml-chtml.js

.PHONY: venv mathjax book test test-fast clean

venv: $(VENV)/.installed

$(VENV)/.installed: requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	if $(BIN)/pip install -q --dry-run --no-deps --no-index "$(TORCH)" >/dev/null 2>&1; then \
	    $(BIN)/pip install -q "$(TORCH)"; \
	else \
	    $(BIN)/pip install -q "$(TORCH)" $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX)); \
	fi
	$(BIN)/pip install -q -r requirements.txt
	$(BIN)/pip install -q --no-deps $(CORRUPTIONS)
	$(BIN)/pip install -q --no-deps -e .
	touch $@

mathjax: $(MATHJAX)

$(MATHJAX): package.json package-lock.json
	$(NPM) ci --no-audit --no-fund
	touch $@

book: venv mathjax
	$(BIN)/jupyter-book build . -W --keep-going

# tests/test_rendered_book.py builds the book (so MathJax must be there) and reads it in headless Chromium
test: venv mathjax
	$(BIN)/python -m pytest

# The package's tests without the notebooks, the rendered book and the slow ones (trainings, the real CamVid,
# subprocesses): a few minutes. Markers (pyproject.toml) choose other tiers, e.g. -m "slow and not cli".
test-fast: venv
	$(BIN)/python -m pytest tests -m "not slow and not book" -o addopts="-p no:cacheprovider"

clean:
	rm -rf _build
