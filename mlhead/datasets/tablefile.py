"""Read the rows of a user table: CSV/TSV (any delimiter, sniffed or given), JSONL, or Parquet.

Every reader returns ``[(where, row)]``: ``where`` is ``file:line`` (the row's first line; Parquet:
``file:row N``, N from 1) and ``row`` a dict column -> value, or a :class:`DatasetError` in place of a
row that cannot be read (so the caller can raise or skip it). Whole-file problems (unreadable,
undecodable, broken quoting, duplicate header names) raise DatasetError naming the file and line.
"""

from __future__ import annotations

import codecs
import csv
import io
import json
import re
import sys
from pathlib import Path

from ..errors import DependencyError
from .base import DatasetError

JSONL_SUFFIXES = (".jsonl", ".ndjson", ".json")
PARQUET_SUFFIXES = (".parquet", ".pq")
#: delimiters the sniffer chooses from (``--delimiter`` accepts any single character)
SNIFF_DELIMITERS = ",;\t|"

Rows = list[tuple[str, "dict | DatasetError"]]


def read_table(path: Path, encoding: str | None = None, delimiter: str | None = None) -> tuple[Rows, str | None]:
    """(rows, CSV delimiter used or None) of ``path`` by its suffix: ``.parquet``/``.pq`` (pyarrow), ``.jsonl``/``.ndjson``/``.json``
    (one JSON object per line), anything else CSV (``.tsv``: tab-separated; otherwise the delimiter
    is sniffed from the header line among ``, ; TAB |`` unless ``delimiter`` is given).

    ``encoding`` (default UTF-8, a BOM is dropped) applies to CSV/TSV/JSONL. Raises DatasetError for
    an unreadable file, an unknown encoding, bytes that do not decode (naming the line and byte), and
    a bad ``delimiter``; DependencyError when pyarrow is missing for a Parquet file.
    """
    suffix = path.suffix.lower()
    if suffix in PARQUET_SUFFIXES:
        return read_parquet(path), None
    text = decode_file(path, encoding)
    if suffix in JSONL_SUFFIXES:
        return read_jsonl(text, path), None
    if delimiter is None:
        delimiter = "\t" if suffix == ".tsv" else sniff_delimiter(text)
    if len(delimiter) != 1 or delimiter in "\"\r\n":
        raise DatasetError(f"{path}: --delimiter {delimiter!r} invalid; give one character other than a "
                           "quote or line break (e.g. ';' or '\\t')")
    return read_csv(text, path, delimiter), delimiter


def decode_file(path: Path, encoding: str | None) -> str:
    """The text of ``path`` in ``encoding`` (default UTF-8; a leading BOM is dropped).

    Raises DatasetError for an unreadable file, an unknown encoding name, or undecodable bytes (the
    message names the line, the byte offset and suggests ``--encoding``).
    """
    name = encoding or "utf-8"
    try:
        codec = codecs.lookup(name)
    except LookupError:
        raise DatasetError(f"{path}: unknown --encoding {name!r} (e.g. utf-8, latin-1, cp1252, utf-16)") from None
    try:
        data = path.read_bytes()
    except OSError as e:
        raise DatasetError(f"{path}: cannot read ({e.strerror})") from None
    codec_name = "utf-8-sig" if codec.name == "utf-8" else codec.name
    try:
        text = data.decode(codec_name)
    except UnicodeDecodeError as e:
        line = data[:e.start].decode(codec_name, errors="replace").count("\n") + 1
        shown = "UTF-8" if codec.name == "utf-8" else name
        raise DatasetError(f"{path}:{line}: not {shown} ({e.reason} at byte {e.start}); pass --encoding with "
                           "the file's encoding (e.g. latin-1, cp1252)") from None
    return text


def sniff_delimiter(text: str) -> str:
    """The delimiter of a CSV: ``csv.Sniffer`` on the header line, among ``, ; TAB |``; ``,`` when the
    header has none of them (a one-column table) or the sniffer cannot tell."""
    header = text.lstrip("\r\n").split("\n", 1)[0]
    try:
        return csv.Sniffer().sniff(header, delimiters=SNIFF_DELIMITERS).delimiter
    except csv.Error:
        return ","


