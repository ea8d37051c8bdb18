"""Cache storage: CSR labels for many classes, per-dataset checksums, hand-made HDF5 errors."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from mlhead.cache import CacheError, cache_info, merge_shards, open_cache, verify_cache, write_cache
from mlhead.cache.info import NO_CHECKSUMS, verify_report
from mlhead.cache.labels import CSR_MIN_CLASSES, choose_layout


def _splits(rng, C, D=6, density=0.05, sizes=(("train", 40), ("val", 9), ("test", 0))):
    return {s: (rng.normal(size=(n, D)).astype(np.float32), (rng.random((n, C)) < density).astype(np.uint8),
                [f"{s}-{i}" for i in range(n)]) for s, n in sizes}


def test_layout_rule_is_class_count():
    assert choose_layout(CSR_MIN_CLASSES) == "dense" and choose_layout(CSR_MIN_CLASSES + 1) == "csr"
    assert choose_layout(5, "csr") == "csr"
    with pytest.raises(ValueError, match="valid: auto, dense, csr"):
        choose_layout(5, "coo")


def test_dense_and_csr_read_back_identical(tmp_path):
    splits = _splits(np.random.default_rng(0), C=37)
    splits["train"][1][3] = 0  # a row without labels
    classes = [f"c{i}" for i in range(37)]
    dense = open_cache(write_cache(tmp_path / "d.h5", splits, classes, labels_layout="dense"))
    csr = open_cache(write_cache(tmp_path / "s.h5", splits, classes, labels_layout="csr"))
    assert dense.labels_layout("train") == "dense" and csr.labels_layout("train") == "csr"
    with h5py.File(csr.path) as f:  # plain datasets any HDF5 tool reads
        assert "labels" not in f["train"] and f["train/labels_indptr"].dtype == np.int64
        assert f["train/labels_indices"].dtype == np.int32 and list(f["train"].attrs["labels_shape"]) == [40, 37]
    for s, (_, Y, ids) in splits.items():
        for c in (dense, csr):
            E, L, I = c.load(s)
            np.testing.assert_array_equal(L.numpy(), Y)
            assert L.dtype.itemsize == 1 and I == ids
            S = c.load_sparse(s)
            assert S.shape == Y.shape and S.dtype == np.uint8
            np.testing.assert_array_equal(S.toarray(), Y)
    a, b = cache_info(dense.path)["splits"], cache_info(csr.path)["splits"]
    assert {s: {**v, "labels_layout": None} for s, v in a.items()} == {s: {**v, "labels_layout": None} for s, v in b.items()}
    assert a["train"]["labels_layout"] == "dense" and b["train"]["labels_layout"] == "csr"
    assert verify_cache(dense.path) == [] and verify_cache(csr.path) == []


def test_many_classes_stored_csr_and_much_smaller(tmp_path):
    rng = np.random.default_rng(1)
    C, n = 20_000, 300
    Y = np.zeros((n, C), np.uint8)
    for i in range(n):
        Y[i, rng.choice(C, size=rng.integers(0, 6), replace=False)] = 1
    splits = {"train": (rng.normal(size=(n, 4)), Y, [f"r{i}" for i in range(n)])}
    classes = [f"label{i}" for i in range(C)]
    auto = write_cache(tmp_path / "auto.h5", splits, classes)
    dense = write_cache(tmp_path / "dense.h5", splits, classes, labels_layout="dense")
    assert open_cache(auto).labels_layout("train") == "csr"
    assert auto.stat().st_size * 5 < dense.stat().st_size  # labels 6 MB dense vs ~6 KB CSR (classes attr is shared)
    np.testing.assert_array_equal(open_cache(auto).load_sparse("train").toarray(), Y)
    assert cache_info(auto)["splits"]["train"]["label_cardinality"] == pytest.approx(Y.sum() / n)


def test_merge_shards_keeps_csr(tmp_path):
    rng = np.random.default_rng(2)
    C = CSR_MIN_CLASSES + 5
    whole = _splits(rng, C, sizes=(("train", 10), ("val", 4)))
    classes = [f"c{i}" for i in range(C)]
    paths = []
    for i in range(2):
        part = {s: tuple(a[i * len(v[2]) // 2:(i + 1) * len(v[2]) // 2] for a in v) for s, v in whole.items()}
        fp = {"dataset": "x", "shard": [i, 2]}
        paths.append(write_cache(tmp_path / f"c.shard-{i}-of-2.h5", part, classes, attrs={"shard": [i, 2]}, fingerprint=fp))
    with h5py.File(paths[1], "r+") as f:  # a shard changed after it was written is refused
        f["val/labels_indices"][0] = (f["val/labels_indices"][0] + 1) % C
    with pytest.raises(CacheError, match=r"shard-1-of-2.h5: split 'val' dataset 'labels_indices' changed"):
        merge_shards(paths)
    with h5py.File(paths[1], "r+") as f:
        f["val/labels_indices"][0] = (f["val/labels_indices"][0] - 1) % C
    out = open_cache(merge_shards(paths))
    assert out.labels_layout("train") == "csr"
    for s, (_, Y, ids) in whole.items():
        _, L, I = out.load(s)
        np.testing.assert_array_equal(L.numpy(), Y)
        assert I == ids


@pytest.mark.parametrize("dataset,index", [("embeddings", (2, 1)), ("labels", (0, 3)), ("labels_indices", (1,)),
                                           ("labels_indptr", (2,)), ("ids", (1,))])
def test_byte_flip_is_named(tmp_path, dataset, index):
    layout = "csr" if dataset.startswith("labels_") else "dense"
    splits = _splits(np.random.default_rng(3), C=12, density=0.3)
    path = write_cache(tmp_path / "c.h5", splits, [f"c{i}" for i in range(12)], labels_layout=layout)
    open_cache(path).load("val")
    with h5py.File(path, "r+") as f:
        ds = f["val"][dataset]
        if dataset == "ids":
            ds[index] = "val-other"
        elif dataset == "labels":
            ds[index] = 1 - ds[index]
        elif dataset == "labels_indptr":
            ds[index] = ds[index] + 0  # same value: must still verify
            ds[index] = ds[index] + 1
        else:
            ds[index] = ds[index] + (1 if ds.dtype.kind == "i" else 0.5)
    msg = f"split 'val' dataset '{dataset}' changed after the cache was written"
    with pytest.raises(CacheError, match=msg):
        open_cache(path).load("val")
    open_cache(path).load("train")  # other splits unaffected
    assert any(msg in p for p in verify_cache(path))
    open_cache(path).load("val", verify=False)  # the opt-out reads it anyway


def test_old_cache_without_checksums_opens(tmp_path):
    splits = _splits(np.random.default_rng(4), C=5)
    path = write_cache(tmp_path / "c.h5", splits, list("abcde"))
    with h5py.File(path, "r+") as f:  # as written before checksums existed
        for s in f:
            for ds in f[s].values():
                del ds.attrs["checksum"]
    np.testing.assert_array_equal(open_cache(path).load("train")[1].numpy(), splits["train"][1])
    assert verify_report(path) == ([], [NO_CHECKSUMS])
    assert verify_report(write_cache(tmp_path / "new.h5", splits, list("abcde")))[1] == ["9 dataset checksums match"]


def test_hand_made_hdf5_names_what_is_missing(tmp_path):
    path = tmp_path / "mine.h5"
    with h5py.File(path, "w") as f:
        f["train/embeddings"] = np.zeros((3, 4), np.float32)
        f["train/labels"] = np.zeros((3, 2), np.uint8)
    with pytest.raises(CacheError) as e:
        open_cache(path)
    msg = str(e.value)
    assert "not an mlhead cache: missing root attr 'classes', root attr 'complete', /train/ids" in msg
    assert "interrupted" not in msg and "mlhead cache import" in msg
    with h5py.File(path, "r+") as f:
        f.attrs["classes"] = '["a", "b"]'
        f.attrs["complete"] = True
        del f["train/labels"]
        f["train/labels_indptr"] = np.zeros(4, np.int64)
    with pytest.raises(CacheError, match="missing /train/ids, /train/labels_indices, /train/attr labels_shape"):
        open_cache(path)


def test_cli_names_changed_dataset_and_missing_parts(tmp_path):
    from click.testing import CliRunner

    from mlhead.cli import main

    splits = _splits(np.random.default_rng(5), C=4, density=0.5)
    path = write_cache(tmp_path / "c.h5", splits, list("abcd"))
    with h5py.File(path, "r+") as f:
        f["train/embeddings"][0, 0] += 1
    for args in (["cache", "verify", path], ["fit", "--cache", path, "--epochs", 1, "--runs-dir", tmp_path / "runs"]):
        res = CliRunner().invoke(main, [str(a) for a in args])
        assert res.exit_code == 2 and "split 'train' dataset 'embeddings' changed" in res.output, res.output
    hand = tmp_path / "hand.h5"
    with h5py.File(hand, "w") as f:
        f["train/embeddings"] = np.zeros((2, 3), np.float32)
    res = CliRunner().invoke(main, ["fit", "--cache", str(hand), "--epochs", "1", "--runs-dir", str(tmp_path / "runs")])
    assert res.exit_code == 2 and "missing root attr 'classes'" in res.output and "Traceback" not in res.output


def test_sparse_journal_resumes_identically_and_stays_small(tmp_path):
    from mlhead.cache import CacheWriter, read_progress

    rng = np.random.default_rng(6)
    C, n = 5000, 40
    Y = (rng.random((n, C)) < 0.001).astype(np.uint8)
    X, ids = rng.normal(size=(n, 3)), [f"r{i}" for i in range(n)]
    classes = [f"c{i}" for i in range(C)]
    full = CacheWriter(tmp_path / "full.h5", classes, 3, {"train": n}, fingerprint={"v": 1})
    full.append("train", X, Y, ids)
    full.finish()
    w = CacheWriter(tmp_path / "part.h5", classes, 3, {"train": n}, fingerprint={"v": 1})
    w.append("train", X[:25], Y[:25], ids[:25])
    assert read_progress(w.partial)["label_files"] == "csr" and not (w.partial / "train.lab").exists()
    assert (w.partial / "train.labidx").stat().st_size == 4 * int(Y[:25].sum())  # not 25 x 5000 bytes
    with open(w.partial / "train.labidx", "ab") as fh, open(w.partial / "train.labcnt", "ab") as fc:
        fh.write(b"\x07" * 12)  # killed mid-append: bytes past the durable count
        fc.write(b"\x01" * 3)
    info = cache_info(tmp_path / "part.h5")["partial"]["splits"]["train"]
    assert info["rows"] == 25 and info["label_cardinality"] == pytest.approx(Y[:25].sum() / 25)
    w2 = CacheWriter(tmp_path / "part.h5", classes, 3, {"train": n}, fingerprint={"v": 1})
    assert w2.done("train") == 25 and w2.label_files == "csr"
    w2.append("train", X[25:], Y[25:], ids[25:])
    w2.finish()
    a, b = open_cache(tmp_path / "full.h5"), open_cache(tmp_path / "part.h5")
    np.testing.assert_array_equal(a.load("train")[1].numpy(), Y)
    np.testing.assert_array_equal(b.load("train")[1].numpy(), Y)
    with h5py.File(a.path) as fa, h5py.File(b.path) as fb:
        for k in ("labels_indptr", "labels_indices", "embeddings"):
            assert fa["train"][k].attrs["checksum"] == fb["train"][k].attrs["checksum"]


def test_dense_journal_of_an_older_run_still_resumes(tmp_path):
    """A journal written before sparse label files (no label_files key, dense .lab) with many classes."""
    import json as _json

    from mlhead.cache import CacheWriter

    rng = np.random.default_rng(7)
    C = CSR_MIN_CLASSES + 1
    Y = (rng.random((6, C)) < 0.01).astype(np.uint8)
    X, ids, classes = rng.normal(size=(6, 2)), [f"r{i}" for i in range(6)], [f"c{i}" for i in range(C)]
    w = CacheWriter(tmp_path / "c.h5", classes, 2, {"train": 6}, fingerprint={"v": 1})
    w.label_files = "dense"  # as the older writer did
    w.append("train", X[:4], Y[:4], ids[:4])
    w.close()
    doc = _json.loads((w.partial / "progress.json").read_text())
    del doc["label_files"]
    (w.partial / "progress.json").write_text(_json.dumps(doc))
    w2 = CacheWriter(tmp_path / "c.h5", classes, 2, {"train": 6}, fingerprint={"v": 1})
    assert w2.label_files == "dense" and w2.done("train") == 4
    w2.append("train", X[4:], Y[4:], ids[4:])
    c = open_cache(w2.finish())
    assert c.labels_layout("train") == "csr"
    np.testing.assert_array_equal(c.load("train")[1].numpy(), Y)
