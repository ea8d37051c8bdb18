"""`merge_shards`: shards of `embed(shard=(i, n))` join into exactly the file a single run writes (no Ray)."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
from conftest import TINY_IMAGE_BACKBONE, _labels_for

from mlhead.cache import CacheError, fingerprint_digest, merge_shards, merged_path, read_attrs, shard_path
from mlhead.embed import EmbedConfig, embed

N = 3
# batch 2 divides every shard boundary of the 18/6/6 (file-order) split into 3: shards and the single run see
# the same batches, so even batch-size dependent kernels give bit-identical embeddings
KW = {"backbone": TINY_IMAGE_BACKBONE, "random_init": True, "precision": "fp32", "batch_size": 2, "workers": 0,
      "split_mode": "paper-contiguous", "dataset_options": {"image_column": "image", "id_column": "id"}}


def _write_table(root: Path, corrupt: tuple[int, ...] = ()) -> Path:
    """The `image_table` fixture's 30 generated PNGs and CSV (module-scoped here); ``corrupt`` rows get
    an unreadable image."""
    from PIL import Image

    (root / "images").mkdir(parents=True)
    rows = []
    for i in range(30):
        p = root / "images" / f"im{i}.png"
        if i in corrupt:
            p.write_bytes(b"not a png")
        else:
            rng = np.random.default_rng(i)
            Image.fromarray((rng.random((40, 48, 3)) * 255).astype(np.uint8)).save(p)
        rows.append({"id": f"im{i}", "image": f"images/im{i}.png", "labels": "|".join(_labels_for(i))})
    path = root / "images.csv"
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=["id", "image", "labels"])
        w.writeheader()
        w.writerows(rows)
    return path


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """A table, its single-run cache and its 3 shard files (read-only for the tests)."""
    root = tmp_path_factory.mktemp("shards")
    table = _write_table(root)
    cache_dir = root / "cache"
    single = embed(EmbedConfig("table", table, cache_dir=cache_dir, **KW)).path
    shards = [embed(EmbedConfig("table", table, cache_dir=cache_dir, shard=(i, N), **KW)).path for i in range(N)]
    return {"table": table, "cache_dir": cache_dir, "single": single, "shards": shards}


def assert_same_cache(a: Path, b: Path) -> None:
    """Same groups, arrays (bit for bit), ids, labels and root attrs (fingerprint included)."""
    with h5py.File(a, "r") as fa, h5py.File(b, "r") as fb:
        assert sorted(fa) == sorted(fb)
        for split in fa:
            assert sorted(fa[split]) == sorted(fb[split])
            for name in fa[split]:
                x, y = fa[split][name], fb[split][name]
                assert x.dtype == y.dtype and x.shape == y.shape and x.chunks == y.chunks, (split, name)
                np.testing.assert_array_equal(x[...], y[...], err_msg=f"{split}/{name}")
    assert read_attrs(a) == read_attrs(b)


def test_merge_equals_single_run(built, tmp_path):
    shards = built["shards"]
    assert [p.name for p in shards] == [f"{TINY_IMAGE_BACKBONE}.shard-{i}-of-3.h5" for i in range(N)]
    out = merge_shards(list(reversed(shards)), tmp_path / "merged.h5")  # any order
    assert_same_cache(built["single"], out)
    attrs = read_attrs(out)
    assert attrs["shard"] == [] and attrs["fingerprint_json"]["shard"] is None
    assert attrs["fingerprint"] == fingerprint_digest(attrs["fingerprint_json"]) == read_attrs(built["single"])["fingerprint"]
    with h5py.File(out) as f:  # shard 0 rows, then shard 1, ... in every split
        for split in f:
            ids = [x.decode() for x in f[split]["ids"][...]]
            parts = []
            for p in shards:
                with h5py.File(p) as g:
                    parts += [x.decode() for x in g[split]["ids"][...]]
            assert ids == parts
    assert all(p.exists() for p in shards)  # kept unless remove=True


def test_merge_to_default_path_is_what_embed_reuses(built, tmp_path):
    cache_dir = tmp_path / "cache"
    copies = []
    for p in built["shards"]:
        q = cache_dir / "table" / p.name
        q.parent.mkdir(parents=True, exist_ok=True)
        copies.append(Path(shutil.copy(p, q)))
    out = merge_shards(copies, remove=True)
    assert out == cache_dir / "table" / f"{TINY_IMAGE_BACKBONE}.h5" == merged_path(copies[1])
    assert not any(p.exists() for p in copies)
    # the unsharded embed sees its own cache: nothing to do
    res = embed(EmbedConfig("table", built["table"], cache_dir=cache_dir, **KW))
    assert res.up_to_date and res.path == out
    # merging again into an up-to-date file leaves it untouched
    mtime = out.stat().st_mtime_ns
    assert merge_shards(built["shards"], out) == out and out.stat().st_mtime_ns == mtime


def test_merge_keeps_skipped_rows_in_order(tmp_path):
    table = _write_table(tmp_path, corrupt=(3, 17, 25))
    kw = {**KW, "on_error": "skip", "cache_dir": tmp_path / "cache"}
    single = embed(EmbedConfig("table", table, **kw)).path
    shards = [embed(EmbedConfig("table", table, shard=(i, N), **kw)).path for i in range(N)]
    out = merge_shards(shards, tmp_path / "merged.h5")
    assert_same_cache(single, out)
    assert len(read_attrs(out)["skipped"]) == 3


def test_resumes_an_interrupted_merge(built, tmp_path, monkeypatch):
    import mlhead.cache.merge as S

    calls = {"n": 0}
    real_append = S.CacheWriter.append

    def flaky(self, *a, **k):
        calls["n"] += 1
        if calls["n"] == 4:
            raise KeyboardInterrupt("stop mid-merge")
        return real_append(self, *a, **k)

    monkeypatch.setattr(S.CacheWriter, "append", flaky)
    out = tmp_path / "merged.h5"
    with pytest.raises(KeyboardInterrupt):
        merge_shards(built["shards"], out)
    assert not out.exists() and Path(str(out) + ".partial").is_dir()
    monkeypatch.setattr(S.CacheWriter, "append", real_append)
    merge_shards(built["shards"], out)
    assert_same_cache(built["single"], out)
    assert not Path(str(out) + ".partial").exists()


# ------------------------------------------------------------------------------------------ refusals


def _refused(paths, out, *needles):
    with pytest.raises(CacheError) as e:
        merge_shards(paths, out)
    msg = str(e.value)
    for n in needles:
        assert str(n) in msg, msg
    assert not Path(out).exists()
    return msg


def test_refuses_missing_shard(built, tmp_path):
    s = built["shards"]
    _refused([s[0], s[2]], tmp_path / "m.h5", "missing shard(s) 1/3", s[0], s[2], shard_path(built["single"], (1, 3)))


def test_refuses_duplicate_and_overlapping_shards(built, tmp_path):
    s = built["shards"]
    _refused([s[0], s[1], s[1], s[2]], tmp_path / "m.h5", "given twice", s[1])
    dup = Path(shutil.copy(s[1], tmp_path / "copy-of-shard-1.h5"))
    _refused([*s, dup], tmp_path / "m.h5", "shard 1/3 given more than once", s[1], dup)


def test_refuses_shards_with_other_inputs(built, tmp_path):
    s = built["shards"]
    other = embed(EmbedConfig("table", built["table"], cache_dir=tmp_path / "cache", shard=(1, N),
                              **{**KW, "split_seed": 45})).path
    _refused([s[0], other, s[2]], tmp_path / "m.h5", other, s[0], "split_seed: 44 -> 45")


def test_refuses_different_n(built, tmp_path):
    s = built["shards"]
    half = embed(EmbedConfig("table", built["table"], cache_dir=tmp_path / "cache", shard=(1, 2), **KW)).path
    _refused([s[0], half, s[2]], tmp_path / "m.h5", "different n", f"{half} is 1/2", f"{s[0]} is 0/3")


def test_refuses_incomplete_shard(built, tmp_path):
    s = built["shards"]
    cache_dir = tmp_path / "cache"
    with pytest.raises(KeyboardInterrupt):
        embed(EmbedConfig("table", built["table"], cache_dir=cache_dir, shard=(1, N), **KW), stop_after_batches=1)
    partial_only = cache_dir / "table" / s[1].name
    assert not partial_only.exists()
    _refused([s[0], partial_only, s[2]], tmp_path / "m.h5", partial_only, "not complete")
    # a file not marked complete
    broken = Path(shutil.copy(s[1], tmp_path / s[1].name))
    with h5py.File(broken, "r+") as f:
        f.attrs["complete"] = False
    _refused([s[0], broken, s[2]], tmp_path / "m.h5", broken, "not complete")


def test_refuses_unsharded_file_and_stale_output(built, tmp_path):
    s = built["shards"]
    _refused([s[0], built["single"], s[2]], tmp_path / "m.h5", built["single"], "not a shard")
    stale = tmp_path / "stale.h5"
    other = embed(EmbedConfig("table", built["table"], cache_dir=tmp_path / "cache", **{**KW, "split_seed": 45})).path
    shutil.copy(other, stale)
    with pytest.raises(CacheError, match="stale"):
        merge_shards(s, stale)
    assert merge_shards(s, stale, force=True) == stale
    assert_same_cache(built["single"], stale)


def test_distributed_without_ray_says_how_to_install(monkeypatch, tmp_path):
    import sys

    from mlhead import distributed as D

    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now raises ImportError
    with pytest.raises(D.RayUnavailableError, match=r"pip install 'mlhead\[ray\]'"):
        D.ray_embed(EmbedConfig("table", tmp_path), 2)
    with pytest.raises(ValueError, match=r"mlhead\[ray\]"):  # a ValueError too: the CLI prints one line
        D.ray_sweep(tmp_path / "c.h5", [], None, tmp_path)


def test_cache_merge_cli(built, tmp_path):
    from click.testing import CliRunner

    from mlhead.cli import main

    out = tmp_path / "cli-merged.h5"
    res = CliRunner().invoke(main, ["cache", "merge", *map(str, built["shards"]), "-o", str(out)])
    assert res.exit_code == 0, res.output
    assert "merged 3 shard(s)" in res.output
    assert_same_cache(built["single"], out)
    res = CliRunner().invoke(main, ["cache", "merge", str(built["shards"][0]), "-o", str(tmp_path / "x.h5")])
    assert res.exit_code == 2 and "Traceback" not in res.output


def test_embed_num_shards_without_ray_flag_is_a_usage_error(built, tmp_path):
    from click.testing import CliRunner

    from mlhead.cli import main

    res = CliRunner().invoke(main, ["embed", "--dataset", "table", "--data-dir", str(built["table"]),
                                    "--num-shards", "2", "--cache-dir", str(tmp_path)])
    assert res.exit_code == 2 and "--ray" in res.output
