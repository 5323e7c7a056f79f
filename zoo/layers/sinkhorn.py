"""Log-domain Sinkhorn: the one optimal-transport solver of the zoo (SALAD and CVFT use it).

Both originals run the same alternating scaling in log space:

* SALAD (after OpenGlue/SuperGlue) keeps dual potentials ``u``, ``v`` and returns
  ``M + u 1ᵀ + 1 vᵀ`` with given log-marginals;
* CVFT (after Mena et al.'s Gumbel-Sinkhorn) subtracts row then column log-sum-exps from the
  matrix itself, i.e. uniform marginals ``log a = log b = 0``.

With ``u₀ = v₀ = 0`` and rows updated before columns the two are algebraically the same
iteration, so one function serves both.
"""

from __future__ import annotations

import torch


def log_sinkhorn(log_scores: torch.Tensor, log_a: torch.Tensor | None = None, log_b: torch.Tensor | None = None,
                 num_iters: int = 3, reg: float = 1.0) -> torch.Tensor:
    """Entropic optimal transport in log space.

    Args:
        log_scores: ``(B, M, N)`` scores (negated costs); divided by ``reg``.
        log_a: ``(B, M)`` log row marginals; ``None`` means each row sums to 1 (``log a = 0``).
        log_b: ``(B, N)`` log column marginals; ``None`` means each column sums to 1.
        num_iters: number of (row, column) update pairs.
        reg: entropic regularisation.

    Returns:
        ``(B, M, N)`` log transport plan ``log_scores/reg + u_i + v_j``; its exp has (approximately)
        row sums ``a`` and (exactly, after the last column update) column sums ``b``.
    """
    if log_scores.dim() != 3:
        raise ValueError(f"log_scores must be (B, M, N), got shape {tuple(log_scores.shape)}")
    scores = log_scores / reg
    batch, rows, cols = scores.shape
    if log_a is None:
        log_a = scores.new_zeros(batch, rows)
    if log_b is None:
        log_b = scores.new_zeros(batch, cols)
    u = torch.zeros_like(log_a)
    v = torch.zeros_like(log_b)
    for _ in range(num_iters):
        u = log_a - torch.logsumexp(scores + v.unsqueeze(1), dim=2)
        v = log_b - torch.logsumexp(scores + u.unsqueeze(2), dim=1)
    return scores + u.unsqueeze(2) + v.unsqueeze(1)
