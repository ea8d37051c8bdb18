"""Bad input at the CLI: one clear line naming what and where, exit code 2, no traceback."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from conftest import make_cache
from mlhead.cli import main


def fails(args, *needles):
    res = CliRunner().invoke(main, [str(a) for a in args])
    assert res.exit_code == 2, res.output
    assert "Traceback" not in res.output
    for n in needles:
        assert n in res.output, res.output
    return res


def test_missing_data_dir(tmp_path):
    fails(["embed", "--dataset", "movieposters", "--data-dir", tmp_path / "nope", "--cache-dir", tmp_path],
          "data directory not found", "nope")


def test_unknown_dataset(tmp_path):
    fails(["embed", "--dataset", "imagenet42", "--data-dir", tmp_path], "unknown dataset 'imagenet42'", "movieposters")


def test_unknown_loss(tmp_path):
    cache = make_cache(tmp_path / "c.h5")
    fails(["fit", "--cache", cache, "--loss", "hinge2", "--runs-dir", tmp_path / "r"], "hinge2", "sigmoidf1")


def test_out_of_range_loss_option(tmp_path):
    cache = make_cache(tmp_path / "c.h5")
    fails(["fit", "--cache", cache, "--loss", "sigmoidf1", "--beta", "-1", "--runs-dir", tmp_path / "r"], "beta", "> 0")


@pytest.mark.parametrize("threshold", ["0", "1.5", "-0.1"])
def test_threshold_outside_unit_interval(tmp_path, threshold):
    from mlhead.train import FitConfig, expand_grid, fit

    cache = make_cache(tmp_path / "c.h5")
    fit(cache, expand_grid(["crossentropy"]), FitConfig(epochs=1, hidden=8), tmp_path / "r")
    fails(["eval", "--runs-dir", tmp_path / "r", "--threshold", threshold], "threshold")


def test_no_cache_yet(tmp_path):
    fails(["fit", "--cache-dir", tmp_path / "empty"], "no cache under", "mlhead embed")


def test_no_run_yet(tmp_path):
    fails(["eval", "--runs-dir", tmp_path / "none"], "no run under", "mlhead fit")


def test_missing_weights_file(tmp_path, image_table):
    fails(["embed", "--dataset", "table", "--data-dir", image_table, "--image-column", "image",
           "--weights", tmp_path / "w.safetensors", "--cache-dir", tmp_path], "--weights", "no such file")


def test_no_weights_offline_says_how(tmp_path, image_table, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    fails(["embed", "--dataset", "table", "--data-dir", image_table, "--image-column", "image",
           "--backbone", "mobilenetv2_100", "--cache-dir", tmp_path], "--weights PATH", "offline")


def test_dataset_option_reaches_the_loader(tmp_path, text_table, tiny_text_model):
    res = CliRunner().invoke(main, ["embed", "--dataset", "table", "--data-dir", str(text_table), "--text-column",
                                    "text", "-D", "classes=cat,dog", "--backbone", str(tiny_text_model),
                                    "--random-init", "--cache-dir", str(tmp_path), "--workers", "0"])
    # labels outside the given class list are an error naming the row: the option reached the loader
    assert res.exit_code == 2 and "unknown label 'bird'" in res.output
    fails(["embed", "--dataset", "table", "--data-dir", text_table, "-D", "nokeyvalue"], "KEY=VALUE")
