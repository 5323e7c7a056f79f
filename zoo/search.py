"""Exact k-nearest-neighbour search that never holds the full query x database matrix.

Every evaluation protocol searches with :func:`knn` (top-k database items per query) or
:func:`count_closer` (how many database items beat a given one, for cross-view ranks).

Both walk the score matrix in blocks of ``query_chunk`` queries x ``db_chunk`` database items:
one matrix product per block (numpy's OpenBLAS on CPU, cuBLAS without TF32 on CUDA), then a
two-stage exact top-k of the block (:func:`_block_topk`) merged into a running top-k, or, for
:func:`count_closer`, a comparison count. Extra memory is therefore bounded by the block
(``chunk_bytes``, 256 MiB by default, 1 GiB on CUDA) plus the ``(Q, k)`` result, whatever Q and N are: a
100k x 100k search at 4096-d needs about 0.3 GB besides the descriptors themselves.

Scores follow faiss's conventions so that results are interchangeable:
``metric="ip"`` returns inner products (cosine similarity for L2-normalised descriptors) in
decreasing order; ``metric="l2"`` returns *squared* Euclidean distances in increasing order.

Ties: among equal scores the lower database index comes first, both at the cut (which items make
the top-``k``) and in the returned order, whatever the block shape and backend. This is what
faiss's ``IndexFlatL2`` returns for exact ties. faiss's inner-product heaps (``IndexFlatIP``,
``faiss.knn`` with ``METRIC_INNER_PRODUCT``, faiss-cpu 1.15) differ: they list equal scores in
decreasing index order and may keep higher-indexed items at the cut (e.g. of four items scoring
1 at indices 0, 1, 2, 4 behind two better ones, k = 3 keeps index 2), so the ``"faiss"`` backend
searches queries whose ties cross the cut again with the blocked search. Only bitwise-equal scores
tie: BLAS rounds the product of one query with identical database rows differently depending on
the rows' positions in the block, so duplicated descriptors often differ in the last bit.

Descriptors holding NaN or inf are refused (:func:`check_finite`) with an error naming the side
and the first rows.

Backends (``backend=``):
  ``"torch"``  the blocked search above, on the descriptors' device (CUDA when they live there,
               or when ``device="cuda"`` is passed; blocks are then moved there one at a time).
  ``"faiss"``  ``faiss.knn`` (faiss's exact blocked BLAS search; no index, so no copy of the
               database) on CPU.
  ``"auto"``   the measured rule of :func:`choose_backend`.

The measured rule (``python bench/search.py``; 2-core AMD EPYC shared with other jobs, one
thread, faiss-cpu 1.15, torch 2.14): for k = 25 both backends spend almost all their time in the
same OpenBLAS sgemm and run within about 10% of each other, either way depending on the load;
the torch backend keeps its memory bounded, also runs on CUDA and in float64, and shares its
code with :func:`count_closer`. ``"auto"`` therefore picks torch, except on CPU for
``k > FAISS_MIN_K`` (float32), where faiss's heaps are faster than ``torch.topk`` merges.
"""

from __future__ import annotations

import contextlib
import os
from typing import Iterator, Literal, Sequence

import numpy as np
import torch

from zoo.errors import InputError, NonFiniteDescriptorError

__all__ = ["knn", "count_closer", "check_finite", "choose_backend", "DEFAULT_CHUNK_BYTES", "CUDA_CHUNK_BYTES"]

Metric = Literal["ip", "l2"]
Backend = Literal["auto", "torch", "faiss"]

#: Bytes of one score block (query_chunk x db_chunk scores) plus one database block converted for
#: the search (device, dtype, or doubled for l2). 256 MiB keeps blocks large enough for BLAS to run
#: at full speed and the working set far below 2 GB.
DEFAULT_CHUNK_BYTES = 256 * 2**20
#: On CUDA: larger blocks mean fewer passes of the queries from host memory when the descriptors
#: live on the CPU (one pass per database block), and GPU memory is rarely the limit.
CUDA_CHUNK_BYTES = 2**30
#: Above this k (on CPU), faiss's heap selection is faster than torch.topk (see module doc).
FAISS_MIN_K = 100


