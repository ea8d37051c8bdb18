"""Atomic, durable file writes: the one helper every module uses to write a result file.

A file is written to a temporary sibling, flushed and fsync'd, then ``os.replace``-d onto its name, and the
folder is fsync'd, so a reader sees either the old file or the whole new one, never half of it. The new
file honours the process umask (``tempfile.mkstemp`` would create it 0600). Storage faults (disk full,
read-only folder, permission denied) become one :class:`~mlhead.errors.StorageError` naming the path; the
temporary file is removed and the previous file, if any, is left untouched.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path

from .errors import StorageError


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def fsync_dir(path: Path) -> None:
    """fsync a folder so a rename inside it survives a power loss (no-op where unsupported)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_bytes(path: str | os.PathLike, data: bytes, durable: bool = True) -> Path:
    """Write ``data`` to ``path`` atomically (tmp + fsync + rename; mode 0666 & ~umask).

    Returns the path. Raises :class:`StorageError` (naming ``path``) on any OS-level write failure;
    ``path`` keeps its previous content then.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            if durable:
                os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise StorageError(f"cannot write {path}: {e.strerror or e}") from e
    if durable:
        fsync_dir(path.parent)
    return path


def atomic_write_text(path: str | os.PathLike, text: str, durable: bool = True) -> Path:
    """:func:`atomic_write_bytes` for UTF-8 text."""
    return atomic_write_bytes(path, text.encode("utf-8"), durable=durable)


def atomic_write_json(path: str | os.PathLike, obj, durable: bool = True, indent: int = 2) -> Path:
    """:func:`atomic_write_bytes` for a JSON document (sorted keys off, trailing newline)."""
    return atomic_write_text(path, json.dumps(obj, indent=indent) + "\n", durable=durable)


@contextlib.contextmanager
def storage_errors(path: str | os.PathLike, verb: str = "write"):
    """Context manager: an OSError inside the block (disk full, read-only folder, permission denied)
    becomes one :class:`StorageError` ``cannot <verb> <path>: <reason>``; other errors pass through."""
    try:
        yield
    except StorageError:
        raise
    except OSError as e:
        raise StorageError(f"cannot {verb} {path}: {e.strerror or e}") from e


def read_json(path: str | os.PathLike, error: type[Exception] = ValueError, hint: str = ""):
    """Parse the JSON file ``path``.

    Raises ``FileNotFoundError`` when it is absent (callers say what is missing), ``error`` naming the file
    when it is not valid UTF-8 JSON (corrupt or truncated; ``hint`` says what to do next), and
    :class:`StorageError` when it cannot be read (permission denied, I/O error)."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise
    except OSError as e:
        raise StorageError(f"cannot read {path}: {e.strerror or e}") from e
    try:
        return json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise error(f"{path}: corrupt or truncated JSON ({e}){hint}") from None
