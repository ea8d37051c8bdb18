"""The ``table`` dataset's options are real ``mlhead embed`` flags (generated from the loader's
``DatasetOption`` declarations), not only ``-D key=value`` (issue #16): ``--delimiter``, ``--encoding``,
``--label-columns``, ``--label-prefix``, ``--split-column``, ``--val-fraction``, ``--split-mode``."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
from click.testing import CliRunner

from mlhead.cache import open_cache
from mlhead.cli import main
from mlhead.datasets import get_loader

TABLE_FLAGS = ("delimiter", "encoding", "label_columns", "label_prefix", "split_column", "val_fraction",
               "empty_labels", "id_column", "classes", "label_sep")


def _write_table(path, n=40):
    """Semicolon CSV in latin-1 (accents), one-hot columns lab_a, lab_b, a split column with train/Test only,
    some rows with no label."""
    rng = np.random.default_rng(0)
    rows, truth = ["id;text;lab_a;lab_b;split"], {}
    for i in range(n):
        a, b = (int(x) for x in rng.integers(0, 2, 2))
        split = "Test" if i % 4 == 0 else "TRAIN"
        rows.append(f"r{i};café crème {i} déjà vu;{a};{b};{split}")
        truth[f"r{i}"] = (split.lower(), [a, b])
    path.write_bytes("\n".join(rows).encode("latin-1"))
    return truth


def _u(seed: int, rid: str) -> float:
    """Independent reimplementation of the stable split hash (blake2b of 'seed:id', first 8 bytes)."""
    return int.from_bytes(hashlib.blake2b(f"{seed}:{rid}".encode(), digest_size=8).digest(), "big") / 2 ** 64


def test_every_table_option_is_an_embed_flag():
    out = CliRunner().invoke(main, ["embed", "--help"], terminal_width=200).output
    assert set(TABLE_FLAGS) <= set(get_loader("table").OPTIONS)
    for name in TABLE_FLAGS:
        assert f"--{name.replace('_', '-')} " in out, name


@pytest.mark.parametrize("labels,classes", [(["--label-columns", "lab_a,lab_b"], ["lab_a", "lab_b"]),
                                            (["--label-prefix", "lab_"], ["a", "b"])])  # the prefix is dropped
def test_table_flags_embed_a_semicolon_latin1_one_hot_table(tmp_path, tiny_text_model, labels, classes):
    table = tmp_path / "t.csv"
    truth = _write_table(table)
    args = ["embed", "--dataset", "table", "--data-dir", table, "--text-column", "text", "--id-column", "id",
            "--delimiter", ";", "--encoding", "latin-1", *labels, "--split-column", "split",
            "--val-fraction", "0.25", "--backbone", tiny_text_model, "--cache-dir", tmp_path / "c",
            "--precision", "fp32", "--workers", "0", "--batch-size", "8"]
    res = CliRunner().invoke(main, [str(a) for a in args])
    assert res.exit_code == 0, res.output
    path = next((tmp_path / "c").rglob("*.h5"))
    c = open_cache(path)
    assert [str(x) for x in c.classes] == classes
    seen = {}
    for split in ("train", "val", "test"):
        _, Y, ids = c.load(split)
        for rid, y in zip(ids, Y.numpy().tolist()):
            seen[rid] = (split, y)
    want = {}
    for rid, (split, y) in truth.items():
        if split == "train" and _u(44, rid) < 0.25:
            split = "val"
        want[rid] = (split, y)
    assert seen == want
    assert sum(1 for s, y in want.values() if s == "val") > 0 and any(y == [0, 0] for _, y in want.values())


def test_bad_table_flag_values_are_errors_in_flag_terms(tmp_path):
    table = tmp_path / "t.csv"
    _write_table(table)
    base = ["embed", "--dataset", "table", "--data-dir", str(table), "--text-column", "text", "--random-init",
            "--cache-dir", str(tmp_path / "c")]
    for extra, needle in ((["--val-fraction", "1.5"], "--val-fraction"),
                          (["--encoding", "no-such-codec"], "--encoding"),
                          (["--empty-labels", "maybe"], "--empty-labels")):
        res = CliRunner().invoke(main, base + ["--delimiter", ";", "--label-prefix", "lab_"] + extra)
        assert res.exit_code == 2 and needle in res.output and "Traceback" not in res.output, (extra, res.output)
