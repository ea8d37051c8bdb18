"""Property-based tests of the ``table`` reader (CSV / TSV / JSONL / Parquet): every generated file either
loads with exactly the generated texts, ids, labels (empty label sets included) and splits (and the right
classes), or fails with the one clear DatasetError it calls for; never another exception, never a wrong
label or split."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, assume, event, example, given, settings
from hypothesis import strategies as st

from mlhead.datasets import DatasetError, get_loader
from mlhead.datasets.base import LABEL_SEPARATORS

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# any character a UTF-8 file can hold (no surrogates); NUL included: csv and json both handle it
CHARS = st.characters(blacklist_categories=("Cs",))
TRICKY = st.sampled_from(['"', "'", ",", ";", "|", "\t", "\n", "\r", "\r\n", "\u2028", "\u2029", "\x85", "\x1c",
                          "\x0b", "\x0c", "\ufeff", "é", "日本", "🙂", " ", "\\", "\x00", '""', "#"])
TEXT = st.lists(st.one_of(st.text(CHARS, max_size=6), TRICKY), max_size=6).map("".join)
# a label name inside a separated string: stripped, non-empty, no common separator
PLAIN_LABEL = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters=LABEL_SEPARATORS),
                      min_size=1, max_size=8).map(str.strip).filter(bool)
# a label inside a JSON list may contain anything but surrounding whitespace
LIST_LABEL = st.text(CHARS, min_size=1, max_size=8).map(str.strip).filter(bool)
SEPS = ["|", ";", ",", "\t", "/", "::"]


SPLIT_SPELLINGS = {"train": ["train", "TRAIN", "Train", " train "], "val": ["val", "dev", "Valid", "VALIDATION", "Dev "],
                   "test": ["test", "Test", "TEST"]}
ENCODINGS = ["utf-8", "utf-16", "latin-1", "cp1252"]


def _load(path: Path, **options):
    return get_loader("table").load(path, text_column="text", **options)


def _write_table(folder: Path, fmt: str, header: list[str], rows: list[list], dialect: dict, bom: bool,
                 encoding: str = "utf-8") -> Path:
    if fmt == "parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        path = folder / "t.parquet"
        pq.write_table(pa.Table.from_pylist([dict(zip(header, r)) for r in rows]), path)
        return path
    if fmt == "jsonl":
        path = folder / "t.jsonl"
        body = "".join(json.dumps(dict(zip(header, r)), ensure_ascii=dialect["ascii"]) + dialect["nl"] for r in rows)
    else:
        path = folder / ("t.tsv" if fmt == "tsv" else "t.csv")
        buf = io.StringIO(newline="")
        w = csv.writer(buf, delimiter=dialect.get("delimiter", "\t" if fmt == "tsv" else ","),
                       quoting=dialect["quoting"], lineterminator=dialect["nl"])
        w.writerow(header)
        w.writerows(rows)
        body = buf.getvalue() + dialect.get("trailer", "")
    path.write_bytes((("\ufeff" if bom and encoding == "utf-8" else "") + body).encode(encoding))
    return path


def _hash_unit(seed: int, ex_id: str) -> float:
    """The documented split hash, written out independently of the library."""
    return int.from_bytes(hashlib.blake2b(f"{seed}:{ex_id}".encode(), digest_size=8).digest(), "big") / 2 ** 64


def _labels_cell(labels: list[str], sep: str, as_list: bool, null_for_empty: bool):
    if as_list:
        return None if not labels and null_for_empty else labels
    return sep.join(labels)


@st.composite
def tables(draw):
    fmt = draw(st.sampled_from(["csv", "csv;", "csv|", "tsv", "jsonl", "parquet"]))
    sep = draw(st.sampled_from(SEPS))
    as_list = fmt in ("jsonl", "parquet") and draw(st.booleans())
    # a string labels field "[...]" would be read as a JSON list (documented); keep plain names off that form
    label_st = LIST_LABEL if as_list else PLAIN_LABEL.filter(lambda s: sep not in s and not s.startswith("["))
    classes = draw(st.lists(label_st, min_size=1, max_size=5, unique=True))
    n = draw(st.integers(1, 20))
    nonblank = TEXT.map(lambda s: s if s.strip() else s + "x")
    texts = draw(st.lists(st.one_of(TEXT, *[nonblank] * 4) if draw(st.booleans()) else nonblank,
                          min_size=n, max_size=n))
    labels = [draw(st.lists(st.sampled_from(classes), min_size=0, max_size=3, unique=True)) for _ in range(n)]
    use_ids = draw(st.booleans())
    ids = [f"{x}#{i}" for i, x in enumerate(draw(st.lists(TEXT, min_size=n, max_size=n)))] if use_ids else None
    splits = None
    if draw(st.booleans()):
        good = st.sampled_from([x for v in SPLIT_SPELLINGS.values() for x in v])
        names = st.one_of(*[good] * 8, st.sampled_from(["training", "bogus", ""])) if draw(st.integers(0, 3)) == 0 \
            else good
        splits = draw(st.lists(names, min_size=n, max_size=n))
    nl = draw(st.sampled_from(["\r\n", "\n"]))
    delimiter = {"csv;": ";", "csv|": "|"}.get(fmt, "\t" if fmt == "tsv" else ",")
    dialect = {"quoting": draw(st.sampled_from([csv.QUOTE_MINIMAL, csv.QUOTE_ALL, csv.QUOTE_NONNUMERIC])),
               "nl": nl, "ascii": draw(st.booleans()), "trailer": draw(st.sampled_from(["", nl, nl + nl])),
               "delimiter": delimiter}
    header = (["id"] if use_ids else []) + ["text", "labels"] + (["split"] if splits else []) \
        + (["extra"] if draw(st.booleans()) else [])
    null_for_empty = draw(st.booleans())
    rows = []
    for i in range(n):
        row = ([ids[i]] if use_ids else []) + [texts[i], _labels_cell(labels[i], sep, as_list, null_for_empty)]
        rows.append(row + ([splits[i]] if splits else []) + ([draw(TEXT)] if "extra" in header else []))
    return {"fmt": fmt, "sep": sep, "header": header, "rows": rows, "dialect": dialect, "bom": draw(st.booleans()),
            "texts": texts, "labels": labels, "ids": ids, "splits": splits, "given_classes": draw(st.booleans()),
            "classes": classes, "on_error": draw(st.sampled_from(["raise", "skip"])),
            "encoding": draw(st.sampled_from(ENCODINGS)), "give_delimiter": draw(st.booleans()),
            "seed": draw(st.sampled_from([0, 44]))}


def _expected(t: dict, known: list[str] | None) -> tuple[str | None, dict]:
    """What the loader must do with table ``t``: (a phrase its DatasetError contains, or None) and, when it
    loads, the expected {split: [row index, ...]} in file order, the bad rows and the classes."""
    from mlhead.datasets.splits import normalize_split_name

    n = len(t["texts"])
    bad = [i for i in range(n) if not t["texts"][i].strip()
           or (t["splits"] and normalize_split_name(t["splits"][i]) is None)]
    if bad and t["on_error"] == "raise":
        return "", {}
    keep = [i for i in range(n) if i not in bad]
    if not keep:
        return "no usable rows", {}
    classes = known or sorted({c for i in keep for c in t["labels"][i]})
    if not classes:
        return "no row has a label", {}
    ids = [t["ids"][i] if t["ids"] else str(i) for i in range(n)]
    u = {i: _hash_unit(t["seed"], ids[i]) for i in keep}
    if t["splits"]:
        parts = {s: [i for i in keep if normalize_split_name(t["splits"][i]) == s] for s in ("train", "val", "test")}
        if not parts["val"] and parts["train"]:
            parts["val"] = [i for i in parts["train"] if u[i] < 0.2]
            parts["train"] = [i for i in parts["train"] if u[i] >= 0.2]
    else:
        parts = {"train": [i for i in keep if u[i] < 0.6], "val": [i for i in keep if 0.6 <= u[i] < 0.8],
                 "test": [i for i in keep if u[i] >= 0.8]}
    empty = [s for s in ("train", "val", "test") if not parts[s]]
    if empty:
        return f"split {empty[0]!r} is empty", {}
    return None, {"parts": parts, "bad": bad, "classes": classes, "ids": ids}


def _options(t: dict) -> tuple[dict, list[str] | None]:
    options = dict(label_sep=t["sep"], id_column="id" if t["ids"] else None, on_error=t["on_error"],
                   split_seed=t["seed"], split_column="split" if t["splits"] else None)
    if t["fmt"] not in ("jsonl", "parquet") or t["encoding"] != "utf-8":
        options["encoding"] = t["encoding"]
    if t["give_delimiter"] and t["fmt"].startswith("csv"):
        options["delimiter"] = t["dialect"]["delimiter"]
    known = None
    if t["given_classes"]:
        unused = "never-used"
        while unused in t["classes"]:
            unused += "_"
        known = list(reversed(t["classes"])) + [unused]
        options["classes"] = known
    return options, known


def _encodable(t: dict) -> bool:
    try:
        json.dumps(t["rows"]).encode(t["encoding"]) if t["encoding"] in ("utf-8", "utf-16") else \
            "".join(str(c) for r in t["rows"] for c in r).encode(t["encoding"])
    except UnicodeEncodeError:
        return False
    return True


@SETTINGS
@given(t=tables())
@example(t={"fmt": "csv", "sep": "|", "header": ["text", "labels"], "rows": [["foo\u2028bar", "cat|dog"], ["x", "dog"]],
            "dialect": {"quoting": csv.QUOTE_MINIMAL, "nl": "\n", "ascii": False, "trailer": ""}, "bom": True,
            "texts": ["foo\u2028bar", "x"], "labels": [["cat", "dog"], ["dog"]], "ids": None, "splits": None,
            "given_classes": False, "classes": ["cat", "dog"], "on_error": "raise", "encoding": "utf-8",
            "give_delimiter": False, "seed": 44})
@example(t={"fmt": "jsonl", "sep": "|", "header": ["text", "labels"], "rows": [["a\u2028b\x85c", ["Sci-Fi, Fantasy"]]],
            "dialect": {"quoting": 0, "nl": "\n", "ascii": False, "trailer": ""}, "bom": False,
            "texts": ["a\u2028b\x85c"], "labels": [["Sci-Fi, Fantasy"]], "ids": None, "splits": None,
            "given_classes": False, "classes": ["Sci-Fi, Fantasy"], "on_error": "raise", "encoding": "utf-8",
            "give_delimiter": False, "seed": 44})
@example(t={"fmt": "csv;", "sep": "|", "header": ["text", "labels", "split"],
            "rows": [["a", "", "TRAIN"], ["b", "x", "Test"], ["c", "x|y", "train"], ["d", "", "dev"]],
            "dialect": {"quoting": csv.QUOTE_MINIMAL, "nl": "\n", "ascii": False, "trailer": "", "delimiter": ";"},
            "bom": False, "texts": ["a", "b", "c", "d"], "labels": [[], ["x"], ["x", "y"], []], "ids": None,
            "splits": ["TRAIN", "Test", "train", "dev"], "given_classes": False, "classes": ["x", "y"],
            "on_error": "raise", "encoding": "cp1252", "give_delimiter": False, "seed": 44})
def test_generated_table_loads_exactly_or_fails_clearly(t):
    """Random tables (CSV with , ; | delimiters sniffed or given, TSV, JSONL, Parquet; UTF-8/16, latin-1,
    cp1252; empty label sets; split columns with odd spellings) load to exactly their rows, or fail with
    the one DatasetError the table calls for, naming the file."""
    if not _encodable(t):
        t = {**t, "encoding": "utf-8"}
    with tempfile.TemporaryDirectory() as d:
        path = _write_table(Path(d), t["fmt"].rstrip(";|"), t["header"], t["rows"], t["dialect"], t["bom"],
                            t["encoding"])
        options, known = _options(t)
        error, want = _expected(t, known)
        try:
            data = _load(path, **options)
        except DatasetError as e:
            assert error is not None, f"unexpected DatasetError: {e}"
            assert error in str(e) and str(path) in str(e)
            event(f"error: {error or 'bad row'}")
            return
        event(f"loaded {t['fmt']}")
        assert error is None, f"loaded, but expected a DatasetError with {error!r}"
        ids = want["ids"]
        for split, idx in want["parts"].items():
            got = data.splits[split]
            assert [e.id for e in got] == [ids[i] for i in idx], split
            assert [e.input for e in got] == [t["texts"][i] for i in idx]
            assert [e.labels for e in got] == [t["labels"][i] for i in idx]
        assert data.classes == want["classes"]
        assert [s["id"] for s in data.skipped] == [ids[i] for i in want["bad"]]
        for split in data.splits:
            Y = data.multi_hot(split)
            assert Y.shape == (len(data.splits[split]), len(data.classes))
            for row, e in zip(Y, data.splits[split]):
                assert [data.classes[j] for j in row.nonzero()[0]] == sorted(e.labels, key=data.classes.index)
        assert data.rows_without_labels() == {s: int((data.multi_hot(s).sum(1) == 0).sum()) for s in data.splits}


@SETTINGS
@given(labels=st.lists(st.lists(PLAIN_LABEL.filter(lambda s: "\n" not in s and "\r" not in s),  # one line per row
                                min_size=1, max_size=3, unique=True), min_size=1, max_size=6),
       pair=st.permutations(["|", ";", ",", "\t"]).map(lambda p: p[:2]), fmt=st.sampled_from(["csv", "jsonl"]))
def test_wrong_label_separator_is_one_clear_error(labels, pair, fmt):
    used, given_sep = pair
    assume(any(len(x) > 1 for x in labels))
    with tempfile.TemporaryDirectory() as d:
        rows = [[f"text {i}", used.join(x)] for i, x in enumerate(labels)]
        path = _write_table(Path(d), fmt, ["text", "labels"], rows,
                            {"quoting": csv.QUOTE_MINIMAL, "nl": "\n", "ascii": True}, False)
        with pytest.raises(DatasetError, match="wrong label separator") as e:
            _load(path, label_sep=given_sep)
        first_bad = next(i for i, x in enumerate(labels) if len(x) > 1)
        line = first_bad + (2 if fmt == "csv" else 1)
        assert f"{path}:{line}:" in str(e.value)


@SETTINGS
@given(body=st.lists(st.one_of(TEXT, st.sampled_from(['"', '""', '"a,b"', ",", "\n", "{", "}", '{"text": ',
                                                      '"labels": [', "]", "null", "1"])), max_size=20).map("".join),
       fmt=st.sampled_from(["csv", "tsv", "jsonl"]), header=st.sampled_from(["text,labels\n", "text\tlabels\n", ""]),
       on_error=st.sampled_from(["raise", "skip"]))
def test_arbitrary_content_never_crashes(body, fmt, header, on_error):
    """Garbage in: a DatasetError or a load whose every example has a non-empty text and known labels."""
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / f"t.{fmt}"
        path.write_text(header + body, encoding="utf-8")
        try:
            data = _load(path, on_error=on_error)
        except DatasetError:
            return
        for examples in data.splits.values():
            for e in examples:
                assert e.input.strip() and set(e.labels) <= set(data.classes)
                assert all(x == x.strip() and x for x in e.labels)


@pytest.mark.parametrize("raw,needle", [
    ('{"text": "a", "labels": 5}', "neither a string nor a list"),
    ('{"text": "a", "labels": [null, "x"]}', "not a name"),
    ('{"text": "a", "labels": [""]}', "empty label"),
    ('{"text": "a", "labels": {"x": 1}}', "neither a string nor a list"),
    ('{"text": ["a"], "labels": ["x"]}', "holds a JSON list"),
    ('{"labels": ["x"]}', "no 'text' in this row"),
    ('[1, 2]', "expected a JSON object"),
    ('{"text": "a", "labels": ["x"]', "invalid JSON"),
])
def test_jsonl_bad_rows_are_dataset_errors_and_skippable(tmp_path, raw, needle):
    path = tmp_path / "t.jsonl"
    good = "".join(json.dumps({"text": "ok", "labels": ["y"], "split": s}) + "\n" for s in ("val", "test"))
    path.write_text('{"text": "ok", "labels": ["y"], "split": "train"}\n' + raw + "\n" + good)
    with pytest.raises(DatasetError, match=needle) as e:
        _load(path, split_column="split")
    assert f"{path}:2:" in str(e.value)
    data = _load(path, on_error="skip", split_column="split")
    assert [s["where"] for s in data.skipped] == [f"{path}:2"] and data.classes == ["y"]


def test_csv_ragged_rows_duplicate_ids_and_header(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text('id,text,labels,split\n1,"multi\nline",a,train\n2,too,many,fields,x\n3,few\n1,dup,b,val\n'
                    '4,fine,b,test\n5,ok,,val\n')
    with pytest.raises(DatasetError, match=r"t.csv:4: 5 fields but the header has 4"):
        _load(path, id_column="id", split_column="split")
    data = _load(path, id_column="id", on_error="skip", split_column="split")
    assert sorted(e.id for s in data.splits.values() for e in s) == ["1", "4", "5"]
    assert [s["where"].rsplit(":", 1)[1] for s in data.skipped] == ["4", "5", "6"]
    assert "already used at" in data.skipped[-1]["error"] and data.classes == ["a", "b"]
    (tmp_path / "h.csv").write_text("text,labels,text\nx,a,y\n")
    with pytest.raises(DatasetError, match="duplicate column names"):
        _load(tmp_path / "h.csv")
    (tmp_path / "q.csv").write_text('text,labels\n"unterminated,a\n')
    with pytest.raises(DatasetError, match="malformed CSV|fields but the header"):
        _load(tmp_path / "q.csv")
    (tmp_path / "b.csv").write_bytes(b"text,labels\nok,a\n\xff\xfe,a\n")
    with pytest.raises(DatasetError, match=r"b\.csv:3: not UTF-8 .*--encoding"):
        _load(tmp_path / "b.csv")


def test_long_field_and_option_validation(tmp_path):
    path = tmp_path / "t.csv"
    long_text = "word " * 60000  # 300 kB: past csv's default field limit
    path.write_text(f'text,labels,split\n"{long_text}",a,test\nx,a,train\ny,a,val\n')
    assert _load(path, split_column="split").splits["test"][0].input == long_text
    with pytest.raises(DatasetError, match="--label-sep"):
        _load(path, label_sep="")
    with pytest.raises(DatasetError, match="empty class name"):
        _load(path, classes="a,,b")
    with pytest.raises(DatasetError, match="more than once"):
        _load(path, classes="a,b,a")
