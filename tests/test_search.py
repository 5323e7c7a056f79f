"""Exact k-NN search: equal to a brute-force full matrix, bounded memory, faiss agreement."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from zoo.errors import InputError, NonFiniteDescriptorError
from zoo.search import check_finite, count_closer, knn

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


@pytest.mark.parametrize("k", [1, 5, 39, 40, 41])
def test_block_topk_two_stage_selection_is_exact(k):
    from zoo.search import GROUPS, _block_topk
    g = torch.Generator().manual_seed(k)
    s = torch.randn(17, GROUPS * 40, generator=g)
    s[3, :] = 0.5                                     # a row of ties
    s[4, : GROUPS * 5] = 9.0                          # the best values all in the first offsets
    s[5, GROUPS * 7:] = 3.0                           # ties across offsets, none in the first ones
    s[6] = torch.randint(0, 3, (GROUPS * 40,), generator=g).float()  # three values, many ties at the cut
    s[7, ::3] = 2.0                                   # ties in every offset's group
    vals, idx = _block_topk(s, k)
    ref_vals, ref_idx = torch.sort(s, dim=1, descending=True, stable=True)
    assert torch.equal(vals.sort(1, descending=True).values, ref_vals[:, :k])
    assert torch.equal(s.gather(1, idx), vals)
    # The lowest columns among those tying at the cut: the set of a stable sort's first k.
    assert torch.equal(idx.sort(1).values, ref_idx[:, :k].sort(1).values)


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


def _tied_data(n_q, n_db, unique, seed, equal_norm):
    """Integer vectors (every score exact in float32), the database drawn from ``unique`` vectors:
    many exact ties. With ``equal_norm`` every database vector is a signed permutation of one
    vector, so ranking by inner product equals ranking by L2 distance."""
    g = torch.Generator().manual_seed(seed)
    if equal_norm:
        template = torch.tensor([3.0, 2, 1, 1, 0, 0, 0, 0])
        base = torch.stack([template[torch.randperm(8, generator=g)] for _ in range(unique)])
        base *= torch.randint(0, 2, base.shape, generator=g) * 2 - 1
    else:
        base = torch.randint(-3, 4, (unique, 8), generator=g).float()
    d = base[torch.randint(0, unique, (n_db,), generator=g)]
    q = torch.randint(-3, 4, (n_q, 8), generator=g).float()
    return q, d


def _reference_ties(q, d, k, metric):
    """Exact scores, equal ones in database order (a stable sort)."""
    q64, d64 = q.double(), d.double()
    s = q64 @ d64.T if metric == "ip" else (q64[:, None] - d64[None]).pow(2).sum(-1)
    vals, idx = torch.sort(s, dim=1, descending=metric == "ip", stable=True)
    return vals[:, :k], idx[:, :k]


def _tie_boundaries(q, d, metric):
    """k at and one past the end of the first query's first three groups of equal scores, and a few others."""
    vals, _ = _reference_ties(q[:1], d, d.shape[0], metric)
    ends = (torch.nonzero(vals[0, 1:] != vals[0, :-1]).view(-1) + 1).tolist()[:3]
    return sorted({k for e in ends for k in (e, e + 1)} | {1, 7, d.shape[0]})


@pytest.mark.parametrize("metric", ["ip", "l2"])
@pytest.mark.parametrize("chunks", [(8, 64), (16, 256), (7, 100), (None, None)])
def test_ties_broken_by_lower_index_as_faiss_l2(metric, chunks):
    """Many exact ties, several query chunks and database blocks (two-stage and plain top-k, and
    their merges), k at and across the boundaries of the groups of equal scores."""
    q, d = _tied_data(24, 480, unique=6, seed=1, equal_norm=True)
    faiss = pytest.importorskip("faiss")
    index = faiss.IndexFlatL2(8)
    index.add(d.numpy())
    ref_s, ref_i = _reference_ties(q, d, d.shape[0], metric)  # a stable sort: every k's top-k is a prefix
    for k in _tie_boundaries(q, d, metric):
        scores, idx = knn(q, d, k, metric, backend="torch", query_chunk=chunks[0], db_chunk=chunks[1])
        assert torch.equal(idx, ref_i[:, :k]), k
        assert torch.equal(scores.double(), ref_s[:, :k]), k  # integers: exact
        # Equal norms: faiss's L2 ranking is the inner-product one too.
        _, faiss_i = index.search(q.numpy(), k)
        assert torch.equal(idx, torch.from_numpy(faiss_i)), k


