"""Training controls (issue #17): weight decay, patience with compaction, pos_weight, input
normalization, divergence, precision auto, resumable fits."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from conftest import make_cache
from mlhead import class_weights
from mlhead import losses as L
from mlhead.errors import ConfigError
from mlhead.train import FitConfig, RunSpec, expand_grid, fit


def _assert_same_run(a, b):
    """Run ``a`` (from a stacked fit) equals run ``b`` (fitted alone): stop, best epoch, history, head."""
    for key in ("best_epoch", "stopped_epoch", "stop_reason"):
        assert a.config[key] == b.config[key], key
    assert [h["epoch"] for h in a.history] == [h["epoch"] for h in b.history]
    np.testing.assert_allclose([h["val_loss"] for h in a.history], [h["val_loss"] for h in b.history],
                               rtol=1e-4, atol=1e-6)
    for k in b.state:
        torch.testing.assert_close(a.state[k], b.state[k], rtol=1e-4, atol=1e-5)


# ------------------------------------------------------------------------------------ weight decay


def test_weight_decay_is_a_grid_axis_in_spec_label_and_record(tmp_path):
    specs = expand_grid(["crossentropy"], seeds=[0], lrs=[1e-2], weight_decays=[0.0, 1e-2])
    assert [s.weight_decay for s in specs] == [0.0, 1e-2]
    assert specs[0].label == "crossentropy-lr0.01-s0" and specs[1].label == "crossentropy-lr0.01-wd0.01-s0"
    with pytest.raises(ConfigError, match="--weight-decay -1"):
        expand_grid(["crossentropy"], weight_decays=[-1.0])
    cache = make_cache(tmp_path / "c.h5", n=(96, 32, 32), dim=12, n_classes=4)
    recs = fit(cache, specs, FitConfig(epochs=3, batch_size=32, hidden=8, precision="fp32"), tmp_path / "runs")
    raw = json.loads((recs[1].path / "config.json").read_text())
    assert raw["weight_decay"] == 1e-2 and raw["schema_version"] == 4
    assert recs[1].path.name.endswith("crossentropy-lr0.01-wd0.01-s0")
    # decoupled decay shrinks the weights; each run equals its single fit
    norm = [sum(float(v.norm()) for v in r.state.values()) for r in recs]
    assert norm[1] < norm[0]
    for spec, rec in zip(specs, recs):
        _assert_same_run(rec, fit(cache, [spec], FitConfig(epochs=3, batch_size=32, hidden=8, precision="fp32"),
                                  write=False)[0])


def test_weight_decay_is_adamw_decoupled():
    """One step of our group optimizer equals torch.optim.AdamW's documented update by hand."""
    from mlhead.heads import StackedHeads
    from mlhead.train import _Group

    heads = StackedHeads(3, 0, 2, [0])
    g = _Group(0, 0.1, 0.5, [0], heads)
    g.setup([RunSpec("crossentropy")], None, torch.device("cpu"))
    w0 = heads.w1.detach().clone()
    heads.w1.grad = torch.ones_like(heads.w1)
    heads.b1.grad = torch.zeros_like(heads.b1)
    g.opt.step()
    # step 1: m_hat = g, v_hat = g^2 -> update lr * g / (|g| + eps); decay w * (1 - lr * wd)
    expected = w0 * (1 - 0.1 * 0.5) - 0.1 * 1.0 / (1.0 + 1e-8)
    torch.testing.assert_close(heads.w1.detach(), expected)


# ---------------------------------------------------------------------------------------- patience


def test_patience_stacked_runs_stop_alone_and_compaction_keeps_results(tmp_path):
    """A stacked grid with per-run patience: every run equals that run fitted alone, though runs of one
    stacked group stop at different epochs (and leave the GEMM)."""
    cache = make_cache(tmp_path / "c.h5", n=(96, 32, 32), dim=12, n_classes=4)
    cfg = FitConfig(epochs=25, batch_size=32, hidden=8, precision="fp32", patience=2)
    specs = expand_grid(["crossentropy", "sigmoidf1", "zlpr", "focal"], seeds=[0, 1], lrs=[5e-2])
    stacked = fit(cache, specs, cfg, write=False)
    reasons = [r.config.stop_reason for r in stacked]
    stops = {r.config.stopped_epoch for r in stacked if r.config.seed == 0}
    assert "patience" in reasons and len(stops) > 1, (reasons, stops)
    for spec, rec in zip(specs, stacked):
        _assert_same_run(rec, fit(cache, [spec], cfg, write=False)[0])
        if rec.config.stop_reason == "patience":
            assert rec.config.stopped_epoch == rec.config.best_epoch + 2
            assert len(rec.history) == rec.config.stopped_epoch


