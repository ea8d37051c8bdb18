"""Eval in row blocks at many classes equals the in-memory eval, in bounded memory (issue #19)."""

from __future__ import annotations

import json
import math
import tracemalloc

import numpy as np
import pytest
import scipy.sparse as sp
from click.testing import CliRunner
from sklearn.metrics import average_precision_score

import mlhead.metrics as M
from conftest import fit_tiny_run
from mlhead import blockeval as B
from mlhead import countmetrics as CM
from mlhead.cache import open_cache, write_cache
from mlhead.cli import main
from mlhead.errors import ConfigError, NumericalError
from mlhead.ranking import topk_indices
from mlhead.rules import DecisionRule
from mlhead.runs import evaluate_run, predict, ranking_values, run_cache

N, C = 300, 1200


def _problem(seed: int):
    """Logits with ties (one decimal), ~4 positives a row, a class without positives, rows without
    positives; row 0 scores every class alike (ties everywhere)."""
    rng = np.random.default_rng(seed)
    z = np.round(rng.normal(size=(N, C)) * 2, 1).astype(np.float32)
    z[0] = 0.5
    y = (rng.random((N, C)) < 4 / C).astype(np.uint8)
    y[:, 3] = 0
    y[[5, 17, 299]] = 0
    y[1, 10:20] = 1
    z[2, y[2] > 0] += 6  # a row whose positives all lead
    return z, y


RULES = [DecisionRule("softmax", 0.004), DecisionRule("sigmoid", 0.5), DecisionRule("none", 0.0),
         DecisionRule("softmax", None, 3), DecisionRule("sigmoid", None, 5)]


def _source(z, rows):
    return lambda: (z[i:i + rows] for i in range(0, len(z), rows))


def assert_same(got: dict, want: dict):
    assert set(got) == set(want)
    for k, v in want.items():
        if isinstance(v, str):
            assert got[k] == v, k
        elif isinstance(v, float) and math.isnan(v):
            assert math.isnan(got[k]), k
        else:
            assert got[k] == pytest.approx(v, rel=1e-9, abs=1e-12), k


@pytest.mark.parametrize("kmax", [0, 2, 3, 8])
def test_top_k_rule_with_or_without_a_wider_ranking_top_k(kmax):
    """A top-3 rule beside a ranking top-kmax narrower, equal or wider than its k (or none): the same
    values as in memory (tied scores), and the top-kmax as ranking.topk_indices gives it."""
    z, y = _problem(0)
    rule = DecisionRule("softmax", None, 3)
    values, _, topk = B.evaluate_blocks(_source(z, 7), sp.csr_matrix(y), rule, kmax=kmax)
    want = M.evaluate_rule(z, y, rule)
    assert_same({k: values[k] for k in want}, want)
    assert topk is None if not kmax else np.array_equal(topk, topk_indices(z, kmax))


@pytest.mark.parametrize("rule", RULES, ids=lambda r: r.slug)
@pytest.mark.parametrize("layout", ["csr", "dense"])
def test_blocks_equal_the_in_memory_eval(rule, layout):
    z, y = _problem(0)
    labels = sp.csr_matrix(y) if layout == "csr" else y
    values, rows, topk = B.evaluate_blocks(_source(z, 7), labels, rule, [f"c{j}" for j in range(C)], kmax=5)
    assert_same(values, M.evaluate_rule(z, y, rule))
    want_rows = M.per_class(z, y, rule, [f"c{j}" for j in range(C)])
    assert [r["class"] for r in rows] == [r["class"] for r in want_rows]
    for got, want in zip(rows, want_rows):
        assert_same(got, want)
    np.testing.assert_array_equal(topk, topk_indices(z, 5))
    assert values["n_classes_without_positives"] >= 1 and values["n_examples_without_positives"] >= 3


def test_per_class_thresholds_and_one_block_give_the_same():
    z, y = _problem(1)
    rule = DecisionRule("sigmoid", 0.5).tune(z[:150], y[:150])
    for rows in (1, 300, 1000):
        values, _, topk = B.evaluate_blocks(_source(z, rows), sp.csr_matrix(y), rule)
        assert_same(values, M.evaluate_rule(z, y, rule))
        assert topk is None


