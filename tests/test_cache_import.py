"""``mlhead cache import``: caches from the user's own .npy/.npz/Parquet arrays and a labels table."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from mlhead.cache import open_cache, verify_cache
from mlhead.cache.importer import file_sha256, import_cache
from mlhead.errors import CacheError, DatasetError

SPLITS = {"train": 12, "val": 5, "test": 4}
CLASSES = ["cat", "dog", "sci fi"]


def _data(seed=0, D=6):
    """split -> (embeddings float32, ids, label lists); one row per split without labels."""
    rng = np.random.default_rng(seed)
    out = {}
    for s, n in SPLITS.items():
        labels = [[c for c in CLASSES if rng.random() < 0.5] for _ in range(n)]
        labels[0] = []
        labels[1] = list(CLASSES)
        out[s] = (rng.normal(size=(n, D)).astype(np.float32), [f"{s}/{i}" for i in range(n)], labels)
    return out


def _labels_csv(path, data, sep="|", split=True, json_list_rows=(), delimiter=","):
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh, delimiter=delimiter)
        w.writerow(["id", "labels"] + (["split"] if split else []))
        for s, (_, ids, labels) in data.items():
            for k, (i, lab) in enumerate(zip(ids, labels)):
                cell = json.dumps(lab) if k in json_list_rows else sep.join(lab)
                w.writerow([i, cell] + ([s.upper() if k == 2 else s] if split else []))
    return path


def _check(path, data):
    c = open_cache(path)
    assert c.classes == CLASSES and c.splits == list(SPLITS)
    for s, (X, ids, labels) in data.items():
        E, L, I = c.load(s)
        np.testing.assert_array_equal(E.numpy(), X.astype(np.float16).astype(np.float32))
        assert I == ids
        assert [[CLASSES[j] for j in np.flatnonzero(row)] for row in L.numpy()] == labels
    assert verify_cache(path) == []
    return c


def test_npz_per_split_with_ids_and_csv_labels(tmp_path):
    data = _data()
    npz = tmp_path / "emb.npz"
    np.savez(npz, **{s: X for s, (X, _, _) in data.items()}, **{f"{s}_ids": np.array(ids) for s, (_, ids, _) in data.items()})
    labels = _labels_csv(tmp_path / "labels.csv", data, split=False, json_list_rows=(3,))
    c = _check(import_cache(tmp_path / "c.h5", npz, labels), data)
    assert c.attrs["backbone"] == "imported" and c.attrs["dataset"] == "c"
    fp = c.attrs["fingerprint_json"]
    assert fp["embeddings_sha256"] == file_sha256(npz) and fp["labels_sha256"] == file_sha256(labels)
    with pytest.raises(CacheError, match="exists; pass --force"):
        import_cache(tmp_path / "c.h5", npz, labels)
    import_cache(tmp_path / "c.h5", npz, labels, force=True)


def test_npy_one_array_with_split_column_tsv(tmp_path):
    data = _data(1)
    npy = tmp_path / "emb.npy"
    np.save(npy, np.concatenate([X for X, _, _ in data.values()]).astype(np.float64))
    labels = _labels_csv(tmp_path / "labels.tsv", data, sep=";", delimiter="\t")
    c = _check(import_cache(tmp_path / "c.h5", npy, labels, label_sep=";"), data)
    assert c.attrs["precision"] == "float64"


def test_parquet_list_and_numbered_columns_with_parquet_labels(tmp_path):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    data = _data(2)
    X = np.concatenate([X for X, _, _ in data.values()])
    ids = [i for _, ii, _ in data.values() for i in ii]
    rows = [(i, s, lab) for s, (_, ii, ll) in data.items() for i, lab in zip(ii, ll)]
    pq.write_table(pa.table({"id": [r[0] for r in rows], "split": [r[1] for r in rows],
                             "labels": [r[2] for r in rows]}), tmp_path / "labels.parquet")
    D = X.shape[1]
    pq.write_table(pa.table({"id": ids, "vec": pa.FixedSizeListArray.from_arrays(pa.array(X.ravel()), D)}),
                   tmp_path / "fixed.parquet")
    pq.write_table(pa.table({"id": ids, "vec": [list(map(float, r)) for r in X]}), tmp_path / "list.parquet")
    pq.write_table(pa.table({"id": ids, **{f"emb_{j}": X[:, j] for j in range(D)}}), tmp_path / "cols.parquet")
    for name in ("fixed", "list", "cols"):
        _check(import_cache(tmp_path / f"{name}.h5", tmp_path / f"{name}.parquet", tmp_path / "labels.parquet"), data)


def _npz(tmp_path, data, **override):
    arrays = {s: X for s, (X, _, _) in data.items()}
    arrays.update({f"{s}_ids": np.array(ids) for s, (_, ids, _) in data.items()})
    arrays.update(override)
    np.savez(tmp_path / "e.npz", **arrays)
    return tmp_path / "e.npz"


@pytest.mark.parametrize("case,match", [
    ("int", r"e.npz\[train\]: embeddings of dtype int64; expected float16, float32 or float64"),
    ("nan", r"embeddings of id 'train/3' hold NaN or inf"),
    ("overflow", r"embeddings of id 'val/1' hold values beyond float16's range"),
    ("dup_emb", r"duplicate id 'train/0'"),
    ("extra_emb", r"1 ids in .*e.npz but not in .*labels.csv \(e.g. 'stranger'\)"),
    ("missing_emb", r"5 ids in .*labels.csv but not in .*e.npz \(e.g. 'val/0'"),
    ("empty_split", r"empty split\(s\) val"),
    ("no_val", r"no rows in split\(s\) val"),
    ("wide", r"embedding widths differ across arrays \(\[6, 7\]\)"),
])
def test_embedding_errors_name_the_row(tmp_path, case, match):
    data = _data()
    labels = _labels_csv(tmp_path / "labels.csv", data, split=False)
    X, ids = data["train"][0].copy(), list(data["train"][1])
    override = {
        "int": {"train": X.astype(np.int64)},
        "nan": {"train": np.where(np.arange(12)[:, None] == 3, np.nan, X)},
        "overflow": {"val": data["val"][0] * np.array([[1.0]] * 1 + [[1e6]] + [[1.0]] * 3)},
        "dup_emb": {"train_ids": np.array(ids[:-1] + ["train/0"])},
        "extra_emb": {"train_ids": np.array(ids[:-1] + ["stranger"])},
        "missing_emb": {"val": np.zeros((0, 6), np.float32), "val_ids": np.array([], dtype=str)},
        "empty_split": {"val": np.zeros((0, 6), np.float32), "val_ids": np.array([], dtype=str)},
        "no_val": {},
        "wide": {"test": np.zeros((4, 7), np.float32)},
    }[case]
    if case == "empty_split":  # the labels table has no val rows either: the split itself is empty
        labels = _labels_csv(tmp_path / "labels.csv", {s: v for s, v in data.items() if s != "val"}, split=False)
    npz = _npz(tmp_path, data, **override)
    if case == "no_val":
        d = dict(np.load(npz))
        np.savez(npz, **{k: v for k, v in d.items() if not k.startswith("val")})
        labels = _labels_csv(tmp_path / "labels.csv", {s: v for s, v in data.items() if s != "val"}, split=False)
    with pytest.raises(DatasetError, match=match):
        import_cache(tmp_path / "c.h5", npz, labels)
    assert not (tmp_path / "c.h5").exists()


@pytest.mark.parametrize("cell,match", [("cat||dog", "empty label"), ('["cat", " "]', "empty label"),
                                        ('["cat"', "look like a JSON list but do not parse")])
def test_bad_label_names_name_the_row(tmp_path, cell, match):
    data = _data()
    npz = _npz(tmp_path, data)
    labels = _labels_csv(tmp_path / "labels.csv", data, split=False)
    lines = labels.read_text().splitlines()
    lines[3] = f'train/2,"{cell.replace(chr(34), chr(34) * 2)}"'
    labels.write_text("\n".join(lines) + "\n")
    with pytest.raises(DatasetError, match=rf"labels.csv:4: column 'labels'.*{match}"):
        import_cache(tmp_path / "c.h5", npz, labels)


def test_table_errors(tmp_path):
    data = _data()
    npz = _npz(tmp_path, data)
    labels = _labels_csv(tmp_path / "labels.csv", data)
    text = labels.read_text()
    labels.write_text(text + "train/0,cat,train\n")
    with pytest.raises(DatasetError, match=r"labels.csv:23: duplicate id 'train/0' \(first at .*labels.csv:2\)"):
        import_cache(tmp_path / "c.h5", npz, labels)
    labels.write_text(text.replace("\nval/4,", "\n,", 1))
    with pytest.raises(DatasetError, match=r"labels.csv:18: empty id in column 'id'"):
        import_cache(tmp_path / "c.h5", npz, labels)
    labels.write_text(text)
    with pytest.raises(DatasetError, match=r"labels.csv:2: no column 'name'"):
        import_cache(tmp_path / "c.h5", npz, labels, id_column="name")
    npy = tmp_path / "e.npy"
    np.save(npy, np.zeros((20, 6), np.float32))
    labels.write_text(text)
    with pytest.raises(DatasetError, match=r"e.npy: 20 embedding rows but 21 rows in .*labels.csv"):
        import_cache(tmp_path / "c.h5", npy, labels)
    _labels_csv(labels, data, split=False)
    np.save(npy, np.zeros((21, 6), np.float32))
    with pytest.raises(DatasetError, match=r"labels.csv:2: id 'train/0' has no split"):
        import_cache(tmp_path / "c.h5", npy, labels)


def test_split_disagreement_is_named(tmp_path):
    data = _data()
    npz = _npz(tmp_path, data)
    labels = _labels_csv(tmp_path / "labels.csv", data)
    lines = labels.read_text().splitlines()
    row = next(k for k, line in enumerate(lines) if line.startswith("test/3,"))
    lines[row] = lines[row].rsplit(",", 1)[0] + ",val"
    labels.write_text("\n".join(lines) + "\n")
    with pytest.raises(DatasetError, match=rf"labels.csv:{row + 1}: id 'test/3' is in split 'val' but in .*e.npz\[test\]"):
        import_cache(tmp_path / "c.h5", npz, labels)


def _cli(args, code=0):
    from click.testing import CliRunner

    from mlhead.cli import main

    res = CliRunner().invoke(main, [str(a) for a in args])
    assert res.exit_code == code, res.output
    return res.output


def test_cli_import_then_fit_eval_report_info_verify(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    data = _data(5)
    npz = _npz(tmp_path, data)
    labels = _labels_csv(tmp_path / "mine.csv", data, split=False)
    out = _cli(["cache", "import", npz, labels])
    path = tmp_path / "cache" / "mine" / "imported.h5"
    assert f"imported {path.relative_to(tmp_path)}" in out.replace("\n", "") or str(path) in out
    assert "train 12, val 5, test 4 rows; dim 6; 3 classes; labels dense" in out
    _cli(["fit", "--loss", "crossentropy", "--epochs", 2, "--batch-size", 4, "--hidden", 8, "--runs-dir", "runs"])
    run_dir = next((tmp_path / "runs").iterdir())
    assert json.loads((run_dir / "config.json").read_text())["backbone"] == "imported"
    _cli(["eval", "--runs-dir", "runs", "--threshold", "0.05"])
    assert (run_dir / "metrics.json").is_file()
    assert "crossentropy" in _cli(["report", "runs"])
    info = _cli(["cache", "info", path])
    assert "imported" in info and "9 datasets" in info and "dense" in info
    assert "9 dataset checksums match" in _cli(["cache", "verify", path]).replace("\n", "")
    assert "exists; pass --force" in _cli(["cache", "import", npz, labels], code=2)
