"""DA-Campus reader: real layout, geodesic levels (equal to the original's geopy-based matrices)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from zoo.data.base import build_eval_dataset
from zoo.data.da_campus import (
    DACampusPairs,
    coordinate_levels,
    distance_levels,
    geodesic_distance,
    place_level_matrix,
    read_da_campus,
)
from zoo.data.synthetic import make_da_campus
from zoo.errors import DatasetError

GEO = Path(__file__).resolve().parents[1] / "fixtures" / "reference" / "dycl_geo.npz"


def test_geodesic_distance_equals_geopy() -> None:
    ref = np.load(GEO)
    a, b = ref["a"], ref["b"]
    d = geodesic_distance(a[:, 0], a[:, 1], b[:, 0], b[:, 1])
    np.testing.assert_allclose(d, ref["geopy_m"], rtol=0, atol=1e-3)
    c = ref["coords"]
    campus = geodesic_distance(c[:20, None, 0], c[:20, None, 1], c[None, :, 0], c[None, :, 1])
    np.testing.assert_allclose(campus, ref["campus_m"], rtol=0, atol=1e-6)


def test_levels_equal_original_label_matrices() -> None:
    ref = np.load(GEO)
    c = ref["coords"]
    assert np.array_equal(place_level_matrix(c, 128), ref["matrix_bs128"])
    assert np.array_equal(place_level_matrix(c, 80), ref["matrix_bs80"])
    assert np.array_equal(coordinate_levels(ref["queries"], c), ref["matrix_test"])
    fixed = place_level_matrix(c, None)
    assert np.array_equal(fixed, fixed.T) and (fixed != ref["matrix_bs80"]).sum() > 0
    assert distance_levels(np.array([0.0, 3.0, 3.01, 200.0, 200.5, 500.0, 500.1])).tolist() == [3, 3, 2, 2, 1, 1, 0]


def test_reader_both_directions(tmp_path: Path) -> None:
    root = make_da_campus(tmp_path, train_places=4, test_places=6, drones_per_place=3)
    ds = build_eval_dataset("da_campus_drone_satellite", root)
    assert len(ds.queries) == 18 and len(ds.database) == 6 and ds.protocol == "hierarchical"
    gt = ds.ground_truth
    assert gt["query_place"].tolist() == [p for p in range(6) for _ in range(3)]
    assert gt["level_counts"].sum(1).tolist() == [6] * 18 and (gt["level_counts"][:, 3] == 1).all()
    assert set(np.unique(gt["place_levels"])) == {0, 1, 2, 3}
    rev = build_eval_dataset("da_campus_satellite_drone", root)
    assert len(rev.queries) == 6 and len(rev.database) == 18 and (rev.ground_truth["level_counts"][:, 3] == 3).all()
    assert rev.fingerprint() != ds.fingerprint()
    pairs = DACampusPairs(root, transform=lambda img: np.asarray(img))
    sat, drone, label, index = pairs[5]
    assert len(pairs) == 12 and label == 1 and index == 5 and sat.shape == drone.shape == (32, 32, 3)


def test_reader_errors(tmp_path: Path) -> None:
    root = make_da_campus(tmp_path, train_places=2, test_places=2, drones_per_place=1)
    with pytest.raises(DatasetError, match="direction"):
        read_da_campus(root, direction="ground_satellite")
    (root / "drone" / "test.txt").write_text("path class_id lat lon\n")
    with pytest.raises(DatasetError, match="header"):
        build_eval_dataset("da_campus_drone_satellite", root)
    (root / "drone" / "test.txt").write_text("path class_id latitude longitude\ntest/x.png 99 31.9 118.7\n")
    with pytest.raises(DatasetError, match="without a satellite image"):
        build_eval_dataset("da_campus_drone_satellite", root)
    (root / "drone" / "test.txt").unlink()
    with pytest.raises(DatasetError, match="drone/test.txt"):
        build_eval_dataset("da_campus_drone_satellite", root)
