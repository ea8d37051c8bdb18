"""``table``: the user's own data from a CSV/TSV (any delimiter), JSONL or Parquet file.

Labels come from one labels column (names separated by ``--label-sep``, or a JSON list) or from one-hot
columns (``--label-columns a,b,c`` or ``--label-prefix PREFIX``). A row with an empty label set is a
valid example (an all-zero multi-hot row) unless ``--empty-labels error``. Splits: a split column
(``train``/``val``/``test``, any case; ``dev``/``valid``/``validation`` = val; a table with only
train and test gets a val carved from train, ``--val-fraction``), else a stable seeded hash split
(:mod:`mlhead.datasets.splits`), ``--split-mode stratified`` or ``paper-contiguous``. An empty split
is an error at load time.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Callable

from ..errors import ConfigError
from .base import (SPLIT_MODES, DatasetError, DatasetLoader, DatasetOption, Example, LoadedDataset, apply_split, file_list,
                   handle_bad_row, parse_labels, register)
from .splits import (SPLIT_NAMES, hash_carve_val, hash_split, normalize_split_name, require_nonempty,
                     stratified_split)
from .tablefile import JSONL_SUFFIXES, read_table  # noqa: F401  (JSONL_SUFFIXES re-exported)

EMPTY_LABELS = ("keep", "error")
ONEHOT_TRUE, ONEHOT_FALSE = ("1", "1.0", "true"), ("", "0", "0.0", "false")
DELIMITER_NAMES = {"tab": "\t", "\\t": "\t", "comma": ",", "semicolon": ";", "pipe": "|"}


def read_rows(path: Path, encoding: str | None = None, delimiter: str | None = None):
    """Rows of a table file with their ``file:line`` locations (see :func:`mlhead.datasets.tablefile.read_table`)."""
    return read_table(Path(path), encoding, delimiter)[0]


@dataclass
class TableOptions:
    """The ``table`` loader's options, checked (see :attr:`Table.OPTIONS` for their meaning)."""

    text_column: str | None = None
    image_column: str | None = None
    labels_column: str = "labels"
    label_sep: str = "|"
    split_column: str | None = None
    id_column: str | None = None
    classes: list[str] | None = None
    label_columns: list[str] | None = None
    label_prefix: str | None = None
    delimiter: str | None = None
    encoding: str | None = None
    val_fraction: float = 0.2
    empty_labels: str = "keep"

    @classmethod
    def parse(cls, text_column=None, image_column=None, labels_column=None, label_sep=None, split_column=None,
              id_column=None, classes=None, label_columns=None, label_prefix=None, delimiter=None, encoding=None,
              val_fraction=None, empty_labels=None, **_) -> "TableOptions":
        """Options as given to :meth:`Table.load` (strings from the CLI, or typed values) -> TableOptions.
        Raises DatasetError / ConfigError naming the flag for a contradiction or a bad value."""
        if (text_column is None) == (image_column is None):
            raise DatasetError("table: give exactly one of --text-column or --image-column")
        if label_sep is not None and not label_sep:
            raise DatasetError("table: --label-sep must not be empty")
        if label_columns is not None and label_prefix is not None:
            raise ConfigError("table: give --label-columns or --label-prefix, not both")
        if label_prefix is not None and not str(label_prefix):
            raise ConfigError("table: --label-prefix must not be empty")
        onehot = _name_list(label_columns, "--label-columns")
        if (onehot or label_prefix) and classes is not None:
            raise ConfigError("table: --classes does not apply to one-hot label columns (the columns are the classes)")
        if empty_labels is not None and empty_labels not in EMPTY_LABELS:
            raise ConfigError(f"table: --empty-labels {empty_labels!r} invalid; valid: {', '.join(EMPTY_LABELS)}")
        return cls(text_column=text_column, image_column=image_column, labels_column=labels_column or "labels",
                   label_sep=label_sep or "|", split_column=split_column, id_column=id_column,
                   classes=_parse_classes(classes), label_columns=onehot,
                   label_prefix=None if label_prefix is None else str(label_prefix),
                   delimiter=_parse_delimiter(delimiter), encoding=encoding or None,
                   val_fraction=_parse_fraction(val_fraction), empty_labels=empty_labels or "keep")


