"""``mlhead cache info`` / ``verify``: describe a cache (complete, incomplete or only a partial) and
recompute its invariants."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np

from ..errors import CacheError
from .finalize import CHUNK_ROWS
from .fingerprint import fingerprint_digest, short
from .checksum import stored_checksums, verify_checksums
from .journal import EMB_DTYPE, LABEL_DTYPE, partial_dir
from .labels import SHAPE_ATTR, labels_shape, layout_of, missing_label_parts, row_counts
from .reader import decode_attr, split_order


def _label_stats(per_row: np.ndarray, C: int) -> dict:
    """Label cardinality, density and rows without labels from the positives per row."""
    n, pos = len(per_row), int(per_row.sum())
    return {"label_cardinality": pos / n if n else 0.0, "label_density": pos / (n * C) if n and C else 0.0,
            "rows_without_labels": int((per_row == 0).sum())}


def _chunked(ds, n: int):
    for i in range(0, n, CHUNK_ROWS):
        yield ds[i:i + CHUNK_ROWS]


def _partial_row_counts(partial: Path, split: str, n: int, C: int, label_files: str) -> np.ndarray:
    """Positives per durable row of a journal's split (empty when its label file is short or absent)."""
    if label_files == "csr":
        cnt = partial / f"{split}.labcnt"
        counts = np.fromfile(cnt, dtype=np.int32, count=n) if n and cnt.is_file() else []
        return np.asarray(counts, dtype=np.int64) if len(counts) == n else np.zeros(0, np.int64)
    lab = partial / f"{split}.lab"
    if not (n and C and lab.is_file() and lab.stat().st_size >= n * C):
        return np.zeros(0, np.int64)
    return np.memmap(lab, dtype=LABEL_DTYPE, mode="r", shape=(n, C)).sum(1, dtype=np.int64)


def _partial_info(partial: Path) -> dict | None:
    prog_file = partial / "progress.json"
    if not prog_file.is_file():
        return {"path": str(partial), "readable": False} if partial.exists() else None
    try:
        prog = json.loads(prog_file.read_text())
    except (OSError, ValueError):
        return {"path": str(partial), "readable": False}
    C, D = len(prog.get("classes", [])), int(prog.get("dim", 0))
    splits = {}
    for split in split_order(prog.get("planned") or prog.get("rows", {})):
        n = int(prog.get("rows", {}).get(split, 0))
        stats = _label_stats(_partial_row_counts(partial, split, n, C, prog.get("label_files", "dense")), C)
        splits[split] = {"rows": n, "dim": D, "n_classes": C, "planned": (prog.get("planned") or {}).get(split),
                         "consumed": int(prog.get("consumed", {}).get(split, n)), **stats}
    return {"path": str(partial), "readable": True, "format": prog.get("format"), "splits": splits,
            "classes": prog.get("classes", []), "dim": D, "fingerprint": prog.get("fingerprint", ""),
            "fingerprint_fields": prog.get("fingerprint_json", {}), "skipped": len(prog.get("skipped", [])),
            "attrs": prog.get("attrs", {}), "updated": prog.get("updated")}


def _resolve_cache_arg(path) -> Path:
    p = Path(path)
    return Path(str(p)[:-len(".partial")]) if p.name.endswith(".partial") else p


def _split_shapes(f: h5py.File) -> dict:
    """split -> rows, dim, n_classes, labels_layout and label statistics, from an open cache file."""
    splits = {}
    for s in split_order(k for k in f.keys() if isinstance(f[k], h5py.Group)):
        g = f[s]
        emb, layout = g.get("embeddings"), layout_of(g)
        n = emb.shape[0] if emb is not None else 0
        d = emb.shape[1] if emb is not None and emb.ndim == 2 else None
        c = labels_shape(g)[1] if layout and (layout == "csr" or g["labels"].ndim == 2) else None
        stats = _label_stats(row_counts(g), c) if c else {}
        splits[s] = {"rows": int(n), "dim": d, "n_classes": c, "labels_layout": layout, **stats}
    return splits


def _as_list(v) -> list:
    return v if isinstance(v, list) else []


