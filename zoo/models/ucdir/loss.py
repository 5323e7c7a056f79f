"""The four losses of UCDIR (conghui1002/UCDIR ``builder.py``) and their weighting (``main.py::train``).

Notation: ``q``/``k`` are the L2-normalised query/key projections ``(B, D)`` of one domain's batch,
``ids`` their image indices in that domain, ``bank`` the domain's memory bank ``(D, N)`` (one
column per image, already holding this batch's keys: the original writes the keys into the bank
*before* computing the losses), and a clustering is ``(im2cluster (N,), centroids (k, D))`` with
L2-normalised centroids. UCDIR allows several clusterings per domain (``--num-cluster 250,500``);
the recipes use one (k = number of classes). All functions take lists of clusterings.

* :func:`instance_contrast` — InfoNCE of ``q`` against its key, negatives = every other bank column
  of the same domain (``instance_contrastive_loss``), temperature ``T`` (0.2).
* :func:`cluster_contrast` — for each query, the mean log-softmax (over the whole bank, ``T``) of the
  bank columns in its image's cluster (cluster memberships multiply over successive clusterings);
  averaged over queries whose *key* falls in its cluster with softmax probability (over centroids,
  ``T``) above ``filter_thresh`` (``cluster_contrastive_loss``).
* :func:`self_entropy` — entropy of ``softmax(q @ centroids.T / temp)`` for queries of both domains
  against centroids of both domains, averaged over the four pairs (``self_entropy_loss``).
* :func:`distance_of_distance` — for each domain's queries, the pairwise cosine distances of their
  cluster-probability vectors (softmax at temperature 0.01) w.r.t. domain A's and domain B's
  centroids; the loss is the squared Euclidean distance between the two distance rows, averaged
  (``dist_of_logit_loss``, ``F.pairwise_distance`` with its eps 1e-6 as the original).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F

from zoo.layers.norm import l2n

Clustering = tuple[torch.Tensor, torch.Tensor]  # (im2cluster (N,), centroids (k, D), L2-normalised)

__all__ = ["Clustering", "UCDIRLossWeights", "instance_contrast", "cluster_contrast", "self_entropy",
           "distance_of_distance", "cwcon_weight", "ucdir_loss"]


def instance_contrast(q: torch.Tensor, k: torch.Tensor, ids: torch.Tensor, bank: torch.Tensor,
                      temperature: float = 0.2) -> torch.Tensor:
    """InfoNCE: positive ``q·k``, negatives ``q·bank[:, j]`` for every ``j != ids`` (mean over the batch)."""
    pos = (q * k).sum(1, keepdim=True)
    scores = q @ bank.detach()
    # The image's own column is not a negative; dropping it leaves N-1 negatives, as masked_select does.
    own = torch.zeros_like(scores, dtype=torch.bool).scatter_(1, ids.view(-1, 1), True)
    scores = scores.masked_fill(own, float("-inf"))
    logits = torch.cat([pos, scores], dim=1) / temperature
    return F.cross_entropy(logits, torch.zeros(len(q), dtype=torch.long, device=q.device))


def cluster_contrast(q: torch.Tensor, k: torch.Tensor, ids: torch.Tensor, bank: torch.Tensor,
                     clusterings: Sequence[Clustering], temperature: float = 0.2,
                     filter_thresh: float = 0.2) -> torch.Tensor:
    """Cluster-wise contrast of one domain, averaged over its clusterings (see module doc)."""
    log_prob = torch.log_softmax(q @ bank.detach() / temperature, dim=1)
    same: torch.Tensor | float = 1.0
    losses = []
    for im2cluster, centroids in clusterings:
        own = im2cluster[ids]
        same = same * (own.view(-1, 1) == im2cluster.view(1, -1)).float()
        mean_pos = (same * log_prob).sum(1) / (same.sum(1) + 1e-8)
        # Keep queries whose key is confidently in its cluster (softmax over centroids above the threshold).
        p_own = torch.softmax(k @ centroids.t() / temperature, dim=1).gather(1, own.view(-1, 1)).squeeze(1)
        keep = (p_own > filter_thresh).float()
        losses.append(-(keep * mean_pos).sum() / (keep.sum() + 1e-8))
    return torch.stack(losses).mean()


def _entropy(feat: torch.Tensor, centroids: torch.Tensor, temperature: float) -> torch.Tensor:
    logits = feat @ centroids.t() / temperature
    return -(F.log_softmax(logits, dim=1) * F.softmax(logits, dim=1)).sum(1).mean()


def self_entropy(q_a: torch.Tensor, q_b: torch.Tensor, clusterings_a: Sequence[Clustering],
                 clusterings_b: Sequence[Clustering], temperature: float) -> torch.Tensor:
    """Mean entropy of each domain's queries over the n-th centroids of each domain (4 terms per clustering)."""
    # The n-th clustering of the query's domain is paired with the n-th of each domain (original's zip).
    terms = [_entropy(feat, cross_clustering[1], temperature)
             for feat, own in ((q_a, clusterings_a), (q_b, clusterings_b))
             for cross in (clusterings_a, clusterings_b)
             for _, cross_clustering in zip(own, cross)]
    return torch.stack(terms).mean()


