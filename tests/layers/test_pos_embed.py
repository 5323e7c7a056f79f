"""DINOv2-style position-embedding resampling."""

import math

import pytest
import torch
import torch.nn.functional as F

from zoo.layers.pos_embed import resample_pos_embed_dinov2


def test_native_grid_is_returned_unchanged() -> None:
    pos = torch.randn(1, 1 + 37 * 37, 8)
    assert resample_pos_embed_dinov2(pos, (37, 37)) is pos


def test_uses_offset_scale_factor_not_target_size() -> None:
    pos = torch.randn(1, 1 + 37 * 37, 8)
    out = resample_pos_embed_dinov2(pos, (23, 16))
    assert out.shape == (1, 1 + 23 * 16, 8)
    assert torch.equal(out[:, 0], pos[:, 0])
    grid = pos[:, 1:].reshape(1, 37, 37, 8).permute(0, 3, 1, 2)
    by_scale = F.interpolate(grid, scale_factor=(23.1 / 37, 16.1 / 37), mode="bicubic", antialias=False)
    assert torch.allclose(out[:, 1:], by_scale.permute(0, 2, 3, 1).reshape(1, -1, 8))
    by_size = F.interpolate(grid, size=(23, 16), mode="bicubic", antialias=False)
    assert not torch.allclose(out[:, 1:], by_size.permute(0, 2, 3, 1).reshape(1, -1, 8), atol=1e-3)
    size_mode = resample_pos_embed_dinov2(pos, (23, 16), offset=0)
    assert torch.allclose(size_mode[:, 1:], by_size.permute(0, 2, 3, 1).reshape(1, -1, 8))


def test_non_square_table_is_rejected() -> None:
    with pytest.raises(ValueError, match="not square"):
        resample_pos_embed_dinov2(torch.randn(1, 1 + 12, 4), (3, 3))
    assert math.isqrt(12) ** 2 != 12
