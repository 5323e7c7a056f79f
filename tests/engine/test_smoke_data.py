"""``data.synthetic`` in a recipe: validated like every key; without --data-root the set is generated in OUT/data."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from zoo.cli.train import main as train_main
from zoo.engine.recipes import RecipeError, available, resolve_recipe, validate

TOY = {"name": "toy", "task": "toy", "model": {"name": "toy_mlp"}, "batch_size": 8, "epochs": 1,
       "optimizer": {"name": "sgd", "lr": 0.1}}


def test_every_smoke_recipe_names_a_synthetic_set() -> None:
    smoke = [name for name in available() if name.endswith("-smoke")]
    assert len(smoke) == 5, smoke
    for name in smoke:
        assert resolve_recipe(name)["data"]["synthetic"], name


@pytest.mark.parametrize("data, message", [
    ({"subdir": "DA_Campus", "synthetic": "da_campos"}, "data.synthetic: expected one of .*Did you mean da_campus"),
    ({"subdir": "DA_Campus", "synthetic": 3}, "data.synthetic: expected one of"),
    ({"subdir": "CVUSA", "synthetic": "da_campus"}, "data.synthetic: 'da_campus' writes DA_Campus/, but data.subdir is 'CVUSA'"),
    ({"synthetic": "cvusa"}, "data.synthetic: 'cvusa' writes CVUSA/, but data.subdir is None"),
])
def test_bad_synthetic_key(data: dict, message: str) -> None:
    with pytest.raises(RecipeError, match=message):
        validate({**TOY, "data": data})


def test_without_data_root_the_set_is_generated_in_out(tmp_path: Path, capsys: pytest.CaptureFixture,
                                                       caplog: pytest.LogCaptureFixture) -> None:
    out = tmp_path / "run"
    with caplog.at_level(logging.INFO, logger="zoo.train"):
        assert train_main(["--recipe", "dycl-smoke", "--out", str(out), "--device", "cpu", "--check"]) == 0
    data = out / "data" / "DA_Campus"
    assert f"data: {data}" in capsys.readouterr().out
    assert f"synthetic 'da_campus' set in {data}" in caplog.text
    assert (data / "drone" / "train.txt").is_file() and (data / "satellite" / "test.txt").is_file()


def test_data_root_wins_over_the_synthetic_set(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "run"
    assert train_main(["--recipe", "dycl-smoke", "--out", str(out), "--data-root", str(tmp_path / "none"),
                       "--device", "cpu", "--check"]) == 2
    assert f"--data-root {tmp_path / 'none'}: no such directory" in capsys.readouterr().err
    assert not (out / "data").exists()
