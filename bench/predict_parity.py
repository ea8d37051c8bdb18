"""Parity of `mlhead predict` on raw inputs with `mlhead eval` on the cached embeddings, and of an ONNX export
with `mlhead predict`.

    python bench/predict_parity.py table RUN SPLIT OUT.csv [--data-dir DIR]
        writes a predict input table (id, image or text) of the run's cache SPLIT, rebuilt by the cache's
        dataset loader (same ids, same inputs the cache was embedded from)
    python bench/predict_parity.py compare RUN SPLIT PREDICTIONS.jsonl
        label agreement (exact label set per row) and max |score difference| of the predictions against
        the run's head on the cached SPLIT embeddings under the same rule (what eval evaluates)
    python bench/predict_parity.py onnx EXPORT_DIR TABLE PREDICTIONS.jsonl [--n 200]
        onnxruntime scores of the exported model on the first N rows of TABLE (image or text column,
        preprocessed as preprocessing.json says, without torch) against PREDICTIONS' scores
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def write_table(run: str, split: str, out: str, data_dir: str | None) -> None:
    from mlhead.cache import open_cache
    from mlhead.datasets import get_loader
    from mlhead.runs import load_run_config

    cfg = load_run_config(run)
    attrs = open_cache(cfg.cache).attrs
    data = get_loader(cfg.dataset if attrs.get("dataset") != "table" else "table")
    loaded = data.load(Path(data_dir), split_seed=attrs["split_seed"], split_mode=attrs["split_mode"],
                       **(attrs.get("dataset_options") or {}))
    column = "image" if attrs["modality"] == "image" else "text"
    with open(out, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["id", column])
        w.writerows([e.id, e.input] for e in loaded.splits[split])
    print(f"{len(loaded.splits[split])} rows of {split} -> {out}")


def compare(run: str, split: str, predictions: str) -> None:
    from mlhead.runs import predict
    from mlhead.rules import DecisionRule

    logits, _, ids, cfg = predict(run, split)
    rows = {r["id"]: r for r in map(json.loads, Path(predictions).read_text().splitlines())}
    rule = DecisionRule.from_dict(_rule_of(run, next(iter(rows.values()))["rule"]))
    want_scores, want = rule.scores(logits), rule.apply(logits)
    classes = cfg["classes"]
    same, diff, missing = 0, 0.0, 0
    for i, row_id in enumerate(ids):
        r = rows.get(row_id)
        if r is None:
            missing += 1
            continue
        same += set(r["labels"]) == {classes[j] for j in np.flatnonzero(want[i])}
        diff = max(diff, max(abs(r["scores"][c] - want_scores[i, j]) for j, c in enumerate(classes)))
    n = len(ids) - missing
    print(f"rule {rule.name}: {same}/{n} rows with identical labels ({100 * same / n:.2f} %), "
          f"max |score difference| {diff:.2e}, {missing} cached rows not predicted")


def _rule_of(run: str, name: str) -> dict:
    from mlhead.runs import last_rule

    rule = last_rule(run)
    if rule.name != name:
        raise SystemExit(f"predictions were made under {name!r}, the run's last rule is {rule.name!r}")
    return rule.to_dict()


def onnx_parity(folder: str, table: str, predictions: str, n: int) -> None:
    import onnxruntime as ort

    label = _doc_script()
    folder = Path(folder)
    pre = json.loads((folder / "preprocessing.json").read_text())
    rows = list(csv.DictReader(open(table, newline="", encoding="utf-8")))[:n]
    want = {r["id"]: r["scores"] for r in map(json.loads, Path(predictions).read_text().splitlines())}
    classes = json.loads((folder / "labels.json").read_text())
    sess = ort.InferenceSession(str(folder / "model.onnx"), providers=["CPUExecutionProvider"])
    if pre["modality"] == "image":
        feeds = {"pixels": np.stack([label.pixels(r["image"], pre) for r in rows])}
    else:
        from tokenizers import Tokenizer

        tok = Tokenizer.from_file(str(folder / pre["tokenizer"]))
        tok.enable_truncation(pre["max_length"])
        enc = [tok.encode(r["text"]) for r in rows]  # one by one: padding-free, as mlhead pads per batch
        got = np.concatenate([sess.run(["scores"], {"input_ids": np.array([e.ids], np.int64),
                                                    "attention_mask": np.array([e.attention_mask], np.int64)})[0]
                              for e in enc])
        feeds = None
    if feeds is not None:
        got = np.concatenate([sess.run(["scores"], {k: v[i:i + 32] for k, v in feeds.items()})[0]
                              for i in range(0, len(rows), 32)])
    ref = np.array([[want[r["id"]][c] for c in classes] for r in rows])
    print(f"{len(rows)} rows: max |onnxruntime - mlhead predict| score difference {np.abs(got - ref).max():.2e}")


def _doc_script():
    import re
    import types

    doc = Path(__file__).resolve().parents[1] / "docs" / "export.md"
    mod = types.ModuleType("label_doc")
    exec(re.search(r"```python\n(.*?)```", doc.read_text(), re.S).group(1), mod.__dict__)
    return mod


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("table")
    t.add_argument("run"), t.add_argument("split"), t.add_argument("out"), t.add_argument("--data-dir")
    c = sub.add_parser("compare")
    c.add_argument("run"), c.add_argument("split"), c.add_argument("predictions")
    o = sub.add_parser("onnx")
    o.add_argument("folder"), o.add_argument("table"), o.add_argument("predictions")
    o.add_argument("--n", type=int, default=200)
    a = ap.parse_args(argv)
    if a.cmd == "table":
        write_table(a.run, a.split, a.out, a.data_dir)
    elif a.cmd == "compare":
        compare(a.run, a.split, a.predictions)
    else:
        onnx_parity(a.folder, a.table, a.predictions, a.n)
    return 0


if __name__ == "__main__":
    sys.exit(main())
