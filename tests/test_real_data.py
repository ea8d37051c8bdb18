"""Checks on the real data and weights in ../shared (skipped when absent).

The embeddings of real posters are recomputed independently (timm + safetensors + PIL, following the
weights README), and a run's metrics are recomputed with scikit-learn from the saved head.
"""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from conftest import shared_path
from mlhead.cache import open_cache
from mlhead.cli import main


@pytest.fixture(scope="module")
def poster_table(tmp_path_factory):
    """The first 12 real posters of ../shared/data/movieposters as a `table` CSV."""
    root = shared_path("data", "movieposters")
    out = tmp_path_factory.mktemp("posters") / "posters.csv"
    rows = []
    with open(root / "MovieGenre.csv", newline="") as fh:
        for row in csv.DictReader(fh):
            if (root / "MoviePosters" / row["Poster"]).is_file():
                rows.append({"id": row["Poster"], "image": str(root / "MoviePosters" / row["Poster"]),
                             "labels": row["Genre"]})
            if len(rows) == 12:
                break
    with open(out, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=["id", "image", "labels"])
        w.writeheader()
        w.writerows(rows)
    return out


def test_poster_embeddings_match_an_independent_timm_forward(tmp_path, poster_table):
    import timm
    from PIL import Image
    from safetensors.torch import load_file

    weights = shared_path("weights", "mobilenetv2_100")
    res = CliRunner().invoke(main, ["embed", "--dataset", "table", "--data-dir", str(poster_table), "--image-column",
                                    "image", "--id-column", "id", "--weights", str(weights), "--precision", "fp32",
                                    "--cache-dir", str(tmp_path), "--workers", "0", "--batch-size", "4"])
    assert res.exit_code == 0, res.output
    cache = open_cache(next(tmp_path.rglob("*.h5")))
    assert cache.attrs["weights_sha256"] == "fc62b4e7280ec92f43920abbfc755fd84e4132c045e9f3a1a8fd576bae610512"
    # independent path: the weights README's recipe (a), data config from the weights' config.json
    m = timm.create_model("mobilenetv2_100", pretrained=False, pad_type="same")
    m.load_state_dict(load_file(str(weights / "model.safetensors")), strict=True)
    m.reset_classifier(0)
    m.eval()
    cfg = json.loads((weights / "config.json").read_text())["pretrained_cfg"]
    tf = timm.data.create_transform(input_size=tuple(cfg["input_size"]), interpolation=cfg["interpolation"],
                                    mean=tuple(cfg["mean"]), std=tuple(cfg["std"]), crop_pct=cfg["crop_pct"],
                                    crop_mode=cfg["crop_mode"])
    for split in cache.splits:
        X, _, ids = cache.load(split)
        rows = {r["id"]: r for r in csv.DictReader(open(poster_table))}
        with torch.no_grad():
            ref = m(torch.stack([tf(Image.open(rows[i]["image"]).convert("RGB")) for i in ids])).numpy()
        # cache stores float16: compare at float16 resolution
        np.testing.assert_allclose(X.numpy(), ref, rtol=2e-3, atol=2e-3)


def test_staged_weights_classify_a_real_photo():
    """The TF MobileNetV2 weights give a sensible ImageNet prediction (weights README: chelsea -> tiger cat)."""
    skimage = pytest.importorskip("skimage.data")
    import timm
    from safetensors.torch import load_file

    weights = shared_path("weights", "mobilenetv2_100")
    m = timm.create_model("mobilenetv2_100", pretrained=False, pad_type="same")
    m.load_state_dict(load_file(str(weights / "model.safetensors")))
    m.eval()
    from PIL import Image

    from mlhead.encoders import create_encoder
    bb = create_encoder("mobilenetv2_100", weights=weights)
    x = bb.transform(Image.fromarray(skimage.chelsea()))[None]
    with torch.no_grad():
        top = m(x).argmax().item()
    assert top in (281, 282, 285)  # tabby, tiger cat, Egyptian cat


def test_movieposters_counts_match_data_readme():
    from mlhead.datasets import get_loader

    d = get_loader("movieposters").load(shared_path("data", "movieposters"))
    Y = np.concatenate([d.multi_hot(s) for s in d.splits])
    assert Y.shape == (7984, 15)
    assert abs(Y.sum(1).mean() - 2.52) < 0.005
    freq = dict(zip(d.classes, Y.sum(0)))
    assert freq["Comedy"] == 2856 and freq["Sport"] == 288
    o = get_loader("movieposters").load(shared_path("data", "movieposters"), labels="original")
    Yo = np.concatenate([o.multi_hot(s) for s in o.splits])
    assert Yo.shape == (7903, 18) and abs(Yo.sum(1).mean() - 2.707) < 0.001


