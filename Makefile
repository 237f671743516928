# Set-up and common jobs. Every target creates or reuses the virtual environment in .venv/.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.sam4em-installed

.PHONY: setup demo test test-fast lint bench clean-venv browser-deps

setup: $(STAMP)

# Order matters on a CPU machine: torch 2.13.0 (CPU wheel, on local disk) goes in first, so nothing later
# can pull a multi-GB CUDA build; sam2 goes in without build isolation, without its CUDA extension and
# without its torchvision requirement (its video path does not need torchvision).
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip setuptools wheel
	$(BIN)/python -m pip install --quiet torch==2.13.0
	SAM2_BUILD_CUDA=0 $(BIN)/python -m pip install --quiet --no-deps --no-build-isolation sam2==1.1.0
	$(BIN)/python -m pip install --quiet -e ".[sam2,test,dev,notebook-test,batch,dectris]"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/sam4em-live demo

test: $(STAMP) browser-deps
	QT_QPA_PLATFORM=offscreen $(BIN)/python -m pytest

test-fast: $(STAMP)
	QT_QPA_PLATFORM=offscreen $(BIN)/python -m pytest -m "not slow"

# ruff on everything; mypy on the package (configured in pyproject.toml: [tool.mypy], pydantic plugin).
lint: $(STAMP)
	$(BIN)/ruff check sam4em_live tests tools
	$(BIN)/mypy

# The quick benchmark set (a few minutes on 2 cores), with ratios against benchmarks/baselines/ (docs/benchmarks.md).
bench: $(STAMP)
	$(BIN)/python -m tools.bench run quick --against-baseline

# The notebook widget's browser test (tests/browser/) drives Debian's Chromium with Playwright: install the
# package when it is missing (as root, else through sudo). If it cannot be installed the test skips, saying so.
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
browser-deps:
	@command -v chromium >/dev/null 2>&1 || { $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq chromium; } \
		|| echo "chromium could not be installed: tests/browser/ will be skipped"

clean-venv:
	rm -rf $(VENV)
