"""Ray scale-out on a local 2-CPU Ray instance: sharded embed (with a killed shard) and a sweep over cells.

Ray is in the `dev` extra, so CI runs these; skipped where Ray is not installed (`pip install 'mlhead[ray]'`).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

ray = pytest.importorskip("ray")

from conftest import TINY_IMAGE_BACKBONE, make_cache
from test_shards import KW, _write_table, assert_same_cache

from mlhead.distributed import ray_embed, ray_sweep
from mlhead.embed import EmbedConfig, embed
from mlhead.errors import CacheError


def single_process(table, cache_dir):
    """The reference: a plain `embed` with the tasks' thread count (1), since oneDNN's reductions, and
    so the last float16 bit of a few values, depend on the number of threads, not on sharding."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return embed(EmbedConfig("table", table, cache_dir=cache_dir, **KW)).path
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def local_ray():
    """One local Ray instance (2 CPUs, no dashboard) for the whole module."""
    if ray.is_initialized():
        ray.shutdown()
    ray.init(address="local", num_cpus=2, include_dashboard=False, object_store_memory=100 * 2**20,
             logging_level="WARNING")
    yield ray
    ray.shutdown()


def test_ray_embed_equals_single_process(local_ray, image_table, tmp_path):
    single = single_process(image_table, tmp_path / "single")
    summaries: list[dict] = []
    out = ray_embed(EmbedConfig("table", image_table, cache_dir=tmp_path / "ray", **KW), 3, show_progress=False,
                    on_shard_done=summaries.append, cpus_per_task=1)
    assert out == tmp_path / "ray" / "table" / f"{TINY_IMAGE_BACKBONE}.h5"
    assert_same_cache(single, out)
    assert sorted(s["shard"][0] for s in summaries) == [0, 1, 2]
    assert sum(sum(s["rows"].values()) for s in summaries) == 30
    assert sorted(p.name for p in out.parent.iterdir()) == [out.name, out.name + ".lock"]  # shards removed
    # rerun: one probe task finds the merged file up to date; no shard is embedded again
    mtime, again = out.stat().st_mtime_ns, []
    assert ray_embed(EmbedConfig("table", image_table, cache_dir=tmp_path / "ray", **KW), 3, show_progress=False,
                     on_shard_done=again.append) == out
    assert again == [] and out.stat().st_mtime_ns == mtime


def test_killed_shard_is_retried_and_resumes(local_ray, image_table, tmp_path):
    """The first shard to flush two batches SIGKILLs its own worker; Ray retries it, it resumes."""
    marker = tmp_path / "killed.json"

    def kill_once(split, done, total, _seen=[]):  # noqa: B006 - per-process state (pickled by value)
        import os
        import signal
        import time

        if done == 0 or marker.exists():
            return
        _seen.append(done)
        if len(_seen) == 1:
            time.sleep(1.2)  # > SYNC_INTERVAL: the next append fsyncs both batches
            return
        try:
            fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            return
        os.write(fd, json.dumps({"pid": os.getpid(), "split": split, "done": done}).encode())
        os.close(fd)
        os.kill(os.getpid(), signal.SIGKILL)

    single = single_process(image_table, tmp_path / "single")
    summaries: list[dict] = []
    out = ray_embed(EmbedConfig("table", image_table, cache_dir=tmp_path / "ray", **KW), 3, show_progress=False,
                    on_shard_done=summaries.append, cpus_per_task=1, max_retries=2, progress=kill_once)
    killed = json.loads(marker.read_text())
    assert killed["done"] == 4  # two batches of 2 were durable when the worker died
    resumed = [s for s in summaries if s["resumed_rows"]]
    assert len(resumed) == 1 and resumed[0]["resumed_rows"] == 4 and resumed[0]["pid"] != killed["pid"]
    assert_same_cache(single, out)


def test_failing_shard_names_itself_and_keeps_the_others(local_ray, tmp_path):
    from mlhead.datasets import DatasetError

    table = _write_table(tmp_path, corrupt=(3,))
    cache_dir = tmp_path / "cache"
    with pytest.raises(DatasetError, match=r"^shard [0-2]/3: .*im3\.png"):
        ray_embed(EmbedConfig("table", table, cache_dir=cache_dir, **KW), 3, show_progress=False,
                  cpus_per_task=1)
    left = sorted(p.name for p in (cache_dir / "table").iterdir())
    assert f"{TINY_IMAGE_BACKBONE}.h5" not in left  # nothing merged
    assert any(".shard-" in name for name in left)  # the shards' work is kept for a rerun


def _by_run(results: list[dict]) -> dict:
    out = {}
    for r in results:
        cfg = json.loads((Path(r["run_dir"]) / "config.json").read_text())
        key = (cfg["loss"], json.dumps(cfg["loss_options"], sort_keys=True), cfg["seed"], cfg["lr"], r["rule"])
        assert key not in out
        out[key] = r["metrics"]
    return out


