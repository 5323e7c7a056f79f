"""Normalisation helpers shared by every model's descriptor head."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def l2n(x: torch.Tensor, dim: int = -1, eps: float = 1e-12) -> torch.Tensor:
    """L2-normalise along ``dim`` (``F.normalize`` semantics: ``x / max(||x||, eps)``)."""
    return F.normalize(x, p=2.0, dim=dim, eps=eps)


class L2Norm(nn.Module):
    def __init__(self, dim: int = -1, eps: float = 1e-12) -> None:
        super().__init__()
        self.dim, self.eps = dim, eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return l2n(x, self.dim, self.eps)


def freeze_batchnorm(module: nn.Module) -> nn.Module:
    """Put every BatchNorm in eval mode and stop its parameters' gradients (frozen BN training)."""
    for m in module.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.eval()
            for p in m.parameters():
                p.requires_grad_(False)
    return module