def test_compaction_removes_runs_from_the_stacked_weights_and_adam_state():
    from mlhead.heads import StackedHeads
    from mlhead.train import _Group

    specs = [RunSpec("crossentropy"), RunSpec("zlpr"), RunSpec("focal")]
    g = _Group(0, 1e-2, 0.0, [0, 1, 2], StackedHeads(5, 4, 3, [0, 0, 0]))
    dev = torch.device("cpu")
    g.setup(specs, None, dev)
    x, y = torch.randn(8, 5), (torch.rand(8, 3) > 0.5).float()
    from mlhead.train import _group_loss
    _group_loss(g, g.heads(x), y).sum().backward()
    g.opt.step()
    before = [g.heads.head_state(j) for j in range(3)]
    moments = g.opt.state[g.heads.w2]["exp_avg"].clone()
    g.drop({1}, specs, None, dev)
    assert g.runs == [0, 2] and g.heads.k == 2 and g.heads.w1.shape == (5, 8)
    for j, old in zip(range(2), (before[0], before[2])):
        for k, v in g.heads.head_state(j).items():
            torch.testing.assert_close(v, old[k], rtol=0, atol=0)
    torch.testing.assert_close(g.opt.state[g.heads.w2]["exp_avg"], moments[[0, 2]], rtol=0, atol=0)
    assert [type(lf).__name__ for lf, _ in g.loss_groups] == ["CrossEntropyLoss", "FocalLoss"]


# -------------------------------------------------------------------------------------- divergence


def test_huge_lr_is_marked_diverged_and_the_healthy_run_is_unaffected(tmp_path):
    cache = make_cache(tmp_path / "c.h5", n=(96, 32, 32), dim=12, n_classes=4)
    cfg = FitConfig(epochs=4, batch_size=32, hidden=8, precision="fp32")
    specs = [RunSpec("crossentropy", (), 0, 1e9), RunSpec("crossentropy", (), 0, 1e-2)]
    bad, good = fit(cache, specs, cfg, tmp_path / "runs")
    assert bad.config.stop_reason == "diverged" and bad.config.stopped_epoch == 1
    assert good.config.stop_reason == "completed" and good.config.stopped_epoch == 4
    assert json.loads((bad.path / "config.json").read_text())["stop_reason"] == "diverged"
    _assert_same_run(good, fit(cache, [specs[1]], cfg, write=False)[0])


def test_report_excludes_diverged_runs_from_mean_and_names_them(tmp_path):
    from mlhead import report as R
    from mlhead.sweep import sweep

    cache = make_cache(tmp_path / "c.h5", n=(96, 32, 32), dim=12, n_classes=4)
    specs = expand_grid(["crossentropy"], seeds=[0, 1, 2], lrs=[1e-2]) + [RunSpec("crossentropy", (), 3, 1e9)]
    sweep(cache, specs, FitConfig(epochs=3, batch_size=32, hidden=8, precision="fp32"), tmp_path / "runs")
    records = R.collect(tmp_path / "runs")
    table = R.table2(records)
    ok = [r for r in records if r["config"]["seed"] != 3]
    assert table.n == [3]
    assert table.mean[0, 0] == pytest.approx(np.mean([r["metrics"]["weighted_f1"] for r in ok]))
    assert "1 diverged run(s) excluded" in table.caption and "seed 3 (epoch 1)" in table.caption


# ------------------------------------------------------------------------------------- pos_weight


def test_pos_weight_crossentropy_equals_torch():
    z, y = torch.randn(6, 3), (torch.rand(6, 3) > 0.5).float()
    w = torch.tensor([0.5, 2.0, 7.0])
    ref = F.binary_cross_entropy_with_logits(z, y, pos_weight=w)
    torch.testing.assert_close(L.build("bce", pos_weight=w)(z, y), ref)
    stacked = L.build("crossentropy", pos_weight=w)(torch.stack([z, 2 * z]), y)
    torch.testing.assert_close(stacked[1], F.binary_cross_entropy_with_logits(2 * z, y, pos_weight=w))