def _as_tensor(x: torch.Tensor | np.ndarray, name: str) -> torch.Tensor:
    if isinstance(x, np.ndarray):
        x = torch.from_numpy(x)
    if not isinstance(x, torch.Tensor):
        raise InputError(f"{name}: expected a torch.Tensor or numpy array, got {type(x).__name__}")
    if x.ndim != 2:
        raise InputError(f"{name}: expected a 2-d (count, dim) array, got shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise InputError(f"{name}: expected floating-point descriptors, got {x.dtype}")
    return x


def check_finite(descriptors: torch.Tensor | np.ndarray, name: str,
                 paths: Sequence[str | os.PathLike] | None = None, shown: int = 5) -> None:
    """Raise :class:`~zoo.errors.NonFiniteDescriptorError` when a row of ``descriptors`` ``(N, D)``
    holds NaN or inf (broken weights give such rows; their scores cannot be ranked).

    The message names ``name`` (e.g. ``"database"``), how many rows are affected and the first
    ``shown`` of them, with their files when ``paths`` (one per row) is given. Costs one sum over
    the descriptors when they are finite.
    """
    x = torch.from_numpy(descriptors) if isinstance(descriptors, np.ndarray) else descriptors
    # One pass without temporaries: a NaN or inf anywhere makes the sum NaN or inf, so a finite sum
    # proves every value finite. Rows are examined only otherwise (or if a sum of huge values overflowed).
    if x.numel() == 0 or np.isfinite(float(x.sum(dtype=torch.float64 if x.dtype == torch.float64 else torch.float32))):
        return
    step = max(1, 2**24 // max(x.shape[-1], 1))
    rows: list[int] = []
    count = 0
    for start in range(0, x.shape[0], step):
        finite = torch.isfinite(x[start:start + step]).all(1)
        if not bool(finite.all()):
            bad = (~finite).nonzero().view(-1) + start
            count += bad.numel()
            rows.extend(bad[:shown - len(rows)].tolist())
    if not count:
        return
    if paths is not None:
        where = ", ".join(f"{paths[r]} (row {r})" for r in rows)
        what = f"{count} of {x.shape[0]} images gave descriptors with NaN or inf values: {where}"
    else:
        what = f"{count} of {x.shape[0]} rows hold NaN or inf values: rows {', '.join(map(str, rows))}"
    more = f" and {count - len(rows)} more" if count > len(rows) else ""
    raise NonFiniteDescriptorError(
        f"{name}: {what}{more}. Such descriptors cannot be ranked; when a model produced them, "
        "check its weights (a NaN weight makes every descriptor NaN) and inputs", side=name, rows=rows, count=count)


def _check_pair(queries, database, metric: str) -> tuple[torch.Tensor, torch.Tensor]:
    q = _as_tensor(queries, "queries")
    d = _as_tensor(database, "database")
    check_finite(q, "queries")
    check_finite(d, "database")
    if q.shape[1] != d.shape[1]:
        raise InputError(f"queries have dimension {q.shape[1]} but database items {d.shape[1]}")
    if metric not in ("ip", "l2"):
        raise InputError(f"metric: expected 'ip' or 'l2', got {metric!r}")
    return q, d


def _compute_dtype(q: torch.Tensor, d: torch.Tensor) -> torch.dtype:
    # Half-precision descriptors are searched in float32 (CPU half matmul is slow and its
    # rounding would reorder near-ties); float64 stays float64 for exact reproductions.
    return torch.float64 if torch.float64 in (q.dtype, d.dtype) else torch.float32


def _faiss_available() -> bool:
    try:
        import faiss  # noqa: F401
    except ImportError:
        return False
    return True


def choose_backend(k: int, device: torch.device, dtype: torch.dtype) -> str:
    """The backend ``"auto"`` uses for a search (the measured rule of the module docstring)."""
    if device.type == "cpu" and dtype == torch.float32 and k > FAISS_MIN_K and _faiss_available():
        return "faiss"
    return "torch"


def _chunks(q_rows: int, n_db: int, dim: int, chunk_bytes: int, elem: int,
            query_chunk: int | None, db_chunk: int | None) -> tuple[int, int]:
    """Block shape: ``query_chunk`` queries (default 1024) x ``db_chunk`` database items, the
    latter chosen so that the score block and a converted database block fit ``chunk_bytes``,
    rounded to a multiple of :data:`GROUPS`."""
    if chunk_bytes <= 0:
        raise InputError(f"chunk_bytes must be positive, got {chunk_bytes}")
    qc = max(1, min(query_chunk or 1024, q_rows))
    dc = db_chunk or max(GROUPS, chunk_bytes // (elem * (qc + dim)) // GROUPS * GROUPS)
    return qc, max(1, min(dc, n_db))


#: Selection in two stages (see :func:`_block_topk`): the columns of a score block are split into
#: this many interleaved groups.
GROUPS = 8


def _block_topk(s: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-``k`` ``(values, columns)``, each ``(rows, k)`` and unsorted, of each row of the block ``s``
    ``(rows, cols)``; among entries equal to the ``k``-th value, the lowest columns are kept.

    Two stages, about twice as fast as ``torch.topk`` on CPU: view the ``c`` columns as ``GROUPS``
    interleaved slices of ``m = c / GROUPS`` and take, for each offset ``j < m``, the maximum over
    the slices of columns ``j, j + m, j + 2m ...`` (a vectorised pass). Every top-``k`` element lies
    in one of the ``k`` offsets with the largest such maxima (otherwise ``k`` maxima, each from a
    different offset, would beat it), so the top-``k`` of those ``k * GROUPS`` candidates is the
    top-``k`` of the row.

    ``torch.topk`` keeps an unspecified subset of the entries that tie at the cut, so the
    top-``(k + 1)`` values are selected: a row whose ``(k + 1)``-th value equals its ``k``-th may
    have left out an entry tying at the cut, and only such rows are selected again
    (:func:`_redo_ties`), among the offsets whose maximum reaches that value.
    """
    rows, cols = s.shape
    k = min(k, cols)
    if k == cols:
        return s.clone(), torch.arange(cols, device=s.device).expand(rows, cols).clone()
    m = cols // GROUPS
    offset_max = None
    if cols % GROUPS or m <= k:
        vals, idx = torch.topk(s, k + 1, dim=1, sorted=False)
    else:
        offset_max = s.view(rows, GROUPS, m).amax(1)
        vals, idx = _candidates_topk(s, offset_max, k + 1)
    last = vals.amin(1, keepdim=True)
    tie = (vals == last).sum(1) > 1
    vals, pos = torch.topk(vals, k, dim=1, sorted=False)
    idx = idx.gather(1, pos)
    redo = tie.nonzero().view(-1)
    if redo.numel():
        _redo_ties(s, offset_max, last, k, redo, vals, idx)
    return vals, idx


def _candidates_topk(s: torch.Tensor, offset_max: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-``k`` values of each row of ``s`` and their columns (unsorted), from the columns of the ``k``
    offsets with the largest maxima (``offset_max``, ``(rows, m)`` of :func:`_block_topk`)."""
    _, offset = torch.topk(offset_max, k, dim=1, sorted=False)
    cand = _offset_columns(offset, s.shape[1])
    vals, pos = torch.topk(s.gather(1, cand), k, dim=1, sorted=False)
    return vals, cand.gather(1, pos)


def _offset_columns(offset: torch.Tensor, cols: int) -> torch.Tensor:
    """Columns ``(rows, n * GROUPS)`` of the offsets ``(rows, n)`` in a block of ``cols`` columns."""
    step = cols // GROUPS
    return (offset.unsqueeze(1) + torch.arange(0, cols, step, device=offset.device).view(1, GROUPS, 1)).flatten(1)


def _redo_ties(s: torch.Tensor, offset_max: torch.Tensor | None, kth: torch.Tensor, k: int, redo: torch.Tensor,
               vals: torch.Tensor, idx: torch.Tensor) -> None:
    """Select again, in place in ``vals`` and ``idx`` ``(rows, k)``, the top-``k`` of the rows
    ``redo`` of ``s``, whose ``k``-th value ``kth`` ``(rows, 1)`` ties with an entry left out: the
    entries above it and the lowest columns equal to it.

    With ``offset_max`` (two-stage blocks) the search is limited to the offsets whose maximum
    reaches ``kth``: only they hold entries that high. Rows are taken in groups of about 4M
    entries (a whole row, or the candidates), bounding the extra memory."""
    cols = s.shape[1]
    start = 0
    while start < redo.numel():
        r = redo[start:start + max(1, 2**22 // cols)]
        if offset_max is None:
            sub = s.index_select(0, r)
            pos = _lowest_at_cut(sub, kth.index_select(0, r), k)
            idx[r], vals[r] = pos, sub.gather(1, pos)
        else:
            reach = offset_max.index_select(0, r) >= kth.index_select(0, r)
            n_off = int(reach.sum(1).max())
            r = r[:max(1, 2**22 // (n_off * GROUPS))]  # many offsets at the cut (e.g. a constant row): fewer rows
            # The offsets that reach the cut in increasing order (then, in rows with fewer, others,
            # whose entries are all below the cut), so that the candidates are in column order.
            rank = torch.where(reach[:r.numel()], torch.arange(reach.shape[1], 0, -1, device=s.device), 0)
            cand = _offset_columns(torch.topk(rank, n_off, dim=1, sorted=True).indices, cols)
            sub = s[r.unsqueeze(1), cand]
            pos = _lowest_at_cut(sub, kth.index_select(0, r), k)
            idx[r], vals[r] = cand.gather(1, pos), sub.gather(1, pos)
        start += r.numel()


def _lowest_at_cut(s: torch.Tensor, kth: torch.Tensor, k: int) -> torch.Tensor:
    """Positions ``(rows, k)``, increasing, of each row's entries above ``kth`` ``(rows, 1)`` (its
    ``k``-th largest value) followed by the first entries equal to it: the top-``k`` of ``s``
    ``(rows, n)`` when ties at the cut go to the lowest positions."""
    above = s > kth
    equal = s == kth
    room = k - above.sum(1, keepdim=True, dtype=torch.int32)
    take = above | (equal & (equal.cumsum(1, dtype=torch.int32) <= room))
    return take.nonzero()[:, 1].view(-1, k)


def _scores_into(qb: torch.Tensor, block: torch.Tensor, db_sqnorm: torch.Tensor | None,
                 out: torch.Tensor) -> torch.Tensor:
    """Write a block of scores, larger = closer, into ``out``: ``q.d`` for ip and
    ``2 q.d - |d|^2`` (= ``|q|^2 - |q-d|^2``) for l2, where the caller passes the database block
    doubled (an exact scaling, done once per block) so that only one extra pass is needed.

    On CPU the product goes through numpy's BLAS (OpenBLAS, the library faiss uses): on the AMD
    EPYC this was tuned on it runs sgemm ~15% faster than torch's MKL (bench/search.py).
    Writing into a reused buffer also avoids page faults for every block.
    """
    if qb.device.type == "cpu":
        np.matmul(qb.numpy(), block.numpy().T, out=out.numpy())
    else:
        torch.mm(qb, block.T, out=out)
    if db_sqnorm is not None:
        out.sub_(db_sqnorm)
    return out


class _Buffer:
    """One reusable block of at most ``rows x cols`` (views for smaller edge blocks)."""

    def __init__(self, rows: int, cols: int, dtype: torch.dtype, device: torch.device) -> None:
        self.flat = torch.empty(rows * cols, dtype=dtype, device=device)

    def view(self, rows: int, cols: int) -> torch.Tensor:
        return self.flat[: rows * cols].view(rows, cols)


class _TopK:
    """Running top-k of one query chunk, merged block by block."""

    def __init__(self, k: int) -> None:
        self.k = k
        self.scores: torch.Tensor | None = None
        self.index: torch.Tensor | None = None

    def update(self, s: torch.Tensor, start: int) -> None:
        """Merge the block ``s`` ``(rows, cols)`` of database items ``start ...`` into the running
        top-``k``, keeping the lower database index among scores that tie at the cut."""
        bs, bi = _block_topk(s, self.k)
        bi += start
        if self.scores is None:
            self.scores, self.index = bs, bi
            return
        # Merge the running best with this block's best (at most 2k candidates per row).
        cat_s, cat_i = torch.cat((self.scores, bs), 1), torch.cat((self.index, bi), 1)
        k = min(self.k, cat_s.shape[1])
        vals, pos = torch.topk(cat_s, k, dim=1, sorted=False)
        index = cat_i.gather(1, pos)
        kth = vals.amin(1, keepdim=True)
        redo = ((cat_s >= kth).sum(1) > k).nonzero().view(-1)
        if redo.numel():
            # Candidates in database order, so that the first ones tying at the cut are the lowest.
            order = torch.argsort(cat_i.index_select(0, redo), dim=1)
            sub_i = cat_i.index_select(0, redo).gather(1, order)
            sub_s = cat_s.index_select(0, redo).gather(1, order)
            pos = _lowest_at_cut(sub_s, kth.index_select(0, redo), k)
            vals[redo], index[redo] = sub_s.gather(1, pos), sub_i.gather(1, pos)
        self.scores, self.index = vals, index

    def result(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Best first; equal scores ordered by database index."""
        return _best_first(self.scores, self.index, descending=True)


def _best_first(scores: torch.Tensor, index: torch.Tensor, descending: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """``(scores, index)`` ``(Q, k)`` sorted by score (decreasing or increasing), equal scores by
    increasing database index."""
    order = torch.argsort(index, dim=1)
    s, i = scores.gather(1, order), index.gather(1, order)
    s, pos = torch.sort(s, dim=1, descending=descending, stable=True)
    return s, i.gather(1, pos)


@contextlib.contextmanager
def _full_precision_matmul(device: torch.device) -> Iterator[None]:
    """Float32 products on CUDA without TF32 (which a caller may have enabled with
    ``torch.set_float32_matmul_precision``): its 10-bit mantissa would reorder neighbours."""
    if device.type != "cuda":
        yield
        return
    before = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32 = before


@torch.no_grad()
def _scan(q: torch.Tensor, d: torch.Tensor, metric: str, device: torch.device, dtype: torch.dtype,
          chunk_bytes: int | None, query_chunk: int | None, db_chunk: int | None, k: int = 0,
          targets: torch.Tensor | None = None) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
    """One blocked pass over the score matrix computing the top-``k`` and/or, given
    ``targets``, the number of items strictly closer than each query's target.

    The database is the outer loop: each database block is converted (device, dtype) once,
    then met by every query chunk.
    """
    with _full_precision_matmul(device):
        return _scan_blocks(q, d, metric, device, dtype, chunk_bytes, query_chunk, db_chunk, k, targets)


def _scan_blocks(q: torch.Tensor, d: torch.Tensor, metric: str, device: torch.device, dtype: torch.dtype,
                 chunk_bytes: int | None, query_chunk: int | None, db_chunk: int | None, k: int,
                 targets: torch.Tensor | None) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
    n_q, n_db, dim = q.shape[0], d.shape[0], q.shape[1]
    elem = torch.finfo(dtype).bits // 8
    if chunk_bytes is None:
        chunk_bytes = CUDA_CHUNK_BYTES if device.type == "cuda" else DEFAULT_CHUNK_BYTES
    qc, dc = _chunks(n_q, n_db, dim, chunk_bytes, elem, query_chunk, db_chunk)
    q_starts = range(0, n_q, qc)
    buf = _Buffer(qc, dc, dtype, device)
    double_buf = _Buffer(dc, dim, dtype, device) if metric == "l2" else None
    tops = [_TopK(k) for _ in q_starts] if k else None
    counts = torch.zeros(n_q, dtype=torch.long, device=device) if targets is not None else None
    if targets is not None:
        mask_buf = _Buffer(qc, dc, torch.bool, device)
        d_maxnorm = max(float(d[i:i + dc].to(device=device, dtype=dtype).norm(dim=1).max()) for i in range(0, n_db, dc))
        true_parts = [_target_scores(_query_chunk(q, s0, qc, device, dtype),
                                     d[targets[s0:s0 + qc].to(d.device)].to(device=device, dtype=dtype),
                                     metric, d_maxnorm) for s0 in q_starts]
        true_exact = _exact_scores(q, d, torch.arange(n_q, device=device), targets, metric, device)
    for start in range(0, n_db, dc):
        block = d[start:start + dc].to(device=device, dtype=dtype)
        sqnorm = None
        if metric == "l2":
            sqnorm = torch.einsum("ij,ij->i", block, block)
            block = torch.mul(block, 2, out=double_buf.view(*block.shape))
        for c, q_start in enumerate(q_starts):
            qb = _query_chunk(q, q_start, qc, device, dtype)
            s = _scores_into(qb, block, sqnorm, buf.view(qb.shape[0], block.shape[0]))
            if tops is not None:
                tops[c].update(s, start)
            if targets is not None:
                true_s, eps = true_parts[c]
                tb = targets[q_start:q_start + qc]
                rows = torch.arange(qb.shape[0], device=device)
                inside = (tb >= start) & (tb < start + block.shape[0])
                s[rows[inside], tb[inside] - start] = -torch.inf  # never count the target itself
                diff = s.sub_(true_s.unsqueeze(1))
                mask = mask_buf.view(qb.shape[0], block.shape[0])
                counts[q_start:q_start + qc] += _count_rows(torch.gt(diff, eps.unsqueeze(1), out=mask))
                torch.le(diff.abs_(), eps.unsqueeze(1), out=mask)
                if mask.any():
                    r, col = torch.nonzero(mask, as_tuple=True)
                    r += q_start
                    beats = _exact_scores(q, d, r, col + start, metric, device) > true_exact[r]
                    counts.index_add_(0, r, beats.long())
    out_s = out_i = None
    if tops is not None:
        out_s = torch.empty(n_q, k, dtype=dtype, device=device)
        out_i = torch.empty(n_q, k, dtype=torch.long, device=device)
        for c, q_start in enumerate(q_starts):
            best_s, best_i = tops[c].result()
            if metric == "l2":  # back from 2q.d - |d|^2 to |q - d|^2
                qb = _query_chunk(q, q_start, qc, device, dtype)
                best_s = (qb.pow(2).sum(1, keepdim=True) - best_s).clamp_min_(0)
            out_s[q_start:q_start + qc] = best_s
            out_i[q_start:q_start + qc] = best_i
    return out_s, out_i, counts


def _count_rows(mask: torch.Tensor) -> torch.Tensor:
    """True entries per row. On CPU through numpy, whose buffered reduction needs no copy:
    torch's bool sum makes an int64 copy of the whole block (8x its size) every time."""
    if mask.device.type == "cpu":
        return torch.from_numpy(np.add.reduce(mask.numpy(), axis=1, dtype=np.int64))
    return mask.sum(1)


def _query_chunk(q: torch.Tensor, start: int, qc: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """Queries ``start:start+qc`` on the compute device and dtype (a view when already there)."""
    return q[start:start + qc].to(device=device, dtype=dtype)


def knn(queries: torch.Tensor | np.ndarray, database: torch.Tensor | np.ndarray, k: int,
        metric: Metric = "ip", *, backend: Backend = "auto", device: str | torch.device | None = None,
        chunk_bytes: int | None = None, query_chunk: int | None = None,
        db_chunk: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact top-``k`` database items for every query.

    Args:
        queries: ``(Q, D)`` float descriptors (tensor on any device, or numpy array).
        database: ``(N, D)`` float descriptors.
        k: neighbours per query; clipped to ``N``.
        metric: ``"ip"`` (inner product, larger is closer) or ``"l2"`` (squared Euclidean).
        backend: ``"torch"``, ``"faiss"`` or ``"auto"`` (see the module docstring).
        device: where to compute (default: the queries' device). Blocks are moved there, so
            CPU descriptors can be searched on a GPU without copying them all at once.
        chunk_bytes: size of one score block plus one converted database block: the bound on
            extra memory (default :data:`DEFAULT_CHUNK_BYTES`, :data:`CUDA_CHUNK_BYTES` on CUDA).
        query_chunk, db_chunk: explicit block shape (overrides ``chunk_bytes``).

    Returns:
        ``(scores, indices)``, both ``(Q, k)`` on the compute device: float scores
        (inner products decreasing, or squared distances increasing) and int64 database indices.
    """
    q, d = _check_pair(queries, database, metric)
    if k < 1:
        raise InputError(f"k must be at least 1, got {k}")
    k = min(k, d.shape[0])
    device = torch.device(device) if device is not None else q.device
    dtype = _compute_dtype(q, d)
    if backend == "auto":
        backend = choose_backend(k, device, dtype)
    if backend == "faiss":
        return _knn_faiss(q, d, k, metric)
    if backend != "torch":
        raise InputError(f"backend: expected 'auto', 'torch' or 'faiss', got {backend!r}")
    scores, index, _ = _scan(q, d, metric, device, dtype, chunk_bytes, query_chunk, db_chunk, k=k)
    return scores, index


def _knn_faiss(q: torch.Tensor, d: torch.Tensor, k: int, metric: str) -> tuple[torch.Tensor, torch.Tensor]:
    import faiss

    if q.device.type != "cpu" or d.device.type != "cpu":
        raise InputError("backend='faiss' searches CPU descriptors only (faiss-cpu); use backend='torch' for CUDA")
    xq = np.ascontiguousarray(q.detach().numpy(), dtype=np.float32)
    xb = np.ascontiguousarray(d.detach().numpy(), dtype=np.float32)
    # One neighbour more than asked: where the (k+1)-th score equals the k-th, faiss's heap may
    # have kept other items of that score than the lowest-indexed ones (for inner products it
    # does), so those queries are searched again by the blocked search.
    kk = min(k + 1, xb.shape[0])
    scores, idx = faiss.knn(xq, xb, kk, metric=faiss.METRIC_INNER_PRODUCT if metric == "ip" else faiss.METRIC_L2)
    scores, idx = torch.from_numpy(scores), torch.from_numpy(idx)
    if kk > k:
        tie = (scores[:, k] == scores[:, k - 1]).nonzero().view(-1)
        scores, idx = scores[:, :k].contiguous(), idx[:, :k].contiguous()
        if tie.numel():
            scores[tie], idx[tie], _ = _scan(q[tie], d, metric, torch.device("cpu"), torch.float32,
                                             None, None, None, k=k)
    return _best_first(scores, idx, descending=metric == "ip")


def _target_scores(qb: torch.Tensor, true_db: torch.Tensor, metric: str,
                   d_maxnorm: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Each query's score with its target, and the margin within which a block score is
    re-decided exactly.

    Block scores come from BLAS products whose rounding depends on the block's shape and the
    library's kernel choice, so an item tying with the target (e.g. an exact duplicate) may land
    one unit above or below it. Every score within the margin of the target's is therefore
    decided again in float64 (:func:`_exact_scores`). The margin is ``4 sqrt(D + 2) u |q| max|d|``
    (twice a per-score bound of ``2 sqrt(D + 2) u |q| |d|``, plus the ``|d|^2`` term for l2). It is
    not the worst-case bound ``(D + 2) u |q| |d|`` (Higham, Accuracy and Stability of Numerical
    Algorithms, eq. 3.5), which would send ~1% of all pairs of random 4096-d unit vectors to
    float64; it is twice the largest error measured for OpenBLAS sgemm over D = 8 ... 8448 (random
    and non-negative unit vectors): 1.1 sqrt(D) u at D = 8, at most 0.23 sqrt(D) u for D >= 1024.
    """
    true_s = (qb * true_db).sum(1)
    gamma = 2 * (qb.shape[1] + 2) ** 0.5 * torch.finfo(qb.dtype).eps / 2  # finfo.eps = 2u
    eps = gamma * qb.norm(dim=1) * d_maxnorm
    if metric == "l2":  # block scores are 2 q.d - |d|^2
        true_s = 2 * true_s - true_db.pow(2).sum(1)
        eps = 2 * eps + gamma * d_maxnorm ** 2
    return true_s, 2 * eps


def _exact_scores(q: torch.Tensor, d: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor, metric: str,
                  device: torch.device, batch: int = 1024) -> torch.Tensor:
    """Float64 score (larger = closer) of each pair ``(q[rows[i]], d[cols[i]])``, computed pair by
    pair with one reduction, so that exact duplicates tie exactly."""
    out = torch.empty(rows.numel(), dtype=torch.float64, device=device)
    for i in range(0, rows.numel(), batch):
        qr = q[rows[i:i + batch].to(q.device)].to(device=device, dtype=torch.float64)
        dc = d[cols[i:i + batch].to(d.device)].to(device=device, dtype=torch.float64)
        out[i:i + batch] = (qr * dc).sum(1) if metric == "ip" else -(qr - dc).pow(2).sum(1)
    return out


def _check_targets(targets, n_q: int, n_db: int) -> torch.Tensor:
    t = torch.as_tensor(targets, dtype=torch.long).reshape(-1)
    if t.numel() != n_q:
        raise InputError(f"targets: expected one database index per query ({n_q}), got {t.numel()}")
    if t.numel() and (int(t.min()) < 0 or int(t.max()) >= n_db):
        raise InputError(f"targets: indices must lie in [0, {n_db}), got range [{int(t.min())}, {int(t.max())}]")
    return t


def count_closer(queries: torch.Tensor | np.ndarray, database: torch.Tensor | np.ndarray,
                 targets: torch.Tensor | np.ndarray | list[int], metric: Metric = "ip", *,
                 k: int = 0, device: str | torch.device | None = None,
                 chunk_bytes: int | None = None, query_chunk: int | None = None,
                 db_chunk: int | None = None):
    """For each query ``i``, the number of database items *strictly* closer to it than
    ``database[targets[i]]`` (its 0-based rank when ties are resolved in its favour).

    This is the quantity CVFT's evaluation counts, ``np.sum(dist_array[:, i] < dist_array[i, i])``
    (YujiaoShi/cross_view_localization_CVFT, script/test_cvusa.py:38-46), computed block by
    block. The target's own score comes from the same kind of matrix product as every other
    score, and the target itself is never counted, so rounding cannot make an item beat itself.

    Args:
        k: when positive, also return the top-``k`` of each query from the same pass (for
            pictures), as :func:`knn` would.

    Returns:
        ``(Q,)`` int64 counts on the compute device; with ``k > 0``, ``(counts, scores, indices)``.
    """
    q, d = _check_pair(queries, database, metric)
    t = _check_targets(targets, q.shape[0], d.shape[0])
    device = torch.device(device) if device is not None else q.device
    k = min(max(k, 0), d.shape[0])
    scores, index, counts = _scan(q, d, metric, device, _compute_dtype(q, d), chunk_bytes,
                                  query_chunk, db_chunk, k=k, targets=t.to(device))
    return (counts, scores, index) if k else counts
