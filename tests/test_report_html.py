"""mlhead.report.render_html: one self-contained page (tables from aggregate, figures as data URIs)."""

from __future__ import annotations

import base64
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from test_report import METRICS, SIGMOID, SOFTMAX, _config, _write_run

from mlhead import report as R
from mlhead.errors import MlheadError
from mlhead.report import html as H

ROOT = Path(__file__).resolve().parents[1]
EVIL = '<script>alert("x")</script>&'


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """2 losses x 2 seeds under two rules (with history) plus a 2 x 2 sigmoidF1 beta x eta grid."""
    root = tmp_path_factory.mktemp("htmlruns")
    rng = np.random.default_rng(0)
    y = (rng.random((60, 5)) < 0.3).astype(np.uint8)
    for li, loss in enumerate(("crossentropy", "focal")):
        for seed in (0, 1):
            z = rng.normal(size=y.shape) + (0.5 + li) * y
            _write_run(root / "table" / f"{loss}-s{seed}", _config(loss, seed),
                       [("test", rule, rule.evaluate(z, y)) for rule in (SOFTMAX, SIGMOID)])
    for beta in (1, 10):
        for eta in (0.0, 1.0):
            met = {m: float(rng.uniform(0, 100)) for m in METRICS}
            _write_run(root / "grid" / f"b{beta}-e{eta}-s0", _config("sigmoidf1", 0, beta=beta, eta=eta),
                       [("test", SOFTMAX, met)], history=False)
    return root


def _imgs(page: str) -> list[str]:
    return re.findall(r"<img\b[^>]*\bsrc=\"([^\"]*)\"", page)


def test_page_has_tables_figures_and_no_network(runs, tmp_path):
    out = R.render_html([runs / "table"], tmp_path / "sub" / "report.html", command=["mlhead", "report"])
    page = out.read_text(encoding="utf-8")
    records = R.collect(runs / "table")
    for rule in (SOFTMAX, SIGMOID):  # one table per rule, values and caption from aggregate
        t = R.table2(records, rule=rule.name)
        assert f'<p class="caption">{t.caption.replace(">", "&gt;")}</p>' in page
        for i in range(len(t.rows)):
            for j in range(len(t.metrics)):
                m, s = t._parts(i, j)
                assert f">{m} <span class=\"sd\">± {s}</span>" in page
    assert re.search(r"(src|href)\s*=\s*[\"']?(https?:)?//", page) is None
    assert "http://" not in page and "https://" not in page
    assert '<meta name="viewport"' in page and 'class="scroll"' in page
    srcs = _imgs(page)
    assert len(srcs) >= 1  # learning curves (no grid, no cache for per-class figures)
    for src in srcs:
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1]).startswith(b"\x89PNG\r\n\x1a\n")
    assert re.search(r'href="\.\./[^"]*/table/crossentropy-s0/"', page)  # relative link to the run
    assert "no per-class figures" in page and "no heatmap" in page
    for key in ("command", "cpu", "versions", "date", "torch", "scikit-learn"):
        assert key in page


def test_grid_heatmap_and_per_class(runs, tmp_path, monkeypatch):
    rng = np.random.default_rng(1)
    y = (rng.random((40, 3)) < 0.4).astype(np.uint8)
    p = rng.random(y.shape)
    rows = [{"class": c, "f1": 50.0, "support": int(y[:, j].sum())} for j, c in enumerate("abc")]
    monkeypatch.setattr(H, "per_class_data", lambda run: (rows, p, y, list("abc")))
    out = R.render_html([runs / "grid"], tmp_path / "g.html", group_by="loss+beta+eta")
    page = out.read_text(encoding="utf-8")
    assert "no heatmap" not in page and "no per-class figures" not in page
    assert len(_imgs(page)) == 3  # heatmap, per-class F1, PR curves (grid runs have no history)


def test_user_strings_are_escaped(tmp_path):
    cfg = _config(EVIL, 0)
    cfg["dataset"] = EVIL
    _write_run(tmp_path / "runs" / "evil<b>", cfg, [("test", SOFTMAX, {m: 1.0 for m in METRICS})])
    out = R.render_html([tmp_path / "runs"], tmp_path / "e.html", command=["mlhead", EVIL])
    page = out.read_text(encoding="utf-8")
    assert "<script>" not in page and "evil<b>" not in page
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;&amp;" in page


def test_errors_are_mlhead_errors(runs, tmp_path):
    with pytest.raises(MlheadError, match="no such run directory"):
        R.render_html([tmp_path / "nope"], tmp_path / "x.html")
    with pytest.raises(MlheadError, match="several runs with seed"):
        R.render_html([runs / "grid"], tmp_path / "x.html")  # grid without --group-by loss+beta+eta
    with pytest.raises(MlheadError, match="--per-class"):
        R.render_html([runs / "table"], tmp_path / "x.html", per_class_run=runs / "table" / "focal-s0")
    assert not (tmp_path / "x.html").exists()


@pytest.mark.skipif(shutil.which("chromium") is None and shutil.which("chromium-browser") is None,
                    reason="chromium not installed (make check-html skips too)")
def test_check_html_catches_broken_image_and_script_error(runs, tmp_path):
    good = R.render_html([runs / "table"], tmp_path / "good.html")
    tool = [sys.executable, str(ROOT / "tools" / "check_html.py")]
    ok = subprocess.run([*tool, str(good), "--screenshot", str(tmp_path / "s.png")], capture_output=True, text=True)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert (tmp_path / "s.png").read_bytes().startswith(b"\x89PNG")
    page = good.read_text(encoding="utf-8")
    for name, bad in (("img", page.replace("data:image/png;base64,", "data:image/png;base64,AAAA", 1)),
                      ("script", page.replace("</body>", "<script>undefinedFunction();</script></body>"))):
        (tmp_path / f"{name}.html").write_text(bad, encoding="utf-8")
        res = subprocess.run([*tool, str(tmp_path / f"{name}.html")], capture_output=True, text=True)
        assert res.returncode == 1, (name, res.stdout, res.stderr)


def test_cli_report_html(runs, tmp_path):
    from click.testing import CliRunner

    from mlhead.cli import main

    out = tmp_path / "cli" / "r.html"
    res = CliRunner().invoke(main, ["report", str(runs / "table"), "--rule", SOFTMAX.name, "--html", str(out)])
    assert res.exit_code == 0, res.output
    page = out.read_text(encoding="utf-8")
    assert SOFTMAX.name.replace(">", "&gt;") in page and SIGMOID.name.replace(">", "&gt;") not in page.split(
        "<h2>Runs</h2>")[0]
    res = CliRunner().invoke(main, ["report", str(runs / "table"), "--rule", SOFTMAX.name, "--html", str(out),
                                    "--per-class", str(runs / "table" / "focal-s0")])
    assert res.exit_code == 2 and "error:" in res.output
