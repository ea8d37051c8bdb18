"""Loaders arxiv2020, reuters21578, voc2007, mulan: generated fixtures (fast) and the real data in
../shared/data (skipped when absent; figures from shared/data/README.md)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from mlhead.datasets import DATASETS, DatasetError, get_loader
from mlhead.datasets.mulan import parse_attribute, read_arff, split_values
from mlhead.datasets.voc import VOC_CLASSES


def shared_data(*parts: str) -> Path:
    """``../shared/data/<parts>`` (next to the repository root), or skip the test when it is absent."""
    p = Path(__file__).resolve().parents[2].joinpath("shared", "data", *parts)
    if not p.exists():
        pytest.skip(f"real data not present: {p}")
    return p


def all_examples(data):
    return [e for split in ("train", "val", "test") for e in data.splits[split]]


def cardinality(examples) -> float:
    return sum(len(e.labels) for e in examples) / len(examples)


def test_registered():
    for name, modality in (("arxiv2020", "text"), ("reuters21578", "text"), ("voc2007", "image"),
                           ("mulan", "features")):
        cls = DATASETS[name]
        assert cls.modality == modality and cls.layout and cls.split_doc and cls.__doc__
    assert DATASETS["arxiv2020"].default_backbone == "distilbert-base-uncased"
    assert DATASETS["voc2007"].default_backbone == "tresnet_m"
    assert DATASETS["mulan"].default_backbone == "none"


# ------------------------------------------------------------------------------------------ arXiv

META_HEADER = "id,submitter,authors,title,comments,journal-ref,doi,report-no,categories,license,abstract,versions\n"


def _meta_rows(n=10):
    rows = []
    for i in range(n):
        cats = ["hep-ph"] if i % 3 == 0 else ["math.CO", "cs.CG"] if i % 3 == 1 else ["astro-ph"]
        rows.append({"id": f"0704.{i + 1:04d}", "title": f"Title {i}\n  second line",
                     "abstract": f"  Abstract {i} with, comma\nand a newline.\n", "categories": " ".join(cats)})
    return rows


def _csv_quote(s: str) -> str:
    return '"' + s.replace('"', '""') + '"'


def write_meta_csv(path: Path, rows) -> Path:
    lines = [META_HEADER]
    for r in rows:
        lines.append(",".join([r["id"], "someone", _csv_quote("A. B, C. D"), _csv_quote(r["title"]), "", "", "",
                               "", r["categories"], "", _csv_quote(r["abstract"]), _csv_quote("[{'v': 1}]")]) + "\n")
    path.write_text("".join(lines), encoding="utf-8")
    return path


def write_meta_jsonl(path: Path, rows) -> Path:
    path.write_text("".join(json.dumps({**r, "authors": "x", "versions": []}) + "\n" for r in rows), encoding="utf-8")
    return path


def write_keras_csv(path: Path, terms_rows) -> Path:
    lines = ["titles,summaries,terms,word_count,unique_word_count\n"]
    for i, terms in enumerate(terms_rows):
        lines.append(f"Paper {i},{_csv_quote(f'Summary {i}' + chr(10) + 'more text')},{_csv_quote(terms)},3,3\n")
    path.write_text("".join(lines), encoding="utf-8")
    return path


def test_arxiv_metadata_csv_and_jsonl_agree(tmp_path):
    rows = _meta_rows()
    csv_dir, json_dir = tmp_path / "csv", tmp_path / "json"
    csv_dir.mkdir(), json_dir.mkdir()
    write_meta_csv(csv_dir / "arxiv_metadata.csv", rows)
    write_meta_jsonl(json_dir / "arxiv-metadata-oai-snapshot.json", rows)
    loader = get_loader("arxiv2020")
    a, b = loader.load(csv_dir), loader.load(json_dir)
    assert a.classes == b.classes == ["astro-ph", "cs.CG", "hep-ph", "math.CO"]
    assert {s: len(v) for s, v in a.splits.items()} == {"train": 6, "val": 2, "test": 2}
    ex = {e.id: e for e in all_examples(a)}
    assert ex["0704.0001"].input == "Title 0 second line Abstract 0 with, comma and a newline."
    assert ex["0704.0002"].labels == ["math.CO", "cs.CG"]
    assert [(e.id, e.input, e.labels) for e in all_examples(a)] == [(e.id, e.input, e.labels) for e in all_examples(b)]
    assert a.files == [csv_dir / "arxiv_metadata.csv"] and a.options["format"] == "metadata"
    # same seed -> same split; other seed -> other split
    assert [e.id for e in loader.load(csv_dir).splits["test"]] == [e.id for e in a.splits["test"]]
    assert [e.id for e in loader.load(csv_dir, split_seed=1).splits["test"]] != [e.id for e in a.splits["test"]]
    contiguous = loader.load(csv_dir, split_mode="paper-contiguous")
    assert [e.id for e in contiguous.splits["test"]] == ["0704.0009", "0704.0010"]


def test_arxiv_keras_terms_literal(tmp_path):
    terms = ["['cs.LG', 'stat.ML']", "['cs.CV']", "['I.2.6; I.2.7', 'cs.AI']", "('cs.LG',)", "['cs.CV', 'cs.CV']"]
    path = write_keras_csv(tmp_path / "keras.csv", terms)
    data = get_loader("arxiv2020").load(path)  # --data-dir may name the file
    ex = {e.id: e for e in all_examples(data)}
    assert ex["0"].labels == ["cs.LG", "stat.ML"] and ex["2"].labels == ["I.2.6; I.2.7", "cs.AI"]
    assert ex["4"].labels == ["cs.CV"]
    assert ex["1"].input == "Paper 1 Summary 1 more text"
    assert data.options["format"] == "keras"


@pytest.mark.parametrize("bad", ["__import__('os').system('touch PWNED')", "cs.LG", "[1, 2]", "[]", "['cs.LG'"])
def test_arxiv_bad_terms_raise_or_skip(tmp_path, bad, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = write_keras_csv(tmp_path / "k.csv", ["['cs.LG']"] * 4 + [bad])
    with pytest.raises(DatasetError, match=r"k\.csv:\d+"):
        get_loader("arxiv2020").load(path)
    data = get_loader("arxiv2020").load(path, on_error="skip")
    assert len(all_examples(data)) == 4 and [s["id"] for s in data.skipped] == ["4"]
    assert not (tmp_path / "PWNED").exists()


def test_arxiv_directory_choice_and_errors(tmp_path):
    write_meta_csv(tmp_path / "meta.csv", _meta_rows())
    write_keras_csv(tmp_path / "keras.csv", ["['cs.LG']"] * 5)
    (tmp_path / "notes.csv").write_text("a,b\n1,2\n")
    loader = get_loader("arxiv2020")
    assert loader.load(tmp_path).options["file"] == "meta.csv"  # metadata preferred
    assert loader.load(tmp_path, file="keras.csv").options["format"] == "keras"
    with pytest.raises(DatasetError, match="not found"):
        loader.load(tmp_path, file="nope.csv")
    write_meta_jsonl(tmp_path / "more.jsonl", _meta_rows())
    with pytest.raises(DatasetError, match="several metadata-format files.*--file"):
        loader.load(tmp_path)
    with pytest.raises(DatasetError, match="neither"):
        loader.load(tmp_path / "notes.csv")
    with pytest.raises(DatasetError, match="no arXiv"):
        loader.load(_empty_dir(tmp_path))


def _empty_dir(tmp_path):
    d = tmp_path / "empty"
    d.mkdir()
    return d


def test_arxiv_bad_rows_and_dedupe(tmp_path):
    rows = _meta_rows()
    rows[3]["categories"] = ""
    rows[5]["id"] = rows[4]["id"]
    rows[7] = {**rows[6], "id": "0704.9999"}  # same text as row 6
    path = write_meta_csv(tmp_path / "m.csv", rows)
    with pytest.raises(DatasetError, match=r"m\.csv:\d+: empty"):
        get_loader("arxiv2020").load(path)
    data = get_loader("arxiv2020").load(path, on_error="skip")
    assert sorted(s["id"] for s in data.skipped) == ["0704.0004", "0704.0005"]
    assert len(all_examples(data)) == 8 and any("repeat" in n for n in data.notes)
    assert len(all_examples(get_loader("arxiv2020").load(path, on_error="skip", dedupe=True))) == 7
    (tmp_path / "bad.jsonl").write_text('{"id": "1", "title": "t", "abstract": "a", "categories": "x"}\n{oops\n')
    with pytest.raises(DatasetError, match=r"bad\.jsonl:2: invalid JSON"):
        get_loader("arxiv2020").load(tmp_path / "bad.jsonl")


# ---------------------------------------------------------------------------------------- Reuters


def _reuters_doc(newid, split, topics, title="", body="", topics_attr="YES", text=None):
    d = "".join(f"<D>{t}</D>" for t in topics)
    inner = text if text is not None else (f"&#2;\n<TITLE>{title}</TITLE>\n<DATELINE>X, Feb 26 - </DATELINE>"
                                           f"<BODY>{body}\n Reuter\n&#3;</BODY>")
    return (f'<REUTERS TOPICS="{topics_attr}" LEWISSPLIT="{split}" CGISPLIT="TRAINING-SET" OLDID="{newid + 100}" '
            f'NEWID="{newid}">\n<DATE>26-FEB-1987 15:01:01.79</DATE>\n<TOPICS>{d}</TOPICS>\n<PLACES><D>usa</D>'
            f'</PLACES>\n<UNKNOWN>&#5;&#5;&#5;C T\n&#22;&#22;&#1;f0704&#31;reute</UNKNOWN>\n<TEXT>{inner}</TEXT>\n'
            f'</REUTERS>\n')


def write_reuters(folder: Path, extra=()) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    docs = [
        _reuters_doc(1, "TRAIN", ["earn", "acq"], "A &lt;B&gt; &amp; C", "Profit rose caf\xe9\n  strongly."),
        _reuters_doc(2, "TRAIN", ["earn"], "T2", "b2"),
        _reuters_doc(3, "TRAIN", ["trainonly"], "T3", "dropped: topic not in test"),
        _reuters_doc(4, "TRAIN", [], "T4", "no topic"),
        _reuters_doc(5, "TRAIN", ["acq", "trainonly"], "T5", "b5"),
        _reuters_doc(6, "TRAIN", ["earn"], "T6", "b6"),
        _reuters_doc(7, "TRAIN", ["acq"], "T7", "b7"),
        _reuters_doc(8, "TRAIN", ["earn"], "T8", "b8", topics_attr="NO"),
        _reuters_doc(9, "NOT-USED", ["earn"], "T9", "b9"),
        _reuters_doc(10, "TEST", ["earn"], "T10", "b10"),
        _reuters_doc(11, "TEST", ["acq", "testonly"], "T11", "b11"),
        _reuters_doc(12, "TEST", ["earn"], text="&#2;\n unprocessed text only\n&#3;"),
        *extra,
    ]
    half = len(docs) // 2
    (folder / "reut2-000.sgm").write_bytes(("<!DOCTYPE lewis SYSTEM \"lewis.dtd\">\n" + "".join(docs[:half]))
                                           .encode("latin-1"))
    (folder / "reut2-001.sgm").write_bytes("".join(docs[half:]).encode("latin-1"))
    (folder / "README.txt").write_text("not an input")
    return folder


def test_reuters_modapte(tmp_path):
    data = get_loader("reuters21578").load(write_reuters(tmp_path / "r"))
    assert data.classes == ["acq", "earn"]
    train_val = {e.id: e for e in data.splits["train"] + data.splits["val"]}
    assert sorted(train_val, key=int) == ["1", "2", "5", "6", "7"]  # 3 dropped, 4 no topic, 8 NO, 9 NOT-USED
    assert len(data.splits["val"]) == 1
    test = {e.id: e for e in data.splits["test"]}
    assert list(test) == ["10", "11", "12"]
    assert train_val["1"].input == "A <B> & C Profit rose caf\xe9 strongly. Reuter"
    assert train_val["1"].labels == ["earn", "acq"] and train_val["5"].labels == ["acq"]
    assert test["11"].labels == ["acq"] and test["12"].input == "unprocessed text only"
    assert "reut2-000.sgm:" in train_val["1"].where
    assert [p.name for p in data.files] == ["reut2-000.sgm", "reut2-001.sgm"]
    notes = " ".join(data.notes)
    assert "with >= 1 topic: 6 / 3" in notes and "1 train / 0 test documents dropped" in notes
    assert data.multi_hot("test").tolist() == [[0, 1], [1, 0], [0, 1]]


def test_reuters_bad_doc(tmp_path):
    folder = write_reuters(tmp_path / "r", extra=[_reuters_doc(13, "TRAIN", ["earn"], text="&#2;&#3;")])
    with pytest.raises(DatasetError, match=r"reut2-001\.sgm:\d+: NEWID 13: empty text"):
        get_loader("reuters21578").load(folder)
    data = get_loader("reuters21578").load(folder, on_error="skip")
    assert [s["id"] for s in data.skipped] == ["13"]
    with pytest.raises(DatasetError, match="no reut2"):
        get_loader("reuters21578").load(_empty_dir(tmp_path))


# -------------------------------------------------------------------------------------------- VOC

_VOC_OBJECTS = {  # id -> [(class, difficult)]
    "000001": [("dog", 0), ("person", 0)],
    "000002": [("person", 0), ("cat", 1), ("car", 1), ("car", 0)],  # cat difficult-only; car also clear
    "000003": [("chair", 1)],  # difficult-only image
    "000004": [("sofa", 0), ("chair", 0)],
}


def _voc_xml(ex_id, objects):
    objs = "".join(f"<object><name>{c}</name><pose>Left</pose><truncated>0</truncated><difficult>{d}</difficult>"
                   f"<bndbox><xmin>1</xmin><ymin>1</ymin><xmax>9</xmax><ymax>9</ymax></bndbox></object>"
                   for c, d in objects)
    return f"<annotation><folder>VOC2007</folder><filename>{ex_id}.jpg</filename>{objs}</annotation>"


def write_voc(root: Path, xml=True, images=True, lists=True, trainval=("000001", "000002", "000003"),
              test=("000004",)) -> Path:
    voc = root / "VOC2007"
    main = voc / "ImageSets" / "Main"
    main.mkdir(parents=True)
    (main / "trainval.txt").write_text("".join(f"{i}\n" for i in trainval))
    (main / "test.txt").write_text("".join(f"{i}\n" for i in test))
    for ex_id, objects in _VOC_OBJECTS.items():
        if xml:
            (voc / "Annotations").mkdir(exist_ok=True)
            (voc / "Annotations" / f"{ex_id}.xml").write_text(_voc_xml(ex_id, objects))
        if images:
            (voc / "JPEGImages").mkdir(exist_ok=True)
            (voc / "JPEGImages" / f"{ex_id}.jpg").write_bytes(b"\xff\xd8 not decoded by the loader")
    if lists:
        for set_name, ids in (("trainval", trainval), ("test", test)):
            for cls in VOC_CLASSES:
                lines = []
                for ex_id in ids:
                    objs = [d for c, d in _VOC_OBJECTS[ex_id] if c == cls]
                    value = -1 if not objs else 1 if 0 in objs else 0
                    lines.append(f"{ex_id} {value:2d}\r\n")  # CRLF and padded like the official files
                (main / f"{cls}_{set_name}.txt").write_text("".join(lines))
    return root


def _labels(data):
    return {e.id: e.labels for e in all_examples(data)}


@pytest.mark.parametrize("source", ["xml", "lists"])
def test_voc_difficult_policies(tmp_path, source):
    root = write_voc(tmp_path)
    loader = get_loader("voc2007")
    pos = loader.load(root, source=source)
    assert pos.options["source"] == source and pos.split_mode == "official"
    assert pos.classes == list(VOC_CLASSES)
    assert _labels(pos) == {"000001": ["dog", "person"], "000002": ["car", "cat", "person"],
                            "000003": ["chair"], "000004": ["chair", "sofa"]}
    assert [e.id for e in pos.splits["test"]] == ["000004"]
    assert sorted(e.id for e in pos.splits["train"] + pos.splits["val"]) == ["000001", "000002", "000003"]
    assert len(pos.splits["val"]) == 0 or len(pos.splits["val"]) == int(0.2 * 3)
    neg = loader.load(root, source=source, voc_difficult="negative")
    assert _labels(neg)["000002"] == ["car", "person"] and _labels(neg)["000003"] == []
    ign = loader.load(root, source=source, voc_difficult="ignore")
    assert _labels(ign) == _labels(neg)
    pairs = sorted(tuple(p) for v in ign.options["ignored_pairs"].values() for p in v)
    assert pairs == [("000002", "cat"), ("000003", "chair")]
    where = {e.id: s for s, v in ign.splits.items() for e in v}
    assert all(where[i] == s for s, v in ign.options["ignored_pairs"].items() for i, _ in v)
    mh = ign.multi_hot("train")
    assert mh.dtype == np.uint8 and set(np.unique(mh)) <= {0, 1}
    assert "ignored_pairs" not in neg.options
    with pytest.raises(DatasetError, match="voc-difficult"):
        loader.load(root, voc_difficult="maybe")


def test_voc_paths_and_inputs(tmp_path):
    root = write_voc(tmp_path / "devkit")
    loader = get_loader("voc2007")
    for data_dir in (root, root / "VOC2007"):
        data = loader.load(data_dir)
        assert data.options["source"] == "xml"
        e = next(e for e in all_examples(data) if e.id == "000001")
        assert e.input == str(root / "VOC2007" / "JPEGImages" / "000001.jpg")
    (tmp_path / "outer" / "VOCdevkit").mkdir(parents=True)
    write_voc(tmp_path / "outer" / "VOCdevkit")
    assert len(all_examples(loader.load(tmp_path / "outer"))) == 4
    files = {p.name for p in loader.load(root).files}
    assert {"000001.xml", "000001.jpg", "trainval.txt", "test.txt"} <= files
    with pytest.raises(DatasetError, match="no VOC2007 folder"):
        loader.load(_empty_dir(tmp_path))


def test_voc_lists_without_images(tmp_path):
    root = write_voc(tmp_path, xml=False, images=False)
    loader = get_loader("voc2007")
    with pytest.raises(DatasetError, match="images absent.*labels_only"):
        loader.load(root)
    data = loader.load(root, labels_only=True)
    assert data.options["source"] == "lists" and len(all_examples(data)) == 4
    assert all(e.input.endswith(f"JPEGImages/{e.id}.jpg") for e in all_examples(data))
    assert {p.name for p in data.files} >= {"dog_trainval.txt", "tvmonitor_test.txt"}
    bad = root / "VOC2007" / "ImageSets" / "Main" / "dog_trainval.txt"
    bad.write_text(bad.read_text() + "000009 2\n")
    with pytest.raises(DatasetError, match=r"dog_trainval\.txt:4"):
        loader.load(root, labels_only=True)
    data = loader.load(root, labels_only=True, on_error="skip")
    assert [s["id"] for s in data.skipped] == ["000009"] and len(all_examples(data)) == 4
    (root / "VOC2007" / "ImageSets" / "Main" / "cat_test.txt").unlink()
    with pytest.raises(DatasetError, match="cat_test.txt"):
        loader.load(root, labels_only=True)


def test_voc_missing_image_and_bad_xml(tmp_path):
    root = write_voc(tmp_path)
    (root / "VOC2007" / "JPEGImages" / "000002.jpg").unlink()
    loader = get_loader("voc2007")
    with pytest.raises(DatasetError, match="000002.xml: image not found"):
        loader.load(root)
    data = loader.load(root, on_error="skip")
    assert [s["id"] for s in data.skipped] == ["000002"] and len(all_examples(data)) == 3
    (root / "VOC2007" / "Annotations" / "000003.xml").write_text("<annotation><object><name>unicorn</name>")
    with pytest.raises(DatasetError, match="000003.xml"):
        loader.load(root, on_error="raise", labels_only=True)


def test_voc_overlapping_lists_fall_back_to_seeded_split(tmp_path):
    ids = tuple(_VOC_OBJECTS)
    root = write_voc(tmp_path, lists=False, trainval=ids, test=ids)
    data = get_loader("voc2007").load(root)
    assert data.split_mode == "random" and any("overlap" in n for n in data.notes)
    assert sorted(e.id for e in all_examples(data)) == sorted(ids)
    assert {s: len(v) for s, v in data.splits.items()} == {"train": 2, "val": 0, "test": 2}


# ------------------------------------------------------------------------------------------ MULAN

# Labels ('lab b', "la'b a") sit between features and are declared in the XML in a different order.
ARFF_HEADER = """% a comment
@relation 'toy data'

