"""`mlhead reproduce`: the Table-2 protocol and the ZLPR comparison, end to end on a tiny cache."""

from __future__ import annotations

from click.testing import CliRunner

from conftest import make_cache
from mlhead.cli import main
from mlhead.reproduce import PAPER_TABLE2, paper_table_markdown


def test_table2_protocol_and_zlpr_write_markdown(tmp_path):
    cache = make_cache(tmp_path / "c.h5", n=(96, 32, 32), dim=8, n_classes=4)
    out = tmp_path / "docs"
    for args in (["table2", "--protocol", "paper-code", "--beta", "1,5", "--eta", "0,1"], ["zlpr"]):
        res = CliRunner().invoke(main, ["reproduce", *args, "--cache", str(cache), "--seeds", "2", "--epochs", "2",
                                        "--runs-dir", str(tmp_path / "runs"), "--out-dir", str(out)],
                                 catch_exceptions=False)
        assert res.exit_code == 0, res.output
    md = next(out.glob("*-zlpr.md")).read_text()
    for loss in ("| crossentropy |", "| focal |", "| dice1 |", "| dice2 |", "| zlpr |"):
        assert loss in md
    assert "sigmoid>=0.5" in md, md
    t2 = next(out.glob("*paper-code.md")).read_text()
    for loss in ("crossentropy", "focal", "asl", "unboundedf1", "sigmoidf1"):
        assert loss in t2
    assert "sigmoid>=0.05" in t2 and "beta=" in t2 and "mAP(0/1)" in t2
    assert next(out.glob("*heatmap.png")).stat().st_size > 1000


def test_paper_table_is_the_published_one():
    # the paper's sigmoidF1 row on moviePosters (Table 2)
    assert PAPER_TABLE2["movieposters"][1]["sigmoidf1"][0] == 14.805
    assert "14.80" in paper_table_markdown("movieposters") and paper_table_markdown("unknown") == ""
