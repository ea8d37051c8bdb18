"""`mlhead sweep` and `mlhead report` through the CLI on a synthetic cache."""

from __future__ import annotations

from click.testing import CliRunner

from conftest import make_cache
from mlhead.cli import main


def run(args):
    res = CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    return res


def test_sweep_then_report_with_heatmap(tmp_path):
    cache = make_cache(tmp_path / "c.h5", n=(120, 40, 40), dim=12, n_classes=4)
    runs = tmp_path / "runs"
    res = run(["sweep", "--cache", cache, "--loss", "sigmoidf1,crossentropy", "--seed", "0,1", "--beta", "1,4",
               "--eta", "0,1", "--epochs", 2, "--hidden", 8, "--batch-size", 32, "--runs-dir", runs,
               "--threshold", "0.05,0.5"])
    assert "softmax>=0.05" in res.output and "softmax>=0.5" in res.output
    assert len(list(runs.rglob("config.json"))) == 2 * (4 + 1)
    out = tmp_path / "report"
    res = run(["report", runs, "--rule", "softmax>=0.05", "--group-by", "loss+beta+eta", "--out-dir", out,
               "--heatmap", "weighted_f1", "--learning-curves"])
    md = (out / "table2.md").read_text()
    assert "sigmoidf1" in md and "crossentropy" in md and "softmax>=0.05" in md
    assert (out / "table2.tex").read_text().count("\\textbf") >= 5
    for name in ("heatmap_weighted_f1.png", "heatmap_weighted_f1.pdf", "learning_curves.png"):
        assert (out / name).stat().st_size > 1000


def test_report_refuses_mixed_rules_without_filter(tmp_path):
    cache = make_cache(tmp_path / "c.h5")
    runs = tmp_path / "runs"
    run(["sweep", "--cache", cache, "--loss", "crossentropy", "--epochs", 1, "--hidden", 4, "--runs-dir", runs,
         "--threshold", "0.05,0.5"])
    res = CliRunner().invoke(main, ["report", str(runs)])
    assert res.exit_code == 2 and "softmax>=0.05" in res.output and "Traceback" not in res.output
