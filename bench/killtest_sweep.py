"""Real-data resume check for sweeps (issue 17): a 25-run Table-2 sweep (5 losses x 5 seeds, 100 epochs)
on a real cache, run once uninterrupted and once killed with SIGKILL mid-training and rerun with the same
command; every run directory of the two is then compared file by file.

Compared per run (matched by its label, the run directory name without the timestamp): head.safetensors
bytes, history.csv text, config.json (all keys but ``train_seconds``) and the evaluation metrics. Prints
the number of identical runs, the epoch the kill came at (from the checkpoint) and the wall times.

Run:  python bench/killtest_sweep.py --cache cache/movieposters/mobilenetv2_100.h5 [--workdir /tmp/killsweep]
                                     [--kill-after 30] [--epochs 100] [--seeds 5] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.bench_train import _cpu_name  # noqa: E402

LOSSES = "crossentropy,focal,asl,unboundedf1,sigmoidf1"


def sweep_cmd(cache: Path, runs: Path, epochs: int, seeds: int) -> list[str]:
    mlhead = Path(sys.executable).with_name("mlhead")
    return [str(mlhead), "sweep", "--cache", str(cache), "--loss", LOSSES, "--seed",
            ",".join(map(str, range(seeds))), "--epochs", str(epochs), "--activation", "softmax",
            "--threshold", "0.05", "--runs-dir", str(runs)]


def run_files(runs: Path) -> dict:
    """label -> (head bytes, history text, config without train_seconds, metrics) of every run."""
    out = {}
    for cfg_path in sorted(runs.rglob("config.json")):
        d = cfg_path.parent
        cfg = json.loads(cfg_path.read_text())
        cfg.pop("train_seconds", None)
        metrics = sorted((p.name, json.loads(p.read_text())["metrics"]) for p in d.glob("metrics*.json"))
        out[d.name.split("-", 3)[-1]] = ((d / "head.safetensors").read_bytes(), (d / "history.csv").read_text(),
                                         cfg, metrics)
    return out


def kill_mid_sweep(cmd: list[str], runs: Path, kill_after: int, log: Path) -> int:
    """Start the sweep, SIGKILL it once its checkpoint has been rewritten ``kill_after`` times; returns
    the epoch stored in the checkpoint it left."""
    with open(log, "w") as fh:
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT)
    seen, last = 0, None
    while seen < kill_after:
        if proc.poll() is not None:
            raise SystemExit(f"the sweep ended before {kill_after} checkpoints (exit {proc.returncode}); see {log}")
        ckpts = list(runs.glob(".partial/fit-*/checkpoint.pt"))
        stamp = ckpts[0].stat().st_mtime_ns if ckpts else None
        if stamp is not None and stamp != last:
            seen, last = seen + 1, stamp
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    ckpt = next(runs.glob(".partial/fit-*/checkpoint.pt"))
    return int(torch.load(ckpt, map_location="cpu", weights_only=True)["state"]["epoch"])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cache", type=Path, required=True)
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/killsweep"))
    ap.add_argument("--kill-after", type=int, default=30, help="checkpoint writes seen before the kill")
    ap.add_argument("--epochs", type=int, default=100)
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    shutil.rmtree(args.workdir, ignore_errors=True)
    args.workdir.mkdir(parents=True)
    a, b = args.workdir / "uninterrupted", args.workdir / "killed"
    t0 = time.perf_counter()
    subprocess.run(sweep_cmd(args.cache, a, args.epochs, args.seeds), check=True, stdout=subprocess.DEVNULL)
    t1 = time.perf_counter()
    epoch = kill_mid_sweep(sweep_cmd(args.cache, b, args.epochs, args.seeds), b, args.kill_after,
                           args.workdir / "killed.log")
    t2 = time.perf_counter()
    written_at_kill = len(list(b.rglob("config.json")))
    subprocess.run(sweep_cmd(args.cache, b, args.epochs, args.seeds), check=True,
                   stdout=open(args.workdir / "resumed.log", "w"), stderr=subprocess.STDOUT)
    t3 = time.perf_counter()
    fa, fb = run_files(a), run_files(b)
    same = sum(fa[k] == fb.get(k) for k in fa)
    out = {"runs": len(fa), "runs_after_resume": len(fb), "identical": same, "killed_after_epoch": epoch,
           "run_dirs_when_killed": written_at_kill, "uninterrupted_s": round(t1 - t0, 1),
           "killed_part_s": round(t2 - t1, 1), "resumed_part_s": round(t3 - t2, 1),
           "cpu": _cpu_name(), "cache": str(args.cache)}
    print(json.dumps(out, indent=1))
    if args.json:
        args.json.write_text(json.dumps(out, indent=1))
    return 0 if same == len(fa) == len(fb) else 1


if __name__ == "__main__":
    sys.exit(main())
