"""TensorFlow 1 behaviours that PyTorch does not share, for ports of TF1 models.

* ``'SAME'`` padding of a strided convolution: TF pads ``max((ceil(n/s)-1)*s + k - n, 0)`` in
  total and puts the odd pixel at the bottom/right, which ``nn.Conv2d(padding=...)`` (always
  symmetric) cannot express.
* ``tf.image.resize_bilinear`` of TF1 (``align_corners=False, half_pixel_centers=False``): the
  source coordinate is ``dst * in/out`` with no half-pixel shift, unlike
  ``F.interpolate(mode="bilinear")`` which uses ``(dst + 0.5) * in/out - 0.5``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def same_padding(size: int, kernel: int, stride: int, dilation: int = 1) -> tuple[int, int]:
    """TF 'SAME' padding ``(before, after)`` of one spatial dimension."""
    effective = (kernel - 1) * dilation + 1
    total = max((math.ceil(size / stride) - 1) * stride + effective - size, 0)
    return total // 2, total - total // 2


class Conv2dSame(nn.Conv2d):
    """``nn.Conv2d`` with TensorFlow's 'SAME' padding, computed for each input size.

    Input ``(B, C_in, H, W)`` -> output ``(B, C_out, ceil(H/s), ceil(W/s))``.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1,
                 bias: bool = True) -> None:
        super().__init__(in_channels, out_channels, kernel_size, stride=stride, padding=0, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        top, bottom = same_padding(x.shape[-2], self.kernel_size[0], self.stride[0], self.dilation[0])
        left, right = same_padding(x.shape[-1], self.kernel_size[1], self.stride[1], self.dilation[1])
        if top or bottom or left or right:
            x = F.pad(x, (left, right, top, bottom))
        return super().forward(x)


def _legacy_axis(in_size: int, out_size: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    # float32 like TF's kernel, so that the interpolation weights round identically
    scale = torch.tensor(in_size / out_size, dtype=torch.float32)
    src = torch.arange(out_size, dtype=torch.float32) * scale
    lo = src.floor().to(torch.int64)
    hi = torch.clamp(lo + 1, max=in_size - 1)
    frac = src - lo.to(torch.float32)
    return lo.to(device), hi.to(device), frac.to(device)


def resize_bilinear_tf1(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """TF1 ``tf.image.resize_bilinear(x, size)`` (no corner alignment, no half-pixel centres).

    Args:
        x: ``(B, C, H, W)``.
        size: output ``(H', W')``.

    Returns:
        ``(B, C, H', W')`` where output pixel ``(i, j)`` samples ``(i*H/H', j*W/W')`` bilinearly,
        clamping the upper neighbour at the border.
    """
    out_h, out_w = size
    in_h, in_w = x.shape[-2:]
    y0, y1, fy = _legacy_axis(in_h, out_h, x.device)
    x0, x1, fx = _legacy_axis(in_w, out_w, x.device)
    fy = fy.to(x.dtype).view(-1, 1)
    fx = fx.to(x.dtype)
    top = x[..., y0, :]
    bottom = x[..., y1, :]
    top = top[..., x0] + (top[..., x1] - top[..., x0]) * fx
    bottom = bottom[..., x0] + (bottom[..., x1] - bottom[..., x0]) * fx
    return top + (bottom - top) * fy
