"""Class-level retrieval precision as UCDIR reports it, and per-query alternatives (labelled as such).

``P@K`` follows conghui1002/UCDIR ``main.py::retrieval_precision_cal``: the database is ranked by
cosine similarity; for each query ``n_K = min(K, number of database images of its class)`` and
``hits_K`` = same-class images among its first ``n_K`` results; ``P@K = 100 * sum(hits_K) /
sum(n_K)``, pooled over all queries (a query's weight is its ``n_K``; queries whose class is absent
from the database add nothing).

Also reported, *not* the paper's numbers: ``per-query P@K`` = mean over queries (with at least one
relevant image) of ``hits_K / n_K``, and ``mAP`` = mean average precision over the full ranking.
The ranking is a stable sort (the original's ``np.argsort`` quicksort orders exact ties arbitrarily).
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch

from zoo.data.base import RetrievalSet
from zoo.errors import InputError
from zoo.metrics.base import ProtocolResult, register_protocol
from zoo.metrics.revisited import rank_database

__all__ = ["class_precision", "per_query_precision", "summarise"]


def per_query_precision(query_labels: np.ndarray, database_labels: np.ndarray, ranking: np.ndarray,
                        k_values: Sequence[int]) -> dict[str, np.ndarray]:
    """Per query, from a ranking ``(Q, N)`` of database indices: ``hits`` and ``n_k`` ``(Q, len(k_values))``,
    ``n_rel`` ``(Q,)`` (same-class database images) and ``ap`` ``(Q,)``."""
    q = np.asarray(query_labels).reshape(-1)
    d = np.asarray(database_labels).reshape(-1)
    correct = d[ranking] == q[:, None]
    n_rel = (d[None, :] == q[:, None]).sum(1)
    n_k = np.minimum(np.asarray(k_values)[None, :], n_rel[:, None])
    cum = np.cumsum(correct, 1)
    # hits within the first n_k results = cumulative count at position n_k - 1 (0 when n_k = 0)
    hits = np.where(n_k > 0, np.take_along_axis(cum, np.maximum(n_k - 1, 0), 1), 0)
    ranks = np.arange(1, correct.shape[1] + 1)[None, :]
    ap = (cum / ranks * correct).sum(1) / np.maximum(n_rel, 1)
    return {"hits": hits, "n_k": n_k, "n_rel": n_rel, "ap": ap}


def summarise(per_query: dict[str, np.ndarray], k_values: Sequence[int]) -> dict[str, float]:
    """``P@K`` pooled as the original, ``per-query P@K`` and ``mAP`` over queries with relevant images (%)."""
    hits, n_k, has = per_query["hits"], per_query["n_k"], per_query["n_rel"] > 0
    metrics: dict[str, float] = {}
    for j, k in enumerate(k_values):
        metrics[f"P@{k}"] = 100.0 * float(hits[:, j].sum()) / max(float(n_k[:, j].sum()), 1.0)
    for j, k in enumerate(k_values):
        metrics[f"per-query P@{k}"] = 100.0 * float(np.mean(hits[has, j] / n_k[has, j])) if has.any() else 0.0
    metrics["mAP"] = 100.0 * float(per_query["ap"][has].mean()) if has.any() else 0.0
    return metrics


@register_protocol("class_precision")
def class_precision(query_desc: torch.Tensor, db_desc: torch.Tensor, dataset: RetrievalSet,
                    k_values: Sequence[int] = (1, 5, 15), topk: int = 10, query_chunk: int = 1024,
                    **_: Any) -> ProtocolResult:
    """``P@K`` (UCDIR's pooled precision), ``per-query P@K`` and ``mAP`` in percent.

    ``dataset.ground_truth`` = ``{"query_labels": (Q,), "database_labels": (N,)}`` class ids.
    Queries are ranked in chunks of ``query_chunk`` (memory ``query_chunk x N``).
    """
    gt = dataset.ground_truth
    q_labels = np.asarray(gt["query_labels"]).reshape(-1)
    d_labels = np.asarray(gt["database_labels"]).reshape(-1)
    if len(q_labels) != query_desc.shape[0] or len(d_labels) != db_desc.shape[0]:
        raise InputError(f"class_precision: {dataset.name} has labels for {len(q_labels)} queries and "
                         f"{len(d_labels)} database images, but {query_desc.shape[0]} and {db_desc.shape[0]} descriptors")
    if not k_values or min(k_values) < 1:
        raise InputError(f"class_precision: k_values must be positive integers, got {list(k_values)}")
    parts, top = [], []
    for s in range(0, len(q_labels), query_chunk):
        ranking = rank_database(query_desc[s:s + query_chunk], db_desc).T  # (chunk, N)
        parts.append(per_query_precision(q_labels[s:s + query_chunk], d_labels, ranking, k_values))
        top.append(torch.from_numpy(np.ascontiguousarray(ranking[:, :topk])).long())
    if not parts:
        raise InputError(f"class_precision: {dataset.name} has no queries")
    per_query = {key: np.concatenate([p[key] for p in parts]) for key in parts[0]}
    topk_idx = torch.cat(top)
    correct = torch.from_numpy(d_labels[topk_idx.numpy()] == q_labels[:, None])
    return ProtocolResult(metrics=summarise(per_query, k_values), topk=topk_idx, correct=correct,
                          extra={"AP": per_query["ap"].tolist(), "relevant_per_query": per_query["n_rel"].tolist()})
