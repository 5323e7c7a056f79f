"""Hierarchical metrics and the DA-Campus protocol against frozen outputs of the original code
(DyCL's AccuracyCalculator.batch_metrics and HAPPIER's metric functions; see fixtures/reference/README.md)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from zoo.data.base import RetrievalSet
from zoo.data.da_campus import coordinate_levels, place_level_matrix
from zoo.metrics.base import get_protocol
from zoo.metrics.hierarchical import hierarchical_metrics, pop_relevances

REF = Path(__file__).resolve().parents[1] / "fixtures" / "reference"


@pytest.fixture(scope="module")
def ref() -> dict[str, np.ndarray]:
    return dict(np.load(REF / "dycl_metrics.npz"))


@pytest.mark.parametrize("case", ["case0", "case1", "case2"])
def test_metric_functions_equal_happier(ref, case: str) -> None:
    target = torch.from_numpy(ref[f"{case}/sorted_target"])
    relevances = pop_relevances(torch.from_numpy(ref[f"{case}/level_counts"]))
    ours = hierarchical_metrics(target, relevances, recall_at=(5,))
    names = [k.split("/", 1)[1] for k in ref if k.startswith(case + "/") and k.split("/", 1)[1] not in
             ("sorted_target", "level_counts")]
    assert len(names) == 3 + 4 * 3
    for name in names:
        np.testing.assert_allclose(ours[name].numpy(), ref[f"{case}/{name}"], rtol=1e-6, atol=1e-7, err_msg=name)


def _case(ref, direction: str) -> tuple[torch.Tensor, torch.Tensor, RetrievalSet]:
    coords = np.load(REF / "dycl_geo.npz")["coords"]
    per = int(ref["per_place"])
    sat_place = np.arange(len(coords))
    drone_place = np.repeat(sat_place, per)
    sat, drone = torch.from_numpy(ref["sat_desc"]), torch.from_numpy(ref["drone_desc"])
    if direction == "drone_satellite":
        q, d, qp, dp = drone, sat, drone_place, sat_place
    else:
        q, d, qp, dp = sat, drone, sat_place, drone_place
    exact = coordinate_levels(coords[qp], coords[dp])
    counts = np.stack([(exact == v).sum(1) for v in range(4)], 1)
    gt = {"place_levels": place_level_matrix(coords, 128), "query_place": qp, "db_place": dp, "level_counts": counts}
    return q, d, RetrievalSet(f"toy_{direction}", Path("."), [], [], gt, "hierarchical", {"direction": direction})


@pytest.mark.parametrize("direction", ["drone_satellite", "satellite_drone"])
def test_protocol_equals_original_accuracy_calculator(ref, direction: str) -> None:
    q, d, dataset = _case(ref, direction)
    result = get_protocol("hierarchical")(q, d, dataset, progress=False)
    expected = {k.split("/", 1)[1]: float(v) * 100 for k, v in ref.items() if k.startswith(direction + "/")}
    renamed = {k.replace("_multi", ""): v for k, v in expected.items()}
    assert set(renamed) == set(result.metrics)
    for name, value in renamed.items():
        assert result.metrics[name] == pytest.approx(value, abs=1e-4), name
    assert result.topk.shape == (q.shape[0], 10)


def test_drop_last_and_corrected_matrix_change_results(ref) -> None:
    q, d, dataset = _case(ref, "drone_satellite")
    base = get_protocol("hierarchical")(q, d, dataset, progress=False).metrics
    full = get_protocol("hierarchical")(q, d, dataset, drop_last=False, progress=False).metrics
    assert full["NDCG"] != base["NDCG"]
    coords = np.load(REF / "dycl_geo.npz")["coords"]
    dataset.ground_truth["place_levels"] = place_level_matrix(coords, None)
    fixed = get_protocol("hierarchical")(q, d, dataset, progress=False).metrics
    assert fixed["AP_level0"] != base["AP_level0"]
