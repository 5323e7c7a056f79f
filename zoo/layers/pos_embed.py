"""Resampling of learned absolute position embeddings the way DINOv2 does it.

DINOv2 (facebookresearch/dinov2, ``DinoVisionTransformer.interpolate_pos_encoding``) resizes its
37×37 table with bicubic interpolation driven by a *scale factor* ``(n + 0.1) / 37`` (a kludge kept
from DINO for backward compatibility), without antialiasing, and returns the table untouched
when the patch grid already is 37×37. timm's ``resample_abs_pos_embed`` interpolates to a target
*size* instead; PyTorch then uses different sampling positions, and at 322 px the embeddings
differ by about 1.7 % — enough to move descriptors of a DINOv2-based model well past 1e-4. Models
ported from DINOv2 code therefore use :func:`resample_pos_embed_dinov2`.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from zoo.layers.onnx_compat import bicubic_resize_onnx


def resample_pos_embed_dinov2(pos_embed: torch.Tensor, grid_size: tuple[int, int], num_prefix_tokens: int = 1,
                              offset: float = 0.1, antialias: bool = False) -> torch.Tensor:
    """Resize a square position-embedding table to a ``grid_size`` patch grid, as DINOv2 does.

    Args:
        pos_embed: ``(1, P + M*M, C)``: ``P`` prefix (class) embeddings, then an ``M×M`` grid in
            row-major order.
        grid_size: ``(h, w)`` patch grid of the input (image height / patch, width / patch).
        num_prefix_tokens: ``P``, the embeddings that are not resampled.
        offset: DINOv2's ``interpolate_offset``; the scale factor is ``(h + offset) / M``.
            ``0`` interpolates to the exact output size instead (DINOv2's behaviour without offset).
        antialias: DINOv2's ``interpolate_antialias`` (False for the released ViTs).

    Returns:
        ``(1, P + h*w, C)`` in the dtype of ``pos_embed`` (interpolation runs in float32).
    """
    h, w = grid_size
    num_grid = pos_embed.shape[1] - num_prefix_tokens
    side = math.isqrt(num_grid)
    if side * side != num_grid:
        raise ValueError(f"position embedding grid of {num_grid} entries is not square")
    exporting = torch.onnx.is_in_onnx_export()  # h, w are symbolic: no Python branch on them
    if not exporting and (h, w) == (side, side):
        # DINOv2 returns the table itself at its native size; resampling with the offset scale
        # factor would not be the identity.
        return pos_embed
    prefix, grid = pos_embed[:, :num_prefix_tokens], pos_embed[:, num_prefix_tokens:]
    dim = pos_embed.shape[-1]
    grid = grid.float().reshape(1, side, side, dim).permute(0, 3, 1, 2)
    if offset:
        size_kwargs = {"scale_factor": ((h + offset) / side, (w + offset) / side)}
    else:
        size_kwargs = {"size": (h, w)}
    if exporting:
        grid = bicubic_resize_onnx(grid, (h, w), offset, antialias, keep_size=(side, side))
    else:
        grid = F.interpolate(grid, mode="bicubic", antialias=antialias, **size_kwargs)
    if not exporting and grid.shape[-2:] != (h, w):
        raise RuntimeError(f"resampled position grid is {tuple(grid.shape[-2:])}, expected {(h, w)}")
    grid = grid.permute(0, 2, 3, 1).reshape(1, h * w, dim)
    return torch.cat((prefix.float(), grid), dim=1).to(pos_embed.dtype)
