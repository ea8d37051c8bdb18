"""``mlhead cache import``: a complete cache from embeddings a user already has, plus a labels table.

Embeddings (``embeddings``):

* ``.npy``: one N x D array; its rows are the labels table's rows, in file order (the table then needs
  a split column).
* ``.npz``: either one array per split, named by the split (``train``, ``val``, ``test``), optionally
  with ``<split>_ids`` (strings); or one array ``embeddings`` with optional ``ids``. Without ids, rows
  pair with the labels table's rows (of that split) in file order.
* Parquet (pyarrow): an id column (``id_column``), the embedding in one list / fixed-size-list column
  (``embedding_column``, found when there is exactly one) or in numbered columns ``<prefix>0 ..
  <prefix>{D-1}`` (``emb_0, emb_1, ...`` or ``0, 1, ...``), and optionally the split column.

Labels table (``labels``): CSV/TSV/JSONL (:func:`mlhead.datasets.table.read_rows`) or Parquet, one row
per example: ``id_column``, ``labels_column`` (names separated by ``label_sep``, or a JSON list; empty,
``[]`` or null = no label: an all-zero row) and optionally ``split_column``.

Checked, each failure one :class:`~mlhead.errors.DatasetError` naming the file and the row or id:
embedding dtype (float16/32/64; stored float16 as ``embed`` does), shape (2-D, one width), NaN/inf and
values beyond float16's range, empty or duplicate ids, ids in one file but not the other, empty or
blank label names, unknown split names, empty splits, a missing train or val split (``fit`` trains on
train and selects epochs on val). The cache is written through :func:`~mlhead.cache.write_cache`
(atomic, locked, labels dense or CSR, checksums), with backbone ``imported`` and the sha256 of both
source files in its fingerprint, so ``fit``, ``eval`` and ``report`` use it like an embedded cache.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import CacheError, DatasetError
from .writer import write_cache

#: dtypes accepted for embeddings (stored float16)
FLOAT_DTYPES = (np.float16, np.float32, np.float64)
FLOAT16_MAX = float(np.finfo(np.float16).max)
#: splits every imported cache must have (fit trains on train, selects on val)
REQUIRED_SPLITS = ("train", "val")
PARQUET_SUFFIXES = (".parquet", ".pq")


@dataclass
class LabelRow:
    """One row of the labels table: where it is, its class names and its split (or None)."""

    where: str
    labels: list[str]
    split: str | None


@dataclass(eq=False)
class Block:
    """Embeddings of one split (or of all rows when ``split`` is None) with their ids (None: by order)."""

    split: str | None
    embeddings: np.ndarray
    ids: list[str] | None
    where: str


def file_sha256(path: Path) -> str:
    """sha256 hex of a file's bytes (read 1 MiB at a time)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


# ------------------------------------------------------------------------------------ labels table


def _table_rows(path: Path) -> list[tuple[str, dict | DatasetError]]:
    """``[(where, row dict or DatasetError)]`` of a CSV/TSV/JSONL or Parquet table."""
    if path.suffix.lower() in PARQUET_SUFFIXES:
        table = _parquet(path)
        return [(f"{path}:row {i + 1}", row) for i, row in enumerate(table.to_pylist())]
    from ..datasets.table import read_rows

    return read_rows(path)


def _parquet(path: Path):
    try:
        import pyarrow.parquet as pq
    except ImportError:
        from ..errors import DependencyError

        raise DependencyError(f"{path}: reading Parquet needs pyarrow (pip install pyarrow)") from None
    try:
        return pq.read_table(path)
    except (OSError, ValueError) as e:
        raise DatasetError(f"{path}: not a readable Parquet file ({e})") from None


def _labels_of(raw, where: str, sep: str) -> list[str]:
    """Class names of one labels cell: empty / ``[]`` / null -> none; a JSON list; else ``sep``-separated."""
    if isinstance(raw, str) and raw.strip().startswith("["):
        try:
            raw = json.loads(raw)
        except ValueError:
            raise DatasetError(f"{where}: labels {raw!r} look like a JSON list but do not parse") from None
    if raw is None or (isinstance(raw, (str, list, tuple)) and not (raw.strip() if isinstance(raw, str) else raw)):
        return []
    from ..datasets.base import parse_labels

    return parse_labels(list(raw) if not isinstance(raw, str) else raw, sep, where)


def _split_name(raw, where: str) -> str | None:
    if raw is None or (isinstance(raw, str) and not raw.strip()):
        raise DatasetError(f"{where}: empty split (expected train, val or test)")
    return str(raw).strip().lower()


