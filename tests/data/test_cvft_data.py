"""CVUSA and CVACT readers on tiny data sets in the released layouts."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from zoo.data.base import build_eval_dataset
from zoo.data.synthetic import make_cvact, make_cvusa
from zoo.errors import DatasetError


def test_cvusa_reader(tmp_path: Path) -> None:
    root = make_cvusa(tmp_path / "CVUSA", n_train=2, n_val=3, ground_size=(16, 88), aerial_size=(20, 20))
    ds = build_eval_dataset("cvusa", root)
    assert ds.protocol == "cross_view_rank" and ds.ground_truth == [0, 1, 2]
    assert ds.queries[0].path == root / "streetview/panos/0000003.jpg"     # val rows follow the train rows
    assert ds.database[2].path == root / "bingmap/19/0000005.jpg"
    train = build_eval_dataset("cvusa", root, split="train")
    assert len(train.queries) == 2
    (root / "bingmap/19/0000004.jpg").unlink()
    with pytest.raises(DatasetError, match="1 image.*missing.*0000004.jpg"):
        build_eval_dataset("cvusa", root)
    with pytest.raises(DatasetError, match="split file not found.*test-19zl|split must be one of"):
        build_eval_dataset("cvusa", root, split="test")
    with pytest.raises(DatasetError, match="splits/val-19zl.csv"):
        build_eval_dataset("cvusa", tmp_path)


def test_cvact_reader_val_and_test(tmp_path: Path) -> None:
    root = make_cvact(tmp_path / "CVACT", n_train=3, n_val=2, n_test=2, test_layout=True)
    val = build_eval_dataset("cvact", root)
    assert val.ground_truth == [0, 1] and val.queries[0].box is None
    assert val.queries[0].path.name.endswith("_grdView.png") and val.database[1].path.parent.name == "satview_polish"
    assert val.meta["utm"].shape == (2, 2)
    test = build_eval_dataset("cvact", root, split="test")
    assert test.queries[0].path.suffix == ".jpg" and test.queries[0].box == (0.0, 208.0, 1664.0, 624.0)
    Image.new("RGB", (1232, 224)).save(test.queries[0].path)
    with pytest.raises(DatasetError, match="must be 1664x832.*got 1232x224"):
        build_eval_dataset("cvact", root, split="test")
    with pytest.raises(DatasetError, match="ACT_data.mat"):
        build_eval_dataset("cvact", tmp_path)
    with pytest.raises(DatasetError, match="split must be one of"):
        build_eval_dataset("cvact", root, split="trainval")
