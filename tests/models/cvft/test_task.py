"""The cvft training task: recipes follow the paper; cvft-smoke trains on generated CVUSA data and the loss falls."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import zoo
from zoo.data.synthetic import make_cvact
from zoo.engine.recipes import resolve_recipe
from zoo.errors import DatasetError
from zoo.models.cvft.task import CVFTTask
from zoo.task import DistInfo


def test_cvft_recipes_follow_the_paper() -> None:
    for name, dataset, epochs in (("cvft", "cvusa", 10), ("cvft-cvact", "cvact", 100)):
        recipe = resolve_recipe(name)
        assert recipe["batch_size"] == 32 and recipe["epochs"] == epochs
        assert recipe["optimizer"]["name"] == "adam" and recipe["optimizer"]["lr"] == 1e-5
        assert recipe["model"]["pretrained"] == "vgg16_imagenet"
        assert recipe["task_args"]["dataset"] == dataset and recipe["task_args"]["alpha"] == 10.0


def test_task_freezes_conv1_to_conv3_and_masks_cvact_pairs(tmp_path: Path) -> None:
    recipe = resolve_recipe("cvft-smoke", ["task_args.dataset=cvact"])
    task = CVFTTask(recipe, make_cvact(tmp_path), DistInfo())
    task.create_model = zoo.create_model
    task.check_data()
    model = task.build_model()
    trainable = {n.split(".")[1] for n, p in model.named_parameters() if p.requires_grad and "vgg" in n}
    assert trainable == {"conv4_1", "conv4_2", "conv4_3", "conv5_1", "conv5_2", "conv5_3"}
    assert model.grd_vgg.dropout.p == 0.0 and resolve_recipe("cvft")["model"]["args"] == {}
    assert task.loss.distance_threshold == 25.0
    ground, aerial, utm = task.build_dataset()[0]
    assert ground.shape == (3, 32, 160) and aerial.shape == (3, 64, 64) and utm.shape == (2,)
    with pytest.raises(DatasetError, match="train-19zl.csv"):
        CVFTTask(resolve_recipe("cvft-smoke"), tmp_path, DistInfo()).check_data()
    with pytest.raises(ValueError, match="unknown key.*margin"):
        CVFTTask({**recipe, "task_args": {"margin": 1}}, tmp_path, DistInfo())


def test_smoke_recipe_trains_and_the_loss_falls(smoke_run) -> None:
    result = smoke_run("cvft-smoke")  # on its generated CVUSA set (shared with tests/test_end_to_end.py)
    rows = [json.loads(line) for line in (result.out / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in rows if r.get("kind") == "train" and "loss" in r]
    assert len(losses) == 16                        # 8 epochs x (8 pairs / 4 per batch)
    first, last = sum(losses[:3]) / 3, sum(losses[-3:]) / 3
    assert last < 0.6 * first, losses
    model = zoo.create_model("cvft_vgg", pretrained=str(result.export_dir))
    assert model.zoo_config["descriptor_dim"] == 256   # 64 channels x a 2x2 aerial map
    with torch.no_grad():
        assert model.encode_database(torch.randn(1, 3, 64, 64)).shape == (1, 256)