@attribute f1 numeric
@attribute 'lab b' {0,1}
@attribute colour {red,green,blue}
@attribute 'la\\'b a' {0,1}
@ATTRIBUTE "f 2" REAL
@attribute flag {no,yes}

@data
"""
TOY_XML = """<?xml version="1.0" encoding="utf-8"?>
<labels xmlns="http://mulan.sourceforge.net/labels">
<label name="la'b a"></label>
<label name="lab b"></label>
</labels>
"""
DENSE_ROWS = ["1.5,1,green,0,-2,yes", "0,0,red,1,3.25,no", "2,1,blue,1,0,no", "-1,0,'green',0,1e-3,yes",
              "4,0,red,0,0,no"]
# the same rows in sparse form (omitted: 0 / first nominal value)
SPARSE_ROWS = ["{0 1.5,1 1,2 green,4 -2,5 yes}", "{1 0,3 1,4 3.25}", "{0 2,1 1,2 blue,3 1}",
               "{0 -1,2 'green',4 1e-3,5 yes}", "{0 4}"]
EXPECTED_X = np.array([[1.5, 1, -2, 1], [0, 0, 3.25, 0], [2, 2, 0, 0], [-1, 1, 1e-3, 1], [4, 0, 0, 0]], np.float32)
EXPECTED_Y = np.array([[0, 1], [1, 0], [1, 1], [0, 0], [0, 0]], np.uint8)  # columns: la'b a, lab b


def write_mulan(folder: Path, train_rows=DENSE_ROWS, test_rows=SPARSE_ROWS, name="toy") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.xml").write_text(TOY_XML)
    if test_rows is None:
        (folder / f"{name}.arff").write_text(ARFF_HEADER + "\n".join(train_rows) + "\n")
    else:
        (folder / f"{name}-train.arff").write_text(ARFF_HEADER + "\n".join(train_rows) + "\n")
        (folder / f"{name}-test.arff").write_text(ARFF_HEADER + "\n".join(test_rows) + "\n")
    return folder


def _stack(data, *splits):
    return tuple(np.concatenate([data.features[s][k] for s in splits]) for k in (0, 1))


def test_arff_parsing_helpers():
    a = parse_attribute("@attribute 'Swainson\\'s Thrush' {0,1}")
    assert (a.name, a.kind, a.values) == ("Swainson's Thrush", "nominal", ("0", "1"))
    assert parse_attribute('@attribute "a b" {x, \'y,z\'}').values == ("x", "y,z")
    assert parse_attribute("@ATTRIBUTE f3 Integer").kind == "numeric"
    with pytest.raises(ValueError, match="not supported"):
        parse_attribute("@attribute s string")
    assert split_values("1, 'a b' ,c") == ["1", "a b", "c"]


def test_mulan_dense_and_sparse_by_name(tmp_path):
    folder = write_mulan(tmp_path / "mulan" / "toy")
    loader = get_loader("mulan")
    data = loader.load(tmp_path / "mulan", name="toy")
    assert data.modality == "features" and data.classes == ["la'b a", "lab b"]
    # train (dense) -> train+val, test (sparse): same rows, so test must equal all of train in file order
    Xte, Yte, ids = data.features["test"]
    assert Xte.dtype == np.float32 and Yte.dtype == np.uint8
    np.testing.assert_allclose(Xte, EXPECTED_X, rtol=0, atol=1e-7)
    np.testing.assert_array_equal(Yte, EXPECTED_Y)
    assert ids == [f"toy-test:{i}" for i in range(5)]
    assert len(data.features["val"][2]) == 1 and len(data.features["train"][2]) == 4
    for split, (X, Y, ids) in data.features.items():
        assert [e.id for e in data.splits[split]] == ids
        np.testing.assert_array_equal(data.multi_hot(split), Y)
        rows = [int(i.split(":")[1]) for i in ids]
        np.testing.assert_array_equal(X, EXPECTED_X[rows])
        assert all(e.input == "" for e in data.splits[split])
    assert data.features["train"][2][0].startswith("toy-train:")
    assert {p.name for p in data.files} == {"toy.xml", "toy-train.arff", "toy-test.arff"}
    # data_dir = the dataset folder itself gives the same result
    same = loader.load(folder)
    np.testing.assert_array_equal(same.features["test"][0], Xte)


def test_mulan_onehot_and_no_split(tmp_path):
    folder = write_mulan(tmp_path / "toy", test_rows=None)
    data = get_loader("mulan").load(folder, nominal="onehot")
    X, Y = _stack(data, "train", "val", "test")
    assert X.shape == (5, 6)  # f1, colour x3 (one-hot), f 2, flag (2 values: stays one column)
    ids = [i for s in ("train", "val", "test") for i in data.features[s][2]]
    rows = [int(i.split(":")[1]) for i in ids]
    np.testing.assert_array_equal(X[:, 1:4], np.eye(3, dtype=np.float32)[EXPECTED_X[rows, 1].astype(int)])
    np.testing.assert_array_equal(Y, EXPECTED_Y[rows])
    assert {s: len(v[2]) for s, v in data.features.items()} == {"train": 3, "val": 1, "test": 1}
    assert data.split_mode == "random"


def test_mulan_errors(tmp_path):
    loader = get_loader("mulan")
    folder = write_mulan(tmp_path / "a", train_rows=DENSE_ROWS[:2] + ["1,1,green,0"] + DENSE_ROWS[3:])
    with pytest.raises(DatasetError, match=r"toy-train\.arff:14: 4 values, expected 6"):
        loader.load(folder)
    data = loader.load(folder, on_error="skip")
    assert [s["id"] for s in data.skipped] == ["toy-train:2"]
    assert "toy-train:2" not in data.features["train"][2] + data.features["val"][2]
    folder = write_mulan(tmp_path / "b", test_rows=SPARSE_ROWS[:1] + ["{0 1,2 purple}", "{9 1}"])
    with pytest.raises(DatasetError, match=r"toy-test\.arff:13: value 'purple'"):
        loader.load(folder)
    assert len(loader.load(folder, on_error="skip").skipped) == 2
    folder = write_mulan(tmp_path / "c")
    (folder / "toy.xml").write_text(TOY_XML.replace("lab b", "lab c"))
    with pytest.raises(DatasetError, match="'lab c'"):
        loader.load(folder)
    with pytest.raises(DatasetError, match="--name.*available.*toy"):
        loader.load(_mulan_root(tmp_path))
    with pytest.raises(DatasetError, match="'nope' not found"):
        loader.load(_mulan_root(tmp_path), name="nope")


def test_mulan_features_go_into_the_cache(tmp_path):
    h5py = pytest.importorskip("h5py")
    from mlhead.embed import EmbedConfig, embed

    folder = write_mulan(tmp_path / "toy")
    result = embed(EmbedConfig("mulan", folder, cache_dir=tmp_path / "cache"))
    assert result.rows == {"train": 4, "val": 1, "test": 5}
    with h5py.File(result.path) as f:
        np.testing.assert_array_equal(f["test/labels"][:], EXPECTED_Y)
        np.testing.assert_allclose(f["test/embeddings"][:], EXPECTED_X, rtol=1e-3)  # stored float16
    assert embed(EmbedConfig("mulan", folder, cache_dir=tmp_path / "cache")).up_to_date


def _mulan_root(tmp_path):
    root = tmp_path / "root"
    if not root.exists():
        write_mulan(root / "toy")
    return root


@pytest.mark.parametrize("rows", [DENSE_ROWS, SPARSE_ROWS], ids=["dense", "sparse"])
def test_arff_reader_matches_liac_arff_via_bench(tmp_path, rows):
    """bench/bench_arff.py's comparison on the toy file: our reader and liac-arff give the same
    array (sparse rows, quoted values, nominals) and, but for liac-arff keeping the backslash of an
    escaped quote in a name, the same attributes."""
    pytest.importorskip("arff")
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
    try:
        from bench_arff import compare, liac_read
    finally:
        sys.path.pop(0)
    path = tmp_path / "toy.arff"
    path.write_text(ARFF_HEADER + "\n".join(rows) + "\n")
    row = compare(path, repeat=1)
    assert row["same_array"] and (row["rows"], row["attributes"], row["sparse"]) == (5, 6, rows is SPARSE_ROWS)
    attrs, values = liac_read(path)
    np.testing.assert_array_equal(values[:, [0, 2, 4]], np.c_[EXPECTED_X[:, [0]], [[1], [0], [2], [1], [0]],
                                                              EXPECTED_X[:, [2]]])
    assert [a for a, _ in attrs][3] == "la\\'b a" and not row["same_attributes"]  # liac-arff keeps the \\


def test_mulan_dense_matches_scipy(tmp_path):
    """Cross-check the dense reader against scipy.io.arff (which knows no sparse rows, "-quoted
    names or quoted values)."""
    arff = pytest.importorskip("scipy.io.arff")
    path = tmp_path / "toy.arff"
    rows = [r.replace("'green'", "green") for r in DENSE_ROWS]  # scipy does not unquote values
    path.write_text(ARFF_HEADER.replace('"f 2"', "'f 2'") + "\n".join(rows) + "\n")
    ours = read_arff(path)
    theirs, meta = arff.loadarff(path)
    names = list(meta.names())
    assert [a.name for a in ours.attributes] == [n.replace("\\'", "'") for n in names]  # scipy keeps \'
    for j, (a, name) in enumerate(zip(ours.attributes, names)):
        col = theirs[name]
        if a.kind == "numeric":
            np.testing.assert_allclose(ours.values[:, j], col, rtol=1e-6)
        else:
            np.testing.assert_array_equal(ours.values[:, j], [a.values.index(v.decode()) for v in col])


# -------------------------------------------------------------------------------------- real data


@pytest.mark.real
def test_real_reuters():
    data = get_loader("reuters21578").load(shared_data("reuters21578"))
    assert len(data.classes) == 90 and len(data.files) == 22
    assert len(data.splits["test"]) == 3019
    n_train = len(data.splits["train"]) + len(data.splits["val"])
    assert n_train == 7770  # 7,775 ModApte train docs with >= 1 topic, 5 left with no class of the 90
    assert len(data.splits["val"]) == int(0.2 * n_train)
    assert "with >= 1 topic: 7775 / 3019" in " ".join(data.notes)
    assert cardinality(all_examples(data)) == pytest.approx(1.24, abs=0.01)
    counts = data.multi_hot("train").sum(0) + data.multi_hot("val").sum(0)
    top = sorted(zip(counts.tolist(), data.classes), reverse=True)[:3]
    assert top == [(2877, "earn"), (1650, "acq"), (538, "money-fx")]


@pytest.mark.real
def test_real_voc_lists():
    root = shared_data("voc2007")
    loader = get_loader("voc2007")
    with pytest.raises(DatasetError, match="images absent"):
        loader.load(root)
    neg = loader.load(root, labels_only=True, voc_difficult="negative")
    trainval = neg.splits["train"] + neg.splits["val"]
    assert len(trainval) == 5011 and len(neg.splits["test"]) == 4952 and len(neg.splits["val"]) == 1002
    assert cardinality(trainval) == pytest.approx(1.46, abs=0.005)
    assert cardinality(neg.splits["test"]) == pytest.approx(1.42, abs=0.005)
    pos = loader.load(root, labels_only=True)
    assert cardinality(all_examples(pos)) == pytest.approx(1.560, abs=0.0005)
    ign = loader.load(root, labels_only=True, voc_difficult="ignore")
    assert _labels(ign) == _labels(neg)
    pairs = ign.options["ignored_pairs"]
    n_pairs = sum(len(v) for v in pairs.values())
    assert n_pairs == sum(len(e.labels) for e in all_examples(pos)) - sum(len(e.labels) for e in all_examples(neg))
    imgs = {s: len({i for i, _ in v}) for s, v in pairs.items()}
    assert imgs["train"] + imgs["val"] == 545 and imgs["test"] == 551


@pytest.mark.real
def test_real_voc_sample_with_truncated_jpeg():
    root = shared_data("voc2007", "sample_5_images_VOCdevkit")
    data = get_loader("voc2007").load(root)
    ex = {e.id: e for e in all_examples(data)}
    assert sorted(ex) == ["000001", "000002", "000003", "000004", "000005"]
    assert ex["000001"].labels == ["dog", "person"] and ex["000004"].labels == ["car"]
    assert ex["000003"].labels == ["chair", "sofa"]
    truncated = Path(ex["000001"].input)
    assert truncated.is_file() and truncated.stat().st_size == 8192
    assert not truncated.read_bytes().rstrip(b"\0").endswith(b"\xff\xd9")  # no JPEG end marker
    assert any("overlap" in n for n in data.notes)


@pytest.mark.real
@pytest.mark.parametrize("file,rows,n_classes,card", [
    (None, 2000, 125, 1.50), ("keras_arxiv_data_sample1000.csv", 1000, 113, 2.01)])
def test_real_arxiv(file, rows, n_classes, card):
    data = get_loader("arxiv2020").load(shared_data("arxiv"), file=file)
    examples = all_examples(data)
    assert len(examples) == rows and len(data.classes) == n_classes
    assert cardinality(examples) == pytest.approx(card, abs=0.005)
    assert {s: len(v) for s, v in data.splits.items()} == {"train": rows * 6 // 10, "val": rows // 5,
                                                         "test": rows - rows * 6 // 10 - rows // 5}
    assert all("\n" not in e.input and e.input == e.input.strip() for e in examples)
    if file is None:
        counts = data.multi_hot("train").sum(0) + data.multi_hot("val").sum(0) + data.multi_hot("test").sum(0)
        assert dict(zip(data.classes, counts.tolist()))["astro-ph"] == 445


MULAN_TABLE = {  # README: features, labels, train n (card.), test n (card.)
    "emotions": (72, 6, 391, 1.81, 202, 1.98),
    "scene": (294, 6, 1211, 1.06, 1196, 1.09),
    "yeast": (103, 14, 1500, 4.23, 917, 4.25),
    "birds": (260, 19, 322, 1.06, 323, 0.97),
    "flags": (19, 7, 129, 3.42, 65, 3.34),
    "genbase": (1186, 27, 463, 1.26, 199, 1.23),
    "medical": (1449, 45, 333, 1.26, 645, 1.24),
    "enron": (1001, 53, 1123, 3.39, 579, 3.36),
    "corel5k": (499, 374, 4500, 3.52, 500, 3.53),
    "tmc2007": (500, 22, 21519, 2.23, 7077, 1.95),
    "bibtex": (1836, 159, 4880, 2.38, 2515, 2.44),
}
_SLOW_MULAN = {"tmc2007", "bibtex"}  # ~1.5 s each


@pytest.mark.real
@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n in _SLOW_MULAN else n
                                  for n in MULAN_TABLE])
def test_real_mulan(name):
    n_feat, n_lab, n_train, c_train, n_test, c_test = MULAN_TABLE[name]
    data = get_loader("mulan").load(shared_data("mulan"), name=name)
    assert len(data.classes) == n_lab
    train = np.concatenate([data.features["train"][1], data.features["val"][1]])
    Xte, Yte, _ = data.features["test"]
    assert Xte.shape == (n_test, n_feat) and np.isfinite(Xte).all()
    assert len(train) == n_train and len(data.features["val"][2]) == int(0.2 * n_train)
    assert train.sum(1).mean() == pytest.approx(c_train, abs=0.005)
    assert Yte.sum(1).mean() == pytest.approx(c_test, abs=0.005)


@pytest.mark.real
def test_real_mulan_cal500_and_label_order():
    data = get_loader("mulan").load(shared_data("mulan", "cal500"))
    Y = np.concatenate([data.features[s][1] for s in ("train", "val", "test")])
    assert Y.shape == (502, 174) and Y.sum(1).mean() == pytest.approx(26.04, abs=0.005)
    assert data.features["train"][0].shape[1] == 68
    # yeast: XML order Class1,2,3,6,4,... differs from the ARFF order; labels follow the XML names
    yeast = get_loader("mulan").load(shared_data("mulan", "yeast"))
    assert yeast.classes[:5] == ["Class1", "Class2", "Class3", "Class6", "Class4"]
    raw = read_arff(shared_data("mulan", "yeast", "yeast-test.arff"))
    col = {a.name: j for j, a in enumerate(raw.attributes)}
    np.testing.assert_array_equal(yeast.features["test"][1][:, 3], raw.values[:, col["Class6"]].astype(np.uint8))
    birds = get_loader("mulan").load(shared_data("mulan"), name="birds")
    assert "Swainson's Thrush" in birds.classes


def test_each_mulan_benchmark_gets_its_own_cache(tmp_path):
    """Two MULAN benchmarks embedded into one cache dir must not collide (regression)."""
    from mlhead.embed import EmbedConfig, embed

    root = tmp_path / "mulan"
    for name in ("alpha", "beta"):
        d = root / name
        d.mkdir(parents=True)
        (d / f"{name}.xml").write_text('<labels xmlns="http://mulan.sourceforge.net/labels">'
                                        '<label name="l1"></label><label name="l2"></label></labels>')
        arff = ("@relation r\n@attribute f1 numeric\n@attribute l1 {0,1}\n@attribute l2 {0,1}\n@data\n"
                + "".join(f"{i / 10},{i % 2},{(i + 1) % 2}\n" for i in range(10)))
        (d / f"{name}-train.arff").write_text(arff)
        (d / f"{name}-test.arff").write_text(arff)
    paths = {embed(EmbedConfig("mulan", root, cache_dir=tmp_path / "cache", dataset_options={"name": n})).path
             for n in ("alpha", "beta")}
    assert {p.parent.name for p in paths} == {"mulan-alpha", "mulan-beta"}
