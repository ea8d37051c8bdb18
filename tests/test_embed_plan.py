"""EmbedConfig / plan_embed: what an embed will write, decided before anything is written."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import pytest
import torch
from conftest import TINY_IMAGE_BACKBONE
from test_shards import KW, _write_table

from mlhead.cache import fingerprint_digest, read_attrs
from mlhead.embed import EmbedConfig, embed, plan_embed
from mlhead.errors import ConfigError


def _tree(root: Path) -> list[str]:
    return sorted(str(Path(d, f).relative_to(root)) for d, dirs, files in os.walk(root) for f in files + dirs)


@pytest.fixture(scope="module")
def table(tmp_path_factory):
    return _write_table(tmp_path_factory.mktemp("plan") / "data")


def test_plan_is_pure_and_names_path_fingerprint_attrs(table, tmp_path):
    config = EmbedConfig("table", table, cache_dir=tmp_path / "cache", **KW)
    before = _tree(tmp_path)
    plan = plan_embed(config)
    assert _tree(tmp_path) == before and not (tmp_path / "cache").exists()  # no file, no folder, no lock
    assert plan.path == tmp_path / "cache" / "table" / f"{TINY_IMAGE_BACKBONE}.h5"
    fp = plan.fingerprint
    assert fp["dataset"] == "table" and fp["backbone"] == TINY_IMAGE_BACKBONE and fp["precision"] == "fp32"
    assert fp["shard"] is None and fp["split_seed"] == 44 and fp["on_error"] == "raise"
    assert plan.attrs["dataset"] == "table" and plan.attrs["shard"] == [] and plan.attrs["modality"] == "image"
    assert plan.dim == plan.encoder.dim and sum(len(v) for v in plan.slices().values()) == 30
    # the plan is what embed writes
    res = embed(config)
    assert res.path == plan.path and read_attrs(res.path)["fingerprint"] == fingerprint_digest(fp)
    assert plan.is_current() and plan_embed(config).is_current()


def test_plan_fingerprint_follows_the_options(table, tmp_path):
    base = EmbedConfig("table", table, cache_dir=tmp_path / "cache", **KW)
    a, b = plan_embed(base), plan_embed(dataclasses.replace(base, split_seed=45))
    assert a.fields.digest == plan_embed(base).fields.digest  # deterministic
    assert a.fields.digest != b.fields.digest and a.path == b.path
    shard = plan_embed(dataclasses.replace(base, shard=(1, 3)))
    assert shard.fingerprint["shard"] == [1, 3] and shard.path.name == f"{TINY_IMAGE_BACKBONE}.shard-1-of-3.h5"
    assert sum(len(v) for v in shard.slices().values()) == 10
    out = plan_embed(dataclasses.replace(base, output=tmp_path / "x.h5"))
    assert out.path == tmp_path / "x.h5" and out.fields.digest == a.fields.digest


def test_is_current_compares_plans_without_raising(table, tmp_path):
    config = EmbedConfig("table", table, cache_dir=tmp_path / "cache", **KW)
    assert not plan_embed(config).is_current()  # nothing there
    embed(config)
    other = plan_embed(dataclasses.replace(config, split_seed=45))
    assert not other.is_current()  # stale: False, not an exception
    assert plan_embed(dataclasses.replace(config, on_error="skip")).is_current()  # raise-built serves skip
    (tmp_path / "junk.h5").write_bytes(b"not hdf5")
    assert not plan_embed(config).is_current(tmp_path / "junk.h5")


@pytest.mark.parametrize("change, match", [
    ({"on_error": "ignore"}, "--on-error 'ignore' invalid"),
    ({"batch_size": 0}, "--batch-size 0 invalid"),
    ({"shard": (3, 3)}, "--shard 3/3 invalid"),
])
def test_bad_options_raise_config_error_before_any_work(tmp_path, change, match):
    config = EmbedConfig("table", tmp_path / "missing.csv", cache_dir=tmp_path / "cache", **{**KW, **change})
    with pytest.raises(ConfigError, match=match):
        plan_embed(config)
    with pytest.raises(ValueError, match=match):  # a ValueError too, for callers that catch built-ins
        embed(config)
    assert _tree(tmp_path) == []


def test_ray_probe_compares_plans(table, tmp_path):
    """The Ray driver's "is the merged cache current?" probe (run here in-process, no Ray): the first
    candidate that holds what the plan would write, None when none does; it writes nothing."""
    from mlhead.distributed import _probe_task

    config = EmbedConfig("table", table, cache_dir=tmp_path / "cache", **KW)
    current = embed(config).path
    stale = embed(dataclasses.replace(config, split_seed=45, output=tmp_path / "stale.h5")).path
    before, threads = _tree(tmp_path), torch.get_num_threads()
    try:
        assert _probe_task(config, [str(stale), str(current)], threads) == str(current)
        assert _probe_task(config, [str(stale)], threads) is None
    finally:
        torch.set_num_threads(threads)
    assert _tree(tmp_path) == before
