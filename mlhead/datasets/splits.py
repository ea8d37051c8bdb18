"""Train/val/test splits of user tables: split-name aliases, stable hash splits, multilabel
stratification, and the check that no split is empty.

* :func:`hash_split`: each example goes to a split by a hash of ``f"{seed}:{id}"`` (blake2b, 64 bits ->
  uniform in [0, 1), cut at 0.6 / 0.8). An example's split depends only on its id and the seed, so adding
  rows to a table never moves an existing row to another split (sizes are 60/20/20 only on average).
* :func:`stratified_split`: iterative multilabel stratification (Sechidis et al. 2011) with
  iterative-stratification's ``MultilabelStratifiedShuffleSplit``, seeded: label proportions per split
  follow the whole table's more closely than a random split (rows may move when rows are added).

The paper datasets keep their own protocols (:func:`mlhead.datasets.base.split_indices`,
:func:`mlhead.datasets.base.carve_val`); these functions are for the ``table`` loader.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Sequence

import numpy as np

from .base import SPLIT_FRACTIONS, DatasetError, Example, multi_hot

SPLIT_NAMES = ("train", "val", "test")
#: accepted spellings (compared case-insensitively, surrounding whitespace ignored) -> split
SPLIT_ALIASES = {"train": "train", "val": "val", "dev": "val", "valid": "val", "validation": "val",
                 "test": "test"}


def normalize_split_name(raw: str) -> str | None:
    """``train``/``val``/``test`` for a split-column value (any case; ``dev``, ``valid``, ``validation``
    mean ``val``); None for anything else."""
    return SPLIT_ALIASES.get(str(raw).strip().lower())


def hash_unit(seed: int, example_id: str) -> float:
    """A number in [0, 1) fixed by ``seed`` and ``example_id``: the first 8 bytes of
    blake2b(f"{seed}:{example_id}") as a big-endian integer / 2**64."""
    digest = hashlib.blake2b(f"{seed}:{example_id}".encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2.0 ** 64


def hash_split(examples: Sequence[Example], seed: int,
               fractions: Sequence[float] = SPLIT_FRACTIONS) -> dict[str, list[Example]]:
    """Stable seeded split: ``u = hash_unit(seed, id)``; train if u < f0, val if u < f0 + f1, else test.

    Each split keeps file order. Adding or removing other rows never changes a row's split.
    """
    cut_train, cut_val = fractions[0], fractions[0] + fractions[1]
    out: dict[str, list[Example]] = {s: [] for s in SPLIT_NAMES}
    for e in examples:
        u = hash_unit(seed, e.id)
        out["train" if u < cut_train else "val" if u < cut_val else "test"].append(e)
    return out


def hash_carve_val(train: Sequence[Example], seed: int, fraction: float) -> tuple[list[Example], list[Example]]:
    """Split a given train set into (train, val): a row goes to val when ``hash_unit(seed, id) <
    fraction`` (stable under added rows, like :func:`hash_split`). File order kept."""
    val_ids = {e.id for e in train if hash_unit(seed, e.id) < fraction}
    return [e for e in train if e.id not in val_ids], [e for e in train if e.id in val_ids]


def stratified_split(examples: Sequence[Example], classes: Sequence[str], seed: int, where: Path | str,
                     fractions: Sequence[float] = SPLIT_FRACTIONS) -> dict[str, list[Example]]:
    """Iterative multilabel stratification into train/val/test (iterstrat's
    ``MultilabelStratifiedShuffleSplit``, ``random_state=seed``): first test (``fractions[2]`` of the
    rows), then val from the rest. Each split keeps file order. Rows without labels are spread like
    the others. Raises DatasetError naming ``where`` when there are too few rows to cut three splits.
    """
    from iterstrat.ml_stratifiers import MultilabelStratifiedShuffleSplit

    Y = multi_hot([e.labels for e in examples], classes)
    idx = np.arange(len(examples))
    try:
        rest, test = _stratified_cut(Y, idx, fractions[2], seed, MultilabelStratifiedShuffleSplit)
        train, val = _stratified_cut(Y, rest, fractions[1] / (fractions[0] + fractions[1]), seed,
                                     MultilabelStratifiedShuffleSplit)
    except ValueError as e:
        raise DatasetError(f"{where}: {len(examples)} rows are too few for --split-mode stratified ({e})") from None
    return {name: [examples[i] for i in sorted(part)] for name, part in
            (("train", train), ("val", val), ("test", test))}


def _stratified_cut(Y: np.ndarray, idx: np.ndarray, size: float, seed: int, splitter) -> tuple[np.ndarray, np.ndarray]:
    """Cut the rows ``idx`` of ``Y`` into (rest, part) with ``part`` about ``size`` of them."""
    sub = Y[idx]
    if sub.shape[1] == 0:  # no classes: nothing to stratify on
        sub = np.zeros((len(idx), 1), dtype=np.uint8)
    rest, part = next(splitter(n_splits=1, test_size=size, random_state=seed).split(np.zeros(len(idx)), sub))
    return idx[rest], idx[part]


def require_nonempty(splits: dict[str, list[Example]], path: Path | str, how: str) -> None:
    """Raise DatasetError naming ``path`` and the first empty split among train/val/test.

    ``how`` says how the splits were made (e.g. "split column 'fold'"), so the message can say what to
    change. Training needs train rows, model selection val rows and evaluation test rows.
    """
    for name in SPLIT_NAMES:
        if not splits.get(name):
            sizes = ", ".join(f"{s} {len(splits.get(s, []))}" for s in SPLIT_NAMES)
            raise DatasetError(f"{path}: split {name!r} is empty ({sizes}; {how}); every split needs rows: "
                               "add rows, or give a --split-column with train, val and test rows")