def read_labels_table(path, id_column: str = "id", labels_column: str = "labels",
                      split_column: str | None = "split", label_sep: str = "|") -> dict[str, LabelRow]:
    """id -> :class:`LabelRow` of a labels table, in file order.

    The split column is optional (None or absent: every row's split is None). Raises DatasetError
    naming the file and row for an unreadable row, a missing column, an empty or duplicate id, bad
    labels (an empty or blank name, e.g. ``a||b`` or ``["a", " "]``) or an empty split.
    """
    path = Path(path)
    rows = _table_rows(path)
    out: dict[str, LabelRow] = {}
    for where, row in rows:
        if isinstance(row, DatasetError):
            raise row
        for col in (id_column, labels_column):
            if col not in row:
                raise DatasetError(f"{where}: no column {col!r}; columns: {', '.join(map(str, row))}")
        ex_id = "" if row[id_column] is None else str(row[id_column]).strip()
        if not ex_id:
            raise DatasetError(f"{where}: empty id in column {id_column!r}")
        if ex_id in out:
            raise DatasetError(f"{where}: duplicate id {ex_id!r} (first at {out[ex_id].where})")
        split = _split_name(row[split_column], where) if split_column and split_column in row else None
        out[ex_id] = LabelRow(where, _labels_of(row[labels_column], f"{where}: column {labels_column!r}", label_sep),
                              split)
    if not out:
        raise DatasetError(f"{path}: no rows")
    return out


# -------------------------------------------------------------------------------------- embeddings


def _np_blocks(path: Path) -> list[Block]:
    try:
        data = np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError) as e:
        raise DatasetError(f"{path}: not a readable .npy/.npz file ({e})") from None
    if isinstance(data, np.ndarray):
        return [Block(None, data, None, str(path))]
    with data:
        keys = list(data.files)
        ids_of = {k: [str(x) for x in data[k]] for k in keys if k == "ids" or k.endswith("_ids")}
        arrays = {k: data[k] for k in keys if k not in ids_of}
    if "embeddings" in arrays:
        return [Block(None, arrays["embeddings"], ids_of.get("ids"), f"{path}[embeddings]")]
    if not arrays:
        raise DatasetError(f"{path}: no arrays (expected one per split, or 'embeddings')")
    return [Block(k.strip().lower(), a, ids_of.get(f"{k}_ids"), f"{path}[{k}]") for k, a in arrays.items()]


def _numbered_columns(names: list[str]) -> list[str]:
    """``<prefix>0 .. <prefix>{D-1}`` among ``names`` (the longest such run), in numeric order."""
    groups: dict[str, dict[int, str]] = {}
    for n in names:
        m = re.fullmatch(r"(.*?)(\d+)", n)
        if m:
            groups.setdefault(m[1], {})[int(m[2])] = n
    best = max(groups.values(), key=len, default={})
    return [best[i] for i in range(len(best))] if set(best) == set(range(len(best))) else []


def _parquet_blocks(path: Path, id_column: str, embedding_column: str | None, split_column: str | None) -> list[Block]:
    import pyarrow as pa

    table = _parquet(path)
    if id_column not in table.column_names:
        raise DatasetError(f"{path}: no id column {id_column!r}; columns: {', '.join(table.column_names)}")
    lists = [f.name for f in table.schema if pa.types.is_list(f.type) or pa.types.is_fixed_size_list(f.type)
             or pa.types.is_large_list(f.type)]
    col = embedding_column or (lists[0] if len(lists) == 1 else None)
    if col is not None:
        if col not in table.column_names:
            raise DatasetError(f"{path}: no embedding column {col!r}; columns: {', '.join(table.column_names)}")
        emb = _list_column(table[col].combine_chunks(), path, col)
    else:
        cols = _numbered_columns([c for c in table.column_names if c not in (id_column, split_column)])
        if not cols:
            raise DatasetError(f"{path}: no embedding column: give --embedding-column (list columns: "
                               f"{', '.join(lists) or 'none'}) or numbered columns emb_0, emb_1, ...")
        emb = np.column_stack([table[c].to_numpy() for c in cols])
    ids = [str(x) for x in table[id_column].to_pylist()]
    return [Block(None, emb, ids, str(path))]


def _list_column(arr, path: Path, col: str) -> np.ndarray:
    """A (fixed-size) list column as an N x D array (DatasetError: rows of different lengths or nulls)."""
    lengths = set(arr.value_lengths().to_numpy(zero_copy_only=False).tolist()) if len(arr) else {0}
    if len(lengths) != 1 or arr.null_count:
        raise DatasetError(f"{path}: column {col!r}: embeddings of different lengths {sorted(lengths)[:5]} "
                           f"or null rows ({arr.null_count}); every row needs one D-long vector")
    return arr.flatten().to_numpy(zero_copy_only=False).reshape(len(arr), lengths.pop())


