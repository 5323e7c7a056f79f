"""The one generic registry: registration, lookup with close matches, lazy discovery."""

from __future__ import annotations

import pytest

from zoo.errors import UnknownNameError
from zoo.registry import Registry


def test_register_get_and_names():
    reg: Registry[int] = Registry("widget")
    reg.register("alpha", 1)

    @reg.register("beta")
    def beta() -> int:
        return 2

    assert reg.get("alpha") == 1 and reg.get("beta") is beta and reg.names() == ["alpha", "beta"]
    assert "alpha" in reg and "gamma" not in reg
    with pytest.raises(ValueError, match="registered twice"):
        reg.register("alpha", 3)


def test_unknown_name_names_the_closest_and_all_known():
    reg: Registry[int] = Registry("widget")
    reg.register("salad", 1)
    reg.register("dycl", 2)
    with pytest.raises(UnknownNameError) as err:
        reg.get("sald")
    assert str(err.value) == "unknown widget 'sald'. Did you mean salad? Known widgets: dycl, salad"
    assert isinstance(err.value, KeyError)  # callers that catch KeyError keep working


def test_discovery_runs_once_and_only_when_needed():
    calls = []
    reg: Registry[int] = Registry("widget", discover=lambda: (calls.append(1), reg.register("found", 7)))
    reg.register("eager", 1)
    assert reg.get("eager") == 1 and calls == []       # a registered name needs no discovery
    assert reg.get("found") == 7 and calls == [1]
    reg.names()
    assert calls == [1]


def test_every_zoo_registry_is_one_of_these():
    from zoo.data.base import DATASETS
    from zoo.metrics.base import PROTOCOLS
    from zoo.models import MODELS
    from zoo.task import TASKS

    assert all(isinstance(r, Registry) for r in (DATASETS, PROTOCOLS, MODELS, TASKS))
    assert {"salad", "dycl", "cvft", "ucdir", "aml"} <= set(TASKS.names())
    assert {"vpr_recall", "cross_view_rank", "hierarchical", "revisited", "class_precision"} <= set(PROTOCOLS.names())
    assert {"cvusa", "cvact", "msls_val", "roxford5k", "office_home"} <= set(DATASETS.names())
