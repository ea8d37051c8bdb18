"""mlhead.ranking: P@k, R@k, nDCG@k, PSP@k from chunked top-k, against brute-force loops over rows."""

from __future__ import annotations

import math
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mlhead.errors import ConfigError, MlheadError, NumericalError
from mlhead.metrics import decide
from mlhead.ranking import inverse_propensity, label_counts, ranking_metrics, topk_indices

REPO = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------------ brute-force reference


def brute_rank(row, k):
    """Class indices by score descending, ties to the lower index: a plain sort over (-score, index)."""
    return sorted(range(len(row)), key=lambda j: (-float(row[j]), j))[:k]


def brute_inv_propensity(counts, n, a=0.55, b=1.5):
    """1/p_l with p_l = 1 / (1 + C e^{-A log(N_l + B)}), C = (log N - 1)(B + 1)^A, one label at a time."""
    c = (math.log(n) - 1) * (b + 1) ** a
    return [1 / (1 / (1 + c * math.exp(-a * math.log(n_l + b)))) for n_l in counts]


def brute_metrics(scores, y, ks, counts=None, n_train=None):
    """Every metric by a loop over rows, in percent (conventions of mlhead.ranking.POLICY)."""
    n = len(scores)
    inv_p = brute_inv_propensity(counts, n_train) if counts is not None else None
    out = {}
    for k in ks:
        p = r = nd = psp_num = psp_den = 0.0
        for i in range(n):
            truth = {j for j, v in enumerate(y[i]) if v}
            top = brute_rank(scores[i], k)
            found = sum(1 for j in top if j in truth)
            p += found / k
            if truth:
                r += found / len(truth)
                dcg = sum(1 / math.log2(rank + 2) for rank, j in enumerate(top) if j in truth)
                idcg = sum(1 / math.log2(rank + 2) for rank in range(min(k, len(truth))))
                nd += dcg / idcg
            if inv_p is not None:
                psp_num += sum(inv_p[j] for j in top if j in truth) / k
                psp_den += sum(sorted((inv_p[j] for j in truth), reverse=True)[:k]) / k
        out[f"p@{k}"], out[f"r@{k}"], out[f"ndcg@{k}"] = 100 * p / n, 100 * r / n, 100 * nd / n
        if inv_p is not None:
            out[f"psp@{k}"] = 100 * psp_num / psp_den if psp_den else float("nan")
    return out


def assert_metrics_equal(got, want):
    for key, v in want.items():
        if math.isnan(v):
            assert math.isnan(got[key]), key
        else:
            assert got[key] == pytest.approx(v, rel=1e-9, abs=1e-9), key


def csr_tuple(y):
    m = sp.csr_matrix(np.asarray(y))
    return m.indptr, m.indices


# --------------------------------------------------------------------------------- hand-worked


# Three rows, four classes. Ranks (score desc, ties -> lower index):
#   row 0: scores .9 .1 .8 .3 -> [0, 2, 3, 1]; labels {0, 1}
#   row 1: scores .2 .2 .9 .2 -> [2, 0, 1, 3]; labels {1}
#   row 2: scores .5 .6 .7 .8 -> [3, 2, 1, 0]; labels {}  (empty row)
SCORES = np.array([[.9, .1, .8, .3], [.2, .2, .9, .2], [.5, .6, .7, .8]])
Y = np.array([[1, 1, 0, 0], [0, 1, 0, 0], [0, 0, 0, 0]])
L2, L3 = 1 / math.log2(3), 1 / math.log2(4)  # discounts of ranks 2 and 3


def test_hand_worked_precision_recall_ndcg():
    m = ranking_metrics(SCORES, Y, ks=(1, 3))
    # P@1: hits 1, 0, 0 -> 1/3. P@3: row 0 top-3 {0,2,3} has 1 hit, row 1 {2,0,1} has 1 -> 2/9.
    assert m["p@1"] == pytest.approx(100 / 3)
    assert m["p@3"] == pytest.approx(100 * 2 / 9)
    # R@1: row 0 1/2, row 1 0, row 2 (empty) 0. R@3: 1/2, 1/1, 0.
    assert m["r@1"] == pytest.approx(100 * (0.5 / 3))
    assert m["r@3"] == pytest.approx(100 * (1.5 / 3))
    # nDCG@1: row 0 1/1. nDCG@3: row 0 DCG 1 / IDCG (1 + L2); row 1 DCG L3 (hit at rank 3) / IDCG 1.
    assert m["ndcg@1"] == pytest.approx(100 / 3)
    assert m["ndcg@3"] == pytest.approx(100 * (1 / (1 + L2) + L3) / 3)
    assert m["n_examples"] == 3 and m["n_examples_without_positives"] == 1


