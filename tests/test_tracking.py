"""MLflow tracking (mlhead.tracking): run records -> one MLflow run, read back and compared exactly.

Every store is a temporary local SQLite database; nothing reaches a server. Tests that need MLflow
are skipped when it is not installed (``pip install 'mlhead[track]'``).
"""

from __future__ import annotations

import csv
import importlib.util
import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest

from mlhead import tracking as T
from mlhead.cache import write_cache
from mlhead.errors import ConfigError, DependencyError, RunError
from mlhead.rules import DecisionRule
from mlhead.report import collect
from mlhead.runs import evaluate_run, find_runs, latest_run, load_config
from mlhead.train import FitConfig, RunSpec, fit
from mlhead.workspace import resolve_runs

needs_mlflow = pytest.mark.skipif(importlib.util.find_spec("mlflow") is None,
                                  reason="mlflow not installed (pip install 'mlhead[track]')")

WEIGHTS_SHA = "ab" * 32


def _cache(path: Path) -> Path:
    """A tiny cache whose attrs record a weights sha256 (as `mlhead embed` writes)."""
    rng = np.random.default_rng(3)
    W = rng.normal(size=(6, 3))
    splits = {}
    for name, m in (("train", 48), ("val", 16), ("test", 16)):
        X = rng.normal(size=(m, 6)).astype(np.float32)
        Y = (X @ W > 0.3).astype(np.uint8)
        Y[Y.sum(1) == 0, 0] = 1
        splits[name] = (X, Y, [f"{name}{i}" for i in range(m)])
    return write_cache(path, splits, ["a", "b", "c"],
                       attrs={"dataset": "synthetic", "backbone": "none", "weights_sha256": WEIGHTS_SHA})


def _fit(cache: Path, runs_dir: Path, seeds=(0,)) -> list[Path]:
    specs = [RunSpec("sigmoidf1", (("beta", 2.0), ("eta", 0.5)), s, 0.01) for s in seeds]
    recs = fit(cache, specs, FitConfig(epochs=3, batch_size=16, hidden=8, precision="fp32"), runs_dir)
    return [r.path for r in recs]


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    """(runs dir, two run directories) fitted on a generated cache; each test logs into its own store."""
    root = tmp_path_factory.mktemp("track")
    runs_dir = root / "runs"
    return runs_dir, _fit(_cache(root / "c.h5"), runs_dir, seeds=(0, 1))


def _client(uri):
    import mlflow

    return mlflow.MlflowClient(tracking_uri=uri)


def _runs(uri, experiment=T.DEFAULT_EXPERIMENT):
    client = _client(uri)
    return client.search_runs([client.get_experiment_by_name(experiment).experiment_id])


def _only_run(uri, experiment=T.DEFAULT_EXPERIMENT):
    runs = _runs(uri, experiment)
    assert len(runs) == 1, [r.info.run_name for r in runs]
    return runs[0]


