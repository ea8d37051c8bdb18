"""One factory for every encoder: ``create_encoder(name, weights=None, **options)``, and ``from_spec``.

Names (``--backbone``), resolved in this order:

* a preset (:data:`PRESETS`: ``mobilenetv2_100``, ``tresnet_m``, ``distilbert-base-uncased``, ``minilm``):
  a source below plus default options and, for some, a default weights location;
* ``FAMILY:ID`` with an explicit source prefix (:data:`ENCODERS`): ``timm:resnet50``,
  ``hf:PATH_OR_HUB_ID``, ``open_clip:ARCH_OR_FOLDER``;
* a local folder: the family whose config files it holds (``config.json`` with ``model_type``:
  transformers; other ``config.json``: timm; ``open_clip_config.json``: open_clip);
* any other name: a transformers model when ``--weights`` is a transformers folder, else a timm name.

A family is one module of this package that subclasses :class:`~mlhead.encoders.base.Encoder` and
registers it with :func:`register_family` (the package imports every module in it).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

from ..errors import BackboneError, ConfigError
from ..registry import Registry
from .base import Encoder

#: family name (= source prefix) -> Encoder subclass
ENCODERS: Registry[type[Encoder]] = Registry("encoder family", BackboneError)
#: preset name -> :class:`Preset`
PRESETS: Registry["Preset"] = Registry("encoder preset", BackboneError)
#: family of names that are neither presets, prefixed nor local folders (any timm model name)
DEFAULT_FAMILY = "timm"
#: torch seed every encoder is built under: ``random_init`` weights are the same in every run (resumable)
RANDOM_INIT_SEED = 0


@dataclass(frozen=True)
class Preset:
    """A named encoder: ``source`` (``FAMILY:ID``), default ``options``, a ``default()`` weights location
    (or None) and a one-line ``doc``. ``name`` is the display/cache name the family may use."""

    name: str
    source: str
    options: dict = field(default_factory=dict)
    default: Callable[[], Path | None] | None = None
    doc: str = ""


def register_family(name: str):
    """Class decorator: register an :class:`Encoder` subclass as family ``name`` (its source prefix).
    Duplicate names are refused."""
    return ENCODERS.register(name)


def register_preset(name: str, source: str, default: Callable[[], Path | None] | None = None,
                    doc: str = "", **options) -> Preset:
    """Register preset ``name`` -> ``source`` (``FAMILY:ID``) with default ``options``. Duplicates refused."""
    return PRESETS.register(name, Preset(name, source, options, default, doc))


def list_encoders(pattern: str = "*") -> list[str]:
    """Preset names and family prefixes (``"timm:"``...) matching ``pattern``, sorted."""
    return PRESETS.names(pattern) + [f"{f}:" for f in ENCODERS.names(pattern.rstrip(":*") + "*")]


def create_encoder(name: str, weights: str | os.PathLike | None = None, **options) -> Encoder:
    """The frozen encoder ``name`` (see module docstring) in eval mode, on the CPU.

    ``weights``: ``--weights PATH`` (file or folder), else the preset's default location, else the hub.
    ``options`` (None values are dropped): ``random_init`` and the families' own (``pooling``,
    ``max_length``, ``normalize``, ``model_kwargs``, ``data_config``, ``pretrained``...). An option no
    family takes raises :class:`ConfigError`; one that only other families take (``pooling`` for an image
    model) is ignored, since the CLI passes one option set to any encoder. Every encoder is built under
    torch seed :data:`RANDOM_INIT_SEED`, so random weights are reproducible. Raises
    :class:`BackboneError` (unknown name, weights missing / not fitting), :class:`DependencyError`.
    """
    options = {k: v for k, v in options.items() if v is not None}
    known = {"random_init"}.union(*(cls.options for _, cls in ENCODERS.items()))
    unknown = sorted(set(options) - known)
    if unknown:
        raise ConfigError(f"unknown encoder option(s) {', '.join(unknown)}; valid: {', '.join(sorted(known))}")
    family, model_id, display, default, options = _route(str(name), weights, options)
    taken = {k: v for k, v in options.items() if k in family.options or k == "random_init"}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(RANDOM_INIT_SEED)
        return family.create(model_id, weights, name=display, default=default, **taken)


def _route(name: str, weights, options: dict):
    """(family class, model id (a Path when local), display name, default weights, options) for ``name``."""
    if name in PRESETS:
        p = PRESETS.get(name)
        prefix, _, model_id = p.source.partition(":")
        return ENCODERS.get(prefix), model_id, p.name, p.default, {**p.options, **options}
    prefix, sep, rest = name.partition(":")
    if sep and prefix in ENCODERS:
        return ENCODERS.get(prefix), Path(rest) if Path(rest).exists() else rest, None, None, options
    if Path(name).is_dir() and _claimant(Path(name)):
        return _claimant(Path(name)), Path(name), None, None, options
    if weights is not None and Path(weights).is_dir():
        family = _claimant(Path(weights))
        if family is not None and family.family != DEFAULT_FAMILY:  # e.g. a transformers folder, any name
            return family, name, name, None, options
    return ENCODERS.get(DEFAULT_FAMILY), name, None, None, options


def _claimant(folder: Path) -> type[Encoder] | None:
    """The first family (registration order) whose config files ``folder`` holds, or None."""
    return next((cls for _, cls in ENCODERS.items() if cls.claims(folder)), None)


def from_spec(spec: dict, weights: str | os.PathLike | None = None) -> Encoder:
    """Rebuild exactly the encoder ``spec`` describes (``Encoder.spec()``, or a cache's attrs: ``backbone``,
    ``weights_sha256``, ``preprocessing``, optionally ``dim``).

    ``weights`` as for :func:`create_encoder` (needed when the spec's weights came from ``--weights``).
    Raises :class:`BackboneError` when the spec names no known family, or when the rebuilt encoder differs
    from the spec (other weights, preprocessing or width; the message names the fields and how to fix it).
    """
    kind = (spec.get("preprocessing") or {}).get("kind")
    family = next((cls for _, cls in ENCODERS.items() if cls.kind == kind), None)
    if family is None:
        raise BackboneError(f"cannot rebuild encoder {spec.get('backbone', '?')!r}: its preprocessing kind {kind!r} "
                            f"is none of {', '.join(sorted(c.kind for _, c in ENCODERS.items()))} (a cache written "
                            "without an encoder, or by a newer mlhead)")
    source, options = family.request(spec)
    encoder = create_encoder(source, weights, **options)
    _check_same(encoder, spec, weights)
    return encoder


def _check_same(encoder: Encoder, spec: dict, weights) -> None:
    """Raise :class:`BackboneError` naming every field where ``encoder`` differs from ``spec``."""
    want = json.loads(json.dumps({k: spec[k] for k in ("backbone", "weights_sha256", "preprocessing", "dim")
                                  if k in spec}, default=str))
    got = json.loads(json.dumps({**encoder.fingerprint(), "dim": encoder.dim}, default=str))
    diff = [k for k in want if want[k] != got[k]]
    if not diff:
        return
    detail = []
    if "weights_sha256" in diff:
        detail.append(f"weights sha256 {got['weights_sha256'][:12] or '(none)'} from "
                      f"{weights or 'the default location'}, expected {want['weights_sha256'][:12] or '(none)'}: "
                      "pass --weights PATH with the weights the cache was made with")
    if "preprocessing" in diff:
        keys = sorted(k for k in set(want["preprocessing"]) | set(got["preprocessing"])
                      if want["preprocessing"].get(k) != got["preprocessing"].get(k))
        detail.append(f"preprocessing differs in {', '.join(keys)}")
    raise BackboneError(f"the rebuilt encoder {encoder.name!r} is not the one the cache was made with "
                        f"({', '.join(diff)} differ{'s' if len(diff) == 1 else ''}"
                        f"{': ' + '; '.join(detail) if detail else ''})")
