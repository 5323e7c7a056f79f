"""The dycl training task: recipe values of the original, data checks, warm-up, and dycl-smoke trains with falling loss."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import zoo
from zoo.data.synthetic import make_da_campus
from zoo.engine.recipes import resolve_recipe
from zoo.errors import DatasetError
from zoo.models.dycl.task import DyCLTask
from zoo.task import DistInfo


def test_dycl_recipe_follows_the_original() -> None:
    recipe = resolve_recipe("dycl")
    assert recipe["batch_size"] == 128 and recipe["epochs"] == 20 and recipe["precision"] == "fp16"
    assert recipe["optimizer"]["name"] == "adam" and recipe["optimizer"]["lr"] == 5e-5
    assert recipe["optimizer"]["weight_decay"] == 1e-4
    assert recipe["scheduler"]["name"] == "cosine" and recipe["scheduler"]["total_iters"] == 300
    assert recipe["model"] == {**recipe["model"], "name": "dycl_resnet", "pretrained": "imagenet"}
    args = recipe["task_args"]
    assert args["warmup_epochs"] == 5 and args["head_lr_scale"] == 2.0 and args["proxy_lr"] == 10.0
    assert args["loss_weights"] == [0.9, 0.2, 0.1] and args["margins"] == [0.25, 0.35, 0.45]
    assert args["row_batch"] == 80 and args["normalize_dim"] == 0


def test_task_checks_data_and_arguments(tmp_path: Path) -> None:
    recipe = resolve_recipe("dycl-smoke")
    with pytest.raises(DatasetError, match="satellite/train.txt"):
        DyCLTask(recipe, tmp_path, DistInfo()).check_data()
    with pytest.raises(ValueError, match="unknown key.*colour"):
        DyCLTask({**recipe, "task_args": {"colour": 1}}, tmp_path, DistInfo())


def test_param_groups_and_backbone_warmup(tmp_path: Path) -> None:
    root = make_da_campus(tmp_path, train_places=3, test_places=2, drones_per_place=1, size=16)
    task = DyCLTask({**resolve_recipe("dycl-smoke"), "task_args": {"warmup_epochs": 2}}, root, DistInfo())
    task.create_model = zoo.create_model
    task.check_data()
    model = task.build_model()
    groups = list(task.param_groups(model))
    assert groups[1]["lr_scale"] == 2.0 and groups[2]["lr"] == 10.0 and groups[2]["weight_decay"] == 0.0
    assert groups[2]["params"][0].shape == (3, 512)
    assert sum(p.numel() for g in groups for p in g["params"]) == sum(p.numel() for p in model.parameters()) + 3 * 512
    task.on_epoch_start(model, 0)
    assert not any(p.requires_grad for p in model.backbone.parameters()) and model.fc.weight.requires_grad
    task.on_epoch_start(model, 2)
    assert all(p.requires_grad for p in model.backbone.parameters())


def test_smoke_recipe_trains_and_the_loss_falls(smoke_run) -> None:
    result = smoke_run("dycl-smoke")  # on its generated DA-Campus set (shared with tests/test_end_to_end.py)
    rows = [json.loads(line) for line in (result.out / "metrics.jsonl").read_text().splitlines()]
    train_rows = [r for r in rows if r.get("kind") == "train" and "loss" in r]
    assert len(train_rows) == 12                     # 6 epochs x (24 pairs / 12)
    losses = [r["loss"] for r in train_rows]
    assert sum(losses[-3:]) / 3 < 0.5 * sum(losses[:3]) / 3, losses
    assert {"hap", "dycl", "cluster"} <= set(train_rows[0])
    model = zoo.create_model("dycl_resnet", pretrained=str(result.export_dir))
    with torch.no_grad():
        assert model(torch.randn(1, 3, 32, 32)).shape == (1, 512)