def test_hand_worked_psp():
    # Train split: N = 100 rows; class counts N_l = 50, 2, 0, 10.
    counts, n = [50, 2, 0, 10], 100
    c = (math.log(100) - 1) * 2.5 ** 0.55
    w = [1 + c * (n_l + 1.5) ** -0.55 for n_l in counts]  # 1/p_l
    m = ranking_metrics(SCORES, Y, ks=(1, 3), train_label_counts=counts, n_train=n)
    # PSP@1: hits row 0 class 0 -> w0; best: row 0 its rarest label (class 1, w1), row 1 class 1 -> w1.
    assert m["psp@1"] == pytest.approx(100 * w[0] / (w[1] + w[1]))
    # PSP@3: hits row 0 class 0, row 1 class 1 -> w0 + w1; best: row 0 w0 + w1, row 1 w1.
    assert m["psp@3"] == pytest.approx(100 * (w[0] + w[1]) / (w[0] + 2 * w[1]))
    np.testing.assert_allclose(inverse_propensity(counts, n), w)


def test_psp_is_100_for_the_ideal_ranking_and_nan_without_labels():
    y = np.array([[1, 0, 1, 0], [0, 1, 1, 1]])
    counts = np.array([5, 40, 1, 7])
    ideal = y * inverse_propensity(counts, 50)  # scores = label weights: rarest true labels first
    m = ranking_metrics(ideal, y, ks=(1, 2, 3), train_label_counts=counts, n_train=50)
    assert [m[f"psp@{k}"] for k in (1, 2, 3)] == pytest.approx([100, 100, 100])
    assert m["p@1"] == 100 and m["r@3"] == 100
    empty = ranking_metrics(np.ones((2, 4)), np.zeros((2, 4)), ks=1, train_label_counts=counts, n_train=50)
    assert math.isnan(empty["psp@1"]) and empty["p@1"] == 0 and empty["r@1"] == 0 and empty["ndcg@1"] == 0


# ----------------------------------------------------------------------------------------- ties


def test_ties_go_to_the_lower_class_index():
    s = np.array([[1.0, 3, 3, 3, 0, 3, 3], [0, 0, 0, 0, 0, 0, 0], [5, 4, 4, 6, 4, 4, 1]])
    np.testing.assert_array_equal(topk_indices(s, 3), [[1, 2, 3], [0, 1, 2], [3, 0, 1]])
    np.testing.assert_array_equal(topk_indices(s, 6), [[1, 2, 3, 5, 6, 0], [0, 1, 2, 3, 4, 5], [3, 0, 1, 2, 4, 5]])


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 9), st.integers(2, 12), st.integers(0, 10_000), st.integers(1, 4))
def test_topk_equals_stable_sort_and_decide(n, c, seed, levels):
    rng = np.random.default_rng(seed)
    s = rng.integers(0, levels, size=(n, c)).astype(np.float32)  # few distinct values: many ties
    k = int(rng.integers(1, c + 1))
    got = topk_indices(s, k, chunk_rows=int(rng.integers(1, n + 1)))
    np.testing.assert_array_equal(got, np.argsort(-s, axis=1, kind="stable")[:, :k])
    assert got.tolist() == [brute_rank(row, k) for row in s]
    chosen = np.zeros_like(s, dtype=np.uint8)
    np.put_along_axis(chosen, got, 1, axis=1)
    np.testing.assert_array_equal(chosen, decide(s, activation="none", threshold=None, top_k=k))


def test_topk_inputs_torch_float16_int_bool_generator():
    rng = np.random.default_rng(0)
    s = rng.normal(size=(37, 11))
    want = topk_indices(s, 4)
    np.testing.assert_array_equal(topk_indices(torch.from_numpy(s), 4), want)
    np.testing.assert_array_equal(topk_indices((s[i:i + 5] for i in range(0, 37, 5)), 4), want)
    h = s.astype(np.float16)
    np.testing.assert_array_equal(topk_indices(h, 4), [brute_rank(r, 4) for r in h.astype(np.float64)])
    ints = rng.integers(-3, 3, size=(9, 6))
    np.testing.assert_array_equal(topk_indices(ints, 2), [brute_rank(r, 2) for r in ints])
    np.testing.assert_array_equal(topk_indices(ints > 0, 2), [brute_rank(r, 2) for r in (ints > 0)])
    assert topk_indices(np.zeros((0, 5)), 2).shape == (0, 2)
    inf = np.array([[-np.inf, 0, np.inf, -np.inf]])
    np.testing.assert_array_equal(topk_indices(inf, 4), [[2, 1, 0, 3]])


