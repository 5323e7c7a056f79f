"""Recall@K with per-query positive sets (VPR) and cross-view rank recall (CVFT's top-1%).

``vpr_recall`` follows serizba/salad ``utils/validation.py::get_validation_recalls``: exhaustive
L2 search (``faiss.IndexFlatL2``) for the ``max(k_values)`` nearest database images; a query counts
as correct at ``K`` when any of its first ``K`` predictions is among its positives; the recall is
the number of correct queries divided by *all* queries (a query without positives is a miss).
The reference returns fractions and prints them x100; we report percentages.

``cross_view_rank`` follows YujiaoShi/cross_view_localization_CVFT ``script/test_cvusa.py``
(same in ``test_cvact.py``): with ``dist = 2 - 2 * sat @ grd.T`` the rank of ground query ``i``
is ``np.sum(dist[:, i] < dist[i, i])``, the number of aerial images strictly closer than its
true one (ties count in the query's favour), and top-K accuracy is the fraction of queries with
``rank < K``. Top-1% there (lines 118-128) is ``val_accuracy[0, -1]`` of an array of
``int(N * 0.01) + 1`` thresholds ``0, 1, ..., int(N * 0.01)``, i.e. ``rank < int(N * 0.01)``
with ``N`` the number of aerial images. The training script's ``validate``
(``train_cvusa.py:45-57``) instead uses ``rank < int(N * 0.01) + 1``; ``top1_percent_rule``
selects either (default: the test script, which produced the published numbers).
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch

from zoo.data.base import RetrievalSet
from zoo.errors import InputError
from zoo.metrics.base import ProtocolResult, register_protocol

__all__ = ["recall_at_k", "correct_matrix", "top1_percent_threshold", "rank_recall",
           "vpr_recall", "cross_view_rank"]

VPR_K = (1, 5, 10, 15, 20, 25)
CROSS_VIEW_K = (1, 5, 10)


def correct_matrix(predictions: torch.Tensor | np.ndarray, positives: Sequence[Sequence[int]]) -> torch.Tensor:
    """``(Q, K)`` bool: whether each prediction is among its query's positives."""
    pred = torch.as_tensor(np.asarray(predictions)).long()
    if pred.ndim != 2:
        raise InputError(f"predictions: expected (queries, k), got shape {tuple(pred.shape)}")
    if len(positives) != pred.shape[0]:
        raise InputError(f"ground truth lists positives for {len(positives)} queries but there are {pred.shape[0]}")
    out = torch.zeros(pred.shape, dtype=torch.bool)
    for i, pos in enumerate(positives):
        pos = torch.as_tensor(np.asarray(pos, dtype=np.int64).reshape(-1))
        if pos.numel():
            out[i] = torch.isin(pred[i], pos)
    return out


def recall_at_k(correct: torch.Tensor, k_values: Sequence[int] = VPR_K) -> dict[int, float]:
    """Percentage of queries with a positive among their first ``K`` predictions, for each ``K``.

    ``correct`` is ``(Q, >= max(k_values))`` bool (see :func:`correct_matrix`).
    """
    if correct.shape[1] < max(k_values):
        raise InputError(f"recall@{max(k_values)} needs {max(k_values)} predictions per query, got {correct.shape[1]}")
    hit_at = torch.cumsum(correct.int(), dim=1) > 0
    n = max(correct.shape[0], 1)
    return {k: 100.0 * float(hit_at[:, k - 1].sum()) / n for k in k_values}


def top1_percent_threshold(n_database: int, rule: str = "test") -> int:
    """The K of CVFT's top-1%: ``int(N * 0.01)`` (test scripts) or ``int(N * 0.01) + 1`` (training
    script). Written with the original's float product so that its rounding is kept."""
    if rule == "test":
        return int(n_database * 0.01)
    if rule == "train":
        return int(n_database * 0.01) + 1
    raise InputError(f"top1_percent_rule: expected 'test' or 'train', got {rule!r}")


def rank_recall(ranks: torch.Tensor | np.ndarray, k: int) -> float:
    """Percentage of queries whose rank (number of strictly closer items) is below ``k``."""
    r = torch.as_tensor(np.asarray(ranks))
    return 100.0 * float((r < k).sum()) / max(r.numel(), 1)


def _curve(hit_fn, k_max: int) -> dict[str, list]:
    ks = list(range(1, k_max + 1))
    return {"k": ks, "recall": [hit_fn(k) for k in ks]}


