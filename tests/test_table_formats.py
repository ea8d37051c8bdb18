"""``table`` loader, issue #16 "data that must work": empty label sets, one-class tables, split names and
carved val, stable hash splits, stratified splits, delimiters, encodings, one-hot label columns, Parquet."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from mlhead.datasets import DatasetError, get_loader
from mlhead.datasets.splits import hash_unit
from mlhead.errors import ConfigError, MlheadError

SPLITS = ("train", "val", "test")


def load(path: Path, **options):
    options.setdefault("text_column", "text")
    return get_loader("table").load(path, **options)


def by_id(data) -> dict:
    return {e.id: (s, e) for s in data.splits for e in data.splits[s]}


def write_csv(path: Path, header: str, rows: list[str], encoding="utf-8") -> Path:
    path.write_bytes(("\n".join([header] + rows) + "\n").encode(encoding))
    return path


def split_rows(n: int, sep: str = ",") -> list[str]:
    """``n`` rows text,labels,split cycling through train/train/val/test with labels a / b / empty."""
    names = ["train", "train", "val", "test"]
    return [sep.join([f"text {i}", ["a", "b", ""][i % 3], names[i % 4]]) for i in range(n)]


# ------------------------------------------------------------------------------ 1. empty label sets


def test_empty_label_sets_are_all_zero_rows_in_csv_and_jsonl(tmp_path):
    csv_path = write_csv(tmp_path / "t.csv", "text,labels,split", split_rows(12))
    data = load(csv_path, split_column="split")
    assert data.classes == ["a", "b"]
    assert data.rows_without_labels() == {"train": 2, "val": 1, "test": 1}
    Y = data.multi_hot("train")
    assert Y.shape == (6, 2) and (Y.sum(1) == 0).sum() == 2
    assert any("4 rows without labels kept as all-zero label rows (train 2, val 1, test 1)" in n for n in data.notes)
    jsonl = tmp_path / "t.jsonl"
    labels = [["a"], [], None, ["b"], "", "a|b"]
    jsonl.write_text("".join(json.dumps({"text": f"t{i}", "labels": lab, "split": SPLITS[i % 3]}) + "\n"
                             for i, lab in enumerate(labels)))
    data = load(jsonl, split_column="split")
    got = {e.id: e.labels for s in data.splits.values() for e in s}
    assert got == {"0": ["a"], "1": [], "2": [], "3": ["b"], "4": [], "5": ["a", "b"]}


@pytest.mark.parametrize("cell,needle", [('"a||b"', "empty label"), ('"[1, null]"', "not a name"),
                                         ('"a,b"', "wrong label separator")])
def test_malformed_labels_stay_errors(tmp_path, cell, needle):
    path = write_csv(tmp_path / "t.csv", "text,labels,split", split_rows(4) + [f"bad,{cell},train"])
    with pytest.raises(DatasetError, match=needle) as e:
        load(path, split_column="split")
    assert f"{path}:6: column 'labels'" in str(e.value)


def test_empty_labels_error_option_and_no_labels_at_all(tmp_path):
    path = write_csv(tmp_path / "t.csv", "text,labels,split", split_rows(6))
    with pytest.raises(DatasetError, match=r"t\.csv:4: no labels \(--empty-labels error"):
        load(path, split_column="split", empty_labels="error")
    with pytest.raises(ConfigError, match="--empty-labels 'maybe'"):
        load(path, split_column="split", empty_labels="maybe")
    none = write_csv(tmp_path / "n.csv", "text,labels,split", [f"t{i},,{SPLITS[i % 3]}" for i in range(6)])
    with pytest.raises(DatasetError, match="no row has a label"):
        load(none, split_column="split")
    assert load(none, split_column="split", classes="x").multi_hot("train").tolist() == [[0], [0]]


# ----------------------------------------------------------------------------- 2. one-class tables


def test_one_class_table_embeds_into_a_c1_cache(tmp_path, tiny_text_model):
    from mlhead.cache import cache_info, open_cache, verify_cache
    from mlhead.embed import EmbedConfig, embed

    rows = [f"spam text {i},{'spam' if i % 2 else ''},{SPLITS[i % 3]}" for i in range(12)]
    path = write_csv(tmp_path / "spam.csv", "text,labels,split", rows)
    data = load(path, split_column="split")
    assert data.classes == ["spam"] and data.multi_hot("val").shape == (4, 1)
    res = embed(EmbedConfig("table", path, tmp_path / "cache", backbone=str(tiny_text_model), random_init=True,
                            precision="fp32", workers=0, pooling="mean",
                            dataset_options={"text_column": "text", "split_column": "split"}))
    assert any("6 rows without labels" in n for n in res.notes)
    c = open_cache(res.path)
    X, Y, ids = c.load("train")
    assert c.classes == ["spam"] and Y.shape == (4, 1) and X.shape[0] == 4
    assert verify_cache(res.path) == []
    info = cache_info(res.path)
    assert {s: v["rows_without_labels"] for s, v in info["splits"].items()} == data.rows_without_labels()


# ---------------------------------------------------------------------------------- 3. split names


def test_split_name_spellings(tmp_path):
    names = ["TRAIN", "Train", " train ", "dev", "Valid", "VALIDATION", "val", "Test", "test"]
    rows = [f"t{i},a,{s}" for i, s in enumerate(names)]
    data = load(write_csv(tmp_path / "t.csv", "text,labels,fold", rows), split_column="fold")
    assert {s: [e.id for e in v] for s, v in data.splits.items()} == {
        "train": ["0", "1", "2"], "val": ["3", "4", "5", "6"], "test": ["7", "8"]}
    assert data.split_mode == "column" and data.split_seed is None and data.options["val_fraction"] is None
    bad = write_csv(tmp_path / "b.csv", "text,labels,fold", rows + ["x,a,holdout"])
    with pytest.raises(DatasetError, match=r"b\.csv:11: split 'holdout' in column 'fold' is not train, val"):
        load(bad, split_column="fold")


def test_train_test_only_gets_a_seeded_val_carved_from_train(tmp_path):
    rows = [f"t{i},a,{'test' if i % 5 == 0 else 'train'}" for i in range(50)]
    path = write_csv(tmp_path / "t.csv", "text,labels,split", rows)
    data = load(path, split_column="split")
    want_val = [str(i) for i in range(50) if i % 5 and hash_unit(44, str(i)) < 0.2]
    assert [e.id for e in data.splits["val"]] == want_val and len(want_val) > 0
    assert len(data.splits["train"]) == 40 - len(want_val) and len(data.splits["test"]) == 10
    assert data.options["val_fraction"] == 0.2 and data.split_seed == 44 and data.split_mode == "column"
    assert any("carved out as val" in n for n in data.notes)
    other = load(path, split_column="split", val_fraction="0.5")
    assert other.options["val_fraction"] == 0.5 and len(other.splits["val"]) > len(want_val)
    assert [e.id for e in load(path, split_column="split", split_seed=1).splits["val"]] != want_val
    with pytest.raises(ConfigError, match="--val-fraction '1.5'"):
        load(path, split_column="split", val_fraction="1.5")


def test_empty_split_is_a_clear_error_at_load_and_embed(tmp_path):
    from mlhead.embed import EmbedConfig, embed

    path = write_csv(tmp_path / "t.csv", "text,labels,split", [f"t{i},a,{['train', 'val'][i % 2]}" for i in range(6)])
    with pytest.raises(DatasetError, match=rf"{path}: split 'test' is empty \(train 3, val 3, test 0; split column"):
        load(path, split_column="split")
    with pytest.raises(DatasetError, match="split 'test' is empty"):
        embed(EmbedConfig("table", path, tmp_path / "cache", backbone="none",
                          dataset_options={"text_column": "text", "split_column": "split"}))
    tiny = write_csv(tmp_path / "tiny.csv", "text,labels", ["a,x", "b,y"])
    with pytest.raises(DatasetError, match=r"tiny\.csv: split '(val|test|train)' is empty .*hash split"):
        load(tiny)


# ----------------------------------------------------------------------------- 4. stable splits


def test_hash_split_is_stable_when_rows_are_added(tmp_path):
    rows = [f"text {i},{'ab'[i % 2]}" for i in range(20)]
    before = by_id(load(write_csv(tmp_path / "a.csv", "text,labels", rows), split_seed=0))
    for extra in (1, 15):
        more = rows + [f"text {20 + j},a" for j in range(extra)]
        after = by_id(load(write_csv(tmp_path / "b.csv", "text,labels", more), split_seed=0))
        assert len(after) == 20 + extra
        assert all(after[i][0] == before[i][0] for i in before), "an existing row moved to another split"
    # the documented rule: blake2b(f"{seed}:{id}") -> [0, 1) -> 60/20/20
    for i, (split, _) in before.items():
        u = hash_unit(0, i)
        assert split == ("train" if u < 0.6 else "val" if u < 0.8 else "test")
    ids = [f"id{i}" for i in range(40)]
    table = write_csv(tmp_path / "c.csv", "id,text,labels", [f"{i},x {i},a" for i in ids])
    shuffled = write_csv(tmp_path / "d.csv", "id,text,labels", [f"{i},x {i},a" for i in reversed(ids)])
    a, b = by_id(load(table, id_column="id")), by_id(load(shuffled, id_column="id"))
    assert {i: v[0] for i, v in a.items()} == {i: v[0] for i, v in b.items()}  # row order does not matter
    other_seed = by_id(load(table, id_column="id", split_seed=45))
    assert {i: v[0] for i, v in other_seed.items()} != {i: v[0] for i, v in a.items()}


def test_paper_datasets_keep_their_permutation_split(tmp_path):
    from mlhead.datasets.base import split_indices
    from test_datasets_extra import _meta_rows, write_meta_csv

    write_meta_csv(tmp_path / "meta.csv", _meta_rows(20))
    data = get_loader("arxiv2020").load(tmp_path)
    idx = split_indices(20, 44, "random")
    ids = [f"0704.{i + 1:04d}" for i in range(20)]
    assert {s: [e.id for e in v] for s, v in data.splits.items()} == {s: [ids[i] for i in idx[s]] for s in SPLITS}


def _skewed_table(path: Path, n=300, seed=0) -> Path:
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        labels = [c for c, p in (("common", 0.5), ("rare", 0.06), ("rarer", 0.03), ("mid", 0.2)) if rng.random() < p]
        rows.append(f"text {i},{'|'.join(labels)}")
    return write_csv(path, "text,labels", rows)


def _proportion_gap(data) -> float:
    """Largest |share of a class in a split - its share in the whole table| over classes and splits."""
    Y = {s: data.multi_hot(s).astype(float) for s in SPLITS}
    whole = np.concatenate(list(Y.values())).mean(0)
    return max(float(np.abs(Y[s].mean(0) - whole).max()) for s in SPLITS)


def test_stratified_split_follows_label_proportions_closer_than_random(tmp_path):
    path = _skewed_table(tmp_path / "skew.csv")
    strat = load(path, split_mode="stratified")
    assert {s: len(v) for s, v in strat.splits.items()} == {"train": 180, "val": 60, "test": 60}
    assert strat.split_mode == "stratified"
    assert _proportion_gap(strat) < 0.02
    gaps = [_proportion_gap(load(path, split_seed=seed)) for seed in range(5)]
    assert _proportion_gap(strat) < min(gaps)
    again = load(path, split_mode="stratified")
    assert all([e.id for e in strat.splits[s]] == [e.id for e in again.splits[s]] for s in SPLITS)
    assert [e.id for e in load(path, split_mode="stratified", split_seed=1).splits["test"]] != \
        [e.id for e in strat.splits["test"]]


# ------------------------------------------------------------------------------------- 5. formats


def test_semicolon_csv_is_sniffed_and_delimiter_can_be_given(tmp_path):
    rows = [f"text {i}, with comma;{'a|b' if i % 2 else 'a'};{SPLITS[i % 3]}" for i in range(6)]
    path = write_csv(tmp_path / "t.csv", "text;labels;split", rows)
    data = load(path, split_column="split")
    assert data.options["delimiter"] == ";" and data.splits["train"][0].input == "text 0, with comma"
    assert by_id(data)["1"][1].labels == ["a", "b"]
    pipe = write_csv(tmp_path / "p.txt", "text|labels|split", [r.replace(";", "|", 1).replace(";", "|") for r in
                                                               [f"t{i};a;{SPLITS[i % 3]}" for i in range(3)]])
    assert load(pipe, split_column="split", delimiter="|", label_sep=",").classes == ["a"]
    tsv_named = write_csv(tmp_path / "x.csv", "text\tlabels\tsplit", [f"t{i}\ta\t{SPLITS[i % 3]}" for i in range(3)])
    assert load(tsv_named, split_column="split", delimiter="tab").options["delimiter"] == "\t"
    with pytest.raises(ConfigError, match="--delimiter"):
        load(path, delimiter=";;")


def test_encoding_option_and_decode_error_line(tmp_path):
    rows = [f"caf\xe9 {i},r\xe9sum\xe9,{SPLITS[i % 3]}" for i in range(3)]
    path = write_csv(tmp_path / "l.csv", "text,labels,split", ["ok,a,train"] + rows, encoding="latin-1")
    with pytest.raises(DatasetError, match=r"l\.csv:3: not UTF-8 .* --encoding"):
        load(path, split_column="split")
    data = load(path, split_column="split", encoding="latin-1")
    assert "résumé" in data.classes and data.options["encoding"] == "latin-1"
    utf16 = write_csv(tmp_path / "u.csv", "text,labels,split", rows, encoding="utf-16")
    assert "résumé" in load(utf16, split_column="split", encoding="utf-16").classes
    with pytest.raises(DatasetError, match="unknown --encoding 'klingon'"):
        load(path, split_column="split", encoding="klingon")


def test_onehot_label_columns(tmp_path):
    rows = [f"t{i},{i % 2},{'true' if i % 3 == 0 else 'FALSE'},,{SPLITS[i % 3]}" for i in range(9)]
    path = write_csv(tmp_path / "t.csv", "text,g_drama,g_comedy,g_war,split", rows)
    data = load(path, split_column="split", label_prefix="g_")
    assert data.classes == ["drama", "comedy", "war"] and data.options["label_columns"] == ["drama", "comedy", "war"]
    got = {e.id: e.labels for s in data.splits.values() for e in s}
    assert got["0"] == ["comedy"] and got["1"] == ["drama"] and got["2"] == [] and got["3"] == ["drama", "comedy"]
    cols = load(path, split_column="split", label_columns="g_war,g_drama")
    assert cols.classes == ["g_war", "g_drama"] and cols.multi_hot("train")[:, 0].sum() == 0
    bad = write_csv(tmp_path / "b.csv", "text,g_drama,split", ["a,1,train", "b,yes,val", "c,0,test"])
    with pytest.raises(DatasetError, match=r"b\.csv:3: column 'g_drama': 'yes' is not a one-hot label value"):
        load(bad, split_column="split", label_prefix="g_")
    with pytest.raises(DatasetError, match="no column 'nope'"):
        load(path, split_column="split", label_columns="g_drama,nope")
    with pytest.raises(DatasetError, match="no column starts with --label-prefix 'x_'"):
        load(path, split_column="split", label_prefix="x_")
    with pytest.raises(ConfigError, match="not both"):
        load(path, label_columns="g_war", label_prefix="g_")


def test_parquet_tables(tmp_path):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    rows = [{"id": i, "text": f"text {i}", "labels": [["a"], [], None, ["a", "b, c"]][i % 4], "split": SPLITS[i % 3],
             "is_x": [1, 0, None][i % 3]} for i in range(9)]
    path = tmp_path / "t.parquet"
    pq.write_table(pa.Table.from_pylist(rows), path)
    data = load(path, split_column="split", id_column="id")
    got = {e.id: e.labels for s in data.splits.values() for e in s}
    assert got["0"] == ["a"] and got["1"] == [] and got["2"] == [] and got["3"] == ["a", "b, c"]
    assert data.classes == ["a", "b, c"] and data.options["delimiter"] is None
    onehot = load(path, split_column="split", label_columns="is_x")
    assert onehot.classes == ["is_x"] and onehot.multi_hot("train").ravel().tolist() == [1, 1, 1]
    assert onehot.rows_without_labels() == {"train": 0, "val": 3, "test": 3}  # 0 and null: no label
    bad = [{**r, "is_x": 2 if r["id"] == 4 else r["is_x"]} for r in rows]
    pq.write_table(pa.Table.from_pylist(bad), path)
    with pytest.raises(DatasetError, match=r"t\.parquet:row 5: column 'is_x': 2 is not a one-hot"):
        load(path, split_column="split", label_columns="is_x")
    (tmp_path / "junk.parquet").write_bytes(b"not parquet at all")
    with pytest.raises(DatasetError, match="junk.parquet: not a readable Parquet file"):
        load(tmp_path / "junk.parquet")


def test_label_containing_the_separator_is_explained(tmp_path):
    path = write_csv(tmp_path / "t.csv", "text,labels,split",
                     ['a,"Sci-Fi, Fantasy|Drama",train', "b,Drama,val", "c,Drama,test"])
    with pytest.raises(DatasetError, match=r"t\.csv:2: column 'labels': label 'Sci-Fi, Fantasy' contains ',': wrong "
                                           r"label separator .* write the labels field as a JSON list"):
        load(path, split_column="split")
    with pytest.raises(DatasetError, match=r"class 'Drama\|Noir' contains the separator '\|': write the labels "
                                           r"field as a JSON list"):
        load(write_csv(tmp_path / "k.csv", "text,labels,split", ["a,Drama|Noir,train"]), split_column="split",
             classes="Drama|Noir,Comedy")
    # the remedy works: a JSON list in a CSV cell keeps separators inside names
    fixed = write_csv(tmp_path / "f.csv", "text,labels,split",
                      ['a,"[""Sci-Fi, Fantasy"", ""Drama|Noir""]",train', 'b,"[""Drama|Noir""]",val',
                       'c,"[]",test'])
    data = load(fixed, split_column="split")
    assert by_id(data)["0"][1].labels == ["Sci-Fi, Fantasy", "Drama|Noir"] and by_id(data)["2"][1].labels == []


def test_every_bad_input_is_one_mlhead_error(tmp_path):
    path = write_csv(tmp_path / "t.csv", "text,labels,split", split_rows(6))
    for options in ({"val_fraction": "abc"}, {"delimiter": ""}, {"encoding": "nope"}, {"label_prefix": ""},
                    {"label_columns": "a,,b"}, {"split_column": "nope"}, {"label_columns": "labels", "classes": "a"}):
        with pytest.raises(MlheadError):
            load(path, split_column=options.pop("split_column", "split"), **options)


def test_cli_embed_prints_rows_without_labels_and_accepts_stratified(tmp_path, tiny_text_model):
    from click.testing import CliRunner

    from mlhead.cli import main

    rows = [f"text {i},{['a', 'b', ''][i % 3]}" for i in range(30)]
    path = write_csv(tmp_path / "t.csv", "text,labels", rows)
    res = CliRunner().invoke(main, ["embed", "--dataset", "table", "--data-dir", str(path), "--text-column", "text",
                                    "--backbone", str(tiny_text_model), "--random-init", "--pooling", "mean",
                                    "--workers", "0", "--cache-dir", str(tmp_path / "cache"),
                                    "--split-mode", "stratified"])
    assert res.exit_code == 0, res.output
    out = " ".join(res.output.split())
    assert "10 rows without labels kept as all-zero label rows" in out
