"""Pascal VOC 2007 (sigmoidF1 paper, Table 1): image-level presence of the 20 VOC object classes."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

from .base import (DatasetError, DatasetLoader, DatasetOption, Example, LoadedDataset, apply_split, carve_val, file_list,
                   handle_bad_row, register)

VOC_CLASSES = ("aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
               "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train",
               "tvmonitor")
DIFFICULT_POLICIES = ("positive", "ignore", "negative")
SOURCES = ("auto", "xml", "lists")
SETS = ("trainval", "test")


def find_root(data_dir: Path) -> Path:
    """The ``VOC2007`` folder: ``data_dir`` itself, ``data_dir/VOC2007`` or ``data_dir/VOCdevkit/VOC2007``
    (the first holding ``Annotations/`` or ``ImageSets/Main/``)."""
    for cand in (data_dir, data_dir / "VOC2007", data_dir / "VOCdevkit" / "VOC2007"):
        if (cand / "Annotations").is_dir() or (cand / "ImageSets" / "Main").is_dir():
            return cand
    raise DatasetError(f"voc2007: no VOC2007 folder (with Annotations/ or ImageSets/Main/) at {data_dir}, "
                       f"{data_dir / 'VOC2007'} or {data_dir / 'VOCdevkit' / 'VOC2007'}")


def read_id_list(path: Path) -> list[str]:
    """Image ids of an ImageSets list (one per line; a second column, if any, is ignored)."""
    with open(path, encoding="utf-8") as fh:
        return [line.split()[0] for line in fh if line.strip()]


def parse_annotation(path: Path) -> tuple[str | None, dict[str, bool]]:
    """(``<filename>`` or None, {class: has a non-difficult object}) of one VOC XML annotation.
    A class whose objects are all ``difficult=1`` maps to False. Raises DatasetError naming the file."""
    try:
        root = ET.parse(path).getroot()
    except (ET.ParseError, OSError) as e:
        raise DatasetError(f"{path}: unreadable XML annotation ({e})") from None
    present: dict[str, bool] = {}
    for n, obj in enumerate(root.iter("object")):
        name = (obj.findtext("name") or "").strip()
        if name not in VOC_CLASSES:
            raise DatasetError(f"{path}: object {n}: class {name!r} is not one of the 20 VOC classes")
        diff = (obj.findtext("difficult") or "0").strip()
        if diff not in ("0", "1"):
            raise DatasetError(f"{path}: object {n}: <difficult> {diff!r} is not 0 or 1")
        present[name] = present.get(name, False) or diff == "0"
    filename = (root.findtext("filename") or "").strip() or None
    return filename, present


def read_class_lists(main: Path, image_set: str) -> tuple[dict[str, dict[str, int]], list[tuple[str, str]], list[Path]]:
    """The official per-class lists ``<class>_<image_set>.txt`` ("<id> <1|-1|0>"): ({id: {class: value}},
    errors as (id, "file:line: message"), the files). Raises DatasetError if a class file is missing."""
    values: dict[str, dict[str, int]] = {}
    errors, files = [], []
    for cls in VOC_CLASSES:
        path = main / f"{cls}_{image_set}.txt"
        if not path.is_file():
            raise DatasetError(f"voc2007: per-class list not found: {path} (expected <class>_{image_set}.txt "
                               f"for all 20 classes)")
        files.append(path)
        with open(path, encoding="utf-8") as fh:
            for line_no, line in enumerate(fh, start=1):
                parts = line.split()
                if not parts:
                    continue
                if len(parts) != 2 or parts[1] not in ("1", "-1", "0"):
                    errors.append((parts[0], f"{path}:{line_no}: expected '<id> <1|-1|0>', got {line.strip()!r}"))
                    continue
                row = values.setdefault(parts[0], {})
                if cls in row:
                    errors.append((parts[0], f"{path}:{line_no}: image {parts[0]} listed twice"))
                row[cls] = int(parts[1])
    return values, errors, files


def _truthy(value) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "yes", "on")
    return bool(value)


@register("voc2007")
class Voc2007(DatasetLoader):
    """Pascal VOC 2007, 20 classes, image-level labels (multilabel image).

    Layout (``--data-dir`` = the folder holding ``VOC2007/``, ``VOCdevkit/VOC2007/``, or ``VOC2007/``
    itself)::

        VOC2007/Annotations/<id>.xml      # XML labels (used when present; -D source=xml)
        VOC2007/JPEGImages/<id>.jpg
        VOC2007/ImageSets/Main/trainval.txt, test.txt
        VOC2007/ImageSets/Main/<class>_{trainval,test}.txt   # "<id> <1|-1|0>" (-D source=lists)

    Labels: with ``Annotations/``, an image is positive for a class when it has an object of that
    class; otherwise the official per-class lists are read (1 present, -1 absent, 0 only difficult
    objects). ``-D source=auto|xml|lists`` forces one. Input = ``JPEGImages/<id>.jpg``. The loader
    only checks that image files exist (a corrupt or truncated JPEG, such as 000001.jpg in the
    shared 5-image sample, is the embed stage's ``--on-error`` business). Without ``JPEGImages/``
    (the shared copy has only the lists) loading raises DatasetError unless ``labels_only=True``,
    which keeps the expected paths as inputs (for counting; embedding would fail).

    ``--voc-difficult`` for a class whose objects in an image are all ``difficult=1`` (list value 0):

    * ``positive`` (default): the class is present. Matches the paper: average label count 1.560
      over the 9,963 images counts these pairs.
    * ``negative``: the class is absent.
    * ``ignore``: labels stay multi-hot {0,1}, so the pair is stored as 0 (absent) in the labels,
      and every such (image id, class) pair is listed in ``options["ignored_pairs"]`` ({split:
      [[id, class], ...]}, saved with the cache) so that a loss or metric can mask it; the notes
      give the count. No image is dropped.

    Images whose every object is difficult get an empty label set under ``negative``/``ignore``;
    they are kept (all-zero rows).

    Split: the official ``trainval`` / ``test`` (from ``trainval.txt``/``test.txt`` with XML, from
    the per-class lists otherwise); val = a seeded 20 % of trainval (``--split-seed``). When the two
    lists are missing or overlap (the shared 5-image sample lists 000001-000005 in both) they are no
    split, so a seeded 60/20/20 permutation (``--split-mode``) of all images is used instead (note).

    Differs from the paper: the shared copy has labels for all 9,963 images but only 5 JPEGs; the
    paper's exact split of VOC into train/val/test is unknown (here: official trainval/test).
    """

    modality = "image"
    default_backbone = "tresnet_m"
    layout = ("<data-dir>/[VOCdevkit/]VOC2007/{Annotations/<id>.xml, JPEGImages/<id>.jpg, "
              "ImageSets/Main/trainval.txt+test.txt} or ImageSets/Main/<class>_{trainval,test}.txt "
              "('<id> <1|-1|0>'); labels_only=True loads labels without images")
    split_doc = ("official trainval/test; val = seeded 20% of trainval (--split-seed); seeded 60/20/20 when "
                 "trainval.txt/test.txt are missing or overlap")
    OPTIONS = {
        "voc_difficult": DatasetOption("positive", "objects marked difficult: positive | ignore (stored as 0, "
                                                   "pairs listed in the dataset options) | negative",
                                       choices=DIFFICULT_POLICIES),
        "labels_only": DatasetOption(False, "load labels even when JPEGImages/ is absent (inputs are expected "
                                            "paths)"),
        "source": DatasetOption("auto", "labels from: auto (XML if Annotations/ exists, else per-class lists) | "
                                        "xml | lists", choices=SOURCES),
    }

    def load(self, data_dir, split_seed=44, split_mode="random", on_error="raise", voc_difficult="positive",
             labels_only=False, source="auto", **_):
        labels_only = _truthy(labels_only)
        root, source = _resolve_source(Path(data_dir), voc_difficult, source, labels_only)
        main, images = root / "ImageSets" / "Main", root / "JPEGImages"
        skipped: list[dict] = []
        reader = self._from_xml if source == "xml" else self._from_lists
        sets, why, files = reader(root, main, on_error, skipped)
        # sets: {"trainval": rows, "test": rows} or {"all": rows}; row = (id, where, filename, present)
        # with present = {class: True if a non-difficult object, False if only difficult ones}
        policy = _DifficultPolicy(voc_difficult)
        examples, n_missing = {}, 0
        for set_name, rows in sets.items():
            examples[set_name], missing = _set_examples(rows, images, labels_only, policy, on_error, skipped)
            n_missing += missing
            if not labels_only:
                files += [Path(e.input) for e in examples[set_name]]
        if not any(examples.values()):
            raise DatasetError(f"voc2007: no usable images under {root} ({len(skipped)} skipped)")
        notes = [f"labels from {'XML annotations' if source == 'xml' else 'the official per-class lists'} "
                 f"in {root}" + (" (labels only: image files not checked)" if labels_only else "")]
        splits, used_mode = _voc_splits(examples, why, split_seed, split_mode, notes)
        notes += _voc_notes(splits, policy, n_missing)
        options = {"voc_difficult": voc_difficult, "labels_only": labels_only, "source": source}
        if voc_difficult == "ignore":
            options["ignored_pairs"] = _regroup(policy.ignored, splits)
        return LoadedDataset(
            name=self.name, modality=self.modality, classes=list(VOC_CLASSES), splits=splits,
            files=file_list(files), split_mode=used_mode, split_seed=split_seed, options=options,
            notes=notes, skipped=skipped)

    # ------------------------------------------------------------------ label sources

    @staticmethod
    def _official_order(main: Path, found: dict[str, list[str]]) -> tuple[dict[str, list[str]], str]:
        """Id order per set and why there is no official split ("" when there is one).
        ``found``: ids per set as read from the label source (list order), completing the id lists."""
        listed = {s: read_id_list(main / f"{s}.txt") for s in SETS if (main / f"{s}.txt").is_file()}
        order = {s: list(dict.fromkeys(listed.get(s, []) + found.get(s, []))) for s in SETS}
        if set(order["trainval"]) & set(order["test"]):
            why = "overlap"
        elif not (order["trainval"] and order["test"]):
            why = "missing"
        else:
            return order, ""
        return {"all": list(dict.fromkeys(order["trainval"] + order["test"] + found.get("all", [])))}, why

    def _from_xml(self, root: Path, main: Path, on_error: str, skipped: list):
        ann = root / "Annotations"
        listed_any = any((main / f"{s}.txt").is_file() for s in SETS)
        order, why = self._official_order(main, {} if listed_any else
                                          {"all": sorted(p.stem for p in ann.glob("*.xml"))})
        files = [main / f"{s}.txt" for s in SETS]
        sets: dict = {}
        for set_name, ids in order.items():
            rows = []
            for ex_id in ids:
                path = ann / f"{ex_id}.xml"
                try:
                    if not path.is_file():
                        raise DatasetError(f"{path}: annotation not found (image {ex_id} is listed in "
                                           f"{main})")
                    filename, present = parse_annotation(path)
                except DatasetError as e:
                    handle_bad_row(on_error, skipped, ex_id, str(path), e)
                    continue
                files.append(path)
                rows.append((ex_id, str(path), filename, present))
            sets[set_name] = rows
        return sets, why, files

    def _from_lists(self, root: Path, main: Path, on_error: str, skipped: list):
        if not main.is_dir():
            raise DatasetError(f"voc2007: {main} not found (need Annotations/ or the per-class lists)")
        values, errors, files = {}, {}, [main / f"{s}.txt" for s in SETS]
        for set_name in SETS:
            vals, errs, set_files = read_class_lists(main, set_name)
            files += set_files
            values[set_name] = vals
            for ex_id, msg in errs:
                errors.setdefault((set_name, ex_id), msg)
        found = {s: list(values[s]) + [i for (t, i) in errors if t == s] for s in SETS}
        order, why = self._official_order(main, found)
        sets: dict = {}
        for set_name, ids in order.items():
            rows = []
            for ex_id in ids:
                src = [s for s in SETS if ex_id in values[s]] if set_name == "all" else [set_name]
                src = src[0] if src else set_name
                where = f"{main}/<class>_{src}.txt: image {ex_id}"
                row = values.get(src, {}).get(ex_id, {})
                missing = [c for c in VOC_CLASSES if c not in row]
                try:
                    if (src, ex_id) in errors:
                        raise DatasetError(errors[(src, ex_id)])
                    if missing:
                        raise DatasetError(f"{where}: not in the lists of {', '.join(missing)}")
                except DatasetError as e:
                    handle_bad_row(on_error, skipped, ex_id, where, e)
                    continue
                rows.append((ex_id, where, None, {c: v == 1 for c, v in row.items() if v != -1}))
            sets[set_name] = rows
        return sets, why, files


def _regroup(pairs: list[list[str]], splits: dict[str, list[Example]]) -> dict[str, list[list[str]]]:
    """Ignored (id, class) pairs grouped by the split their image ended up in."""
    where = {e.id: s for s, exs in splits.items() for e in exs}
    out: dict[str, list[list[str]]] = {s: [] for s in splits}
    for ex_id, cls in pairs:
        if ex_id in where:
            out[where[ex_id]].append([ex_id, cls])
    return out


def _resolve_source(data_dir: Path, voc_difficult: str, source: str, labels_only: bool) -> tuple[Path, str]:
    """Validate the options; the VOC2007 root and the label source (``xml`` or ``lists``).

    Raises DatasetError for an invalid option, an absent folder, or absent images (unless labels_only)."""
    if voc_difficult not in DIFFICULT_POLICIES:
        raise DatasetError(f"voc2007: --voc-difficult {voc_difficult!r} invalid; valid: "
                           f"{', '.join(DIFFICULT_POLICIES)}")
    if source not in SOURCES:
        raise DatasetError(f"voc2007: --source {source} invalid; valid: {', '.join(SOURCES)}")
    if not data_dir.is_dir():
        raise DatasetError(f"voc2007: data directory not found: {data_dir}")
    root = find_root(data_dir)
    if source == "auto":
        source = "xml" if (root / "Annotations").is_dir() else "lists"
    images = root / "JPEGImages"
    if not labels_only and not images.is_dir():
        raise DatasetError(f"voc2007: images absent: {images} not found ({source} labels only). Provide "
                           f"the VOC2007 JPEGs there, or pass labels_only=True to load labels without images "
                           f"(embedding needs the images)")
    return root, source


class _DifficultPolicy:
    """Applies ``--voc-difficult`` to one image's classes; counts and (for ``ignore``) lists the pairs."""

    def __init__(self, policy: str):
        self.policy, self.n_pairs, self.ignored = policy, 0, []

    def labels(self, ex_id: str, present: dict) -> list[str]:
        difficult_only = [c for c in VOC_CLASSES if present.get(c) is False]
        self.n_pairs += len(difficult_only)
        if self.policy == "ignore":
            self.ignored += [[ex_id, c] for c in difficult_only]
        return [c for c in VOC_CLASSES if present.get(c) or (c in present and self.policy == "positive")]


def _set_examples(rows, images: Path, labels_only: bool, policy: _DifficultPolicy, on_error: str,
                  skipped: list) -> tuple[list[Example], int]:
    """Examples of one image set (and how many images were missing: bad rows under ``on_error``)."""
    out, n_missing = [], 0
    for ex_id, where, filename, present in rows:
        image = images / (filename or f"{ex_id}.jpg")
        if not labels_only and not image.is_file():
            n_missing += 1
            handle_bad_row(on_error, skipped, ex_id, where, DatasetError(f"{where}: image not found: {image}"))
            continue
        out.append(Example(id=ex_id, input=str(image), labels=policy.labels(ex_id, present), where=where))
    return out, n_missing


def _voc_splits(examples: dict, why: str, split_seed: int, split_mode: str, notes: list):
    """(splits, split mode used): official trainval/test with a seeded val, else a seeded permutation."""
    if why:
        notes.append(f"ImageSets/Main/trainval.txt and test.txt {why}: not a train/test split, so a seeded "
                     f"60/20/20 permutation of all {len(examples['all'])} images is used")
        return apply_split(examples["all"], split_seed, split_mode), split_mode
    train, val = carve_val(examples["trainval"], split_seed)
    return {"train": train, "val": val, "test": examples["test"]}, "official"


def _voc_notes(splits: dict, policy: _DifficultPolicy, n_missing: int) -> list[str]:
    notes = []
    for name, exs in splits.items():
        card = sum(len(e.labels) for e in exs) / len(exs) if exs else 0.0
        notes.append(f"{name}: {len(exs)} images, label cardinality {card:.2f}")
    notes.append(f"{policy.n_pairs} (image, class) pairs with only difficult objects: treated as {policy.policy}"
                 + (" (stored as 0, listed in options['ignored_pairs'])" if policy.policy == "ignore" else ""))
    if n_missing:
        notes.append(f"{n_missing} images skipped: file not found")
    return notes
