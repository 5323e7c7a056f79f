"""AML training task: the smoke recipe end to end (loss falls), modes, parameter groups."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import zoo
from zoo.data.synthetic import make_sfm120k
from zoo.engine.recipes import resolve_recipe
from zoo.models.aml.task import AMLTask
from zoo.task import DistInfo


@pytest.fixture(scope="module")
def data_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("aml")
    make_sfm120k(root / "retrieval-SfM-120k")
    return root


def test_smoke_recipe_loss_falls(smoke_run) -> None:
    recipe = resolve_recipe("aml-smoke")
    result = smoke_run("aml-smoke")  # on its generated retrieval-SfM-120k set (shared with tests/test_end_to_end.py)
    rows = [json.loads(x) for x in (result.out / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in rows if r["kind"] == "train"]
    last_epoch = [r["loss"] for r in rows if r["kind"] == "train" and r["epoch"] == recipe["epochs"] - 1]
    assert sum(last_epoch) / len(last_epoch) < 0.6 * losses[0]
    # GeM p trains at 10x the lr, without weight decay (AML main.py)
    assert rows[0]["lr_1"] == pytest.approx(10 * rows[0]["lr"])
    import zoo
    exported = zoo.create_model("aml_student", pretrained=str(result.export_dir))
    assert exported.encode_query(torch.zeros(1, 3, 32, 24)).shape == (1, 512)


@pytest.mark.parametrize("mode", ["ts_self", "reg", "rkd", "std"])
def test_other_modes_give_finite_gradients(mode: str, data_root: Path) -> None:
    recipe = resolve_recipe("aml-smoke", [f"task_args.mode={mode}"])
    task = AMLTask(recipe, data_root / "retrieval-SfM-120k", DistInfo())
    task.create_model = zoo.create_model
    task.check_data()
    torch.manual_seed(0)
    model = task.build_model()
    task.on_epoch_start(model, 0)
    items = task.build_dataset()
    batch = [items[i] for i in range(3)]
    model.train()
    loss, _ = task.training_step(model, batch, None)
    loss.backward()
    assert torch.isfinite(loss) and loss.item() > 0
    assert model.student.pool.p.grad is not None
    if mode != "std":
        assert "others" not in batch[0]
    groups = task.param_groups(model)
    assert groups[1]["lr_scale"] == 10.0 and groups[1]["weight_decay"] == 0.0
    assert sum(p.numel() for g in groups for p in g["params"]) == sum(p.numel() for p in model.parameters())


def test_rejects_a_model_with_teacher(data_root: Path) -> None:
    from zoo.errors import InputError
    recipe = resolve_recipe("aml-smoke", ["model.variant=mobilenetv2_vgg16_asym"])
    task = AMLTask(recipe, data_root / "retrieval-SfM-120k", DistInfo())
    task.create_model = zoo.create_model
    task.check_data()
    with pytest.raises(InputError, match="student alone"):
        task.build_model()
