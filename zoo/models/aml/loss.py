"""AML's training losses (Budnik & Avrithis, CVPR 2021; budnikm/aml lib/layers/loss.py, functional.py).

Every loss works on training tuples: an anchor descriptor per tuple (the student's, with
gradients) and ``K`` candidate descriptors per tuple with a positive/negative label. What the
candidates are makes the variant (AML ``--mode``):

* symmetric contrastive (``std``): candidates are the *student's* positive and negatives;
* asymmetric contrastive (``ts``): candidates are the *teacher's* positive and negatives
  (fixed vectors), negatives mined on the teacher's descriptors;
* Contr+ (``ts_self``): the teacher's descriptor of the query itself is an extra positive
  (labels ``1, 1, 0, ...``);
* regression (``reg``): the only candidate is the teacher's query descriptor, label 1, so the
  contrastive loss becomes ``0.5 * ||s - t + eps||^2``;
* RKD (``rkd``): relational distillation on a batch of student and teacher descriptors.

Descriptors are rows ``(…, D)``. The original sums over tuples (one backward per tuple);
``contrastive_loss`` returns the same sum.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def contrastive_loss(anchor: torch.Tensor, candidates: torch.Tensor, positive: torch.Tensor,
                     margin: float = 0.7, eps: float = 1e-6) -> torch.Tensor:
    """Summed contrastive loss of cirtorch/AML.

    Args:
        anchor: ``(T, D)`` one descriptor per tuple (the query).
        candidates: ``(T, K, D)`` the tuple's other descriptors.
        positive: ``(T, K)`` bool/0-1, 1 for a positive.
        margin: negatives closer than this are pushed away (0.7 in AML).
        eps: added to the difference before the norm, as the original (keeps the gradient finite).

    Returns:
        scalar: ``sum 0.5*y*d^2 + 0.5*(1-y)*max(margin - d, 0)^2`` with ``d = ||a - c + eps||``.
    """
    if anchor.dim() != 2 or candidates.dim() != 3 or candidates.shape[::2] != anchor.shape:
        raise ValueError(f"anchor (T, D) and candidates (T, K, D) expected, got {tuple(anchor.shape)} "
                         f"and {tuple(candidates.shape)}")
    y = positive.to(anchor.dtype)
    d = (anchor.unsqueeze(1) - candidates + eps).pow(2).sum(-1).sqrt()
    return (0.5 * y * d.pow(2) + 0.5 * (1 - y) * (margin - d).clamp(min=0).pow(2)).sum()


def tuple_labels(num_tuples: int, num_negatives: int, extra_positive: bool = False,
                 device: torch.device | None = None) -> torch.Tensor:
    """``(T, K)`` labels of ``[p, n1..nN]`` (or ``[t(q), p, n1..nN]`` for Contr+)."""
    row = [1] * (2 if extra_positive else 1) + [0] * num_negatives
    return torch.tensor(row, dtype=torch.bool, device=device).expand(num_tuples, -1)


def regression_loss(student: torch.Tensor, teacher: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """AML ``reg``: the contrastive loss with the teacher's query as the single positive.

    ``(T, D), (T, D) -> sum 0.5 * ||s - t + eps||^2``.
    """
    return contrastive_loss(student, teacher.unsqueeze(1), torch.ones(student.shape[0], 1, dtype=torch.bool,
                                                                        device=student.device), eps=eps)


def _pdist(e: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    sq = e.pow(2).sum(1)
    d = (sq.unsqueeze(1) + sq.unsqueeze(0) - 2 * e @ e.t()).clamp(min=eps).sqrt()
    # zero diagonal (out of place, so autograd sees it)
    return d * (1 - torch.eye(len(e), device=e.device, dtype=e.dtype))


def _angles(e: torch.Tensor) -> torch.Tensor:
    diff = F.normalize(e.unsqueeze(0) - e.unsqueeze(1), p=2, dim=2)
    return torch.bmm(diff, diff.transpose(1, 2)).reshape(-1)


def rkd_loss(student: torch.Tensor, teacher: torch.Tensor, angle_weight: float = 2.0,
             distance_weight: float = 1.0) -> torch.Tensor:
    """Relational knowledge distillation as AML's ``RKdAD``: ``2 * angle + distance`` (smooth L1, means).

    ``student (B, D)``, ``teacher (B, D)`` (the teacher side carries no gradient). Distances are
    divided by their mean over distinct pairs.
    """
    with torch.no_grad():
        t_angle = _angles(teacher)
        t_d = _pdist(teacher)
        t_d = t_d / t_d[t_d > 0].mean()
    s_angle = _angles(student)
    d = _pdist(student)
    d = d / d[d > 0].mean()
    return angle_weight * F.smooth_l1_loss(s_angle, t_angle) + distance_weight * F.smooth_l1_loss(d, t_d)


class ContrastiveLoss(nn.Module):
    """Module form of :func:`contrastive_loss` (margin 0.7 as AML)."""

    def __init__(self, margin: float = 0.7, eps: float = 1e-6) -> None:
        super().__init__()
        self.margin, self.eps = margin, eps

    def forward(self, anchor: torch.Tensor, candidates: torch.Tensor, positive: torch.Tensor) -> torch.Tensor:
        return contrastive_loss(anchor, candidates, positive, self.margin, self.eps)

    def extra_repr(self) -> str:
        return f"margin={self.margin}"
