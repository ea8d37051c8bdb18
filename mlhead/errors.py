"""The ``MlheadError`` family: every *expected* failure of mlhead, in CLI terms.

The CLI turns exactly this family into one ``error: ...`` line (exit code 2); anything else is a bug and
shows its traceback. ``--debug`` shows the traceback for this family too.

Each subclass also derives from the built-in exception a caller would catch without knowing mlhead
(``ValueError`` for bad input, ``OSError`` for storage faults, ``RuntimeError`` for state), so library code
written against the built-ins keeps working.

Messages speak in CLI flags (``--activation none``), name the file, row or option at fault, and say what
to do next.
"""

from __future__ import annotations


class MlheadError(Exception):
    """Base of every expected mlhead failure (bad input, stale cache, missing weights, disk full)."""


class ConfigError(MlheadError, ValueError):
    """An option value is unknown or out of range, or options contradict each other."""


class DatasetError(MlheadError, ValueError):
    """A dataset file is missing, unreadable or malformed (the message names the file and row)."""


class CacheError(MlheadError, RuntimeError):
    """An embedding cache is missing, stale, incomplete, corrupt or locked by another writer."""


class BackboneError(MlheadError, RuntimeError):
    """An encoder (backbone) cannot be built: unknown name, missing or mismatching weights."""


EncoderError = BackboneError


class RunError(MlheadError, RuntimeError):
    """A run directory is missing, incomplete or corrupt, or its record has an unknown schema."""


class StorageError(MlheadError, OSError):
    """A file cannot be written or read: disk full, read-only folder, permission denied."""


class DependencyError(MlheadError, ImportError):
    """An optional extra (``mlhead[export]``, ``mlhead[track]``, ``ray``, ``open_clip``) is not installed."""


class NumericalError(MlheadError, FloatingPointError, ValueError):
    """A computation produced non-finite values where finite ones are required (also a ValueError:
    non-finite logits are bad input to a metric or rule)."""
