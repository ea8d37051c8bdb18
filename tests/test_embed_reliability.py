"""Stage one made trustworthy: resume after a kill, stale-cache detection per fingerprint field, locking,
bad input (raise / skip), and `mlhead cache info|verify`. Offline, tiny random-init models."""

from __future__ import annotations

import csv
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

from conftest import CLASSES, TINY_IMAGE_BACKBONE, make_cache, shared_path
from mlhead.cache import CacheLock, cache_info, open_cache, partial_dir, read_attrs, read_progress, verify_cache
from mlhead.cli import main

REPO = Path(__file__).resolve().parents[1]
VOC_TRUNCATED = ("data", "voc2007", "sample_5_images_VOCdevkit", "VOC2007", "JPEGImages", "000001.jpg")


# ------------------------------------------------------------------------------------------ helpers


def cli(args, code=0):
    res = CliRunner().invoke(main, [str(a) for a in args])
    assert res.exit_code == code, f"exit {res.exit_code}\n{res.output}\n{res.exception!r}"
    assert "Traceback" not in res.output
    return res


def _labels(i: int) -> str:
    rng = np.random.default_rng(i)
    return "|".join([c for c in CLASSES if rng.random() < 0.5] or [CLASSES[i % 3]])


def image_table(folder: Path, n: int, name="images.csv", size=(40, 48)) -> Path:
    """``n`` generated JPEGs and a CSV (id, image, labels '|'-separated)."""
    from PIL import Image

    (folder / "images").mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n):
        arr = (np.random.default_rng(i).random((*size, 3)) * 255).astype(np.uint8)
        Image.fromarray(arr).save(folder / "images" / f"im{i}.jpg", quality=90)
        rows.append({"id": f"im{i}", "image": f"images/im{i}.jpg", "labels": _labels(i)})
    return write_csv(folder / name, rows)


def write_csv(path: Path, rows: list[dict]) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return path


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


# the tables here are tiny (8-24 rows): a file-order split keeps every split non-empty and its size known
# (the default hash split can leave one empty, which is an error); a later --split-mode in extra wins
SMALL_TABLE_SPLIT = ("--split-mode", "paper-contiguous")


def image_args(table: Path, cache_dir: Path, *extra):
    return ["embed", "--dataset", "table", "--data-dir", table, "--image-column", "image", "--id-column", "id",
            "--backbone", TINY_IMAGE_BACKBONE, "--random-init", "--precision", "fp32", "--batch-size", 4,
            "--workers", 0, "--cache-dir", cache_dir, *SMALL_TABLE_SPLIT, *extra]


def text_table(folder: Path, n: int = 16) -> Path:
    words = ["alpha", "beta", "gamma", "delta", "cat", "dog", "bird", "stock", "market", "news"]
    path = folder / "texts.jsonl"
    with open(path, "w") as fh:
        for i in range(n):
            text = " ".join(np.random.default_rng(100 + i).choice(words, size=5 + i % 7))
            fh.write(json.dumps({"id": f"t{i}", "text": text, "labels": _labels(i).split("|")}) + "\n")
    return path


def text_args(table: Path, model: Path, cache_dir: Path, *extra):
    return ["embed", "--dataset", "table", "--data-dir", table, "--text-column", "text", "--id-column", "id",
            "--backbone", model, "--random-init", "--precision", "fp32", "--batch-size", 4, "--workers", 0,
            "--cache-dir", cache_dir, *SMALL_TABLE_SPLIT, *extra]


