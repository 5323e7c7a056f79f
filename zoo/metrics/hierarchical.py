"""Hierarchical retrieval metrics as HAPPIER computes them (``happier/engine/metrics.py``), and the
``hierarchical`` protocol of DyCL's DA-Campus evaluation (``engine/accuracy_calculator.py``).

Inputs per query are its ranked database list:

* ``sorted_target`` ``(B, K)`` int: relevance *level* of each ranked item (0 = not relevant,
  higher = closer; DA-Campus levels 0..3);
* ``relevances`` ``(B, L+1)`` float: the relevance *value* of each level for that query, HAPPIER's
  ``pop`` weighting: ``((level / (L - 1)) ** alpha) / (number of database items at that level)``;
* ``sorted_rel`` = ``relevances`` gathered at ``sorted_target``.

Metrics (each returns one value per query):

* ``hap``: H-AP; HAPPIER's closed form, in which the items counted at each level are found by
  *equality of relevance values* (two levels whose values coincide are counted together, as in
  the original);
* ``asi``: average set intersection over the first R positions (R = number of relevant items);
* ``ndcg``: NDCG with gains ``2**level - 1`` over the whole list;
* on binary targets (level >= l): ``ap``, ``map_at_r`` (AP truncated at R, still divided by R),
  ``precision_at_k``, ``recall_at_k`` (any hit in the top k).

As the original, the ranked list holds the ``N - 1`` most similar database items of ``N``
(``get_knn(..., ref_features.size(0) - 1)``); ``drop_last=False`` ranks all ``N``.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch

from zoo.metrics.base import ProtocolResult, register_protocol

HIERARCHY_LEVELS = 3


def pop_relevances(level_counts: torch.Tensor, alpha: float = 1.0, levels: int = HIERARCHY_LEVELS) -> torch.Tensor:
    """``(B, levels+1)`` relevance value per level from the per-query number of items at each level."""
    weights = torch.tensor([(x / (levels - 1)) ** alpha for x in range(levels + 1)], dtype=torch.float32)
    counts = level_counts.to(torch.float32)
    return torch.where(counts > 0, weights / counts.clamp(min=1), torch.zeros(()))


def ap(binary: torch.Tensor, at_r: bool = False) -> torch.Tensor:
    """Average precision of binary ranked lists ``(B, K)``; ``at_r`` keeps only the first R positions."""
    binary = binary.float()
    total = binary.sum(-1)
    ranks = torch.arange(1, binary.shape[1] + 1, dtype=torch.float32)
    hits = torch.cumsum(binary, -1) * binary
    if at_r:
        hits = hits * (ranks.view(1, -1) <= total.view(-1, 1))
    return (hits / ranks).sum(-1) / total


def map_at_r(binary: torch.Tensor) -> torch.Tensor:
    return ap(binary, at_r=True)


def precision_at_k(binary: torch.Tensor, k: int) -> torch.Tensor:
    return binary[:, :k].float().mean(-1)


def recall_at_k(binary: torch.Tensor, k: int) -> torch.Tensor:
    return binary[:, :k].bool().any(1).float()


def ndcg(sorted_target: torch.Tensor) -> torch.Tensor:
    gains = 2 ** sorted_target.float() - 1
    positions = torch.arange(1, gains.shape[1] + 1, dtype=torch.float32)
    ideal = torch.sort(gains, dim=1, descending=True).values
    discount = torch.log2(1 + positions)
    return (gains / discount).sum(-1) / (ideal / discount).sum(-1)


def asi(sorted_target: torch.Tensor) -> torch.Tensor:
    """Mean over the first R positions of |top-k ∩ ideal top-k| / k, counting items per level."""
    ideal = torch.sort(sorted_target, dim=1, descending=True).values
    top = int(sorted_target.max())
    values = torch.arange(top + 1).view(1, -1, 1)
    found = (sorted_target.unsqueeze(1) == values).cumsum(-1)
    best = (ideal.unsqueeze(1) == values).cumsum(-1)
    positions = torch.arange(1, sorted_target.shape[1] + 1, dtype=torch.float32).view(1, -1)
    relevant = ideal.bool()
    inter = torch.minimum(found, best).sum(1).float()
    return (inter / positions * relevant).sum(-1) / relevant.sum(-1)


def hap(sorted_rel: torch.Tensor, relevances: torch.Tensor) -> torch.Tensor:
    """H-AP of ranked relevance values ``(B, K)`` given each query's level values ``(B, L+1)``.

    At position k the H-rank is sum over levels v >= 1 of min(rel_k, rel_v) times the number of
    items among the first k whose value equals rel_v.
    """
    level_values = relevances[:, 1:].unsqueeze(-1)                       # (B, L, 1)
    same = (sorted_rel.unsqueeze(1) == level_values).cumsum(-1)          # (B, L, K)
    weight = torch.minimum(sorted_rel.unsqueeze(1), level_values)
    positions = torch.arange(1, sorted_rel.shape[1] + 1, dtype=torch.float32).view(1, -1)
    hrank = (weight * same).sum(1)
    return (hrank / positions).sum(-1) / sorted_rel.sum(-1)


def hierarchical_metrics(sorted_target: torch.Tensor, relevances: torch.Tensor,
                         levels: Sequence[int] = (0, 1, 2), recall_at: Sequence[int] = (1, 5, 10)) -> dict[str, torch.Tensor]:
    """Every metric, per query, for one batch of ranked lists (names as the original logs them).

    A binary level ``l`` counts as relevant the items whose level is above ``HIERARCHY_LEVELS - 1 - l``
    (level0: same place only; level1: <= 200 m; level2: <= 500 m).
    """
    sorted_rel = torch.gather(relevances, 1, sorted_target)
    out = {"H-AP": hap(sorted_rel, relevances), "ASI": asi(sorted_target), "NDCG": ndcg(sorted_target)}
    for level in levels:
        binary = (sorted_target >= HIERARCHY_LEVELS - level).float()
        out[f"AP_level{level}"] = ap(binary)
        out[f"P@1_level{level}"] = precision_at_k(binary, 1)
        out[f"mAP@R_level{level}"] = map_at_r(binary)
        for k in recall_at:
            out[f"R@{k}_level{level}"] = recall_at_k(binary, k)
    return out


@register_protocol("hierarchical")
def hierarchical_protocol(query_desc: torch.Tensor, db_desc: torch.Tensor, dataset: Any, *,
                          levels: Sequence[int] = (0, 1, 2), recall_at: Sequence[int] = (1, 5, 10),
                          alpha: float = 1.0, drop_last: bool = True, batch_size: int = 128,
                          rerank: bool = False, rerank_cache: str | None = None, topk_keep: int = 10,
                          out_dir: Any = None, progress: bool = True, **_: Any) -> ProtocolResult:
    """DA-Campus hierarchical evaluation in the data set's direction (percentages).

    ``dataset.ground_truth``: ``place_levels`` (P, P), ``query_place`` (Q,), ``db_place`` (N,),
    ``level_counts`` (Q, L+1) (see :func:`zoo.data.da_campus.read_da_campus`). Queries are ranked
    by inner product in blocks of ``batch_size``; ``rerank`` applies DyCL's multi-level
    k-reciprocal re-ranking (:mod:`zoo.metrics.rerank`) first, its distances cached in
    ``rerank_cache`` (default ``<out_dir>/rerank``) under the descriptors' and data set's hashes.
    """
    from tqdm import tqdm

    gt = dataset.ground_truth
    place_levels = torch.as_tensor(np.asarray(gt["place_levels"]), dtype=torch.int64)
    q_place = torch.as_tensor(np.asarray(gt["query_place"]), dtype=torch.int64)
    d_place = torch.as_tensor(np.asarray(gt["db_place"]), dtype=torch.int64)
    relevances = pop_relevances(torch.as_tensor(np.asarray(gt["level_counts"])), alpha)
    q, d = query_desc.float().cpu(), db_desc.float().cpu()
    if q.shape[0] != len(q_place) or d.shape[0] != len(d_place):
        raise ValueError(f"{dataset.name}: {q.shape[0]} query / {d.shape[0]} database descriptors for "
                         f"{len(q_place)} queries / {len(d_place)} database images")
    depth = d.shape[0] - 1 if drop_last else d.shape[0]
    distances = None
    if rerank:
        from pathlib import Path

        from zoo.metrics.rerank import cached_rerank_distances
        cache = Path(rerank_cache) if rerank_cache else (Path(out_dir) / "rerank" if out_dir else None)
        distances = cached_rerank_distances(q, d, dataset.fingerprint(), cache)
    sums: dict[str, float] = {}
    topk, correct = [], []
    blocks = range(0, q.shape[0], batch_size)
    for start in tqdm(blocks, desc=f"{dataset.name}: hierarchical metrics", disable=not progress):
        stop = min(start + batch_size, q.shape[0])
        scores = q[start:stop] @ d.T if distances is None else 1.0 - distances[start:stop]
        order = torch.topk(scores, depth, dim=1).indices
        target = place_levels[q_place[start:stop]].gather(1, d_place[order])
        for name, values in hierarchical_metrics(target, relevances[start:stop], levels, recall_at).items():
            sums[name] = sums.get(name, 0.0) + float(values.double().sum())
        topk.append(order[:, :topk_keep])
        correct.append(target[:, :topk_keep] == HIERARCHY_LEVELS)
    metrics = {name: 100.0 * total / q.shape[0] for name, total in sums.items()}
    return ProtocolResult(metrics, torch.cat(topk), torch.cat(correct),
                          extra={"direction": dataset.meta.get("direction"), "ranked_items": depth})
