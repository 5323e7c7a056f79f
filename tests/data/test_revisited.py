"""ROxford5k / RParis6k readers (revisitop layout)."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest

from zoo.data.base import build_eval_dataset
from zoo.data.synthetic import make_revisited
from zoo.errors import DatasetError


@pytest.mark.parametrize("name", ["roxford5k", "rparis6k"])
def test_reads_gnd_and_crops_queries(name: str, tmp_path: Path) -> None:
    root = make_revisited(tmp_path / name, name)
    ds = build_eval_dataset(name, root)
    cfg = pickle.load(open(root / f"gnd_{name}.pkl", "rb"))
    assert ds.protocol == "revisited" and len(ds.queries) == 3 and len(ds.database) == 16
    assert ds.queries[0].path == root / "jpg" / f"{cfg['qimlist'][0]}.jpg"
    assert ds.queries[0].box == tuple(cfg["gnd"][0]["bbx"])
    assert all(r.box is None for r in ds.database)
    assert ds.ground_truth[1]["easy"] == cfg["gnd"][1]["easy"]


def test_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="gnd_roxford5k.pkl"):
        build_eval_dataset("roxford5k", tmp_path)
    root = make_revisited(tmp_path / "r", "roxford5k")
    next((root / "jpg").glob("*distractor0.jpg")).unlink()
    with pytest.raises(DatasetError, match="missing"):
        build_eval_dataset("roxford5k", root)
    with open(root / "gnd_roxford5k.pkl", "wb") as f:
        pickle.dump({"imlist": [], "qimlist": ["a"], "gnd": [{"bbx": [0, 0, 1, 1]}]}, f)
    with pytest.raises(DatasetError, match="lacks easy, hard, junk"):
        build_eval_dataset("roxford5k", root)
