"""The ucdir training task: recipes follow the original scripts; ucdir-smoke trains (clustering included) and the loss falls."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import zoo
from zoo.data.synthetic import make_office_home
from zoo.engine.checkpoint import list_checkpoints, load_checkpoint
from zoo.engine.recipes import resolve_recipe
from zoo.engine.train import TrainOptions, train
from zoo.errors import DatasetError
from zoo.models.ucdir.task import UCDIRTask
from zoo.task import DistInfo


def test_recipes_follow_the_original_scripts() -> None:
    oh = resolve_recipe("ucdir-office-home")
    dn = resolve_recipe("ucdir-domainnet", ["task_args.domains=[real,painting]"])
    for r in (oh, dn):
        assert r["batch_size"] == 64 and r["epochs"] == 200 and r["model"]["pretrained"] == "moco_v2"
        assert r["optimizer"] == {**r["optimizer"], "name": "sgd", "lr": 2e-4, "momentum": 0.9, "weight_decay": 1e-4}
        assert r["scheduler"]["name"] == "cosine" and r["scheduler"]["per"] == "epoch"
        assert r["task_args"]["select_epoch"] == "last"
    assert oh["task_args"]["num_cluster"] == 65 and oh["task_args"]["cwcon_weightsature"] == 0.5
    assert (oh["task_args"]["selfentro_temp"], oh["task_args"]["distofdist_weight"]) == (0.01, 0.5)
    assert dn["task_args"]["domains"] == ["real", "painting"] and dn["task_args"]["num_cluster"] == 7
    assert (dn["task_args"]["selfentro_temp"], dn["task_args"]["selfentro_weight"]) == (0.1, 0.5)
    task = UCDIRTask(dn, None, DistInfo())
    assert task.weights.cwcon_weightsature == 1.0 and task.weights.distofdist_weight == 0.1


def test_task_checks_data_and_arguments(tmp_path: Path) -> None:
    recipe = resolve_recipe("ucdir-smoke")
    with pytest.raises(DatasetError, match="Product"):
        UCDIRTask(recipe, tmp_path, DistInfo()).check_data()
    with pytest.raises(ValueError, match="unknown key.*colour"):
        UCDIRTask({**recipe, "task_args": {"colour": 1}}, tmp_path, DistInfo())
    with pytest.raises(ValueError, match="select_epoch"):
        UCDIRTask({**recipe, "task_args": {"select_epoch": "best"}}, tmp_path, DistInfo())


def test_smoke_recipe_trains_clusters_and_the_loss_falls(smoke_run) -> None:
    result = smoke_run("ucdir-smoke")  # on its generated Office-Home set (shared with tests/test_end_to_end.py)
    rows = [json.loads(line) for line in (result.out / "metrics.jsonl").read_text().splitlines()]
    rows = [r for r in rows if r.get("kind") == "train"]
    assert len(rows) == 30  # one step per epoch
    # cluster-wise loss from epoch 10, self-entropy and distance-of-distance from epoch 20
    assert "cwcon_A" not in rows[9] and "cwcon_A" in rows[10] and "selfentropy" not in rows[19]
    assert all(k in rows[20] for k in ("cwcon_B", "selfentropy", "distofdist"))
    inst = [(r["inst_A"] + r["inst_B"]) / 2 for r in rows]
    assert sum(inst[-3:]) / 3 < 0.75 * sum(inst[:3]) / 3, inst
    total = [r["loss"] for r in rows[20:]]
    assert sum(total[-3:]) / 3 < sum(total[:3]) / 3, total
    # the task state (memory banks, clusters) is in the checkpoint for an exact resume
    state = load_checkpoint(list_checkpoints(result.out / "checkpoints")[-1])["task"]
    assert [tuple(b.shape) for b in state["banks"]] == [(128, 6), (128, 9)]
    assert state["clusters"]["centroids"][1][0].shape == (3, 128)
    torch.testing.assert_close(state["clusters"]["centroids"][0][0].norm(dim=1), torch.ones(3))
    # the export is the key encoder, loadable as a zoo model
    model = zoo.create_model("ucdir_moco", pretrained=str(result.export_dir))
    assert model.arch == "resnet18" and model.zoo_config["descriptor_dim"] == 128
    key = torch.load(list_checkpoints(result.out / "checkpoints")[-1], weights_only=True)["model"]
    torch.testing.assert_close(model.encoder.fc[2].weight, key["encoder_k.encoder.fc.2.weight"])


def test_best_on_labels_exports_the_original_choice(tmp_path: Path) -> None:
    """select_epoch=best_on_labels: P@K of both directions after every epoch, the best epoch's key encoder exported."""
    data = make_office_home(tmp_path, domains=("Product", "Clipart"), num_classes=3, per_class=2, size=40)
    recipe = resolve_recipe("ucdir-smoke", ["epochs=3", "task_args.select_epoch=best_on_labels",
                                            "task_args.cluster_start_epoch=2", "task_args.cwcon_startepoch=2",
                                            "task_args.selfentro_startepoch=3", "task_args.distofdist_startepoch=3"])
    result = train(recipe, TrainOptions(out_dir=tmp_path / "run", data_root=data.parent, device="cpu", progress=False))
    state = load_checkpoint(list_checkpoints(tmp_path / "run" / "checkpoints")[-1])["task"]["best"]
    assert [h["epoch"] for h in state["history"]] == [0, 1, 2]
    scores = [(h["A->B P@1"] + h["B->A P@1"]) / 2 for h in state["history"]]
    assert state["epoch"] == scores.index(max(scores))  # first best, as main.py's strict comparison
    config = json.loads((result.export_dir / "config.json").read_text())
    assert f"epoch {state['epoch']}" in config["selection"] and "labels" in config["selection"]
    model = zoo.create_model("ucdir_moco", pretrained=str(result.export_dir))
    torch.testing.assert_close(model.encoder.conv1.weight, state["encoder_k"]["encoder.conv1.weight"])


