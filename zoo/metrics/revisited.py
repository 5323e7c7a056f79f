"""Revisited Oxford / Paris evaluation (Radenović et al., CVPR 2018): Easy / Medium / Hard mAP and mP@k.

Same definitions as revisitop's ``compute_map`` (filipradenovic/revisitop, python/evaluate.py):

* per query, the ranked positions of its positives and of its junk images; each positive's
  position is lowered by the number of junk images ranked before it (junk is removed from the
  list, not counted as wrong);
* AP is the trapezoidal area under the precision-recall curve: the positive at adjusted position
  ``r`` (0-based, ``j`` positives before it) adds ``(p0 + p1) / 2 / n_pos`` with
  ``p0 = j / r`` (1 when ``r = 0``) and ``p1 = (j + 1) / (r + 1)``;
* precision at ``k``: with ``kq = min(k, last positive's 1-based position)``, the number of
  positives at positions ``<= kq`` divided by ``kq``;
* queries without any positive are left out of the means (their AP is NaN).

Settings (revisitop's example_evaluate.py): Easy = positives ``easy``, junk ``junk + hard``;
Medium = positives ``easy + hard``, junk ``junk``; Hard = positives ``hard``, junk ``junk + easy``.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch

from zoo.data.base import RetrievalSet
from zoo.errors import InputError
from zoo.metrics.base import ProtocolResult, register_protocol

SETTINGS = {
    "E": (("easy",), ("junk", "hard")),
    "M": (("easy", "hard"), ("junk",)),
    "H": (("hard",), ("junk", "easy")),
}


def setting_gnd(gnd: Sequence[dict[str, Any]], setting: str) -> list[dict[str, np.ndarray]]:
    """``{'ok', 'junk'}`` per query for setting ``E``, ``M`` or ``H`` from revisitop's ``gnd``."""
    ok_keys, junk_keys = SETTINGS[setting]
    out = []
    for i, g in enumerate(gnd):
        missing = [k for k in (*ok_keys, *junk_keys) if k not in g]
        if missing:
            raise InputError(f"ground truth of query {i} lacks {', '.join(missing)} (has {', '.join(g)})")
        out.append({"ok": np.concatenate([np.asarray(g[k], dtype=np.int64).reshape(-1) for k in ok_keys]),
                    "junk": np.concatenate([np.asarray(g[k], dtype=np.int64).reshape(-1) for k in junk_keys])})
    return out


def average_precision(pos: np.ndarray, n_pos: int) -> float:
    """Trapezoidal AP of positives at sorted, junk-adjusted 0-based positions ``pos``."""
    if n_pos == 0 or len(pos) == 0:
        return 0.0
    j = np.arange(len(pos), dtype=np.float64)
    r = pos.astype(np.float64)
    p0 = np.where(r == 0, 1.0, j / np.maximum(r, 1))
    p1 = (j + 1) / (r + 1)
    return float(((p0 + p1) / 2).sum() / n_pos)


def query_positions(ranking: np.ndarray, ok: np.ndarray, junk: np.ndarray) -> np.ndarray:
    """Sorted 0-based positions of ``ok`` items in ``ranking``, each lowered by the junk ranked before it."""
    pos = np.flatnonzero(np.isin(ranking, ok))
    junk_pos = np.flatnonzero(np.isin(ranking, junk))
    return pos - np.searchsorted(junk_pos, pos, side="left")