def test_pos_weight_focal_and_asl_equal_hand_loops():
    z, y = torch.randn(5, 3, dtype=torch.float64), (torch.rand(5, 3) > 0.5).double()
    w = [0.5, 2.0, 3.0]
    sig = lambda v: 1 / (1 + np.exp(-v))  # noqa: E731
    focal, asl = 0.0, 0.0
    for b in range(5):
        for c in range(3):
            t, p = float(y[b, c]), sig(float(z[b, c]))
            ce = -(w[c] * t * np.log(p) + (1 - t) * np.log(1 - p))
            pt = p if t else 1 - p
            focal += (0.25 if t else 0.75) * (1 - pt) ** 2 * ce
            pn = min(1 - p + 0.05, 1.0)
            asl -= w[c] * t * np.log(p) + (1 - t) * np.log(pn) * (1 - pn) ** 4
    wt = torch.tensor(w)
    assert float(L.build("focal", pos_weight=wt)(z, y)) == pytest.approx(focal / 15, rel=1e-6)
    assert float(L.build("asl", pos_weight=wt)(z, y)) == pytest.approx(asl / 5, rel=1e-6)
    # weights of 1 are the unweighted losses
    for name in ("focal", "asl"):
        torch.testing.assert_close(L.build(name, pos_weight=torch.ones(3))(z, y), L.build(name)(z, y))


def test_pos_weight_refused_for_other_losses_and_listed_by_describe(tmp_path):
    with pytest.raises(ConfigError, match="--pos-weight is not defined for --loss sigmoidf1.*crossentropy"):
        L.build("sigmoidf1", pos_weight=torch.ones(3))
    cache = make_cache(tmp_path / "c.h5")
    with pytest.raises(ConfigError, match="--loss zlpr"):
        fit(cache, [RunSpec("zlpr")], FitConfig(epochs=1, pos_weight="auto"), write=False)
    described = {d["name"]: d["pos_weight"] for d in L.describe()}
    assert set(L.POS_WEIGHT_LOSSES) == {"crossentropy", "focal", "asl"}
    assert described["crossentropy"] and described["asl"] and not described["sigmoidf1"]


def test_pos_weight_auto_is_neg_over_pos_with_stated_clipping():
    Y = torch.tensor([[1, 0, 0, 1], [0, 0, 0, 1], [0, 1, 0, 1], [0, 0, 0, 1]], dtype=torch.uint8)
    w, notes = class_weights.resolve("auto", Y, ["a", "b", "c", "d"])
    torch.testing.assert_close(w, torch.tensor([3.0, 3.0, 1.0, 1.0]))
    assert "c, d" in notes[0] and "weight 1" in notes[0]
    assert class_weights.resolve("none", Y, ["a", "b", "c", "d"]) == (None, [])


def test_pos_weight_file_json_and_csv(tmp_path):
    classes = ["a", "b"]
    (tmp_path / "w.json").write_text(json.dumps({"b": 2.5, "a": 1}))
    (tmp_path / "w.csv").write_text("class,weight\na,1\nb,2.5\n")
    for f in ("w.json", "w.csv"):
        torch.testing.assert_close(class_weights.read_file(tmp_path / f, classes), torch.tensor([1.0, 2.5]))
    for text, match in (({"a": 1, "b": 2, "z": 3}, r"unknown class\(es\) \['z'\]"),
                        ({"a": 1}, r"missing class\(es\) \['b'\]"), ({"a": 1, "b": -2}, "finite number >= 0")):
        (tmp_path / "bad.json").write_text(json.dumps(text))
        with pytest.raises(ConfigError, match=match) as e:
            class_weights.read_file(tmp_path / "bad.json", classes)
        assert "bad.json" in str(e.value)


def test_pos_weight_fit_records_values_and_trains_with_them(tmp_path):
    cache = make_cache(tmp_path / "c.h5", n=(96, 32, 32), dim=12, n_classes=4)
    from mlhead.cache import open_cache
    _, Ytr, _ = open_cache(cache).load("train")
    rec = fit(cache, [RunSpec("crossentropy", (), 0, 1e-2)],
              FitConfig(epochs=2, batch_size=32, hidden=8, precision="fp32", pos_weight="auto"), write=False)[0]
    pos = Ytr.float().sum(0)
    assert rec.config.pos_weight == "auto"
    np.testing.assert_allclose(rec.config.pos_weight_values, ((96 - pos) / pos).numpy(), rtol=1e-6)
    plain = fit(cache, [RunSpec("crossentropy", (), 0, 1e-2)],
                FitConfig(epochs=2, batch_size=32, hidden=8, precision="fp32"), write=False)[0]
    assert rec.history[0]["train_loss"] != plain.history[0]["train_loss"]


