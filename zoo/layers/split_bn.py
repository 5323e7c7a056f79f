"""BatchNorm whose training statistics come from ``num_splits`` interleaved groups of the batch.

MoCo-style key encoders shuffle their batch across GPUs so that BatchNorm statistics cannot leak
which key belongs to which query. In one process the same effect is obtained by normalising
groups of the batch separately (MoCo's single-GPU demo and UCDIR ``builder.py`` use
``SplitBatchNorm``). Sample ``i`` belongs to group ``i % num_splits``: the batch is viewed as
``(N / s, s * C, H, W)`` so each group becomes its own set of channels. Running statistics are
updated per group with the usual momentum and then averaged over the groups. In eval mode this is
a plain :class:`torch.nn.BatchNorm2d`; parameter and buffer names equal BatchNorm2d's, so state
dicts are interchangeable.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from zoo.errors import InputError


class SplitBatchNorm2d(nn.BatchNorm2d):
    """``BatchNorm2d`` with per-group training statistics; ``(N, C, H, W)`` -> same shape, N divisible by ``num_splits``."""

    def __init__(self, num_features: int, num_splits: int = 2, **kwargs: Any) -> None:
        super().__init__(num_features, **kwargs)
        self.num_splits = num_splits

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.num_splits
        if not self.training or s == 1:
            return super().forward(x)
        n, c, h, w = x.shape
        if n % s:
            raise InputError(f"SplitBatchNorm2d: batch of {n} does not split into {s} equal groups")
        mean = self.running_mean.repeat(s)
        var = self.running_var.repeat(s)
        out = F.batch_norm(x.reshape(n // s, c * s, h, w), mean, var, self.weight.repeat(s), self.bias.repeat(s),
                           True, self.momentum, self.eps).view(n, c, h, w)
        # F.batch_norm updated the repeated copies in place: fold the groups back into one estimate.
        with torch.no_grad():
            self.running_mean.copy_(mean.view(s, c).mean(0))
            self.running_var.copy_(var.view(s, c).mean(0))
        return out


def set_bn_splits(module: nn.Module, num_splits: int) -> None:
    """Set ``num_splits`` of every :class:`SplitBatchNorm2d` in ``module`` (e.g. per-process groups under DDP)."""
    for m in module.modules():
        if isinstance(m, SplitBatchNorm2d):
            m.num_splits = num_splits