def sha(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def assert_same_cache(a: Path, b: Path):
    """Every dataset byte for byte and every root attribute equal."""
    ca, cb = open_cache(a), open_cache(b)
    assert ca.splits == cb.splits and ca.classes == cb.classes
    with h5py.File(a) as fa, h5py.File(b) as fb:
        for s in ca.splits:
            for k in ("embeddings", "labels"):
                assert fa[s][k].dtype == fb[s][k].dtype
                np.testing.assert_array_equal(fa[s][k][...], fb[s][k][...], err_msg=f"{s}/{k}")
            assert list(fa[s]["ids"][...]) == list(fb[s]["ids"][...])
        assert dict(fa.attrs) == dict(fb.attrs)


def one_cache(cache_dir: Path) -> Path:
    return cache_dir / "table" / f"{TINY_IMAGE_BACKBONE}.h5"


# ------------------------------------------------------------------------------------------- resume


DRIVER = """
import sys, time, runpy
import mlhead.cache as C
_append = C.CacheWriter.append
def slow_append(self, *a, **k):
    _append(self, *a, **k)
    time.sleep(0.25)  # a slow backbone: gives the test time to kill us mid-run
C.CacheWriter.append = slow_append
sys.argv = ["mlhead", *sys.argv[1:]]
runpy.run_module("mlhead", run_name="__main__")
"""


def _subprocess_env():
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", PYTHONUNBUFFERED="1")
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
    return env


def _rows_written(partial: Path, n_classes: int) -> int:
    """Rows whose labels reached the journal's raw files (durable or not)."""
    return sum(p.stat().st_size for p in partial.glob("*.lab")) // max(n_classes, 1)


def wait_for_journal(proc, partial: Path, ready, timeout: float = 120) -> dict | None:
    """Poll the journal of a running embed until ``ready(progress, rows_written)``; its progress then,
    or None when ``proc`` ended (or ``timeout`` passed) first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        doc = read_progress(partial) if partial.is_dir() else None
        if doc is not None and ready(doc, _rows_written(partial, len(doc["classes"]))):
            return doc
        time.sleep(0.01)
    return None


def test_sigkill_then_rerun_gives_the_uninterrupted_file(tmp_path):
    """`mlhead embed` killed with SIGKILL mid-run, rerun: resumes from the last flushed batch, shows the
    resumed rows, and writes the same file (embeddings, labels, ids, order, attrs) as a run never killed."""
    table = image_table(tmp_path / "data", 60)
    args = [str(a) for a in image_args(table, tmp_path / "killed")[1:]]
    env = _subprocess_env()
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER)
    # the reference run (never interrupted) runs beside the one we kill
    ref = subprocess.Popen([sys.executable, "-m", "mlhead", "embed",
                            *[str(a) for a in image_args(table, tmp_path / "ref")[1:]]],
                           env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    victim = subprocess.Popen([sys.executable, str(driver), "embed", *args], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    target = one_cache(tmp_path / "killed")
    partial = partial_dir(target)
    progress = partial / "progress.json"
    try:
        # kill between syncs: once 8 rows are durable and the raw files already hold rows past the last
        # durable count, which the resume must drop
        durable = wait_for_journal(victim, partial, lambda doc, written: sum(doc["consumed"].values()) >= 8
                                   and written > sum(doc["rows"].values()))
        assert durable is not None, f"embed ended before it could be killed: {victim.stderr.read()[-2000:]}"
        victim.send_signal(signal.SIGKILL)
        victim.wait(30)
    finally:
        if victim.poll() is None:
            victim.kill()
    assert victim.returncode == -signal.SIGKILL
    assert not target.exists() and progress.exists()
    durable = read_progress(partial)
    assert 0 < sum(durable["rows"].values()) < 60
    written = _rows_written(partial, len(durable["classes"]))
    # usually >: rows appended after the last sync reached the file but not progress.json
    assert written >= sum(durable["rows"].values()), (written, durable)

    out = subprocess.run([sys.executable, "-m", "mlhead", "embed", *args], env=env, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    resumed = sum(durable["rows"].values())
    assert f"resumed from {resumed} rows" in out.stdout, out.stdout
    assert "resumed at" in out.stderr, out.stderr  # the progress bar starts at the resumed rows
    assert not progress.parent.exists()
    _, r_err = ref.communicate(timeout=300)
    assert ref.returncode == 0, r_err
    assert_same_cache(target, one_cache(tmp_path / "ref"))
    assert verify_cache(target) == []


def test_interrupt_flushes_and_resume_matches_text(tmp_path, tiny_text_model):
    """Ctrl-C (KeyboardInterrupt) keeps every batch appended so far; the resumed run equals a clean run."""
    from mlhead.embed import EmbedConfig, embed

    table = text_table(tmp_path, 20)  # train 12 rows (file-order split) = 3 batches of 4
    kw = dict(backbone=str(tiny_text_model), random_init=True, precision="fp32", batch_size=4, workers=0,
              split_mode="paper-contiguous", dataset_options={"text_column": "text", "id_column": "id"})
    with pytest.raises(KeyboardInterrupt):
        embed(EmbedConfig("table", table, tmp_path / "a", **kw), stop_after_batches=3)
    path = next((tmp_path / "a").rglob("*.h5.partial"))
    prog = json.loads((path / "progress.json").read_text())
    assert sum(prog["consumed"].values()) == 12  # all 3 batches durable despite the 1 s sync interval
    res = embed(EmbedConfig("table", table, tmp_path / "a", **kw))
    assert res.resumed_rows == 12 and res.processed == 8
    ref = embed(EmbedConfig("table", table, tmp_path / "b", **kw))
    assert ref.resumed_rows == 0
    assert_same_cache(res.path, ref.path)


def test_progress_per_split_with_one_loader_and_resume(tmp_path, tiny_text_model):
    """One DataLoader serves every split, but progress stays per split: each split's first call comes
    before its own first batch (done = resumed rows), then one call per batch, ending at the split's
    size; the batches never straddle splits (a resume mid-train gives the clean run's file)."""
    from mlhead.embed import EmbedConfig, embed

    table = text_table(tmp_path, 20)  # file-order split 12 / 4 / 4 rows; batches of 5: train 5+5+2, val 4, test 4
    # length-sorted windows of 2 batches: train rows 0-9 (written after their 2nd batch), then 10-11
    kw = dict(backbone=str(tiny_text_model), random_init=True, precision="fp32", batch_size=5, workers=1,
              split_mode="paper-contiguous", dataset_options={"text_column": "text", "id_column": "id"},
              sort_window=2)
    first = []
    with pytest.raises(KeyboardInterrupt):
        embed(EmbedConfig("table", table, tmp_path / "a", **kw), stop_after_batches=2,
              progress=lambda *c: first.append(c))
    assert first == [("train", 0, 12), ("train", 5, 12), ("train", 10, 12)]  # one call per batch
    calls = []
    res = embed(EmbedConfig("table", table, tmp_path / "a", **kw), progress=lambda *c: calls.append(c))
    assert res.resumed_rows == 10
    assert calls == [("train", 10, 12), ("train", 12, 12), ("val", 0, 4), ("val", 4, 4),
                     ("test", 0, 4), ("test", 4, 4)]
    ref = embed(EmbedConfig("table", table, tmp_path / "b", **kw))
    assert_same_cache(res.path, ref.path)


def test_cli_fit_refuses_incomplete_cache(tmp_path):
    from mlhead.embed import EmbedConfig, embed

    table = image_table(tmp_path / "data", 12)
    with pytest.raises(KeyboardInterrupt):
        embed(EmbedConfig("table", table, tmp_path / "cache", backbone=TINY_IMAGE_BACKBONE, random_init=True,
                          precision="fp32", batch_size=4, workers=0,
                          split_mode="paper-contiguous",
                          dataset_options={"image_column": "image", "id_column": "id"}), stop_after_batches=1)
    path = one_cache(tmp_path / "cache")
    res = cli(["fit", "--cache", path, "--epochs", 1, "--runs-dir", tmp_path / "runs"], code=2)
    assert "interrupted embed" in res.output and str(path) in res.output
    res = cli(["fit", "--cache-dir", tmp_path / "cache", "--epochs", 1, "--runs-dir", tmp_path / "runs"], code=2)
    assert "no cache under" in res.output and "interrupted embed at" in res.output
    # a file at the final path that is not marked complete (a foreign or half-done write)
    bad = make_cache(tmp_path / "other" / "c.h5")
    with h5py.File(bad, "a") as f:
        f.attrs["complete"] = False
    res = cli(["fit", "--cache", bad, "--epochs", 1, "--runs-dir", tmp_path / "runs"], code=2)
    assert "not complete" in res.output
    assert not (tmp_path / "runs").exists()


def test_cli_eval_refuses_run_of_another_cache(tmp_path):
    table = image_table(tmp_path / "data", 20)
    cache_dir, runs = tmp_path / "cache", tmp_path / "runs"
    cli(image_args(table, cache_dir))
    path = one_cache(cache_dir)
    cli(["fit", "--cache", path, "--epochs", 1, "--hidden", 8, "--batch-size", 8, "--runs-dir", runs])
    cli(["eval", "--runs-dir", runs])
    fp = open_cache(path).fingerprint
    # --force with the same inputs rebuilds the same cache (seeded random init): the run still pairs with it
    cli(image_args(table, cache_dir, "--force"))
    assert open_cache(path).fingerprint == fp
    cli(["eval", "--runs-dir", runs])
    # rebuilt from other inputs (another split): the head was fitted on rows now in test -> refused
    cli(image_args(table, cache_dir, "--force", "--split-mode", "random", "--split-seed", 45))
    res = cli(["eval", "--runs-dir", runs], code=2)
    assert "fitted on a cache with fingerprint" in res.output and "refit" in res.output


# ------------------------------------------------------------------------------------- fingerprint


def _save_weights(path: Path, seed: int) -> Path:
    import timm
    import torch
    from safetensors.torch import save_file

    torch.manual_seed(seed)
    model = timm.create_model(TINY_IMAGE_BACKBONE, pretrained=False, num_classes=0)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return path


def _touch_image(tmp_path, table):
    img = tmp_path / "data" / "images" / "im3.jpg"
    st = img.stat()
    os.utime(img, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))


def _edit_csv(tmp_path, table):
    rows = read_csv(table)
    rows[0]["labels"] = "cat"  # same files, one label changed
    write_csv(table, rows)


IMAGE_CHANGES = {
    # field that must be named: (setup(tmp_path, table) -> None, extra CLI args of the second run)
    "inputs/image": ("inputs", _touch_image, []),
    "inputs/csv": ("inputs", _edit_csv, []),
    "split_seed": ("split_seed", None, ["--split-seed", 45]),
    "split_mode": ("split_mode", None, ["--split-mode", "stratified"]),
    "backbone": ("backbone", None, ["--backbone", "test_resnet"]),
    "precision": ("precision", None, ["--precision", "bf16"]),
}


@pytest.mark.parametrize("case", sorted(IMAGE_CHANGES))
def test_stale_cache_names_what_changed_and_force_rebuilds(tmp_path, case):
    field, setup, extra = IMAGE_CHANGES[case]
    table = image_table(tmp_path / "data", 10)
    out = tmp_path / "cache" / "c.h5"  # one path for every variant (-o), so a change cannot hide in a new file
    cli(image_args(table, tmp_path / "cache", "-o", out))
    before, fp_before = sha(out), read_attrs(out)["fingerprint_json"]
    if setup:
        setup(tmp_path, table)
    res = cli(image_args(table, tmp_path / "cache", "-o", out, *extra), code=2)
    msg = " ".join(res.output.split())
    assert "stale" in msg and field in msg and "--force" in msg, msg
    assert sha(out) == before and not Path(str(out) + ".partial").exists()  # nothing written
    cli(image_args(table, tmp_path / "cache", "-o", out, *extra, "--force"))
    after = read_attrs(out)
    assert after["fingerprint_json"][field] != fp_before[field]
    assert verify_cache(out) == []
    assert "up to date" in cli(image_args(table, tmp_path / "cache", "-o", out, *extra)).output


def test_stale_weights_sha256(tmp_path):
    table = image_table(tmp_path / "data", 8)
    w1, w2 = _save_weights(tmp_path / "w1.safetensors", 1), _save_weights(tmp_path / "w2.safetensors", 2)
    base = [a for a in image_args(table, tmp_path / "cache") if a != "--random-init"]
    cli([*base, "--weights", w1])
    path = one_cache(tmp_path / "cache")
    assert read_attrs(path)["weights_sha256"] == sha(w1)
    res = cli([*base, "--weights", w2], code=2)
    assert "stale" in res.output and "weights_sha256" in res.output
    cli([*base, "--weights", w2, "--force"])
    assert read_attrs(path)["weights_sha256"] == sha(w2)


@pytest.mark.parametrize("change", [("--max-length", "8"), ("--pooling", "cls")])
def test_stale_text_preprocessing(tmp_path, tiny_text_model, change):
    table = text_table(tmp_path, 10)
    cli(text_args(table, tiny_text_model, tmp_path / "cache", "--pooling", "mean"))
    args = text_args(table, tiny_text_model, tmp_path / "cache")
    args += ["--pooling", "mean", *change] if change[0] != "--pooling" else [*change]
    res = cli(args, code=2)
    msg = " ".join(res.output.split())
    assert "stale" in msg and "preprocessing" in msg and change[0].lstrip("-").replace("-", "_") in msg, msg


def test_stale_library_versions(tmp_path, monkeypatch):
    import mlhead.cache.fingerprint as E

    table = image_table(tmp_path / "data", 8)
    cli(image_args(table, tmp_path / "cache"))
    real = E.library_versions
    monkeypatch.setattr(E, "library_versions", lambda: {**real(), "timm": "0.0.1"})
    res = cli(image_args(table, tmp_path / "cache"), code=2)
    msg = " ".join(res.output.split())
    assert "stale" in msg and "versions" in msg and "timm" in msg and "0.0.1" in msg, msg


def test_partial_with_other_inputs_is_not_resumed(tmp_path):
    from mlhead.embed import EmbedConfig, embed

    table = image_table(tmp_path / "data", 12)
    with pytest.raises(KeyboardInterrupt):
        embed(EmbedConfig("table", table, tmp_path / "cache", backbone=TINY_IMAGE_BACKBONE, random_init=True,
                          precision="fp32", batch_size=4, workers=0,
                          split_mode="paper-contiguous",
                          dataset_options={"image_column": "image", "id_column": "id"}), stop_after_batches=1)
    res = cli(image_args(table, tmp_path / "cache", "--split-seed", 7), code=2)
    assert "interrupted embed with different inputs" in res.output and "split_seed" in res.output
    res = cli(image_args(table, tmp_path / "cache", "--split-seed", 7, "--force"))
    assert "resumed" not in res.output
    assert read_attrs(one_cache(tmp_path / "cache"))["split_seed"] == 7


# ------------------------------------------------------------------------------------------- locking


def test_second_writer_is_refused_while_locked(tmp_path):
    table = image_table(tmp_path / "data", 8)
    path = one_cache(tmp_path / "cache")
    with CacheLock(path):
        res = cli(image_args(table, tmp_path / "cache"), code=2)
    msg = " ".join(res.output.split())
    assert "another `mlhead embed`" in msg and f"pid {os.getpid()}" in msg and "--wait-lock" in msg
    assert not path.exists()


def test_wait_lock_waits_for_the_holder(tmp_path):
    table = image_table(tmp_path / "data", 8)
    path = one_cache(tmp_path / "cache")
    lock = CacheLock(path).__enter__()
    released = threading.Event()

    def release():
        time.sleep(1.5)
        released.set()
        lock.__exit__(None, None, None)

    t = threading.Thread(target=release)
    t0 = time.monotonic()
    t.start()
    try:
        res = cli(image_args(table, tmp_path / "cache", "--wait-lock"))
    finally:
        t.join()
    assert released.is_set() and time.monotonic() - t0 >= 1.4
    assert "waiting for another `mlhead embed`" in " ".join(res.output.split())
    assert open_cache(path).shapes["train"][0] == 4


# ----------------------------------------------------------------------------------------- bad input


def _truncated_copy(src: Path, dst: Path) -> Path:
    data = src.read_bytes()
    dst.write_bytes(data[: len(data) // 2])
    return dst


def _bad_image_table(tmp_path, n=20, bad_at=(9,)):
    """``n`` images in file order (paper-contiguous split: train = rows 0..11); rows ``bad_at`` get a
    truncated JPEG (cut in half)."""
    table = image_table(tmp_path / "data", n)
    rows = read_csv(table)
    for i in bad_at:
        _truncated_copy(tmp_path / "data" / "images" / f"im{i}.jpg", tmp_path / "data" / "images" / f"cut{i}.jpg")
        rows[i]["image"] = f"images/cut{i}.jpg"
    return write_csv(table, rows)


def test_decode_threads_and_worker_processes_write_the_same_cache(tmp_path, monkeypatch):
    """In-process decoding by 1 or 3 threads (CPU default: --workers 0, as many decode threads as torch
    has) and a worker process give the same file byte for byte, bad-row skips included, in the input
    order. (The forward pass keeps its own thread count: that one may change bf16/fp32 rounding.)"""
    import torch

    from mlhead.embed import EmbedConfig, embed

    seen = []
    real_pool = __import__("concurrent.futures", fromlist=["ThreadPoolExecutor"]).ThreadPoolExecutor

    def pool(*args, **kw):
        if kw.get("thread_name_prefix") == "mlhead-decode":
            seen.append(args[0])
        return real_pool(*args, **kw)

    monkeypatch.setattr("concurrent.futures.ThreadPoolExecutor", pool)

    table = _bad_image_table(tmp_path, n=20, bad_at=(3, 13))
    kw = {"backbone": TINY_IMAGE_BACKBONE, "random_init": True, "precision": "fp32", "batch_size": 6,
          "on_error": "skip", "dataset_options": {"image_column": "image", "id_column": "id"}}
    paths = []
    for name, n_threads, workers in (("t1", 1, 0), ("t3", 3, 0), ("w1", 3, 1)):
        monkeypatch.setattr(torch, "get_num_threads", lambda n=n_threads: n)
        paths.append(embed(EmbedConfig("table", table, tmp_path / name, workers=workers, **kw)).path)
    assert seen == [3]  # only the in-process run with 3 threads used a decode pool
    for other in paths[1:]:
        assert_same_cache(paths[0], other)
    attrs = read_attrs(paths[0])
    assert sorted(s["id"] for s in attrs["skipped"]) == ["im13", "im3"]
    c = open_cache(paths[0])
    ids = [i for s in c.splits for i in c.load(s)[2]]
    assert sorted(ids) == sorted(f"im{i}" for i in range(20) if i not in (3, 13))


def test_truncated_image_raises_and_keeps_existing_cache_and_partial(tmp_path):
    good = image_table(tmp_path / "good", 20)
    out = tmp_path / "cache" / "c.h5"
    cli(image_args(good, tmp_path / "cache", "-o", out, "--split-mode", "paper-contiguous"))
    before = sha(out)
    table = _bad_image_table(tmp_path, bad_at=(9,))
    res = cli(image_args(table, tmp_path / "cache", "-o", out, "--split-mode", "paper-contiguous", "--force"), code=2)
    msg = " ".join(res.output.split())
    assert msg.count("error:") == 1 and "interrupted" not in msg
    assert f"{table}:11" in msg and "cut9.jpg" in msg and "truncated" in msg and "--on-error skip" in msg, msg
    assert sha(out) == before  # the complete cache at the path is untouched
    prog = json.loads((Path(str(out) + ".partial") / "progress.json").read_text())
    assert prog["rows"]["train"] == 8  # the two batches before the bad one are kept
    # switching to --on-error skip resumes that partial (no --force needed) and skips the bad row
    res = cli(image_args(table, tmp_path / "cache", "-o", out, "--split-mode", "paper-contiguous", "--force",
                         "--on-error", "skip"))
    msg = " ".join(res.output.split())
    assert "resumed from 8 rows" in msg and "skipped 1 bad rows" in msg
    attrs = read_attrs(out)
    assert [s["id"] for s in attrs["skipped"]] == ["im9"] and attrs["skipped"][0]["split"] == "train"
    assert open_cache(out).shapes["train"][0] == 11


@pytest.mark.parametrize("kind", ["missing", "unknown", "empty_label", "wrong_sep", "empty_image"])
def test_bad_row_raises_one_clear_error(tmp_path, kind):
    table = image_table(tmp_path / "data", 8)
    rows = read_csv(table)
    extra = ["--classes", ",".join(CLASSES)]
    rows[5].update({"missing": {"image": "images/nope.jpg"}, "unknown": {"labels": "cat|zebra"},
                    "empty_label": {"labels": "cat||dog"}, "wrong_sep": {"labels": "cat;dog"},
                    "empty_image": {"image": ""}}[kind])
    write_csv(table, rows)
    res = cli(image_args(table, tmp_path / "cache", *extra), code=2)
    msg = " ".join(res.output.split())
    need = {"missing": "image file not found", "unknown": "unknown label 'zebra'", "empty_label": "empty label",
            "wrong_sep": "wrong label separator", "empty_image": "empty image path"}[kind]
    assert msg.count("error:") == 1 and f"{table}:7" in msg and need in msg, msg
    assert not (tmp_path / "cache" / "table").exists() or not any((tmp_path / "cache" / "table").iterdir())


def test_on_error_skip_counts_and_lists_every_bad_row(tmp_path):
    table = _bad_image_table(tmp_path, n=24, bad_at=(2,))
    rows = read_csv(table)
    images = tmp_path / "data" / "images"
    try:
        shutil.copy(shared_path(*VOC_TRUNCATED), images / "voc000001.jpg")
        rows[4]["image"] = "images/voc000001.jpg"
        bad_embed = {"im2", "im4"}
    except pytest.skip.Exception:
        bad_embed = {"im2"}
    (images / "notanimage.jpg").write_text("hello")
    rows[6]["image"] = "images/notanimage.jpg"
    bad_embed.add("im6")
    rows[8]["image"] = "images/gone.jpg"
    rows[10]["labels"] = "cat|zebra"
    rows[12]["labels"] = "cat||dog"
    rows[14]["labels"] = "cat;dog"
    bad_load = {"im8", "im10", "im12", "im14"}
    write_csv(table, rows)
    args = image_args(table, tmp_path / "cache", "--classes", ",".join(CLASSES))
    msg = " ".join(cli(args, code=2).output.split())
    assert msg.count("error:") == 1 and f"{table}:10" in msg  # default: the first bad row (load time)
    res = cli([*args, "--on-error", "skip"])
    msg = " ".join(res.output.split())
    n_bad = len(bad_load) + len(bad_embed)
    assert (f"skipped {n_bad} bad rows ({len(bad_load)} when loading the dataset, {len(bad_embed)} "
            "unreadable while embedding") in msg, msg
    path = one_cache(tmp_path / "cache")
    attrs = read_attrs(path)
    assert {s["id"] for s in attrs["skipped_at_load"]} == bad_load
    assert {s["id"] for s in attrs["skipped"]} == bad_embed
    assert all(s["where"].startswith(f"{table}:") and s["error"] for s in attrs["skipped"] + attrs["skipped_at_load"])
    c = open_cache(path)
    ids = [i for s in c.splits for i in c.load(s)[2]]
    assert len(ids) == 24 - n_bad and not (set(ids) & (bad_load | bad_embed))
    info = cache_info(path)
    assert info["skipped"] == len(bad_embed) and info["skipped_at_load"] == len(bad_load)
    assert verify_cache(path) == []
    assert {r["id"] for r in info["skipped_rows"]} == bad_load | bad_embed
    out = " ".join(cli(["cache", "info", path]).output.split())
    assert f"{n_bad} ({len(bad_load)} when loading, {len(bad_embed)} while embedding)" in out
    assert f"skipped rows ({n_bad})" in out and all(i in out for i in bad_load | bad_embed)


def test_empty_text_raises_or_is_skipped(tmp_path, tiny_text_model):
    table = text_table(tmp_path, 10)
    lines = table.read_text().splitlines()
    doc = json.loads(lines[3])
    doc["text"] = "   "
    lines[3] = json.dumps(doc)
    table.write_text("\n".join(lines) + "\n")
    res = cli(text_args(table, tiny_text_model, tmp_path / "cache"), code=2)
    assert f"{table}:4" in res.output and "empty text" in res.output
    res = cli(text_args(table, tiny_text_model, tmp_path / "cache", "--on-error", "skip"))
    assert "skipped 1 bad rows" in " ".join(res.output.split())
    attrs = read_attrs(next((tmp_path / "cache").rglob("*.h5")))
    assert [s["id"] for s in attrs["skipped_at_load"]] == ["t3"]


# ------------------------------------------------------------------------------------ info / verify


def test_cache_info_complete_partial_and_incomplete(tmp_path):
    from mlhead.embed import EmbedConfig, embed

    path = make_cache(tmp_path / "c.h5", n=(30, 10, 10), n_classes=4)
    info = cache_info(path)
    assert info["complete"] and info["state"] == "complete" and info["n_classes"] == 4 and info["dim"] == 16
    c = open_cache(path)
    for s in c.splits:
        Y = c.load(s)[1].numpy()
        assert info["splits"][s]["rows"] == len(Y)
        assert info["splits"][s]["label_cardinality"] == pytest.approx(Y.sum(1).mean())
    out = cli(["cache", "info", path]).output
    assert "complete" in out and "train" in out and "label cardinality" in out
    assert json.loads(cli(["cache", "info", path, "--json"]).output)["splits"]["val"]["rows"] == 10

    table = image_table(tmp_path / "data", 12)
    with pytest.raises(KeyboardInterrupt):
        embed(EmbedConfig("table", table, tmp_path / "cache", backbone=TINY_IMAGE_BACKBONE, random_init=True,
                          precision="fp32", batch_size=4, workers=0,
                          split_mode="paper-contiguous",
                          dataset_options={"image_column": "image", "id_column": "id"}), stop_after_batches=1)
    partial_target = one_cache(tmp_path / "cache")
    info = cache_info(partial_target)
    assert not info["complete"] and info["state"].startswith("partial")
    assert info["splits"]["train"]["rows"] == 4 and info["splits"]["train"]["planned"] == 7
    assert info["backbone"] == TINY_IMAGE_BACKBONE and info["fingerprint_fields"]["split_seed"] == 44
    assert cache_info(str(partial_target) + ".partial")["state"] == info["state"]
    out = " ".join(cli(["cache", "info", partial_target]).output.split())
    assert "partial" in out and "resume" in out
    res = cli(["cache", "verify", partial_target], code=2)
    assert "no cache file" in res.output and "interrupted" in res.output

    with h5py.File(path, "a") as f:
        f.attrs["complete"] = False
    assert cache_info(path)["state"].startswith("incomplete")
    assert any("not marked complete" in p for p in verify_cache(path))
    cli(["cache", "info", tmp_path / "nothing.h5"], code=2)


def test_cache_verify_ok_and_every_problem(tmp_path):
    path = make_cache(tmp_path / "c.h5", n=(20, 6, 6), n_classes=3)
    assert verify_cache(path) == []
    assert cli(["cache", "verify", path]).output.startswith("ok")
    with h5py.File(path, "a") as f:
        f["train/embeddings"][3, 2] = np.nan
        f["val/embeddings"][0, 0] = np.inf
        f["train/labels"][1, 0] = 2
        ids = [x.decode() for x in f["train/ids"][...]]
        ids[5] = ids[4]  # duplicate within train
        ids[6] = "test0"  # also in test
        del f["train/ids"]
        f["train"].create_dataset("ids", data=np.array(ids, dtype=object), dtype=h5py.string_dtype())
        f.attrs["classes"] = json.dumps(["c0", "c1"])  # 3 label columns, 2 classes
    problems = verify_cache(path)
    text = "\n".join(problems)
    for needle in ("train/embeddings: 1 rows with NaN or inf", "val/embeddings: 1 rows with NaN or inf",
                   "train/labels: 1 values not in {0, 1}", "train/ids: 1 duplicated ids",
                   "in train and test", "train/labels: 3 columns but 2 classes"):
        assert needle in text, text
    res = cli(["cache", "verify", path], code=2)
    assert all(p in " ".join(res.output.split()) for p in ("NaN", "duplicated ids", "3 columns but 2 classes"))


def test_cache_verify_dtypes_and_row_counts(tmp_path):
    path = make_cache(tmp_path / "c.h5", n=(10, 4, 4), n_classes=3)
    with h5py.File(path, "a") as f:
        X = f["val/embeddings"][...].astype(np.float32)
        del f["val/embeddings"]
        f["val"].create_dataset("embeddings", data=X)
        ids = [x.decode() for x in f["test/ids"][...]][:3]
        del f["test/ids"]
        f["test"].create_dataset("ids", data=np.array(ids, dtype=object), dtype=h5py.string_dtype())
        L = f["train/labels"][...].astype(np.int64)
        del f["train/labels"]
        f["train"].create_dataset("labels", data=L)
        fields = json.loads(f.attrs["fingerprint_json"])
        f.attrs["fingerprint_json"] = json.dumps({**fields, "split_seed": 1})
    text = "\n".join(verify_cache(path))
    for needle in ("val/embeddings: dtype float32, expected float16", "test: row counts differ",
                   "train/labels: dtype int64, expected uint8", "fingerprint does not match"):
        assert needle in text, text


# ------------------------------------------------------------------------------------- writer edges


def test_writer_ids_round_trip_any_characters(tmp_path):
    """Ids survive the partial files exactly (newlines, U+2028, U+0085, \\r, quotes, unicode)."""
    from mlhead.cache import write_cache

    ids = ["a\nb", "c\u2028d", "e\x85f", "g\rh", 'q"uote', "日本🙂", " lead", "x\\ny"]
    X = np.arange(len(ids) * 2, dtype=np.float32).reshape(-1, 2)
    Y = np.eye(len(ids), 2, dtype=np.uint8)
    path = write_cache(tmp_path / "c.h5", {"train": (X, Y, ids)}, ["p", "q"])
    assert open_cache(path).load("train")[2] == ids
    assert verify_cache(path) == []


def test_writer_sync_interval_resume_drops_unsynced_rows(tmp_path):
    from mlhead.cache import CacheWriter

    rng = np.random.default_rng(0)
    X, Y, ids = rng.normal(size=(6, 3)), rng.integers(0, 2, size=(6, 2)), [f"r{i}" for i in range(6)]
    path = tmp_path / "c.h5"
    w = CacheWriter(path, ["a", "b"], 3, {"train": 6}, fingerprint={"v": 1}, sync_interval=3600)
    w.append("train", X[:2], Y[:2], ids[:2])
    w.flush()
    w.append("train", X[2:4], Y[2:4], ids[2:4])  # reaches the OS, never synced: a kill here loses it
    on_disk = json.loads((w.partial / "progress.json").read_text())
    assert on_disk["rows"]["train"] == 2 and (w.partial / "train.emb").stat().st_size == 4 * 3 * 2
    w2 = CacheWriter(path, ["a", "b"], 3, {"train": 6}, fingerprint={"v": 1})
    assert w2.done("train") == 2 and (w2.partial / "train.emb").stat().st_size == 2 * 3 * 2
    w2.append("train", X[2:], Y[2:], ids[2:])
    c = open_cache(w2.finish())
    emb, lab, got_ids = c.load("train")
    np.testing.assert_array_equal(emb.numpy(), X.astype(np.float16).astype(np.float32))
    np.testing.assert_array_equal(lab.numpy(), Y)
    assert got_ids == ids


def test_damaged_partial_is_refused_unless_forced(tmp_path):
    from mlhead.cache import CacheError, CacheWriter

    path = tmp_path / "c.h5"
    w = CacheWriter(path, ["a"], 2, {"train": 4}, fingerprint={"v": 1})
    w.append("train", np.ones((3, 2)), np.ones((3, 1)), ["x", "y", "z"])
    w.close()
    with open(w.partial / "train.emb", "r+b") as fh:
        fh.truncate(5)  # fewer bytes than the 3 durable rows
    with pytest.raises(CacheError, match="partial damaged.*--force"):
        CacheWriter(path, ["a"], 2, {"train": 4}, fingerprint={"v": 1})
    assert CacheWriter(path, ["a"], 2, {"train": 4}, fingerprint={"v": 1}, force=True).done("train") == 0
    (w.partial / "progress.json").write_text("{not json")
    with pytest.raises(CacheError, match="unreadable progress.json.*--force"):
        CacheWriter(path, ["a"], 2, {"train": 4}, fingerprint={"v": 1})
    assert CacheWriter(path, ["a"], 2, {"train": 4}, fingerprint={"v": 1}, force=True).done("train") == 0


def test_writer_refuses_values_a_valid_cache_cannot_hold(tmp_path):
    from mlhead.cache import CacheWriter

    w = CacheWriter(tmp_path / "c.h5", ["a"], 2, {"train": 3})
    with pytest.raises(ValueError, match="float16"):
        w.append("train", np.array([[1.0, 7e4]]), np.ones((1, 1)), ["x"])
    with pytest.raises(ValueError, match="NaN"):
        w.append("train", np.array([[np.nan, 0.0]]), np.ones((1, 1)), ["x"])
    with pytest.raises(ValueError, match="0/1"):
        w.append("train", np.zeros((1, 2)), np.full((1, 1), 2), ["x"])
    assert w.done("train") == 0
