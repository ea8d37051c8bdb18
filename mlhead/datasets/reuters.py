"""Reuters-21578 (Distribution 1.0), ModApte split, the 90 topics with >= 1 train and >= 1 test doc."""

from __future__ import annotations

import html
import re
from pathlib import Path

from .base import (DatasetError, DatasetLoader, Example, LoadedDataset, carve_val, file_list, handle_bad_row,
                   parse_labels, register)

_DOC = re.compile(r"<REUTERS\b([^>]*)>(.*?)</REUTERS>", re.S | re.I)
_ATTR = re.compile(r'([A-Za-z_][\w-]*)\s*=\s*"([^"]*)"')
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")
_TAG = re.compile(r"<[^>]*>")


def _element(body: str, tag: str) -> str | None:
    m = re.search(rf"<{tag}\b[^>]*>(.*?)</{tag}>", body, re.S | re.I)
    return m.group(1) if m else None


def clean_text(raw: str | None) -> str:
    """SGML text -> plain text: tags removed, entities (&lt; &amp; &#N;) unescaped, control characters
    dropped, whitespace collapsed."""
    if not raw:
        return ""
    text = html.unescape(_TAG.sub(" ", raw))
    return " ".join(_CONTROL.sub(" ", text).split())


def parse_sgml(path: Path) -> list[dict]:
    """Documents of one ``reut2-*.sgm`` file (read as latin-1): dicts with ``id`` (NEWID), ``line``,
    ``attrs``, ``topics`` (list, order kept), ``title``, ``body``, ``text`` (TITLE + BODY, or the whole
    TEXT element with tags removed when it has neither, e.g. TYPE="UNPROC")."""
    data = path.read_text(encoding="latin-1")
    docs, line, pos = [], 1, 0
    for m in _DOC.finditer(data):
        line += data.count("\n", pos, m.start())
        pos = m.start()
        attrs = dict(_ATTR.findall(m.group(1)))
        body = m.group(2)
        topics_raw = _element(body, "TOPICS") or ""
        topics = [html.unescape(t).strip() for t in re.findall(r"<D>(.*?)</D>", topics_raw, re.S | re.I)]
        title, text_body = clean_text(_element(body, "TITLE")), clean_text(_element(body, "BODY"))
        text = " ".join(t for t in (title, text_body) if t) or clean_text(_element(body, "TEXT"))
        docs.append({"id": attrs.get("NEWID", ""), "line": line, "attrs": attrs, "topics": topics,
                     "title": title, "body": text_body, "text": text})
    return docs


@register("reuters21578")
class Reuters21578(DatasetLoader):
    """Reuters-21578 newswire, ModApte split, topic categories (multilabel text).

    Layout: ``<data-dir>/reut2-000.sgm … reut2-021.sgm`` (the SGML distribution, read as latin-1;
    each ``<REUTERS …>…</REUTERS>`` block parsed by regex, not as XML). Text = TITLE + " " + BODY
    with tags removed, ``&lt; &amp; &#N;`` unescaped, control characters dropped and whitespace
    collapsed (documents with neither TITLE nor BODY use the whole TEXT element). Labels = the
    ``<TOPICS><D>…</D></TOPICS>`` strings. Id = NEWID.

    Split (ModApte): ``TOPICS="YES"`` and ``LEWISSPLIT="TRAIN"`` -> train, ``LEWISSPLIT="TEST"`` ->
    test; documents with no topic are dropped. Classes = the topics with >= 1 train and >= 1 test
    document (90 on the real data). Topics outside those classes are removed from a document's
    label set, and a document left with no class is dropped (on the real data: 7,775 train and
    3,019 test documents have >= 1 topic; after the class filter 7,770 train and 3,019 test remain:
    5 train documents carry only topics that never occur in test; 59 kept documents lose some
    topics). Val is carved from the filtered train set by a seeded 20 % permutation
    (``--split-seed``); test is the ModApte test set.
    ``--split-mode`` does not apply (the split is fixed). The notes give all the counts.

    Not in the sigmoidF1 paper; a standard small real multilabel text benchmark.
    """

    modality = "text"
    default_backbone = "minilm"
    layout = "<data-dir>/reut2-000.sgm ... reut2-021.sgm (Reuters-21578 Distribution 1.0 SGML, latin-1)"
    split_doc = ("ModApte: TOPICS=YES & LEWISSPLIT=TRAIN -> train (val = seeded 20% of it, --split-seed), "
                 "LEWISSPLIT=TEST -> test; 90 topics with >= 1 train and >= 1 test document")
    OPTIONS = {}

    def load(self, data_dir, split_seed=44, split_mode="random", on_error="raise", **_):
        data_dir = Path(data_dir)
        files = _sgml_files(data_dir)
        parts, stats, skipped = _modapte_parts(files, on_error)
        if not parts["train"] or not parts["test"]:
            raise DatasetError(f"reuters21578: no ModApte train or test documents with topics in {data_dir} "
                               f"({len(parts['train'])} train, {len(parts['test'])} test)")
        with_topic = {s: len(v) for s, v in parts.items()}
        train_topics = {t for e in parts["train"] for t in e.labels}
        test_topics = {t for e in parts["test"] for t in e.labels}
        classes = sorted(train_topics & test_topics)
        filtered, n_stripped, n_dropped = _keep_classes(parts, set(classes))
        train, val = carve_val(filtered["train"], split_seed)
        splits = {"train": train, "val": val, "test": filtered["test"]}
        n_all = sum(len(v) for v in splits.values())
        card = sum(len(e.labels) for v in splits.values() for e in v) / n_all
        n_modapte = stats["modapte"]
        notes = [
            f"{stats['docs']} documents in {len(files)} files; ModApte: {n_modapte['train']} train / "
            f"{n_modapte['test']} test, with >= 1 topic: {with_topic['train']} / {with_topic['test']}",
            f"{len(classes)} classes = topics with >= 1 train and >= 1 test document "
            f"(of {len(train_topics | test_topics)} topics used)",
            f"class filter: {n_dropped['train']} train / {n_dropped['test']} test documents dropped (all their "
            f"topics outside the {len(classes)}); {n_stripped} kept documents lost some topics",
            f"split: {len(train)} train / {len(val)} val (seeded 20% of ModApte train) / "
            f"{len(filtered['test'])} test; label cardinality {card:.2f}",
        ]
        if skipped:
            notes.append(f"{len(skipped)} bad documents skipped")
        return LoadedDataset(
            name=self.name, modality=self.modality, classes=classes, splits=splits, files=file_list(files),
            split_mode="modapte", split_seed=split_seed, options={}, notes=notes, skipped=skipped)


