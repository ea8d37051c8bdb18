"""arXiv2020 (sigmoidF1 paper, Table 1): arXiv title + abstract -> arXiv categories.

Two input formats are accepted (detected from the header / first record, not the file name):

* the Kaggle "Cornell-University/arxiv" metadata: the JSON-lines original
  ``arxiv-metadata-oai-snapshot.json`` (one object per line with ``id``, ``title``, ``abstract``,
  ``categories``) or its CSV flattening (same fields as columns); ``categories`` is space-separated;
* the Keras-example CSV (``titles,summaries,terms``), ``terms`` a Python-list literal such as
  ``['cs.LG', 'stat.ML']`` (parsed with :func:`ast.literal_eval`, never ``eval``).

Text = title + " " + abstract, whitespace-normalised (runs of spaces/newlines -> one space).
"""

from __future__ import annotations

import ast
import csv
import json
import re
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from .base import (DatasetError, DatasetLoader, DatasetOption, Example, LoadedDataset, apply_split, file_list,
                   handle_bad_row, register)

METADATA = "metadata"
KERAS = "keras"
SUFFIXES = (".csv", ".json", ".jsonl", ".ndjson")
_FIELDS = {METADATA: ("title", "abstract", "categories"), KERAS: ("titles", "summaries", "terms")}
_FLOAT_ID = re.compile(r"^\d{3}\.\d+$")  # "704.0001": the CSV flattening lost the leading zero


def normalise_text(*parts: str | None) -> str:
    """Join ``parts`` with spaces and collapse all whitespace runs to one space."""
    return " ".join(" ".join(p for p in parts if p).split())


@contextmanager
def _big_csv_fields(limit: int = 1 << 26):
    """Raise csv's per-field limit (128 KiB) for the duration: huge author lists exist in the full data."""
    old = csv.field_size_limit()
    csv.field_size_limit(max(old, limit))
    try:
        yield
    finally:
        csv.field_size_limit(old)


def _is_json(path: Path) -> bool:
    with open(path, encoding="utf-8", errors="replace") as fh:
        for line in fh:
            if line.strip():
                return line.lstrip().startswith(("{", "["))
    return False


def sniff_format(path: Path) -> str | None:
    """``"metadata"``, ``"keras"`` or None (neither), from the CSV header or the first JSON record."""
    try:
        if _is_json(path):
            first = next(_json_records(path), None)
            keys = set(first[1]) if first else set()
        else:
            with open(path, newline="", encoding="utf-8") as fh, _big_csv_fields():
                keys = set(next(csv.reader(fh), []))
    except (DatasetError, UnicodeDecodeError, csv.Error):
        return None
    for fmt, fields in _FIELDS.items():
        if set(fields) <= keys:
            return fmt
    return None


def _json_records(path: Path) -> Iterator[tuple[str, dict]]:
    """(``file:line``, object) of a JSON-lines file (streamed) or of a JSON array file."""
    with open(path, encoding="utf-8") as fh:
        head = ""
        for head in iter(lambda: fh.read(1), ""):
            if not head.isspace():
                break
        fh.seek(0)
        if head == "[":
            yield from _json_array_records(path, fh)
            return
        for line, raw in enumerate(fh, start=1):
            if not raw.strip():
                continue
            try:
                obj = json.loads(raw)
            except json.JSONDecodeError as e:
                raise DatasetError(f"{path}:{line}: invalid JSON ({e.msg})") from None
            if not isinstance(obj, dict):
                raise DatasetError(f"{path}:{line}: expected a JSON object per line")
            yield f"{path}:{line}", obj


def _json_array_records(path: Path, fh) -> Iterator[tuple[str, dict]]:
    """(``file:item n``, object) of a JSON file holding one array of objects."""
    try:
        data = json.load(fh)
    except json.JSONDecodeError as e:
        raise DatasetError(f"{path}:{e.lineno}: invalid JSON ({e.msg})") from None
    for n, obj in enumerate(data):
        if not isinstance(obj, dict):
            raise DatasetError(f"{path}: array item {n}: expected a JSON object")
        yield f"{path}:item {n}", obj


def _csv_records(path: Path) -> Iterator[tuple[str, dict]]:
    """(``file:line``, row) of a CSV file; quoted fields may hold newlines (streamed)."""
    with open(path, newline="", encoding="utf-8") as fh, _big_csv_fields():
        reader = csv.DictReader(fh, strict=True)
        try:
            for row in reader:
                if None in row:
                    raise DatasetError(f"{path}:{reader.line_num}: more fields than header columns")
                yield f"{path}:{reader.line_num}", row
        except csv.Error as e:
            raise DatasetError(f"{path}:{reader.line_num}: malformed CSV ({e})") from None
        except UnicodeDecodeError as e:
            raise DatasetError(f"{path}: not UTF-8 ({e.reason} at byte {e.start})") from None


