"""Office-Home and DomainNet readers: real layouts, class matching across domains, clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from zoo.data.base import build_eval_dataset
from zoo.data.synthetic import make_domainnet, make_office_home
from zoo.errors import DatasetError


def test_office_home_both_directions(tmp_path: Path) -> None:
    root = make_office_home(tmp_path, domains=("Clipart", "Real World"), num_classes=3, per_class=2)
    ds = build_eval_dataset("office_home", root, query_domain="Real World", database_domain="Clipart")
    assert ds.protocol == "class_precision" and len(ds.queries) == 9 and len(ds.database) == 6
    assert ds.queries[0].path == root / "Real World" / "Class_00" / "00001.jpg"
    assert ds.ground_truth["query_labels"].tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    assert ds.ground_truth["database_labels"].tolist() == [0, 0, 1, 1, 2, 2]
    back = build_eval_dataset("office_home", root, query_domain="Clipart", database_domain="Real World")
    assert [r.path for r in back.queries] == [r.path for r in ds.database]
    with pytest.raises(DatasetError, match="Product.*Art, Clipart, Product, Real World"):
        build_eval_dataset("office_home", root, query_domain="Product", database_domain="Clipart")


def test_office_home_labels_match_by_class_name(tmp_path: Path) -> None:
    root = make_office_home(tmp_path, domains=("Art", "Product"), num_classes=3, per_class=1)
    (root / "Product" / "Class_01").rename(root / "Product" / "Class_05")  # a class only one domain has
    ds = build_eval_dataset("office_home", root, query_domain="Art", database_domain="Product")
    classes = ds.meta["classes"]
    q = [classes[i] for i in ds.ground_truth["query_labels"]]
    d = [classes[i] for i in ds.ground_truth["database_labels"]]
    assert q == ["Class_00", "Class_01", "Class_02"] and d == ["Class_00", "Class_00", "Class_02", "Class_02",
                                                                 "Class_05", "Class_05"]


def test_domainnet_split_files_and_seven_classes(tmp_path: Path) -> None:
    root = make_domainnet(tmp_path, per_class=3)
    ds = build_eval_dataset("domainnet", root, query_domain="clipart", database_domain="sketch")
    assert ds.meta["classes"] == ["bird", "feather", "teapot", "tiger", "whale", "windmill", "zebra"]
    assert len(ds.queries) == 14 and len(ds.database) == 14  # 2 train images of each of the 7 classes
    assert all("airplane" not in str(r.path) for r in ds.queries)
    test = build_eval_dataset("domainnet", root, query_domain="sketch", database_domain="clipart", split="test")
    assert len(test.queries) == 7
    everything = build_eval_dataset("domainnet", root, query_domain="sketch", database_domain="clipart", split=None)
    assert len(everything.queries) == 21
    (root / "sketch_train.txt").unlink()
    with pytest.raises(DatasetError, match="sketch_train.txt"):
        build_eval_dataset("domainnet", root, query_domain="sketch", database_domain="clipart")
    with open(root / "clipart_train.txt", "a") as f:
        f.write("clipart/bird/missing.jpg 0\n")
    with pytest.raises(DatasetError, match="do not exist.*missing.jpg"):
        build_eval_dataset("domainnet", root, query_domain="clipart", database_domain="clipart")