def _ddp_worker(rank: int, world: int, init: str, out: str) -> None:
    import torch.distributed as dist

    from zoo.models.ucdir.modeling import UCDIRNet
    from zoo.models.ucdir.task import UCDIRModel, _all_gather_cat

    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    torch.manual_seed(0)
    model = UCDIRModel(UCDIRNet("resnet18", 128), key_bn_splits=1)
    images = torch.randn(8, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    mine = images[rank * 4:(rank + 1) * 4]
    torch.manual_seed(rank)  # the permutation must come from rank 0 alone
    model.encoder_k.eval()   # batch-independent keys: the shuffle and unshuffle must be invisible
    keys = model.shuffled_keys(mine)
    direct = model.encoder_k(mine)
    model.encoder_k.train()  # train mode: every rank normalises its own shuffled share
    train_keys = _all_gather_cat(model.shuffled_keys(mine))
    torch.save({"keys": keys, "direct": direct, "train_keys": train_keys}, f"{out}/{rank}.pt")
    dist.destroy_process_group()


def test_ddp_shuffle_gives_each_rank_its_own_keys(tmp_path: Path) -> None:
    import torch.multiprocessing as mp

    mp.spawn(_ddp_worker, args=(2, f"file://{tmp_path}/init", str(tmp_path)), nprocs=2, join=True)
    r0, r1 = torch.load(tmp_path / "0.pt"), torch.load(tmp_path / "1.pt")
    for r in (r0, r1):
        torch.testing.assert_close(r["keys"], r["direct"], atol=1e-5, rtol=0)
    torch.testing.assert_close(r0["train_keys"], r1["train_keys"])  # all ranks agree on every key


def test_interrupted_run_resumes_exactly(tmp_path: Path) -> None:
    """Banks and clusters travel in the checkpoint: a run cut mid-epoch after clustering started resumes bitwise
    (on_epoch_start is not re-run mid-epoch, so without the task state the resumed step would fail)."""
    data = make_office_home(tmp_path, domains=("Product", "Clipart"), num_classes=3, per_class=2, size=40)
    recipe = resolve_recipe("ucdir-smoke", ["epochs=4", "batch_size=3", "checkpoint_every=1",
                                            "task_args.cluster_start_epoch=2", "task_args.cwcon_startepoch=2",
                                            "task_args.cwcon_satureepoch=3", "task_args.selfentro_startepoch=3",
                                            "task_args.distofdist_startepoch=3"])
    whole = train(recipe, TrainOptions(out_dir=tmp_path / "a", data_root=data.parent, device="cpu", progress=False))
    stopped = train(recipe, TrainOptions(out_dir=tmp_path / "b", data_root=data.parent, device="cpu", progress=False,
                                         stop_after_steps=11))
    assert stopped.interrupted
    last = load_checkpoint(list_checkpoints(tmp_path / "b" / "checkpoints")[-1])
    assert (last["epoch"], last["step_in_epoch"]) == (3, 1)
    resumed = train(recipe, TrainOptions(out_dir=tmp_path / "b", data_root=data.parent, device="cpu", progress=False,
                                         resume=True))
    a = zoo.create_model("ucdir_moco", pretrained=str(whole.export_dir)).state_dict()
    b = zoo.create_model("ucdir_moco", pretrained=str(resumed.export_dir)).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
