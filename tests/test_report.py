"""mlhead.report on fake run directories: Table 2 aggregation, exports, rule mixing, plots."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest

from mlhead import metrics as M
from mlhead import report as R
from mlhead.errors import RunError

LOSSES = ("sigmoidf1", "crossentropy", "focal")  # deliberately not in the paper's row order
SEEDS = (0, 1, 2)
METRICS = ("weighted_f1", "micro_f1", "macro_f1", "macro_precision", "map")
SOFTMAX = M.DecisionRule("softmax", 0.05)
SIGMOID = M.DecisionRule("sigmoid", 0.5)


def _config(loss, seed, **opts):
    return {"loss": loss, "loss_options": opts, "seed": seed, "dataset": "movieposters",
            "backbone": "mobilenetv2_100", "epochs": 5, "lr": 1e-3, "hidden": 64, "batch_size": 256,
            "best_epoch": 3}


def _write_run(run, config, evals, history=True):
    """evals: list of (split, rule, metrics)."""
    run.mkdir(parents=True)
    (run / "config.json").write_text(json.dumps(config))
    (run / "eval").mkdir()
    for split, rule, met in evals:
        doc = {"split": split, "rule": rule.to_dict(), "metrics": met,
               "run": {k: config[k] for k in ("loss", "seed", "dataset", "backbone")}}
        (run / "eval" / f"{split}__{rule.slug}.json").write_text(json.dumps(doc))
        (run / "metrics.json").write_text(json.dumps(doc))
    if history:
        lines = ["epoch,train_loss,val_loss,val_weighted_f1,val_map"]
        lines += [f"{e},{1 / (e + 1):.4f},{1.2 / (e + 1):.4f},{10 + e},{20 + e}" for e in range(5)]
        (run / "history.csv").write_text("\n".join(lines) + "\n")


@pytest.fixture(scope="module")
def table_root(tmp_path_factory):
    """3 losses x 3 seeds; each run evaluated (real metrics.evaluate) under two decision rules."""
    root = tmp_path_factory.mktemp("runs")
    rng = np.random.default_rng(0)
    y = (rng.random((80, 6)) < 0.3).astype(np.uint8)
    values = {}
    for li, loss in enumerate(LOSSES):
        for seed in SEEDS:
            z = rng.normal(size=y.shape) + (0.5 + li) * y  # later losses are better
            ev = [("test", rule, rule.evaluate(z, y)) for rule in (SOFTMAX, SIGMOID)]
            ev.append(("val", SOFTMAX, SOFTMAX.evaluate(z, y)))
            _write_run(root / "table" / f"{loss}-s{seed}", _config(loss, seed), ev)
            values[loss, seed] = {rule.name: met for _, rule, met in ev[:2]}
    return root / "table", values


@pytest.fixture(scope="module")
def grid_root(tmp_path_factory):
    """sigmoidF1 beta x eta grid 3 x 3, 2 seeds per cell (plus one crossentropy run without beta/eta)."""
    root = tmp_path_factory.mktemp("grid")
    rng = np.random.default_rng(1)
    cells = {}
    for beta in (1, 5, 10):
        for eta in (0.0, 1.0, 2.0):
            for seed in (0, 1):
                met = {m: float(rng.uniform(0, 100)) for m in METRICS}
                cells.setdefault((beta, eta), []).append(met["weighted_f1"])
                _write_run(root / f"b{beta}-e{eta}-s{seed}", _config("sigmoidf1", seed, beta=beta, eta=eta),
                           [("test", SOFTMAX, met)], history=False)
    _write_run(root / "ce-s0", _config("crossentropy", 0), [("test", SOFTMAX, {m: 1.0 for m in METRICS})],
               history=False)
    return root, cells


def test_collect_finds_runs_recursively(table_root):
    root, _ = table_root
    recs = R.collect(root)
    assert len(recs) == 9 * 3  # two test rules + one val per run
    assert {r["rule_name"] for r in recs} == {"softmax>=0.05", "sigmoid>=0.5"}
    assert {r["split"] for r in recs} == {"test", "val"}
    one = R.collect([root / "focal-s1", root / "focal-s1"])  # a run dir, given twice: loaded once
    assert len(one) == 3 and all(r["config"]["loss"] == "focal" for r in one)


def test_collect_errors(tmp_path):
    with pytest.raises(RunError, match="nope"):
        R.collect(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(RunError, match="no run directories"):
        R.collect(tmp_path / "empty")
    run = tmp_path / "bad"
    _write_run(run, _config("focal", 0), [("test", SOFTMAX, {"map": 1.0})], history=False)
    (run / "eval" / "test__broken.json").write_text("{not json")
    with pytest.raises(RunError, match="test__broken.json"):
        R.collect(run)


def test_table2_mean_std_bold(table_root):
    root, values = table_root
    t = R.table2(R.collect(root), metrics=METRICS + ("ranking_loss",), rule="softmax>=0.05")
    assert t.rows == ["crossentropy", "focal", "sigmoidf1"]  # the paper's row order
    assert t.n == [3, 3, 3] and t.seeds == [[0, 1, 2]] * 3
    for i, loss in enumerate(t.rows):
        for j, m in enumerate(t.metrics):
            v = np.array([values[loss, s]["softmax>=0.05"][m] for s in SEEDS])
            assert t.mean[i, j] == pytest.approx(v.mean())
            assert t.std[i, j] == pytest.approx(v.std(ddof=1))
    for j, m in enumerate(t.metrics):
        best = np.argmin(t.mean[:, j]) if m == "ranking_loss" else np.argmax(t.mean[:, j])
        assert t.best[best, j] and t.best[:, j].sum() == 1, m
    # focal (largest signal in this fake data) is best everywhere: higher F1/mAP, lower ranking loss
    assert t.best[1].all() and not t.best[[0, 2]].any()
    assert "movieposters" in t.caption and "mobilenetv2_100" in t.caption
    assert "softmax>=0.05" in t.caption and "3 seeds" in t.caption and "test split" in t.caption


def test_table2_exports(table_root, tmp_path):
    root, _ = table_root
    t = R.table2(R.collect(root), rule=SOFTMAX)
    md = t.to_markdown()
    lines = md.splitlines()
    assert t.caption in lines[0]
    assert lines[2].startswith("| Loss | n | weightedF1 | microF1 | macroF1 | macroPrecision | mAP |")
    focal = next(line for line in lines if line.startswith("| focal "))
    ce = next(line for line in lines if line.startswith("| crossentropy "))
    assert f"| **{t.mean[1, 0]:.2f}** ± {t.std[1, 0]:.2f} |" in focal
    assert focal.count("**") == 10 and "**" not in ce
    tex = t.to_latex()
    for s in (r"\toprule", r"\midrule", r"\bottomrule", r"\begin{tabular}{lrrrrrr}", r"mobilenetv2\_100",
              r"softmax$\geq$0.05", rf"\textbf{{{t.mean[1, 4]:.2f}}} $\pm$ {t.std[1, 4]:.2f}"):
        assert s in tex, s
    assert tex.count(r"\textbf") == 5
    path = t.to_csv(tmp_path / "out" / "table2.csv")
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["loss"] for r in rows] == t.rows
    for i, r in enumerate(rows):
        assert r["n"] == "3" and r["seeds"] == "0;1;2" and r["rule"] == "softmax>=0.05"
        for j, m in enumerate(METRICS):
            assert float(r[f"{m}_mean"]) == t.mean[i, j]  # full precision
            assert float(r[f"{m}_std"]) == t.std[i, j]
            assert r[f"{m}_best"] == str(int(t.best[i, j]))
    from rich.console import Console
    from rich.table import Table

    rt = t.to_rich()
    assert isinstance(rt, Table) and rt.title == t.caption
    con = Console(record=True, width=250)
    con.print(rt)
    text = con.export_text()
    assert "sigmoidf1" in text and f"{t.mean[0, 0]:.2f}" in text


def test_mixing_rules_raises_and_each_rule_has_its_own_table(table_root):
    root, values = table_root
    recs = R.collect(root)
    with pytest.raises(ValueError, match=r"2 rules: \['sigmoid>=0.5', 'softmax>=0.05'\]"):
        R.table2(recs)
    t_soft = R.table2(recs, rule="softmax>=0.05")
    t_sig = R.table2(recs, rule=SIGMOID)
    assert "sigmoid>=0.5" in t_sig.caption and "softmax>=0.05" not in t_sig.caption
    assert not np.allclose(t_soft.mean, t_sig.mean)
    v = np.mean([values["focal", s]["sigmoid>=0.5"]["micro_f1"] for s in SEEDS])
    assert t_sig.mean[1, 1] == pytest.approx(v)
    with pytest.raises(ValueError, match="rules found"):
        R.table2(recs, rule="top-3 (softmax)")
    val = R.table2(recs, split="val")  # only one rule on val: no filter needed
    assert val.split == "val" and "val split" in val.caption
    with pytest.raises(ValueError, match="splits found"):
        R.table2(recs, split="train")


def test_mixing_datasets_and_duplicate_seeds_raise(table_root, grid_root, tmp_path):
    root, _ = table_root
    recs = R.collect(root)
    other = [dict(r, config=dict(r["config"], dataset="voc2007")) for r in recs[:3]]
    with pytest.raises(ValueError, match=r"datasets: \['movieposters', 'voc2007'\]"):
        R.table2(recs + other, rule=SOFTMAX)
    assert R.table2(recs + other, rule=SOFTMAX, dataset="movieposters").n == [3, 3, 3]
    both = R.collect([root, grid_root[0]])
    with pytest.raises(ValueError, match="'crossentropy' has several runs with seed 0.*identical"):
        R.table2(both, rule=SOFTMAX)
    sig = [r for r in both if r["config"]["loss"] == "sigmoidf1"]
    with pytest.raises(ValueError, match=r"'sigmoidf1' has several runs with seed 0, 1 .*\['beta', 'eta'\].*'loss\+beta\+eta'"):
        R.table2(sig, rule=SOFTMAX)
    t = R.table2(R.collect(grid_root[0]), group_by="loss+beta+eta")
    assert t.rows[0] == "crossentropy" and t.rows[1] == "sigmoidf1 (beta=1, eta=0)"
    assert len(t.rows) == 10 and t.n[0] == 1 and math.isnan(t.std[0, 0])
    assert "| crossentropy | 1 | 1.00 |" in t.to_markdown()  # n = 1: no "± std"
    with pytest.raises(ValueError, match="no metric"):
        R.table2(recs, metrics=("nonexistent",), rule=SOFTMAX)


def test_heatmap_grid_and_plot(grid_root, tmp_path):
    root, cells = grid_root
    recs = R.collect(root)
    g = R.heatmap_grid(recs, "weighted_f1", x="beta", y="eta")
    assert g["xs"] == [1, 5, 10] and g["ys"] == [0.0, 1.0, 2.0] and g["loss"] == "sigmoidf1"
    for i, eta in enumerate(g["ys"]):
        for j, beta in enumerate(g["xs"]):
            assert g["mean"][i, j] == pytest.approx(np.mean(cells[beta, eta]))
            assert g["n"][i, j] == 2
    paths = R.plot_heatmap(recs, "weighted_f1", x="beta", y="eta", path=tmp_path / "fig3.png")
    assert [p.name for p in paths] == ["fig3.png", "fig3.pdf"]
    assert paths[0].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and paths[0].stat().st_size > 1000
    assert paths[1].read_bytes()[:5] == b"%PDF-" and paths[1].stat().st_size > 1000
    fake = [dict(r, config=dict(r["config"], loss="smooth-f1")) for r in recs[:2]]
    with pytest.raises(ValueError, match="pass loss="):
        R.heatmap_grid(recs + fake, "weighted_f1")


def test_other_plots(table_root, tmp_path):
    root, _ = table_root
    rng = np.random.default_rng(2)
    y = (rng.random((100, 5)) < 0.3).astype(np.uint8)
    y[:, 4] = 0
    z = rng.normal(size=y.shape) + y
    names = ["drama", "comedy", "action", "horror", "western"]
    rows = M.per_class(z, y, SOFTMAX, names)
    written = [
        R.plot_per_class_f1(rows, tmp_path / "per_class"),
        R.plot_pr_curves(M.scores(z, "softmax"), y, names, tmp_path / "pr"),
        R.plot_learning_curves(sorted(root.glob("*/history.csv"))[:3], tmp_path / "curves.pdf"),
    ]
    for png, pdf in written:
        assert png.suffix == ".png" and pdf.suffix == ".pdf"
        assert png.stat().st_size > 1000 and pdf.stat().st_size > 1000
    bad = tmp_path / "h.csv"
    bad.write_text("epoch,loss\n0,1\n")
    with pytest.raises(RunError, match="train_loss"):
        R.plot_learning_curves([bad], tmp_path / "x")


def test_old_coverage_key_is_read_as_coverage_error(tmp_path):
    """Run folders written before the rename (metrics key ``coverage``) still aggregate."""
    for loss, cov in (("crossentropy", 2.0), ("focal", 1.5)):
        _write_run(tmp_path / loss, _config(loss, 0), [("test", SOFTMAX, {"coverage": cov, "map": 50.0})],
                   history=False)
    recs = R.collect(tmp_path)
    assert sorted(r["metrics"]["coverage_error"] for r in recs) == [1.5, 2.0]
    assert all("coverage" not in r["metrics"] for r in recs)
    t = R.table2(recs, metrics=("coverage_error", "map"), rule=SOFTMAX)
    assert t.rows == ["crossentropy", "focal"] and t.mean[:, 0].tolist() == [2.0, 1.5]
    assert t.best[:, 0].tolist() == [False, True]  # lower is better
    assert "CoverageError" in t.to_markdown()
