"""click parameter types: each command-line syntax has exactly one parsing rule, here.

* :class:`CommaList` -- ``--seed 0,1,2``, ``--threshold 0.05,0.5``: items split on ``,``, each converted
  by an item type; an empty item (``1,,2``) or an unconvertible one is an error naming the flag.
* :class:`Shard` -- ``--shard i/n``: integers with ``0 <= i < n``, returned as ``(i, n)``.
* :class:`Track` -- ``--track mlflow[:URI]``: parsed by :func:`mlhead.tracking.parse_spec` into a
  :class:`~mlhead.tracking.TrackSpec`; MLflow must be importable (checked before any work starts).
* :class:`MemorySize` -- ``--memory-budget 1G``: bytes (binary units).
* :class:`KeyValue` -- ``-D KEY=VALUE``, ``-O KEY=V1,V2``: split at the first ``=``, the key normalised
  (``-`` -> ``_``), the value converted by a value type (text, or e.g. ``CommaList(str)``). With
  ``multiple=True`` use :func:`key_value_dict` as the callback to get a dict (repeated keys refused).

Bad values fail as click usage errors (exit code 2), e.g.
``Error: Invalid value for '--shard': '4/4': expected i/n with 0 <= i < n, e.g. 0/4``.
"""

from __future__ import annotations

import re

import click

_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class CommaList(click.ParamType):
    """A comma-separated list whose items are converted by ``item_type`` (a click type or a Python type
    such as ``int``/``float``/``str``); returns a list. ``"0.05,0.5"`` -> ``[0.05, 0.5]`` for
    ``CommaList(float)``."""

    def __init__(self, item_type=str):
        self.item_type = click.types.convert_type(item_type)
        self.name = f"{self.item_type.name}[,{self.item_type.name}...]"

    def convert(self, value, param, ctx):
        if isinstance(value, list):
            return value
        items = [x.strip() for x in str(value).split(",")]
        if any(not x for x in items):
            self.fail(f"{value!r}: empty item in a comma-separated list", param, ctx)
        out = []
        for x in items:
            try:
                out.append(self.item_type.convert(x, param, ctx))
            except click.BadParameter:
                self.fail(f"{value!r}: {x!r} is not a valid {self.item_type.name}", param, ctx)
        return out


class Shard(click.ParamType):
    """``i/n``: shard ``i`` of ``n`` (``0 <= i < n``), returned as the tuple ``(i, n)``."""

    name = "i/n"

    def convert(self, value, param, ctx):
        if isinstance(value, tuple):
            return value
        m = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", str(value))
        if not m or not int(m[1]) < int(m[2]):
            self.fail(f"{value!r}: expected i/n with 0 <= i < n, e.g. 0/4", param, ctx)
        return int(m[1]), int(m[2])


class KeyValue(click.ParamType):
    """``KEY=VALUE``, returned as ``(key, value)``: the key with ``-`` read as ``_`` (a Python
    identifier), the value converted by ``value_type`` (default text; e.g. ``CommaList(str)``)."""

    def __init__(self, value_type=str):
        self.value_type = click.types.convert_type(value_type)
        self.name = f"KEY={self.value_type.name.upper()}"

    def convert(self, value, param, ctx):
        if isinstance(value, tuple):
            return value
        key, sep, raw = str(value).partition("=")
        key = key.strip().replace("-", "_")
        if not sep or not _KEY.match(key):
            self.fail(f"{value!r}: expected KEY=VALUE (e.g. name=emotions)", param, ctx)
        return key, self.value_type.convert(raw.strip(), param, ctx)


def key_value_dict(ctx, param, pairs) -> dict:
    """click callback for a ``multiple=True`` :class:`KeyValue` option: the pairs as a dict. A key
    given twice is an error naming the flag."""
    out: dict = {}
    for key, value in pairs or ():
        if key in out:
            raise click.BadParameter(f"{key} given twice", ctx=ctx, param=param)
        out[key] = value
    return out


class Track(click.ParamType):
    """``mlflow`` or ``mlflow:URI`` (see :func:`mlhead.tracking.parse_spec`), returned as a
    :class:`~mlhead.tracking.TrackSpec`. A bad spec is a usage error; a missing MLflow raises the
    :class:`~mlhead.errors.DependencyError` naming ``pip install 'mlhead[track]'`` (before any work)."""

    name = "mlflow[:URI]"

    def convert(self, value, param, ctx):
        from ..errors import ConfigError
        from ..tracking import TrackSpec, parse_spec, require_mlflow

        if isinstance(value, TrackSpec):
            return value
        try:
            spec = parse_spec(value)
        except ConfigError as e:
            self.fail(str(e), param, ctx)
        require_mlflow()
        return spec


class MemorySize(click.ParamType):
    """``--memory-budget 1G``: a size in bytes (``1G``, ``512M``, ``1.5GiB``, ``1000000``; binary units),
    parsed by :func:`mlhead.datasource.parse_size`; returns an int."""

    name = "SIZE"

    def convert(self, value, param, ctx):
        from ..datasource import parse_size
        from ..errors import ConfigError

        if isinstance(value, int):
            return value
        try:
            return parse_size(value)
        except ConfigError as e:
            self.fail(str(e).removeprefix("--memory-budget "), param, ctx)
