"""bench/bench_scale.py: its synthetic caches are what it says, and its eval part runs and reports."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np

from mlhead.cache import open_cache

ROOT = Path(__file__).resolve().parents[1]


def _bench():
    spec = importlib.util.spec_from_file_location("bench_scale", ROOT / "bench" / "bench_scale.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


def test_make_cache_writes_the_asked_layout_and_positives(tmp_path):
    bench = _bench()
    path = bench.make_cache(tmp_path / "s.h5", 300, 16, 1200, "csr", positives=5, val_rows=40, test_rows=30)
    c = open_cache(path)
    assert c.shapes == {"train": (300, 16), "val": (40, 16), "test": (30, 16)}
    assert c.labels_layout("train") == "csr"
    assert (np.diff(c.load_sparse("train").indptr) == 5).all()
    dense = bench.make_cache(tmp_path / "d.h5", 300, 16, 1200, "dense", positives=5, val_rows=40, test_rows=30)
    assert open_cache(dense).labels_layout("train") == "dense"
    assert (open_cache(dense).load_sparse("train") != c.load_sparse("train")).nnz == 0  # same seed, same labels


def test_eval_part_prints_and_writes_its_ratio(tmp_path, capsys):
    out = tmp_path / "scale.json"
    _bench().main(["--parts", "eval", "--eval-rows", "20", "--eval-classes", "1100", "--eval-paths", "", "--json", str(out)])
    doc = json.loads(out.read_text())["eval"]
    assert doc["speedup"] == doc["sklearn_s"] / doc["counts_s"] > 0
    assert "(d) eval 20 x 1100: sklearn / counts" in capsys.readouterr().out


def test_eval_part_measures_blocked_and_dense_evaluate_run_with_equal_metrics(tmp_path, capsys):
    out = tmp_path / "scale.json"
    _bench().main(["--parts", "eval", "--eval-rows", "20", "--eval-classes", "1100", "--eval-run-rows", "300",
                   "--eval-run-classes", "1100", "--eval-block-cells", str(7 * 1100), "--dim", "8", "--hidden", "8",
                   "--json", str(out)])
    run = json.loads(out.read_text())["eval"]["run"]
    assert run["time_ratio_dense_over_blocked"] == run["dense"]["eval_s"] / run["blocked"]["eval_s"] > 0
    assert run["rss_ratio_dense_over_blocked"] == run["dense"]["peak_rss"] / run["blocked"]["peak_rss"] > 0
    assert run["max_rel_diff"] < 1e-9 and run["blocked"]["metrics"]["n_examples"] == 300
    printed = capsys.readouterr().out
    assert "(d) evaluate_run 300 x 1,100 time dense / blocked" in printed and "[blocked] peak RSS" in printed
