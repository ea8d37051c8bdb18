"""Dataset registry, the examples/splits data model, and shared helpers for loaders.

A loader is one decorated class::

    @register("mydata")
    class MyData(DatasetLoader):
        modality = "text"; default_backbone = "minilm"
        layout = "..."; split_doc = "..."
        def load(self, data_dir, split_seed=44, split_mode="random", on_error="raise", **options): ...

``load`` returns a :class:`LoadedDataset`: class names, examples per split (an example's ``input``
is an image path or a text), the input files (for the cache fingerprint) and notes for the user.
"""

from __future__ import annotations

from ..errors import ConfigError, DatasetError  # noqa: F401  (DatasetError re-exported)

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np

DATASETS: dict[str, type["DatasetLoader"]] = {}
SPLIT_FRACTIONS = (0.6, 0.2, 0.2)
SPLIT_MODES = ("random", "paper-contiguous", "stratified")
LABEL_SEPARATORS = "|,;\t"
TRUE_WORDS, FALSE_WORDS = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


@dataclass(frozen=True)
class DatasetOption:
    """One dataset-specific option a loader declares in ``OPTIONS`` (name -> DatasetOption).

    Declared once, it becomes the ``mlhead embed --<name>`` flag (``_`` -> ``-``), is accepted as
    ``-D <name>=VALUE``, and is listed by ``mlhead datasets``. ``default`` is the loader's default (its
    type gives the option's: bool -> an on/off flag; otherwise text); ``choices`` restricts the values.
    """

    default: object = None
    help: str = ""
    choices: tuple[str, ...] | None = None

    @property
    def is_flag(self) -> bool:
        """True for on/off options (default ``True``/``False``)."""
        return isinstance(self.default, bool)

    def convert(self, value, flag: str):
        """``value`` (a string from ``-D``, or an already typed value) as this option's type.

        ``flag`` names the option in messages (``--voc-difficult`` or ``-D voc_difficult``). Raises
        :class:`ConfigError` for a value that is not a boolean word (on/off options) or not one of
        ``choices``.
        """
        if self.is_flag and isinstance(value, str):
            word = value.strip().lower()
            if word not in TRUE_WORDS + FALSE_WORDS:
                raise ConfigError(f"{flag} {value!r} invalid; valid: true, false")
            value = word in TRUE_WORDS
        if self.choices is not None and value not in self.choices:
            raise ConfigError(f"{flag} {value!r} invalid; valid: {', '.join(self.choices)}")
        return value


@dataclass
class Example:
    """One example: ``id`` unique within the dataset, ``input`` an image path or a text,
    ``labels`` class names, ``where`` the file:row it came from (for error messages)."""

    id: str
    input: str
    labels: list[str]
    where: str = ""


@dataclass
class LoadedDataset:
    """What a loader returns. ``features`` (modality "features" only): split -> (X N x D float32,
    Y N x C uint8, ids); ``skipped``: rows left out, as dicts {id, where, error}."""

    name: str
    modality: str
    classes: list[str]
    splits: dict[str, list[Example]]
    files: list[Path]
    split_mode: str
    split_seed: int | None
    options: dict = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    skipped: list[dict] = field(default_factory=list)
    features: dict | None = None
    #: folder name under the cache dir (default: ``name``); e.g. "mulan-emotions"
    cache_name: str | None = None

    def multi_hot(self, split: str) -> np.ndarray:
        """Labels of ``split`` as a multi-hot uint8 array N x C (column order = ``classes``)."""
        return multi_hot([e.labels for e in self.splits[split]], self.classes)

    def rows_without_labels(self) -> dict[str, int]:
        """Split -> number of examples with an empty label set (all-zero multi-hot rows)."""
        return {s: sum(not e.labels for e in examples) for s, examples in self.splits.items()}


class DatasetLoader:
    """Base class of dataset loaders (see module docstring)."""

    name: str = ""
    modality: str = "image"
    default_backbone: str = "mobilenetv2_100"
    layout: str = ""
    split_doc: str = "seeded 60/20/20 permutation (--split-seed, default 44)"
    #: dataset-specific options: name -> declaration (each is an ``mlhead embed --<name>`` flag)
    OPTIONS: dict[str, DatasetOption] = {}

    def load(self, data_dir: Path, split_seed: int = 44, split_mode: str = "random",
             on_error: str = "raise", **options) -> LoadedDataset:  # pragma: no cover - abstract
        raise NotImplementedError


def register(name: str) -> Callable[[type], type]:
    """Class decorator adding a :class:`DatasetLoader` subclass to :data:`DATASETS`."""

    def deco(cls):
        cls.name = name
        DATASETS[name] = cls
        return cls

    return deco


