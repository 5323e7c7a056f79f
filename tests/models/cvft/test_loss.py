"""CVFT's weighted soft-margin triplet loss equals the original compute_loss (values frozen from TF)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from zoo.models.cvft.loss import WeightedSoftMarginTriplet, utm_pair_mask, weighted_soft_margin_triplet

REFERENCE = Path(__file__).resolve().parents[2] / "fixtures" / "reference" / "cvft_tf_outputs.npz"


@pytest.mark.parametrize("batch", [4, 7])
def test_equals_the_original_tensorflow_loss(batch: int) -> None:
    ref = np.load(REFERENCE)
    sat = torch.from_numpy(ref[f"loss_sat_B{batch}"])
    grd = torch.from_numpy(ref[f"loss_grd_B{batch}"])
    utm = torch.from_numpy(ref[f"loss_utm_B{batch}"])
    cvusa = weighted_soft_margin_triplet(sat, grd, alpha=10.0)
    assert abs(float(cvusa) - float(ref[f"loss_cvusa_B{batch}"])) < 1e-5
    cvact = WeightedSoftMarginTriplet(10.0, distance_threshold=25.0)(sat, grd, utm)
    assert abs(float(cvact) - float(ref[f"loss_cvact_B{batch}"])) < 1e-5
    assert float(cvact) != pytest.approx(float(cvusa))   # the mask matters on these batches


def test_mask_and_gradients() -> None:
    utm = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 30.0]])
    mask = utm_pair_mask(utm, 25.0)
    assert mask.tolist() == [[0, 0, 1], [0, 0, 1], [1, 1, 0]]
    sat = torch.nn.functional.normalize(torch.randn(3, 8), dim=1).requires_grad_()
    grd = torch.nn.functional.normalize(torch.randn(3, 8), dim=1).requires_grad_()
    weighted_soft_margin_triplet(sat, grd, mask=mask).backward()
    assert torch.isfinite(sat.grad).all() and sat.grad.abs().sum() > 0
    # perfectly separated pairs drive the loss to its floor: log(2) per diagonal entry / (B (B-1))
    eye = torch.eye(4)
    floor = weighted_soft_margin_triplet(eye, eye, alpha=100.0)
    assert float(floor) == pytest.approx(4 * np.log(2.0) / 12, rel=1e-5)