def _parse_terms(raw, where: str) -> list[str]:
    """Keras ``terms``: a Python-list literal of strings (or already a list, from JSON)."""
    if isinstance(raw, str):
        try:
            value = ast.literal_eval(raw.strip())
        except (ValueError, SyntaxError, MemoryError, RecursionError) as e:
            raise DatasetError(f"{where}: terms {raw[:80]!r} is not a Python list literal "
                               f"({type(e).__name__})") from None
    else:
        value = raw
    if not isinstance(value, (list, tuple)) or not all(isinstance(t, str) for t in value):
        raise DatasetError(f"{where}: terms must be a list of strings, got {str(raw)[:80]!r}")
    return _label_list(value, where)


def _parse_categories(raw, where: str) -> list[str]:
    """Metadata ``categories``: space-separated string (or a list)."""
    if isinstance(raw, (list, tuple)):
        return _label_list([str(x) for x in raw], where)
    return _label_list(str(raw or "").split(), where)


def _label_list(names, where: str) -> list[str]:
    """Strip names, reject an empty list or empty name, drop duplicates (order kept). Names are taken
    verbatim otherwise: real Keras terms contain ';' (e.g. 'I.2.6; I.2.7')."""
    names = [n.strip() for n in names]
    if not names:
        raise DatasetError(f"{where}: empty label list")
    if any(not n for n in names):
        raise DatasetError(f"{where}: empty label in {names!r}")
    return list(dict.fromkeys(names))


def find_file(data_dir: Path, file: str | None) -> tuple[Path, str]:
    """The input file and its format: ``data_dir`` itself when a file, else option ``file`` inside it,
    else the single metadata-format file in it (preferred), else the single Keras-format file."""
    if file:
        path = Path(file) if Path(file).is_absolute() else data_dir / file
        if not path.is_file():
            raise DatasetError(f"arxiv2020: --file {file!r} not found (looked for {path})")
    elif data_dir.is_file():
        path = data_dir
    elif data_dir.is_dir():
        return _find_in_dir(data_dir)
    else:
        raise DatasetError(f"arxiv2020: data directory or file not found: {data_dir}")
    fmt = sniff_format(path)
    if fmt is None:
        raise DatasetError(f"{path}: neither arXiv metadata (title, abstract, categories) nor Keras "
                           f"(titles, summaries, terms) format")
    return path, fmt


def _find_in_dir(data_dir: Path) -> tuple[Path, str]:
    """The single metadata-format file of ``data_dir`` (preferred), else its single Keras-format file."""
    found = {METADATA: [], KERAS: []}
    for p in sorted(data_dir.iterdir()):
        fmt = sniff_format(p) if p.is_file() and p.suffix.lower() in SUFFIXES else None
        if fmt:
            found[fmt].append(p)
    kind = METADATA if found[METADATA] else KERAS
    if not found[kind]:
        raise DatasetError(f"arxiv2020: no arXiv metadata (id,title,abstract,categories) or Keras "
                           f"(titles,summaries,terms) CSV/JSON file in {data_dir}")
    if len(found[kind]) > 1:
        names = ", ".join(p.name for p in found[kind])
        raise DatasetError(f"arxiv2020: several {kind}-format files in {data_dir} ({names}); pick one "
                           f"with --file")
    return found[kind][0], kind