# ------------------------------------------------------------------------------------- normalize


@pytest.mark.parametrize("mode", ["l2", "standardize"])
def test_normalize_is_stored_with_the_head_and_applied_at_predict(tmp_path, mode):
    from mlhead.cache import open_cache
    from mlhead.heads import MLPHead
    from mlhead.runs import input_transform, load_run_config, predict

    cache = make_cache(tmp_path / "c.h5", n=(96, 32, 32), dim=6, n_classes=3)
    rec = fit(cache, [RunSpec("crossentropy", (), 0, 1e-2)],
              FitConfig(epochs=2, batch_size=32, hidden=8, precision="fp32", normalize=mode), tmp_path / "runs")[0]
    assert load_run_config(rec.path).normalize == mode
    Xt, _, _ = open_cache(cache).load("test")
    Xtr, _, _ = open_cache(cache).load("train")
    ref_in = F.normalize(Xt, dim=-1) if mode == "l2" else (Xt - Xtr.mean(0)) / Xtr.std(0)
    torch.testing.assert_close(input_transform(rec.path)(Xt), ref_in)
    h = MLPHead(6, 8, 3)
    h.load_state_dict({k: v for k, v in rec.state.items() if not k.startswith("input_")})
    with torch.no_grad():
        np.testing.assert_allclose(predict(rec.path, "test")[0], h(ref_in).numpy(), rtol=1e-5, atol=1e-5)


def test_standardize_flag_is_an_alias_and_v2_configs_migrate(tmp_path):
    from mlhead.runs import RunConfig

    assert FitConfig(standardize=True).normalize == "standardize"
    with pytest.raises(ConfigError, match="--standardize contradicts --normalize l2"):
        FitConfig(standardize=True, normalize="l2")
    with pytest.raises(ConfigError, match="--normalize 'l3'"):
        FitConfig(normalize="l3").validate()
    v2 = {"schema_version": 2, "loss": "crossentropy", "classes": ["a"], "dim": 2, "hidden": 0, "epochs": 7,
          "standardize": True}
    cfg = RunConfig.from_dict(v2)
    assert cfg.normalize == "standardize" and cfg.standardize and cfg.stopped_epoch == 7
    assert cfg.stop_reason == "completed" and cfg.weight_decay == 0.0 and cfg.patience is None


# ------------------------------------------------------------------------------------- precision


def test_precision_auto_prefers_bf16_on_gpus_that_have_it(monkeypatch):
    from mlhead import device as D

    cuda = torch.device("cuda")
    monkeypatch.setattr(D, "cuda_has_bf16", lambda: True)
    assert D.resolve_precision("auto", cuda, training=True) == "bf16"
    assert D.resolve_precision("auto", cuda) == "fp16"  # embedding keeps its choice (cache fingerprints)
    monkeypatch.setattr(D, "cuda_has_bf16", lambda: False)
    assert D.resolve_precision("auto", cuda, training=True) == "fp16"
    monkeypatch.setattr(D, "cpu_has_fast_bf16", lambda: False)
    assert D.resolve_precision("auto", torch.device("cpu"), training=True) == "fp32"
    monkeypatch.setattr(D, "cpu_has_fast_bf16", lambda: True)
    assert D.resolve_precision("auto", torch.device("cpu"), training=True) == "bf16"
    with pytest.raises(ConfigError, match="fp16 needs a CUDA device"):
        D.resolve_precision("fp16", torch.device("cpu"))
    assert not D.grad_scaler(torch.device("cpu"), "bf16").is_enabled()


# ---------------------------------------------------------------------------------------- resume


def _run_files(runs_dir):
    """label -> (head bytes, history text, config without timing, metrics) of every run under runs_dir."""
    out = {}
    for cfg_path in sorted(runs_dir.rglob("config.json")):
        d = cfg_path.parent
        cfg = json.loads(cfg_path.read_text())
        cfg.pop("train_seconds")
        metrics = json.loads((d / "metrics.json").read_text())["metrics"] if (d / "metrics.json").exists() else None
        label = d.name.split("-", 3)[-1]
        out[label] = ((d / "head.safetensors").read_bytes(), (d / "history.csv").read_text(), cfg, metrics)
    return out


