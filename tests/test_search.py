"""Exact k-NN search: equal to a brute-force full matrix, bounded memory, faiss agreement."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from zoo.errors import InputError
from zoo.search import count_closer, knn

REPO_ROOT = Path(__file__).resolve().parents[1]


def _data(n_q=37, n_db=101, dim=16, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n_q, dim, generator=g, dtype=dtype), torch.randn(n_db, dim, generator=g, dtype=dtype)


def _brute(q, d, k, metric):
    q64, d64 = q.double(), d.double()
    if metric == "ip":
        s = q64 @ d64.T
        vals, idx = torch.sort(s, dim=1, descending=True, stable=True)
    else:
        s = torch.cdist(q64, d64).pow(2)
        vals, idx = torch.sort(s, dim=1, stable=True)
    return vals[:, :k], idx[:, :k]


@pytest.mark.parametrize("metric", ["ip", "l2"])
@pytest.mark.parametrize("chunks", [(7, 13), (1, 1), (1000, 1000), (None, None)])
def test_knn_equals_brute_force(metric, chunks):
    q, d = _data()
    scores, idx = knn(q, d, 10, metric, backend="torch", query_chunk=chunks[0], db_chunk=chunks[1])
    ref_s, ref_i = _brute(q, d, 10, metric)
    assert scores.shape == (37, 10) and idx.dtype == torch.long
    assert torch.equal(idx, ref_i)
    torch.testing.assert_close(scores.double(), ref_s, atol=1e-4, rtol=1e-5)


@pytest.mark.parametrize("k", [1, 5, 40])
def test_block_topk_two_stage_selection_is_exact(k):
    from zoo.search import GROUPS, _block_topk
    g = torch.Generator().manual_seed(k)
    s = torch.randn(17, GROUPS * 40, generator=g)
    s[3, :] = 0.5                                     # a row of ties
    s[4, : GROUPS * 5] = 9.0                          # the best values all in the first offsets
    vals, idx = _block_topk(s, k)
    ref_vals, _ = torch.topk(s, k, dim=1)
    assert torch.equal(vals.sort(1, descending=True).values, ref_vals)
    assert torch.equal(s.gather(1, idx), vals) and all(len(set(r.tolist())) == k for r in idx)


def test_knn_grouped_blocks_equal_brute_force():
    q, d = _data(n_q=30, n_db=300, dim=24, seed=5)
    for metric in ("ip", "l2"):
        _, idx = knn(q, d, 12, metric, query_chunk=8, db_chunk=64)  # 64 = 8 groups of 8 columns
        assert torch.equal(idx, _brute(q, d, 12, metric)[1])


def test_knn_chunk_bytes_bounds_block():
    q, d = _data(n_q=50, n_db=300)
    # 400 bytes = 100 float32 scores per block: forces a small block and many merges.
    s1, i1 = knn(q, d, 5, chunk_bytes=400, query_chunk=4, backend="torch")
    s2, i2 = knn(q, d, 5, backend="torch")
    assert torch.equal(i1, i2)
    torch.testing.assert_close(s1, s2)  # BLAS rounding depends on the block shape


@pytest.mark.parametrize("metric", ["ip", "l2"])
def test_faiss_backend_agrees(metric):
    pytest.importorskip("faiss")
    q, d = _data(dim=32)
    s_t, i_t = knn(q, d, 8, metric, backend="torch")
    s_f, i_f = knn(q, d, 8, metric, backend="faiss")
    assert torch.equal(i_t, i_f)
    torch.testing.assert_close(s_t, s_f, atol=1e-4, rtol=1e-5)


def test_inputs_numpy_half_double_and_k_clipped():
    q, d = _data(n_q=5, n_db=6)
    s_np, i_np = knn(q.numpy(), d.numpy(), 3)
    s_t, i_t = knn(q, d, 3)
    assert torch.equal(i_np, i_t)
    _, i_half = knn(q.half(), d.half(), 3)  # searched in float32 after the cast
    assert torch.equal(i_half, knn(q.half().float(), d.half().float(), 3)[1])
    s64, i64 = knn(q.double(), d.double(), 3)
    assert s64.dtype == torch.float64 and torch.equal(i64, _brute(q, d, 3, "ip")[1])
    s_all, i_all = knn(q, d, 50)  # k > N: every item once
    assert i_all.shape == (5, 6) and all(sorted(r.tolist()) == list(range(6)) for r in i_all)


def test_ties_ordered_by_database_index():
    d = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 0.0], [0.5, 0.5]])
    q = torch.tensor([[1.0, 0.0]])
    _, idx = knn(q, d, 4, db_chunk=2)
    assert idx.tolist() == [[0, 2, 3, 4]]


def test_bad_arguments_are_named():
    q, d = _data(n_q=3, n_db=4)
    with pytest.raises(InputError, match="dimension"):
        knn(q, d[:, :5], 1)
    with pytest.raises(InputError, match="metric"):
        knn(q, d, 1, metric="cos")
    with pytest.raises(InputError, match="k must"):
        knn(q, d, 0)
    with pytest.raises(InputError, match="2-d"):
        knn(q[0], d, 1)
    with pytest.raises(InputError, match="targets"):
        count_closer(q, d, [0, 1])
    with pytest.raises(InputError, match="targets"):
        count_closer(q, d, [0, 1, 4])


@pytest.mark.parametrize("dim", [8, 300])
@pytest.mark.parametrize("metric", ["ip", "l2"])
def test_count_closer_equals_brute_force_with_duplicates(metric, dim):
    q, d = _data(n_q=40, n_db=90, dim=dim, seed=3)
    targets = torch.randint(0, 90, (40,), generator=torch.Generator().manual_seed(1))
    # Exact duplicates of some targets elsewhere in the database must tie, not beat, them.
    d[5] = d[targets[0]]
    d[77] = d[targets[1]]
    d[60] = d[targets[2]] * 1.5  # strictly better for ip (a scaled copy), strictly worse or better for l2
    counts = count_closer(q, d, targets, metric, query_chunk=6, db_chunk=11)
    q64, d64 = q.double(), d.double()
    # Pair by pair with one reduction routine, so that duplicates tie exactly in the reference.
    pair = q64[:, None, :] * d64[None] if metric == "ip" else -(q64[:, None, :] - d64[None]).pow(2)
    s = pair.sum(-1)
    true = s.gather(1, targets[:, None])
    ref = (s > true).sum(1)
    assert torch.equal(counts, ref)
    counts2, scores, idx = count_closer(q, d, targets, metric, k=4, query_chunk=6, db_chunk=11)
    assert torch.equal(counts2, counts)
    assert torch.equal(idx, knn(q, d, 4, metric, query_chunk=6, db_chunk=11)[1])
    # Rank 0 exactly when the target is the top-1 (no duplicates for those queries).
    top1 = idx[:, 0] == targets
    assert torch.equal(top1[3:], (counts == 0)[3:])


def test_memory_stays_bounded_subprocess():
    """A 12k x 12k search (a full float32 matrix would be 576 MB) peaks far below that."""
    script = textwrap.dedent("""
        import json, resource, sys, torch
        sys.path.insert(0, sys.argv[1])
        from zoo.search import knn, count_closer
        torch.manual_seed(0)
        q = torch.randn(12000, 32); d = torch.randn(12000, 32)
        knn(q[:10], d[:10], 2)  # load libraries before measuring
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        knn(q, d, 10, chunk_bytes=8 << 20)
        count_closer(q, d, torch.arange(12000), chunk_bytes=8 << 20)
        after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        print(json.dumps({"extra_mb": (after - before) / 1024}))
    """)
    out = subprocess.run([sys.executable, "-c", script, str(REPO_ROOT)], capture_output=True, text=True,
                         timeout=900, env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"})
    assert out.returncode == 0, out.stderr
    extra = json.loads(out.stdout.strip().splitlines()[-1])["extra_mb"]
    assert extra < 100, f"search used {extra:.0f} MB beyond its inputs"
