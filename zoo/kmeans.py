"""k-means as UCDIR runs it (``main.py::run_kmeans``): faiss ``Clustering`` where installed, torch otherwise.

Settings of the original: ``niter=20``, ``nredo=5`` (the run with the lowest objective wins),
``seed`` = index of the clustering, at most 2000 training points per centroid (faiss subsamples
beyond), L2 distance; each point is then assigned to its nearest centroid among *all* points.

The torch fallback runs Lloyd's iterations with the same settings (an empty cluster takes half of
the largest one as faiss's ``split_clusters`` does, best of ``nredo`` by the final objective) but
seeds them with k-means++ instead of faiss's uniformly drawn points: its random draws cannot be
faiss's anyway, and k-means++ reaches the well-separated optimum far more reliably. On hard data
the two can stop in different local optima; on data with a clear cluster structure both find the
same partition (cluster ids may be permuted), which the tests check.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch

from zoo.errors import InputError

Backend = Literal["auto", "faiss", "torch"]


def faiss_available() -> bool:
    try:
        import faiss  # noqa: F401
    except ImportError:
        return False
    return True


def kmeans(x: torch.Tensor | np.ndarray, k: int, niter: int = 20, nredo: int = 5, seed: int = 0,
           max_points_per_centroid: int = 2000, backend: Backend = "auto") -> tuple[torch.Tensor, torch.Tensor]:
    """Cluster ``x`` ``(N, D)`` into ``k`` clusters.

    Returns:
        ``im2cluster`` ``(N,)`` int64 (nearest centroid of every point) and ``centroids`` ``(k, D)``
        float32 (not normalised), both on CPU.
    """
    data = np.ascontiguousarray(torch.as_tensor(x).detach().float().cpu().numpy())
    if data.ndim != 2 or data.shape[0] < k or k < 1:
        raise InputError(f"kmeans: need (N, D) points with N >= k >= 1, got shape {data.shape} and k={k}")
    if backend == "auto":
        backend = "faiss" if faiss_available() else "torch"
    if backend == "faiss":
        return _faiss_kmeans(data, k, niter, nredo, seed, max_points_per_centroid)
    if backend == "torch":
        return _torch_kmeans(torch.from_numpy(data), k, niter, nredo, seed, max_points_per_centroid)
    raise InputError(f"kmeans: backend must be auto, faiss or torch, got {backend!r}")


def _faiss_kmeans(x: np.ndarray, k: int, niter: int, nredo: int, seed: int,
                  max_points: int) -> tuple[torch.Tensor, torch.Tensor]:
    import faiss

    d = x.shape[1]
    clus = faiss.Clustering(d, k)
    clus.niter, clus.nredo, clus.seed = niter, nredo, seed
    clus.max_points_per_centroid, clus.min_points_per_centroid = max_points, 2
    clus.verbose = False
    index = faiss.IndexFlatL2(d)
    clus.train(x, index)
    _, assign = index.search(x, 1)
    centroids = faiss.vector_to_array(clus.centroids).reshape(k, d)
    return torch.from_numpy(assign[:, 0].astype(np.int64)), torch.from_numpy(centroids.copy())


def _nearest(x: torch.Tensor, centroids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    dist = (x * x).sum(1, keepdim=True) - 2 * x @ centroids.t() + (centroids * centroids).sum(1)
    best, assign = dist.min(1)
    return assign, best.clamp_min(0)


def _kmeans_pp(x: torch.Tensor, k: int, gen: torch.Generator) -> torch.Tensor:
    """k-means++ seeding: each next centre drawn with probability proportional to the squared distance."""
    centres = [x[torch.randint(x.shape[0], (1,), generator=gen)]]
    for _ in range(1, k):
        _, dist = _nearest(x, torch.cat(centres))
        weights = dist if float(dist.sum()) > 0 else torch.ones_like(dist)
        centres.append(x[torch.multinomial(weights, 1, generator=gen)])
    return torch.cat(centres).clone()


def _torch_kmeans(x: torch.Tensor, k: int, niter: int, nredo: int, seed: int,
                  max_points: int) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    train = x
    if x.shape[0] > k * max_points:  # faiss subsamples the training points the same way
        train = x[torch.randperm(x.shape[0], generator=gen)[: k * max_points]]
    best_obj, best_centroids = float("inf"), None
    for _ in range(max(nredo, 1)):
        centroids = _kmeans_pp(train, k, gen)
        for _ in range(niter):
            assign, dist = _nearest(train, centroids)
            sums = torch.zeros_like(centroids).index_add_(0, assign, train)
            counts = torch.bincount(assign, minlength=k).to(train.dtype)
            centroids = torch.where(counts[:, None] > 0, sums / counts.clamp_min(1)[:, None], centroids)
            for empty in torch.nonzero(counts == 0).flatten().tolist():
                # Split the largest cluster in two, nudging the copies apart (faiss split_clusters).
                big = int(torch.argmax(counts))
                sign = torch.ones_like(centroids[big])
                sign[::2] = -1
                centroids[empty] = centroids[big] * (1 + sign / 1024)
                centroids[big] = centroids[big] * (1 - sign / 1024)
                counts[empty] = counts[big] / 2
                counts[big] -= counts[empty]
        _, dist = _nearest(train, centroids)
        obj = float(dist.sum())
        if obj < best_obj:
            best_obj, best_centroids = obj, centroids
    assert best_centroids is not None
    assign, _ = _nearest(x, best_centroids)
    return assign, best_centroids.float()