def test_interrupted_fit_resumes_to_identical_records(tmp_path):
    cache = make_cache(tmp_path / "c.h5", n=(96, 32, 32), dim=12, n_classes=4)
    specs = expand_grid(["crossentropy", "zlpr"], seeds=[0, 1], lrs=[3e-2])
    cfg = FitConfig(epochs=8, batch_size=32, hidden=8, precision="fp32", patience=3, checkpoint_seconds=0)
    fit(cache, specs, cfg, tmp_path / "a")

    def interrupt(epoch, _):
        if epoch == 5:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        fit(cache, specs, cfg, tmp_path / "b", progress=interrupt)
    assert list((tmp_path / "b").glob(".partial/fit-*/checkpoint.pt")) and not list((tmp_path / "b").rglob("config.json"))
    epochs = []
    fit(cache, specs, cfg, tmp_path / "b", progress=lambda e, n: epochs.append(e))
    assert epochs[0] == 6  # continued after the last checkpointed epoch
    assert _run_files(tmp_path / "a") == _run_files(tmp_path / "b")
    assert not (tmp_path / "b" / ".partial").exists()  # removed once the runs are written


def test_checkpoints_are_at_most_one_per_checkpoint_seconds(tmp_path):
    cache = make_cache(tmp_path / "c.h5", n=(96, 32, 32), dim=12, n_classes=4)
    cfg = FitConfig(epochs=6, batch_size=32, hidden=8, precision="fp32", checkpoint_seconds=1e9)

    def interrupt(epoch, _):
        if epoch == 4:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        fit(cache, [RunSpec("crossentropy")], cfg, tmp_path / "b", progress=interrupt)
    assert not list((tmp_path / "b").rglob("checkpoint.pt"))  # none within 1e9 s
    epochs = []
    fit(cache, [RunSpec("crossentropy")], cfg, tmp_path / "b", progress=lambda e, n: epochs.append(e))
    assert epochs[0] == 1


def _sweep(cache, runs_dir, epochs: int):
    """The grid both the killed and the uninterrupted sweep run."""
    from mlhead.sweep import sweep

    specs = expand_grid(["crossentropy", "sigmoidf1"], seeds=[0, 1], lrs=[1e-2], weight_decays=[0.0, 1e-2])
    sweep(cache, specs, FitConfig(epochs=epochs, batch_size=32, hidden=8, precision="fp32", patience=8,
                                  checkpoint_seconds=0), runs_dir)


_SWEEP = "import sys; sys.path.insert(0, {tests!r}); from test_controls import _sweep; _sweep(*sys.argv[1:3], 40)"


def test_sweep_killed_with_sigkill_resumes_to_identical_runs_and_metrics(tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time

    cache = make_cache(tmp_path / "c.h5", n=(96, 32, 32), dim=12, n_classes=4)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}

    def cmd(runs):
        return [sys.executable, "-c", _SWEEP.format(tests=str(Path(__file__).parent)), str(cache), str(runs)]

    _sweep(cache, tmp_path / "a", 40)  # uninterrupted, in this process
    proc = subprocess.Popen(cmd(tmp_path / "b"), env=env)
    deadline = time.monotonic() + 300
    while not list((tmp_path / "b").glob(".partial/fit-*/checkpoint.pt")):
        assert proc.poll() is None and time.monotonic() < deadline, "no checkpoint before the sweep ended"
        time.sleep(0.005)
    assert proc.poll() is None, "the sweep finished before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not list((tmp_path / "b").rglob("config.json"))
    subprocess.run(cmd(tmp_path / "b"), env=env, check=True, timeout=600)
    a, b = _run_files(tmp_path / "a"), _run_files(tmp_path / "b")
    assert len(a) == 8 and a == b


def _fail_on_call(n, real):
    """A stand-in for ``real`` that raises (as a kill would stop the process) on its ``n``-th call."""
    calls = []

    def fn(*args, **kwargs):
        calls.append(1)
        if len(calls) == n:
            raise KeyboardInterrupt
        return real(*args, **kwargs)
    return fn


