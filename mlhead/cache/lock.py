"""One writer per cache: an exclusive lock on ``<path>.lock`` (the ``filelock`` library, flock on Unix)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

import filelock

from ..errors import CacheError

#: how long ``wait=True`` waits (a year: "until released"). A finite wait, because filelock refuses an
#: unlimited one on a lock that another instance in this process holds (it cannot tell that another
#: thread will release it, as tests do).
WAIT_SECONDS = 365 * 24 * 3600.0


class CacheLock:
    """Exclusive lock on ``<path>.lock``, a context manager; one writer per cache.

    ``wait=False`` fails at once with :class:`CacheError` naming the holder (the ``pid N`` it wrote
    into the lock file); ``wait=True`` blocks until the holder releases it (``on_wait(message)`` is
    called once before blocking). The lock file stays after release (waiters share its inode).
    Raises OSError when the lock file cannot be created.
    """

    def __init__(self, path, wait: bool = False, on_wait: Callable[[str], None] | None = None):
        self.path = Path(path)
        self.lock_path = Path(str(path) + ".lock")
        self.wait = wait
        self.on_wait = on_wait
        # not thread-local: whichever thread leaves the context releases the lock
        self._lock = filelock.FileLock(str(self.lock_path), thread_local=False)

    def _holder(self) -> str:
        try:
            return self.lock_path.read_text().strip() or "another process"
        except OSError:
            return "another process"

    def __enter__(self) -> "CacheLock":
        self.lock_path.parent.mkdir(parents=True, exist_ok=True)
        holder = self._holder()  # read before trying: the holder wrote it, and nothing else has
        try:
            self._lock.acquire(blocking=False)
        except filelock.Timeout:
            if not self.wait:
                raise CacheError(f"{self.path}: another `mlhead embed` ({holder}) is writing this cache; "
                                 "wait for it or use --wait-lock") from None
            if self.on_wait:
                self.on_wait(f"{self.path}: waiting for another `mlhead embed` ({holder}) to finish this cache")
            self._lock.acquire(timeout=WAIT_SECONDS)
        self.lock_path.write_text(f"pid {os.getpid()}")
        return self

    def __exit__(self, *exc) -> None:
        self._lock.release()
