"""Property-based tests of the ``table`` reader (CSV / TSV / JSONL): every generated file either loads
with exactly the generated texts, ids and labels (and the right classes), or fails with one clear
DatasetError; never another exception, never a wrong label."""

from __future__ import annotations

import csv
import io
import json
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, assume, example, given, settings
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


def _load(path: Path, **options):
    return get_loader("table").load(path, text_column="text", **options)


def _write_table(folder: Path, fmt: str, header: list[str], rows: list[list], dialect: dict, bom: bool) -> Path:
    if fmt == "jsonl":
        path = folder / "t.jsonl"
        body = "".join(json.dumps(dict(zip(header, r)), ensure_ascii=dialect["ascii"]) + dialect["nl"] for r in rows)
    else:
        path = folder / ("t.tsv" if fmt == "tsv" else "t.csv")
        buf = io.StringIO(newline="")
        w = csv.writer(buf, delimiter="\t" if fmt == "tsv" else ",", quoting=dialect["quoting"],
                       lineterminator=dialect["nl"])
        w.writerow(header)
        w.writerows(rows)
        body = buf.getvalue() + dialect.get("trailer", "")
    path.write_bytes((("\ufeff" if bom else "") + body).encode("utf-8"))
    return path


@st.composite
def tables(draw):
    fmt = draw(st.sampled_from(["csv", "tsv", "jsonl"]))
    sep = draw(st.sampled_from(SEPS))
    as_list = fmt == "jsonl" and draw(st.booleans())
    label_st = LIST_LABEL if as_list else PLAIN_LABEL.filter(lambda s: sep not in s)
    classes = draw(st.lists(label_st, min_size=1, max_size=5, unique=True))
    n = draw(st.integers(1, 8))
    texts = draw(st.lists(TEXT, min_size=n, max_size=n))
    labels = [draw(st.lists(st.sampled_from(classes), min_size=1, max_size=3, unique=True)) for _ in range(n)]
    use_ids = draw(st.booleans())
    ids = draw(st.lists(TEXT.filter(lambda s: s.strip()), min_size=n, max_size=n, unique=True)) if use_ids else None
    nl = draw(st.sampled_from(["\r\n", "\n"]))
    dialect = {"quoting": draw(st.sampled_from([csv.QUOTE_MINIMAL, csv.QUOTE_ALL, csv.QUOTE_NONNUMERIC])),
               "nl": nl, "ascii": draw(st.booleans()), "trailer": draw(st.sampled_from(["", nl, nl + nl]))}
    header = (["id"] if use_ids else []) + ["text", "labels"] + (["extra"] if draw(st.booleans()) else [])
    rows = []
    for i in range(n):
        lab = labels[i] if as_list else sep.join(labels[i])
        row = ([ids[i]] if use_ids else []) + [texts[i], lab]
        rows.append(row + ([draw(TEXT)] if "extra" in header else []))
    return {"fmt": fmt, "sep": sep, "header": header, "rows": rows, "dialect": dialect, "bom": draw(st.booleans()),
            "texts": texts, "labels": labels, "ids": ids, "given_classes": draw(st.booleans()), "classes": classes,
            "on_error": draw(st.sampled_from(["raise", "skip"]))}


@SETTINGS
@given(t=tables())
@example(t={"fmt": "csv", "sep": "|", "header": ["text", "labels"], "rows": [["foo\u2028bar", "cat|dog"], ["x", "dog"]],
            "dialect": {"quoting": csv.QUOTE_MINIMAL, "nl": "\n", "ascii": False, "trailer": ""}, "bom": True,
            "texts": ["foo\u2028bar", "x"], "labels": [["cat", "dog"], ["dog"]], "ids": None, "given_classes": False,
            "classes": ["cat", "dog"], "on_error": "raise"})
@example(t={"fmt": "jsonl", "sep": "|", "header": ["text", "labels"], "rows": [["a\u2028b\x85c", ["Sci-Fi, Fantasy"]]],
            "dialect": {"quoting": 0, "nl": "\n", "ascii": False, "trailer": ""}, "bom": False,
            "texts": ["a\u2028b\x85c"], "labels": [["Sci-Fi, Fantasy"]], "ids": None, "given_classes": False,
            "classes": ["Sci-Fi, Fantasy"], "on_error": "raise"})
