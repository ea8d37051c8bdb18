"""``table``: the user's own data from a CSV, TSV or JSONL file."""

from __future__ import annotations

import csv
import io
import json
import re
import sys
from pathlib import Path

from .base import (DatasetError, DatasetLoader, Example, LoadedDataset, apply_split, file_list,
                   handle_bad_row, parse_labels, register)

SPLIT_NAMES = ("train", "val", "test")
JSONL_SUFFIXES = (".jsonl", ".ndjson", ".json")


def _raise_csv_field_limit() -> None:
    """Long texts (abstracts, articles) exceed csv's default 128 KiB field limit."""
    limit = sys.maxsize
    while True:
        try:
            csv.field_size_limit(limit)
            return
        except OverflowError:
            limit //= 10


def read_rows(path: Path) -> list[tuple[str, dict | DatasetError]]:
    """Rows of a CSV/TSV (header line; RFC-4180 quoting, embedded newlines, UTF-8 with or without
    BOM) or JSONL file, each with its ``file:line`` location (the row's first line).

    A row that cannot be read (a CSV row with more or fewer fields than the header, a JSONL line
    that is not a JSON object) comes back as a DatasetError in place of its dict, so the caller can
    raise or skip it. Raises DatasetError for an unreadable file (not UTF-8, broken CSV quoting,
    duplicate header names).
    """
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise DatasetError(f"{path}: not UTF-8 ({e.reason} at byte {e.start})") from None
    except OSError as e:
        raise DatasetError(f"{path}: cannot read ({e.strerror})") from None
    if path.suffix.lower() in JSONL_SUFFIXES:
        rows: list[tuple[str, dict | DatasetError]] = []
        # only \n ends a JSON line: str.splitlines would also split at U+2028, U+0085, \x1c...,
        # which JSON allows raw inside strings
        for line, raw in enumerate(text.split("\n"), start=1):
            if not raw.strip():
                continue
            where = f"{path}:{line}"
            try:
                obj = json.loads(raw)
            except json.JSONDecodeError as e:
                rows.append((where, DatasetError(f"{where}: invalid JSON ({e.msg} at column {e.colno})")))
                continue
            if not isinstance(obj, dict):
                rows.append((where, DatasetError(f"{where}: expected a JSON object per line")))
                continue
            rows.append((where, obj))
        return rows
    _raise_csv_field_limit()
    delimiter = "\t" if path.suffix.lower() == ".tsv" else ","
    restore = None
    if "\r" in text and "\n" in text:
        # lines end in \n or \r\n: a bare \r is data, which csv writers leave unquoted under a "\n"
        # terminator; the csv module would end the record there (and shift every later field)
        ph = next(c for c in map(chr, range(0xE000, 0xF900)) if c not in text)  # private-use placeholder
        text = re.sub(r"\r(?!\n)", ph, text)

        def restore(v: str, ph=ph) -> str:
            return v.replace(ph, "\r")
    # newline="": the csv module sees the file's own line ends (\r\n inside quoted fields kept)
    # and only \r / \n end a record (str.splitlines would also split at U+2028, \x1c, ...)
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, strict=True)
    rows = []
    header: list[str] | None = None
    last_line = 0
    try:
        for record in reader:
            first_line, last_line = last_line + 1, reader.line_num
            if restore is not None:
                record = [restore(v) for v in record]
            if not record:
                continue  # blank line
            if header is None:
                header = record
                dup = sorted({h for h in header if header.count(h) > 1})
                if dup:
                    raise DatasetError(f"{path}:{first_line}: duplicate column names in the header: {dup}")
                continue
            where = f"{path}:{first_line}"
            if len(record) != len(header):
                rows.append((where, DatasetError(f"{where}: {len(record)} fields but the header has "
                                                 f"{len(header)} (unquoted separator or quote in a field?)")))
                continue
            rows.append((where, dict(zip(header, record))))
    except csv.Error as e:
        raise DatasetError(f"{path}:{reader.line_num}: malformed CSV ({e})") from None
    return rows


def _columns(rows) -> list[str]:
    """Column names: the CSV header (first row's keys) or, for JSONL, every key of any row."""
    cols: dict[str, None] = {}
    for _, row in rows:
        if isinstance(row, dict):
            cols.update(dict.fromkeys(map(str, row)))
    return list(cols)


