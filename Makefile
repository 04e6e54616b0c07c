# Quick start: `make demo` (set up + build/train/evaluate the sample dataset), `make test`.
SHELL := /bin/bash
PY := .venv/bin/python
STAMP := .venv/.vtr-installed
REQS := requirements/base.txt $(wildcard requirements/text-models.txt requirements/dev.txt requirements/ray.txt) pyproject.toml
ENV := source scripts/env.sh &&

.PHONY: setup browser demo test test-fast bench prefect-up prefect-down lint-docker validate clean help

help:
	@echo "make demo        set up, start Prefect (server+worker), build + train + evaluate the sample dataset"
	@echo "make test        run the test suite (what CI runs)"
	@echo "make bench       run the benchmarks in bench/"
	@echo "make prefect-up / prefect-down   local Prefect server, work pool, deployments, worker"

setup: $(STAMP) .nltk_data/.vtr-wordnet

$(STAMP): $(REQS) scripts/install.sh
	bash scripts/install.sh
	touch $@

.nltk_data/.vtr-wordnet: scripts/setup_wordnet.sh
	bash scripts/setup_wordnet.sh .nltk_data
	touch $@

demo: setup
	$(ENV) bash scripts/demo.sh

test: setup browser
	$(ENV) $(PY) -m pytest -q

browser:  # chromium + chromium-driver (apt) for tests/test_search_browser.py; no-op when present
	bash scripts/install_browser.sh

test-fast: setup
	$(ENV) $(PY) -m pytest -q -m "not slow"

bench: setup
	$(ENV) for b in bench/bench_*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

prefect-up: setup
	bash scripts/prefect_up.sh

prefect-down:
	bash scripts/prefect_down.sh

lint-docker: setup
	$(ENV) bash scripts/lint_docker.sh

validate: setup
	$(ENV) $(PY) -m pipeline.validate out/sample

clean: prefect-down
	rm -rf out runs .prefect data/sample