@register("arxiv2020")
class Arxiv2020(DatasetLoader):
    """arXiv2020: title + abstract -> categories (multilabel text).

    Layout: ``<data-dir>/`` holding the Kaggle/Cornell metadata (``arxiv-metadata-oai-snapshot.json``,
    JSON lines, or a CSV flattening such as ``arxiv_metadata_first2000.csv``) and/or the Keras CSV
    (``keras_arxiv_data*.csv``: ``titles,summaries,terms``). ``--data-dir`` may also name the file.
    With several files, the metadata-format one is used unless ``--file`` picks another.

    Split: seeded 60/20/20 permutation (``--split-seed``) or ``--split-mode paper-contiguous``.

    Ids: the metadata ``id`` (kept verbatim; in the shared CSV they were flattened to floats, e.g.
    ``704.0001``, ``704.2``) or, for the Keras CSV (no id column), the 0-based data-row number.
    Duplicate ids are bad rows (``--on-error``). Rows with an empty text or empty label field are
    bad rows too.

    Differs from the paper: the paper used 26,558 papers / 155 categories drawn from the full
    1.7M-record metadata with an unknown selection rule and split; this loader uses whatever
    file it is given, all rows (optionally dropping exact duplicate texts, ``-D dedupe=true``), all
    categories occurring in it.
    """

    modality = "text"
    default_backbone = "distilbert-base-uncased"
    layout = ("<data-dir>/arxiv-metadata-oai-snapshot.json (Kaggle JSON lines: id,title,abstract,categories "
              "space-separated) or a CSV with those columns, and/or the Keras CSV titles,summaries,terms "
              "(terms a Python list literal); --data-dir may name the file; -D file=NAME picks one of several")
    split_doc = "seeded 60/20/20 permutation (--split-seed, default 44) or --split-mode paper-contiguous"
    OPTIONS = {
        "file": DatasetOption(None, "file inside --data-dir to use when it holds several (default: the "
                                    "metadata-format file)"),
        "dedupe": DatasetOption(False, "drop rows whose text exactly repeats an earlier row's (the Keras data has "
                                       "duplicates)"),
    }

    def load(self, data_dir, split_seed=44, split_mode="random", on_error="raise", file=None, dedupe=False, **_):
        path, fmt = find_file(Path(data_dir), file)
        dedupe = _truthy(dedupe)
        records = _json_records(path) if _is_json(path) else _csv_records(path)
        examples, skipped, seen_ids, seen_text = [], [], set(), {}
        n_dup_text = n_dropped = n_float_ids = 0
        for n, (where, row) in enumerate(_decoded(records, path)):
            raw_id = row.get("id") if fmt == METADATA else None
            ex_id = str(raw_id).strip() if raw_id not in (None, "") else str(n)
            try:
                text, labels = _paper(row, fmt, where, ex_id in seen_ids and ex_id)
            except DatasetError as e:
                handle_bad_row(on_error, skipped, ex_id, where, e)
                continue
            if text in seen_text:
                n_dup_text += 1
                if dedupe:
                    n_dropped += 1
                    continue
            seen_text.setdefault(text, ex_id)
            seen_ids.add(ex_id)
            n_float_ids += bool(_FLOAT_ID.match(ex_id))
            examples.append(Example(id=ex_id, input=text, labels=labels, where=where))
        if not examples:
            raise DatasetError(f"{path}: no usable rows ({len(skipped)} skipped)")
        classes = sorted({c for e in examples for c in e.labels})
        card = sum(len(e.labels) for e in examples) / len(examples)
        notes = [f"{len(examples)} papers from {path} ({fmt} format), {len(classes)} categories, "
                 f"label cardinality {card:.2f}"]
        if skipped:
            notes.append(f"{len(skipped)} bad rows skipped")
        if n_dup_text:
            notes.append(f"{n_dup_text} rows repeat an earlier row's text"
                         + (f"; {n_dropped} dropped (-D dedupe=true)" if dedupe else " (kept; -D dedupe=true drops them)"))
        if n_float_ids:
            notes.append(f"{n_float_ids} ids look like floats (e.g. 704.0001: the CSV flattening dropped "
                         "leading/trailing zeros); kept verbatim")
        return LoadedDataset(
            name=self.name, modality=self.modality, classes=classes,
            splits=apply_split(examples, split_seed, split_mode), files=file_list([path]),
            split_mode=split_mode, split_seed=split_seed,
            options={"file": path.name, "format": fmt, "dedupe": dedupe}, notes=notes, skipped=skipped)


def _paper(row: dict, fmt: str, where: str, duplicate_id: str | bool) -> tuple[str, list[str]]:
    """(text, categories) of one record; DatasetError for a duplicate id, empty text or bad labels."""
    title_f, abstract_f, labels_f = _FIELDS[fmt]
    if duplicate_id:
        raise DatasetError(f"{where}: duplicate id {duplicate_id!r}")
    text = normalise_text(_str(row.get(title_f)), _str(row.get(abstract_f)))
    if not text:
        raise DatasetError(f"{where}: empty {title_f} and {abstract_f}")
    raw = row.get(labels_f)
    return text, (_parse_categories(raw, where) if fmt == METADATA else _parse_terms(raw, where))


def _decoded(records: Iterator, path: Path) -> Iterator:
    """``records``, with a UTF-8 decoding error turned into a DatasetError naming the file."""
    try:
        yield from records
    except UnicodeDecodeError as e:
        raise DatasetError(f"{path}: not UTF-8 ({e.reason} at byte {e.start})") from None


def _str(value) -> str:
    return "" if value is None else str(value)


def _truthy(value) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "yes", "on")
    return bool(value)