def compute_map(ranks: np.ndarray, gnd: Sequence[dict[str, Any]], kappas: Sequence[int] = ()
                ) -> tuple[float, np.ndarray, np.ndarray, np.ndarray]:
    """revisitop's ``compute_map``: ``ranks`` is ``(N, Q)`` (database indices, best first, per column).

    Returns ``(mAP, AP per query, mean precision at kappas, precision per query and kappa)``,
    fractions in [0, 1]; NaN for queries without positives, which the means skip.
    """
    ranks = np.asarray(ranks)
    nq = len(gnd)
    if ranks.ndim != 2 or ranks.shape[1] != nq:
        raise InputError(f"ranks must be (database size, {nq} queries), got {ranks.shape}")
    aps = np.full(nq, np.nan)
    prs = np.full((nq, len(kappas)), np.nan)
    for i, g in enumerate(gnd):
        ok = np.asarray(g["ok"], dtype=np.int64).reshape(-1)
        if ok.size == 0:
            continue
        junk = np.asarray(g.get("junk", []), dtype=np.int64).reshape(-1)
        pos = query_positions(ranks[:, i], ok, junk)
        aps[i] = average_precision(pos, ok.size)
        pos1 = pos + 1
        for j, k in enumerate(kappas):
            kq = min(int(pos1.max()), k) if pos1.size else k
            prs[i, j] = (pos1 <= kq).sum() / kq
    valid = ~np.isnan(aps)
    if not valid.any():
        return float("nan"), aps, np.full(len(kappas), np.nan), prs
    return float(aps[valid].mean()), aps, prs[valid].mean(axis=0), prs


def rank_database(query_desc: torch.Tensor, db_desc: torch.Tensor, chunk_bytes: int = 256 * 2**20) -> np.ndarray:
    """``(N, Q)`` database indices by decreasing inner product (cirtorch: ``argsort(-vecs.T @ qvecs)``).

    Queries are scored in chunks so that at most ``chunk_bytes`` of scores exist at once.
    """
    if query_desc.ndim != 2 or db_desc.ndim != 2 or query_desc.shape[1] != db_desc.shape[1]:
        raise InputError(f"descriptors must be (Q, D) and (N, D) with the same D, got {tuple(query_desc.shape)} "
                         f"and {tuple(db_desc.shape)}")
    n = db_desc.shape[0]
    chunk = max(1, chunk_bytes // (8 * max(n, 1)))
    d = db_desc.float()
    out = []
    for s in range(0, query_desc.shape[0], chunk):
        scores = query_desc[s:s + chunk].float() @ d.t()
        out.append(torch.sort(scores, dim=1, descending=True, stable=True).indices.t().cpu().numpy())
    return np.concatenate(out, axis=1) if out else np.zeros((n, 0), dtype=np.int64)


def revisited_metrics(ranks: np.ndarray, gnd: Sequence[dict[str, Any]], kappas: Sequence[int] = (1, 5, 10)
                      ) -> tuple[dict[str, float], dict[str, Any]]:
    """``mAP-E/M/H`` and ``mP@k-E/M/H`` in percent, plus per-query APs (``extra``)."""
    metrics: dict[str, float] = {}
    extra: dict[str, Any] = {}
    for setting in ("E", "M", "H"):
        m, aps, pr, _ = compute_map(ranks, setting_gnd(gnd, setting), kappas)
        metrics[f"mAP-{setting}"] = 100.0 * m
        for k, p in zip(kappas, pr):
            metrics[f"mP@{k}-{setting}"] = 100.0 * float(p)
        extra[f"AP-{setting}"] = aps.tolist()
    return metrics, extra


@register_protocol("revisited")
def revisited(query_desc: torch.Tensor, db_desc: torch.Tensor, dataset: RetrievalSet,
              kappas: Sequence[int] = (1, 5, 10), topk: int = 10, **_: Any) -> ProtocolResult:
    """Revisited Oxford/Paris protocol. ``dataset.ground_truth`` is revisitop's ``gnd`` list.

    Symmetric and asymmetric evaluation differ only in who encodes the database (the model's
    ``encode_database``); the protocol ranks by inner product as cirtorch does.
    """
    gnd = dataset.ground_truth
    if len(gnd) != query_desc.shape[0]:
        raise InputError(f"{dataset.name}: {query_desc.shape[0]} query descriptors for {len(gnd)} queries")
    ranks = rank_database(query_desc, db_desc)
    metrics, extra = revisited_metrics(ranks, gnd, tuple(kappas))
    k = min(topk, ranks.shape[0])
    top = torch.from_numpy(np.ascontiguousarray(ranks[:k].T))
    medium = setting_gnd(gnd, "M")
    correct = torch.stack([torch.from_numpy(np.isin(top[i].numpy(), medium[i]["ok"])) for i in range(len(gnd))]) \
        if len(gnd) else torch.zeros(0, k, dtype=torch.bool)
    return ProtocolResult(metrics, top, correct, extra)
