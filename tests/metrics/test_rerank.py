"""DyCL's multi-level k-reciprocal re-ranking: equal to the original's re_ranking_in (frozen outputs),
and its cache never serves one model's distances to another."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import zoo.metrics.rerank as rerank
from zoo.data.base import RetrievalSet
from zoo.metrics.base import get_protocol

REF = Path(__file__).resolve().parents[1] / "fixtures" / "reference" / "dycl_rerank.npz"


@pytest.mark.parametrize("case", ["case0", "case1"])
def test_equal_to_original(case: str) -> None:
    ref = np.load(REF)
    dist = rerank.k_reciprocal_rerank(ref[f"{case}/q"], ref[f"{case}/g"])
    np.testing.assert_allclose(dist, ref[f"{case}/dist"], rtol=0, atol=1e-6)


def _toy(n_places: int = 12, per: int = 3, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, RetrievalSet]:
    g = torch.Generator().manual_seed(seed)
    sat = torch.nn.functional.normalize(torch.randn(n_places, 8, generator=g), dim=1)
    drone = torch.nn.functional.normalize(sat.repeat_interleave(per, 0) + 0.5 * torch.randn(n_places * per, 8, generator=g), dim=1)
    levels = np.zeros((n_places, n_places), dtype=np.int8)
    np.fill_diagonal(levels, 3)
    levels[np.arange(1, n_places), np.arange(n_places - 1)] = 2
    qp = np.repeat(np.arange(n_places), per)
    exact = levels[qp]
    counts = np.stack([(exact == v).sum(1) for v in range(4)], 1)
    gt = {"place_levels": levels, "query_place": qp, "db_place": np.arange(n_places), "level_counts": counts}
    return drone, sat, RetrievalSet("toy", Path("."), [], [], gt, "hierarchical", {"direction": "drone_satellite"})


def test_protocol_rerank_uses_a_cache_keyed_by_descriptors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    q, d, ds = _toy()
    protocol = get_protocol("hierarchical")
    plain = protocol(q, d, ds, progress=False).metrics
    first = protocol(q, d, ds, rerank=True, rerank_cache=str(tmp_path), progress=False).metrics
    assert first != plain and len(list(tmp_path.glob("rerank_*.npy"))) == 1
    expected = rerank.k_reciprocal_rerank(q.numpy(), d.numpy())
    assert np.array_equal(np.load(next(tmp_path.glob("rerank_*.npy"))), expected)

    def boom(*args, **kwargs):
        raise AssertionError("recomputed although cached")

    monkeypatch.setattr(rerank, "k_reciprocal_rerank", boom)
    assert protocol(q, d, ds, rerank=True, rerank_cache=str(tmp_path), progress=False).metrics == first
    # another model's descriptors of the same data: a new key, not the cached distances
    other_q, other_d, _ = _toy(seed=1)
    with pytest.raises(AssertionError, match="recomputed"):
        protocol(other_q, other_d, ds, rerank=True, rerank_cache=str(tmp_path), progress=False)
