# Quick start: `make demo` (set up + build/train/evaluate the sample dataset), `make test`.
SHELL := /bin/bash
PY := .venv/bin/python
STAMP := .venv/.vtr-installed
REQS := requirements/lock.txt $(wildcard requirements/text-models.txt) pyproject.toml
ENV := source scripts/env.sh &&

GPU_CHECK_ARGS ?= --device cuda

.PHONY: setup lock browser demo test test-fast bench gpu-check gpu-bundle prefect-up prefect-down lint-docker images stack-check validate clean help

help:
	@echo "make demo        set up, start Prefect (server+worker), build + train + evaluate the sample dataset"
	@echo "make test        run the test suite (what CI runs)"
	@echo "make lock        regenerate requirements/lock.txt after changing pyproject.toml's dependencies"
	@echo "make bench       run the benchmarks in bench/"
	@echo "make gpu-check   the pipeline on one GPU (<= 8 min): roofline, extraction, sample build, train/eval, CPU-vs-GPU"
	@echo "make gpu-bundle  wheels for the lent GPU machine (.gpu_bundle/, <= 64 MiB with the tree): README 'GPU check'"
	@echo "make prefect-up / prefect-down   local Prefect server, work pool, deployments, worker"

setup: $(STAMP) .nltk_data/.vtr-wordnet

$(STAMP): $(REQS) scripts/install.sh
	bash scripts/install.sh
	touch $@

# requirements/lock.txt (hash-pinned closure of pyproject.toml's dependencies + [ray] + [dev]) after
# changing a dependency; tests/test_packaging.py fails until the lock matches pyproject.toml
lock:
	bash scripts/lock.sh

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

# one GPU, <= 8 min; log + JSON under bench/results/. CPU machines: make gpu-check GPU_CHECK_ARGS="--device cpu --tiny"
gpu-check: setup
	@mkdir -p bench/results
	$(ENV) set -o pipefail; stamp=$$(date -u +%Y%m%dT%H%MZ); \
	  $(PY) bench/gpu_check.py $(GPU_CHECK_ARGS) --out bench/results/gpu_check-$$stamp.json 2>&1 \
	  | tee bench/results/gpu_check-$$stamp.log

# the lent GPU machine (no installs there): wheels it lacks -> .gpu_bundle/ (carried); then the device
# tool runs `bash scripts/gpu_check_device.sh` with carry [".gpu_bundle"] (README "GPU check")
gpu-bundle:
	bash scripts/gpu_check_bundle.sh

prefect-up: setup
	bash scripts/prefect_up.sh

prefect-down:
	bash scripts/prefect_down.sh

lint-docker: setup
	$(ENV) bash scripts/lint_docker.sh

# container images with podman on machines without Docker (docker/README.md, "Podman"); idempotent
images:
	flock /tmp/vtr-heavy.lock bash scripts/images.sh

# docker/compose.yaml up under podman-compose (project vtr-stack-check, API on 127.0.0.1:4390),
# the sample pipeline inside the containers, UI + port checks, teardown; <= 25 min once images exist
stack-check: setup browser
	flock /tmp/vtr-heavy.lock $(PY) scripts/stack_check.py

validate: setup
	$(ENV) $(PY) -m pipeline.datasets.validate out/sample

clean: prefect-down
	rm -rf out runs .prefect data/sample
