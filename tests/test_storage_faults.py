"""Storage faults and damaged files never lose work nor end in a traceback (issue #16).

Disk full is injected by making ``os.fsync`` (or a written file) fail with ENOSPC for paths under one
folder; a read-only folder by ``chmod 0555``, or, when the tests run as root (chmod does not bite), by
refusing every create/rename under that folder with EACCES. Damaged runs are byte flips and truncations of
``head.safetensors`` and ``config.json``."""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from pathlib import Path

import pytest
from click.testing import CliRunner

from conftest import fit_tiny_run, make_cache
from mlhead.cli import main
from mlhead.errors import RunError, StorageError
from mlhead.runs import find_runs, load_head, load_run_config

FIT = ["fit", "--loss", "crossentropy", "--epochs", "3", "--batch-size", "16", "--hidden", "8"]


def cli(args, code=0):
    res = CliRunner().invoke(main, [str(a) for a in args])
    assert res.exit_code == code, res.output
    assert "Traceback" not in res.output
    return res


def _under(path, root: Path) -> bool:
    p = os.path.abspath(os.fsdecode(path))
    return p == str(root) or p.startswith(str(root) + os.sep)


def _fd_path(fd: int) -> str:
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return ""


@contextlib.contextmanager
def disk_full(root: Path, monkeypatch, skip=(".partial",)):
    """fsync of any file under ``root`` (outside ``skip`` subfolders) fails with ENOSPC, as a full disk
    does with delayed allocation."""
    root = Path(root).resolve()
    real = os.fsync

    def fsync(fd):
        path = _fd_path(fd)
        if _under(path, root) and not any(f"{os.sep}{s}{os.sep}" in path for s in skip) and \
                os.path.isfile(path):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(fd)

    with monkeypatch.context() as m:
        m.setattr(os, "fsync", fsync)
        yield


@contextlib.contextmanager
def read_only(folder: Path, monkeypatch):
    """``folder`` is read-only: chmod 0555 where that bites, else (root) creates/renames under it fail with
    EACCES."""
    folder = Path(folder).resolve()
    folder.mkdir(parents=True, exist_ok=True)
    folder.chmod(0o555)
    probe = folder / ".probe"
    try:
        probe.touch()
        probe.unlink()
        bites = False
    except PermissionError:
        bites = True
    with monkeypatch.context() as m:
        if not bites:
            _deny_writes(m, folder)
        try:
            yield
        finally:
            folder.chmod(0o755)


def _deny_writes(m, folder: Path) -> None:
    real_open, real_mkdir, real_replace, real_rename = os.open, os.mkdir, os.replace, os.rename

    def denied(path):
        return PermissionError(errno.EACCES, "Permission denied", os.fsdecode(path))

    def fake_open(path, flags, *a, **k):
        if flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT) and _under(path, folder):
            raise denied(path)
        return real_open(path, flags, *a, **k)

    def fake_mkdir(path, *a, **k):
        if _under(path, folder) and not os.path.exists(path):
            raise denied(path)
        return real_mkdir(path, *a, **k)

    def guard(real):
        def fake(src, dst, *a, **k):
            if _under(src, folder) or _under(dst, folder):
                raise denied(dst)
            return real(src, dst, *a, **k)
        return fake

    m.setattr(os, "open", fake_open)
    m.setattr(os, "mkdir", fake_mkdir)
    m.setattr(os, "replace", guard(real_replace))
    m.setattr(os, "rename", guard(real_rename))