def _history_csv(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    with open(run_dir / "history.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    return {k: [(int(r["epoch"]), float(r[k])) for r in rows] for k in rows[0] if k != "epoch"}


def _logged_history(client, run_id, key):
    return sorted((m.step, m.value) for m in client.get_metric_history(run_id, key))


# ------------------------------------------------------------------------------ spec (no mlflow)


@pytest.mark.parametrize("spec, uri", [("mlflow", None), ("mlflow:sqlite:///x/mlflow.db", "sqlite:///x/mlflow.db"),
                                       ("mlflow:http://localhost:5000", "http://localhost:5000"),
                                       ("mlflow:databricks", "databricks")])
def test_parse_spec(spec, uri):
    assert T.parse_spec(spec) == T.TrackSpec("mlflow", uri)


@pytest.mark.parametrize("spec", ["", "wandb", "mlflowx", "mlflow:", "mlflow:runs/mlflow.db", "mlflow: http://h",
                                  "tensorboard:sqlite:///a.db"])
def test_bad_spec_is_config_error(spec):
    with pytest.raises(ConfigError, match="--track"):
        T.parse_spec(spec)


def test_default_uri_is_sqlite_under_runs_dir(tmp_path):
    assert T.default_uri(tmp_path / "runs") == f"sqlite:///{(tmp_path / 'runs').resolve()}/mlflow.db"
    assert T.TrackSpec().uri_for(tmp_path / "runs" / "r1") == T.default_uri(tmp_path / "runs")
    assert T.TrackSpec(uri="sqlite:///a.db").uri_for(tmp_path / "runs" / "r1") == "sqlite:///a.db"


def test_store_dir_prefers_an_existing_store_up_to_the_runs_dir(tmp_path):
    runs, run = tmp_path / "runs", tmp_path / "runs" / "reproduce" / "grid" / "r1"
    run.mkdir(parents=True)
    assert T.store_dir(run, runs) == runs.resolve()  # none yet: the command's runs dir
    assert T.store_dir(run) == run.parent.resolve()  # no runs dir given: the run's parent
    (runs / "reproduce" / "mlflow.db").touch()
    assert T.store_dir(run, runs) == (runs / "reproduce").resolve()
    assert T.store_dir(run, tmp_path / "elsewhere") == run.parent.resolve()  # run not inside runs dir
    (tmp_path / "mlflow.db").touch()  # above the runs dir: never used
    assert T.store_dir(tmp_path / "runs" / "r2", runs) == runs.resolve()


def test_run_discovery_skips_mlflow_artifact_copies(tmp_path):
    import os

    runs = tmp_path / "runs"
    for d in (runs / "r1", runs / "sub" / "r2", runs / T.ARTIFACTS_DIR / "mlhead" / "abc" / "artifacts"):
        (d / "eval").mkdir(parents=True)
        (d / "config.json").write_text("{}")
    os.utime(runs / "sub" / "r2" / "config.json", ns=(1, 1))  # the copy is newest, r1 next
    assert find_runs(runs) == [runs / "r1", runs / "sub" / "r2"]
    assert latest_run(runs) == runs / "r1"
    assert resolve_runs(runs_dir=runs, all_runs=True) == [runs / "r1", runs / "sub" / "r2"]  # eval --all
    assert find_runs(runs / "r1") == [runs / "r1"] and find_runs(tmp_path / "none") == []


def test_missing_mlflow_is_dependency_error(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "mlflow", None)  # `import mlflow` now raises ImportError
    with pytest.raises(DependencyError, match=r"pip install 'mlhead\[track\]'"):
        T.require_mlflow()
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(DependencyError, match=r"pip install 'mlhead\[track\]'"):
        T.log_run(tmp_path, f"sqlite:///{tmp_path}/m.db")


def test_run_params_mapping():
    cfg = {"loss": "focal", "loss_options": {"gamma": 2.0, "alpha": 0.25}, "seed": 3, "lr": 0.001, "epochs": 5,
           "batch_size": 256, "hidden": 0, "backbone": "b", "dataset": "d", "cache_fingerprint": "f" * 64,
           "weight_decay": 0.01, "standardize": False}
    assert T.run_params(cfg, {"weights_sha256": "w", "fingerprint": "x"}) == {
        "loss": "focal", "loss.alpha": "0.25", "loss.gamma": "2.0", "seed": "3", "lr": "0.001",
        "weight_decay": "0.01", "epochs": "5", "batch_size": "256", "hidden": "0", "dataset": "d",
        "backbone": "b", "weights_sha256": "w", "cache_fingerprint": "f" * 64}
    assert "weight_decay" not in T.run_params({"loss": "focal"})


# --------------------------------------------------------------------------------- with mlflow


@needs_mlflow
def test_fit_then_eval_is_one_run_with_exact_records(fitted, tmp_path):
    _, (run_dir, _) = fitted
    uri = f"sqlite:///{tmp_path}/store/mlflow.db"
    client = _client(uri)
    run_id = T.log_run(run_dir, uri)
    run = _only_run(uri)
    assert run.info.run_id == run_id and run.info.run_name == run_dir.name
    assert run.data.tags[T.RUN_DIR_TAG] == str(run_dir.resolve())
    cfg = load_config(run_dir)
    assert run.data.params == {
        "loss": "sigmoidf1", "loss.beta": "2.0", "loss.eta": "0.5", "seed": "0", "lr": "0.01", "epochs": "3",
        "weight_decay": "0.0", "batch_size": "16", "hidden": "8", "dataset": "synthetic", "backbone": "none",
        "weights_sha256": WEIGHTS_SHA, "cache_fingerprint": cfg["cache_fingerprint"]}
    history = _history_csv(run_dir)
    assert set(history) == {"train_loss", "val_loss", "val_micro_f1", "val_macro_f1"}
    for key, points in history.items():
        assert _logged_history(client, run_id, key) == points
    assert run.data.metrics["best_epoch"] == cfg["best_epoch"]
    assert not [k for k in run.data.metrics if k.startswith("test/")]

    docs = [evaluate_run(run_dir, rule=DecisionRule("softmax", 0.05)),
            evaluate_run(run_dir, rule=DecisionRule("sigmoid", 0.5))]
    assert T.log_run(run_dir, uri) == run_id
    run = _only_run(uri)
    for key, points in history.items():  # logging again adds no second point per epoch
        assert _logged_history(client, run_id, key) == points
    for doc, slug in zip(docs, ("softmax-ge-0.05", "sigmoid-ge-0.5")):
        saved = json.loads(doc["path"].read_text())["metrics"]
        assert saved == doc["metrics"]
        for metric, value in saved.items():
            key = T._metric_key("test", slug, metric)  # ranking keys: "p@1" -> "p-1" (MLflow refuses "@")
            assert run.data.metrics[key] == value
            assert len(client.get_metric_history(run_id, key)) == 1
    names = {a.path for a in client.list_artifacts(run_id)}
    assert {"config.json", "head.safetensors", "history.csv", "metrics.json", "eval"} <= names
    assert {a.path for a in client.list_artifacts(run_id, "eval")} == \
        {f"eval/{p.name}" for p in (run_dir / "eval").iterdir()}


@needs_mlflow
def test_default_store_sits_in_the_runs_dir(fitted, tmp_path, monkeypatch):
    runs_dir, run_dirs = fitted
    monkeypatch.chdir(tmp_path)  # nothing may land in the working directory
    for d in run_dirs:
        evaluate_run(d, rule=DecisionRule("softmax", 0.05))
    tracked = T.log_runs(run_dirs + run_dirs[:1], "mlflow", experiment="grid")  # a repeat is logged once
    assert [t.run_dir for t in tracked] == run_dirs and len({t.run_id for t in tracked}) == 2
    assert {t.uri for t in tracked} == {T.default_uri(runs_dir)}
    assert (runs_dir / "mlflow.db").is_file()
    runs = _runs(T.default_uri(runs_dir), "grid")
    assert sorted(r.data.params["seed"] for r in runs) == ["0", "1"]
    for t in tracked:
        assert (runs_dir / T.ARTIFACTS_DIR / "grid" / t.run_id / "artifacts" / "config.json").is_file()
    assert latest_run(runs_dir) in run_dirs  # the artifact copies are never taken for runs
    assert sorted({r["run_dir"] for r in collect(runs_dir)}) == sorted(str(d.resolve()) for d in run_dirs)
    assert list(tmp_path.iterdir()) == []


@needs_mlflow
def test_non_finite_epochs_are_logged_once(tmp_path):
    run_dir = _fit(_cache(tmp_path / "c.h5"), tmp_path / "runs")[0]
    with open(run_dir / "history.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    rows[-1]["val_loss"] = "nan"  # a diverged run
    rows[-1]["train_loss"], rows[-2]["train_loss"] = "inf", "-inf"
    with open(run_dir / "history.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    uri = f"sqlite:///{tmp_path}/m.db"
    run_id = T.log_run(run_dir, uri)
    T.log_run(run_dir, uri)
    logged = _logged_history(_client(uri), run_id, "val_loss")
    assert [s for s, _ in logged] == [1, 2, 3] and math.isnan(logged[-1][1])
    logged = _logged_history(_client(uri), run_id, "train_loss")  # MLflow stores +-inf as +-float max
    assert [s for s, _ in logged] == [1, 2, 3] and logged[1][1] == -sys.float_info.max == -logged[2][1]


@needs_mlflow
def test_errors_name_what_is_wrong(fitted, tmp_path):
    with pytest.raises(RunError, match="no config.json"):
        T.log_run(tmp_path, f"sqlite:///{tmp_path}/m.db")
    with pytest.raises(ConfigError, match="foo://bar"):
        T.log_run(fitted[1][0], "foo://bar")



# ------------------------------------------------------------------------------------ CLI wiring


def _cli(args, code=0):
    from click.testing import CliRunner

    from mlhead.cli import main

    res = CliRunner().invoke(main, [str(a) for a in args])
    assert res.exit_code == code, res.output
    return res


_FIT = ["--loss", "sigmoidf1", "--beta", "1", "--epochs", 2, "--batch-size", 16, "--hidden", 8, "--precision", "fp32"]


@needs_mlflow
def test_cli_fit_then_eval_track_one_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cache, runs = _cache(tmp_path / "c.h5"), tmp_path / "runs"
    res = _cli(["fit", "--cache", cache, *_FIT, "--runs-dir", runs, "--track", "mlflow"])
    assert "tracked 1 run(s) in MLflow" in res.output
    run_dir = next(p for p in runs.iterdir() if (p / "head.safetensors").exists())
    uri = T.default_uri(runs)
    run = _only_run(uri)
    assert run.data.params["loss.beta"] == "1.0" and run.data.params["epochs"] == "2"
    _cli(["eval", "--runs-dir", runs, "--threshold", "0.05", "--track", "mlflow"])  # the newest run: the fit's
    _cli(["eval", "--run", run_dir, "--activation", "sigmoid", "--threshold", "0.5", "--track", "mlflow"])
    run = _only_run(uri)
    for slug in ("softmax-ge-0.05", "sigmoid-ge-0.5"):
        saved = json.loads((run_dir / "eval" / f"test__{slug}.json").read_text())["metrics"]
        assert {m: run.data.metrics[T._metric_key("test", slug, m)] for m in saved} == saved
    assert sorted(p.name for p in run_dir.parent.iterdir()) == sorted([run_dir.name, "mlflow.db", T.ARTIFACTS_DIR])
    _cli(["eval", "--runs-dir", runs, "--all", "--track", f"mlflow:{uri}"])  # --all skips the artifact copies
    assert len(_runs(uri)) == 1


@needs_mlflow
def test_cli_sweep_tracks_every_run_in_one_store(tmp_path):
    cache, runs = _cache(tmp_path / "c.h5"), tmp_path / "runs"
    uri = f"sqlite:///{tmp_path}/other/mlflow.db"
    _cli(["sweep", "--cache", cache, *_FIT, "--seed", "0,1", "--threshold", "0.05,0.5", "--runs-dir", runs,
          "--track", f"mlflow:{uri}"])
    logged = _runs(uri)
    assert sorted(r.data.params["seed"] for r in logged) == ["0", "1"]
    for r in logged:
        assert {"test/softmax-ge-0.05/macro_f1", "test/softmax-ge-0.5/macro_f1"} <= set(r.data.metrics)
    assert not (runs / "mlflow.db").exists()


@needs_mlflow
def test_cli_reproduce_zlpr_tracks_its_runs(tmp_path):
    cache, runs = _cache(tmp_path / "c.h5"), tmp_path / "runs"
    _cli(["reproduce", "zlpr", "--cache", cache, "--seeds", 1, "--epochs", 1, "--hidden", 8, "--runs-dir", runs,
          "--out-dir", tmp_path / "out", "--track", "mlflow"])
    logged = _runs(T.default_uri(runs))
    assert sorted(r.data.params["loss"] for r in logged) == sorted(["crossentropy", "focal", "dice1", "dice2", "zlpr"])
    assert all("test/sigmoid-ge-0.5/macro_f1" in r.data.metrics for r in logged)


@pytest.mark.parametrize("command", [["fit"], ["sweep"], ["eval"], ["reproduce", "table2", "--cache", "c.h5"],
                                     ["reproduce", "zlpr", "--cache", "c.h5"]])
def test_cli_bad_track_is_refused_before_any_work(command, tmp_path):
    res = _cli([*command, "--runs-dir", tmp_path / "runs", "--track", "wandb"], code=2)
    assert "--track" in res.output and "unknown tracker" in res.output
    assert not (tmp_path / "runs").exists()


def test_cli_track_without_mlflow_names_the_extra(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "mlflow", None)
    cache = _cache(tmp_path / "c.h5")
    res = _cli(["fit", "--cache", cache, *_FIT, "--runs-dir", tmp_path / "runs", "--track", "mlflow"], code=2)
    assert "pip install 'mlhead[track]'" in res.output
    assert not (tmp_path / "runs").exists()  # refused before fitting