def get_loader(name: str) -> DatasetLoader:
    """Instantiate the loader registered as ``name``; unknown name -> DatasetError listing names."""
    if name not in DATASETS:
        raise DatasetError(f"unknown dataset {name!r}; available: {', '.join(sorted(DATASETS))}")
    return DATASETS[name]()


def check_options(name: str, options: dict, flags: dict[str, str] | None = None) -> dict:
    """Validate and type the dataset-specific ``options`` of dataset ``name`` against its ``OPTIONS``.

    ``options`` maps option name -> value (strings from ``-D KEY=VALUE`` or typed values). ``flags``
    maps an option name to the flag the user typed it as (default ``-D <name>``), for messages.
    Returns a new dict of typed values. Raises :class:`DatasetError` for an unknown dataset and
    :class:`ConfigError` for an option ``name`` does not declare (listing the ones it does) or a value
    its declaration rejects.
    """
    declared = get_loader(name).OPTIONS
    flags = flags or {}
    out = {}
    for key, value in options.items():
        flag = flags.get(key, f"-D {key}")
        if key not in declared:
            valid = ", ".join(f"--{k.replace('_', '-')}" for k in declared) or "none"
            raise ConfigError(f"{flag} is not an option of dataset {name!r}; its options: {valid} "
                              "(see `mlhead datasets`)")
        out[key] = declared[key].convert(value, flag)
    return out


def declared_options() -> dict[str, list[tuple[str, DatasetOption]]]:
    """Every declared dataset option: option name -> [(dataset name, declaration), ...], sorted by name."""
    out: dict[str, list[tuple[str, DatasetOption]]] = {}
    for dataset, cls in sorted(DATASETS.items()):
        for key, opt in cls.OPTIONS.items():
            out.setdefault(key, []).append((dataset, opt))
    return dict(sorted(out.items()))


def default_data_dir(name: str) -> Path:
    """``$MLHEAD_DATA_DIR/<name>`` if that exists, else ``$MLHEAD_DATA_DIR``, else ``./data/<name>``."""
    root = Path(os.environ.get("MLHEAD_DATA_DIR", "data"))
    return root / name if (root / name).exists() else root


def require_file(path: Path, what: str) -> Path:
    """Return ``path`` if it is a file, else raise DatasetError naming it."""
    if not Path(path).is_file():
        raise DatasetError(f"{what} not found: {path}")
    return Path(path)


def split_indices(n: int, seed: int, mode: str = "random",
                  fractions: Sequence[float] = SPLIT_FRACTIONS) -> dict[str, np.ndarray]:
    """Indices of the train/val/test split of ``n`` examples.

    ``random``: a seeded permutation (numpy default_rng(seed)) cut 60/20/20; each split keeps
    permutation order. ``paper-contiguous``: file order head/middle/tail, as the paper's code did.
    Sizes are floor(0.6n), floor(0.2n) and the rest. Raises DatasetError for an unknown mode and for
    ``stratified``, which needs the labels (:func:`apply_split`).
    """
    if mode not in SPLIT_MODES:
        raise DatasetError(f"unknown split mode {mode!r}; valid: {', '.join(SPLIT_MODES)}")
    if mode == "stratified":
        raise DatasetError("--split-mode stratified needs the labels: use apply_split(examples, ...)")
    order = np.arange(n) if mode == "paper-contiguous" else np.random.default_rng(seed).permutation(n)
    n_train, n_val = int(fractions[0] * n), int(fractions[1] * n)
    return {"train": order[:n_train], "val": order[n_train:n_train + n_val], "test": order[n_train + n_val:]}


def carve_val(examples: list[Example], seed: int, fraction: float = 0.2) -> tuple[list[Example], list[Example]]:
    """Split a fixed train set into (train, val) by a seeded permutation (val = floor(fraction*n))."""
    perm = np.random.default_rng(seed).permutation(len(examples))
    n_val = int(fraction * len(examples))
    return [examples[i] for i in sorted(perm[n_val:])], [examples[i] for i in sorted(perm[:n_val])]


def apply_split(examples: list[Example], seed: int, mode: str, where: str | Path = "") -> dict[str, list[Example]]:
    """:func:`split_indices` applied to a list of examples; ``stratified``: iterative multilabel
    stratification over the examples' labels (:func:`mlhead.datasets.splits.stratified_split`;
    ``where`` names the data in its error)."""
    if mode == "stratified":
        from .splits import stratified_split

        classes = sorted({c for e in examples for c in e.labels})
        return stratified_split(examples, classes, seed, where or "dataset")
    return {s: [examples[i] for i in idx] for s, idx in split_indices(len(examples), seed, mode).items()}


