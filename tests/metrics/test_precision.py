"""class_precision: UCDIR's pooled P@K equals main.py::retrieval_precision_cal (frozen), plus per-query P@K and mAP."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from tests.fixtures.ucdir_reference import precision_inputs
from zoo.data.base import RetrievalSet
from zoo.metrics.base import get_protocol

REF = dict(np.load(Path(__file__).resolve().parents[1] / "fixtures" / "reference" / "ucdir_precision.npz"))


def _set(lq: np.ndarray, ld: np.ndarray) -> RetrievalSet:
    return RetrievalSet("t", Path("."), [], [], {"query_labels": lq, "database_labels": ld}, "class_precision")


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("ks", [(1, 5, 15), (50, 100, 200)])
def test_pooled_precision_equals_the_original(seed: int, ks: tuple[int, ...]) -> None:
    fa, la, fb, lb = precision_inputs(seed)
    qa = torch.nn.functional.normalize(torch.from_numpy(fa), dim=1)
    qb = torch.nn.functional.normalize(torch.from_numpy(fb), dim=1)
    protocol = get_protocol("class_precision")
    tag = "_".join(map(str, ks))
    for q, d, lq, ld, side in ((qa, qb, la, lb, "AB"), (qb, qa, lb, la, "BA")):
        res = protocol(q, d, _set(lq, ld), k_values=ks, query_chunk=17)  # chunked: pooled over chunks
        ours = [res.metrics[f"P@{k}"] for k in ks]
        np.testing.assert_allclose(ours, REF[f"seed{seed}_{tag}_{side}"], atol=1e-9)


def test_per_query_precision_and_map_by_hand() -> None:
    # database labels [0, 1, 0, 1]; query 0 (label 0) ranks db 1, 0, 2, 3; query 1 (label 2) has no relevant image
    db = torch.eye(4)
    q = torch.nn.functional.normalize(torch.tensor([[0.6, 1.0, 0.3, 0.0], [0.0, 0.0, 0.0, 1.0]]), dim=1)
    res = get_protocol("class_precision")(q, db, _set(np.array([0, 2]), np.array([0, 1, 0, 1])), k_values=(1, 2, 3))
    # query 0: n_k = min(k, 2): hits in first 1 = 0, first 2 = 1; query 1 adds nothing
    assert res.metrics["P@1"] == 0.0 and res.metrics["P@2"] == 50.0 and res.metrics["P@3"] == 50.0
    assert res.metrics["per-query P@2"] == 50.0
    assert res.metrics["mAP"] == pytest.approx(100 * (1 / 2 + 2 / 3) / 2)
    assert res.topk[0, :3].tolist() == [1, 0, 2] and res.correct[0, :3].tolist() == [False, True, True]