def _entries(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


# ------------------------------------------------------------------------------------------- fit


def test_fit_disk_full_leaves_no_run_dir_and_resumes(tmp_path, monkeypatch):
    cache, runs = make_cache(tmp_path / "c.h5"), tmp_path / "runs"
    with disk_full(runs, monkeypatch):
        res = cli(FIT + ["--cache", cache, "--runs-dir", runs], code=2)
    assert "error: cannot write" in res.output and "No space left on device" in res.output
    assert str(runs) in res.output.replace("\n", "")
    assert _entries(runs) == [".partial"]  # the checkpoint of epoch 2 is kept: nothing lost
    assert find_runs(runs) == []
    cli(FIT + ["--cache", cache, "--runs-dir", runs])
    (run,) = find_runs(runs)
    assert _entries(runs) == [run.name]  # resumed, finished, checkpoint removed
    assert {"config.json", "head.safetensors", "history.csv"} <= set(_entries(run))
    load_head(run)


def test_fit_read_only_runs_dir(tmp_path, monkeypatch):
    cache, runs = make_cache(tmp_path / "c.h5"), tmp_path / "runs"
    with read_only(runs, monkeypatch):
        res = cli(FIT + ["--cache", cache, "--runs-dir", runs], code=2)
    assert "error: cannot write" in res.output and "Permission denied" in res.output
    assert _entries(runs) == []


def test_write_run_failure_at_rename_removes_the_temporary_folder(tmp_path, monkeypatch):
    """The last step (renaming the finished folder into place) fails: nothing is left behind."""
    from mlhead import runs as R

    cache = make_cache(tmp_path / "c.h5")

    def boom(*a):
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(R, "_rename_into_place", boom)
    with pytest.raises(StorageError, match="Read-only file system"):
        fit_tiny_run(cache, tmp_path / "runs")
    assert [p for p in _entries(tmp_path / "runs") if p != ".partial"] == []


def test_new_run_files_honour_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        run = fit_tiny_run(make_cache(tmp_path / "c.h5"), tmp_path / "runs")
    finally:
        os.umask(old)
    assert stat.S_IMODE(run.stat().st_mode) == 0o755
    for name in ("head.safetensors", "config.json", "history.csv"):
        assert stat.S_IMODE((run / name).stat().st_mode) == 0o644, name


# ------------------------------------------------------------------------------------ eval, report, predict


@pytest.fixture
def run(tmp_path):
    return fit_tiny_run(make_cache(tmp_path / "c.h5"), tmp_path / "runs")


def test_eval_disk_full_names_the_file(run, monkeypatch):
    with disk_full(run, monkeypatch):
        res = cli(["eval", "--run", run], code=2)
    assert "error: cannot write" in res.output and "No space left on device" in res.output
    assert not (run / "metrics.json").exists() and not list((run / "eval").glob("*.json"))
    assert not [p for p in _entries(run / "eval") if p.endswith(".tmp")]


def test_eval_read_only_run_dir_without_o_is_an_error(run, monkeypatch):
    with read_only(run, monkeypatch):
        res = cli(["eval", "--run", run], code=2)
    assert "error: cannot write" in res.output and str(run.name) in res.output


@pytest.mark.parametrize("suffix", [".json", ".csv"])
def test_eval_o_works_on_a_read_only_run_dir(run, tmp_path, monkeypatch, suffix):
    out = tmp_path / "out" / f"m{suffix}"
    with read_only(run, monkeypatch):
        res = cli(["eval", "--run", run, "-o", out])
    assert out.is_file() and "micro_f1" in out.read_text()
    assert "written to" in res.output and str(out) in res.output.replace("\n", "")
    assert not (run / "metrics.json").exists()


def test_eval_o_still_records_in_a_writable_run_dir(run, tmp_path):
    cli(["eval", "--run", run, "-o", tmp_path / "m.json"])
    assert (tmp_path / "m.json").is_file() and (run / "metrics.json").is_file()


def test_report_read_only_and_disk_full_out_dir(run, tmp_path, monkeypatch):
    cli(["eval", "--run", run])
    out = tmp_path / "rep"
    with read_only(out, monkeypatch):
        res = cli(["report", run, "--out-dir", out], code=2)
    assert "error: cannot write" in res.output and "Permission denied" in res.output
    with disk_full(out, monkeypatch):
        res = cli(["report", run, "--out-dir", out], code=2)
    assert "No space left on device" in res.output
    assert _entries(out) == []
    with read_only(out, monkeypatch):
        res = cli(["report", run, "--html", out / "r.html"], code=2)
    assert "error: cannot write" in res.output


def test_predict_read_only_and_disk_full_output(run, tmp_path, monkeypatch):
    emb = ["--cache", tmp_path / "c.h5"]
    out = tmp_path / "pred"
    with read_only(out, monkeypatch):
        res = cli(["predict", "--run", run, *emb, "-o", out / "p.csv"], code=2)
    assert "error: cannot write -o" in res.output
    import mlhead.predict as P

    class Full:
        def __init__(self, fh):
            self.fh = fh

        def write(self, *a):
            raise OSError(errno.ENOSPC, "No space left on device")

        def close(self):
            self.fh.close()

    real_open = open
    monkeypatch.setattr(P, "open", lambda *a, **k: Full(real_open(*a, **k)), raising=False)
    res = cli(["predict", "--run", run, *emb, "-o", out / "p.jsonl"], code=2)
    assert "No space left on device" in res.output and "p.jsonl" in res.output
    assert _entries(out) == []


# ------------------------------------------------------------------------------------ damaged run files


def _flip(path: Path, at: int) -> None:
    b = bytearray(path.read_bytes())
    b[at] ^= 0xFF
    path.write_bytes(bytes(b))


def _truncate(path: Path, keep: float) -> None:
    b = path.read_bytes()
    path.write_bytes(b[: int(len(b) * keep)])


HEAD_DAMAGE = {
    "flip-data": lambda p: _flip(p, -5),  # a weight byte: only the checksum sees it
    "flip-header": lambda p: _flip(p, 12),
    "flip-length": lambda p: _flip(p, 3),
    "truncated": lambda p: _truncate(p, 0.6),
    "empty": lambda p: p.write_bytes(b""),
}


@pytest.mark.parametrize("damage", sorted(HEAD_DAMAGE))
def test_damaged_head_is_a_run_error_naming_the_file(run, damage):
    HEAD_DAMAGE[damage](run / "head.safetensors")
    with pytest.raises(RunError, match="head.safetensors"):
        load_head(run)
    for args in (["eval", "--run", run], ["export", "--run", run, "-o", run.parent / "exp"],
                 ["predict", "--run", run, "--cache", load_run_config(run).cache]):
        res = cli(args, code=2)
        assert "error:" in res.output and "head.safetensors" in res.output, args


CONFIG_DAMAGE = {
    "truncated": lambda p: _truncate(p, 0.5),
    "flip-brace": lambda p: _flip(p, 0),
    "not-utf8": lambda p: p.write_bytes(b"\xff\xfe" + p.read_bytes()),
    "empty": lambda p: p.write_bytes(b""),
}


@pytest.mark.parametrize("damage", sorted(CONFIG_DAMAGE))
def test_damaged_config_is_a_run_error_naming_the_file(run, damage):
    cli(["eval", "--run", run])
    CONFIG_DAMAGE[damage](run / "config.json")
    with pytest.raises(RunError, match="config.json"):
        load_run_config(run)
    for args in (["eval", "--run", run], ["export", "--run", run, "-o", run.parent / "exp"],
                 ["predict", "--run", run, "--cache", run.parent.parent / "c.h5"], ["report", run]):
        res = cli(args, code=2)
        assert "error:" in res.output and "config.json" in res.output, args


def test_damaged_metrics_json_is_a_run_error(run):
    cli(["eval", "--run", run])
    _truncate(run / "metrics.json", 0.5)
    res = cli(["predict", "--run", run, "--cache", run.parent.parent / "c.h5"], code=2)
    assert "metrics.json" in res.output and "mlhead eval --run" in res.output.replace("\n", " ")


def test_old_head_without_checksum_still_loads(run):
    from safetensors.torch import load_file, save_file

    state = load_file(str(run / "head.safetensors"))
    save_file(state, str(run / "head.safetensors"))  # as mlhead wrote it before the checksum
    head, _ = load_head(run)
    assert head is not None
