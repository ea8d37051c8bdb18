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

.PHONY: install test test-slow demo bench bench-scale lint clean reproduce real-runs check-html

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

# The reproduction report (docs/reproduction/): sigmoidF1 Table-2 protocols and ZLPR-style comparisons.
MLHEAD := $(VENV)/bin/mlhead
MULAN_SETS ?= emotions scene yeast medical enron
reproduce: install
	$(MLHEAD) embed --dataset movieposters --data-dir $(DATA)/movieposters --weights $(WEIGHTS)/mobilenetv2_100
	$(MLHEAD) embed --dataset movieposters --data-dir $(DATA)/movieposters --weights $(WEIGHTS)/mobilenetv2_100 \
		--split-mode paper-contiguous --output cache/movieposters-contiguous/mobilenetv2_100.h5
	$(MLHEAD) reproduce table2 --cache cache/movieposters/mobilenetv2_100.h5 --protocol paper-text
	$(MLHEAD) reproduce table2 --cache cache/movieposters-contiguous/mobilenetv2_100.h5 --protocol paper-code
	$(MLHEAD) embed --dataset arxiv2020 --data-dir $(DATA)/arxiv --backbone minilm
	$(MLHEAD) embed --dataset arxiv2020 --data-dir $(DATA)/arxiv --backbone minilm \
		--split-mode paper-contiguous --output cache/arxiv2020-contiguous/minilm.h5
	$(MLHEAD) reproduce table2 --cache cache/arxiv2020/minilm.h5 --protocol paper-text
	$(MLHEAD) reproduce table2 --cache cache/arxiv2020-contiguous/minilm.h5 --protocol paper-code
	$(MLHEAD) embed --dataset reuters21578 --data-dir $(DATA)/reuters21578 --backbone minilm
	$(MLHEAD) reproduce table2 --cache cache/reuters21578/minilm.h5 --protocol paper-text
	for m in $(MULAN_SETS); do \
		$(MLHEAD) embed --dataset mulan --data-dir $(DATA)/mulan --name $$m && \
		$(MLHEAD) reproduce zlpr --cache cache/mulan-$$m/none.h5 --standardize || exit 1; done

# issue 18 items 1-5 in one run (item 5 on the real posters cache when `make demo` has written it), then items 6-7
bench: install
	$(PY) bench/bench_train.py --json bench/out/train.json \
		$(if $(wildcard cache/movieposters/mobilenetv2_100.h5),--early-cache cache/movieposters/mobilenetv2_100.h5)
	@if [ -d $(DATA)/movieposters ]; then $(PY) bench/bench_embed.py --posters $(DATA)/movieposters \
		--weights $(WEIGHTS)/mobilenetv2_100 --arxiv $(DATA)/arxiv/arxiv_metadata_first2000.csv \
		--reuters $(DATA)/reuters21578 --json bench/out/embed.json; \
		else echo "bench_embed: skipped ($(DATA)/movieposters absent)"; fi

# issue #19: 4 M x 768 streamed vs in memory, 20,000 labels CSR vs dense, memory overhead, eval at 5,000
# classes (writes ~6 GiB of caches to bench/out/scale-caches, ~12 GiB free disk while writing)
bench-scale: install
	$(PY) bench/bench_scale.py --keep bench/out/scale-caches --json bench/out/scale.json

lint: install
	$(PIP) install -q ruff
	$(VENV)/bin/ruff check mlhead tests bench tools

clean:
	rm -rf cache runs .pytest_cache

# The HTML report in headless Chromium (fails on a script error or a broken image; skipped without
# chromium): renders $(RUNS) (or tiny synthetic runs when it is absent), screenshots at 390 and 1280 px.
RUNS ?= runs
check-html: install
	$(PY) tools/check_html.py $(if $(wildcard $(RUNS)),--runs $(RUNS),--demo) --out build/report.html \
		--screenshot build/report-390.png --screenshot-wide build/report-1280.png
