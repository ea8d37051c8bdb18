"""Apply a fitted run to new inputs: :func:`load` -> :class:`Classifier` = encoder + head + decision rule.

    clf = mlhead.load("runs/20261201-movieposters-sigmoidf1...")
    clf.classes                 # the run's class names (C)
    clf.rule                    # the DecisionRule: the one the run was last evaluated with
    clf.scores(["a.jpg"])       # N x C float32: the rule's activation of the logits
    clf.predict(["a.jpg"])      # [["Drama", "Romance"]]: labels under the rule

Inputs: image paths or PIL images (image runs), strings (text runs), or an N x D embedding array (any
run). The encoder is rebuilt exactly as the run's cache was made (:func:`encoder_spec`: backbone, weights
file and its sha256, preprocessing, pooling, max length, precision; :func:`mlhead.encoders.from_spec`
checks the rebuilt encoder against the spec). Embeddings are rounded to float16 before the head, as the
cache stores them, so the head sees what it was trained and evaluated on; the head applies the run's
input standardisation (``fit --standardize``) itself. :func:`predict_to` streams rows from
:mod:`mlhead.inputs` through the classifier into a CSV/JSONL file in bounded memory (``mlhead predict``).
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

import numpy as np
import torch

from .datasets.base import Example
from .device import resolve_device, resolve_precision
from .errors import BackboneError, CacheError, ConfigError, DatasetError, StorageError
from .heads import MLPHead
from .inputs import BadRow
from .rules import DecisionRule
from .runs import RunConfig, encoder_attrs, last_rule, load_head, load_run_config, run_cache

ON_ERROR = ("raise", "skip")
#: output file suffixes of :class:`PredictionWriter`
OUTPUT_SUFFIXES = (".csv", ".jsonl", ".ndjson")
def encoder_spec(run_dir, cache=None) -> dict:
    """What rebuilds the encoder of the run's cache: ``backbone``, ``weights_sha256``, ``preprocessing``,
    ``modality``, ``precision``, ``weights`` (the ``--weights`` path embed read; ``""`` for a preset's
    default location or the hub) plus ``dim`` (the head's input width D). Taken from the run record
    (``encoder``, copied from the cache at fit time, schema >= 4), so a run predicts raw inputs without
    its cache; from the cache's attrs for older runs or when ``cache`` is given.

    ``cache``: another copy of the cache (default: the path in the run's config.json). Raises
    :class:`CacheError` when the cache is needed and missing (the message says to pass ``--cache FILE``)
    or is not the one the run was fitted on (fingerprint)."""
    cfg = load_run_config(run_dir)
    if cfg.encoder and cache is None:
        return {**cfg.encoder, "dim": cfg.dim}
    try:
        c = run_cache(run_dir, cache)
    except CacheError as e:
        if cache is None and not Path(cfg.cache).is_file():
            raise CacheError(f"run {run_dir} was fitted on {cfg.cache}, which is missing: pass --cache FILE "
                             "(that cache, moved), or predict on an exported model (`mlhead export`)") from None
        raise e
    return {**encoder_attrs(c.attrs), "dim": cfg.dim}


def build_encoder(spec: dict, weights: str | os.PathLike | None = None):
    """The encoder ``spec`` describes (:func:`encoder_spec`), from ``weights`` or else the weights file the
    cache was made with; its sha256 is checked against the spec's.

    Raises :class:`BackboneError` naming the file and saying to pass ``--weights PATH`` when the recorded
    weights are missing or differ (sha256), or when the spec names no encoder (a features cache)."""
    from .encoders import from_spec

    if not (spec.get("preprocessing") or {}).get("kind"):
        raise BackboneError(f"the run's cache (backbone {spec.get('backbone') or 'none'!r}) holds features made "
                            "without an encoder: only embedding arrays (--cache FILE) can be predicted")
    recorded = spec.get("weights") or ""
    if weights is None and recorded:
        if not Path(recorded).exists():
            raise BackboneError(f"the weights the cache was made with are missing: {recorded} (sha256 "
                                f"{spec['weights_sha256'][:12]}); pass --weights PATH with that file or folder")
        weights = recorded
    return from_spec(spec, weights)


def _precision(spec_precision: str, requested: str | None, device: torch.device) -> str:
    """``requested`` resolved for ``device``; by default (None) the cache's precision where the device runs
    it (fp16 only on CUDA), else ``auto``'s. Raises ValueError for an unknown name or fp16 on a CPU."""
    if requested not in (None, "auto"):
        return resolve_precision(requested, device)
    runs_here = spec_precision in ("fp32", "bf16") or (spec_precision == "fp16" and device.type == "cuda")
    if requested is None and runs_here:
        return spec_precision
    return resolve_precision("auto", device)


@dataclass
class Classifier:
    """A fitted run ready to label new inputs (see module docstring; build it with :func:`load`).

    ``head``: the run's :class:`~mlhead.heads.MLPHead` (eval mode, float32, CPU); ``config``: its
    :class:`~mlhead.runs.RunConfig`; ``rule``: the :class:`~mlhead.rules.DecisionRule` applied by
    :meth:`predict`; ``spec``: :func:`encoder_spec`; ``weights``: ``--weights`` override or None;
    ``device``/``precision``: where and how the encoder runs; ``batch_size``: inputs per forward pass.
    """

    head: MLPHead
    config: RunConfig
    rule: DecisionRule
    spec: dict
    weights: str | os.PathLike | None = None
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    precision: str = "fp32"
    batch_size: int = 64
    _encoder: Any = field(default=None, repr=False)

    @property
    def classes(self) -> list[str]:
        """The run's class names, in score-column order (C)."""
        return list(self.config.classes)

    @property
    def encoder(self):
        """The :class:`~mlhead.encoders.Encoder` (built on first use, see :func:`build_encoder`)."""
        if self._encoder is None:
            self._encoder = build_encoder(self.spec, self.weights).to(self.device)
        return self._encoder

    def head_logits(self, embeddings) -> np.ndarray:
        """Logits (float32 N x C) of embeddings (N x D, numpy or torch), rounded to float16 first as the
        cache stores them. Raises ConfigError when D is not the head's input width."""
        x = torch.as_tensor(np.asarray(embeddings) if not torch.is_tensor(embeddings) else embeddings)
        if x.ndim != 2 or x.shape[1] != self.config.dim:
            raise ConfigError(f"embeddings of shape {tuple(x.shape)} do not fit the run's head, which takes "
                              f"N x {self.config.dim} ({self.config.backbone} embeddings)")
        with torch.no_grad():
            return self.head(x.detach().cpu().to(torch.float16).float()).numpy()

    def logits(self, inputs) -> np.ndarray:
        """Logits (float32 N x C) of ``inputs``: an N x D embedding array, or a sequence of image paths /
        PIL images / texts. Raises DatasetError naming the input for one that cannot be read."""
        if _is_array(inputs):
            return self.head_logits(inputs)
        rows = [Example(str(i), x, [], f"input {i}") for i, x in enumerate(inputs)]
        parts = [z for _, z in self.iter_logits(rows)]
        return np.concatenate(parts) if parts else np.zeros((0, len(self.classes)), np.float32)

    def scores(self, inputs) -> np.ndarray:
        """The rule's activation of the logits (softmax / sigmoid / the logits): float32 N x C."""
        return self.rule.scores(self.logits(inputs)).astype(np.float32)

    def predict(self, inputs) -> list[list[str]]:
        """The labels the rule predicts for each input (class names, in class order)."""
        return self.label_names(self.rule.apply(self.logits(inputs)))

    def label_names(self, multi_hot: np.ndarray) -> list[list[str]]:
        """Multi-hot rows (N x C) -> lists of class names."""
        names = self.classes
        return [[names[j] for j in np.flatnonzero(row)] for row in multi_hot]

    def iter_logits(self, rows: Iterable[Example | BadRow], on_error: str = "raise",
                    skipped: list | None = None) -> Iterator[tuple[list[str], np.ndarray]]:
        """``(ids, logits float32 B x C)`` per chunk of rows, in input order, streamed (one chunk in memory).

        A chunk is ``batch_size`` rows; for an encoder that reads rows a window at a time (texts:
        :attr:`~mlhead.encoders.base.Encoder.read_block`) it is ``batch_size * SORT_WINDOW`` rows, tokenized
        once and encoded in batches of similar length (:func:`mlhead.embed.batch_plan`, as ``mlhead embed``
        does), the logits put back in input order. Bad rows (unreadable image, empty text, a
        :class:`~mlhead.inputs.BadRow`): ``on_error="raise"`` -> DatasetError naming the row and file;
        ``"skip"`` -> appended to ``skipped`` as {id, where, error}."""
        from .embed import SORT_WINDOW

        if on_error not in ON_ERROR:
            raise ConfigError(f"--on-error {on_error!r} invalid; valid: {', '.join(ON_ERROR)}")
        skipped = [] if skipped is None else skipped
        by_block = self.encoder.read_block is not None
        chunk_rows = self.batch_size * (SORT_WINDOW if by_block else 1)
        with contextlib.nullcontext(self._block_batches) if by_block else _RowReader(self.encoder) as read:
            for chunk in _chunks(rows, chunk_rows):
                good = [r for r in chunk if not isinstance(r, BadRow)]
                skipped += _bad_source_rows([r for r in chunk if isinstance(r, BadRow)], on_error)
                out = self._encode_in_order(good, read(good, on_error, skipped))
                if out is not None:
                    yield out

    def _block_batches(self, good: list[Example], on_error: str, skipped: list) -> Iterator[tuple[list[int], Any]]:
        """``(rows of good, their batch)`` of a chunk read once with ``read_block`` (texts: tokenized once),
        in batches of similar length, longest first (:func:`mlhead.embed.batch_plan`, as ``embed`` batches
        a window); bad rows go to :func:`mlhead.embed.bad_rows` first."""
        from .embed import SORT_WINDOW, bad_rows, batch_plan

        block = self.encoder.read_block([r.input for r in good])
        skipped += bad_rows(dict(sorted(block.errors.items())), good, self.encoder, on_error)
        for b in batch_plan(block.sizes, 0, len(good), self.batch_size, SORT_WINDOW):
            rows = [i for i in b.rows if i not in block.errors]
            if rows:
                yield rows, block.batch(rows)

    def _encode_in_order(self, good: list[Example], batches: Iterable[tuple[list[int], Any]]) \
            -> tuple[list[str], np.ndarray] | None:
        """``(ids, logits float32 n x C)`` of the ``(rows of good, batch)`` pairs, put back in input order;
        None when no row was kept."""
        from .embed import encode_batch

        order, parts = [], []
        for rows, batch in batches:
            emb = encode_batch(self.encoder, batch, self.device, self.precision, f"{good[rows[0]].where}...")
            parts.append(self.head_logits(emb))
            order += rows
        if not order:
            return None
        back = np.argsort(order, kind="stable")
        return [good[order[i]].id for i in back], np.concatenate(parts)[back]


class _RowReader:
    """Rows read one by one (``encoder.read`` + ``collate``: images), a chunk as one batch; a context
    manager that ends the reading threads on exit."""

    def __init__(self, encoder):
        from .embed import Collate, Rows

        self.encoder = encoder
        self.reader = Rows([], encoder.read, threads=torch.get_num_threads() if encoder.threaded_read else 1)
        self.collate = Collate(encoder.collate)

    def __call__(self, good: list[Example], on_error: str, skipped: list) -> Iterator[tuple[list[int], Any]]:
        """The chunk's kept rows and their batch (at most one pair); bad rows go to
        :func:`mlhead.embed.bad_rows` first."""
        from .embed import bad_rows

        self.reader.examples = good
        idx, batch, errors = self.collate(self.reader.__getitems__(list(range(len(good)))))
        skipped += bad_rows(errors, good, self.encoder, on_error)
        keep = [i for i in idx if i not in errors]
        if keep:
            yield keep, batch

    def __enter__(self) -> "_RowReader":
        return self

    def __exit__(self, *exc) -> None:
        self.reader.close()


def _is_array(x) -> bool:
    return torch.is_tensor(x) or (isinstance(x, np.ndarray) and x.dtype != object)


def _chunks(rows: Iterable, n: int) -> Iterator[list]:
    it = iter(rows)
    while chunk := list(islice(it, n)):
        yield chunk


def _bad_source_rows(bad: list[BadRow], on_error: str) -> list[dict]:
    if bad and on_error == "raise":
        raise DatasetError(f"{bad[0].error} (use --on-error skip to leave such rows out)")
    return [{"id": b.id, "where": b.where, "error": b.error} for b in bad]


def load(run_dir: str | os.PathLike, *, rule: DecisionRule | None = None, weights: str | os.PathLike | None = None,
         cache: str | os.PathLike | None = None, device: str | None = None, precision: str | None = None,
         batch_size: int = 64) -> Classifier:
    """The :class:`Classifier` of a fitted run directory.

    ``rule``: the decision rule (default: :func:`mlhead.runs.last_rule`, the one the run was last evaluated
    with, tuned per-class thresholds included); ``weights``: the encoder's weights when they moved
    (checked by sha256); ``cache``: the run's cache when it moved; ``device``: cpu/cuda (default cuda if
    available); ``precision``: encoder precision (default: the cache's, where the device runs it; ``auto``,
    ``fp32``, ``bf16``, ``fp16``). The encoder is only built when raw inputs are given.

    Raises RunError (not a run directory), CacheError (cache missing or another one), ConfigError (a rule
    that does not fit the run), BackboneError (weights missing or not the cache's) on first use.
    """
    head, _ = load_head(run_dir)
    config = load_run_config(run_dir)
    rule = rule or last_rule(run_dir)
    rule.check(len(config.classes))
    spec = encoder_spec(run_dir, cache)
    dev = resolve_device(device)
    try:
        prec = _precision(spec.get("precision") or "fp32", precision, dev)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    if batch_size < 1:
        raise ConfigError(f"--batch-size {batch_size} invalid; valid: >= 1")
    return Classifier(head, config, rule, spec, weights, dev, prec, batch_size)


def rule_with(base: DecisionRule, activation: str | None = None, threshold: float | None = None,
              top_k: int | None = None) -> DecisionRule:
    """``base`` unless an override is given (``--activation/--threshold/--top-k``); then the rule those
    give, with ``base``'s activation when ``activation`` is None. Raises ConfigError for an invalid rule."""
    if activation is None and threshold is None and top_k is None:
        return base
    return DecisionRule(activation or base.activation, threshold, top_k)


# ------------------------------------------------------------------------------------ streamed output


@dataclass
class PredictSummary:
    """What :func:`predict_to` did: ``rows`` written, ``skipped`` rows ({id, where, error}), ``seconds``,
    the ``rule`` name and the ``output`` path (None for stdout)."""

    rows: int
    skipped: list[dict]
    seconds: float
    rule: str
    output: Path | None

    @property
    def rows_per_second(self) -> float:
        return self.rows / self.seconds if self.seconds > 0 else 0.0


def prediction_rows(ids: Sequence[str], logits: np.ndarray, classes: Sequence[str], rule: DecisionRule,
                    top_scores: int | None = None) -> list[dict]:
    """One output row per id: ``id``, ``labels`` (names the rule predicts), ``scores`` (class -> score of
    the rule's activation, float; all classes, or the ``top_scores`` highest), ``rule`` (its name)."""
    s = rule.scores(logits).astype(np.float32)
    pred = rule.apply(logits)
    out = []
    for i, row_id in enumerate(ids):
        order = np.argsort(-s[i], kind="stable")[:top_scores] if top_scores else range(len(classes))
        out.append({"id": row_id, "labels": [classes[j] for j in np.flatnonzero(pred[i])],
                    "scores": {classes[j]: float(s[i, j]) for j in order}, "rule": rule.name})
    return out


def predict_to(clf: Classifier, batches: Iterable[tuple[list[str], np.ndarray]], output=None,
               top_scores: int | None = None, progress: Callable[[int], None] | None = None,
               skipped: list | None = None, stream=None) -> PredictSummary:
    """Write one row per input (:func:`prediction_rows`) of ``batches`` (``(ids, logits)``, e.g.
    :meth:`Classifier.iter_logits` or :func:`cache_batches`) to ``output`` (``.csv`` or ``.jsonl``, written
    atomically when done) or to ``stream`` (default stdout, JSONL), batch by batch.

    ``progress(rows_done)`` is called after every batch; ``skipped`` is the list the batches append bad
    rows to (reported in the summary). Raises ConfigError for another output suffix, StorageError when the
    file cannot be written, and whatever the batches raise (the partial file is removed then)."""
    t0, n = time.perf_counter(), 0
    with PredictionWriter(output, stream) as writer:
        for ids, logits in batches:
            writer.write(prediction_rows(ids, logits, clf.classes, clf.rule, top_scores))
            n += len(ids)
            if progress:
                progress(n)
    return PredictSummary(n, list(skipped or []), time.perf_counter() - t0, clf.rule.name,
                          Path(output) if output else None)


def cache_batches(clf: Classifier, cache_path, split: str | None = None,
                  batch_size: int = 8192) -> tuple[int, Iterator[tuple[list[str], np.ndarray]]]:
    """``(rows, batches)`` of ``(ids, logits)`` over an embedded cache (``--cache FILE``; labels unused):
    every split in order, or only ``split``. Reads one split at a time. Raises CacheError (missing file,
    no such split) and ConfigError (embeddings of another width)."""
    from .cache import open_cache

    c = open_cache(cache_path)
    splits = [split] if split else c.splits
    for s in splits:
        if s not in c.splits:
            raise CacheError(f"{c.path}: no split {s!r}; splits: {', '.join(c.splits)}")

    def gen():
        for s in splits:
            X, _, ids = c.load(s)
            for i in range(0, len(ids), batch_size):
                yield ids[i:i + batch_size], clf.head_logits(X[i:i + batch_size])

    return sum(c.shapes[s][0] for s in splits), gen()


class PredictionWriter:
    """Context manager writing prediction rows as JSONL or CSV, streamed.

    ``path`` ``*.jsonl``/``*.ndjson`` -> one JSON object per line; ``*.csv`` -> columns ``id, labels,
    scores, rule`` with ``labels`` and ``scores`` as JSON (class names may hold any separator); None ->
    JSONL on ``stream`` (default stdout). A file is written to a temporary sibling and renamed onto
    ``path`` only when the block ends without an error (a failed run leaves no half file, and an older
    file untouched). Raises ConfigError for another suffix, StorageError when the file cannot be written.
    """

    def __init__(self, path=None, stream=None):
        self.path = Path(path) if path is not None else None
        if self.path is not None and self.path.suffix.lower() not in OUTPUT_SUFFIXES:
            raise ConfigError(f"-o {self.path}: unknown output format; valid: FILE.csv, FILE.jsonl")
        self.csv = self.path is not None and self.path.suffix.lower() == ".csv"
        self.stream, self._tmp, self._fh, self._csv = stream, None, None, None

    def __enter__(self) -> "PredictionWriter":
        import csv
        import sys

        if self.path is None:
            self._fh = self.stream or sys.stdout
        else:
            self._tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._fh = open(self._tmp, "w", encoding="utf-8", newline="")
            except OSError as e:
                raise StorageError(f"cannot write -o {self.path}: {e.strerror or e}") from None
        if self.csv:
            self._csv = csv.writer(self._fh)
            self._csv.writerow(["id", "labels", "scores", "rule"])
        return self

    def write(self, rows: list[dict]) -> None:
        """Append rows (dicts of :func:`prediction_rows`)."""
        try:
            if self._csv is not None:
                self._csv.writerows([r["id"], json.dumps(r["labels"]), json.dumps(r["scores"]), r["rule"]]
                                    for r in rows)
            else:
                self._fh.write("".join(json.dumps(r) + "\n" for r in rows))
        except OSError as e:
            raise StorageError(f"cannot write -o {self.path or 'stdout'}: {e.strerror or e}") from None

    def __exit__(self, exc_type, exc, tb) -> None:
        if self._tmp is None:
            self._fh.flush()
            return
        try:
            self._fh.close()  # flushes: a full disk may only show here
            if exc_type is not None:
                self._tmp.unlink(missing_ok=True)
                return
            os.replace(self._tmp, self.path)
        except OSError as e:
            self._tmp.unlink(missing_ok=True)
            raise StorageError(f"cannot write -o {self.path}: {e.strerror or e}") from None


def predict_inputs(clf: Classifier, inputs: Sequence[str | Path], options, output=None, on_error: str = "raise",
                   top_scores: int | None = None, progress: Callable[[int], None] | None = None,
                   stream=None) -> PredictSummary:
    """``mlhead predict --run RUN INPUT...``: every row of ``inputs`` (:func:`mlhead.inputs.iter_inputs`
    with :class:`~mlhead.inputs.InputOptions` ``options``) through ``clf`` into ``output`` (see
    :func:`predict_to`); bad rows raise or are skipped and listed (``on_error``)."""
    from .inputs import iter_inputs

    skipped: list[dict] = []
    rows = iter_inputs(inputs, options)
    return predict_to(clf, clf.iter_logits(rows, on_error, skipped), output, top_scores, progress, skipped, stream)


def predict_cache(clf: Classifier, cache_path, split: str | None = None, output=None, top_scores: int | None = None,
                  progress: Callable[[int], None] | None = None, stream=None) -> PredictSummary:
    """``mlhead predict --run RUN --cache FILE``: the embeddings of ``cache_path`` (every split, or
    ``split``; labels unused) through ``clf``'s head into ``output`` (see :func:`predict_to`)."""
    _, batches = cache_batches(clf, cache_path, split)
    return predict_to(clf, batches, output, top_scores, progress, None, stream)