def _cluster_distances(feat: torch.Tensor, centroids: torch.Tensor, temperature: float = 0.01) -> torch.Tensor:
    """``(B, B)`` cosine distances between the samples' softmax assignments to ``centroids``."""
    p = l2n(torch.softmax(feat @ centroids.t() / temperature, dim=1), dim=1)
    return 1.0 - p @ p.t()


def distance_of_distance(q_a: torch.Tensor, q_b: torch.Tensor, clusterings_a: Sequence[Clustering],
                         clusterings_b: Sequence[Clustering]) -> torch.Tensor:
    """Mean over domains and clusterings of ``||D_A(x) - D_B(x)||^2`` per sample (see module doc)."""
    terms = []
    for (_, cen_a), (_, cen_b) in zip(clusterings_a, clusterings_b):
        for feat in (q_a, q_b):
            d = F.pairwise_distance(_cluster_distances(feat, cen_a), _cluster_distances(feat, cen_b), p=2)
            terms.append((d ** 2).mean())
    return torch.stack(terms).mean()


@dataclass(frozen=True)
class UCDIRLossWeights:
    """Weights and start epochs of ``main.py`` (``scripts/office-home.sh`` values by default)."""

    temperature: float = 0.2
    instcon_weight: float = 1.0
    cluster_start_epoch: int = 20      # --warmup-epoch: clustering and the cluster-wise loss from here
    cwcon_startepoch: int = 20
    cwcon_satureepoch: int = 100
    cwcon_weightstart: float = 0.0
    cwcon_weightsature: float = 0.5
    cwcon_filterthresh: float = 0.2
    selfentro_temp: float = 0.01
    selfentro_weight: float = 1.0
    selfentro_startepoch: int = 100
    distofdist_weight: float = 0.5
    distofdist_startepoch: int = 100

    def __post_init__(self) -> None:
        # The original computes these two losses only when clusters exist (it would crash otherwise).
        for name in ("selfentro_startepoch", "distofdist_startepoch"):
            if getattr(self, name) < self.cluster_start_epoch:
                raise ValueError(f"{name}={getattr(self, name)} is before cluster_start_epoch="
                                 f"{self.cluster_start_epoch}: the loss needs k-means clusters")


def cwcon_weight(epoch: int, w: UCDIRLossWeights) -> float:
    """Linear ramp of the cluster-wise weight: ``weightstart`` up to ``startepoch`` (inclusive), ``weightsature`` from ``satureepoch``."""
    if epoch <= w.cwcon_startepoch:
        return w.cwcon_weightstart
    if epoch < w.cwcon_satureepoch:
        frac = (epoch - w.cwcon_startepoch) / (w.cwcon_satureepoch - w.cwcon_startepoch)
        return w.cwcon_weightstart + (w.cwcon_weightsature - w.cwcon_weightstart) * frac
    return w.cwcon_weightsature


def ucdir_loss(q: tuple[torch.Tensor, torch.Tensor], k: tuple[torch.Tensor, torch.Tensor],
               ids: tuple[torch.Tensor, torch.Tensor], banks: tuple[torch.Tensor, torch.Tensor],
               clusterings: tuple[Sequence[Clustering], Sequence[Clustering]] | None, epoch: int,
               w: UCDIRLossWeights) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The total loss of one step (``main.py::train``) and its parts (detached) for logging.

    ``(inst_A + inst_B) * w_inst / 2 + (cw_A + cw_B) * w_cw(epoch) / 2`` (cluster-wise from
    ``cluster_start_epoch``), ``+ w_se * self_entropy`` and ``+ w_dd * distance_of_distance`` from
    their start epochs. ``q``, ``k``, ``ids``, ``banks`` are (domain A, domain B) pairs.
    """
    parts = {f"inst_{d}": instance_contrast(q[i], k[i], ids[i], banks[i], w.temperature) for i, d in enumerate("AB")}
    total = (parts["inst_A"] + parts["inst_B"]) * w.instcon_weight / 2
    if epoch >= w.cluster_start_epoch:
        if clusterings is None:
            raise ValueError(f"epoch {epoch}: cluster-wise loss needs k-means clusters (cluster_start_epoch "
                             f"{w.cluster_start_epoch})")
        for i, d in enumerate("AB"):
            parts[f"cwcon_{d}"] = cluster_contrast(q[i], k[i], ids[i], banks[i], clusterings[i], w.temperature,
                                                   w.cwcon_filterthresh)
        total = total + (parts["cwcon_A"] + parts["cwcon_B"]) * cwcon_weight(epoch, w) / 2
    if epoch >= w.selfentro_startepoch:
        assert clusterings is not None
        parts["selfentropy"] = self_entropy(q[0], q[1], clusterings[0], clusterings[1], w.selfentro_temp)
        total = total + parts["selfentropy"] * w.selfentro_weight
    if epoch >= w.distofdist_startepoch:
        assert clusterings is not None
        parts["distofdist"] = distance_of_distance(q[0], q[1], clusterings[0], clusterings[1])
        total = total + parts["distofdist"] * w.distofdist_weight
    return total, {name: v.detach() for name, v in parts.items()}