def test_generated_table_loads_exactly_or_fails_clearly(t):
    with tempfile.TemporaryDirectory() as d:
        path = _write_table(Path(d), t["fmt"], t["header"], t["rows"], t["dialect"], t["bom"])
        options = dict(label_sep=t["sep"], id_column="id" if t["ids"] else None, on_error=t["on_error"])
        known = None
        if t["given_classes"]:
            unused = "never-used"
            while unused in t["classes"]:
                unused += "_"
            known = list(reversed(t["classes"])) + [unused]
            options["classes"] = known
        blank = [i for i, text in enumerate(t["texts"]) if not text.strip()]
        expect_error = bool(blank) and (t["on_error"] == "raise" or len(blank) == len(t["texts"]))
        try:
            data = _load(path, **options)
        except DatasetError as e:
            assert expect_error, f"unexpected DatasetError: {e}"
            assert str(path) in str(e)
            return
        assert not expect_error, "a blank text was accepted"
        keep = [i for i in range(len(t["texts"])) if i not in blank]
        want_ids = [t["ids"][i] if t["ids"] else str(i) for i in keep]
        got = {e.id: e for s in data.splits.values() for e in s}
        assert sorted(got) == sorted(want_ids)
        assert sum(len(v) for v in data.splits.values()) == len(keep)
        for i, ex_id in zip(keep, want_ids):
            assert got[ex_id].input == t["texts"][i]
            assert got[ex_id].labels == t["labels"][i]
        used = sorted({c for i in keep for c in t["labels"][i]})
        assert data.classes == (known if known else used)
        assert [s["id"] for s in data.skipped] == [t["ids"][i] if t["ids"] else str(i) for i in blank]
        for split in data.splits:
            Y = data.multi_hot(split)
            for row, e in zip(Y, data.splits[split]):
                assert [data.classes[j] for j in row.nonzero()[0]] == sorted(e.labels, key=data.classes.index)


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
                assert e.input.strip() and e.labels and set(e.labels) <= set(data.classes)
                assert all(x == x.strip() and x for x in e.labels)


@pytest.mark.parametrize("raw,needle", [
    ('{"text": "a", "labels": 5}', "neither a string nor a list"),
    ('{"text": "a", "labels": [null, "x"]}', "not a name"),
    ('{"text": "a", "labels": []}', "empty labels list"),
    ('{"text": "a", "labels": ""}', "empty labels field"),
    ('{"text": ["a"], "labels": ["x"]}', "holds a JSON list"),
    ('{"labels": ["x"]}', "no 'text' in this row"),
    ('[1, 2]', "expected a JSON object"),
    ('{"text": "a", "labels": ["x"]', "invalid JSON"),
])
def test_jsonl_bad_rows_are_dataset_errors_and_skippable(tmp_path, raw, needle):
    path = tmp_path / "t.jsonl"
    path.write_text('{"text": "ok", "labels": ["y"]}\n' + raw + "\n")
    with pytest.raises(DatasetError, match=needle) as e:
        _load(path)
    assert f"{path}:2:" in str(e.value)
    data = _load(path, on_error="skip")
    assert [s["where"] for s in data.skipped] == [f"{path}:2"] and data.classes == ["y"]


def test_csv_ragged_rows_duplicate_ids_and_header(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text('id,text,labels\n1,"multi\nline",a\n2,too,many,fields\n3,few\n1,dup,b\n4,fine,b\n')
    with pytest.raises(DatasetError, match=r"t.csv:4: 4 fields but the header has 3"):
        _load(path, id_column="id")
    data = _load(path, id_column="id", on_error="skip")
    assert sorted(e.id for s in data.splits.values() for e in s) == ["1", "4"]
    assert [s["where"].rsplit(":", 1)[1] for s in data.skipped] == ["4", "5", "6"]
    assert "already used at" in data.skipped[-1]["error"] and data.classes == ["a", "b"]
    (tmp_path / "h.csv").write_text("text,labels,text\nx,a,y\n")
    with pytest.raises(DatasetError, match="duplicate column names"):
        _load(tmp_path / "h.csv")
    (tmp_path / "q.csv").write_text('text,labels\n"unterminated,a\n')
    with pytest.raises(DatasetError, match="malformed CSV|fields but the header"):
        _load(tmp_path / "q.csv")
    (tmp_path / "b.csv").write_bytes(b"text,labels\n\xff\xfe,a\n")
    with pytest.raises(DatasetError, match="not UTF-8"):
        _load(tmp_path / "b.csv")


def test_long_field_and_option_validation(tmp_path):
    path = tmp_path / "t.csv"
    long_text = "word " * 60000  # 300 kB: past csv's default field limit
    path.write_text(f'text,labels\n"{long_text}",a\n')
    assert _load(path).splits["test"][0].input == long_text
    with pytest.raises(DatasetError, match="--label-sep"):
        _load(path, label_sep="")
    with pytest.raises(DatasetError, match="empty class name"):
        _load(path, classes="a,,b")
    with pytest.raises(DatasetError, match="more than once"):
        _load(path, classes="a,b,a")