@register("table")
class Table(DatasetLoader):
    modality = "text"
    default_backbone = "minilm"
    layout = ("--data-dir FILE.csv|FILE.tsv|FILE.jsonl|FILE.parquet with a text column (--text-column) or an "
              "image-path column (--image-column, relative to the file), labels in one column (--labels-column, "
              "separator --label-sep, or a JSON list; empty = no labels) or one-hot columns (--label-columns "
              "a,b,c or --label-prefix P), optional --split-column (train/val/test, dev, validation) and "
              "--id-column. CSV delimiter sniffed (--delimiter), --encoding (default UTF-8).")
    split_doc = ("the split column when given (val carved from train when absent: --val-fraction), else a "
                 "stable seeded hash of each row's id: 60/20/20 on average, adding rows moves no row "
                 "(--split-seed); --split-mode stratified: iterative multilabel stratification")
    OPTIONS = {
        "text_column": DatasetOption(None, "column holding the text"),
        "image_column": DatasetOption(None, "column holding an image path (relative to the table file)"),
        "labels_column": DatasetOption("labels", "column holding the labels (a cell holding a JSON list is read "
                                                 "as a list)"),
        "label_sep": DatasetOption("|", "separator inside the labels column"),
        "label_columns": DatasetOption(None, "comma-separated one-hot label columns (values 0/1/true/false/empty)"),
        "label_prefix": DatasetOption(None, "one-hot label columns: every column whose name starts with this prefix"),
        "empty_labels": DatasetOption("keep", "rows with no label: keep (all-zero label row) or error",
                                      choices=EMPTY_LABELS),
        "split_column": DatasetOption(None, "column with train/val/test per row (optional; dev/valid/validation "
                                            "= val)"),
        "val_fraction": DatasetOption(0.2, "fraction of train carved out as val when the split column has no val "
                                           "rows"),
        "id_column": DatasetOption(None, "column with a unique id (default: row number)"),
        "classes": DatasetOption(None, "comma-separated class list; labels outside it are errors"),
        "delimiter": DatasetOption(None, "CSV delimiter (default: sniffed from the header among , ; tab |; 'tab' "
                                         "or '\\t')"),
        "encoding": DatasetOption(None, "text encoding of a CSV/TSV/JSONL file (default utf-8; e.g. latin-1, "
                                        "cp1252)"),
    }

    def load(self, data_dir, split_seed=44, split_mode="random", on_error="raise", **options) -> LoadedDataset:
        """Read the table at ``data_dir`` (a file) into examples and train/val/test splits.

        ``options``: see :attr:`OPTIONS`. Raises DatasetError naming the file, line/row and column for a
        missing file or column, a bad row (unless ``on_error="skip"``: the row is listed in
        ``skipped``), no usable rows, no label at all, or an empty split; ConfigError for bad options.
        """
        opts = TableOptions.parse(**options)
        path = Path(data_dir)
        if not path.is_file():
            raise DatasetError(f"table: file not found: {path} (pass --data-dir FILE.csv, .jsonl or .parquet)")
        if split_mode not in SPLIT_MODES:
            raise DatasetError(f"unknown split mode {split_mode!r}; valid: {', '.join(SPLIT_MODES)}")
        rows, delimiter = read_table(path, opts.encoding, opts.delimiter)
        if not rows:
            raise DatasetError(f"{path}: no rows")
        labels_of, onehot_names = _label_reader(opts, _columns(rows), path)
        examples, skipped, assigned = _read_examples(rows, path, opts, labels_of, on_error)
        classes = opts.classes or onehot_names or sorted({c for e in examples for c in e.labels})
        if not classes:
            raise DatasetError(f"{path}: no row has a label ({len(examples)} rows, all label sets empty): nothing "
                               "to learn; check --labels-column / --label-sep, or give --classes")
        splits, split_meta = _make_splits(examples, assigned, opts, split_seed, split_mode, classes, path)
        require_nonempty(splits, path, split_meta["how"])
        recorded = dict(text_column=opts.text_column, image_column=opts.image_column,
                        labels_column=None if onehot_names else opts.labels_column,
                        label_sep=None if onehot_names else opts.label_sep, label_columns=onehot_names,
                        split_column=opts.split_column, id_column=opts.id_column, classes=opts.classes,
                        delimiter=delimiter, encoding=opts.encoding, empty_labels=opts.empty_labels,
                        val_fraction=split_meta["val_fraction"])
        data = LoadedDataset(
            name=self.name, modality="image" if opts.image_column else "text", classes=classes, splits=splits,
            files=file_list([path] + [Path(e.input) for e in examples if opts.image_column]),
            split_mode=split_meta["mode"], split_seed=split_meta["seed"], options=recorded, skipped=skipped)
        data.notes = _notes(data, path, len(examples), split_meta)
        return data


