"""What ``mlhead predict`` reads: image files, folders, tables, text files and stdin, as a stream of rows.

Every INPUT expands lazily, in the order given, into :class:`~mlhead.datasets.Example` rows (``id``,
``input`` = an image path or a text, ``where`` = the file or ``file:line`` it came from; no labels) or
:class:`BadRow` records for rows that cannot be read (a table row with too few fields...):

* ``-``: stdin, one input per line (a text, or an image path for an image run);
* a folder: its image files, recursively, in sorted path order (image runs);
* a table (``.csv``, ``.tsv``, ``.jsonl``/``.ndjson``/``.json``, ``.parquet``): one row per record, read by the
  ``table`` dataset's reader; the input column is ``--text-column`` / ``--image-column`` (default: a column
  named ``text`` / ``image``), the id ``--id-column`` (default: the row number, 0-based, as ``mlhead embed``
  numbers table rows); a labels column may be present and is ignored; image paths are relative to the table;
* a ``.txt`` file: one input per line (texts; or image paths relative to the file, for an image run);
* any other file: an image (image runs).

Ids: an image's path as given (``folder/a.jpg``), a line's ``file:line`` (``-:3`` for stdin), a table row's id.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Iterator, Sequence

from .datasets.base import Example
from .errors import ConfigError, DatasetError

#: file suffixes read as tables (the ``table`` dataset's formats)
TABLE_SUFFIXES = (".csv", ".tsv", ".jsonl", ".ndjson", ".json", ".parquet", ".pq")
#: file suffixes a folder's images are recognised by (case-insensitive)
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm")
MODALITIES = ("image", "text")


@dataclass(frozen=True)
class BadRow:
    """A row that could not be read from its source: ``id``, ``where`` (file:line) and ``error`` (message)."""

    id: str
    where: str
    error: str


@dataclass(frozen=True)
class InputOptions:
    """How INPUTs are read. ``modality``: the run's encoder's (``"image"``/``"text"``); the table columns
    as for ``mlhead embed --dataset table``; ``stdin``: the stream ``-`` reads (default ``sys.stdin``)."""

    modality: str
    text_column: str | None = None
    image_column: str | None = None
    id_column: str | None = None
    stdin: IO[str] | None = None

    def __post_init__(self):
        if self.modality not in MODALITIES:
            raise ConfigError(f"inputs of a {self.modality!r} run cannot be read; a run with an image or text "
                              "encoder is needed (or pass --cache FILE with embeddings)")
        if self.text_column and self.image_column:
            raise ConfigError("give --text-column or --image-column, not both")
        wrong = self.image_column if self.modality == "text" else self.text_column
        if wrong:
            flag = "--image-column" if self.modality == "text" else "--text-column"
            raise ConfigError(f"{flag} {wrong!r}: the run's encoder reads {self.modality}s")

    @property
    def column(self) -> str:
        """The table column holding the input (``text`` / ``image`` unless given)."""
        return self.text_column or self.image_column or self.modality


def iter_inputs(sources: Sequence[str | Path], options: InputOptions) -> Iterator[Example | BadRow]:
    """The rows of every INPUT in ``sources`` (see module docstring), lazily and in order.

    Raises :class:`DatasetError` naming the INPUT when it does not exist, is a folder without images, is
    an unreadable table or lacks the input / id column (the message lists the columns and the flag to pass).
    """
    if not sources:
        raise ConfigError("no INPUT given: pass image files, folders, a table, a text file or - (stdin), "
                          "or --cache FILE")
    for src in sources:
        yield from _expand(str(src), options)


def _expand(src: str, opt: InputOptions) -> Iterator[Example | BadRow]:
    if src == "-":
        yield from _lines(opt.stdin or sys.stdin, "-", opt, Path.cwd())
        return
    path = Path(src)
    if path.is_dir():
        yield from _folder(path, opt)
    elif not path.exists():
        raise DatasetError(f"INPUT {src}: no such file or folder")
    elif path.suffix.lower() in TABLE_SUFFIXES:
        yield from _table(path, opt)
    elif path.suffix.lower() == ".txt":
        with open(path, encoding="utf-8-sig", newline="") as fh:
            yield from _lines(fh, str(path), opt, path.parent)
    elif opt.modality == "image":
        yield Example(id=src, input=str(path), labels=[], where=src)
    else:
        raise DatasetError(f"INPUT {src}: a text run reads tables ({', '.join(TABLE_SUFFIXES)}), .txt files "
                           "(one text per line) or - (stdin)")


def _lines(stream: IO[str], name: str, opt: InputOptions, root: Path) -> Iterator[Example]:
    """One row per line (its line end stripped); image paths relative to ``root``."""
    for n, line in enumerate(stream, start=1):
        value = line.rstrip("\r\n")
        if opt.modality == "image" and value.strip():
            value = str(root / value.strip())
        yield Example(id=f"{name}:{n}", input=value, labels=[], where=f"{name}:{n}")


def _folder(path: Path, opt: InputOptions) -> Iterator[Example]:
    if opt.modality != "image":
        raise DatasetError(f"INPUT {path}: a folder is read as images, but the run's encoder reads texts; "
                           "pass a table, a .txt file or -")
    files = sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not files:
        raise DatasetError(f"INPUT {path}: no image files ({', '.join(IMAGE_SUFFIXES)}) in this folder")
    for p in files:
        yield Example(id=str(p), input=str(p), labels=[], where=str(p))


def _table(path: Path, opt: InputOptions) -> Iterator[Example | BadRow]:
    from .datasets.table import _cell, _columns, read_rows

    rows = read_rows(path)
    columns = _columns(rows)
    for flag, col in (("--text-column" if opt.modality == "text" else "--image-column", opt.column),
                      ("--id-column", opt.id_column)):
        if col and col not in columns:
            raise DatasetError(f"{path}: no column {col!r}; columns: {', '.join(columns) or '(none)'} "
                               f"(pass {flag} NAME)")
    for n, (where, row) in enumerate(rows):
        if isinstance(row, DatasetError):
            yield BadRow(str(n), where, str(row))
            continue
        try:
            ex_id = _cell(row, opt.id_column, where) if opt.id_column else str(n)
            value = _cell(row, opt.column, where)
        except DatasetError as e:
            yield BadRow(str(n), where, str(e))
            continue
        if opt.modality == "image" and value.strip():
            value = str(path.parent / value)
        yield Example(id=ex_id, input=value, labels=[], where=where)
