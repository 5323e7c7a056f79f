"""Generalised-mean (GeM) pooling, as in Radenović et al. (TPAMI 2018) / cnnimageretrieval-pytorch."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def gem(x: torch.Tensor, p: torch.Tensor | float = 3.0, eps: float = 1e-6) -> torch.Tensor:
    """``(B, C, H, W) -> (B, C, 1, 1)``: ``mean(clamp(x, eps) ** p) ** (1/p)``."""
    # A global average pool, not avg_pool2d with the map's size as kernel: the kernel would be a
    # constant in an exported (ONNX) graph and tie it to one input size.
    return F.adaptive_avg_pool2d(x.clamp(min=eps).pow(p), 1).pow(1.0 / p)


class GeM(nn.Module):
    """GeM pooling with a learnable exponent ``p`` stored as a 1-element parameter (cirtorch's layout)."""

    def __init__(self, p: float = 3.0, eps: float = 1e-6) -> None:
        super().__init__()
        self.p = nn.Parameter(torch.ones(1) * p)
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return gem(x, self.p, self.eps)

    def extra_repr(self) -> str:
        return f"p={self.p.data.tolist()[0]:.4f}, eps={self.eps}"
