"""DINOv2 position-embedding resampling exported to ONNX stays dynamic and equals PyTorch at every grid."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from zoo.layers.pos_embed import resample_pos_embed_dinov2

ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")


class _Resample(torch.nn.Module):
    """Resamples a 37x37 table to the patch grid of the input image, DINOv2's way (scale factor with
    offset 0.1) and to the exact size (offset 0)."""

    def __init__(self) -> None:
        super().__init__()
        self.pos_embed = torch.nn.Parameter(torch.randn(1, 1 + 37 * 37, 8, generator=torch.Generator().manual_seed(0)))

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        grid = (images.shape[-2] // 14, images.shape[-1] // 14)
        return (resample_pos_embed_dinov2(self.pos_embed, grid, offset=0.1),
                resample_pos_embed_dinov2(self.pos_embed, grid, offset=0.0))


def test_exported_resampling_equals_pytorch_at_other_grids(tmp_path: Path) -> None:
    module = _Resample().eval()
    grid = torch.export.Dim("grid_h", min=1, max=100), torch.export.Dim("grid_w", min=1, max=100)
    program = torch.onnx.export(module, (torch.zeros(1, 3, 14 * 16, 14 * 16),), dynamo=True, verbose=False,
                                input_names=["images"], dynamic_shapes=({2: 14 * grid[0], 3: 14 * grid[1]},))
    program.save(str(tmp_path / "resample.onnx"))
    session = ort.InferenceSession(str(tmp_path / "resample.onnx"), providers=["CPUExecutionProvider"])
    # The export grid, other square and non-square grids, and the native 37x37 (returned unresampled).
    for h, w in [(16, 16), (23, 23), (4, 9), (37, 37), (40, 31)]:
        with torch.no_grad():
            expected = [t.numpy() for t in module(torch.zeros(1, 3, 14 * h, 14 * w))]
        got = session.run(None, {"images": np.zeros((1, 3, 14 * h, 14 * w), np.float32)})
        for offset, a, b in zip((0.1, 0.0), got, expected):
            assert a.shape == b.shape == (1, 1 + h * w, 8)
            assert np.abs(a - b).max() < 1e-4, (h, w, offset)
    # At the native size the table itself comes back, bit for bit.
    native = session.run(None, {"images": np.zeros((1, 3, 14 * 37, 14 * 37), np.float32)})[0]
    assert np.array_equal(native, module.pos_embed.detach().numpy())
