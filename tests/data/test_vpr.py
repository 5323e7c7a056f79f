"""VPR benchmark readers (real layouts) and the MSLS challenge submission protocol."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from zoo.data.base import build_eval_dataset
from zoo.data.synthetic import make_vpr_lists, make_vpr_utm
from zoo.data.vpr import positives_within, utm_from_name
from zoo.errors import DatasetError


@pytest.mark.parametrize("name", ["msls_val", "nordland", "sped", "pitts250k_test"])
def test_lists_layout(name: str, tmp_path: Path) -> None:
    root = make_vpr_lists(tmp_path, name, num_places=4)
    ds = build_eval_dataset(name, root)
    assert ds.protocol == "vpr_recall" and ds.meta["layout"] == "lists"
    assert ds.meta["k_values"] == [1, 5, 10, 15, 20, 25]
    assert len(ds.queries) == 4                       # msls: qIdx drops the unused query
    assert all(r.path.is_file() for r in ds.queries + ds.database)
    expected = [[i] for i in range(4)] if name == "sped" else [[2 * i, 2 * i + 1] for i in range(4)]
    assert [g.tolist() for g in ds.ground_truth] == expected
    assert all(g.dtype == np.int64 for g in ds.ground_truth)


def test_lists_found_in_datasets_folder_or_lists_dir(tmp_path: Path) -> None:
    root = make_vpr_lists(tmp_path, "nordland", num_places=2)
    lists = tmp_path / "elsewhere"
    lists.mkdir()
    for f in root.glob("*.npy"):
        f.rename(lists / f.name)
    with pytest.raises(DatasetError, match="Nordland_gt.npy"):
        build_eval_dataset("nordland", root)
    assert build_eval_dataset("nordland", root, lists_dir=str(lists)).meta["lists_dir"] == str(lists)
    (root / "datasets" / "Nordland").mkdir(parents=True)
    for f in lists.glob("*.npy"):
        f.rename(root / "datasets" / "Nordland" / f.name)
    assert len(build_eval_dataset("nordland", root).queries) == 2


def test_utm_layout_positives_within_25_m(tmp_path: Path) -> None:
    for name, folder, split in (("pitts30k_test", "pitts30k", "test"), ("msls_val", "msls", "val")):
        root = make_vpr_utm(tmp_path, folder, split, num_places=3)
        ds = build_eval_dataset(name, root)
        assert ds.meta["layout"] == "utm" and len(ds.database) == 6
        names = [r.path.name for r in ds.database]
        for q, gt in zip(ds.queries, ds.ground_truth):
            qe, qn = utm_from_name(q.path)
            # both views (5 m and 20 m away) are positives; the other places (>= 80 m) are not
            assert sorted(utm_from_name(ds.database[i].path)[0] - qe for i in gt) == [5.0, 20.0], names
        narrow = build_eval_dataset(name, root, threshold=10)
        assert [len(g) for g in narrow.ground_truth] == [1, 1, 1]


def test_positives_within_is_sorted_and_chunked() -> None:
    db = np.array([[0.0, 0.0], [3.0, 4.0], [1.0, 0.0], [100.0, 0.0]])
    q = np.array([[0.0, 0.0], [50.0, 0.0]])
    assert [p.tolist() for p in positives_within(q, db, 5.0, chunk=1)] == [[0, 2, 1], []]


def test_pitts_netvlad_mat_layout(tmp_path: Path) -> None:
    scipy_io = pytest.importorskip("scipy.io")
    root = make_vpr_utm(tmp_path, "pitts_mat", "test", num_places=2)
    db = sorted((root / "images" / "test" / "database").iterdir())
    qs = sorted((root / "images" / "test" / "queries").iterdir())
    (root / "queries_real").mkdir()
    for q in qs:
        q.rename(root / "queries_real" / q.name)
    struct = np.empty((1, 1), dtype=[(f, object) for f in ("whichSet", "dbImage", "utmDb", "qImage", "utmQ",
                                                          "numDb", "numQ", "posDistThr", "posDistSqThr",
                                                          "nonTrivPosDistSqThr")])
    names = lambda paths, base: np.array([[str(p.relative_to(base))] for p in paths], dtype=object)  # noqa: E731
    struct[0, 0] = ("test", names(db, root), np.array([utm_from_name(p) for p in db]).T,
                    names([root / "queries_real" / q.name for q in qs], root / "queries_real"),
                    np.array([utm_from_name(q) for q in qs]).T, len(db), len(qs), 25.0, 625.0, 100.0)
    (root / "datasets").mkdir()
    scipy_io.savemat(root / "datasets" / "pitts30k_test.mat", {"dbStruct": struct})
    import shutil
    shutil.rmtree(root / "images")   # only the .mat layout is left
    ds = build_eval_dataset("pitts30k_test", root)
    assert ds.meta["layout"] == "mat"
    assert [r.path.parent.name for r in ds.queries] == ["queries_real"] * 2
    assert [sorted(g.tolist()) for g in ds.ground_truth] == [[0, 1], [2, 3]]


def test_sped_folder_layout_pairs_same_index(tmp_path: Path) -> None:
    root = make_vpr_lists(tmp_path, "sped", num_places=3)
    for f in root.glob("*.npy"):
        f.unlink()
    ds = build_eval_dataset("sped", root)
    assert ds.meta["layout"] == "folders" and [g.tolist() for g in ds.ground_truth] == [[0], [1], [2]]


def test_missing_layout_names_expected_files(tmp_path: Path) -> None:
    for name in ("msls_val", "msls_challenge", "nordland", "sped", "pitts30k_test", "pitts250k_test"):
        with pytest.raises(DatasetError, match=r"no known layout.*\.npy"):
            build_eval_dataset(name, tmp_path)
    with pytest.raises(DatasetError, match="unknown layout 'xyz'"):
        build_eval_dataset("nordland", tmp_path, layout="xyz")


def test_msls_challenge_writes_the_submission_file(tmp_path: Path) -> None:
    from zoo.metrics.base import get_protocol

    root = make_vpr_lists(tmp_path, "msls_challenge", num_places=3)
    ds = build_eval_dataset("msls_challenge", root)
    assert ds.protocol == "msls_challenge" and ds.ground_truth is None
    assert ds.meta["query_keys"] == ["q0", "q1", "q2"]
    db = torch.nn.functional.normalize(torch.randn(6, 8), dim=1)
    queries = db[[1, 2, 5]] + 0.01       # closest: database 1, 2, 5
    result = get_protocol("msls_challenge")(queries, db, ds, k=25, out_dir=tmp_path / "out")
    lines = (tmp_path / "out" / "msls_challenge_submission.txt").read_text().splitlines()
    assert result.extra["submission"].endswith("msls_challenge_submission.txt")
    assert [line.split()[:2] for line in lines] == [["q0", "p0v1"], ["q1", "p1v0"], ["q2", "p2v1"]]
    assert all(len(line.split()) == 7 for line in lines)   # query + all 6 database keys (k clipped)