def _file_info(p: Path) -> dict:
    """cache_info's keys for the file at ``p`` (complete or not)."""
    try:
        with h5py.File(p, "r") as f:
            attrs = {k: decode_attr(v) for k, v in f.attrs.items()}
            splits = _split_shapes(f)
            checksums = len(stored_checksums(f))
    except OSError as e:
        raise CacheError(f"{p}: not a readable HDF5 cache ({e})") from None
    classes = _as_list(attrs.get("classes", []))
    complete = bool(attrs.get("complete", False))
    skipped, at_load = _as_list(attrs.get("skipped", [])), _as_list(attrs.get("skipped_at_load", []))
    fields = attrs.get("fingerprint_json", {})
    return dict(
        state="complete" if complete else "incomplete (not marked complete: an interrupted or foreign write)",
        complete=complete, splits=splits, classes=classes, n_classes=len(classes),
        dim=next((v["dim"] for v in splits.values() if v["dim"]), None),
        backbone=attrs.get("backbone"), dataset=attrs.get("dataset"), precision=attrs.get("precision"),
        fingerprint=attrs.get("fingerprint", ""), fingerprint_fields=fields if isinstance(fields, dict) else {},
        versions=attrs.get("versions", {}), skipped=len(skipped), skipped_at_load=len(at_load), checksums=checksums,
        skipped_rows=[{"when": "load", **r} for r in at_load] + [{"when": "embed", **r} for r in skipped],
        attrs={k: v for k, v in attrs.items() if k not in ("fingerprint_json", "skipped", "skipped_at_load")})


def _partial_only_info(partial: dict) -> dict:
    """cache_info's keys when only the journal of an interrupted embed exists."""
    readable = partial.get("readable")
    fields = partial.get("fingerprint_fields", {}) if readable else {}
    at_load = _as_list(partial.get("attrs", {}).get("skipped_at_load", [])) if readable else []
    return dict(
        state="partial: interrupted embed, not a usable cache yet (rerun the same `mlhead embed` to resume)"
        if readable else "partial: interrupted embed with unreadable progress (embed --force)",
        splits=partial.get("splits", {}), classes=partial.get("classes", []),
        n_classes=len(partial.get("classes", [])), dim=partial.get("dim"),
        backbone=fields.get("backbone"), dataset=fields.get("dataset"), precision=fields.get("precision"),
        fingerprint=partial.get("fingerprint", ""), fingerprint_fields=fields,
        versions=fields.get("versions", {}), skipped=partial.get("skipped", 0), skipped_at_load=len(at_load),
        checksums=0,
        skipped_rows=[{"when": "load", **r} for r in at_load], attrs=partial.get("attrs", {}))


def cache_info(path) -> dict:
    """Describe a cache: a complete file, an incomplete one, or only the ``.partial`` of an interrupted
    embed (``state`` says which). Keys: path, state, complete, splits (split -> rows, dim, n_classes,
    labels_layout ("dense"/"csr"; absent for a partial), label_cardinality, label_density,
    rows_without_labels), checksums (how many datasets carry one; 0: written before checksums), classes, n_classes, dim, backbone, dataset,
    fingerprint, fingerprint_fields, versions, skipped (embed-time), skipped_at_load, skipped_total,
    skipped_rows (``{when: load|embed, id, where, error, [split]}``),
    partial (progress of an interrupted (re)build, or None), attrs. CacheError when nothing is there.
    """
    p = _resolve_cache_arg(path)
    partial = _partial_info(partial_dir(p))
    if not p.is_file() and partial is None:
        raise CacheError(f"no cache at {p} (nor an interrupted embed at {p}.partial)")
    info: dict = {"path": str(p), "complete": False, "partial": partial}
    if p.is_file():
        info.update(_file_info(p))
        if partial is not None:
            info["state"] += "; an interrupted rebuild is pending in " + partial["path"]
    else:
        info.update(_partial_only_info(partial))
    info["skipped_total"] = info["skipped"] + info["skipped_at_load"]
    return info


def _verify_attrs(attrs: dict) -> tuple[list[str], list | None]:
    """(problems of the root attrs, the class names or None when unusable)."""
    problems = []
    if attrs.get("complete") is not True and attrs.get("complete") != 1:
        problems.append("attrs: not marked complete")
    classes = attrs.get("classes")
    if not isinstance(classes, list) or not all(isinstance(c, str) for c in classes):
        problems.append(f"attrs: classes is not a JSON list of names ({short(classes)})")
        classes = None
    else:
        dup = sorted({c for c in classes if classes.count(c) > 1})
        if dup:
            problems.append(f"attrs: duplicate class names {dup[:5]}")
        if not classes:
            problems.append("attrs: no classes")
    fields = attrs.get("fingerprint_json")
    if "fingerprint" not in attrs:
        problems.append("attrs: no fingerprint")
    elif isinstance(fields, dict) and fingerprint_digest(fields) != attrs["fingerprint"]:
        problems.append("attrs: fingerprint does not match fingerprint_json (attrs edited?)")
    for key in ("skipped", "skipped_at_load"):
        if key in attrs and not isinstance(attrs[key], list):
            problems.append(f"attrs: {key} is not a JSON list")
    return problems, classes