# ------------------------------------------------------------------------- random vs brute force


@st.composite
def problems(draw):
    n, c = draw(st.integers(1, 12)), draw(st.integers(1, 9))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    levels = draw(st.sampled_from([2, 3, 1000]))  # 2-3 levels: heavy ties
    scores = rng.integers(0, levels, size=(n, c)).astype(np.float64)
    y = (rng.random((n, c)) < draw(st.sampled_from([0.0, 0.2, 0.6, 1.0]))).astype(np.uint8)
    ks = tuple(sorted(set(draw(st.lists(st.integers(1, c), min_size=1, max_size=3)))))
    n_train = int(rng.integers(3, 60))
    counts = rng.integers(0, n_train + 1, size=c)
    return scores, y, ks, counts, n_train, int(rng.integers(1, n + 1))


@settings(max_examples=150, deadline=None)
@given(problems())
def test_random_problems_match_brute_force_dense_csr_chunked(problem):
    scores, y, ks, counts, n_train, chunk = problem
    want = brute_metrics(scores, y, ks, counts, n_train)
    dense = ranking_metrics(scores, y, ks, counts, n_train=n_train)
    assert_metrics_equal(dense, want)
    for targets in (sp.csr_matrix(y), sp.csc_matrix(y), csr_tuple(y)):
        other = ranking_metrics(scores, targets, ks, counts, n_train=n_train, chunk_rows=chunk)
        assert other == dense or all(math.isnan(v) and math.isnan(other[key]) or other[key] == v
                                     for key, v in dense.items())
    topk = topk_indices(scores, ks[-1])
    from_topk = ranking_metrics(topk, csr_tuple(y), ks, counts, n_train=n_train, kind="topk")
    assert_metrics_equal(from_topk, want)


def test_matches_libmultilabel_metrics():
    lm = pytest.importorskip("libmultilabel.linear")
    rng = np.random.default_rng(3)
    scores = rng.normal(size=(200, 30))  # continuous: no ties, so any top-k order agrees
    y = (rng.random((200, 30)) < 0.1).astype(np.float64)
    y[:7] = 0  # empty rows
    names = ["P@1", "P@3", "P@5", "R@1", "R@3", "R@5", "NDCG@1", "NDCG@3", "NDCG@5"]
    with np.errstate(invalid="ignore"):  # LibMultiLabel divides 0/0 for empty rows, then nan_to_num
        theirs = lm.compute_metrics(scores, y, names)
    ours = ranking_metrics(scores, sp.csr_matrix(y))
    for name in names:
        assert ours[name.lower()] == pytest.approx(100 * theirs[name], rel=1e-9), name


def test_docstring_examples_run():
    import doctest

    import mlhead.ranking

    assert doctest.testmod(mlhead.ranking).failed == 0


def test_label_counts_and_inverse_propensity():
    rng = np.random.default_rng(1)
    y = (rng.random((40, 7)) < 0.3).astype(np.uint8)
    np.testing.assert_array_equal(label_counts(y), y.sum(0))
    np.testing.assert_array_equal(label_counts(sp.csr_matrix(y)), y.sum(0))
    np.testing.assert_allclose(inverse_propensity(y.sum(0), 40), brute_inv_propensity(y.sum(0), 40), rtol=1e-12)
    np.testing.assert_allclose(inverse_propensity([3], 10, a=0.6, b=2.6), brute_inv_propensity([3], 10, 0.6, 2.6))


# ------------------------------------------------------------------------------------------ errors


