"""retrieval-SfM-120k reader and cirtorch-style negative mining."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest
import torch

from zoo.data.sfm120k import cid2filename, mine_negatives, read_sfm120k
from zoo.data.synthetic import make_sfm120k
from zoo.errors import DatasetError


def test_reads_the_real_layout(tmp_path: Path) -> None:
    root = make_sfm120k(tmp_path / "sfm")
    split = read_sfm120k(root, "train", check_images=True)
    assert len(split.images) == 16 and len(split.qpool) == 12
    assert split.images[0] == cid2filename(pickle.load(open(root / "retrieval-SfM-120k.pkl", "rb"))["train"]["cids"][0], root / "ims")
    assert split.images[0].parts[-4:-1] == (split.images[0].name[-2:], split.images[0].name[-4:-2], split.images[0].name[-6:-4])
    assert len(read_sfm120k(root, "val").qpool) == 6


def test_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="retrieval-SfM-120k.pkl"):
        read_sfm120k(tmp_path)
    root = make_sfm120k(tmp_path / "sfm")
    with pytest.raises(DatasetError, match="no split 'test'"):
        read_sfm120k(root, "test")
    next((root / "ims").rglob("*0100")).unlink()
    with pytest.raises(DatasetError, match="missing"):
        read_sfm120k(root, check_images=True)


def test_hardest_negatives_one_per_cluster() -> None:
    clusters = [0, 0, 1, 1, 2, 3, 3]
    q = torch.tensor([[1.0, 0.0]])
    pool = [1, 2, 3, 4, 5, 6]
    # similarity to the query decreases along the pool, except image 6
    vecs = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.8, 0.2], [0.1, 0.9], [0.5, 0.5], [0.95, 0.0]])
    # image 1 is the query's own cluster; 6 (cluster 3) is the hardest other; 3 repeats cluster 1
    assert mine_negatives(q, vecs, pool, [0], clusters, 3) == [[6, 2, 4]]
    assert mine_negatives(q, vecs, pool, [0], clusters, 5) == [[6, 2, 4]]  # the pool runs out of clusters