def _verify_layout(s: str, emb, g: h5py.Group, ids_ds) -> list[str]:
    """Shapes, dtypes and row counts of one split's embeddings, labels (either layout) and ids."""
    problems = [f"{s}/{name}: shape {ds.shape}, expected {what}" for name, ds, want, what in
                (("embeddings", emb, 2, "N x D"), ("ids", ids_ds, 1, "N")) if ds.ndim != want]
    if emb.dtype != EMB_DTYPE:
        problems.append(f"{s}/embeddings: dtype {emb.dtype}, expected float16")
    label_problems = _verify_label_layout(s, g)
    problems += label_problems
    kind = ids_ds.dtype.kind
    if kind not in "OSU" or (kind == "O" and h5py.check_string_dtype(ids_ds.dtype) is None):
        problems.append(f"{s}/ids: dtype {ids_ds.dtype}, expected strings")
    rows = {"embeddings": emb.shape[0] if emb.ndim else 0, "labels": None if label_problems else labels_shape(g)[0],
            "ids": ids_ds.shape[0] if ids_ds.ndim else 0}
    rows = {k: v for k, v in rows.items() if v is not None}
    if len(set(rows.values())) != 1:
        problems.append(f"{s}: row counts differ ({', '.join(f'{k} {v}' for k, v in rows.items())})")
    return problems


def _verify_label_layout(s: str, g: h5py.Group) -> list[str]:
    """Dense: labels N x C uint8. CSR: int64 indptr of N + 1, int32 indices, labels_shape [N, C]."""
    if layout_of(g) == "dense":
        lab = g["labels"]
        problems = [] if lab.ndim == 2 else [f"{s}/labels: shape {lab.shape}, expected N x C"]
        return problems + ([f"{s}/labels: dtype {lab.dtype}, expected uint8"] if lab.dtype != LABEL_DTYPE else [])
    ptr, ind, shape = g["labels_indptr"], g["labels_indices"], np.asarray(g.attrs[SHAPE_ATTR]).ravel()
    problems = [f"{s}/labels_{k}: dtype {d.dtype}, expected {want}" for k, d, want in
                (("indptr", ptr, np.int64), ("indices", ind, np.int32)) if d.dtype != want or d.ndim != 1]
    if len(shape) != 2:
        return problems + [f"{s}: attr {SHAPE_ATTR} {shape.tolist()}, expected [N, C]"]
    if ptr.ndim == 1 and ptr.shape[0] != int(shape[0]) + 1:
        problems.append(f"{s}/labels_indptr: {ptr.shape[0]} entries for {int(shape[0])} rows (expected N + 1)")
    return problems


def _verify_values(s: str, emb, g: h5py.Group, classes) -> list[str]:
    """Finite embeddings; 0/1 labels (dense) or a valid CSR structure; one column per class."""
    problems = []
    if emb.ndim == 2:
        bad = sum(int((~np.isfinite(np.asarray(c, dtype=np.float32))).any(axis=1).sum())
                  for c in _chunked(emb, emb.shape[0]))
        if bad:
            problems.append(f"{s}/embeddings: {bad} rows with NaN or inf")
    C = labels_shape(g)[1]
    if classes is not None and C != len(classes):
        problems.append(f"{s}/labels: {C} columns but {len(classes)} classes")
    if layout_of(g) == "dense":
        lab = g["labels"]
        bad = sum(int((np.asarray(c) > 1).sum() + (np.asarray(c) < 0).sum()) for c in _chunked(lab, lab.shape[0]))
        return problems + ([f"{s}/labels: {bad} values not in {{0, 1}}"] if bad else [])
    ptr, ind = g["labels_indptr"][...].astype(np.int64), g["labels_indices"]
    if len(ptr) and (ptr[0] != 0 or ptr[-1] != ind.shape[0] or (np.diff(ptr) < 0).any()):
        problems.append(f"{s}/labels_indptr: not a CSR row pointer (must rise from 0 to {ind.shape[0]})")
    out = sum(int(((c < 0) | (c >= C)).sum()) for c in _chunked(ind, ind.shape[0]))
    return problems + ([f"{s}/labels_indices: {out} class indices outside 0..{C - 1}"] if out else [])


