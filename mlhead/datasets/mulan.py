"""MULAN multilabel benchmarks (ARFF + label XML): features are given, so there is no backbone.

Includes a small ARFF reader (dense and sparse rows, numeric and nominal attributes, quoted names
with escapes): ``scipy.io.arff`` cannot read sparse ARFF.

Why our own reader and not liac-arff (``import arff``): it is measurably faster and reads the
MULAN files identically. ``python bench/bench_arff.py --data-dir ../shared/data/mulan --repeat 3``
(liac-arff 2.4.0, ``arff.load(return_type=arff.DENSE)`` plus the same conversion to a float32
array; min of 3, on a shared 2-core machine) over all 24 MULAN ARFF files in ../shared: ours
2.29 s, liac-arff 18.11 s in total (7.9x); per file 1.06x (emotions-test, dense) to 34.9x
(Corel5k-train, sparse); sparse files 5-35x, dense 1.1-2.8x. Identical arrays in 24/24 files;
liac-arff keeps the backslash of an escaped quote in an attribute name (birds:
``Swainson\\'s Thrush``), which would not match the label XML.
"""

from __future__ import annotations

import math
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .base import (DatasetError, DatasetLoader, DatasetOption, Example, LoadedDataset, apply_split, carve_val, file_list,
                   handle_bad_row, register)

NOMINAL_MODES = ("index", "onehot")
_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "'": "'", '"': '"', "\\": "\\", "%": "%"}
_NUMERIC = ("numeric", "real", "integer")


# ------------------------------------------------------------------------------------------ ARFF


@dataclass
class Attribute:
    """One ARFF attribute: ``kind`` "numeric" or "nominal" (``values`` = the declared nominal values)."""

    name: str
    kind: str
    values: tuple[str, ...] = ()

    def __post_init__(self):
        self.index = {v: i for i, v in enumerate(self.values)}


def _read_quoted(s: str, i: int) -> tuple[str, int]:
    """The quoted token starting at ``s[i]`` (``'`` or ``"``), unescaped, and the index after it."""
    quote, out, i = s[i], [], i + 1
    while i < len(s):
        c = s[i]
        if c == "\\" and i + 1 < len(s):
            out.append(_ESCAPES.get(s[i + 1], s[i + 1]))
            i += 2
            continue
        if c == quote:
            return "".join(out), i + 1
        out.append(c)
        i += 1
    raise ValueError(f"unterminated quote in {s.strip()!r}")


def split_values(s: str) -> list[str]:
    """Split a comma-separated ARFF value list; quoted values (``'a,b'``) are unquoted and unescaped,
    the others stripped."""
    if "'" not in s and '"' not in s:
        return [t.strip() for t in s.split(",")]
    out, i, n = [], 0, len(s)
    while True:
        while i < n and s[i] in " \t":
            i += 1
        if i < n and s[i] in "'\"":
            tok, i = _read_quoted(s, i)
            while i < n and s[i] in " \t":
                i += 1
        else:
            j = s.find(",", i)
            j = n if j < 0 else j
            tok, i = s[i:j].strip(), j
        out.append(tok)
        if i >= n:
            return out
        if s[i] != ",":
            raise ValueError(f"expected ',' after value {tok!r} in {s.strip()!r}")
        i += 1


def parse_attribute(line: str) -> Attribute:
    """Parse an ``@attribute <name> <type>`` line (name possibly quoted with escapes)."""
    rest = line.strip()[len("@attribute"):].lstrip()
    if not rest:
        raise ValueError("@attribute without a name")
    if rest[0] in "'\"":
        name, i = _read_quoted(rest, 0)
    else:
        m = re.match(r"[^\s{]+", rest)
        name, i = m.group(0), m.end()
    kind = rest[i:].strip()
    if kind.startswith("{"):
        if not kind.endswith("}"):
            raise ValueError(f"attribute {name!r}: unterminated nominal value list {kind!r}")
        return Attribute(name, "nominal", tuple(split_values(kind[1:-1])))
    word = kind.split()[0].lower() if kind else ""
    if word in _NUMERIC:
        return Attribute(name, "numeric")
    raise ValueError(f"attribute {name!r}: type {kind or '(none)'!r} not supported (numeric or nominal only)")


@dataclass
class Arff:
    """A parsed ARFF file: attributes, values N x A float32 (numeric values; nominal values as the
    index of the value in the declaration; sparse rows' omitted values are 0, as in Weka), and for
    for each kept row its ``file:line`` and its 0-based data-row number (counting skipped rows)."""

    path: Path
    relation: str
    attributes: list[Attribute]
    values: np.ndarray
    where: list[str]
    rownum: list[int]
    sparse_rows: int


