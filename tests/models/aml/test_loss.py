"""AML losses against the original's values and gradients on the same batches (frozen, see README)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from tests.fixtures.aml_reference import loss_batch
from zoo.models.aml.loss import contrastive_loss, regression_loss, rkd_loss, tuple_labels

REF = Path(__file__).resolve().parents[2] / "fixtures" / "reference" / "aml_losses.npz"


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("mode", ["std", "ts", "ts_self", "reg", "rkd"])
def test_equals_original(seed: int, mode: str) -> None:
    ref = np.load(REF)
    s, c = loss_batch(seed)
    T, K, _ = c.shape
    if mode == "std":
        # symmetric: the student's own positive/negatives (all with gradients)
        x = torch.cat([s[:, None], c[:, 1:]], 1).requires_grad_(True)
        loss = contrastive_loss(x[:, 0], x[:, 1:], tuple_labels(T, K - 2))
        loss.backward()
        grad = x.grad.reshape(-1, x.shape[-1])
    else:
        x = s.clone().requires_grad_(True)
        if mode == "ts":        # asymmetric: teacher positive and negatives
            loss = contrastive_loss(x, c[:, 1:], tuple_labels(T, K - 2))
        elif mode == "ts_self":  # Contr+: the teacher's query is one more positive
            loss = contrastive_loss(x, c, tuple_labels(T, K - 2, extra_positive=True))
        elif mode == "reg":
            loss = regression_loss(x, c[:, 0])
        else:
            loss = rkd_loss(x, c[:, 0])
        loss.backward()
        grad = x.grad
    assert loss.item() == pytest.approx(float(ref[f"{seed}_{mode}_loss"]), rel=1e-5, abs=1e-7)
    np.testing.assert_allclose(grad.numpy(), ref[f"{seed}_{mode}_grad"], rtol=0, atol=1e-6)
    assert loss.item() > 0


def test_negative_outside_margin_costs_nothing() -> None:
    a = torch.tensor([[1.0, 0.0]])
    far = torch.tensor([[[-1.0, 0.0]]])
    assert contrastive_loss(a, far, torch.zeros(1, 1, dtype=torch.bool)).item() == 0.0
    with pytest.raises(ValueError, match="candidates"):
        contrastive_loss(a, far[0], torch.zeros(1, 1))
