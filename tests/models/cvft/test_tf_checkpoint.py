"""The numpy reader of TensorFlow V2 checkpoints, on checkpoints written in the real format by
tests/fixtures/tf_checkpoint.py (validated once against TensorFlow's own reader and writer)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.fixtures.tf_checkpoint import write_tf_checkpoint
from zoo.errors import CheckpointError
from zoo.models.cvft.tf_checkpoint import TFCheckpointReader, checkpoint_prefix


def _tensors() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    out = {
        "VGG_grd/conv1_1/weights": rng.standard_normal((3, 3, 3, 4)).astype(np.float32),
        "VGG_grd/conv1_1/biases": rng.standard_normal(4).astype(np.float32),
        "global_step": np.array(1234, dtype=np.int64),
        "Variable": np.array(7, dtype=np.int32),
        "half": rng.standard_normal((2, 5)).astype(np.float16),
        "double": rng.standard_normal((3,)),
        "flags": np.array([True, False, True]),
        "empty": np.zeros((0, 3), dtype=np.float32),
    }
    # enough entries for several SSTable data blocks, with shared key prefixes
    out.update({f"scope/layer_{i:03d}/Adam_1": rng.standard_normal((i % 4 + 1,)).astype(np.float32) for i in range(200)})
    return out


def test_roundtrip_every_dtype_and_shape(tmp_path: Path) -> None:
    tensors = _tensors()
    prefix = write_tf_checkpoint(tmp_path / "model.ckpt", tensors)
    reader = TFCheckpointReader(prefix)
    assert set(reader) == set(tensors)
    assert reader.shapes()["VGG_grd/conv1_1/weights"] == (3, 3, 3, 4)
    assert reader.shapes()["global_step"] == ()
    for name, value in tensors.items():
        got = reader.read(name)
        assert got.dtype == value.dtype and got.shape == value.shape, name
        np.testing.assert_array_equal(got, value)


def test_prefix_index_or_data_path_all_work(tmp_path: Path) -> None:
    write_tf_checkpoint(tmp_path / "model.ckpt", {"a": np.ones(2, np.float32)})
    for given in ("model.ckpt", "model.ckpt.index", "model.ckpt.data-00000-of-00001"):
        assert checkpoint_prefix(tmp_path / given) == tmp_path / "model.ckpt"
        np.testing.assert_array_equal(TFCheckpointReader(tmp_path / given).read("a"), np.ones(2))


def test_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="no such file.*prefix"):
        TFCheckpointReader(tmp_path / "absent.ckpt")
    prefix = write_tf_checkpoint(tmp_path / "m.ckpt", {"w": np.arange(6, dtype=np.float32).reshape(2, 3)})
    with pytest.raises(CheckpointError, match="no variable 'x'"):
        TFCheckpointReader(prefix).read("x")
    # a truncated data shard
    data = Path(f"{prefix}.data-00000-of-00001")
    data.write_bytes(data.read_bytes()[:10])
    with pytest.raises(CheckpointError, match="truncated"):
        TFCheckpointReader(prefix).read("w")
    data.unlink()
    with pytest.raises(CheckpointError, match="data shard missing"):
        TFCheckpointReader(prefix).read("w")
    # an index that is not an SSTable (e.g. a TF1 V1 checkpoint or another file renamed)
    (tmp_path / "bad.ckpt.index").write_bytes(b"\x00" * 100)
    with pytest.raises(CheckpointError, match="magic"):
        TFCheckpointReader(tmp_path / "bad.ckpt")
