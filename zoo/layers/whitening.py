"""Learned (PCA/Mahalanobis) whitening of global descriptors, as cnnimageretrieval-pytorch applies it.

cirtorch learns ``{m, P}`` from matching pairs (``whitenlearn``) and applies it with
``whitenapply``: ``x -> P (x - m)`` followed by L2 normalisation with ``+1e-6`` in the
denominator. The parameters are stored here as buffers so that a converted checkpoint
carries them in its ``state_dict``.
"""

from __future__ import annotations

import torch
from torch import nn


class LearnedWhitening(nn.Module):
    """``(B, D) -> (B, D_out)``: ``l2n(P (x - m))``; identity (``m = 0``, ``P = I``) until loaded.

    Args:
        dim: input descriptor size ``D``.
        out_dim: output size (rows of ``P`` kept); defaults to ``dim``.
    """

    def __init__(self, dim: int, out_dim: int | None = None) -> None:
        super().__init__()
        out_dim = out_dim or dim
        self.register_buffer("m", torch.zeros(dim))
        self.register_buffer("P", torch.eye(dim)[:out_dim].clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = (x - self.m) @ self.P.t()
        # cirtorch divides by (norm + 1e-6), not max(norm, eps): kept for exactness.
        return y / (y.norm(dim=-1, keepdim=True) + 1e-6)

    def extra_repr(self) -> str:
        return f"dim={self.P.shape[1]}, out_dim={self.P.shape[0]}"
