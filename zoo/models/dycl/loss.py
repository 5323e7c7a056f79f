"""DyCL's training losses (anocodetest1/DyCL ``losses/``, ``config/loss/dycl.yaml``).

For a batch of B (satellite, drone) pairs with embeddings ``s``, ``d`` (B, D) and place labels,
the level matrix ``target[i, j] = place_levels[label_i, label_j]`` (0..3) defines the hierarchy.
The total loss is ``0.9 * H-AP + 0.2 * DyCL + 0.1 * cluster``:

* **H-AP surrogate** (HAPPIER's ``HAPLoss``, smooth-rank, ``with_hrank=False``): 1 - mean H-AP of
  the rows of ``s @ d.T`` (and of ``d @ s.T``, averaged), the rank of item j smoothed against
  less relevant items k by a sigmoid of temperature ``tau`` below 0, ``start + sigmoid`` up to
  ``delta`` and a line of slope ``rho`` above, exact steps elsewhere; relevances are HAPPIER's
  ``pop`` weights of the batch (:func:`batch_relevances`).
* **DyCL loss** (``DyCLLoss``): for each level threshold (>= 1, >= 2, == 3) with margins
  0.25/0.35/0.45, ``softplus(LSE_neg(32 * sim) + LSE_pos(-32 * sim) + 32 * margin)`` per row,
  averaged, summed over thresholds, on ``sim = s @ d.T`` and its transpose.
* **Cluster (proxy) loss** (``ClusterLoss``): cross-entropy of ``emb @ normalize(proxies).T / T``
  against the place label (450 proxies, T = 0.05), for both views, averaged.

Quirks of the original, reproduced by default:

* ``DyCLLoss`` normalises the embeddings over the *batch* dimension
  (``F.normalize(x, dim=0)``), so its similarities are not cosines; ``normalize_dim=1`` corrects it.
* The place-level matrix has false "same place" entries (see :mod:`zoo.data.da_campus`); this
  lives in the data (``row_batch``), and the same non-symmetric ``target`` is used for ``sim`` and
  its transpose, as the original does.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from zoo.metrics.hierarchical import HIERARCHY_LEVELS, pop_relevances


def batch_relevances(target: torch.Tensor, alpha: float = 1.0) -> torch.Tensor:
    """``(B, B)`` relevance of item j for row i: HAPPIER's ``pop`` weight of its level, divided by
    the number of items of that level in the row (``compute_relevance_on_the_fly``)."""
    counts = torch.stack([(target == v).sum(1) for v in range(HIERARCHY_LEVELS + 1)], dim=1)
    per_level = pop_relevances(counts, alpha).to(target.device)
    return torch.gather(per_level, 1, target.long())


def _tau_sigmoid(x: torch.Tensor, tau: float) -> torch.Tensor:
    return 1.0 / (1.0 + (-x / tau).clamp(-50, 50).exp())


def _step(x: torch.Tensor) -> torch.Tensor:
    """Heaviside step with value 1 at 0 (no gradient)."""
    return (x >= 0).to(x.dtype)


class SmoothRankHAPLoss(nn.Module):
    """HAPPIER's H-AP surrogate; ``forward(scores (B, B), target (B, B) levels) -> 1 - mean H-AP``."""

    def __init__(self, tau: float = 0.01, rho: float = 100.0, offset: float = 1.44, delta: float = 0.05,
                 start: float = 0.5, alpha: float = 1.0) -> None:
        super().__init__()
        self.tau, self.rho, self.offset, self.delta, self.start, self.alpha = tau, rho, offset, delta, start, alpha

    def smooth_rank(self, diff: torch.Tensor, lower: torch.Tensor) -> torch.Tensor:
        """``diff[i, j, k] = s_ik - s_ij``; smoothed where item k is less relevant than j (``lower``)."""
        near = self.start + _tau_sigmoid(diff, self.tau)
        far = self.rho * (diff - self.delta) + self.offset
        smooth = torch.where(diff > 0, torch.where(diff > self.delta, far, near), _tau_sigmoid(diff, self.tau))
        return torch.where(lower, smooth, _step(diff))

    def mhap(self, scores: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        n = scores.shape[0]
        relevances = batch_relevances(target, self.alpha).to(scores.dtype)
        off_diag = 1.0 - torch.eye(n, device=scores.device, dtype=scores.dtype)
        diff = scores.unsqueeze(1) - scores.unsqueeze(2)
        lower = target.unsqueeze(2) > target.unsqueeze(1)
        rank = 1.0 + (self.smooth_rank(diff, lower) * off_diag).sum(-1)
        min_rel = torch.minimum(relevances.unsqueeze(1), relevances.unsqueeze(2))
        hrank = relevances + (_step(diff) * off_diag * min_rel).sum(-1)
        return (hrank / rank).sum(-1) / relevances.sum(-1)

    def forward(self, scores: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return (1.0 - self.mhap(scores, target)).mean()


class DyCLContrastiveLoss(nn.Module):
    """``forward(emb_a (B, D), emb_b (B, D), target (B, B)) -> scalar``; see the module docstring."""

    def __init__(self, scale: float = 32.0, margins: tuple[float, float, float] = (0.25, 0.35, 0.45),
                 normalize_dim: int = 0) -> None:
        super().__init__()
        self.scale, self.margins, self.normalize_dim = scale, tuple(margins), normalize_dim

    def _one_side(self, sim: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        logits = sim * self.scale
        neg = logits.masked_fill(target != 0, -math.inf).logsumexp(1)
        total = 0.0
        # thresholds from the coarsest positive set (>= 1) to "same place" (== 3)
        for positive, margin in zip((target >= 1, target >= 2, target == 3), self.margins):
            pos = (-logits).masked_fill(~positive, -math.inf).logsumexp(1)
            total = total + F.softplus(neg + pos + margin * self.scale).mean()
        return total

    def forward(self, emb_a: torch.Tensor, emb_b: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        a = F.normalize(emb_a, dim=self.normalize_dim)
        b = F.normalize(emb_b, dim=self.normalize_dim)
        sim = a @ b.T
        return (self._one_side(sim, target) + self._one_side(sim.T, target)) / 2


class ProxyClusterLoss(nn.Module):
    """Cross-entropy on cosine logits to one learned proxy per place: ``(B, D), (B,) -> scalar``."""

    def __init__(self, num_classes: int, embedding_size: int, temperature: float = 0.05) -> None:
        super().__init__()
        self.temperature = temperature
        bound = 1.0 / math.sqrt(embedding_size)
        self.proxies = nn.Parameter(torch.empty(num_classes, embedding_size).uniform_(-bound, bound))

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        logits = F.linear(embeddings, F.normalize(self.proxies, dim=1))
        return F.cross_entropy(logits / self.temperature, labels)


class DyCLCriterion(nn.Module):
    """The weighted sum of the three losses on a batch of (satellite, drone) embedding pairs.

    Args:
        num_classes: places of the training set (proxies of the cluster loss; 450 for DA-Campus).
        embedding_size: descriptor size (512).
        weights: (H-AP, DyCL, cluster) = (0.9, 0.2, 0.1).
        normalize_dim: DyCL loss normalisation axis: 0 (the original's) or 1 (corrected).

    ``forward(sat (B, D), drone (B, D), labels (B,), place_levels (P, P)) -> (loss, parts)``.
    """

    def __init__(self, num_classes: int, embedding_size: int = 512, weights: tuple[float, float, float] = (0.9, 0.2, 0.1),
                 tau: float = 0.01, rho: float = 100.0, offset: float = 1.44, delta: float = 0.05, start: float = 0.5,
                 scale: float = 32.0, margins: tuple[float, float, float] = (0.25, 0.35, 0.45),
                 temperature: float = 0.05, normalize_dim: int = 0) -> None:
        super().__init__()
        self.weights = tuple(weights)
        self.hap = SmoothRankHAPLoss(tau, rho, offset, delta, start)
        self.dycl = DyCLContrastiveLoss(scale, margins, normalize_dim)
        self.cluster = ProxyClusterLoss(num_classes, embedding_size, temperature)

    def forward(self, sat: torch.Tensor, drone: torch.Tensor, labels: torch.Tensor,
                place_levels: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        target = place_levels[labels][:, labels]
        parts = {
            "hap": (self.hap(sat @ drone.T, target) + self.hap(drone @ sat.T, target)) / 2,
            "dycl": self.dycl(sat, drone, target),
            "cluster": (self.cluster(sat, labels) + self.cluster(drone, labels)) / 2,
        }
        loss = sum(w * v for w, v in zip(self.weights, parts.values()))
        return loss, parts
