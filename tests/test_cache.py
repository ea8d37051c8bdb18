"""HDF5 cache: round trip, atomicity, resume, staleness, locking."""

from __future__ import annotations

import json

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


# ------------------------------------------------------------------------------------ resume decision

FP = {"dataset": "table", "backbone": "m", "split_seed": 44, "on_error": "raise", "inputs": "abc"}


def test_resume_decision_fresh_when_nothing_exists():
    from mlhead.cache.resume import FRESH, resume_decision

    for force in (False, True):
        d = resume_decision(None, FP, force)
        assert d.action == FRESH and not d.keeps_rows and d.changed == ()


def test_resume_decision_keeps_same_inputs_even_with_force():
    from mlhead.cache.resume import KEEP, resume_decision

    for force in (False, True):
        d = resume_decision(dict(FP), {**FP}, force)
        assert d.action == KEEP and d.keeps_rows and d.changed == () and d.details == ()


@pytest.mark.parametrize("old_on_error, old_skipped, expect", [
    ("raise", None, "adopt"),   # a raise run never skips: its rows are what a skip run writes
    ("raise", 3, "adopt"),
    ("skip", 0, "adopt"),       # a skip run that skipped nothing wrote what a raise run writes
    ("skip", None, "refuse"),   # unknown: it may have skipped rows a raise run would stop at
    ("skip", 2, "refuse"),
])
def test_resume_decision_on_error_only(old_on_error, old_skipped, expect):
    from mlhead.cache.resume import resume_decision

    new_on_error = "skip" if old_on_error == "raise" else "raise"
    d = resume_decision({**FP, "on_error": old_on_error}, {**FP, "on_error": new_on_error}, False,
                        old_skipped=old_skipped)
    assert d.action == expect and d.changed == ("on_error",)
    assert d.keeps_rows == (expect == "adopt")
    assert d.details == (f"on_error: {old_on_error} -> {new_on_error}",)


def test_resume_decision_other_inputs_refuse_or_discard():
    from mlhead.cache.resume import DISCARD, REFUSE, resume_decision

    old, new = FP, {**FP, "split_seed": 45, "inputs": "abd", "on_error": "skip"}
    d = resume_decision(old, new, False, old_skipped=0)
    assert d.action == REFUSE and not d.keeps_rows
    assert d.changed == ("inputs", "on_error", "split_seed")
    assert any(line.startswith("inputs: dataset files") for line in d.details)
    assert "split_seed: 44 -> 45" in d.details
    assert resume_decision(old, new, True).action == DISCARD
    # a field only one side has is a change too
    assert resume_decision(old, {**FP, "shard": [0, 2]}, False).changed == ("shard",)


def test_resume_decision_is_pure(tmp_path, monkeypatch):
    """No file is read or written, and the inputs are not modified."""
    import builtins

    from mlhead.cache.resume import resume_decision

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(builtins, "open", lambda *a, **k: pytest.fail(f"resume_decision opened {a}"))
    old, new = {**FP, "on_error": "skip"}, dict(FP)
    before = (json.dumps(old, sort_keys=True), json.dumps(new, sort_keys=True))
    resume_decision(old, new, False, old_skipped=0)
    assert (json.dumps(old, sort_keys=True), json.dumps(new, sort_keys=True)) == before
    assert list(tmp_path.iterdir()) == []


def test_check_reusable_adopts_only_harmless_on_error_change(tmp_path):
    from mlhead.cache.resume import ADOPT, KEEP

    splits = _splits(np.random.default_rng(0))
    skip_fp = {**FP, "on_error": "skip"}
    clean = write_cache(tmp_path / "clean.h5", splits, list("abcde"), attrs={"skipped_at_load": []}, fingerprint=skip_fp)
    assert check_reusable(clean, skip_fp).action == KEEP
    assert check_reusable(clean, FP).action == ADOPT  # built with skip, but nothing was skipped
    dirty = write_cache(tmp_path / "dirty.h5", splits, list("abcde"),
                        attrs={"skipped_at_load": [{"id": "x", "where": "t.csv:3", "error": "bad"}]}, fingerprint=skip_fp)
    with pytest.raises(CacheError, match=r"stale.*on_error: skip -> raise.*--force"):
        check_reusable(dirty, FP)


def test_journal_progress_counts_durable_rows(tmp_path):
    from mlhead.cache import partial_dir, read_progress

    path = tmp_path / "c.h5"
    assert read_progress(partial_dir(path)) is None
    w = CacheWriter(path, ["a"], 2, {"train": 5}, fingerprint={"v": 1}, sync_interval=3600)
    w.append("train", np.ones((2, 2)), np.ones((2, 1)), ["x", "y"])
    assert read_progress(partial_dir(path))["rows"] == {"train": 0}  # appended, not yet durable
    w.flush()
    doc = read_progress(partial_dir(path))
    assert doc["rows"] == {"train": 2} and doc["consumed"] == {"train": 2} and doc["planned"] == {"train": 5}
    (partial_dir(path) / "progress.json").write_text("{broken")
    with pytest.raises(CacheError, match="unreadable progress.json"):
        read_progress(partial_dir(path))
