"""bench/bench_libmultilabel.py: its scoring agrees with LibMultiLabel's and mlhead's own metrics, and it runs."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

pytest.importorskip("libmultilabel.linear")

from mlhead.metrics import evaluate  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_libmultilabel", ROOT / "bench" / "bench_libmultilabel.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses resolve their module by name
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def problem(bench):
    return bench.make_synthetic(n_labels=60, sizes=(200, 50, 150), vocab=300, seed=1)


def test_synthetic_problem_is_seeded_power_law(bench, problem):
    again = bench.make_synthetic(n_labels=60, sizes=(200, 50, 150), vocab=300, seed=1)
    assert (problem.X["test"] != again.X["test"]).nnz == 0 and (problem.Y["train"] != again.Y["train"]).nnz == 0
    counts = np.asarray(problem.Y["train"].sum(0)).ravel()
    assert counts[:5].sum() > counts[-30:].sum()  # head labels dominate the tail
    assert np.allclose(sp.linalg.norm(problem.X["train"], axis=1), 1)


def test_f1_in_blocks_equals_mlhead_metrics(bench, problem):
    rng = np.random.default_rng(0)
    logits = rng.normal(size=problem.Y["test"].shape) - 1.0
    got = bench.score_blocks((logits[i:i + 40] for i in range(0, len(logits), 40)), problem, lambda z: z >= 0)
    want = evaluate(logits, problem.Y["test"].toarray(), activation="sigmoid", threshold=0.5)
    assert got["micro_f1"] == pytest.approx(want["micro_f1"], abs=1e-9)
    assert got["macro_f1"] == pytest.approx(want["macro_f1"], abs=1e-9)


def test_lml_scoring_equals_libmultilabel_own(bench):
    import libmultilabel.linear as linear

    # flat label distribution: every label has train positives, so no all-zero weight vector makes
    # tied decision values (which LibMultiLabel's argpartition and mlhead.ranking would order differently)
    problem = bench.make_synthetic(n_labels=30, sizes=(300, 50, 150), vocab=300, exponent=0.3, seed=2)
    assert (np.asarray(problem.Y["train"].sum(0)) > 0).all()
    model = linear.train_1vsrest(problem.Y["train"].astype(np.float64).tocsr(), problem.X["train"], verbose=False)
    values = np.asarray(linear.predict_values(model, problem.X["test"]))
    assert all(len(np.unique(v)) == len(v) for v in values)  # no ties
    ours = bench.score_blocks((values[i:i + 64] for i in range(0, len(values), 64)), problem, lambda s: s > 0)
    theirs = linear.compute_metrics(values, problem.Y["test"].toarray(), ["P@1", "P@3", "P@5", "Micro-F1"])
    for k in (1, 3, 5):
        assert ours[f"p@{k}"] == pytest.approx(100 * theirs[f"P@{k}"], rel=1e-6)  # theirs sums in float32
    assert ours["micro_f1"] == pytest.approx(100 * theirs["Micro-F1"], rel=1e-6)


def test_quick_run_writes_json(bench, tmp_path):
    out = tmp_path / "lml.json"
    rows = bench.main(["--quick", "--out", str(out)])
    doc = json.loads(out.read_text())
    methods = [r["method"] for r in doc["rows"]]
    assert methods == [r.method for r in rows] and methods[:2] == ["lml-1vsrest", "lml-tree"]
    # the mlhead row names the run its val P@1 chose from the stacked loss x lr grid (2 x 2 by default)
    assert methods[2].startswith("mlhead (") and doc["rows"][2]["options"].startswith("grid of 4 stacked runs")
    for r in doc["rows"]:
        assert all(0 <= r["scores"][k] <= 100 for k in ("p@1", "p@5", "psp@5", "micro_f1", "macro_f1"))
    assert "| problem |" in doc["markdown"] and doc["cpu"]["model"]
