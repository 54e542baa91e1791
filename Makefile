# Transformer Networks: a hands-on course.
#   make book   build the book into _build/html (creates .venv on first use)
#   make test   run every check CI runs
# See README.md for the rest.

SHELL := /bin/bash
.SHELLFLAGS := -eo pipefail -c
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# Torch results depend on the thread count; every run of the notebooks and tests uses one thread.
export OMP_NUM_THREADS := 1
# The course team keeps verified copies of the data sets beside the checkout: use them, so nothing downloads.
# Elsewhere the library downloads each data set once into a cache folder (chapter 11).
SHARED_DATA := $(abspath ../shared/data)
ifneq ($(wildcard $(SHARED_DATA)/README.md),)
export TRANSFORMER_COURSE_DATA ?= $(SHARED_DATA)
endif

.PHONY: help venv book pdf test lint unit lib nb lab serve bench translate distributed clean

help:
	@sed -n '2,4p' Makefile

$(STAMP): requirements.txt requirements-learner.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	@# One pip command for both, so the pinned CPU build of torch satisfies the library's dependency.
	$(BIN)/python -m pip install --quiet -r requirements.txt -e . 2>&1 | { grep -v "is ignored" || true; }
	$(BIN)/python -c "import torch, jupyter_book, nbval, playwright"
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 > /dev/null
	touch $@

venv: $(STAMP)

book: $(STAMP)
	$(BIN)/jupyter-book build . -W -n --keep-going
	@echo "The book is in _build/html: open _build/html/index.html, or run 'make serve'."

# The whole book as one PDF, printed by Chromium from the single-page build: _build/html/course.pdf.
pdf: book
	$(BIN)/jupyter-book build . --builder singlehtml -W -n --keep-going > /dev/null
	$(BIN)/python tools/book_pdf.py

test: pdf
	$(BIN)/ruff check transformer_lib tests tools benchmarks
	$(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check transformer_lib tests tools benchmarks

unit: $(STAMP)
	$(BIN)/python -m pytest tests --ignore=tests/browser -o addopts="-n 2"

lib: $(STAMP)
	$(BIN)/python tools/export.py

nb: $(STAMP)
	for nb in notebooks/*.ipynb; do \
	  $(BIN)/jupyter nbconvert --to notebook --execute --inplace \
	    --ExecutePreprocessor.timeout=600 --ExecutePreprocessor.kernel_name=python3 "$$nb" || exit 1; \
	done
	$(BIN)/python tools/export.py

lab: $(STAMP)
	$(BIN)/jupyter lab --notebook-dir=notebooks $(if $(filter 0,$(shell id -u)),--allow-root)

serve:
	@test -d _build/html || { echo "No built book: run 'make book' first."; exit 1; }
	$(BIN)/python -m http.server 8000 --bind 127.0.0.1 --directory _build/html

bench: $(STAMP)
	for script in benchmarks/bench_*.py; do $(BIN)/python "$$script" || exit 1; done

# Chapter 12's full run: 5 minutes of training on 2 threads, then test BLEU (benchmarks/results/translation.json).
translate: $(STAMP)
	$(BIN)/python tools/translate.py --minutes 5 --threads 2

# Chapter 15: data-parallel training end to end, two processes on this machine (torchrun, gloo on the CPU),
# rendezvous on 127.0.0.1 with a port the system picks; rank 0 logs and writes the checkpoint (a fresh run).
# `-m transformer_lib.distributed` runs a module that the package's __init__ has already imported, and runpy
# warns about it; harmless here (the program uses only its own definitions), so that one warning is silenced.
DIST_DIR := _build/distributed
distributed: $(STAMP)
	mkdir -p $(DIST_DIR) && rm -f $(DIST_DIR)/reverse.pt
	$(if $(filter Linux,$(shell uname -s)),GLOO_SOCKET_IFNAME=lo) PYTHONWARNINGS=ignore::RuntimeWarning:runpy \
	  $(BIN)/torchrun --nnodes 1 \
	  --nproc-per-node 2 --rdzv-backend c10d --rdzv-endpoint 127.0.0.1:0 --local-addr 127.0.0.1 \
	  -m transformer_lib.distributed --task reverse --steps 500 --batch-size 128 --lr 2e-3 \
	  --log-every 100 --checkpoint $(DIST_DIR)/reverse.pt --report $(DIST_DIR)/report.json

clean:
	rm -rf _build