def test_ray_sweep_equals_local_sweep(local_ray, tmp_path):
    from mlhead import report as R
    from mlhead.rules import DecisionRule
    from mlhead.sweep import cells, sweep
    from mlhead.train import FitConfig, expand_grid

    cache = make_cache(tmp_path / "c.h5", n=(120, 40, 40), dim=12, n_classes=4)
    specs = expand_grid(["sigmoidf1", "crossentropy"], seeds=[0, 1, 2, 3])
    assert len(cells(specs)) == 4
    cfg = FitConfig(epochs=3, batch_size=32, hidden=8, precision="fp32")
    rules = [DecisionRule("softmax", 0.05), DecisionRule("sigmoid", 0.5)]
    local = _by_run(sweep(cache, specs, cfg, tmp_path / "local", rules))
    results = ray_sweep(cache, specs, cfg, tmp_path / "ray", rules, show_progress=False)
    dist = _by_run(results)
    assert dist.keys() == local.keys() and len(dist) == 8 * 2
    for key, metrics in local.items():
        assert dist[key].keys() == metrics.keys()
        for name, value in metrics.items():
            assert dist[key][name] == pytest.approx(value, abs=1e-6, nan_ok=True), (key, name)
    # every run directory is where `mlhead report` looks, one cell per subdirectory
    records = R.collect(tmp_path / "ray")
    assert len(records) == 16 and len({r["run_dir"] for r in records}) == 8
    assert len({Path(r["run_dir"]).parent for r in records}) == 4


def test_failing_cell_names_itself_and_leaves_no_half_runs(local_ray, tmp_path):
    import numpy as np

    from mlhead.cache import write_cache
    from mlhead.train import FitConfig, expand_grid

    rng = np.random.default_rng(0)
    splits = {s: (rng.normal(size=(20, 6)).astype(np.float32), rng.integers(0, 2, (20, 3)).astype(np.uint8),
                  [f"{s}{i}" for i in range(20)]) for s in ("train", "test")}
    cache = write_cache(tmp_path / "noval.h5", splits, ["a", "b", "c"])
    runs = tmp_path / "runs"
    with pytest.raises(CacheError, match=r"^cell [01] \(1 run, seed [01]\): .*no val split"):
        ray_sweep(cache, expand_grid(["crossentropy"], seeds=[0, 1]), FitConfig(epochs=1, hidden=4), runs,
                  show_progress=False)
    assert not list(runs.rglob("config.json"))


def test_ray_sweep_resumes_after_its_driver_was_killed(local_ray, tmp_path):
    import json

    from mlhead.distributed import _sweep_cell_task, _sweep_key, _sweep_root
    from mlhead.rules import DecisionRule
    from mlhead.sweep import cells, sweep
    from mlhead.train import FitConfig, expand_grid, fit

    cache = make_cache(tmp_path / "c.h5", n=(120, 40, 40), dim=12, n_classes=4)
    specs = expand_grid(["sigmoidf1", "crossentropy"], seeds=[0, 1])
    cfg = FitConfig(epochs=4, batch_size=32, hidden=8, precision="fp32", checkpoint_seconds=0)
    rules = [DecisionRule("sigmoid", 0.5)]
    parts = cells(specs)
    # what a killed driver leaves: cell 0 finished, cell 1 killed after its epoch-2 checkpoint
    root = _sweep_root((tmp_path / "ray").resolve(), _sweep_key(cache, specs, cfg, rules, "test", None))
    first = _sweep_cell_task(str(cache), parts[0], cfg, str(root / "cell-0"), rules, "test", 1)
    stamp = (root / "cell-0" / "cell.json").stat().st_mtime_ns

    def killed(epoch, _):
        if epoch == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        fit(cache, parts[1], cfg, root / "cell-1", progress=killed)
    results = ray_sweep(cache, specs, cfg, tmp_path / "ray", rules, show_progress=False)
    assert sorted((tmp_path / "ray").iterdir()) == [root]  # resumed in the same sweep folder
    assert (root / "cell-0" / "cell.json").stat().st_mtime_ns == stamp and results[:len(first)] == first
    assert len(list(root.rglob("config.json"))) == 4 and not list(root.rglob(".partial"))
    local = _by_run(sweep(cache, specs, cfg, tmp_path / "local", rules))
    dist = _by_run(results)
    assert dist.keys() == local.keys()
    for key, metrics in local.items():
        for name, value in metrics.items():
            assert dist[key][name] == pytest.approx(value, abs=1e-6, nan_ok=True), (key, name)
    assert json.loads((root / "sweep.json").read_text())["finished"] is True
    key = _sweep_key(cache, specs, cfg, rules, "test", None)
    assert _sweep_root((tmp_path / "ray").resolve(), key) != root  # a finished sweep is not resumed: a new folder