@register("table")
class Table(DatasetLoader):
    modality = "text"
    default_backbone = "minilm"
    layout = ("--data-dir FILE.csv|FILE.tsv|FILE.jsonl with a text column (--text-column) or an image-path "
              "column (--image-column, relative to the file), a labels column (--labels-column, separator "
              "--label-sep, or a JSON list), optional --split-column (train/val/test) and --id-column.")
    split_doc = "the split column when given, else a seeded 60/20/20 permutation (--split-seed)"
    OPTIONS = {
        "text_column": (None, "column holding the text"),
        "image_column": (None, "column holding an image path (relative to the table file)"),
        "labels_column": ("labels", "column holding the labels"),
        "label_sep": ("|", "separator inside the labels column"),
        "split_column": (None, "column with train/val/test per row (optional)"),
        "id_column": (None, "column with a unique id (default: row number)"),
        "classes": (None, "comma-separated class list; labels outside it are errors"),
    }

    def load(self, data_dir, split_seed=44, split_mode="random", on_error="raise", text_column=None,
             image_column=None, labels_column="labels", label_sep="|", split_column=None, id_column=None,
             classes=None, **_):
        path = Path(data_dir)
        if not path.is_file():
            raise DatasetError(f"table: file not found: {path} (pass --data-dir FILE.csv or FILE.jsonl)")
        if (text_column is None) == (image_column is None):
            raise DatasetError("table: give exactly one of --text-column or --image-column")
        if not label_sep:
            raise DatasetError("table: --label-sep must not be empty")
        column = text_column or image_column
        known = _parse_classes(classes)
        rows = read_rows(path)
        if not rows:
            raise DatasetError(f"{path}: no rows")
        columns = _columns(rows)
        for col in filter(None, (column, labels_column, split_column, id_column)):
            if columns and col not in columns:
                raise DatasetError(f"{path}: no column {col!r}; columns: {', '.join(columns) or '(none)'}")
        examples, skipped, files, assigned = [], [], [path], {}
        first_row_of: dict[str, str] = {}
        for n, (where, row) in enumerate(rows):
            try:
                if isinstance(row, DatasetError):
                    ex_id = str(n)
                    raise row
                ex_id = _cell(row, id_column, where) if id_column else str(n)
                if id_column and not ex_id.strip():
                    raise DatasetError(f"{where}: empty id in column {id_column!r}")
                if ex_id in first_row_of:
                    raise DatasetError(f"{where}: id {ex_id!r} (column {id_column!r}) already used at "
                                       f"{first_row_of[ex_id]}; ids must be unique")
                example = self._example(row, where, ex_id, column, image_column is not None, path,
                                        labels_column, label_sep, known)
                if split_column:
                    split = _cell(row, split_column, where).strip()
                    if split not in SPLIT_NAMES:
                        raise DatasetError(f"{where}: split {split!r} not one of {', '.join(SPLIT_NAMES)}")
                    assigned[ex_id] = split
            except DatasetError as e:
                handle_bad_row(on_error, skipped, ex_id, where, e)
                continue
            first_row_of[ex_id] = where
            examples.append(example)
            if image_column:
                files.append(Path(example.input))
        if not examples:
            raise DatasetError(f"{path}: no usable rows ({len(skipped)} skipped)")
        splits = ({s: [e for e in examples if assigned[e.id] == s] for s in SPLIT_NAMES} if split_column
                  else apply_split(examples, split_seed, split_mode))
        all_classes = list(known) if known else sorted({c for e in examples for c in e.labels})
        options = dict(text_column=text_column, image_column=image_column, labels_column=labels_column,
                       label_sep=label_sep, split_column=split_column, id_column=id_column, classes=known)
        return LoadedDataset(
            name=self.name, modality="image" if image_column else "text", classes=all_classes, splits=splits,
            files=file_list(files), split_mode="column" if split_column else split_mode,
            split_seed=None if split_column else split_seed, options=options,
            notes=[f"{len(examples)} rows from {path}"] + ([f"{len(skipped)} rows skipped"] if skipped else []),
            skipped=skipped)

    @staticmethod
    def _example(row, where, ex_id, column, is_image, path, labels_column, label_sep, known) -> Example:
        value = _cell(row, column, where)
        if not value.strip():
            raise DatasetError(f"{where}: empty {'image path' if is_image else 'text'} in column {column!r}")
        if is_image:
            image = (path.parent / value).resolve()
            if not image.is_file():
                raise DatasetError(f"{where}: image file not found: {image}")
            value = str(image)
        if labels_column not in row:
            raise DatasetError(f"{where}: no {labels_column!r} in this row")
        labels = parse_labels(row[labels_column], label_sep, where, known)
        return Example(id=ex_id, input=value, labels=labels, where=where)


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


def _parse_classes(classes) -> list[str] | None:
    """``--classes`` (comma-separated string or list) -> list of unique, non-empty names."""
    if classes is None:
        return None
    names = [c.strip() for c in classes.split(",")] if isinstance(classes, str) else [str(c).strip() for c in classes]
    if not names or any(not c for c in names):
        raise DatasetError(f"table: --classes {classes!r} has an empty class name")
    dup = sorted({c for c in names if names.count(c) > 1})
    if dup:
        raise DatasetError(f"table: --classes lists {dup} more than once")
    return names
