"""Train data sources (issue #19): in memory vs streamed from the cache in shuffle buffers."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
import scipy.sparse as sp
import torch
from click.testing import CliRunner

import mlhead.datasource as ds
from conftest import make_cache
from mlhead.cache import open_cache, write_cache
from mlhead.cli import main
from mlhead.errors import ConfigError
from mlhead.normalize import fit_stats
from mlhead.train import FitConfig, RunSpec, fit


REAL_RESERVE = ds.RUNTIME_RESERVE


@pytest.fixture(autouse=True)
def no_reserve(monkeypatch):
    """Budgets in these tests count the data only (the 256 MiB runtime reserve would dwarf them)."""
    monkeypatch.setattr(ds, "RUNTIME_RESERVE", 0)


def _sources(path, window_rows, block_rows=16, compute=torch.float32):
    cache = open_cache(path)
    with h5py.File(path, "r") as f:
        labels = ds.read_labels(f["train"])
    mem = ds.InMemorySource(cache.load_embeddings("train"), labels, compute)
    stream = ds.StreamingSource(path, "train", labels, compute, "cpu", window_rows, block_rows=block_rows)
    return mem, stream


def _epoch(src, seeds, batch_size, epoch, gen_seed=7):
    gens = {s: torch.Generator().manual_seed(gen_seed + s) for s in seeds}
    return list(src.batches(gens, batch_size, epoch))


@pytest.mark.parametrize("batch_size", [8, 25, 200])
def test_streaming_equals_in_memory_when_split_fits_the_buffer(tmp_path, batch_size):
    path = make_cache(tmp_path / "c.h5", n=(150, 20, 20), dim=6, n_classes=4)
    mem, stream = _sources(path, window_rows=150)
    for epoch in (1, 2):
        a, b = _epoch(mem, [0, 3], batch_size, epoch), _epoch(stream, [0, 3], batch_size, epoch)
        assert len(a) == len(b) == -(-150 // batch_size)
        for x, y in zip(a, b):
            for s in (0, 3):
                assert torch.equal(x[s][0], y[s][0]) and torch.equal(x[s][1], y[s][1])
                assert x[s][0].dtype == torch.float32 and x[s][1].dtype == torch.float32


def _rows_of(batches, seed, X):
    """Row numbers of every batch row (embeddings are distinct, so a row is found by its values)."""
    lookup = {tuple(r.tolist()): i for i, r in enumerate(X)}
    return [[lookup[tuple(r.tolist())] for r in b[seed][0]] for b in batches]


@pytest.mark.parametrize("batch_size,window", [(10, 32), (7, 48), (50, 16)])
def test_streaming_small_buffers_cover_every_row_once_in_full_batches(tmp_path, batch_size, window):
    path = make_cache(tmp_path / "c.h5", n=(203, 8, 8), dim=5, n_classes=3)
    mem, stream = _sources(path, window_rows=window)
    X = mem.X.float()
    one = _epoch(stream, [0, 1], batch_size, epoch=1)
    rows = _rows_of(one, 0, X)
    assert sorted(r for b in rows for r in b) == list(range(203))
    assert all(len(b) == batch_size for b in rows[:-1]) and 0 < len(rows[-1]) <= batch_size
    labels = mem.labels.dense.float()
    for b, r in zip(one, rows):  # labels travel with their rows
        assert torch.equal(b[0][1], labels[r])
    # a buffer holds window / 16 whole blocks of consecutive rows: a batch draws from the blocks of the
    # buffers it spans (one more at a buffer boundary)
    spans = batch_size // window + 2
    assert all(len({i // 16 for i in b}) <= spans * window // 16 for b in rows)
    again = _rows_of(_epoch(stream, [0, 1], batch_size, epoch=1), 0, X)
    assert again == rows  # deterministic
    assert _rows_of(_epoch(stream, [0, 1], batch_size, epoch=2), 0, X) != rows  # reshuffled per epoch
    assert _rows_of(one, 1, X) != rows  # each seed its own order


def test_streamed_fit_equals_in_memory_fit_when_split_fits_the_buffer(tmp_path, monkeypatch):
    path = make_cache(tmp_path / "c.h5", n=(300, 40, 40), dim=8, n_classes=4)
    specs = [RunSpec("crossentropy", seed=0), RunSpec("sigmoidf1", seed=1)]
    cfg = FitConfig(epochs=3, batch_size=32, hidden=8, precision="fp32")
    mem = fit(path, specs, cfg, write=False)
    # a budget below the split's size streams; a huge buffer share makes one buffer hold the whole split
    monkeypatch.setattr(ds, "BUFFER_SHARE", 1000.0)
    notes = []
    cfg_stream = FitConfig(epochs=3, batch_size=32, hidden=8, precision="fp32", memory_budget=7000)
    streamed = fit(path, specs, cfg_stream, write=False, notify=notes.append)
    assert any("streamed in shuffle buffers" in n for n in notes)
    for a, b in zip(mem, streamed):
        assert a.history == b.history
        for k in a.state:
            assert torch.equal(a.state[k], b.state[k]), k


def test_streamed_fit_with_small_buffers_trains(tmp_path, monkeypatch):
    path = make_cache(tmp_path / "c.h5", n=(3000, 100, 100), dim=8, n_classes=4)
    monkeypatch.setattr(ds, "BLOCK_ROWS", 64)
    notes = []
    cfg = FitConfig(epochs=4, batch_size=64, hidden=16, precision="fp32", memory_budget=40_000)
    rec = fit(path, [RunSpec("crossentropy")], cfg, write=False, notify=notes.append)[0]
    assert any("streamed in shuffle buffers of 512 rows" in n for n in notes), notes
    assert rec.history[-1]["val_loss"] < rec.history[0]["val_loss"]


def test_in_memory_source_keeps_storage_dtype_and_uint8_labels(tmp_path):
    path = make_cache(tmp_path / "c.h5", n=(50, 10, 10), dim=4, n_classes=3)
    src, _ = ds.train_source(open_cache(path), "train", "none", torch.float32, "cpu", budget=1 << 30)
    assert not src.streaming and src.X.dtype == torch.float16 and src.labels.dense.dtype == torch.uint8
    X, Y = next(iter(src.batches({0: torch.Generator().manual_seed(0)}, 8, 1)))[0]
    assert X.dtype == torch.float32 and Y.dtype == torch.float32


def test_csr_label_rows_equal_dense_rows():
    rng = np.random.default_rng(0)
    dense = (rng.random((40, 1500)) < 0.003).astype(np.uint8)
    dense[3] = 0
    csr, full = ds.Labels(csr=sp.csr_matrix(dense)), ds.Labels(dense=torch.from_numpy(dense))
    idx = torch.tensor([3, 0, 39, 7, 7, 12])
    assert torch.equal(csr.rows(idx), full.rows(idx))
    assert torch.equal(csr.rows(idx), torch.from_numpy(dense[idx.numpy()]).float())
    assert torch.equal(csr.counts(), full.counts())


def test_streaming_reads_csr_caches(tmp_path):
    rng = np.random.default_rng(1)
    n_classes = 1200
    splits = {}
    for name, m in (("train", 90), ("val", 20)):
        Y = (rng.random((m, n_classes)) < 0.004).astype(np.uint8)
        splits[name] = (rng.normal(size=(m, 4)).astype(np.float32), Y, [f"{name}{i}" for i in range(m)])
    path = write_cache(tmp_path / "s.h5", splits, [f"c{j}" for j in range(n_classes)])
    assert open_cache(path).labels_layout("train") == "csr"
    mem, stream = _sources(path, window_rows=32)
    assert mem.labels.dense is None
    rows = _rows_of(_epoch(stream, [0], 16, 1), 0, mem.X.float())
    for b, r in zip(_epoch(stream, [0], 16, 1), rows):
        assert torch.equal(b[0][1], torch.from_numpy(splits["train"][1][r]).float())


def test_streamed_standardize_statistics_equal_in_memory(tmp_path):
    path = make_cache(tmp_path / "c.h5", n=(500, 10, 10), dim=7, n_classes=3)
    want = fit_stats(open_cache(path).load_embeddings("train", torch.float32), "standardize")
    got = ds._streamed_stats(path, "train", "standardize")
    for k in want:
        torch.testing.assert_close(got[k], want[k], rtol=1e-5, atol=1e-6)


def test_budget_too_small_to_stream_names_the_flag(tmp_path, monkeypatch):
    path = make_cache(tmp_path / "c.h5", n=(3000, 10, 10), dim=8, n_classes=3)
    with pytest.raises(ConfigError, match="--memory-budget .* too small"):
        ds.train_source(open_cache(path), "train", "none", torch.float32, "cpu", budget=5000)
    monkeypatch.setattr(ds, "RUNTIME_RESERVE", REAL_RESERVE)  # the budget holds the reserve too
    with pytest.raises(ConfigError, match=r"runtime reserve \(256.00 MiB"):
        ds.train_source(open_cache(path), "train", "none", torch.float32, "cpu", budget=200 << 20)


def test_budget_does_not_count_the_process_itself(tmp_path, monkeypatch):
    """--memory-budget bounds the data on top of the process: a budget far below this process's RSS
    (torch alone is ~0.5 GiB) still holds a small split in memory."""
    import psutil

    assert ds.baseline_rss() == pytest.approx(psutil.Process().memory_info().rss, rel=0.2)
    assert ds.baseline_rss() > 64 << 20
    path = make_cache(tmp_path / "c.h5", n=(3000, 10, 10), dim=8, n_classes=3)
    src, _ = ds.train_source(open_cache(path), "train", "none", torch.float32, "cpu", budget=1 << 20)
    assert not src.streaming


@pytest.mark.parametrize("text,want", [("1G", 1 << 30), ("512M", 512 << 20), ("1.5GiB", 3 << 29),
                                       ("800mb", 800 << 20), ("1000", 1000), ("4k", 4096)])
def test_parse_size(text, want):
    assert ds.parse_size(text) == want


@pytest.mark.parametrize("text", ["", "lots", "1X", "0", "-1G"])
def test_parse_size_rejects(text):
    with pytest.raises(ConfigError, match="--memory-budget"):
        ds.parse_size(text)


def test_cli_memory_budget_bad_value_is_a_usage_error(tmp_path):
    path = make_cache(tmp_path / "c.h5", n=(30, 10, 10), dim=4, n_classes=3)
    res = CliRunner().invoke(main, ["fit", "--cache", str(path), "--memory-budget", "lots", "--epochs", "1"])
    assert res.exit_code == 2 and "--memory-budget" in res.output and "Traceback" not in res.output


def test_cli_fit_prints_the_budget(tmp_path):
    path = make_cache(tmp_path / "c.h5", n=(30, 10, 10), dim=4, n_classes=3)
    res = CliRunner().invoke(main, ["fit", "--cache", str(path), "--epochs", "1", "--hidden", "4",
                                    "--runs-dir", str(tmp_path / "runs")])
    assert res.exit_code == 0, res.output
    assert "--memory-budget" in res.output and "half the available RAM" in res.output and "in memory" in res.output


def test_interrupted_streamed_fit_resumes_to_identical_records(tmp_path, monkeypatch):
    from test_controls import _run_files

    path = make_cache(tmp_path / "c.h5", n=(700, 40, 40), dim=8, n_classes=4)
    monkeypatch.setattr(ds, "BLOCK_ROWS", 64)
    specs = [RunSpec("crossentropy", seed=0, lr=3e-2), RunSpec("zlpr", seed=1, lr=3e-2)]
    cfg = FitConfig(epochs=5, batch_size=48, hidden=8, precision="fp32", memory_budget=8000, checkpoint_seconds=0)
    notes = []
    fit(path, specs, cfg, tmp_path / "a", notify=notes.append)
    assert any("streamed in shuffle buffers of 64 rows" in n for n in notes), notes  # 11 buffers an epoch

    def interrupt(epoch, _):
        if epoch == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        fit(path, specs, cfg, tmp_path / "b", progress=interrupt)
    epochs = []
    fit(path, specs, cfg, tmp_path / "b", progress=lambda e, n: epochs.append(e))
    assert epochs[0] == 4
    assert _run_files(tmp_path / "a") == _run_files(tmp_path / "b")


def test_labels_host_gives_what_class_weights_read():
    from mlhead.class_weights import from_labels

    dense = np.array([[1, 0, 0], [1, 1, 0], [0, 0, 0]], np.uint8)
    for labels in (ds.Labels(dense=torch.from_numpy(dense)), ds.Labels(csr=sp.csr_matrix(dense))):
        host = labels.host()
        np.testing.assert_array_equal(host.toarray() if sp.issparse(host) else host.numpy(), dense)
        w, clipped = from_labels(host)
        torch.testing.assert_close(w, torch.tensor([0.5, 2.0, 1.0]))  # neg / pos; class 2 has no positive
        assert clipped == [2]


def test_a_cache_that_disappears_while_streaming_is_a_cache_error(tmp_path):
    from mlhead.errors import CacheError

    path = make_cache(tmp_path / "c.h5", n=(100, 8, 8), dim=4, n_classes=3)
    _, stream = _sources(path, window_rows=32)
    path.unlink()
    with pytest.raises(CacheError, match="reading /train/embeddings failed"):
        _epoch(stream, [0], 16, 1)


def test_stopping_an_epoch_early_ends_the_prefetch_thread(tmp_path):
    import threading

    path = make_cache(tmp_path / "c.h5", n=(300, 8, 8), dim=4, n_classes=3)
    _, stream = _sources(path, window_rows=32)
    it = stream.batches({0: torch.Generator().manual_seed(0)}, 8, 1)
    next(it)
    it.close()
    assert not [t for t in threading.enumerate() if t.name == "mlhead-prefetch"]
