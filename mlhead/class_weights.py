"""Per-class weights of the positive term, ``fit --pos-weight auto|none|FILE``.

The weight ``w_c`` has the meaning of ``pos_weight`` in ``torch.nn.BCEWithLogitsLoss``: the positive
term of class c is multiplied by ``w_c`` (``w_c > 1`` raises recall). It applies to the losses in
:data:`mlhead.losses.POS_WEIGHT_LOSSES` (crossentropy, focal, asl); see ``mlhead losses``.

* ``auto`` -- from the train split: ``w_c = n_neg_c / n_pos_c`` (torch's documented choice, "the
  number of negative examples divided by the number of positive examples"). A class with no train
  positive, or no train negative, gets ``w_c = 1`` (neg/pos would be inf or 0; with no positive the
  weight never acts in training anyway); :func:`resolve` names those classes in its notes.
* ``none`` -- no weighting (``pos_weight=None``).
* ``FILE`` -- a JSON object ``{"class": weight, ...}`` or a CSV with a header ``class,weight``; every
  class of the cache exactly once, weights finite and >= 0. Unknown or missing class names, duplicates
  and bad numbers are :class:`~mlhead.errors.ConfigError` naming the file.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import scipy.sparse as sp
import torch

from .errors import ConfigError


def from_labels(Y: torch.Tensor) -> tuple[torch.Tensor, list[int]]:
    """``auto`` weights from multi-hot train labels ``Y`` (N x C, any numeric dtype): (C float32
    tensor ``n_neg / n_pos``, indices of the classes clipped to 1 because they have no positive or
    no negative). A ``scipy.sparse`` matrix (CSR labels) is counted without densifying."""
    if sp.issparse(Y):
        pos = torch.from_numpy(np.asarray(Y.sum(0), dtype=np.float64).ravel())
    else:
        pos = Y.to(torch.float64).sum(0)
    neg = Y.shape[0] - pos
    bad = (pos == 0) | (neg == 0)
    w = torch.where(bad, torch.ones_like(pos), neg / pos.clamp(min=1))
    return w.to(torch.float32), torch.nonzero(bad).flatten().tolist()


def _read_pairs(path: Path) -> list[tuple[str, object]]:
    text = path.read_text(encoding="utf-8")
    if path.suffix.lower() == ".json":
        try:
            doc = json.loads(text)
        except json.JSONDecodeError as e:
            raise ConfigError(f"--pos-weight {path}: not valid JSON ({e})") from None
        if not isinstance(doc, dict):
            raise ConfigError(f"--pos-weight {path}: expected a JSON object {{\"class\": weight, ...}}")
        return list(doc.items())
    rows = list(csv.reader(text.splitlines()))
    if not rows or [c.strip().lower() for c in rows[0]] != ["class", "weight"]:
        raise ConfigError(f"--pos-weight {path}: a CSV needs the header 'class,weight'")
    if any(len(r) != 2 for r in rows[1:]):
        line = next(i for i, r in enumerate(rows[1:], 2) if len(r) != 2)
        raise ConfigError(f"--pos-weight {path}: line {line}: expected 'class,weight'")
    return [(r[0].strip(), r[1].strip()) for r in rows[1:]]


def read_file(path: str | Path, classes: list[str]) -> torch.Tensor:
    """Weights (C float32, in the order of ``classes``) from a JSON or CSV file (see module doc).

    Raises ConfigError naming the file for an unreadable file, unknown, missing or repeated classes, or
    a weight that is not a finite number >= 0."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"--pos-weight {path}: no such file (expected auto, none or a JSON/CSV file)")
    weights: dict[str, float] = {}
    for name, value in _read_pairs(path):
        if name in weights:
            raise ConfigError(f"--pos-weight {path}: class {name!r} given twice")
        try:
            w = float(value)
        except (TypeError, ValueError):
            w = math.nan
        if not (math.isfinite(w) and w >= 0):
            raise ConfigError(f"--pos-weight {path}: class {name!r}: weight {value!r} is not a finite number >= 0")
        weights[name] = w
    unknown = [c for c in weights if c not in set(classes)]
    missing = [c for c in classes if c not in weights]
    if unknown or missing:
        raise ConfigError(f"--pos-weight {path}: " + "; ".join(
            part for part in (f"unknown class(es) {unknown[:10]}" if unknown else "",
                              f"missing class(es) {missing[:10]}" if missing else "") if part)
            + f" (the cache's classes: {', '.join(classes[:20])}{', ...' if len(classes) > 20 else ''})")
    return torch.tensor([weights[c] for c in classes], dtype=torch.float32)


def resolve(spec: str, Y: torch.Tensor, classes: list[str]) -> tuple[torch.Tensor | None, list[str]]:
    """The pos_weight tensor (C float32, or None for ``none``) of ``--pos-weight spec`` and notes for the
    user. ``Y``: train labels N x C. Errors as in :func:`read_file`."""
    if spec == "none":
        return None, []
    if spec == "auto":
        w, clipped = from_labels(Y)
        notes = [f"--pos-weight auto: class(es) {', '.join(classes[i] for i in clipped[:10])}"
                 f"{' ...' if len(clipped) > 10 else ''} have no train positive or no train negative; weight 1"
                 ] if clipped else []
        return w, notes
    return read_file(spec, classes), []