def _read_examples(rows, path: Path, opts: TableOptions, labels_of: Callable, on_error: str):
    """(examples of the readable rows, skipped rows, id -> split when a split column is given); a bad row
    raises (``on_error="raise"``) or is skipped."""
    examples: list[Example] = []
    skipped: list[dict] = []
    assigned: dict[str, str] = {}
    first_row_of: dict[str, str] = {}
    for n, (where, row) in enumerate(rows):
        ex_id = str(n)
        try:
            if isinstance(row, DatasetError):
                raise row
            ex_id = _row_id(row, opts.id_column, where, n, first_row_of)
            example = _example(row, where, ex_id, opts, path, labels_of)
            split = _split_of(row, opts.split_column, where) if opts.split_column else None
        except DatasetError as e:
            handle_bad_row(on_error, skipped, ex_id, where, e)
            continue
        first_row_of[ex_id] = where
        examples.append(example)
        assigned[ex_id] = split
    if not examples:
        raise DatasetError(f"{path}: no usable rows ({len(skipped)} skipped)")
    return examples, skipped, assigned


def _row_id(row: dict, id_column: str | None, where: str, n: int, first_row_of: dict[str, str]) -> str:
    """The row's id (``id_column``'s value, else the row number); DatasetError for an empty or repeated id."""
    if not id_column:
        return str(n)
    ex_id = _cell(row, id_column, where)
    if not ex_id.strip():
        raise DatasetError(f"{where}: empty id in column {id_column!r}")
    if ex_id in first_row_of:
        raise DatasetError(f"{where}: id {ex_id!r} (column {id_column!r}) already used at "
                           f"{first_row_of[ex_id]}; ids must be unique")
    return ex_id


def _example(row: dict, where: str, ex_id: str, opts: TableOptions, path: Path, labels_of: Callable) -> Example:
    """One example from a readable row (input checked, labels parsed)."""
    column = opts.text_column or opts.image_column
    value = _cell(row, column, where)
    if not value.strip():
        raise DatasetError(f"{where}: empty {'image path' if opts.image_column else 'text'} in column {column!r}")
    if opts.image_column:
        image = (path.parent / value).resolve()
        if not image.is_file():
            raise DatasetError(f"{where}: image file not found: {image} (column {column!r})")
        value = str(image)
    labels = labels_of(row, where)
    if not labels and opts.empty_labels == "error":
        raise DatasetError(f"{where}: no labels (--empty-labels error rejects rows without labels; "
                           "the default, keep, makes them all-zero label rows)")
    return Example(id=ex_id, input=value, labels=labels, where=where)


def _split_of(row: dict, column: str, where: str) -> str:
    raw = _cell(row, column, where)
    split = normalize_split_name(raw)
    if split is None:
        raise DatasetError(f"{where}: split {raw.strip()!r} in column {column!r} is not train, val (or dev, "
                           "valid, validation) or test (any case)")
    return split


# ------------------------------------------------------------------------------------------ labels


