"""CVFT's weighted soft-margin triplet loss (``compute_loss`` in ``train_cvusa.py`` / ``train_cvact.py``).

With ``d = 2 - 2 * sat @ grd.T`` (``d[i, j]``: aerial ``i`` vs ground ``j``) and ``p = diag(d)``,
ground-to-aerial terms are ``p[j] - d[i, j]`` and aerial-to-ground terms ``p[i] - d[i, j]``; the
loss is the mean of ``sum log(1 + exp(alpha * term)) / n`` over the two directions.

Kept as the original computes it:

* the sums run over all ``B x B`` entries, the diagonal included (each contributes ``log 2``),
  and are divided by ``n = B (B - 1)``;
* with a distance mask (CVACT), ``term * mask`` enters the softplus, so a masked pair still adds
  ``log 2``, and ``n`` is the number of unmasked pairs. The mask keeps pairs whose squared UTM
  distance is at least ``25 m ** 2`` (``posDistSqThr``), which also drops the diagonal.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def utm_pair_mask(utm: torch.Tensor, threshold: float = 25.0) -> torch.Tensor:
    """``(B, 2)`` UTM easting/northing in metres -> ``(B, B)`` float mask, 1 where two locations are
    at least ``threshold`` metres apart (squared distances, as ``input_data_VGG.py`` computes them)."""
    diff = utm[:, None, :] - utm[None, :, :]
    return ((diff * diff).sum(-1) >= threshold * threshold).to(utm.dtype)


def weighted_soft_margin_triplet(sat: torch.Tensor, grd: torch.Tensor, alpha: float = 10.0,
                                 mask: torch.Tensor | None = None) -> torch.Tensor:
    """Loss of a batch of matching ``(B, D)`` aerial and ground descriptors (L2-normalised).

    ``mask`` ``(B, B)`` (1 = use the pair) gives CVACT's variant; ``None`` is CVUSA's.
    """
    dist = 2.0 - 2.0 * sat @ grd.t()
    pos = dist.diagonal()
    g2s = pos[None, :] - dist
    s2g = pos[:, None] - dist
    if mask is None:
        b = dist.shape[0]
        pairs = torch.tensor(float(b * (b - 1)), dtype=dist.dtype, device=dist.device)
    else:
        mask = mask.to(dist.dtype)
        g2s, s2g = g2s * mask, s2g * mask
        pairs = mask.sum()
    # softplus(x) = log(1 + exp(x)) without overflow for large alpha * term
    loss_g2s = F.softplus(alpha * g2s).sum() / pairs
    loss_s2g = F.softplus(alpha * s2g).sum() / pairs
    return (loss_g2s + loss_s2g) / 2.0


class WeightedSoftMarginTriplet(nn.Module):
    """Module form of :func:`weighted_soft_margin_triplet`; ``forward(sat, grd, utm=None)``."""

    def __init__(self, alpha: float = 10.0, distance_threshold: float | None = None) -> None:
        super().__init__()
        self.alpha, self.distance_threshold = alpha, distance_threshold

    def forward(self, sat: torch.Tensor, grd: torch.Tensor, utm: torch.Tensor | None = None) -> torch.Tensor:
        mask = None
        if self.distance_threshold is not None and utm is not None:
            mask = utm_pair_mask(utm, self.distance_threshold)
        return weighted_soft_margin_triplet(sat, grd, self.alpha, mask)
