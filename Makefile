# mlhead: `make demo` and `make test` each install what they need first.
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
SHARED ?= ../shared
DATA ?= $(SHARED)/data
WEIGHTS ?= $(SHARED)/weights
PYTEST_ARGS ?=

export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export MPLBACKEND := Agg

.PHONY: install test test-slow demo bench lint clean

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PIP) install -q torch==2.14.1 torchvision==0.29.1
	$(PIP) install -q -e '.[dev,text]'
	touch $@

install: $(VENV)/.installed

test: install
	$(PY) -m pytest -q -n 2 $(PYTEST_ARGS)

test-slow: install
	$(PY) -m pytest -q -m slow $(PYTEST_ARGS)

# The main job: embed the real posters with real MobileNetV2 weights, fit sigmoidF1, evaluate.
demo: install
	$(VENV)/bin/mlhead embed --dataset movieposters --data-dir $(DATA)/movieposters --weights $(WEIGHTS)/mobilenetv2_100
	$(VENV)/bin/mlhead fit --loss sigmoidf1 --beta 1 --eta 0 --epochs 100
	$(VENV)/bin/mlhead eval --threshold 0.05
	$(VENV)/bin/mlhead eval --threshold 0.5

bench: install
	$(PY) bench/bench_train.py

lint: install
	$(PIP) install -q ruff
	$(VENV)/bin/ruff check mlhead tests bench

clean:
	rm -rf cache runs .pytest_cache