@pytest.mark.slow
def test_eval_metrics_recomputed_with_sklearn_from_saved_head(tmp_path):
    """Fit on the real MoviePosters cache (if built under ./cache), then recompute with sklearn."""
    from pathlib import Path

    from safetensors.torch import load_file
    from sklearn.metrics import average_precision_score, f1_score, precision_score

    cache_path = Path("cache/movieposters/mobilenetv2_100.h5")
    if not cache_path.exists():
        pytest.skip("run `make demo` first to build the real MoviePosters cache")
    runner = CliRunner()
    assert runner.invoke(main, ["fit", "--cache", str(cache_path), "--epochs", "5", "--runs-dir", str(tmp_path)]).exit_code == 0
    out = tmp_path / "m.json"
    assert runner.invoke(main, ["eval", "--runs-dir", str(tmp_path), "--output", str(out)]).exit_code == 0
    doc = json.loads(out.read_text())
    run = next(tmp_path.rglob("head.safetensors")).parent
    w = load_file(str(run / "head.safetensors"))
    X, Y, _ = open_cache(cache_path).load("test")
    z = torch.relu(X @ w["fc1.weight"].T + w["fc1.bias"]) @ w["fc2.weight"].T + w["fc2.bias"]
    p = torch.softmax(z, 1).numpy()
    pred = (p >= 0.05).astype(int)
    y = Y.numpy()
    assert doc["metrics"]["weighted_f1"] == pytest.approx(100 * f1_score(y, pred, average="weighted", zero_division=0), abs=1e-6)
    assert doc["metrics"]["micro_f1"] == pytest.approx(100 * f1_score(y, pred, average="micro", zero_division=0), abs=1e-6)
    assert doc["metrics"]["macro_precision"] == pytest.approx(
        100 * precision_score(y, pred, average="macro", zero_division=0), abs=1e-6)
    assert doc["metrics"]["map"] == pytest.approx(100 * average_precision_score(y, p, average="macro"), abs=1e-4)


def test_bench_embed_smoke_on_real_inputs(tmp_path):
    """bench/bench_embed.py runs end to end on real posters and on short (arXiv and Reuters titles) and
    long (arXiv abstracts) texts (random-init backbones, a few rows) and writes one row per input with one
    ratio per round; texts also give the sorted pure forward and the min cosine vs dataset order."""
    import subprocess
    import sys
    from pathlib import Path

    shared_path("data", "movieposters")
    shared_path("data", "arxiv")
    shared_path("data", "reuters21578")
    out = tmp_path / "embed.json"
    root = Path(__file__).resolve().parents[1]
    proc = subprocess.run([sys.executable, str(root / "bench" / "bench_embed.py"), "--n", "24", "--text-n", "24",
                           "--long-n", "16", "--max-length", "64", "--batch-size", "8", "--random-init", "--repeat",
                           "2", "--workers", "0", "--compare-workers", "1", "--json", str(out)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    doc = json.loads(out.read_text())
    assert [r["what"].split()[0] for r in doc["results"]] == ["images", "texts", "texts", "texts"]
    assert [r.get("texts") for r in doc["results"][1:]] == ["short: arXiv titles", "short: Reuters titles",
                                                            "long: arXiv abstracts"]
    for r in doc["results"]:
        key = "ratio_loop_vs_sorted" if "texts" in r else "ratio_loop_vs_pure"
        assert r["rounds"] == 2 and len(r["ratios_per_round"]) == 2
        assert r["rows"] > 0 and r["pure_forward_rows_s"] > 0
        assert min(r["ratios_per_round"]) - 1e-9 <= r[key] <= max(r["ratios_per_round"]) + 1e-9
        assert r["rows"] == 2 * (r["rows"] // 2)  # the totals of both rounds
        if "texts" in r:
            assert r["pure_sorted_rows_s"] > 0 and 0.9999 <= r["min_cosine_vs_unsorted"] <= 1 + 1e-9
            assert 0 < r["tokenize_share"] < 1 and r["compare_workers"] == 1  # embed with --workers 0 vs 1
            per = r["ratios_default_vs_compare_workers_per_round"]
            assert len(per) == 2 and min(per) - 1e-9 <= r["ratio_default_vs_compare_workers"] <= max(per) + 1e-9
            assert r["ratio_default_vs_compare_workers"] == pytest.approx(
                r["embed_default_workers_loop_rows_s"] / r["embed_compare_workers_loop_rows_s"])
