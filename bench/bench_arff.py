"""ARFF parse speed and agreement: mlhead's reader (mlhead/datasets/mulan.py) vs liac-arff.

For every ``*.arff`` under the MULAN folder (dense and sparse files), in one process:

* ``ours``: ``read_arff(path)`` -> float32 N x A array (nominal values as their declared index,
  omitted sparse values 0);
* ``liac``: ``arff.load(fh, return_type=arff.DENSE)`` (liac-arff, pure Python), then the same
  conversion to a float32 N x A array (nominal strings -> declared index), so both sides end with
  what the loader needs;
* whether the two arrays are identical (``np.array_equal``), and the attribute names/kinds agree
  (liac-arff 2.4 keeps the backslash of an escaped quote in a quoted name, ``'Swainson\\'s Thrush'``
  -> ``Swainson\\'s Thrush``; ours unescapes it, as the MULAN label XML spells the name).

Times are the minimum of ``--repeat`` runs per file (page cache warm after the first), wall
clock (``time.perf_counter``), so a busy shared machine inflates both sides alike.

Run:  python bench/bench_arff.py [--data-dir ../shared/data/mulan] [--repeat 3] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mlhead.datasets.mulan import read_arff  # noqa: E402


def liac_read(path: Path) -> tuple[list[tuple[str, object]], np.ndarray]:
    """liac-arff's parse of ``path`` converted to mlhead's layout: (attributes, float32 N x A)."""
    import arff

    with open(path, encoding="utf-8", errors="replace") as fh:
        doc = arff.load(fh, return_type=arff.DENSE)
    attrs = doc["attributes"]
    out = np.zeros((len(doc["data"]), len(attrs)), dtype=np.float32)
    for j, (_, kind) in enumerate(attrs):
        if isinstance(kind, list):  # nominal: index of the declared value
            index = {v: i for i, v in enumerate(kind)}
            out[:, j] = [index[row[j]] if row[j] is not None else np.nan for row in doc["data"]]
        else:
            out[:, j] = [np.nan if row[j] is None else row[j] for row in doc["data"]]
    return attrs, out


def best_of(fn, repeat: int) -> tuple[float, object]:
    """(minimum wall seconds over ``repeat`` calls of ``fn()``, the last result)."""
    best, result = float("inf"), None
    for _ in range(repeat):
        t0 = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - t0)
    return best, result


def compare(path: Path, repeat: int) -> dict:
    """One row: file, rows, attributes, sparse rows, seconds for each reader, identical arrays?"""
    t_ours, ours = best_of(lambda: read_arff(path), repeat)
    t_liac, (attrs, arr) = best_of(lambda: liac_read(path), repeat)
    same_names = [a.name for a in ours.attributes] == [a for a, _ in attrs]
    same_kinds = [a.kind == "nominal" for a in ours.attributes] == [isinstance(k, list) for _, k in attrs]
    return {
        "file": f"{path.parent.name}/{path.name}", "mb": path.stat().st_size / 1e6,
        "rows": int(ours.values.shape[0]), "attributes": int(ours.values.shape[1]),
        "sparse": ours.sparse_rows > 0, "ours_s": t_ours, "liac_s": t_liac,
        "liac_over_ours": t_liac / t_ours,
        "same_array": bool(ours.values.shape == arr.shape and np.array_equal(ours.values, arr)),
        "same_attributes": bool(same_names and same_kinds),
    }


def main(argv: list[str] | None = None) -> int:
    """Print one line per ARFF file and the totals; optionally write them as JSON."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default = Path(os.environ["MLHEAD_DATA_DIR"]) / "mulan" if os.environ.get("MLHEAD_DATA_DIR") else \
        Path(__file__).resolve().parents[2] / "shared" / "data" / "mulan"
    ap.add_argument("--data-dir", type=Path, default=default,
                    help="folder searched recursively for *.arff [$MLHEAD_DATA_DIR/mulan, else ../shared/data/mulan]")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    files = sorted(args.data_dir.rglob("*.arff"))
    if not files:
        print(f"no .arff files under {args.data_dir}", file=sys.stderr)
        return 2
    rows = []
    print(f"{'file':42s} {'MB':>6s} {'rows':>6s} {'attrs':>6s} {'sparse':>6s} {'ours s':>8s} {'liac s':>8s} "
          f"{'liac/ours':>9s} {'array':>5s} names")
    for path in files:
        r = compare(path, args.repeat)
        rows.append(r)
        print(f"{r['file']:42s} {r['mb']:6.2f} {r['rows']:6d} {r['attributes']:6d} {str(r['sparse']):>6s} "
              f"{r['ours_s']:8.3f} {r['liac_s']:8.3f} {r['liac_over_ours']:9.2f} "
              f"{str(r['same_array']):>5s} {r['same_attributes']}")
    tot_o, tot_l = sum(r["ours_s"] for r in rows), sum(r["liac_s"] for r in rows)
    print(f"total: ours {tot_o:.2f} s, liac-arff {tot_l:.2f} s, liac/ours {tot_l / tot_o:.2f}; "
          f"identical arrays in {sum(r['same_array'] for r in rows)}/{len(rows)} files")
    if args.json:
        args.json.write_text(json.dumps({"files": rows, "ours_s": tot_o, "liac_s": tot_l}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