def _label_reader(opts: TableOptions, columns: list[str], path: Path) -> tuple[Callable, list[str] | None]:
    """(labels_of(row, where) -> class names, one-hot class names or None), after checking that the
    named columns exist."""
    needed = [c for c in (opts.text_column or opts.image_column, opts.split_column, opts.id_column) if c]
    if opts.label_columns or opts.label_prefix:
        onehot = opts.label_columns or [c for c in columns if c.startswith(opts.label_prefix)]
        if not onehot:
            raise DatasetError(f"{path}: no column starts with --label-prefix {opts.label_prefix!r}; "
                               f"columns: {', '.join(columns) or '(none)'}")
        _require_columns(path, columns, needed + onehot)
        names = [c[len(opts.label_prefix):] or c for c in onehot] if opts.label_prefix else list(onehot)
        if len(set(names)) != len(names):
            raise DatasetError(f"{path}: one-hot label columns {onehot} give repeated class names {names}")
        return partial(_onehot_labels, columns=onehot, names=names), names
    _require_columns(path, columns, needed + [opts.labels_column])
    return partial(_column_labels, column=opts.labels_column, sep=opts.label_sep, known=opts.classes), None


def _require_columns(path: Path, columns: list[str], wanted: list[str]) -> None:
    for col in wanted:
        if columns and col not in columns:
            raise DatasetError(f"{path}: no column {col!r}; columns: {', '.join(columns) or '(none)'}")


def _column_labels(row: dict, where: str, column: str, sep: str, known: list[str] | None) -> list[str]:
    """Labels from one column: names separated by ``sep``, a JSON list (also inside a CSV cell), or
    empty / ``[]`` / null for no labels."""
    if column not in row:
        raise DatasetError(f"{where}: no {column!r} in this row")
    raw = row[column]
    if isinstance(raw, str) and raw.strip().startswith("[") and raw.strip().endswith("]"):
        try:
            parsed = json.loads(raw)
        except ValueError:
            parsed = None
        raw = parsed if isinstance(parsed, list) else raw
    return parse_labels(raw, sep, f"{where}: column {column!r}", known, allow_empty=True)


def _onehot_labels(row: dict, where: str, columns: list[str], names: list[str]) -> list[str]:
    """Labels from one-hot columns: the names of the columns holding 1/true (0/false/empty/absent: not)."""
    return [name for col, name in zip(columns, names) if _onehot_value(row.get(col), where, col)]


