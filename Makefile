# The two commands of the course:
#   make book   build the HTML book into _build/html, executing every chapter (full profile:
#               the published results, asserted by the chapters' own cells)
#   make test   run the whole test suite: unit tests and every chapter through nbval (quick
#               profile: tests are checks, not the published run)
# Both create .venv with the package and its extras on first use.
#
# Variables: PYTHON (a Python 3.10+ to create .venv with), TORCH (the torch requirement installed
# when .venv has none: CI passes the CPU build), JOBS (pytest-xdist workers), BOOK_JOBS (notebooks
# `make book` executes at a time: one per CPU core by default, each kernel with cores / BOOK_JOBS
# threads), and COMPANION_PROFILE (quick or full, read by the chapters; when unset, `make test` uses
# quick and `make book` full).

PYTHON ?= python3
VENV ?= .venv
TORCH ?= torch
JOBS ?= auto
BOOK_JOBS ?= $(shell $(PYTHON) -c 'import os; print(os.cpu_count() or 1)')
BOOK_CACHE := _build/.jupyter_cache
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

# The course's data folder beside the repository (as on the CI machine) saves downloading MNIST.
ifeq ($(origin COMPANION_DATA), undefined)
ifneq ($(wildcard ../shared/data/.),)
export COMPANION_DATA := $(abspath ../shared/data)
endif
endif

.PHONY: book test twins bench clean

# The book: every notebook executed, BOOK_JOBS at a time, into a fresh jupyter-cache (a failing cell
# stops here), the base models that chapters 11 and 12 share trained and cached as the first jobs of
# the same queue (those two chapters wait for them, the others do not); then the HTML built from
# that cache with warnings as errors (tools/book_config.py).
# The chapters' times and slowest cells of this run land in _build/run-PROFILE.jsonl.
book: export COMPANION_PROFILE := $(or $(COMPANION_PROFILE),full)
book: $(STAMP)
	$(BIN)/python tools/twins.py
	rm -rf $(BOOK_CACHE)
	$(BIN)/python bench/run_notebooks.py --profile $(COMPANION_PROFILE) --jobs $(BOOK_JOBS) --base-models \
		--cache $(BOOK_CACHE) --output _build/run-$(COMPANION_PROFILE).jsonl
	$(BIN)/python tools/book_config.py --cache $(BOOK_CACHE) --output _build/config.yml
	$(BIN)/jupyter-book build . --config _build/config.yml --all --warningiserror --keep-going

test: export COMPANION_PROFILE := $(or $(COMPANION_PROFILE),quick)
test: $(STAMP)
	$(BIN)/python -m pytest -n $(JOBS) --dist loadfile $(PYTEST_ARGS)

twins: $(STAMP)
	$(BIN)/python tools/twins.py

# The speed benchmarks; bench/run_notebooks.py (the chapters' times and results) takes a profile: see
# book/reproducibility.md. bench/timing.py is the benchmarks' shared clock.
BENCHMARKS := $(filter-out bench/run_notebooks.py bench/timing.py,$(wildcard bench/*.py))

bench: $(STAMP)
	for script in $(BENCHMARKS); do $(BIN)/python $$script || exit 1; done

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 10))' || \
		{ echo "the course needs Python 3.10 or newer; $(PYTHON) is $$($(PYTHON) --version)"; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -c 'import torch' 2>/dev/null || $(BIN)/python -m pip install "$(TORCH)"
	$(BIN)/python -m pip install -e ".[book,test]"
	touch $@

clean:
	rm -rf _build