def read_jsonl(text: str, path: Path) -> Rows:
    """Rows of a JSONL text: one JSON object per non-blank line (only ``\\n`` ends a line: JSON allows
    U+2028, U+0085, ... raw inside strings). A line that is not valid JSON or not an object becomes a
    DatasetError row."""
    rows: Rows = []
    for line, raw in enumerate(text.split("\n"), start=1):
        if not raw.strip():
            continue
        where = f"{path}:{line}"
        try:
            obj = json.loads(raw)
        except json.JSONDecodeError as e:
            rows.append((where, DatasetError(f"{where}: invalid JSON ({e.msg} at column {e.colno})")))
            continue
        rows.append((where, obj if isinstance(obj, dict)
                     else DatasetError(f"{where}: expected a JSON object per line")))
    return rows


def read_csv(text: str, path: Path, delimiter: str) -> Rows:
    """Rows of a CSV text (header line; RFC-4180 quoting, embedded newlines). A row with more or fewer
    fields than the header becomes a DatasetError row; broken quoting or duplicate header names raise
    DatasetError naming the line."""
    _raise_csv_field_limit()
    text, restore = _protect_bare_cr(text)
    # newline="": the csv module sees the file's own line ends (\r\n inside quoted fields kept)
    # and only \r / \n end a record (str.splitlines would also split at U+2028, \x1c, ...)
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, strict=True)
    rows: Rows = []
    header: list[str] | None = None
    last_line = 0
    try:
        for record in reader:
            first_line, last_line = last_line + 1, reader.line_num
            record = [restore(v) for v in record]
            if not record:
                continue  # blank line
            if header is None:
                header = _check_header(record, path, first_line)
                continue
            rows.append(_csv_row(record, header, f"{path}:{first_line}", delimiter))
    except csv.Error as e:
        raise DatasetError(f"{path}:{reader.line_num}: malformed CSV ({e})") from None
    return rows


def _check_header(record: list[str], path: Path, line: int) -> list[str]:
    dup = sorted({h for h in record if record.count(h) > 1})
    if dup:
        raise DatasetError(f"{path}:{line}: duplicate column names in the header: {dup}")
    return record


def _csv_row(record: list[str], header: list[str], where: str, delimiter: str) -> tuple[str, dict | DatasetError]:
    if len(record) != len(header):
        return where, DatasetError(f"{where}: {len(record)} fields but the header has {len(header)} "
                                   f"(unquoted delimiter {delimiter!r} or quote in a field? --delimiter sets it)")
    return where, dict(zip(header, record))


def _protect_bare_cr(text: str):
    """Lines ending in ``\\n`` or ``\\r\\n`` make a bare ``\\r`` data, which csv writers leave unquoted under
    a ``\\n`` terminator; the csv module would end the record there. Swap it for a private-use
    placeholder; returns (text, restore function for field values)."""
    if not ("\r" in text and "\n" in text):
        return text, lambda v: v
    ph = next(c for c in map(chr, range(0xE000, 0xF900)) if c not in text)
    return re.sub(r"\r(?!\n)", ph, text), lambda v: v.replace(ph, "\r")


def _raise_csv_field_limit() -> None:
    """Long texts (abstracts, articles) exceed csv's default 128 KiB field limit."""
    limit = sys.maxsize
    while True:
        try:
            csv.field_size_limit(limit)
            return
        except OverflowError:
            limit //= 10


def read_parquet(path: Path) -> Rows:
    """Rows of a Parquet file (pyarrow): ``where`` is ``file:row N`` (N from 1); list columns come back
    as Python lists, nulls as None. Raises DatasetError for a file pyarrow cannot read and
    DependencyError when pyarrow is not installed."""
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise DependencyError(f"{path}: reading Parquet needs pyarrow (pip install pyarrow)") from None
    try:
        table = pq.read_table(path)
    except (OSError, ValueError, pa.ArrowException) as e:  # ArrowInvalid is a ValueError
        raise DatasetError(f"{path}: not a readable Parquet file ({type(e).__name__}: {e})") from None
    dup = sorted({c for c in table.column_names if table.column_names.count(c) > 1})
    if dup:
        raise DatasetError(f"{path}: duplicate column names: {dup}")
    return [(f"{path}:row {i}", row) for i, row in enumerate(table.to_pylist(), start=1)]