def _onehot_value(value, where: str, column: str) -> bool:
    """A one-hot cell as a bool: 1/true/1.0 -> True; 0/false/0.0/empty/null/NaN -> False; else DatasetError
    naming the row and column."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return False
    if isinstance(value, (bool, int, float)) and value in (0, 1):
        return bool(value)
    word = value.strip().lower() if isinstance(value, str) else None
    if word in ONEHOT_TRUE or word in ONEHOT_FALSE:
        return word in ONEHOT_TRUE
    raise DatasetError(f"{where}: column {column!r}: {value!r} is not a one-hot label value "
                       "(expected 0, 1, true, false or empty)")


# ------------------------------------------------------------------------------------------ splits


def _make_splits(examples: list[Example], assigned: dict[str, str], opts: TableOptions, seed: int, mode: str,
                 classes: list[str], path: Path) -> tuple[dict[str, list[Example]], dict]:
    """(splits, meta): meta has ``mode``/``seed`` (recorded in the cache), ``how`` (for messages),
    ``val_fraction`` (when a val split was carved from train, else None) and ``carved`` (its size)."""
    meta = {"mode": mode, "seed": seed, "val_fraction": None, "carved": 0}
    if opts.split_column:
        splits = {s: [e for e in examples if assigned[e.id] == s] for s in SPLIT_NAMES}
        meta.update(mode="column", seed=None, how=f"split column {opts.split_column!r}")
        if not splits["val"] and splits["train"]:
            splits["train"], splits["val"] = hash_carve_val(splits["train"], seed, opts.val_fraction)
            meta.update(seed=seed, val_fraction=opts.val_fraction, carved=len(splits["val"]),
                        how=meta["how"] + f" without val rows, val carved from train with --val-fraction "
                                          f"{opts.val_fraction} --split-seed {seed}")
    elif mode == "random":
        splits = hash_split(examples, seed)
        meta["how"] = f"{len(examples)} rows, seeded 60/20/20 hash split --split-seed {seed}"
    elif mode == "stratified":
        splits = stratified_split(examples, classes, seed, path)
        meta["how"] = f"{len(examples)} rows, --split-mode stratified"
    else:
        splits = apply_split(examples, seed, mode)
        meta["how"] = f"{len(examples)} rows, --split-mode {mode}"
    return splits, meta


def _notes(data: LoadedDataset, path: Path, n: int, meta: dict) -> list[str]:
    """Notes for the user: rows read, skipped, without labels (per split), val carved from train."""
    notes = [f"{n} rows from {path}"]
    if data.skipped:
        notes.append(f"{len(data.skipped)} rows skipped")
    empty = data.rows_without_labels()
    if any(empty.values()):
        notes.append(f"{sum(empty.values())} rows without labels kept as all-zero label rows ("
                     + ", ".join(f"{s} {k}" for s, k in empty.items()) + ")")
    if meta["carved"]:
        notes.append(f"no val rows in the split column: {meta['carved']} of the train rows carved out as val "
                     f"(--val-fraction {meta['val_fraction']}, --split-seed {meta['seed']})")
    return notes


# ------------------------------------------------------------------------------------------ cells


def _columns(rows) -> list[str]:
    """Column names: the CSV header (first row's keys) or, for JSONL/Parquet, every key of any row."""
    cols: dict[str, None] = {}
    for _, row in rows:
        if isinstance(row, dict):
            cols.update(dict.fromkeys(map(str, row)))
    return list(cols)


def _cell(row: dict, column: str, where: str) -> str:
    """A cell as text ("" for JSON null); DatasetError when the row lacks the column or holds a
    list/object there."""
    if column not in row:
        raise DatasetError(f"{where}: no {column!r} in this row")
    value = row[column]
    if value is None:
        return ""
    if isinstance(value, (dict, list)):
        raise DatasetError(f"{where}: column {column!r} holds a JSON {type(value).__name__}, expected text")
    return str(value)


def _name_list(value, flag: str) -> list[str] | None:
    """A comma-separated string (or a list) of unique, non-empty names; None stays None."""
    if value is None:
        return None
    names = [c.strip() for c in value.split(",")] if isinstance(value, str) else [str(c).strip() for c in value]
    if not names or any(not c for c in names):
        raise DatasetError(f"table: {flag} {value!r} has an empty name")
    dup = sorted({c for c in names if names.count(c) > 1})
    if dup:
        raise DatasetError(f"table: {flag} lists {dup} more than once")
    return names


def _parse_classes(classes) -> list[str] | None:
    """``--classes`` (comma-separated string or list) -> list of unique, non-empty class names."""
    try:
        return _name_list(classes, "--classes")
    except DatasetError as e:
        raise DatasetError(str(e).replace("empty name", "empty class name")) from None


def _parse_delimiter(value) -> str | None:
    """``--delimiter``: one character, or tab/\\t/comma/semicolon/pipe; None = sniff."""
    if value is None:
        return None
    value = DELIMITER_NAMES.get(str(value).lower(), str(value))
    if len(value) != 1 or value in "\"\r\n":
        raise ConfigError(f"table: --delimiter {value!r} invalid; give one character (or tab, comma, semicolon, "
                          "pipe) other than a quote or line break")
    return value


def _parse_fraction(value) -> float:
    """``--val-fraction`` in (0, 1) (default 0.2)."""
    if value is None:
        return 0.2
    try:
        f = float(value)
    except (TypeError, ValueError):
        f = math.nan
    if not 0.0 < f < 1.0:
        raise ConfigError(f"table: --val-fraction {value!r} invalid; valid: a number between 0 and 1 (e.g. 0.2)")
    return f
