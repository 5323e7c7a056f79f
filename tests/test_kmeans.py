"""zoo.kmeans: faiss (as UCDIR's run_kmeans) and the torch fallback find the same clusters on structured data."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from zoo.errors import InputError
from zoo.kmeans import faiss_available, kmeans


def _blobs(seed: int, k: int = 5, per: int = 30, dim: int = 16) -> tuple[torch.Tensor, np.ndarray]:
    g = torch.Generator().manual_seed(seed)
    centres = torch.nn.functional.normalize(torch.randn(k, dim, generator=g), dim=1) * 3
    labels = torch.arange(k).repeat_interleave(per)
    return centres[labels] + 0.3 * torch.randn(k * per, dim, generator=g), labels.numpy()


def _same_partition(a: np.ndarray, b: np.ndarray) -> bool:
    pairs = set(zip(a.tolist(), b.tolist()))
    return len(pairs) == len(set(a.tolist())) == len(set(b.tolist()))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_torch_fallback_recovers_the_clusters(seed: int) -> None:
    x, labels = _blobs(seed)
    im2cluster, centroids = kmeans(x, 5, seed=0, backend="torch")
    assert centroids.shape == (5, 16) and im2cluster.dtype == torch.int64
    assert _same_partition(im2cluster.numpy(), labels)


@pytest.mark.skipif(not faiss_available(), reason="faiss is not installed")
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_faiss_and_torch_agree(seed: int) -> None:
    x, _ = _blobs(seed, k=7, per=12, dim=128)
    x = torch.nn.functional.normalize(x, dim=1)  # UCDIR clusters L2-normalised 128-d descriptors
    a, ca = kmeans(x, 7, seed=0, backend="faiss")
    b, cb = kmeans(x, 7, seed=0, backend="torch")
    assert _same_partition(a.numpy(), b.numpy())
    # same centroids up to the order of the clusters
    order = {int(i): int(j) for i, j in zip(a, b)}
    torch.testing.assert_close(cb[[order[i] for i in range(7)]], ca, atol=1e-4, rtol=0)


def test_errors_and_empty_clusters() -> None:
    with pytest.raises(InputError, match="N >= k"):
        kmeans(torch.zeros(3, 2), 4)
    # duplicated points leave clusters empty: the largest is split, every cluster ends non-empty
    x = torch.cat([torch.zeros(10, 2), torch.ones(10, 2), torch.tensor([[5.0, 5.0]])])
    im2cluster, _ = kmeans(x, 3, seed=0, backend="torch")
    assert _same_partition(im2cluster.numpy(), np.array([0] * 10 + [1] * 10 + [2]))
