"""``mlhead eval`` says when a decision rule predicts no label for most examples (issue #16 item 7):
softmax >= 0.05 over 5,000 classes predicts nothing, since softmax scores are ~1/C."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from conftest import fit_tiny_run, make_cache
from mlhead.cli import main
from mlhead.metrics import evaluate_rule, rule_warnings
from mlhead.rules import DecisionRule


def _empty_rows(logits, rule) -> int:
    """Brute force: rows where no score passes the rule (softmax computed here with a loop)."""
    n = 0
    for z in logits:
        e = np.exp(z - z.max())
        s = e / e.sum() if rule.activation == "softmax" else 1 / (1 + np.exp(-z))
        n += not (s >= rule.threshold).any()
    return n


def _data(n=200, c=5000, seed=0):
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(n, c)).astype(np.float32)
    y = (rng.random((n, c)) < 0.001).astype(np.uint8)
    y[np.arange(n), rng.integers(0, c, n)] = 1
    return logits, y


def test_softmax_over_5000_classes_warns_and_names_the_rules_that_fit():
    logits, y = _data()
    rule = DecisionRule("softmax", 0.05)
    values = evaluate_rule(logits, y, rule)
    assert values["n_examples_without_predictions"] == _empty_rows(logits, rule) == 200
    (w,) = rule_warnings(values, rule)
    assert "softmax>=0.05 predicts no label for 200 of 200 examples (100.0%) over 5,000 classes" in w
    for flag in ("--activation sigmoid", "--top-k K", "--tune-thresholds"):
        assert flag in w


@pytest.mark.parametrize("rule", [DecisionRule("sigmoid", 0.5), DecisionRule("softmax", top_k=3)])
def test_rules_that_predict_labels_do_not_warn(rule):
    logits, y = _data(c=500)
    values = evaluate_rule(logits, y, rule)
    assert values["n_examples_without_predictions"] == 0
    assert rule_warnings(values, rule) == []


def test_a_sigmoid_rule_that_predicts_nothing_does_not_suggest_itself():
    logits, y = _data(c=500)
    rule = DecisionRule("sigmoid", 0.9999)
    values = evaluate_rule(logits, y, rule)
    assert values["n_examples_without_predictions"] == _empty_rows(logits, rule) > 100
    (w,) = rule_warnings(values, rule)
    assert "over 500 classes" in w and "--activation sigmoid" not in w and "--top-k K" in w and "--tune-thresholds" in w


def test_half_is_the_boundary_and_no_label_tables_do_not_warn():
    rule = DecisionRule("sigmoid", 0.5)
    base = {"n_examples": 10.0, "n_classes": 3.0, "n_examples_without_positives": 0.0}
    assert rule_warnings({**base, "n_examples_without_predictions": 5.0}, rule) == []
    assert len(rule_warnings({**base, "n_examples_without_predictions": 6.0}, rule)) == 1
    # 8 of 10 examples truly have no label: predicting none for 7 of them is right, not a warning
    assert rule_warnings({**base, "n_examples_without_positives": 8.0, "n_examples_without_predictions": 7.0},
                         rule) == []


def test_eval_cli_prints_and_records_the_warning(tmp_path):
    """Through the CLI with 500 classes (softmax ~1/500 < 0.05 too): eval's per-class AP costs ~7 ms per
    class with sklearn, so 5,000 classes take minutes here; the 5,000-class case is tested above."""
    cache = make_cache(tmp_path / "c.h5", n=(60, 20, 20), n_classes=500)
    run = fit_tiny_run(cache, tmp_path / "runs")
    res = CliRunner().invoke(main, ["eval", "--run", str(run)])
    assert res.exit_code == 0, res.output
    out = " ".join(res.output.split())
    assert "warning: decision rule softmax>=0.05 predicts no label for 20 of 20 examples" in out
    assert "--activation sigmoid" in out and "--top-k K" in out and "--tune-thresholds" in out
    doc = json.loads((run / "metrics.json").read_text())
    assert len(doc["warnings"]) == 1 and "500 classes" in doc["warnings"][0]
    res = CliRunner().invoke(main, ["eval", "--run", str(run), "--top-k", "2"])
    assert res.exit_code == 0 and "warning" not in res.output
    assert "warnings" not in json.loads((run / "metrics.json").read_text())
