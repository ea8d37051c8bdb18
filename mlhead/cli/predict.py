"""``mlhead predict``: label new inputs (images, folders, tables, text files, stdin, or a cache) with a run."""

from __future__ import annotations

import time
from pathlib import Path

import click

from ._ui import err_console, note, progress_bar

_RULE = [
    click.option("--activation", type=click.Choice(["softmax", "sigmoid", "none"]), default=None,
                 help="override the run's rule [default: the rule the run was last evaluated with]"),
    click.option("--threshold", type=float, default=None, help="label j predicted when score_j >= threshold"),
    click.option("--top-k", type=click.IntRange(min=1), default=None, help="predict the K highest-scoring labels"),
]


def rule_options(fn):
    """``--activation/--threshold/--top-k`` (shared by predict and export)."""
    for o in reversed(_RULE):
        fn = o(fn)
    return fn


class ScoresChoice(click.ParamType):
    """``--scores all`` or ``--scores K``: every class's score, or the K highest; returns None or K."""

    name = "all|K"

    def convert(self, value, param, ctx):
        if value is None or isinstance(value, int):
            return value
        if str(value).strip() == "all":
            return None
        try:
            k = int(value)
        except ValueError:
            k = 0
        if k < 1:
            self.fail(f"{value!r}: expected 'all' or a positive integer K", param, ctx)
        return k


def _progress(bar, total):
    task = bar.add_task("predict", total=total, rate="")
    t0 = time.perf_counter()

    def progress(done: int) -> None:
        dt = time.perf_counter() - t0
        bar.update(task, completed=done, rate=f"{done / dt:.1f} rows/s" if dt > 0 else "")

    return progress


@click.command()
@click.argument("inputs", nargs=-1, type=click.Path(allow_dash=True, path_type=str))
@click.option("--run", "run_dir", type=click.Path(path_type=Path), default=None,
              help="run directory [default: the newest under --runs-dir]")
@click.option("--runs-dir", type=click.Path(path_type=Path), default=Path("runs"), show_default=True)
@click.option("--output", "-o", type=click.Path(path_type=Path), default=None,
              help="FILE.csv or FILE.jsonl [default: JSONL on stdout]")
@click.option("--cache", "cache_path", type=click.Path(path_type=Path), default=None,
              help="predict on the embeddings of this cache instead of INPUTs (labels not needed)")
@click.option("--split", default=None, help="with --cache: only this split [default: every split]")
@rule_options
@click.option("--scores", "top_scores", type=ScoresChoice(), default="all", show_default=True,
              help="scores per row: every class, or the K highest")
@click.option("--text-column", default=None, help="table INPUT: the text column [default: text]")
@click.option("--image-column", default=None, help="table INPUT: the image-path column [default: image]")
@click.option("--id-column", default=None, help="table INPUT: the id column [default: the row number]")
@click.option("--weights", type=click.Path(path_type=Path), default=None,
              help="the encoder's weights, when they moved since embed (checked by sha256)")
@click.option("--run-cache", type=click.Path(path_type=Path), default=None,
              help="the run's cache, when it moved (the encoder is rebuilt from its attrs)")
@click.option("--batch-size", type=click.IntRange(min=1), default=64, show_default=True)
@click.option("--precision", type=click.Choice(["auto", "fp32", "bf16", "fp16"]), default=None,
              help="encoder precision [default: the cache's, where this device runs it]")
@click.option("--device", default=None, help="cpu, cuda, cuda:1 [default: cuda if available]")
@click.option("--on-error", type=click.Choice(["raise", "skip"]), default="raise", show_default=True,
              help="bad rows (unreadable image, empty text): stop with an error, or skip and list them")
def predict(inputs, run_dir, runs_dir, output, cache_path, split, activation, threshold, top_k, top_scores,
            text_column, image_column, id_column, weights, run_cache, batch_size, precision, device, on_error):
    """Label INPUTs with a fitted run: image files, folders, a table (CSV/TSV/JSONL), a text file (one text
    per line) or - (stdin). One row per input: id, labels, scores, rule."""
    from ..errors import ConfigError
    from ..inputs import InputOptions
    from ..predict import load, predict_cache, predict_inputs, rule_with
    from ..runs import last_rule
    from ..workspace import resolve_runs

    (run,) = resolve_runs(run_dir, runs_dir)
    rule = rule_with(last_rule(run), activation, threshold, top_k)
    clf = load(run, rule=rule, weights=weights, cache=run_cache, device=device, precision=precision,
               batch_size=batch_size)
    if cache_path is not None and inputs:
        raise ConfigError("give INPUTs or --cache FILE, not both")
    with progress_bar() as bar:
        if cache_path is not None:
            res = predict_cache(clf, cache_path, split, output, top_scores, _progress(bar, None))
        else:
            options = InputOptions(clf.spec["modality"], text_column, image_column, id_column)
            res = predict_inputs(clf, inputs, options, output, on_error, top_scores, _progress(bar, None))
    _summary(res)


def _summary(res) -> None:
    where = f"wrote {res.output}" if res.output else "wrote stdout"
    err_console.print(f"{where}: {res.rows} rows in {res.seconds:.1f} s ({res.rows_per_second:.1f} rows/s); "
                      f"decision rule {res.rule}", highlight=False, soft_wrap=True)
    if res.skipped:
        note(f"skipped {len(res.skipped)} bad rows:")
        for s in res.skipped:
            err_console.print(f"  id {s['id']} ({s['where']}): {s['error']}", highlight=False, markup=False,
                              soft_wrap=True)


COMMANDS = [predict]