def _verify_ids(s: str, ids_ds, seen: dict[str, str], cross: list[str]) -> list[str]:
    """Non-empty ids, unique in the split; ids already ``seen`` in another split go to ``cross``."""
    if ids_ds.ndim != 1:
        return []
    problems = []
    ids = [x.decode("utf-8", "replace") if isinstance(x, bytes) else str(x) for x in ids_ds[...]]
    empty = sum(1 for i in ids if not i)
    if empty:
        problems.append(f"{s}/ids: {empty} empty ids")
    counts: dict[str, int] = {}
    for i in ids:
        counts[i] = counts.get(i, 0) + 1
    dup = [i for i, c in counts.items() if c > 1]
    if dup:
        problems.append(f"{s}/ids: {len(dup)} duplicated ids (e.g. {short(dup[:3])})")
    for i in counts:
        if i in seen:
            cross.append(f"{i!r} in {seen[i]} and {s}")
        else:
            seen[i] = s
    return problems


def _verify_splits(f: h5py.File, classes) -> list[str]:
    groups = [k for k in f.keys() if isinstance(f[k], h5py.Group)]
    stray = [k for k in f.keys() if k not in groups]
    problems = [f"unexpected root datasets {stray}"] if stray else []
    if not groups:
        problems.append("no splits")
    dims: dict[str, int] = {}
    seen: dict[str, str] = {}
    cross: list[str] = []
    for s in split_order(groups):
        g = f[s]
        missing = [k for k in ("embeddings", "ids") if not isinstance(g.get(k), h5py.Dataset)]
        missing += missing_label_parts(g)
        if missing:
            problems.append(f"{s}: missing {', '.join(missing)}")
            continue
        emb, ids_ds = g["embeddings"], g["ids"]
        if emb.ndim == 2:
            dims[s] = emb.shape[1]
        layout = _verify_layout(s, emb, g, ids_ds)
        problems += layout + ([] if layout else _verify_values(s, emb, g, classes))
        problems += _verify_ids(s, ids_ds, seen, cross)
    if len(set(dims.values())) > 1:
        problems.append(f"embedding widths differ across splits ({dims})")
    if cross:
        problems.append(f"{len(cross)} ids in more than one split (e.g. {'; '.join(cross[:3])})")
    return problems


#: what :func:`verify_cache` says about the contents of a cache written before checksums existed
NO_CHECKSUMS = "no checksums stored (written before mlhead stored them): contents not compared"


def verify_report(path) -> tuple[list[str], list[str]]:
    """(problems, notes) of :func:`verify_cache`; notes say what could not be checked (e.g.
    :data:`NO_CHECKSUMS`) or how many checksums matched."""
    p = _resolve_cache_arg(path)
    if not p.is_file():
        hint = " (an interrupted embed exists: rerun it to finish)" if partial_dir(p).exists() else ""
        return [f"{p}: no cache file{hint}"], []
    try:
        f = h5py.File(p, "r")
    except OSError as e:
        return [f"{p}: not a readable HDF5 file ({e})"], []
    with f:
        problems, classes = _verify_attrs({k: decode_attr(v) for k, v in f.attrs.items()})
        checked, changed = verify_checksums(f)
        notes = [] if changed else [f"{len(checked)} dataset checksums match" if checked else NO_CHECKSUMS]
        return problems + _verify_splits(f, classes) + changed, notes


def verify_cache(path) -> list[str]:
    """Recompute a cache's invariants; return every problem found (empty list: ok).

    Checks: readable HDF5 marked complete; classes a list of unique names; each split has embeddings
    (N x D float16), labels (N x C uint8, or CSR: int64 indptr of N + 1 rising from 0 to nnz, int32
    indices in 0..C-1, attr labels_shape) and ids (N strings) with equal N, the same D in every split
    and C == len(classes); no NaN/inf embeddings; labels only 0/1; ids non-empty and unique within and
    across splits; the fingerprint digest matches its fields; skipped lists readable; every stored
    dataset checksum matches the contents (a mismatch names the split and dataset that changed; a
    cache without checksums is noted by :func:`verify_report`, not a problem).
    """
    return verify_report(path)[0]