@pytest.mark.parametrize("call, err", [
    (lambda: topk_indices(SCORES, 0), ConfigError),
    (lambda: topk_indices(SCORES, 5), ConfigError),
    (lambda: topk_indices(SCORES, 2.0), ConfigError),
    (lambda: topk_indices(SCORES, 2, chunk_rows=0), ConfigError),
    (lambda: topk_indices(np.ones(4), 1), ConfigError),
    (lambda: topk_indices(iter([np.ones((2, 4)), np.ones((2, 5))]), 1), ConfigError),
    (lambda: topk_indices(np.array([[0.0, np.nan]]), 1), NumericalError),
    (lambda: ranking_metrics(SCORES, Y, ks=()), ConfigError),
    (lambda: ranking_metrics(SCORES, Y, ks=(1, 5)), ConfigError),
    (lambda: ranking_metrics(SCORES, Y * 2), ConfigError),
    (lambda: ranking_metrics(SCORES, Y[:2], ks=1), ConfigError),
    (lambda: ranking_metrics(SCORES, Y[:, :3], ks=1), ConfigError),
    (lambda: ranking_metrics(SCORES, Y, ks=1, train_label_counts=[1, 2, 3, 4]), ConfigError),
    (lambda: ranking_metrics(SCORES, Y, ks=1, train_label_counts=[1, 2, 3], n_train=9), ConfigError),
    (lambda: ranking_metrics(SCORES, Y, ks=1, train_label_counts=[1, 2, 3, 40], n_train=9), ConfigError),
    (lambda: ranking_metrics(SCORES, Y, ks=1, kind="logits"), ConfigError),
    (lambda: ranking_metrics(np.zeros((3, 1), np.int64), Y, ks=3, kind="topk"), ConfigError),
    (lambda: ranking_metrics(np.full((3, 1), 9), Y, ks=1), ConfigError),
    (lambda: ranking_metrics(SCORES, ([0, 1, 1], [0]), ks=1), ConfigError),
    (lambda: ranking_metrics(SCORES, ([0, 2, 2, 2], [1, 1]), ks=1), ConfigError),
    (lambda: ranking_metrics(SCORES, ([0, 1, 1, 1], [7]), ks=1, train_label_counts=[1] * 4, n_train=5),
     ConfigError),
    (lambda: ranking_metrics(SCORES, sp.csr_matrix(Y * 3), ks=1), ConfigError),
    (lambda: inverse_propensity([1, -1], 5), ConfigError),
    (lambda: inverse_propensity([1], 0), ConfigError),
    (lambda: inverse_propensity([1], 2), ConfigError),  # log 2 < 1: the model's C would be negative
    (lambda: label_counts(([0, 1], [0])), ConfigError),
])
def test_expected_failures_are_mlhead_errors(call, err):
    with pytest.raises(err) as info:
        call()
    assert isinstance(info.value, MlheadError)


# ------------------------------------------------------------------------------------ memory bound

_MEMORY_SCRIPT = textwrap.dedent("""
    import numpy as np, scipy.sparse as sp, torch, sys
    from mlhead.ranking import ranking_metrics
    N, C, CHUNK = 20_000, 20_000, 200
    torch.set_num_threads(1)

    def hwm_mb():
        for line in open("/proc/self/status"):
            if line.startswith("VmHWM"):
                return int(line.split()[1]) / 1024

    def blocks():  # the score matrix (1.6 GB in float32) only ever exists one block at a time
        base = torch.rand(CHUNK, C, generator=torch.Generator().manual_seed(0))
        for start in range(0, N, CHUNK):  # distinct blocks, cheaper than drawing 4e8 random numbers
            yield torch.roll(base, shifts=start, dims=1)[: N - start]

    rng = np.random.default_rng(0)
    rows = np.repeat(np.arange(N), 3)
    y = sp.csr_matrix((np.ones(3 * N), (rows, rng.integers(0, C, 3 * N))), shape=(N, C))
    y.data[:] = 1
    ranking_metrics(np.random.default_rng(1).random((4, C)), y[:4], ks=(1, 3, 5))  # warm up
    base = hwm_mb()
    m = ranking_metrics(blocks(), y, ks=(1, 3, 5), train_label_counts=np.asarray(y.sum(0)).ravel(), n_train=N)
    peak = hwm_mb()
    control = np.ones((N, C), dtype=bool)  # what the metrics must never allocate: the probe sees it
    print(base, peak, hwm_mb(), m["p@1"])
""")


def test_20000_classes_in_chunks_stay_far_below_n_by_c(tmp_path):
    """20,000 x 20,000 scores (1.6 GB float32; an N x C bool would be 400 MB) ranked in 200-row blocks
    (16 MB each): the peak resident set grows by less than 150 MB, so neither N x C matrix ever existed.
    Allocations >= 1 MB are mmapped (MALLOC_MMAP_THRESHOLD_) so the peak measures live memory, not glibc
    heap fragmentation; the control allocation of an N x C bool afterwards shows the probe sees its 381 MiB."""
    env = {"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1",
           "MALLOC_MMAP_THRESHOLD_": str(1 << 20)}
    res = subprocess.run([sys.executable, "-c", _MEMORY_SCRIPT], capture_output=True, text=True, env=env,
                         cwd=tmp_path, timeout=600, check=False)
    assert res.returncode == 0, res.stderr
    base, peak, control, p1 = map(float, res.stdout.split())
    assert 0 <= p1 <= 100
    assert peak - base < 150, f"peak RSS grew by {peak - base:.0f} MiB"
    assert control - base > 350  # the probe sees an N x C bool (381 MiB)