@pytest.mark.parametrize("activation", ["sigmoid", "softmax", "none"])
def test_thresholds_tuned_in_blocks_equal_rule_tune(activation):
    z, y = _problem(4)
    z = z.copy()
    z[:, 7] = np.where(y[:, 7] > 0, 45.0, 40.0)  # sigmoid saturates: 1.0 for every row, positives or not
    y[[9, 11], 7] = 1
    z[:, 8] = 2.0  # one score for the whole column, so no lower candidate
    y[4, 8] = 1
    rule = DecisionRule(activation, None, tuned_on="val")
    want = DecisionRule(activation).tune(z, y, "val")
    for rows in (7, 300):
        got = B.tune_blocks(_source(z, rows), sp.csr_matrix(y), rule)
        np.testing.assert_array_equal(got.thresholds, want.thresholds)
        assert got.name == want.name == f"per-class tuned on val ({activation})"
    assert want.thresholds[3] == rule.threshold  # no positives: the global threshold
    with pytest.raises(ConfigError, match="top-k"):
        B.tune_blocks(_source(z, 7), y, DecisionRule(activation, None, 3))


def test_block_errors_name_the_rows_and_match_the_in_memory_checks():
    z, y = _problem(2)
    z = z.copy()
    z[40, 7] = np.nan
    with pytest.raises(NumericalError, match=r"rows 35\.\.41"):
        B.evaluate_blocks(_source(z, 7), y, DecisionRule("sigmoid", 0.5))
    with pytest.raises(ValueError, match="rows"):
        B.evaluate_blocks(_source(z[:10], 7), y, DecisionRule("sigmoid", 0.5))
    with pytest.raises(ValueError, match="N >= 1"):
        B.evaluate_blocks(_source(z[:0], 7), y[:0], DecisionRule("sigmoid", 0.5))
    with pytest.raises(ValueError, match="top-k"):
        B.evaluate_blocks(_source(z, 7), y, DecisionRule("sigmoid", None, C + 1))


def test_a_source_that_changes_between_the_passes_is_refused():
    z, y = _problem(3)
    calls = []

    def source():
        calls.append(1)
        return iter([z - len(calls)])  # a shift: same decisions per pass, other scores in pass 2

    with pytest.raises(NumericalError, match="two passes"):
        B.evaluate_blocks(source, y, DecisionRule("none", 0.0))


@pytest.mark.parametrize("seed", range(3))
def test_average_precision_from_counts_equals_sklearn(seed):
    rng = np.random.default_rng(seed)
    s = np.round(rng.normal(size=(80, 12)), 1)  # ties
    y = (rng.random(s.shape) < 0.2).astype(np.uint8)
    y[:, 4] = 0
    y[0, 5] = 1
    s[:, 6] = 1.0  # one score for the whole column
    y[3, 6] = 1
    rows, cols = np.nonzero(y)
    at_least = np.array([(s[:, j] >= s[i, j]).sum() for i, j in zip(rows, cols)])  # brute force
    ap = CM.average_precision_from_counts(cols, s[rows, cols], at_least, 12)
    for j in range(12):
        if y[:, j].any():
            assert ap[j] == pytest.approx(average_precision_score(y[:, j], s[:, j]), rel=1e-12)
        else:
            assert math.isnan(ap[j])


def test_count_at_least_equals_a_loop():
    rng = np.random.default_rng(0)
    for b in (1, 2, 7, 64):
        cols = np.sort(np.round(rng.normal(size=(5, b)), 1), axis=1)
        q = rng.integers(0, 5, 50)
        t = np.round(rng.normal(size=50), 1)
        t[:5] = cols[q[:5], 0]
        want = [(cols[j] >= v).sum() for j, v in zip(q, t)]
        np.testing.assert_array_equal(CM.count_at_least(cols, q, t), want)