def parse_labels(raw: str | Iterable[str] | None, sep: str, where: str,
                 classes: Sequence[str] | None = None, allow_empty: bool = False) -> list[str]:
    """Parse one labels field into class names.

    ``raw`` is a string split on ``sep`` (whitespace around names stripped) or a list of names (a
    JSON list: names taken as given, whitespace stripped, no splitting). With ``allow_empty`` an empty
    or blank field, an empty list and None mean "no labels" (``[]``: an all-zero multi-hot row).
    Raises DatasetError naming ``where`` for: an empty field or list (without ``allow_empty``), an
    empty name (e.g. ``a||b``), a name in a string field containing another common separator (a wrong
    ``--label-sep``, or a class name holding a separator: write the field as a JSON list), a list
    element that is not a string or an integer, a value that is neither, or a name not in ``classes``
    (when given). Duplicates are dropped, order kept.
    """
    if not sep:
        raise DatasetError(f"{where}: empty label separator")
    if raw is None or (isinstance(raw, str) and not raw.strip()) or (isinstance(raw, (list, tuple)) and not raw):
        if allow_empty:
            return []
        raise DatasetError(f"{where}: empty labels " + ("list" if isinstance(raw, (list, tuple)) else "field"))
    names = _label_names(raw, sep, where)
    for name in names:
        if classes is not None and name not in classes:
            raise DatasetError(f"{where}: unknown label {name!r}; known: {', '.join(classes)}"
                               + _joined_class_hint(sep, classes))
    return list(dict.fromkeys(names))


def _label_names(raw, sep: str, where: str) -> list[str]:
    """The names of a non-empty labels field (see :func:`parse_labels`), each checked non-empty and,
    in a string field, free of the other common separators."""
    if isinstance(raw, str):
        names = [x.strip() for x in raw.split(sep)]
    elif isinstance(raw, (list, tuple)):
        bad = [x for x in raw if isinstance(x, bool) or not isinstance(x, (str, int))]
        if bad:
            raise DatasetError(f"{where}: label {bad[0]!r} in {raw!r} is not a name (expected strings)")
        names = [str(x).strip() for x in raw]
    else:
        raise DatasetError(f"{where}: labels field {raw!r} is neither a string nor a list of names")
    if any(not x for x in names):
        hint = f" (separator {sep!r})" if isinstance(raw, str) else ""
        raise DatasetError(f"{where}: empty label in {raw!r}{hint}")
    for name in names if isinstance(raw, str) else ():
        other = [c for c in LABEL_SEPARATORS if c != sep and c in name]
        if other:
            raise DatasetError(f"{where}: label {name!r} contains {other[0]!r}: wrong label separator "
                               f"(using {sep!r})? If {other[0]!r} is part of a class name, write the labels "
                               f"field as a JSON list, e.g. {json.dumps([name, 'other'])}")
    return names


def _joined_class_hint(sep: str, classes: Sequence[str]) -> str:
    """A hint when a known class name contains the separator (so the field was cut inside it)."""
    holding = [c for c in classes if sep in c]
    if not holding:
        return ""
    return (f" (class {holding[0]!r} contains the separator {sep!r}: write the labels field as a JSON list, "
            f"e.g. {json.dumps([holding[0]])})")


def multi_hot(label_lists: Sequence[Sequence[str]], classes: Sequence[str]) -> np.ndarray:
    """N x C uint8 multi-hot matrix; raises DatasetError for a label not in ``classes``."""
    index = {c: j for j, c in enumerate(classes)}
    out = np.zeros((len(label_lists), len(classes)), dtype=np.uint8)
    for i, labels in enumerate(label_lists):
        for name in labels:
            if name not in index:
                raise DatasetError(f"example {i}: unknown label {name!r}")
            out[i, index[name]] = 1
    return out


def handle_bad_row(on_error: str, skipped: list[dict], example_id: str, where: str, err: Exception) -> None:
    """``on_error='raise'`` re-raises ``err`` as DatasetError; ``'skip'`` records it in ``skipped``."""
    if on_error == "raise":
        raise err if isinstance(err, DatasetError) else DatasetError(f"{where}: {err}")
    skipped.append({"id": example_id, "where": where, "error": str(err)})


def file_list(paths: Iterable[Path]) -> list[Path]:
    """Sorted unique list of existing files (the fingerprint's input list)."""
    return sorted({Path(p) for p in paths if Path(p).is_file()})
