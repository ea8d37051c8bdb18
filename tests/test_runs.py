"""mlhead.runs: the versioned RunConfig, migration of old run directories, atomic run files."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from conftest import make_cache
from mlhead import report as R
from mlhead.errors import RunError
from mlhead.metrics import upgrade_metric_keys
from mlhead.rules import DecisionRule
from mlhead.runs import SCHEMA_VERSION, RunConfig, evaluate_run, load_head, load_run_config

FIXTURE_V1 = Path(__file__).parent / "fixtures" / "run_v1"


@pytest.fixture
def run_v1(tmp_path):
    """The committed v1 run directory (made with mlhead 6b3a37a) and the cache it was fitted on,
    regenerated: make_cache is deterministic and the fingerprint depends on the attrs only."""
    run = tmp_path / "runs" / "run_v1"
    shutil.copytree(FIXTURE_V1, run)
    cache = make_cache(tmp_path / "c.h5", n=(60, 20, 20), dim=6, n_classes=3, seed=7)
    return run, cache


def test_v1_run_directory_loads_migrated(run_v1):
    run, _ = run_v1
    raw = json.loads((run / "config.json").read_text())
    assert "schema_version" not in raw and raw["val_activation"] == "softmax"
    cfg = load_run_config(run)
    assert cfg.schema_version == SCHEMA_VERSION == 4
    assert cfg.normalize == "none" and cfg.stop_reason == "completed" and cfg.stopped_epoch == cfg.epochs
    assert cfg.rule == DecisionRule("softmax", 0.05) and cfg.val_rule["name"] == "softmax>=0.05"
    assert cfg["loss"] == cfg.loss == "sigmoidf1" and cfg.loss_options == {"beta": 1.0, "eta": 0.0}
    head, _ = load_head(run)
    assert head.fc2.weight.shape == (3, 8)


def test_v1_run_directory_evaluates_to_its_recorded_metrics_and_reports(run_v1):
    run, cache = run_v1
    recorded = json.loads((run / "metrics.json").read_text())
    doc = evaluate_run(run, "test", DecisionRule("softmax", 0.05), cache=cache)
    assert doc["rule"]["name"] == recorded["rule"]["name"] == "softmax>=0.05"
    for key, value in upgrade_metric_keys(recorded["metrics"]).items():  # v1 said "coverage"
        assert doc["metrics"][key] == pytest.approx(value, rel=1e-12, abs=1e-12), key
    table = R.table2(R.collect(run.parent))
    assert table.rows == ["sigmoidf1"] and "softmax>=0.05" in table.caption
    assert table.mean[0, 0] == pytest.approx(recorded["metrics"]["weighted_f1"])


def test_config_round_trip_is_versioned_and_atomic(tmp_path, run_v1):
    cfg = load_run_config(run_v1[0])
    path = cfg.write(tmp_path / "config.json")
    assert json.loads(path.read_text())["schema_version"] == SCHEMA_VERSION
    assert RunConfig.read(path) == cfg
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


@pytest.mark.parametrize("edit, match", [
    (lambda d: d.update(learning_rate=0.1), r"unknown key\(s\) \['learning_rate'\]"),
    (lambda d: d.update(schema_version=SCHEMA_VERSION + 1), "newer than this mlhead"),
    (lambda d: d.pop("classes"), r"lacks required key\(s\) \['classes'\]"),
    (lambda d: d.update(seed="zero"), "seed = 'zero' is not of type int"),
    (lambda d: d.update(val_threshold=7.0), "invalid val_rule.*--threshold 7"),
])
def test_bad_config_is_refused_naming_key_and_file(run_v1, edit, match):
    run, _ = run_v1
    d = json.loads((run / "config.json").read_text())
    edit(d)
    (run / "config.json").write_text(json.dumps(d))
    with pytest.raises(RunError, match=match) as e:
        load_run_config(run)
    assert str(run / "config.json") in str(e.value)


def test_new_runs_write_the_current_schema(tmp_path):
    from mlhead.train import FitConfig, RunSpec, fit

    cache = make_cache(tmp_path / "c.h5", n=(40, 16, 16), dim=4, n_classes=3)
    rec = fit(cache, [RunSpec("zlpr")], FitConfig(epochs=1, hidden=4, precision="fp32",
                                                 val_rule=DecisionRule("none", 0.0)), tmp_path / "runs")[0]
    raw = json.loads((rec.path / "config.json").read_text())
    assert raw["schema_version"] == SCHEMA_VERSION and raw["val_rule"]["name"] == "logit>=0"
    assert "val_activation" not in raw and RunConfig.from_dict(raw) == rec.config
