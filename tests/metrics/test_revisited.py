"""Revisited Oxford/Paris metrics against revisitop's own compute_map (frozen outputs)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from tests.fixtures.revisited_case import random_revisited_case
from zoo.data.base import RetrievalSet
from zoo.metrics.base import get_protocol
from zoo.metrics.revisited import compute_map, rank_database, setting_gnd

REF = Path(__file__).resolve().parents[1] / "fixtures" / "reference" / "revisitop_compute_map.npz"


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("setting", ["E", "M", "H"])
def test_equals_revisitop(seed: int, setting: str) -> None:
    ref = np.load(REF)
    ranks, gnd = random_revisited_case(seed)
    m, aps, pr, prs = compute_map(ranks, setting_gnd(gnd, setting), [1, 5, 10])
    np.testing.assert_allclose(m, ref[f"{seed}_{setting}_map"], rtol=0, atol=1e-12)
    np.testing.assert_allclose(aps, ref[f"{seed}_{setting}_aps"], rtol=0, atol=1e-12)  # NaN where skipped
    np.testing.assert_allclose(pr, ref[f"{seed}_{setting}_pr"], rtol=0, atol=1e-12)
    np.testing.assert_allclose(prs, ref[f"{seed}_{setting}_prs"], rtol=0, atol=1e-12)


def test_hand_computed_ap() -> None:
    # positives at 0 and 3 with a junk image at 1: junk removed -> positions 0 and 2
    ranks = np.array([[5], [7], [9], [6], [8]])
    m, aps, pr, _ = compute_map(ranks, [{"ok": [5, 6], "junk": [7]}], [1, 2])
    ap = ((1 + 1) / 2 + (1 / 2 + 2 / 3) / 2) / 2
    assert m == pytest.approx(ap)
    assert pr.tolist() == pytest.approx([1.0, 0.5])
    # a query without positives is skipped, not counted as 0
    m2, aps2, _, _ = compute_map(np.concatenate([ranks, ranks], 1), [{"ok": [5, 6], "junk": [7]}, {"ok": [], "junk": []}])
    assert m2 == pytest.approx(ap) and np.isnan(aps2[1])


def test_protocol_ranks_like_cirtorch(tmp_path: Path) -> None:
    g = torch.Generator().manual_seed(0)
    q = torch.nn.functional.normalize(torch.randn(5, 16, generator=g), dim=1)
    db = torch.nn.functional.normalize(torch.randn(40, 16, generator=g), dim=1)
    ranks = rank_database(q, db, chunk_bytes=8 * 40 * 2)  # several query chunks
    np.testing.assert_array_equal(ranks, np.argsort(-(db.numpy() @ q.numpy().T), axis=0))
    _, gnd = random_revisited_case(1, n_db=40, n_q=5)
    ds = RetrievalSet("roxford5k", tmp_path, [], [], gnd, "revisited")
    res = get_protocol("revisited")(q, db, ds)
    for s in "EMH":
        m, _, pr, _ = compute_map(ranks, setting_gnd(gnd, s), [1, 5, 10])
        assert res.metrics[f"mAP-{s}"] == pytest.approx(100 * m)
        assert res.metrics[f"mP@5-{s}"] == pytest.approx(100 * pr[1])
    assert res.topk.shape == (5, 10) and res.correct.dtype == torch.bool
