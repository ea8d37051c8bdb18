"""A tiny name -> object registry with a decorator, shared by encoders (and later losses, datasets, metrics).

The pattern is timm's (``timm/models/_registry.py``): a module registers its entries with a decorator at
import time, the factory looks names up in one place, ``names('pat*')`` lists them. A name registered
twice is refused (two modules claiming one CLI name is a bug, not something to resolve silently), and an
unknown name raises the registry's error class listing the valid names.
"""

from __future__ import annotations

import fnmatch
from typing import Callable, Generic, Iterator, TypeVar

from .errors import ConfigError, MlheadError

T = TypeVar("T")


class Registry(Generic[T]):
    """Names -> objects (classes, factories, presets) of one kind.

    ``kind`` names the entries in messages ("encoder family"); ``error`` is the :class:`MlheadError`
    subclass raised for an unknown name (default :class:`ConfigError`).
    """

    def __init__(self, kind: str, error: type[MlheadError] = ConfigError):
        self.kind, self.error = kind, error
        self._entries: dict[str, T] = {}

    def register(self, name: str, obj: T | None = None) -> Callable[[T], T] | T:
        """Register ``obj`` under ``name``; without ``obj``, a decorator doing so (it returns ``obj``).

        Raises :class:`ConfigError` when ``name`` is already registered (duplicates are refused).
        """

        def add(entry: T) -> T:
            if name in self._entries:
                raise ConfigError(f"{self.kind} {name!r} is already registered "
                                  f"({self._entries[name]!r}); pick another name")
            self._entries[name] = entry
            return entry

        return add if obj is None else add(obj)

    def get(self, name: str) -> T:
        """The entry named ``name``; raises ``self.error`` listing the valid names when it is unknown."""
        try:
            return self._entries[name]
        except KeyError:
            raise self.error(f"unknown {self.kind} {name!r}; valid: {', '.join(self.names())}") from None

    def names(self, pattern: str = "*") -> list[str]:
        """Registered names matching the shell-style ``pattern`` (``'mobile*'``), sorted."""
        return sorted(n for n in self._entries if fnmatch.fnmatchcase(n, pattern))

    def items(self) -> list[tuple[str, T]]:
        """(name, entry) pairs in registration order."""
        return list(self._entries.items())

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {self.names()})"
