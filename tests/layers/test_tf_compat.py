"""TF1 'SAME' padding and legacy bilinear resize (the CVFT port's TF behaviours)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from zoo.layers.tf_compat import Conv2dSame, resize_bilinear_tf1, same_padding


def test_same_padding_puts_the_odd_pixel_after() -> None:
    assert same_padding(16, 3, 2) == (0, 1)   # CVFT aerial map 16x16 -> 8x8
    assert same_padding(7, 3, 2) == (1, 1)    # CVFT ground map 7x39 -> 4x20
    assert same_padding(39, 3, 2) == (1, 1)
    assert same_padding(8, 3, 1) == (1, 1)
    assert same_padding(5, 1, 2) == (0, 0)


def test_conv2d_same_equals_explicit_padding() -> None:
    torch.manual_seed(0)
    conv = Conv2dSame(3, 4, 3, stride=2)
    x = torch.randn(1, 3, 16, 9)
    out = conv(x)
    assert out.shape == (1, 4, 8, 5)
    expected = F.conv2d(F.pad(x, (1, 1, 0, 1)), conv.weight, conv.bias, stride=2)
    torch.testing.assert_close(out, expected)


def test_resize_bilinear_tf1_uses_dst_times_scale_without_half_pixel() -> None:
    up = resize_bilinear_tf1(torch.arange(4.0).view(1, 1, 1, 4), (1, 8))
    # source x = j * 4/8; the last sample (3.5) clamps its upper neighbour to index 3
    assert up.flatten().tolist() == [0.0, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 3.0]
    down = resize_bilinear_tf1(torch.arange(20.0).view(1, 1, 1, 20), (1, 8))
    assert down.flatten().tolist() == [0.0, 2.5, 5.0, 7.5, 10.0, 12.5, 15.0, 17.5]
    # the half-pixel convention (PyTorch's align_corners=False) differs
    assert not torch.allclose(F.interpolate(torch.arange(20.0).view(1, 1, 1, 20), size=(1, 8), mode="bilinear"), down)


def test_resize_bilinear_tf1_interpolates_both_axes() -> None:
    x = torch.randn(2, 3, 4, 20)
    out = resize_bilinear_tf1(x, (8, 8))
    assert out.shape == (2, 3, 8, 8)
    # row 1 samples source row 0.5, column 1 source column 2.5
    expected = 0.5 * (0.5 * (x[..., 0, 2] + x[..., 0, 3]) + 0.5 * (x[..., 1, 2] + x[..., 1, 3]))
    torch.testing.assert_close(out[..., 1, 1], expected)
