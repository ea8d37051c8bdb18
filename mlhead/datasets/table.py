"""``table``: the user's own data from a CSV or JSONL file."""

from __future__ import annotations

import csv
import json
from pathlib import Path

from .base import (DatasetError, DatasetLoader, Example, LoadedDataset, apply_split, file_list,
                   handle_bad_row, parse_labels, register)

SPLIT_NAMES = ("train", "val", "test")


def read_rows(path: Path) -> list[tuple[str, dict]]:
    """Rows of a CSV (header line; RFC-4180 quoting, embedded newlines) or JSONL file, each with its
    ``file:line`` location. Raises DatasetError for unreadable files or malformed JSON lines."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise DatasetError(f"{path}: not UTF-8 ({e.reason} at byte {e.start})") from None
    if path.suffix.lower() in (".jsonl", ".ndjson", ".json"):
        rows = []
        for line, raw in enumerate(text.splitlines(), start=1):
            if not raw.strip():
                continue
            try:
                obj = json.loads(raw)
            except json.JSONDecodeError as e:
                raise DatasetError(f"{path}:{line}: invalid JSON ({e.msg})") from None
            if not isinstance(obj, dict):
                raise DatasetError(f"{path}:{line}: expected a JSON object per line")
            rows.append((f"{path}:{line}", obj))
        return rows
    reader = csv.DictReader(text.splitlines(keepends=True), strict=True)
    rows = []
    try:
        for row in reader:
            if None in row:
                raise DatasetError(f"{path}:{reader.line_num}: more fields than header columns")
            rows.append((f"{path}:{reader.line_num}", row))
    except csv.Error as e:
        raise DatasetError(f"{path}:{reader.line_num}: malformed CSV ({e})") from None
    return rows


@register("table")
class Table(DatasetLoader):
    modality = "text"
    default_backbone = "minilm"
    layout = ("--data-dir FILE.csv|FILE.jsonl with a text column (--text-column) or an image-path column "
              "(--image-column, relative to the file), a labels column (--labels-column, separator "
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
        column = text_column or image_column
        known = [c.strip() for c in classes.split(",")] if isinstance(classes, str) else classes
        rows = read_rows(path)
        if not rows:
            raise DatasetError(f"{path}: no rows")
        for col in filter(None, (column, labels_column, split_column, id_column)):
            if col not in rows[0][1]:
                raise DatasetError(f"{path}: no column {col!r}; columns: {', '.join(map(str, rows[0][1]))}")
        examples, skipped, files, assigned = [], [], [path], {}
        for n, (where, row) in enumerate(rows):
            ex_id = str(row[id_column]) if id_column else str(n)
            try:
                example = self._example(row, where, ex_id, column, image_column is not None, path,
                                        labels_column, label_sep, known)
                if split_column and str(row[split_column]).strip() not in SPLIT_NAMES:
                    raise DatasetError(f"{where}: split {row[split_column]!r} not one of {', '.join(SPLIT_NAMES)}")
            except DatasetError as e:
                handle_bad_row(on_error, skipped, ex_id, where, e)
                continue
            examples.append(example)
            if image_column:
                files.append(Path(example.input))
            if split_column:
                assigned[ex_id] = str(row[split_column]).strip()
        if not examples:
            raise DatasetError(f"{path}: no usable rows ({len(skipped)} skipped)")
        if len({e.id for e in examples}) != len(examples):
            raise DatasetError(f"{path}: ids in column {id_column!r} are not unique")
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
        value = row[column]
        value = "" if value is None else str(value)
        if not value.strip():
            raise DatasetError(f"{where}: empty {'image path' if is_image else 'text'} in column {column!r}")
        if is_image:
            image = (path.parent / value).resolve()
            if not image.is_file():
                raise DatasetError(f"{where}: image file not found: {image}")
            value = str(image)
        labels = parse_labels(row[labels_column], label_sep, where, known)
        return Example(id=ex_id, input=value, labels=labels, where=where)
