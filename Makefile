# dsfed: `make demo` runs the embedded default pipeline, `make test` the test suite.
# Both create .venv (Python 3.11) and install the project on first use.
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(abspath $(VENV))/bin
STAMP := $(VENV)/.installed-stamp
export PATH := $(BIN):$(PATH)

.PHONY: help install demo demo-samfed ui lint test test-all bench bench-demo bench-gpu clean-artifacts

help:  ## list targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-16s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP)  ## create .venv and install dsfed with its pinned dependencies

demo: $(STAMP)  ## run the embedded default pipeline (dvc repro) on CPU, up to the report
	dsfed repro                            # `dvc repro` on one Prefect server for every stage (dsfed/orchestration/prefect_server.py)
	dsfed report                           # where the report is, test Dice per model, what flowed

demo-samfed: $(STAMP)  ## only the SAM-Fed stages of the embedded default (skin phantoms), then their summary
	dsfed repro --glob 'samfed_evaluate@*'   # what `make demo` runs for SAM-Fed, without the DSFedMed stages
	python -m dsfed_pipeline.flows.samfed summary

ui: $(STAMP)  ## Prefect UI on 127.0.0.1:4200 serving the `pipeline` and `redistill` deployments (Ctrl-C stops)
	python -m dsfed_pipeline.flows.ui

lint: $(STAMP)  ## ruff (pyflakes, imports) on the code, mypy on dsfed/
	ruff check dsfed dsfed_pipeline tests benchmarks scripts
	mypy

TEST_WORKERS ?= 2   # pytest-xdist processes; a test module stays in one (its fixtures build whole DVC projects)

test: $(STAMP)  ## run the test suite, one test of each kind (what CI runs)
	python -m pytest -m "not extended" -n $(TEST_WORKERS) --dist loadfile

test-all: $(STAMP)  ## run every test, the extended ones too (second tests of a kind: +25 min on 2 cores)
	python -m pytest -n $(TEST_WORKERS) --dist loadfile

bench: $(STAMP)  ## run the benchmarks (JSON on stdout)
	python benchmarks/store_access.py
	python benchmarks/phantom_render.py
	python benchmarks/models.py
	python benchmarks/generation.py
	python benchmarks/distill.py

bench-gpu: $(STAMP)  ## on a CUDA machine: the real models' training near the GPU's limit, SD 1.5, the paper's run projected (~10 min)
	python benchmarks/gpu.py

bench-demo: $(STAMP)  ## time `make demo` on a fresh clone under /tmp: wall time, peak memory, stage table (about 80 min)
	python benchmarks/demo.py --work /tmp/dsfed-demo-bench-$$$$ --out docs/benchmarks/demo-cpu.json

clean-artifacts:  ## remove every pipeline output under artifacts/ (not the committed READMEs; `dvc checkout` restores cached ones)
	@git clean -ndX -- artifacts | sed 's/^Would remove /removing /'
	@git clean -fdX -- artifacts
