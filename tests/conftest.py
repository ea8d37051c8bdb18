"""Shared fixtures: tiny generated datasets and models so the tests run offline in seconds."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("MPLBACKEND", "Agg")

#: ../shared next to the repository (real data and weights); absent in some environments.
#: MLHEAD_SHARED_DIR points elsewhere (e.g. from a git worktree that has no ../shared).
SHARED = Path(os.environ.get("MLHEAD_SHARED_DIR") or Path(__file__).resolve().parents[1].parent / "shared")
TINY_IMAGE_BACKBONE = "test_efficientnet"  # a timm test model: random init, tiny, fast
CLASSES = ["cat", "dog", "bird"]


def shared_path(*parts: str) -> Path:
    """Path under ../shared, or skip the test when it is absent."""
    p = SHARED.joinpath(*parts)
    if not p.exists():
        pytest.skip(f"real data not present: {p}")
    return p


def _labels_for(i: int) -> list[str]:
    rng = np.random.default_rng(i)
    labels = [c for c in CLASSES if rng.random() < 0.5]
    return labels or [CLASSES[i % len(CLASSES)]]


@pytest.fixture
def image_table(tmp_path) -> Path:
    """A CSV (image, labels) of 30 small generated PNG images, labels separated by '|'."""
    from PIL import Image

    img_dir = tmp_path / "images"
    img_dir.mkdir()
    rows = []
    for i in range(30):
        rng = np.random.default_rng(i)
        arr = (rng.random((40, 48, 3)) * 255).astype(np.uint8)
        Image.fromarray(arr).save(img_dir / f"im{i}.png")
        rows.append({"id": f"im{i}", "image": f"images/im{i}.png", "labels": "|".join(_labels_for(i))})
    path = tmp_path / "images.csv"
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=["id", "image", "labels"])
        w.writeheader()
        w.writerows(rows)
    return path


@pytest.fixture
def text_table(tmp_path) -> Path:
    """A JSONL (text, labels as a list) of 40 short texts."""
    words = ["alpha", "beta", "gamma", "delta", "cat", "dog", "bird", "stock", "market", "news"]
    path = tmp_path / "texts.jsonl"
    with open(path, "w") as fh:
        for i in range(40):
            rng = np.random.default_rng(100 + i)
            text = " ".join(rng.choice(words, size=6))
            fh.write(json.dumps({"text": text, "labels": _labels_for(i)}) + "\n")
    return path


@pytest.fixture(scope="session")
def tiny_text_model(tmp_path_factory) -> Path:
    """A local Hugging Face folder: 2-layer BERT (hidden 32) + WordPiece tokenizer, random weights."""
    from transformers import BertConfig, BertModel, BertTokenizerFast

    folder = tmp_path_factory.mktemp("tiny_bert")
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "alpha", "beta", "gamma", "delta", "cat", "dog",
             "bird", "stock", "market", "news"]
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n")
    BertTokenizerFast(vocab_file=str(folder / "vocab.txt")).save_pretrained(folder)
    cfg = BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=64, max_position_embeddings=64)
    import torch
    torch.manual_seed(0)
    BertModel(cfg).save_pretrained(folder)
    return folder


def make_cache(path: Path, n=(120, 40, 40), dim=16, n_classes=5, seed=0) -> Path:
    """A complete synthetic cache with a learnable signal (labels from a random linear map)."""
    from mlhead.cache import write_cache

    rng = np.random.default_rng(seed)
    W = rng.normal(size=(dim, n_classes))
    splits = {}
    for name, m in zip(("train", "val", "test"), n):
        X = rng.normal(size=(m, dim)).astype(np.float32)
        Y = (X @ W > 0.5).astype(np.uint8)
        Y[Y.sum(1) == 0, 0] = 1
        splits[name] = (X, Y, [f"{name}{i}" for i in range(m)])
    return write_cache(path, splits, [f"c{j}" for j in range(n_classes)],
                       attrs={"dataset": "synthetic", "backbone": "none"})


# ------------------------------------------------------------- tiny fitted runs (predict, export)


def fit_tiny_run(cache, runs_dir) -> Path:
    """A crossentropy head (3 epochs, hidden 16) on ``cache``; returns the run directory."""
    from mlhead.train import FitConfig, RunSpec, fit

    rec = fit(cache, [RunSpec("crossentropy")], FitConfig(epochs=3, batch_size=8, hidden=16), runs_dir=runs_dir)[0]
    return rec.path


def embed_tiny(table, cache_dir, **kw) -> Path:
    """``mlhead embed --dataset table`` in fp32, file-order splits; returns the cache path."""
    from mlhead.embed import EmbedConfig, embed

    return embed(EmbedConfig("table", table, cache_dir=cache_dir, precision="fp32", batch_size=8, workers=0,
                             split_mode="paper-contiguous", **kw)).path


def make_images(folder, n, seed=0) -> list[Path]:
    """``n`` small random PNGs ``im00.png``... (heights vary) in ``folder``."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(n):
        paths.append(folder / f"im{i:02d}.png")
        Image.fromarray((rng.random((30 + i % 7, 40, 3)) * 255).astype(np.uint8)).save(paths[-1])
    return paths


@pytest.fixture(scope="session")
def image_run(tmp_path_factory):
    """An image run: tiny timm encoder from a weights file, cache (fp32), crossentropy head, evaluated
    under sigmoid>=0.5. Returns (run_dir, image paths by id, weights file)."""
    from safetensors.torch import save_file

    from mlhead.encoders import create_encoder
    from mlhead.rules import DecisionRule
    from mlhead.runs import evaluate_run

    tmp = tmp_path_factory.mktemp("image_run")
    paths = make_images(tmp / "images", 20)
    weights = tmp / "weights" / "tiny.safetensors"
    weights.parent.mkdir()
    save_file(create_encoder(TINY_IMAGE_BACKBONE, random_init=True).model.state_dict(), str(weights))
    table = tmp / "images.csv"
    with open(table, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["id", "image", "labels"])
        w.writerows([p.stem, f"images/{p.name}", ["a", "b", "a|c", "b|c"][i % 4]] for i, p in enumerate(paths))
    cache = embed_tiny(table, tmp / "cache", backbone=f"timm:{TINY_IMAGE_BACKBONE}", weights=weights,
                       dataset_options={"image_column": "image", "id_column": "id"})
    run_dir = fit_tiny_run(cache, tmp / "runs")
    evaluate_run(run_dir, "test", DecisionRule("sigmoid", 0.5))
    return run_dir, {p.stem: p for p in paths}, weights


@pytest.fixture(scope="session")
def text_run(tmp_path_factory, tiny_text_model):
    """A text run on the tiny BERT (mean pooling, fp32 cache), never evaluated. Returns (run_dir, texts)."""
    words = ["alpha", "beta", "gamma", "delta", "cat", "dog", "bird", "stock", "market", "news"]
    tmp = tmp_path_factory.mktemp("text_run")
    rng = np.random.default_rng(3)
    texts = [" ".join(rng.choice(words, size=2 + i % 5)) for i in range(20)]
    table = tmp / "texts.jsonl"
    table.write_text("".join(json.dumps({"text": t, "labels": ["x", "y", "x|z"][i % 3]}) + "\n"
                             for i, t in enumerate(texts)))
    cache = embed_tiny(table, tmp / "cache", backbone=str(tiny_text_model), pooling="mean",
                       dataset_options={"text_column": "text"})
    run_dir = fit_tiny_run(cache, tmp / "runs")
    return run_dir, texts