@pytest.mark.parametrize("chunks", [(5, 48), (None, None)])
def test_l2_ties_equal_faiss_index_flat_l2(chunks):
    faiss = pytest.importorskip("faiss")
    q, d = _tied_data(20, 400, unique=9, seed=2, equal_norm=False)
    index = faiss.IndexFlatL2(8)
    index.add(d.numpy())
    for k in _tie_boundaries(q, d, "l2"):
        scores, idx = knn(q, d, k, "l2", backend="torch", query_chunk=chunks[0], db_chunk=chunks[1])
        faiss_s, faiss_i = index.search(q.numpy(), k)
        assert torch.equal(idx, torch.from_numpy(faiss_i)), k
        assert torch.equal(scores, torch.from_numpy(faiss_s)), k


@pytest.mark.parametrize("metric", ["ip", "l2"])
def test_faiss_backend_breaks_ties_by_lower_index(metric):
    pytest.importorskip("faiss")
    # faiss's own inner-product heap keeps index 2 here: [5, 3, 2].
    d = torch.tensor([[1.0, 0], [1, 0], [1, 0], [2, 0], [1, 0], [3, 0]])
    q = torch.tensor([[1.0, 0]]) if metric == "ip" else torch.tensor([[4.0, 0]])
    for backend in ("faiss", "torch"):
        assert knn(q, d, 3, metric, backend=backend)[1].tolist() == [[5, 3, 0]]
        assert knn(q, d, 5, metric, backend=backend)[1].tolist() == [[5, 3, 0, 1, 2]]
    q, d = _tied_data(25, 300, unique=5, seed=3, equal_norm=metric == "ip")
    ref_i = _reference_ties(q, d, d.shape[0], metric)[1]
    for k in _tie_boundaries(q, d, metric):
        _, idx = knn(q, d, k, metric, backend="faiss")
        assert torch.equal(idx, ref_i[:, :k]), k


@pytest.mark.parametrize("metric", ["ip", "l2"])
def test_count_closer_with_many_ties(metric):
    q, d = _tied_data(20, 300, unique=4, seed=4, equal_norm=False)
    targets = torch.randint(0, 300, (20,), generator=torch.Generator().manual_seed(0))
    counts, _, idx = count_closer(q, d, targets, metric, k=9, query_chunk=6, db_chunk=64)
    q64, d64 = q.double(), d.double()
    s = q64 @ d64.T if metric == "ip" else -(q64[:, None] - d64[None]).pow(2).sum(-1)
    assert torch.equal(counts, (s > s.gather(1, targets[:, None])).sum(1))  # strictly closer only
    assert torch.equal(idx, _reference_ties(q, d, 9, metric)[1])


def test_non_finite_descriptors_refused_naming_rows():
    q, d = _data(n_q=6, n_db=30)
    bad_d = d.clone()
    bad_d[3, 1], bad_d[17, 0] = float("nan"), float("inf")
    for call in (lambda: knn(q, bad_d, 2, backend="torch"), lambda: knn(q.numpy(), bad_d.numpy(), 2),
                 lambda: count_closer(q, bad_d, [0] * 6)):
        with pytest.raises(NonFiniteDescriptorError, match=r"database: 2 of 30 rows .*rows 3, 17") as err:
            call()
        assert err.value.rows == [3, 17] and err.value.count == 2 and err.value.side == "database"
    bad_q = q.clone()
    bad_q[:, 0] = -float("inf")
    with pytest.raises(NonFiniteDescriptorError, match=r"queries: 6 of 6 rows .*rows 0, 1, 2, 3, 4 and 1 more\."):
        knn(bad_q, d, 2, backend="faiss" if _has_faiss() else "torch")
    assert issubclass(NonFiniteDescriptorError, InputError)


def test_check_finite_names_files():
    x = torch.zeros(4, 3)
    check_finite(x, "database")  # finite: no error
    check_finite(torch.full((3, 4), 3e38), "database")  # finite, though their sum overflows
    x[2, 2] = float("nan")
    with pytest.raises(NonFiniteDescriptorError, match=r"1 of 4 images .*c\.jpg \(row 2\)"):
        check_finite(x.numpy(), "database descriptors", ["a.jpg", "b.jpg", "c.jpg", "d.jpg"])


def _has_faiss() -> bool:
    try:
        import faiss  # noqa: F401
    except ImportError:
        return False
    return True


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