def test_sweep_interrupted_during_evaluation_resumes_without_refitting(tmp_path, monkeypatch):
    import mlhead.sweep as S

    cache = make_cache(tmp_path / "c.h5", n=(96, 32, 32), dim=12, n_classes=4)
    _sweep(cache, tmp_path / "a", 12)
    monkeypatch.setattr(S, "_evaluate", _fail_on_call(3, S._evaluate))
    with pytest.raises(KeyboardInterrupt):
        _sweep(cache, tmp_path / "b", 12)
    assert len(list((tmp_path / "b").glob("*/config.json"))) == 8  # every run written, two evaluated
    monkeypatch.undo()
    epochs = []
    monkeypatch.setattr(S, "fit", lambda *a, **k: fit(*a, **{**k, "progress": lambda e, n: epochs.append(e)}))
    _sweep(cache, tmp_path / "b", 12)
    assert epochs == []  # resumed after the last epoch: nothing retrained
    a, b = _run_files(tmp_path / "a"), _run_files(tmp_path / "b")
    assert len(b) == 8 and a == b  # every run evaluated, as in the uninterrupted sweep
    assert len(list((tmp_path / "b").glob("*/config.json"))) == 8  # none written twice
    assert not (tmp_path / "b" / ".partial").exists()


def test_fit_interrupted_while_writing_runs_writes_each_run_once(tmp_path, monkeypatch):
    import mlhead.train as T

    cache = make_cache(tmp_path / "c.h5", n=(96, 32, 32), dim=12, n_classes=4)
    specs = expand_grid(["crossentropy", "zlpr"], seeds=[0], lrs=[3e-2])
    cfg = FitConfig(epochs=5, batch_size=32, hidden=8, precision="fp32")
    fit(cache, specs, cfg, tmp_path / "a")
    monkeypatch.setattr(T, "write_run", _fail_on_call(2, T.write_run))
    with pytest.raises(KeyboardInterrupt):
        fit(cache, specs, cfg, tmp_path / "b")
    assert len(list((tmp_path / "b").glob("*/config.json"))) == 1
    monkeypatch.undo()
    fit(cache, specs, cfg, tmp_path / "b")
    assert _run_files(tmp_path / "a") == _run_files(tmp_path / "b")
    assert len(list((tmp_path / "b").glob("*/config.json"))) == 2


# --------------------------------------------------------------------------------------------- CLI


def test_cli_controls(tmp_path):
    from click.testing import CliRunner

    from mlhead.cli import main

    cache = make_cache(tmp_path / "c.h5", n=(96, 32, 32), dim=12, n_classes=4)
    base = ["fit", "--cache", str(cache), "--epochs", "3", "--hidden", "8", "--batch-size", "32", "--precision",
            "fp32", "--runs-dir", str(tmp_path / "runs")]
    res = CliRunner().invoke(main, base + ["--loss", "crossentropy", "--lr", "1e9,1e-2", "--weight-decay", "0,1e-2",
                                           "--patience", "2", "--pos-weight", "auto", "--normalize", "l2"])
    assert res.exit_code == 0, res.output
    configs = [json.loads(p.read_text()) for p in sorted((tmp_path / "runs").rglob("config.json"))]
    assert len(configs) == 4 and {c["weight_decay"] for c in configs} == {0.0, 1e-2}
    assert all(c["patience"] == 2 and c["pos_weight"] == "auto" and c["normalize"] == "l2" for c in configs)
    assert sorted(c["stop_reason"] for c in configs if c["lr"] == 1e9) == ["diverged", "diverged"]
    assert res.output.count("diverged at epoch 1") == 2
    res = CliRunner().invoke(main, base + ["--loss", "sigmoidf1", "--pos-weight", "auto"])
    assert res.exit_code == 2 and "--pos-weight is not defined for --loss sigmoidf1" in res.output
    res = CliRunner().invoke(main, ["losses"])
    assert res.exit_code == 0 and "not accepted" in res.output and "pos_weight" in res.output


def test_cli_sweep_over_weight_decay_reports_one_row_per_value(tmp_path):
    from click.testing import CliRunner

    from mlhead.cli import main

    cache = make_cache(tmp_path / "c.h5", n=(96, 32, 32), dim=12, n_classes=4)
    res = CliRunner().invoke(main, ["sweep", "--cache", str(cache), "--loss", "crossentropy", "--seed", "0,1",
                                    "--weight-decay", "0,0.01", "--epochs", "2", "--hidden", "8", "--precision", "fp32",
                                    "--runs-dir", str(tmp_path / "runs")])
    assert res.exit_code == 0, res.output
    assert res.output.count("weight_decay=") == 2  # one row per value (without it: two seed-0 runs in a row, exit 2)
