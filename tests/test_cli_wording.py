"""Every CLI error speaks in CLI flags (``--activation none``, ``-O gamma=2``), never in Python keyword
syntax (``activation='none'``) nor with a traceback (issue #16)."""

from __future__ import annotations

import re

import pytest
from click.testing import CliRunner

from conftest import fit_tiny_run, make_cache
from mlhead.cli import main

#: Python keyword-argument syntax with a quoted value: ``activation='none'``, ``beta="x"``
PY_KWARG = re.compile(r"\b[a-z_]+=['\"]")
#: a Python keyword with a repr'd number where the CLI has its own flag: ``option beta=-1.0``
PY_OPTION = re.compile(r"\boption [a-z_]+=")


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("wording")
    cache = make_cache(tmp / "c.h5")
    run = fit_tiny_run(cache, tmp / "runs")
    return tmp, cache, run


def _bad_invocations(tmp, cache, run, table):
    fit = ["fit", "--cache", cache, "--runs-dir", tmp / "r", "--epochs", "1"]
    return [
        fit + ["--loss", "sigmoidf1", "--beta", "-1"],
        fit + ["--loss", "sigmoidf1", "--beta", "0"],
        fit + ["--loss", "focal", "-O", "gamma=-2"],
        fit + ["--loss", "focal", "-O", "gamma=abc"],
        fit + ["--loss", "smooth-fbeta", "-O", "average=weird"],
        fit + ["--loss", "crossentropy", "-O", "nope=1"],
        fit + ["--loss", "nosuchloss"],
        fit + ["--loss", "zlpr", "--pos-weight", "auto"],
        fit + ["--lr", "-1"],
        fit + ["--epochs", "0"],
        fit + ["--batch-size", "0"],
        ["eval", "--run", run, "--activation", "softmax", "--threshold", "2"],
        ["eval", "--run", run, "--top-k", "0"],
        ["eval", "--run", run, "--top-k", "99"],
        ["eval", "--run", run, "--split", "nosplit"],
        ["eval", "--run", tmp / "nope"],
        ["predict", "--run", run, "--cache", cache, "--activation", "softmax", "--threshold", "0"],
        ["predict", "--run", run, "--cache", cache, "-o", tmp / "x.txt"],
        ["report", tmp / "nope"],
        ["export", "--run", run, "--format", "tflite", "-o", tmp / "e"],
        ["embed", "--dataset", "table", "--data-dir", table, "--text-column", "text", "--val-fraction", "2",
         "--cache-dir", tmp / "c2", "--random-init"],
        ["embed", "--dataset", "table", "--data-dir", table, "--text-column", "text", "--empty-labels", "maybe",
         "--cache-dir", tmp / "c2", "--random-init"],
        ["embed", "--dataset", "mulan", "--data-dir", tmp, "--nominal", "weird", "--cache-dir", tmp / "c3"],
        ["embed", "--dataset", "voc2007", "--data-dir", tmp, "-D", "source=weird", "--cache-dir", tmp / "c3"],
        ["embed", "--dataset", "table", "--data-dir", table, "--text-column", "text", "-D", "nosuch=1",
         "--cache-dir", tmp / "c2", "--random-init"],
    ]


def test_no_python_keyword_syntax_in_cli_errors(workspace, text_table):
    tmp, cache, run = workspace
    bad = []
    for args in _bad_invocations(tmp, cache, run, text_table):
        res = CliRunner().invoke(main, [str(a) for a in args])
        out = " ".join(res.output.split())
        assert res.exit_code == 2, (args, res.output, res.exception)
        assert "Traceback" not in res.output, (args, res.output)
        if PY_KWARG.search(out) or PY_OPTION.search(out):
            bad.append((args[:1] + args[-3:], out))
    assert not bad, "\n".join(f"{a}: {o}" for a, o in bad)


def test_loss_option_errors_name_the_flag():
    from mlhead.errors import ConfigError
    from mlhead.losses import build

    with pytest.raises(ConfigError, match=r"--loss sigmoidf1: --beta -1 is out of range; valid: > 0"):
        build("sigmoidf1", beta=-1)
    with pytest.raises(ConfigError, match=r"--loss focal: -O gamma=abc is not a valid float"):
        build("focal", gamma="abc")


def test_the_wording_regex_catches_python_syntax():
    assert PY_KWARG.search("error: --activation none invalid (activation='none')")
    assert PY_OPTION.search("sigmoidf1: option beta=-1.0 is out of range")
    assert not PY_KWARG.search("error: -O gamma=2 out of range") and not PY_OPTION.search("--beta -1 invalid")