@register_protocol("vpr_recall")
def vpr_recall(query_desc: torch.Tensor, db_desc: torch.Tensor, dataset: RetrievalSet,
               k_values: Sequence[int] = VPR_K, metric: str = "l2", backend: str = "auto",
               device: str | None = None, skipped_queries: Sequence[int] = (), **_: Any) -> ProtocolResult:
    """Recall@K (%) for ``k_values`` with ``dataset.ground_truth`` = one array of positive
    database indices per query; metrics ``R@1``, ``R@5`` ... ``R@25``.

    ``metric="l2"`` as the reference (the same order as ``"ip"`` for L2-normalised descriptors).
    ``skipped_queries`` (unreadable images, see ``--skip-corrupt``) count as misses.
    """
    from zoo.search import knn

    gt = dataset.ground_truth
    if len(gt) != query_desc.shape[0]:
        raise InputError(f"vpr_recall: {dataset.name} has ground truth for {len(gt)} queries "
                         f"but {query_desc.shape[0]} query descriptors")
    k_max = min(max(k_values), db_desc.shape[0])
    _, pred = knn(query_desc, db_desc, k_max, metric=metric, backend=backend, device=device)
    correct = correct_matrix(pred.cpu(), gt)
    correct[list(skipped_queries)] = False
    ks = [k for k in k_values if k <= k_max]
    recalls = recall_at_k(correct, ks)
    hit_at = torch.cumsum(correct.int(), 1) > 0
    n = max(correct.shape[0], 1)
    curve = _curve(lambda k: 100.0 * float(hit_at[:, k - 1].sum()) / n, k_max)
    return ProtocolResult(metrics={f"R@{k}": v for k, v in recalls.items()}, topk=pred.cpu(), correct=correct,
                          extra={"recall_curve": curve,
                                 "queries_without_positives": int(sum(len(np.asarray(g).reshape(-1)) == 0 for g in gt))})


@register_protocol("cross_view_rank")
def cross_view_rank(query_desc: torch.Tensor, db_desc: torch.Tensor, dataset: RetrievalSet,
                    k_values: Sequence[int] = CROSS_VIEW_K, top1_percent_rule: str = "test",
                    topk: int = 10, metric: str = "ip", device: str | None = None,
                    skipped_queries: Sequence[int] = (), **_: Any) -> ProtocolResult:
    """Top-K recall (%) from exact ranks, ``dataset.ground_truth`` = the true database index of each
    query; metrics ``R@1``, ``R@5``, ``R@10`` and ``R@1%``.

    Ranks are counted over the whole database with :func:`zoo.search.count_closer` (inner
    product: the order of CVFT's ``2 - 2 cos``), near-ties decided in float64 as the reference's
    float64 matrix does. ``extra["ranks"]`` holds every query's rank. ``skipped_queries``
    (unreadable images, see ``--skip-corrupt``) get the worst rank, ``N``, instead of the 0 that
    their zero descriptor (tying with everything) would give.
    """
    from zoo.search import count_closer

    targets = torch.as_tensor(np.asarray(dataset.ground_truth, dtype=np.int64)).reshape(-1)
    if targets.numel() != query_desc.shape[0]:
        raise InputError(f"cross_view_rank: {dataset.name} has {targets.numel()} true matches "
                         f"but {query_desc.shape[0]} query descriptors")
    n_db = db_desc.shape[0]
    k = min(topk, n_db)
    ranks, _, pred = count_closer(query_desc, db_desc, targets, metric, k=k, device=device)
    ranks = ranks.cpu()
    ranks[list(skipped_queries)] = n_db
    one_percent = top1_percent_threshold(n_db, top1_percent_rule)
    metrics = {f"R@{kv}": rank_recall(ranks, kv) for kv in k_values}
    metrics["R@1%"] = rank_recall(ranks, one_percent)
    k_curve = max(max(k_values), one_percent, 1)
    correct = pred.cpu() == targets[:, None]
    correct[list(skipped_queries)] = False
    return ProtocolResult(metrics=metrics, topk=pred.cpu(), correct=correct,
                          extra={"ranks": ranks, "top1_percent_k": one_percent,
                                 "top1_percent_rule": top1_percent_rule,
                                 "recall_curve": _curve(lambda kk: rank_recall(ranks, kk), k_curve)})
