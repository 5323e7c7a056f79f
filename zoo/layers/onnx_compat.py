"""Operations whose ONNX export must stay valid for every input size.

``torch.onnx.export`` (the torch.export-based exporter) records Python numbers computed from a
tensor's shape as constants of the graph. ``F.interpolate(scale_factor=...)`` with a scale that
depends on the input size is such a case: the exported graph would resample to the export
size whatever the input. :func:`bicubic_resize_onnx` emits ONNX ``Resize`` itself, with its
scales computed inside the graph from the symbolic output size. It is only called while
exporting (``torch.onnx.is_in_onnx_export()``); eager code keeps ``F.interpolate``.
"""

from __future__ import annotations

import torch

#: PyTorch's bicubic kernel (``upsample_bicubic2d``) uses Keys' a = -0.75, as does ONNX Resize by default.
_CUBIC_A = -0.75


def bicubic_resize_onnx(x: torch.Tensor, size: tuple, offset: float, antialias: bool = False,
                        keep_size: tuple[int, int] | None = None) -> torch.Tensor:
    """ONNX ``Resize`` (cubic, ``pytorch_half_pixel``) of ``x`` ``(1, C, H, W)`` to ``size`` ``(h, w)``.

    Equals ``F.interpolate(x, mode="bicubic", align_corners=False, antialias=antialias, **kw)``
    with ``kw = {"scale_factor": ((h + offset) / H, (w + offset) / W)}`` when ``offset`` is not 0
    (PyTorch then maps coordinates with the given scale, and so does ``Resize`` given ``scales``),
    else ``kw = {"size": (h, w)}`` (``Resize`` given ``sizes``). ``h`` and ``w`` may be symbolic.

    Args:
        keep_size: return ``x`` unchanged when ``(h, w)`` equals it (DINOv2 does not resample
            its table at the native size); implemented as a scale of exactly 1, for which the
            cubic kernel's weights are (0, 1, 0, 0).

    Returns:
        ``(1, C, h, w)`` float32.
    """
    h, w = size
    attrs = {"mode": "cubic", "coordinate_transformation_mode": "pytorch_half_pixel",
             "cubic_coeff_a": _CUBIC_A, "antialias": int(antialias)}
    if offset:
        in_hw = torch.tensor(x.shape[-2:], dtype=torch.float32)
        out_hw = torch.stack([torch.scalar_tensor(h, dtype=torch.float32), torch.scalar_tensor(w, dtype=torch.float32)])
        scales = (out_hw + offset) / in_hw
        if keep_size is not None:
            native = (out_hw == torch.tensor(keep_size, dtype=torch.float32)).all()
            scales = torch.where(native, torch.ones_like(scales), scales)
        inputs = (x, None, torch.cat((torch.ones(2), scales)))
    else:
        sizes = torch.stack([torch.scalar_tensor(d, dtype=torch.int64) for d in (*x.shape[:2], h, w)])
        inputs = (x, None, None, sizes)
    return torch.onnx.ops.symbolic("Resize", inputs, attrs, dtype=x.dtype, shape=(*x.shape[:2], h, w), version=18)
