"""HDF5 cache: round trip, atomicity, resume, staleness, locking."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from mlhead.cache import (CacheError, CacheLock, CacheWriter, check_reusable, fingerprint_digest, open_cache,
                          write_cache)


def _splits(rng, dims=(7, 5)):
    D, C = dims
    out = {}
    for name, n in (("train", 11), ("val", 4), ("test", 3)):
        out[name] = (rng.normal(size=(n, D)).astype(np.float32), rng.integers(0, 2, size=(n, C)).astype(np.uint8),
                     [f"{name}-é{i}" for i in range(n)])
    return out


def test_round_trip_values_dtypes_ids_attrs(tmp_path):
    rng = np.random.default_rng(0)
    splits = _splits(rng)
    path = write_cache(tmp_path / "c.h5", splits, list("abcde"), attrs={"backbone": "x", "split_seed": 44})
    c = open_cache(path)
    assert c.splits == ["train", "val", "test"]
    assert c.classes == list("abcde")
    assert c.attrs["backbone"] == "x" and c.attrs["split_seed"] == 44 and c.attrs["complete"]
    assert {"versions", "fingerprint", "fingerprint_json"} <= set(c.attrs)
    for name, (X, Y, ids) in splits.items():
        E, L, I = c.load(name)
        assert E.dtype.is_floating_point and str(E.dtype) == "torch.float32"
        assert str(L.dtype) == "torch.uint8"
        np.testing.assert_array_equal(E.numpy(), X.astype(np.float16).astype(np.float32))
        np.testing.assert_array_equal(L.numpy(), Y)
        assert I == ids
    with h5py.File(path) as f:
        assert f["train/embeddings"].dtype == np.float16
        assert f["train/labels"].dtype == np.uint8
    with pytest.raises(CacheError, match="no split 'dev'"):
        c.load("dev")


def test_crash_mid_write_leaves_no_complete_file(tmp_path):
    path = tmp_path / "c.h5"
    w = CacheWriter(path, ["a", "b"], 3, {"train": 4}, fingerprint={"x": 1})
    w.append("train", np.ones((2, 3)), np.ones((2, 2)), ["r0", "r1"])
    # the writer "crashes" here: nothing at the final path, the partial dir is not a cache
    assert not path.exists()
    with pytest.raises(CacheError, match="not found.*resumed"):
        open_cache(path)
    # a half-written final-format file (no complete flag) is refused too
    with h5py.File(path, "w") as f:
        f.create_group("train")
        f.attrs["complete"] = False
    with pytest.raises(CacheError, match="not complete"):
        open_cache(path)


def test_resume_continues_and_matches_uninterrupted(tmp_path):
    rng = np.random.default_rng(1)
    X, Y = rng.normal(size=(10, 4)), rng.integers(0, 2, size=(10, 2))
    ids = [f"r{i}" for i in range(10)]
    full = CacheWriter(tmp_path / "full.h5", ["a", "b"], 4, {"train": 10}, fingerprint={"v": 1})
    full.append("train", X, Y, ids)
    full.finish()
    part = tmp_path / "part.h5"
    w = CacheWriter(part, ["a", "b"], 4, {"train": 10}, fingerprint={"v": 1})
    w.append("train", X[:6], Y[:6], ids[:6])
    # simulate bytes written after the last durable count (killed mid-append)
    with open(w.partial / "train.emb", "ab") as fh:
        fh.write(b"\x00" * 5)
    w2 = CacheWriter(part, ["a", "b"], 4, {"train": 10}, fingerprint={"v": 1})
    assert w2.done("train") == 6 and w2.consumed("train") == 6
    w2.append("train", X[6:], Y[6:], ids[6:])
    w2.finish()
    a, b = open_cache(tmp_path / "full.h5").load("train"), open_cache(part).load("train")
    np.testing.assert_array_equal(a[0].numpy(), b[0].numpy())
    np.testing.assert_array_equal(a[1].numpy(), b[1].numpy())
    assert a[2] == b[2]
    assert not (tmp_path / "part.h5.partial").exists()


def test_partial_with_other_inputs_is_refused_unless_forced(tmp_path):
    path = tmp_path / "c.h5"
    w = CacheWriter(path, ["a"], 2, {"train": 3}, fingerprint={"backbone": "m1", "seed": 1})
    w.append("train", np.ones((1, 2)), np.ones((1, 1)), ["x"])
    with pytest.raises(CacheError, match="changed: backbone"):
        CacheWriter(path, ["a"], 2, {"train": 3}, fingerprint={"backbone": "m2", "seed": 1})
    w2 = CacheWriter(path, ["a"], 2, {"train": 3}, fingerprint={"backbone": "m2", "seed": 1}, force=True)
    assert w2.done("train") == 0


def test_stale_cache_names_changed_fields(tmp_path):
    fp = {"backbone": "m", "split_seed": 44, "inputs": "abc"}
    path = write_cache(tmp_path / "c.h5", _splits(np.random.default_rng(0)), list("abcde"), fingerprint=fp)
    check_reusable(path, fp)  # same inputs: fine
    with pytest.raises(CacheError, match=r"stale.*inputs, split_seed"):
        check_reusable(path, {**fp, "split_seed": 1, "inputs": "abd"})
    assert open_cache(path).fingerprint == fingerprint_digest(fp)


def test_lock_refuses_second_writer(tmp_path):
    path = tmp_path / "c.h5"
    with CacheLock(path):
        with pytest.raises(CacheError, match="another `mlhead embed`"):
            with CacheLock(path):
                pass
    with CacheLock(path):  # released
        pass


def test_append_shape_mismatch(tmp_path):
    w = CacheWriter(tmp_path / "c.h5", ["a", "b"], 3, {"train": 2})
    with pytest.raises(ValueError, match=r"expected \(1, 3\) and \(1, 2\)"):
        w.append("train", np.ones((1, 4)), np.ones((1, 2)), ["x"])


def test_write_cache_rejects_mixed_widths(tmp_path):
    splits = {"train": (np.ones((2, 3)), np.ones((2, 1)), ["a", "b"]), "val": (np.ones((1, 4)), np.ones((1, 1)), ["c"])}
    with pytest.raises(ValueError, match="widths differ"):
        write_cache(tmp_path / "c.h5", splits, ["x"])
    assert not (tmp_path / "c.h5").exists()