def read_embeddings(path, id_column: str = "id", embedding_column: str | None = None,
                    split_column: str | None = "split") -> list[Block]:
    """The :class:`Block` s of an embeddings file (``.npy``, ``.npz`` or Parquet; see the module doc).

    Raises DatasetError naming the file (and key or column) for an unreadable file, a missing or
    ambiguous embedding column, ragged rows, and :func:`check_block` failures.
    """
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"embeddings file not found: {path}")
    suffix = path.suffix.lower()
    if suffix in (".npy", ".npz"):
        blocks = _np_blocks(path)
    elif suffix in PARQUET_SUFFIXES:
        blocks = _parquet_blocks(path, id_column, embedding_column, split_column)
    else:
        raise DatasetError(f"{path}: unknown embeddings format {suffix!r} (expected .npy, .npz or .parquet)")
    for b in blocks:
        check_block(b)
    return blocks


def check_block(b: Block) -> None:
    """DatasetError naming the file when ``b``'s array is not 2-D float16/32/64 or its ids do not fit."""
    e = b.embeddings
    if e.dtype not in FLOAT_DTYPES:
        raise DatasetError(f"{b.where}: embeddings of dtype {e.dtype}; expected float16, float32 or float64 "
                           "(stored as float16)")
    if e.ndim != 2:
        raise DatasetError(f"{b.where}: embeddings of shape {e.shape}; expected N x D")
    if b.ids is not None and len(b.ids) != e.shape[0]:
        raise DatasetError(f"{b.where}: {len(b.ids)} ids for {e.shape[0]} embedding rows")


def check_values(emb: np.ndarray, ids: list[str], where: str) -> None:
    """DatasetError naming the first row ids with NaN/inf, or values beyond float16's range (+-65504)."""
    for start in range(0, len(ids), 65536):
        x = np.asarray(emb[start:start + 65536], dtype=np.float64)
        finite = np.isfinite(x)
        bad = np.flatnonzero(~finite.all(1))
        what = "NaN or inf"
        if not len(bad):
            bad, what = np.flatnonzero((np.abs(x) > FLOAT16_MAX).any(1)), f"values beyond float16's range (|x| > {FLOAT16_MAX:g})"
        if len(bad):
            names = ", ".join(repr(ids[start + i]) for i in bad[:3])
            raise DatasetError(f"{where}: embeddings of id {names} hold {what}"
                               + (f" ({len(bad)}+ rows)" if len(bad) > 1 else ""))


# ---------------------------------------------------------------------------------------- pairing


def _ids_by_order(b: Block, table: dict[str, LabelRow], labels_path: Path) -> list[str]:
    """The labels table's ids (of ``b.split``) in file order, for a block that has no ids."""
    if b.split is not None and all(r.split is None for r in table.values()):
        raise DatasetError(f"{b.where}: no ids, so its rows pair with {labels_path}'s rows of split {b.split!r} "
                           "in file order, but that table has no split column (add one, or store ids in the .npz)")
    ids = [i for i, r in table.items() if b.split is None or r.split == b.split]
    if len(ids) != b.embeddings.shape[0]:
        of = f" of split {b.split!r}" if b.split else ""
        raise DatasetError(f"{b.where}: {b.embeddings.shape[0]} embedding rows but {len(ids)} rows{of} in "
                           f"{labels_path}; without ids the rows pair by order, so the counts must match")
    return ids


def _row_split(b: Block, ex_id: str, row: LabelRow, labels_path: Path) -> str:
    if b.split and row.split and b.split != row.split:
        raise DatasetError(f"{row.where}: id {ex_id!r} is in split {row.split!r} but in {b.where} (split {b.split!r})")
    split = b.split or row.split
    if split is None:
        raise DatasetError(f"{row.where}: id {ex_id!r} has no split: {labels_path} needs a split column "
                           "(train/val/test), or give one embeddings array per split in an .npz")
    return split


def _missing(ids, where: str, other: str) -> None:
    if ids:
        raise DatasetError(f"{len(ids)} ids in {where} but not in {other} (e.g. {', '.join(map(repr, ids[:3]))})")


def pair_rows(blocks: list[Block], table: dict[str, LabelRow], emb_path: Path,
              labels_path: Path) -> dict[str, list[tuple[Block, int, str]]]:
    """split -> ``[(block, row in block, id)]``: every embedding row with its labels row.

    Raises DatasetError for a duplicate id in the embeddings, ids in one file but not the other, a
    split that disagrees between the two files, or a row with no split.
    """
    out: dict[str, list[tuple[Block, int, str]]] = {}
    seen: dict[str, str] = {}
    for b in blocks:
        ids = b.ids if b.ids is not None else _ids_by_order(b, table, labels_path)
        _missing([i for i in dict.fromkeys(ids) if i not in table], str(emb_path), str(labels_path))
        for r, ex_id in enumerate(ids):
            if ex_id in seen:
                raise DatasetError(f"{b.where}: duplicate id {ex_id!r} (also in {seen[ex_id]})")
            seen[ex_id] = b.where
            out.setdefault(_row_split(b, ex_id, table[ex_id], labels_path), []).append((b, r, ex_id))
    _missing([i for i in table if i not in seen], str(labels_path), str(emb_path))
    return out


