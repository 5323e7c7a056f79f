"""Typed settings: recipes and task arguments read into dataclasses, errors naming the key."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import pytest

from zoo.settings import SettingsError, as_dict, parse, setting


@dataclass
class Inner:
    k: int = setting(4, minimum=1)


@dataclass
class Example:
    name: str
    lr: float = setting(1e-3, positive=True)
    mode: Literal["ts", "reg"] = "ts"
    sizes: list[int] = setting([1, 2], minimum=0, length=2)
    scale: tuple[float, ...] = setting((0.2, 1.0), length=2)
    limit: int | None = None
    inner: Inner | None = None
    free: dict = setting({})


def test_defaults_types_and_nested_sections():
    ex = parse(Example, {"name": "x", "lr": "6e-5", "inner": {"k": 2}, "scale": [0.1, 0.9], "free": {"a": 1}})
    assert ex.lr == 6e-5 and ex.mode == "ts" and ex.sizes == [1, 2] and ex.scale == (0.1, 0.9) and ex.inner.k == 2
    assert as_dict(ex)["scale"] == [0.1, 0.9] and as_dict(ex)["inner"] == {"k": 2}
    assert parse(Example, {"name": "x"}).sizes is not parse(Example, {"name": "y"}).sizes  # fresh defaults


@pytest.mark.parametrize("value, message", [
    ({"name": "x", "lrr": 1}, "unknown key 'lrr'. Did you mean lr? Allowed keys: name, lr, mode, sizes, scale, limit, inner, free"),
    ({"lr": 1}, "name: required key is missing"),
    ({"name": 5}, "name: expected a string, got the number 5; quote it in YAML"),
    ({"name": "x", "lr": 0}, "lr: expected a number > 0, got 0"),
    ({"name": "x", "lr": True}, "lr: expected a number > 0, got True"),
    ({"name": "x", "mode": "rg"}, "mode: expected one of ts, reg, got 'rg'. Did you mean reg?"),
    ({"name": "x", "sizes": [1]}, "sizes: expected a list of 2 values, each an integer >= 0, got [1]"),
    ({"name": "x", "sizes": [1, -1]}, "sizes[1]: expected an integer >= 0, got -1"),
    ({"name": "x", "limit": 1.5}, "limit: expected an integer, got 1.5"),
    ({"name": "x", "inner": {"k": 0}}, "inner.k: expected an integer >= 1, got 0"),
    ({"name": "x", "inner": {"j": 1}}, "unknown key 'inner.j'. Allowed keys: k"),
])
def test_errors_name_the_key_the_type_and_the_allowed_keys(value, message):
    with pytest.raises(SettingsError) as err:
        parse(Example, value)
    assert str(err.value) == message


def test_task_args_of_every_task_are_checked():
    from zoo.distributed import DistInfo
    from zoo.engine.recipes import resolve_recipe
    from zoo.task import get_task

    for name in ("salad-smoke", "dycl-smoke", "cvft-smoke", "ucdir-smoke", "aml-smoke"):
        recipe = resolve_recipe(name)
        task_cls = get_task(recipe["task"])
        with pytest.raises(SettingsError, match=r"unknown key 'task_args\.colour'.*Allowed keys: "):
            task_cls({**recipe, "task_args": {**recipe["task_args"], "colour": 1}}, None, DistInfo())
