"""DyCL losses against frozen values and gradients of the original's HAPLoss, DyCLLoss and ClusterLoss
(run as base_training_loop_our combines them; see fixtures/reference/README.md)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from tests.fixtures.dycl_reference import loss_batch
from zoo.models.dycl.loss import DyCLContrastiveLoss, DyCLCriterion, batch_relevances

REF = Path(__file__).resolve().parents[2] / "fixtures" / "reference" / "dycl_losses.npz"


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_losses_and_gradients_equal_original(seed: int) -> None:
    ref = np.load(REF)
    e1, e3, labels, matrix, proxies = loss_batch(seed)
    crit = DyCLCriterion(num_classes=10, embedding_size=16)
    with torch.no_grad():
        crit.cluster.proxies.copy_(proxies)
    sat, drone = e1.clone().requires_grad_(), e3.clone().requires_grad_()
    total, parts = crit(sat, drone, labels, matrix.long())
    for name, value in parts.items():
        expected = float(ref[f"seed{seed}/{name}"])
        assert float(value.detach()) == pytest.approx(expected, rel=1e-6), name
        g_sat, g_drone = torch.autograd.grad(value, (sat, drone), retain_graph=True)
        for got, key in ((g_sat, "grad_sat"), (g_drone, "grad_drone")):
            want = torch.from_numpy(ref[f"seed{seed}/{name}_{key}"])
            assert (got - want).abs().max() <= 1e-5 * max(1.0, want.abs().max().item()), (name, key)
    g_proxies = torch.autograd.grad(parts["cluster"], crit.cluster.proxies, retain_graph=True)[0]
    torch.testing.assert_close(g_proxies, torch.from_numpy(ref[f"seed{seed}/cluster_grad_proxies"]), rtol=1e-5, atol=1e-7)
    assert float(total.detach()) == pytest.approx(float(ref[f"seed{seed}/total"]), rel=1e-6)


def test_batch_dimension_normalisation_quirk_and_correction() -> None:
    e1, e3, labels, matrix, _ = loss_batch(0)
    target = matrix.long()[labels][:, labels]
    quirk, fixed = DyCLContrastiveLoss(), DyCLContrastiveLoss(normalize_dim=1)
    # embeddings are unit rows already: the corrected loss works on cosines, the original's does not
    assert float(fixed(e1, e3, target)) != pytest.approx(float(quirk(e1, e3, target)), rel=1e-3)
    cos = e1 @ e3.T
    expected = fixed._one_side(cos, target) / 2 + fixed._one_side(cos.T, target) / 2
    assert float(fixed(e1, e3, target)) == pytest.approx(float(expected), rel=1e-6)


def test_relevances_are_happier_pop_weights() -> None:
    target = torch.tensor([[3, 2, 2, 0, 1], [0, 3, 1, 1, 1]])
    rel = batch_relevances(target)
    # weights (l / 2) per level, divided by the number of items of that level in the row
    torch.testing.assert_close(rel, torch.tensor([[1.5, 0.5, 0.5, 0.0, 0.5], [0.0, 1.5, 0.5 / 3, 0.5 / 3, 0.5 / 3]]))
