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
