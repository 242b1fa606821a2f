# Two commands matter:
#   make book   set up .venv (from requirements.txt) and build the book, every chapter executed
#   make test   set up .venv (plus test tools) and run every check: unit and property tests with and
#               without numba's JIT, doctests, the full book build (warnings and cell errors are
#               failures), the headless-Chromium test of the built pages, and two chapters run
#               live in JupyterLab with their figures' controls moved
# and a few helpers: make bench, make book-nosolutions, make clean.

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
BOOK_STAMP := $(VENV)/.book-installed
TEST_STAMP := $(VENV)/.test-installed
HTML   := _build/html
JB_FLAGS := --all --warningiserror --keep-going

.PHONY: help setup setup-test chromium book book-nosolutions build-book test unit doctest browser live bench clean

help:
	@echo "make book   - set up .venv and build the book into $(HTML) (every chapter executed)"
	@echo "make test   - set up and run every check (unit, no-JIT, doctests, book build, browser, live JupyterLab)"
	@echo "make live   - open two chapters live in JupyterLab and move every figure control (QREF_LIVE_CHAPTERS=all: every chapter)"
	@echo "make bench  - run benchmarks/ and print the table of measured ratios"
	@echo "make book-nosolutions - the student edition: exercises without their solutions"

# ---------------------------------------------------------------- set-up
$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(BOOK_STAMP): requirements.txt pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -r requirements.txt
	touch $@

# torch is an optional test dependency: tests/test_uniform.py compares fake_quantize with
# torch.fake_quantize_* bit for bit. It is installed only from a CPU wheel already on this
# machine's disk (a plain `pip install torch` would download a multi-GB CUDA build); without
# it those comparisons are skipped with a reason.
TORCH_WHEEL := $(firstword $(wildcard /opt/wheels/torch-2.13.0+cpu-cp311-*.whl))

$(TEST_STAMP): $(BOOK_STAMP)
	$(BIN)/pip install --quiet -e '.[test]'
	@if [ -n "$(TORCH_WHEEL)" ]; then $(BIN)/pip install --quiet "$(TORCH_WHEEL)"; \
	else echo "note: no local torch CPU wheel; the torch comparison tests will be skipped"; fi
	touch $@

setup: $(BOOK_STAMP)
setup-test: $(TEST_STAMP) chromium

# Debian's chromium drives the browser test (Playwright's own browser download does not work
# here). Installed when missing and we are root; otherwise the browser test explains and skips
# (and fails under CI=true, where it must run).
chromium:
	@if command -v chromium >/dev/null 2>&1; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	  echo "installing Debian's chromium for the browser test"; \
	  (apt-get install -y -qq chromium >/dev/null 2>&1 || \
	   (apt-get update -qq && apt-get install -y -qq chromium >/dev/null)); \
	else echo "WARNING: chromium is not installed and cannot be (not root): the browser test will be skipped"; fi

# ---------------------------------------------------------------- the book
build-book:
	@rm -rf _build/html _build/jupyter_execute
	@start=$$(date +%s.%N); \
	$(BIN)/jupyter-book build . $(JB_FLAGS) $(JB_EXTRA); \
	end=$$(date +%s.%N); \
	$(BIN)/python benchmarks/book_timing.py --build-seconds "$$(awk "BEGIN {print $$end - $$start}")" _build

book: setup build-book
	@echo; echo "The book is built. Open $(CURDIR)/$(HTML)/index.html in a browser,"; \
	echo "or serve it: $(BIN)/python -m http.server -d $(HTML) 8000  and visit http://localhost:8000"

# Student edition without solutions: same build with sphinx-exercise's hide_solutions on.
book-nosolutions: setup
	@mkdir -p _build
	sed 's/^    hide_solutions: false/    hide_solutions: true/' _config.yml > _build/_config_nosolutions.yml
	$(MAKE) build-book JB_EXTRA="--config _build/_config_nosolutions.yml"

# ---------------------------------------------------------------- checks
unit:
	$(BIN)/python -m pytest -q -m "not browser and not live"
	NUMBA_DISABLE_JIT=1 $(BIN)/python -m pytest -q -m "not browser and not live"

doctest:
	$(BIN)/python -m pytest -q --doctest-modules qref

browser:
	$(BIN)/python -m pytest -q -m browser tests/test_browser.py

# Two chapters opened live in JupyterLab as Binder sets it up (postBuild), run, and every
# figure's controls moved (QREF_LIVE_CHAPTERS=all for every chapter, about 6 minutes).
# Under CI=true a missing JupyterLab or Chromium is a failure, not a skip.
live:
	QREF_LIVE_REQUIRED=$${CI:+1} $(BIN)/python -m pytest -q -m live tests/test_live_lab.py

test: setup-test
	$(MAKE) unit
	$(MAKE) doctest
	$(MAKE) build-book
	$(MAKE) browser
	$(MAKE) live
	@echo; echo "make test: all checks passed"

bench: setup-test
	$(BIN)/python benchmarks/run.py

clean:
	rm -rf _build .pytest_cache .hypothesis
