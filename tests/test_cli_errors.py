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


# ------------------------------------------------------------------ only the MlheadError family is one line


def test_unexpected_exception_propagates_with_its_traceback(tmp_path, monkeypatch):
    """A plain ValueError/KeyError is a bug: never turned into `error: ...`, it reaches the caller."""
    import mlhead.losses

    def boom():
        raise KeyError("bug in describe")

    monkeypatch.setattr(mlhead.losses, "describe", boom)
    res = CliRunner().invoke(main, ["losses"])
    assert isinstance(res.exception, KeyError) and res.exit_code == 1
    assert "error:" not in res.output
    with pytest.raises(KeyError, match="bug in describe"):
        CliRunner().invoke(main, ["losses"], catch_exceptions=False)

    import mlhead.workspace

    def bad(*a, **k):
        raise ValueError("plain ValueError from the library")

    monkeypatch.setattr(mlhead.workspace, "resolve_runs", bad)
    res = CliRunner().invoke(main, ["eval", "--runs-dir", str(tmp_path)])
    assert isinstance(res.exception, ValueError) and "error:" not in res.output


def test_unexpected_exception_prints_a_traceback_in_a_real_process(tmp_path):
    """In a real process a bug prints Python's traceback and exits 1, never one `error:` line."""
    import subprocess
    import sys

    code = ("import mlhead.losses, sys\n"
            "def boom(): raise KeyError('bug')\n"
            "mlhead.losses.describe = boom\n"
            "from mlhead.cli import main\n"
            "sys.argv = ['mlhead', 'losses']\n"
            "main()\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 1
    assert "Traceback (most recent call last)" in proc.stderr and "KeyError: 'bug'" in proc.stderr
    assert "error:" not in proc.stderr


def test_debug_shows_the_traceback_of_an_expected_error(tmp_path):
    plain = fails(["eval", "--runs-dir", tmp_path / "none"], "no run under")
    assert "latest_run" not in plain.output
    res = CliRunner().invoke(main, ["--debug", "eval", "--runs-dir", str(tmp_path / "none")])
    assert res.exit_code == 2, res.output
    assert "Traceback" in res.output and "latest_run" in res.output and "RunError" in res.output
    assert "error: no run under" in " ".join(res.output.split())


def test_keyboard_interrupt_says_rerun_to_resume(monkeypatch):
    import mlhead.losses

    def interrupted():
        raise KeyboardInterrupt

    monkeypatch.setattr(mlhead.losses, "describe", interrupted)
    res = CliRunner().invoke(main, ["losses"])
    assert res.exit_code == 130 and "rerun the same command to resume" in res.output


def test_storage_error_is_one_line_naming_the_path(tmp_path, monkeypatch):
    from mlhead.errors import StorageError
    import mlhead.workspace

    def full(*a, **k):
        raise StorageError(f"cannot write {tmp_path / 'x.json'}: No space left on device")

    monkeypatch.setattr(mlhead.workspace, "resolve_runs", full)
    fails(["eval", "--runs-dir", tmp_path], "error:", "x.json", "No space left")


# ------------------------------------------------------------------ parameter types: one parsing rule each


@pytest.mark.parametrize("value, expected", [("0.05", [0.05]), ("0.05, 0.5", [0.05, 0.5]), ("1e-3,2", [1e-3, 2.0])])
def test_comma_list_parses(value, expected):
    import click

    from mlhead.cli.types import CommaList

    assert CommaList(float).convert(value, None, None) == expected
    assert CommaList(int).convert("0,1,2", None, None) == [0, 1, 2]
    with pytest.raises(click.BadParameter, match="'x' is not a valid float"):
        CommaList(float).convert("0.1,x", None, None)


@pytest.mark.parametrize("args, needles", [
    (["sweep", "--threshold", "0.05,abc"], ["--threshold", "'abc' is not a valid float"]),
    (["fit", "--seed", "0,1.5"], ["--seed", "'1.5' is not a valid integer"]),
    (["fit", "--beta", "1,,2"], ["--beta", "empty item"]),
    (["reproduce", "table2", "--cache", "c.h5", "--eta", "0;1"], ["--eta", "not a valid float"]),
    (["report", "--metrics", "micro_f1,"], ["--metrics", "empty item"]),
])
def test_comma_list_rejects_bad_items_naming_the_flag(tmp_path, args, needles):
    fails(args, *needles)


def test_shard_type():
    import click

    from mlhead.cli.types import Shard

    assert Shard().convert("0/4", None, None) == (0, 4)
    assert Shard().convert(" 3 / 4 ", None, None) == (3, 4)
    for bad in ("4/4", "1/0", "-1/2", "a/b", "1", "1/2/3"):
        with pytest.raises(click.BadParameter, match="expected i/n"):
            Shard().convert(bad, None, None)


@pytest.mark.parametrize("shard", ["4/4", "x", "0-4"])
def test_bad_shard_flag(tmp_path, text_table, shard):
    fails(["embed", "--dataset", "table", "--data-dir", text_table, "--shard", shard], "--shard", "expected i/n")


def test_key_value_type():
    import click

    from mlhead.cli.types import CommaList, KeyValue

    assert KeyValue().convert("labels-only=true", None, None) == ("labels_only", "true")
    assert KeyValue().convert("classes=cat,dog", None, None) == ("classes", "cat,dog")
    assert KeyValue().convert("x=a=b", None, None) == ("x", "a=b")
    assert KeyValue(CommaList(str)).convert("gamma=1,2", None, None) == ("gamma", ["1", "2"])
    for bad in ("novalue", "=3", "1x=2", "a b=1"):
        with pytest.raises(click.BadParameter, match="KEY=VALUE"):
            KeyValue().convert(bad, None, None)


def test_key_value_flags_reject_bad_and_repeated_keys(tmp_path):
    cache = make_cache(tmp_path / "c.h5")
    fails(["fit", "--cache", cache, "-O", "gamma"], "--loss-option", "KEY=VALUE")
    fails(["fit", "--cache", cache, "--loss", "focal", "-O", "gamma=1", "-O", "gamma=2"], "gamma given twice")
    fails(["fit", "--cache", cache, "--loss", "sigmoidf1", "--beta", "1", "-O", "beta=2"], "-O beta", "--beta")
    # the comma rule inside -O values is CommaList's: an empty item is refused, naming the flag
    fails(["fit", "--cache", cache, "--loss", "focal", "-O", "gamma=1,"], "--loss-option", "empty item")


def test_loss_option_values_reach_the_losses(tmp_path):
    cache = make_cache(tmp_path / "c.h5")
    fails(["fit", "--cache", cache, "--loss", "focal", "-O", "gamma=-1", "--runs-dir", tmp_path / "r"],
          "--loss focal: -O gamma=-1 is out of range")
    fails(["fit", "--cache", cache, "--loss", "crossentropy", "-O", "nosuch=1", "--runs-dir", tmp_path / "r"],
          "nosuch", "not accepted by any of the losses")


# ------------------------------------------------------------------ dataset flags come from the loaders


def test_declared_dataset_option_is_an_embed_flag(monkeypatch, tmp_path):
    """A new loader's declared option appears as `mlhead embed --<name>` and reaches the library."""
    import click

    import mlhead.embed
    from mlhead.cli import embed as embed_cli
    from mlhead.datasets import DATASETS, DatasetLoader, DatasetOption
    from mlhead.errors import ConfigError

    class Toy(DatasetLoader):
        name = "toy"
        OPTIONS = {"crop_size": DatasetOption("224", "toy: crop size"),
                   "colour": DatasetOption("rgb", "toy: colour mode", choices=("rgb", "grey")),
                   "shuffle_rows": DatasetOption(False, "toy: shuffle")}

    monkeypatch.setitem(DATASETS, "toy", Toy)
    command = click.command()(embed_cli._core_options(embed_cli._with_dataset_flags(embed_cli.embed.callback)))
    embed_cli.check_unique_flags(command)
    opts = {o for p in command.params for o in [*p.opts, *p.secondary_opts]}
    assert {"--crop-size", "--colour", "--shuffle-rows", "--no-shuffle-rows"} <= opts
    help_text = CliRunner().invoke(command, ["--help"]).output
    assert "toy: crop size" in help_text and "rgb|grey" in help_text

    seen = {}

    def fake_embed(config, **kwargs):
        seen.update(dataset_options=config.dataset_options, shard=config.shard)
        raise ConfigError("stop here")

    monkeypatch.setattr(mlhead.embed, "embed", fake_embed)
    res = CliRunner().invoke(command, ["--dataset", "toy", "--data-dir", str(tmp_path), "--crop-size", "256",
                                       "--shuffle-rows", "-D", "colour=grey", "--shard", "1/3"])
    assert isinstance(res.exception, ConfigError)  # the bare command, outside the group that catches it
    assert seen == {"dataset_options": {"crop_size": "256", "shuffle_rows": True, "colour": "grey"}, "shard": (1, 3)}
    res = CliRunner().invoke(command, ["--dataset", "toy", "--data-dir", str(tmp_path), "--colour", "blue"])
    assert res.exit_code == 2 and "--colour" in res.output


def test_dataset_flags_of_the_registered_loaders():
    from mlhead.cli.embed import embed

    opts = {o for p in embed.params for o in p.opts}
    assert {"--voc-difficult", "--text-column", "--labels-column", "--label-sep", "--name", "--labels",
            "--nominal", "--source", "--file"} <= opts


def test_generated_flag_clashing_with_a_core_flag_is_refused(monkeypatch):
    import click

    from mlhead.cli import embed as embed_cli
    from mlhead.datasets import DATASETS, DatasetLoader, DatasetOption

    class Clash(DatasetLoader):
        OPTIONS = {"batch_size": DatasetOption(None, "clashes with embed --batch-size")}

    monkeypatch.setitem(DATASETS, "clash", Clash)
    command = click.command()(embed_cli._core_options(embed_cli._with_dataset_flags(embed_cli.embed.callback)))
    with pytest.raises(RuntimeError, match="--batch-size declared twice"):
        embed_cli.check_unique_flags(command)


def test_unknown_dataset_options_fail_cleanly(tmp_path, text_table):
    fails(["embed", "--dataset", "table", "--data-dir", text_table, "-D", "nosuch=1"],
          "-D nosuch is not an option of dataset 'table'", "--text-column")
    fails(["embed", "--dataset", "table", "--data-dir", text_table, "--voc-difficult", "ignore"],
          "--voc-difficult is not an option of dataset 'table'")
    fails(["embed", "--dataset", "voc2007", "--data-dir", tmp_path, "-D", "labels_only=maybe"],
          "-D labels_only 'maybe' invalid; valid: true, false")
    fails(["embed", "--dataset", "voc2007", "--data-dir", tmp_path, "-D", "source=web"],
          "-D source 'web' invalid; valid: auto, xml, lists")
    fails(["embed", "--dataset", "table", "--data-dir", text_table, "--text-column", "text", "-D", "text_column=x"],
          "repeats --text-column")
    fails(["embed", "--dataset", "table", "--data-dir", text_table, "--nosuch-flag", "1"], "No such option")


def test_check_options_library():
    from mlhead.datasets import check_options
    from mlhead.errors import ConfigError

    assert check_options("arxiv2020", {"dedupe": "yes", "file": "a.csv"}) == {"dedupe": True, "file": "a.csv"}
    assert check_options("voc2007", {"labels_only": False}) == {"labels_only": False}
    with pytest.raises(ConfigError, match="not an option of dataset 'reuters21578'; its options: none"):
        check_options("reuters21578", {"file": "x"})


def test_diverged_run_is_one_line(tmp_path, monkeypatch):
    """Evaluating a head whose logits are NaN (a diverged run) is an expected failure: one line."""
    import numpy as np

    import mlhead.runs
    from mlhead.train import FitConfig, expand_grid, fit

    cache = make_cache(tmp_path / "c.h5")
    fit(cache, expand_grid(["crossentropy"]), FitConfig(epochs=1, hidden=8), tmp_path / "r")
    real = mlhead.runs.predict

    def nan_logits(*args, **kwargs):
        logits, *rest = real(*args, **kwargs)
        return (np.full_like(logits, np.nan), *rest)

    monkeypatch.setattr(mlhead.runs, "predict", nan_logits)
    fails(["eval", "--runs-dir", tmp_path / "r"], "logits contain NaN", "diverged")
