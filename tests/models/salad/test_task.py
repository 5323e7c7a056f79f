"""The salad training task: the salad-smoke recipe trains on generated GSV-Cities data and the loss falls."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import zoo
from zoo.engine.recipes import resolve_recipe
from zoo.errors import DatasetError
from zoo.models.salad.task import SALADTask
from zoo.task import DistInfo


def test_salad_recipe_follows_the_paper() -> None:
    recipe = resolve_recipe("salad")
    assert recipe["batch_size"] == 240 and recipe["epochs"] == 4
    assert recipe["optimizer"] == {**recipe["optimizer"], "name": "adamw", "lr": 6e-5, "weight_decay": 9.5e-9}
    assert recipe["scheduler"]["start_factor"] == 1.0 and recipe["scheduler"]["end_factor"] == 0.2
    assert recipe["scheduler"]["total_iters"] == 4000
    assert recipe["model"]["variant"] == "8192_256" and recipe["model"]["pretrained"] == "backbone"
    assert recipe["task_args"]["randaugment_ops"] == 3 and len(recipe["task_args"]["cities"]) == 23


def test_task_checks_data_and_arguments(tmp_path: Path) -> None:
    recipe = resolve_recipe("salad-smoke")
    with pytest.raises(DatasetError, match="Dataframes"):
        SALADTask(recipe, tmp_path, DistInfo()).check_data()
    with pytest.raises(ValueError, match="unknown key.*colour"):
        SALADTask({**recipe, "task_args": {"colour": 1}}, tmp_path, DistInfo())


def test_smoke_recipe_trains_and_the_loss_falls(smoke_run) -> None:
    result = smoke_run("salad-smoke")  # on its generated GSV-Cities set (shared with tests/test_end_to_end.py)
    rows = [json.loads(line) for line in (result.out / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in rows if r.get("kind") == "train" and "loss" in r]
    assert len(losses) == 16                       # 8 epochs x (16 places / 8 per batch)
    first, last = sum(losses[:3]) / 3, sum(losses[-3:]) / 3
    assert last < 0.5 * first, losses
    # The export loads back as a zoo model with the trained variant.
    model = zoo.create_model("dinov2_salad", pretrained=str(result.export_dir))
    assert model.zoo_config["descriptor_dim"] == 544
    with torch.no_grad():
        assert model(torch.randn(1, 3, 70, 70)).shape == (1, 544)