def _sgml_files(data_dir: Path) -> list[Path]:
    """The ``reut2-*.sgm`` files of ``data_dir`` (sorted); DatasetError when the folder or files are absent."""
    if not data_dir.is_dir():
        raise DatasetError(f"reuters21578: data directory not found: {data_dir}")
    files = sorted(data_dir.glob("reut2-*.sgm"))
    if not files:
        raise DatasetError(f"reuters21578: no reut2-*.sgm files in {data_dir} (expected the SGML "
                           f"distribution: reut2-000.sgm ... reut2-021.sgm)")
    return files


def _modapte_parts(files: list[Path], on_error: str):
    """ModApte train/test documents with >= 1 topic: (parts, counts, skipped bad documents)."""
    parts: dict[str, list[Example]] = {"train": [], "test": []}
    stats = {"docs": 0, "modapte": {"train": 0, "test": 0}}
    skipped, seen = [], set()
    for path in files:
        for doc in parse_sgml(path):
            stats["docs"] += 1
            where = f"{path}:{doc['line']}"
            try:
                found = _modapte_example(doc, where, seen, stats["modapte"])
            except DatasetError as e:
                handle_bad_row(on_error, skipped, doc["id"], where, e)
                continue
            if found is not None:
                parts[found[0]].append(found[1])
    return parts, stats, skipped


def _modapte_example(doc: dict, where: str, seen: set, n_modapte: dict):
    """(split, Example) of one parsed document, None when outside ModApte or without topics.

    Records the id in ``seen`` and counts ModApte documents per split in ``n_modapte``; raises
    DatasetError for a missing/duplicate NEWID or an empty text."""
    attrs = doc["attrs"]
    split = {"TRAIN": "train", "TEST": "test"}.get(attrs.get("LEWISSPLIT", "").upper())
    if not doc["id"]:
        raise DatasetError(f"{where}: <REUTERS> without NEWID")
    if doc["id"] in seen:
        raise DatasetError(f"{where}: duplicate NEWID {doc['id']!r}")
    seen.add(doc["id"])
    if attrs.get("TOPICS", "").upper() != "YES" or split is None:
        return None
    n_modapte[split] += 1
    if not doc["topics"]:
        return None
    labels = parse_labels(doc["topics"], "|", where)
    if not doc["text"]:
        raise DatasetError(f"{where}: NEWID {doc['id']}: empty text (no TITLE, BODY or TEXT)")
    return split, Example(id=doc["id"], input=doc["text"], labels=labels, where=where)


def _keep_classes(parts: dict, keep: set):
    """Remove topics outside ``keep``; drop documents left with none: (filtered, n_stripped, n_dropped)."""
    filtered, n_stripped, n_dropped = {}, 0, {}
    for split, examples in parts.items():
        out = []
        for e in examples:
            labels = [t for t in e.labels if t in keep]
            n_stripped += len(labels) < len(e.labels)
            if labels:
                out.append(Example(id=e.id, input=e.input, labels=labels, where=e.where))
        filtered[split], n_dropped[split] = out, len(examples) - len(out)
    return filtered, n_stripped, n_dropped