def read_arff(path: Path, on_error: str = "raise", skipped: list | None = None) -> Arff:
    """Read a dense or sparse ARFF file. A malformed header raises DatasetError naming file and line; a
    bad data row (wrong value count, unknown nominal value, non-number, missing value ``?``, index out of
    range) raises too, or with ``on_error="skip"`` is recorded in ``skipped`` (id ``<stem>:<data row>``)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        text = path.read_text(encoding="latin-1")
    lines = text.splitlines()
    relation, attributes, data_start = _read_header(path, lines)
    n_attr = len(attributes)
    convert = [_converter(a) for a in attributes]
    rows, where, rownum, n_sparse, data_row = [], [], [], 0, -1
    skipped = [] if skipped is None else skipped
    for n in range(data_start, len(lines)):
        line = lines[n].strip()
        if not line or line.startswith("%"):
            continue
        loc = f"{path}:{n + 1}"
        data_row += 1
        n_sparse += line.startswith("{")
        try:
            row = _sparse_row(line, convert) if line.startswith("{") else _dense_row(line, convert)
        except (ValueError, KeyError) as e:
            msg = f"{loc}: {e.args[0] if isinstance(e, ValueError) else 'unknown nominal value ' + str(e)}"
            handle_bad_row(on_error, skipped, f"{path.stem}:{data_row}", loc, DatasetError(msg))
            continue
        rows.append(row)
        where.append(loc)
        rownum.append(data_row)
    values = np.stack(rows) if rows else np.zeros((0, n_attr), np.float32)
    return Arff(path, relation, attributes, values, where, rownum, n_sparse)


def _read_header(path: Path, lines: list[str]) -> tuple[str, list[Attribute], int]:
    """(relation, attributes, index of the first line after ``@data``); DatasetError naming file:line."""
    attributes: list[Attribute] = []
    relation, data_start = "", None
    for n, raw in enumerate(lines, start=1):
        line = raw.strip()
        if not line or line.startswith("%"):
            continue
        low = line.lower()
        try:
            if low.startswith("@relation"):
                relation = line[len("@relation"):].strip().strip("'\"")
            elif low.startswith("@attribute"):
                attributes.append(parse_attribute(line))
            elif low.startswith("@data"):
                data_start = n
                break
            else:
                raise ValueError(f"unexpected header line {line[:60]!r}")
        except ValueError as e:
            raise DatasetError(f"{path}:{n}: {e}") from None
    if data_start is None:
        raise DatasetError(f"{path}: no @data section")
    if not attributes:
        raise DatasetError(f"{path}: no @attribute declarations")
    names = [a.name for a in attributes]
    dup = sorted({x for x in names if names.count(x) > 1}) if len(set(names)) != len(names) else []
    if dup:
        raise DatasetError(f"{path}: duplicate attribute names {dup[:5]}")
    return relation, attributes, data_start


def _sparse_row(line: str, convert: list) -> np.ndarray:
    """One sparse data row ``{j value, ...}`` (omitted values 0, as in Weka); ValueError when malformed."""
    row = np.zeros(len(convert), dtype=np.float32)
    end = line.find("}")
    if end < 0:
        raise ValueError("sparse row without closing '}'")
    body = line[1:end].strip()
    for entry in (split_values(body) if body else []):
        key, _, val = entry.strip().partition(" ")
        j = int(key)
        if not 0 <= j < len(convert):
            raise ValueError(f"attribute index {j} out of range 0..{len(convert) - 1}")
        row[j] = convert[j](_unquote(val.strip()))
    return row


def _dense_row(line: str, convert: list) -> np.ndarray:
    """One dense data row (an optional trailing ``{weight}`` is dropped); ValueError when malformed."""
    tokens = split_values(line)
    if len(tokens) == len(convert) + 1 and tokens[-1].startswith("{"):  # instance weight
        tokens.pop()
    if len(tokens) != len(convert):
        raise ValueError(f"{len(tokens)} values, expected {len(convert)}")
    row = np.zeros(len(convert), dtype=np.float32)
    row[:] = [conv(tok) for conv, tok in zip(convert, tokens)]
    return row


def _unquote(tok: str) -> str:
    if tok[:1] in ("'", '"'):
        return _read_quoted(tok, 0)[0]
    return tok


def _converter(attr: Attribute):
    if attr.kind == "numeric":
        def conv(tok: str) -> float:
            if tok == "?":
                raise ValueError(f"missing value for {attr.name!r}")
            value = float(tok)
            if not math.isfinite(value):
                raise ValueError(f"non-finite value {tok!r} for {attr.name!r}")
            return value
        return conv
    index = attr.index

    def conv_nominal(tok: str) -> float:
        if tok == "?":
            raise ValueError(f"missing value for {attr.name!r}")
        try:
            return index[tok]
        except KeyError:
            raise ValueError(f"value {tok!r} not in {{{','.join(attr.values)}}} of {attr.name!r}") from None
    return conv_nominal


def read_label_names(path: Path) -> list[str]:
    """Label names of a MULAN label XML (``<label name="..."/>`` at any depth, document order; a
    hierarchical file is flattened)."""
    try:
        root = ET.parse(path).getroot()
    except (ET.ParseError, OSError) as e:
        raise DatasetError(f"{path}: unreadable label XML ({e})") from None
    names = [el.get("name") for el in root.iter() if el.tag.rsplit("}", 1)[-1] == "label"]
    if not names or any(n is None for n in names):
        raise DatasetError(f"{path}: no <label name=...> elements" if not names else
                           f"{path}: a <label> without a name attribute")
    if len(set(names)) != len(names):
        raise DatasetError(f"{path}: duplicate label names")
    return names


# -------------------------------------------------------------------------------------- loader


def find_dataset_dir(data_dir: Path, name: str | None) -> Path:
    """``data_dir`` itself when it holds a label XML, else ``data_dir/<name>`` (folder name or XML stem,
    case-insensitive)."""
    if not data_dir.is_dir():
        raise DatasetError(f"mulan: data directory not found: {data_dir}")
    if list(data_dir.glob("*.xml")) and (name is None or _matches(data_dir, name)):
        return data_dir
    subdirs = sorted(d for d in data_dir.iterdir() if d.is_dir() and list(d.glob("*.xml")))
    if name is None:
        raise DatasetError(f"mulan: pick a dataset with --name (available in {data_dir}: "
                           f"{', '.join(d.name for d in subdirs) or 'none'})")
    for d in subdirs:
        if _matches(d, name):
            return d
    raise DatasetError(f"mulan: dataset {name!r} not found in {data_dir} (available: "
                       f"{', '.join(d.name for d in subdirs) or 'none'})")


def _matches(folder: Path, name: str) -> bool:
    name = name.lower()
    return folder.name.lower() == name or any(x.stem.lower() == name for x in folder.glob("*.xml"))


def find_files(folder: Path) -> tuple[Path, dict[str, Path]]:
    """(label XML, {"train": …, "test": …} or {"all": …}) of a MULAN dataset folder."""
    xmls = sorted(folder.glob("*.xml"))
    if len(xmls) > 1:
        named = [x for x in xmls if x.stem.lower() == folder.name.lower()]
        if len(named) != 1:
            raise DatasetError(f"mulan: several label XML files in {folder}: {', '.join(x.name for x in xmls)}")
        xmls = named
    arffs = sorted(folder.glob("*.arff"))
    found = {s: [a for a in arffs if re.search(rf"(^|[-_.]){s}([-_.]|$)", a.stem, re.I)] for s in ("train", "test")}
    if found["train"] or found["test"]:
        for s, cand in found.items():
            if len(cand) != 1:
                raise DatasetError(f"mulan: expected one *-{s}*.arff in {folder}, found "
                                   f"{', '.join(a.name for a in cand) or 'none'}")
        return xmls[0], {s: c[0] for s, c in found.items()}
    if len(arffs) != 1:
        raise DatasetError(f"mulan: expected <name>-train.arff + <name>-test.arff or a single .arff in {folder}, "
                           f"found {', '.join(a.name for a in arffs) or 'none'}")
    return xmls[0], {"all": arffs[0]}


@register("mulan")
class Mulan(DatasetLoader):
    """MULAN benchmark datasets (emotions, scene, yeast, birds, flags, genbase, medical, enron, tmc2007,
    bibtex, corel5k, cal500, ...): pre-computed feature vectors, multilabel (modality "features").

    Layout: ``<data-dir>/<name>/{<name>-train.arff, <name>-test.arff, <name>.xml}`` with ``--name``, or
    ``--data-dir`` = that folder (train/test files are found by ``train``/``test`` in the file name,
    e.g. ``Corel5k-train-sparse.arff``, ``tmc2007-500-test.arff``; a folder with one .arff and no
    train/test files, like ``cal500``, has no split).

    ARFF: dense and sparse (``{index value, ...}``) rows, numeric and nominal attributes, names quoted
    with ``'``/``"`` and backslash escapes (``'Swainson\\'s Thrush'``). Labels are the attributes named
    in the XML label file (``<label name="..."/>``, any nesting), matched BY NAME, in XML order, wherever
    they are among the attributes; a label attribute must be nominal with value ``1`` (positive) or
    numeric 0/1. Features = all other attributes in file order, float32: numeric as is; nominal
    (``-D nominal=...``) ``index`` (default; the value's position in the declaration, so D equals the MULAN
    attribute count, e.g. genbase 1,186 including its protein-accession attribute) or ``onehot``
    (nominal attributes with more than 2 values become one 0/1 column per value). Missing values
    (``?``) are bad rows (``--on-error``). Ids: ``<file stem>:<row>`` (0-based data row of the file).

    Split: the source's train/test files; val = a seeded 20 % of train (``--split-seed``). Without a
    split (cal500): seeded 60/20/20 permutation (``--split-mode``).

    Not in the sigmoidF1 paper. Returned as ``LoadedDataset.features`` {split: (X N x D float32,
    Y N x C uint8, ids)}; ``splits`` holds the same rows (Example(id, "", labels)) in the same order.
    """

    modality = "features"
    default_backbone = "none"
    layout = ("<data-dir>/<name>/{<name>-train.arff,<name>-test.arff,<name>.xml} (MULAN ARFF + label XML; "
              "--name picks the folder) or --data-dir = that folder; cal500: a single .arff")
    split_doc = ("the source's train/test files, val = seeded 20% of train (--split-seed); no split files: "
                 "seeded 60/20/20")
    OPTIONS = {
        "name": DatasetOption(None, "dataset folder under --data-dir (emotions, scene, yeast, medical, enron, "
                                    "corel5k, ...)"),
        "nominal": DatasetOption("index", "nominal feature attributes: index (position in the declaration) | onehot",
                                 choices=NOMINAL_MODES),
    }

    def load(self, data_dir, split_seed=44, split_mode="random", on_error="raise", name=None, nominal="index", **_):
        if nominal not in NOMINAL_MODES:
            raise DatasetError(f"mulan: --nominal {nominal} invalid; valid: {', '.join(NOMINAL_MODES)}")
        folder = find_dataset_dir(Path(data_dir), name)
        xml, parts = find_files(folder)
        label_names = read_label_names(xml)
        skipped: list[dict] = []
        arffs = {s: read_arff(p, on_error, skipped) for s, p in parts.items()}
        first = next(iter(arffs.values()))
        for s, a in arffs.items():
            sig = [(x.name, x.kind, x.values) for x in a.attributes]
            if sig != [(x.name, x.kind, x.values) for x in first.attributes]:
                raise DatasetError(f"mulan: {a.path} and {first.path} declare different attributes")
        label_cols, pos_index = self._label_columns(first, label_names, xml)
        feature_cols = [j for j in range(len(first.attributes)) if j not in set(label_cols)]
        expand = self._feature_layout(first.attributes, feature_cols, nominal)
        data = {}
        for s, a in arffs.items():
            Y = _label_matrix(a, label_cols, pos_index, label_names)
            ids = [f"{a.path.stem}:{i}" for i in a.rownum]
            data[s] = (self._features(a.values, expand), Y, ids, a.where)
        features, splits = self._split(data, label_names, split_seed, split_mode)
        notes = [f"MULAN {folder.name}: {first.relation!r}, {len(label_names)} labels (by name from {xml.name}), "
                 f"{features['train'][0].shape[1]} features (nominal: {nominal})"
                 + (", sparse ARFF" if any(a.sparse_rows for a in arffs.values()) else "")]
        for s, a in arffs.items():
            Y = data[s][1]
            notes.append(f"{a.path.name}: {len(Y)} rows, label cardinality {Y.sum(1).mean():.2f}")
        if "all" in parts:
            notes.append("no train/test files: seeded 60/20/20 permutation")
        notes.append("split: " + ", ".join(f"{s} {len(v[2])}" for s, v in features.items()))
        if skipped:
            notes.append(f"{len(skipped)} bad rows skipped")
        return LoadedDataset(
            name=self.name, modality=self.modality, classes=label_names, splits=splits,
            files=file_list([xml, *parts.values()]),
            split_mode="official" if "all" not in parts else split_mode, split_seed=split_seed,
            options={"name": folder.name, "nominal": nominal}, notes=notes, skipped=skipped, features=features,
            cache_name=f"{self.name}-{folder.name}")

    @staticmethod
    def _label_columns(arff: Arff, label_names: list[str], xml: Path) -> tuple[list[int], list[int | None]]:
        """Column of each XML label (by name) and the index of its positive value (None: numeric)."""
        by_name = {a.name: j for j, a in enumerate(arff.attributes)}
        missing = [n for n in label_names if n not in by_name]
        if missing:
            stripped = {a.name.strip().lower(): a.name for a in arff.attributes}
            hints = [f"{m!r} (ARFF has {stripped[m.strip().lower()]!r})" for m in missing
                     if m.strip().lower() in stripped]
            raise DatasetError(f"mulan: {len(missing)} labels of {xml} are not attributes of {arff.path}: "
                               f"{', '.join(map(repr, missing[:10]))}" + (f"; near matches: {', '.join(hints[:5])}"
                                                                         if hints else ""))
        cols, pos = [], []
        for n in label_names:
            a = arff.attributes[by_name[n]]
            cols.append(by_name[n])
            if a.kind == "numeric":
                pos.append(None)
            elif "1" in a.index and set(a.values) <= {"0", "1"}:
                pos.append(a.index["1"])
            else:
                raise DatasetError(f"mulan: label attribute {n!r} in {arff.path} is nominal "
                                   f"{{{','.join(a.values)}}}; expected {{0,1}} or numeric")
        return cols, pos

    @staticmethod
    def _feature_layout(attributes: list[Attribute], cols: list[int], nominal: str) -> list[tuple[int, int]]:
        """(source column, number of output columns: 1, or k for a one-hot nominal with k values)."""
        out = []
        for j in cols:
            a = attributes[j]
            k = len(a.values) if nominal == "onehot" and a.kind == "nominal" and len(a.values) > 2 else 1
            out.append((j, k))
        return out

    @staticmethod
    def _features(values: np.ndarray, layout: list[tuple[int, int]]) -> np.ndarray:
        if all(k == 1 for _, k in layout):
            return np.ascontiguousarray(values[:, [j for j, _ in layout]], dtype=np.float32)
        blocks = []
        for j, k in layout:
            col = values[:, j]
            if k == 1:
                blocks.append(col[:, None])
            else:
                onehot = np.zeros((len(col), k), np.float32)
                onehot[np.arange(len(col)), col.astype(np.int64)] = 1
                blocks.append(onehot)
        return np.concatenate(blocks, axis=1).astype(np.float32) if blocks else np.zeros((len(values), 0), np.float32)

    @staticmethod
    def _split(data: dict, classes: list[str], seed: int, mode: str):
        examples = {s: [Example(id=i, input="", labels=[c for c, y in zip(classes, Y[r]) if y], where=w)
                        for r, (i, w) in enumerate(zip(ids, where))]
                    for s, (X, Y, ids, where) in data.items()}
        if "all" in data:
            splits = apply_split(examples["all"], seed, mode)
            src = {s: "all" for s in splits}
        else:
            train, val = carve_val(examples["train"], seed)
            splits = {"train": train, "val": val, "test": examples["test"]}
            src = {"train": "train", "val": "train", "test": "test"}
        features = {}
        for s, exs in splits.items():
            X, Y, ids, _ = data[src[s]]
            row = {i: r for r, i in enumerate(ids)}
            idx = np.array([row[e.id] for e in exs], dtype=np.int64)
            features[s] = (X[idx], Y[idx], [e.id for e in exs])
        return features, splits


def _label_matrix(a: Arff, label_cols: list[int], pos_index: list, label_names: list[str]) -> np.ndarray:
    """N x C uint8 multi-hot of the label attributes: nominal labels are 1 at their positive value,
    numeric labels must be 0/1 (DatasetError naming file:line otherwise)."""
    Y = np.zeros((len(a.values), len(label_cols)), dtype=np.uint8)
    for k, (j, pos) in enumerate(zip(label_cols, pos_index)):
        col = a.values[:, j]
        if pos is not None:
            Y[:, k] = col == pos
            continue
        bad = np.flatnonzero((col != 0) & (col != 1))
        if bad.size:
            raise DatasetError(f"{a.where[bad[0]]}: label {label_names[k]!r} = {col[bad[0]]}, expected 0 or 1")
        Y[:, k] = col == 1
    return Y