@pytest.mark.parametrize("layout", ["csr", "dense"])
def test_evaluate_run_in_blocks_equals_the_in_memory_eval(tmp_path, monkeypatch, layout):
    rng = np.random.default_rng(0)
    W = rng.normal(size=(8, C))
    splits = {}
    for name, m in (("train", 60), ("val", 20), ("test", 45)):
        X = rng.normal(size=(m, 8)).astype(np.float32)
        Y = (X @ W > 2.2).astype(np.uint8)
        splits[name] = (X, Y, [f"{name}{i}" for i in range(m)])
    cache = write_cache(tmp_path / "c.h5", splits, [f"c{j}" for j in range(C)], attrs={"dataset": "synthetic"},
                        labels_layout=layout)
    run = fit_tiny_run(cache, tmp_path / "runs")
    monkeypatch.setattr(B, "BLOCK_CELLS", 7 * C)  # 7-row blocks: 45 rows are ragged
    seen = []
    real = B.evaluate_blocks
    monkeypatch.setattr(B, "evaluate_blocks", lambda *a, **k: seen.append(1) or real(*a, **k))
    val_logits, val_targets, _, _ = predict(run, "val")
    tuned = DecisionRule("sigmoid", 0.5).tune(val_logits, val_targets, "val")
    for rule in (DecisionRule("sigmoid", 0.5), DecisionRule("softmax", None, 3),
                 DecisionRule("sigmoid", 0.5, tuned_on="val")):
        doc = evaluate_run(run, "test", rule)
        logits, targets, _, cfg = predict(run, "test")
        if rule.needs_tuning:  # tuned on val in blocks: the thresholds rule.tune finds on predict's val logits
            np.testing.assert_array_equal(doc["rule"]["thresholds"], tuned.thresholds)
            rule = tuned
        want = {**M.evaluate_rule(logits, targets, rule),
                **ranking_values(logits, targets, run_cache(run), None)}
        assert_same(doc["metrics"], want)
        for got, ref in zip(doc["per_class"], M.per_class(logits, targets, rule, cfg["classes"])):
            assert_same(got, ref)
    assert seen == [1, 1, 1] and {"p@5", "psp@3"} <= set(doc["metrics"])
    assert open_cache(cache).labels_layout("test") == layout
    out = tmp_path / "e.json"  # the CLI is unchanged and takes the blocked path
    res = CliRunner().invoke(main, ["eval", "--run", str(run), "--top-k", "3", "--k", "1,2", "-o", str(out)])
    assert res.exit_code == 0, res.output
    assert seen == [1, 1, 1, 1] and "p@2" in res.output
    assert_same(json.loads(out.read_text())["metrics"], {**M.evaluate_rule(logits, targets, DecisionRule("softmax", None, 3)),
                **ranking_values(logits, targets, run_cache(run), [1, 2])})


def test_a_changed_cache_is_refused_while_streaming_blocks(tmp_path):
    import h5py

    rng = np.random.default_rng(0)
    X, Y = rng.normal(size=(30, 4)).astype(np.float32), (rng.random((30, 1100)) < 0.01).astype(np.uint8)
    cache = write_cache(tmp_path / "c.h5", {"test": (X, Y, [str(i) for i in range(30)])},
                        [f"c{j}" for j in range(1100)])
    with h5py.File(cache, "r+") as f:
        f["test/embeddings"][3, 0] += 1
    c = open_cache(cache)
    with pytest.raises(Exception, match="changed"):
        list(c.iter_embeddings("test", 7))
    assert sum(len(b) for b in c.iter_embeddings("test", 7, verify=False)) == 30


def test_peak_memory_is_bounded_by_the_block_not_n_by_c(monkeypatch):
    n, c = 8000, 2000  # N x C float32 = 64 MB, float64 = 128 MB
    rows = 100
    monkeypatch.setattr(B, "BLOCK_CELLS", rows * c)  # 1.6 MB of float64 a block

    def source():
        for i in range(0, n, rows):
            yield np.random.default_rng(i).normal(size=(rows, c)).astype(np.float32)

    rng = np.random.default_rng(0)
    labels = sp.random(n, c, density=3 / c, format="csr", random_state=rng, data_rvs=np.ones)
    tracemalloc.start()
    try:
        values, _, topk = B.evaluate_blocks(source, labels, DecisionRule("sigmoid", 0.9), kmax=5)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert values["n_examples"] == n and topk.shape == (n, 5)
    assert peak < n * c * 4 / 4, f"peak {peak / 2**20:.1f} MiB"  # under a quarter of the float32 logits


def test_load_sparse_converts_dense_labels_in_blocks_and_still_verifies(tmp_path, monkeypatch):
    import h5py

    from mlhead.cache import reader

    rng = np.random.default_rng(1)
    Y = (rng.random((50, 30)) < 0.2).astype(np.uint8)
    X = rng.normal(size=(50, 4)).astype(np.float32)
    cache = write_cache(tmp_path / "c.h5", {"test": (X, Y, [str(i) for i in range(50)])},
                        [f"c{j}" for j in range(30)], labels_layout="dense")
    monkeypatch.setattr(reader, "SPARSE_READ_CELLS", 7 * 30)  # 7-row blocks
    got = open_cache(cache).load_sparse("test")
    assert got.shape == (50, 30) and got.dtype == np.uint8
    np.testing.assert_array_equal(got.toarray(), Y)
    with h5py.File(cache, "r+") as f:
        f["test/labels"][3, 0] = 1 - f["test/labels"][3, 0]
    with pytest.raises(Exception, match="changed"):
        open_cache(cache).load_sparse("test")
