"""``mlhead eval`` reports P@k, R@k, nDCG@k and PSP@k; ``mlhead report`` tabulates them (issue #19)."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from click.testing import CliRunner

from conftest import fit_tiny_run, make_cache
from mlhead.cache import open_cache, write_cache
from mlhead.cli import main
from mlhead.errors import ConfigError
from mlhead.rules import DecisionRule
from mlhead.runs import evaluate_run, predict
from test_ranking import assert_metrics_equal, brute_metrics


def test_eval_adds_ranking_metrics_equal_to_brute_force(tmp_path):
    cache = make_cache(tmp_path / "c.h5", n=(80, 30, 30), dim=6, n_classes=7)
    run = fit_tiny_run(cache, tmp_path / "runs")
    doc = evaluate_run(run, "test", DecisionRule("sigmoid", 0.5))
    logits, targets, _, _ = predict(run, "test")
    train = open_cache(cache).load_sparse("train")
    counts = np.asarray(train.sum(0)).ravel()
    want = brute_metrics(logits, targets, (1, 3, 5), counts, train.shape[0])
    assert set(want) <= set(doc["metrics"])
    assert_metrics_equal(doc["metrics"], want)
    saved = json.loads((run / "metrics.json").read_text())["metrics"]
    assert_metrics_equal(saved, want)


def test_default_ks_stop_at_the_number_of_classes_and_explicit_k_is_checked(tmp_path):
    cache = make_cache(tmp_path / "c.h5", n=(40, 20, 20), dim=4, n_classes=4)
    run = fit_tiny_run(cache, tmp_path / "runs")
    m = evaluate_run(run, "test")["metrics"]
    assert {"p@1", "p@3", "ndcg@3", "psp@3"} <= set(m) and "p@5" not in m
    with pytest.raises(ConfigError, match="k"):
        evaluate_run(run, "test", ks=[5])


def test_cli_eval_k_option_table_json_and_report(tmp_path):
    cache = make_cache(tmp_path / "c.h5", n=(60, 20, 20), dim=5, n_classes=6)
    runs = tmp_path / "runs"
    run = fit_tiny_run(cache, runs)
    out = tmp_path / "e.json"
    res = CliRunner().invoke(main, ["eval", "--run", str(run), "--k", "1,2", "-o", str(out)], terminal_width=200)
    assert res.exit_code == 0, res.output
    assert "p@2" in res.output and "ndcg@2" in res.output and "psp@2" in res.output and "precision@k" in res.output
    m = json.loads(out.read_text())["metrics"]
    assert {"p@1", "p@2", "r@2", "ndcg@1", "psp@2"} <= set(m) and "p@3" not in m
    rep = tmp_path / "rep"
    res = CliRunner().invoke(main, ["report", str(runs), "--metrics", "p@1,ndcg@2,psp@2", "--out-dir", str(rep)],
                             terminal_width=200)
    assert res.exit_code == 0, res.output
    assert "P@1" in res.output
    rows = list(csv.DictReader((rep / "table2.csv").open()))
    assert float(rows[0]["p@1_mean"]) == pytest.approx(m["p@1"]) and "psp@2_mean" in rows[0]


def test_eval_on_a_csr_cache_with_many_classes(tmp_path):
    rng = np.random.default_rng(0)
    n_classes = 1500
    W = rng.normal(size=(8, n_classes))
    splits = {}
    for name, m in (("train", 300), ("val", 60), ("test", 60)):
        X = rng.normal(size=(m, 8)).astype(np.float32)
        Y = np.zeros((m, n_classes), np.uint8)
        np.put_along_axis(Y, np.argsort(-(X @ W), 1)[:, :3], 1, 1)
        splits[name] = (X, Y, [f"{name}{i}" for i in range(m)])
    cache = write_cache(tmp_path / "s.h5", splits, [f"c{j}" for j in range(n_classes)])
    assert open_cache(cache).labels_layout("train") == "csr"
    run = fit_tiny_run(cache, tmp_path / "runs")
    doc = evaluate_run(run, "test", DecisionRule("softmax", None, 3))
    logits, targets, _, _ = predict(run, "test")
    counts = splits["train"][1].sum(0)
    assert_metrics_equal(doc["metrics"], brute_metrics(logits, targets, (1, 3, 5), counts, 300))
    assert doc["metrics"]["predicted_cardinality"] == 3.0
