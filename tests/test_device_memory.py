"""device.reuse_freed_memory: a wide stacked training step reuses freed memory instead of page-faulting."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from mlhead.device import reuse_freed_memory

_STEPS = r"""
import json, resource, torch
from mlhead import train as T
from mlhead.device import reuse_freed_memory
tuned = reuse_freed_memory()
torch.manual_seed(0)
x, y = torch.randn(256, 1280).bfloat16(), (torch.rand(256, 28) < 0.1).float()
specs = [T.RunSpec("sigmoidf1", (("beta", float(b)),)) for b in range(1, 9)]
g = T._make_groups(specs, 1280, 1024, 28, torch.device("cpu"))[0]

def step():
    g.opt.zero_grad(set_to_none=True)
    with torch.autocast("cpu", torch.bfloat16):
        logits = g.heads(x)
    T._group_loss(g, logits, y).sum().backward()
    g.opt.step()

for _ in range(3):
    step()
faults = []
for _ in range(7):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    step()
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(json.dumps({"tuned": tuned, "faults": sorted(faults)[len(faults) // 2]}))
"""


def _faults_per_step(tuning: str) -> dict:
    """Median minor page faults over 7 steps (after 3 warm-up steps) of an 8-head stacked step (fp32
    weight gradient 42 MiB, above glibc's largest default mmap threshold) in a fresh process with MLHEAD_MALLOC_TUNING=``tuning``.

    The median, not the mean: the heap can still grow once after the warm-up (one step faulting ~10,000
    pages, seen on a CPU without AVX-512 where oneDNN's bf16 path allocates differently), which is not
    the per-step cost this measures."""
    env = {**os.environ, "MLHEAD_MALLOC_TUNING": tuning, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    out = subprocess.run([sys.executable, "-c", _STEPS], env=env, check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc mallopt")
def test_wide_stacked_step_stops_page_faulting_after_tuning():
    plain, tuned = _faults_per_step("0"), _faults_per_step("1")
    if not tuned["tuned"]:
        pytest.skip("not glibc")
    assert plain["faults"] > 5_000  # the step's big buffers are fresh mmaps each time (~1 fault per 4 KiB page)
    assert tuned["faults"] < 0.1 * plain["faults"]


def test_opt_out_leaves_malloc_alone(monkeypatch):
    monkeypatch.setenv("MLHEAD_MALLOC_TUNING", "0")
    assert reuse_freed_memory() is False
