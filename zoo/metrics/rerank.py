"""DyCL's multi-level k-reciprocal re-ranking (``engine/get_knn_rerank.py``, run by ``test_rerank.py``).

It extends Zhong et al.'s k-reciprocal re-ranking (CVPR 2017) to the hierarchy: the Jaccard
distance is computed three times with neighbourhoods ``k1 = 20, 62, 292`` (``k2 = 6``), each
mixed with the original distance (``lambda = 0.3``); the items among the 21 nearest of level 0
keep their level-0 distance, the next ones among the 63 nearest of level 1 get the level-1
distance + 1, and all others the level-2 distance + 2.

Distances are cosine distances ``1 - <x, y>`` of L2-normalised descriptors, squared and divided
by each column's maximum over queries and database together, as the original.

The original caches its distance matrices in the data folder under fixed names, so a second model
silently reuses the first one's; :func:`cached_rerank_distances` keys its cache by a hash of the
descriptors themselves (hence of the model weights, transform and images) and of the data set.

Cost, as the original: dense ``(Q + N)^2`` float32 matrices (0.4 GB each for 10k images) and a
Python loop over every item per level (minutes on CPU for 10k images).
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from zoo.io import atomic_path

K1S = (20, 62, 292)
K2S = (6, 6, 6)
LAMBDA = 0.3


def _reciprocal_neighbours(rank: np.ndarray, i: int, k: int) -> np.ndarray:
    """Items j among the k+1 nearest of i that have i among their own k+1 nearest."""
    forward = rank[i, :k + 1]
    backward = rank[forward, :k + 1]
    return forward[np.where(backward == i)[0]]


def _jaccard(dist: np.ndarray, rank: np.ndarray, num_query: int, k1: int, k2: int, beta: float) -> np.ndarray:
    n = dist.shape[0]
    half = int(np.around(k1 / 2.0))
    core = [_reciprocal_neighbours(rank, i, k1) for i in range(n)]
    small = [_reciprocal_neighbours(rank, i, half) for i in range(n)]
    in_core = np.zeros(n, dtype=bool)
    v = np.zeros((n, n), dtype=np.float32)
    for i in range(n):
        # expand by the candidates whose own (k1/2)-reciprocal set lies mostly (> 2/3) in i's set
        in_core[core[i]] = True
        expanded = [core[i]] + [small[c] for c in core[i] if in_core[small[c]].sum() > 2.0 / 3 * len(small[c])]
        in_core[core[i]] = False
        members = np.unique(np.concatenate(expanded))
        weight = np.exp(-dist[i, members] * beta)
        v[i, members] = weight / np.sum(weight)
    if k2 != 1:
        # local query expansion: average the encodings of the k2 nearest
        v = np.stack([np.mean(v[rank[i, :k2]], axis=0) for i in range(n)]).astype(np.float32)
    # The Jaccard overlap of query i with every item c sums min(V[i, k], V[c, k]) over the k where both are
    # non-zero; walking V's columns (the original's inverted index) keeps the cost to those entries and
    # adds the terms in the original's order (k ascending), so float32 sums are the same.
    cols, rows = np.nonzero(v.T)
    vals = v[rows, cols]
    starts = np.searchsorted(cols, np.arange(n + 1))
    out = np.zeros((num_query, n), dtype=np.float32)
    for i in range(num_query):
        nz = np.flatnonzero(v[i])
        lengths = starts[nz + 1] - starts[nz]
        offsets = np.repeat(starts[nz] - np.cumsum(lengths) + lengths, lengths) + np.arange(lengths.sum())
        overlap = np.zeros(n, dtype=np.float32)
        np.add.at(overlap, rows[offsets], np.minimum(np.repeat(v[i, nz], lengths), vals[offsets]))
        out[i] = 1 - overlap / (2.0 - overlap)
    return out


def k_reciprocal_rerank(query: torch.Tensor | np.ndarray, database: torch.Tensor | np.ndarray,
                        k1s: Sequence[int] = K1S, k2s: Sequence[int] = K2S, lambda_value: float = LAMBDA,
                        beta: float = 1.0, progress: bool = False) -> np.ndarray:
    """``(Q, N)`` re-ranked distances (smaller = closer) of L2-normalised descriptors ``(Q, D)``, ``(N, D)``."""
    from tqdm import tqdm

    q = np.asarray(query, dtype=np.float32)
    g = np.asarray(database, dtype=np.float32)
    qg, qq, gg = 1.0 - q @ g.T, 1.0 - q @ q.T, 1.0 - g @ g.T
    dist = np.block([[qq, qg], [qg.T, gg]])
    dist = np.power(dist, 2).astype(np.float32)
    dist = np.transpose(dist / np.max(dist, axis=0))
    rank = np.argsort(dist).astype(np.int32)
    num_query, n = q.shape[0], dist.shape[0]
    final = None
    kept = np.zeros((num_query, 0), dtype=np.int64)
    for level, (k1, k2) in enumerate(tqdm(list(zip(k1s, k2s)), desc="k-reciprocal re-ranking", disable=not progress)):
        jaccard = _jaccard(dist, rank, num_query, k1, k2, beta) * (1 - lambda_value) + dist[:num_query] * lambda_value
        if final is None:
            final = jaccard
        else:
            outside = np.ones((num_query, n), dtype=bool)
            np.put_along_axis(outside, kept, False, axis=1)
            final[outside] = jaccard[outside] + level
        if level < len(k1s) - 1:
            kept = np.concatenate([kept, np.argsort(final)[:, :k1 + 1]], axis=1)
    return final[:, num_query:]


def cached_rerank_distances(query: torch.Tensor, database: torch.Tensor, data_fingerprint: str,
                            cache_dir: Path | None, **params: object) -> torch.Tensor:
    """:func:`k_reciprocal_rerank`, cached under a key of the descriptors' bytes, the data set's
    fingerprint and the parameters (one model never reuses another's distances)."""
    q = query.float().cpu().contiguous().numpy()
    g = database.float().cpu().contiguous().numpy()
    digest = hashlib.sha256()
    for part in (q.tobytes(), g.tobytes(), str(q.shape).encode(), str(g.shape).encode(),
                 data_fingerprint.encode(), repr(sorted(params.items())).encode()):
        digest.update(part)
    path = Path(cache_dir) / f"rerank_{digest.hexdigest()[:24]}.npy" if cache_dir else None
    if path is not None and path.is_file():
        return torch.from_numpy(np.load(path))
    dist = k_reciprocal_rerank(q, g, progress=True, **params)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp, open(tmp, "wb") as f:
            np.save(f, dist)
    return torch.from_numpy(dist)