def _check_splits(rows: dict[str, list], blocks: list[Block], emb_path: Path) -> None:
    empty = [b.split for b in blocks if b.split is not None and b.embeddings.shape[0] == 0]
    if empty:
        raise DatasetError(f"{emb_path}: empty split(s) {', '.join(empty)}: every split needs rows")
    missing = [s for s in REQUIRED_SPLITS if s not in rows]
    if missing:
        raise DatasetError(f"{emb_path}: no rows in split(s) {', '.join(missing)} (found: {', '.join(rows) or 'none'}); "
                           "fit trains on train and picks epochs on val (split names: train, val, test)")


def _split_arrays(pairs: list[tuple[Block, int, str]], table: dict[str, LabelRow], classes: list[str]):
    """(embeddings N x D, multi-hot N x C uint8, ids) of one split, values checked."""
    from ..datasets.base import multi_hot

    ids = [i for _, _, i in pairs]
    parts = []
    for b in dict.fromkeys(b for b, _, _ in pairs):
        idx = np.array([r for bb, r, _ in pairs if bb is b], dtype=np.int64)
        parts.append(np.asarray(b.embeddings[idx]))
    emb = np.concatenate(parts) if len(parts) > 1 else parts[0]
    check_values(emb, ids, pairs[0][0].where)
    return emb, multi_hot([table[i].labels for i in ids], classes), ids


# ------------------------------------------------------------------------------------------ import


def import_cache(output, embeddings, labels, *, id_column: str = "id", labels_column: str = "labels",
                 split_column: str | None = "split", label_sep: str = "|", embedding_column: str | None = None,
                 dataset: str | None = None, force: bool = False, labels_layout: str = "auto") -> Path:
    """Build a complete cache at ``output`` from an embeddings file and a labels table (see the module doc).

    Classes are the label names found in the table, sorted. Embeddings are stored float16 (as
    ``embed`` does); labels dense or CSR (``labels_layout``, see :mod:`mlhead.cache.labels`). Root attrs:
    ``backbone = "imported"``, ``dataset`` (default: the output file's stem), ``split_mode =
    "imported"``; the fingerprint holds the sha256 of both files and the options. Returns the path.

    Raises :class:`~mlhead.errors.DatasetError` naming the file and row or id for bad input (see the
    module doc), :class:`~mlhead.errors.CacheError` when ``output`` exists (unless ``force``) or is
    locked by another writer.
    """
    out, emb_path, labels_path = Path(output), Path(embeddings), Path(labels)
    if out.exists() and not force:
        raise CacheError(f"{out}: exists; pass --force to replace it")
    table = read_labels_table(labels_path, id_column, labels_column, split_column, label_sep)
    blocks = read_embeddings(emb_path, id_column, embedding_column, split_column)
    dims = sorted({b.embeddings.shape[1] for b in blocks})
    if len(dims) != 1:
        raise DatasetError(f"{emb_path}: embedding widths differ across arrays ({dims})")
    rows = pair_rows(blocks, table, emb_path, labels_path)
    _check_splits(rows, blocks, emb_path)
    classes = sorted({c for r in table.values() for c in r.labels})
    if not classes:
        raise DatasetError(f"{labels_path}: no labels in column {labels_column!r} (every row is empty)")
    splits = {s: _split_arrays(pairs, table, classes) for s, pairs in rows.items()}
    options = {"id_column": id_column, "labels_column": labels_column, "split_column": split_column,
               "label_sep": label_sep, "embedding_column": embedding_column}
    fingerprint = {"source": "import", "backbone": "imported", "classes": classes, "options": options,
                   "embeddings_file": emb_path.name, "embeddings_sha256": file_sha256(emb_path),
                   "labels_file": labels_path.name, "labels_sha256": file_sha256(labels_path)}
    attrs = {"dataset": dataset or out.stem, "backbone": "imported", "weights_sha256": "", "preprocessing": {},
             "split_mode": "imported", "split_seed": -1, "precision": str(blocks[0].embeddings.dtype),
             "modality": "embeddings", "dataset_options": options, "shard": [],
             "notes": [f"imported from {emb_path} and {labels_path}"], "skipped_at_load": []}
    return write_cache(out, splits, classes, attrs=attrs, fingerprint=fingerprint, labels_layout=labels_layout)
