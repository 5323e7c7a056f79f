"""The training engine on a toy task (tests/engine/toy_task.py), independent of the zoo's models.

Checks: the loss falls; logs, checkpoints and the resolved recipe are written; the export loads
back through zoo.create_model and through hubconf.py; a run killed mid-epoch and resumed ends
with bitwise the same weights (and losses) as an uninterrupted one; 2 processes under torchrun
(gloo, CPU) with accumulation match 1 process with the same global batch.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

import zoo
from tests.engine.toy_task import train_cli  # also registers the toy model and task
from zoo.engine.checkpoint import list_checkpoints, load_checkpoint
from zoo.engine.recipes import RecipeError, resolve_recipe, validate
from zoo.engine.train import Trainer, TrainOptions, _seed_all, train, unwrap
from zoo.errors import DatasetError

REPO = Path(__file__).resolve().parents[2]
TOY = {
    "name": "toy", "task": "toy", "imports": ["tests.engine.toy_task"], "model": {"name": "toy_mlp"},
    "batch_size": 8, "epochs": 3, "optimizer": {"name": "sgd", "lr": 0.5, "momentum": 0.9},
    "scheduler": {"name": "cosine", "warmup_steps": 2}, "checkpoint_every": 4, "log_every": 2,
    "task_args": {"size": 48, "noise": 0.1},
}  # 48 items / 8 = 6 steps per epoch, 18 steps in all
STEPS = 18


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}


@pytest.fixture(scope="module")
def recipes_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("recipes")
    (folder / "toy.yaml").write_text(yaml.safe_dump(TOY))
    return folder


def _run(recipes_dir: Path, out: Path, *overrides: str) -> Trainer:
    trainer = Trainer(resolve_recipe("toy", overrides, recipes_dir), TrainOptions(out, device="cpu", progress=False))
    trainer.run()
    return trainer


def _rows(out: Path) -> list[dict]:
    return [r for r in map(json.loads, (out / "metrics.jsonl").read_text().splitlines()) if r["kind"] == "train"]


@pytest.fixture(scope="module")
def baseline(recipes_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Trainer, Path]:
    """Uninterrupted single-process run with dropout (main RNG) and per-epoch task state."""
    out = tmp_path_factory.mktemp("baseline")
    return _run(recipes_dir, out, "model.args.dropout=0.2"), out


def test_loss_falls_and_run_folder(baseline: tuple[Trainer, Path]) -> None:
    trainer, out = baseline
    rows = _rows(out)
    assert [r["step"] for r in rows] == list(range(2, STEPS + 1, 2))
    assert rows[-1]["loss"] < 0.5 * rows[0]["loss"], [r["loss"] for r in rows]
    assert all(r["images_per_s"] > 0 for r in rows)
    assert (out / "metrics.csv").read_text().splitlines()[0] == "kind,step,epoch,loss,lr,images_per_s,fit"
    assert yaml.safe_load((out / "recipe.yaml").read_text()) == trainer.recipe
    ckpts = list_checkpoints(out / "checkpoints")
    assert [p.name for p in ckpts] == ["step-00000016.pt", "step-00000018.pt"]  # keep_checkpoints: 2
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == [p.name for p in ckpts]  # no temp files
    state = load_checkpoint(ckpts[-1])  # weights_only=True
    assert (state["step"], state["epoch"], state["step_in_epoch"]) == (STEPS, 3, 0)
    assert state["task"]["updates"] == STEPS
    model = unwrap(trainer.model).eval()
    assert all(torch.equal(v, state["model"][k]) for k, v in model.state_dict().items())

    exported = zoo.create_model("toy_mlp", pretrained=str(out / "export"))
    x = torch.randn(5, 8)
    torch.testing.assert_close(exported(x), model(x), rtol=0, atol=0)
    config = json.loads((out / "export" / "config.json").read_text())
    assert config["architecture"] == "toy_mlp" and config["training"]["steps"] == STEPS


def test_killed_run_resumes_to_the_same_weights(baseline: tuple[Trainer, Path], recipes_dir: Path,
                                                tmp_path: Path) -> None:
    _, base_out = baseline
    out = tmp_path / "run"
    # A real process of the CLI, stopped after step 9 (mid-epoch 1) without writing a checkpoint there,
    # as a kill would leave it; it loads data in a worker process, the resumed run in the main one.
    cmd = [sys.executable, str(REPO / "training" / "train.py"), "--recipe", "toy", "--recipes-dir", str(recipes_dir),
           "--out", str(out), "--device", "cpu", "--no-progress", "--stop-after-steps", "9",
           "model.args.dropout=0.2", "num_workers=1"]
    proc = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr
    assert [p.name for p in list_checkpoints(out / "checkpoints")] == ["step-00000006.pt", "step-00000008.pt"]
    assert not (out / "export").exists()
    # A checkpoint write cut off by the kill leaves only a temporary file, which resume ignores.
    (out / "checkpoints" / ".step-00000009.pt.abc123.tmp").write_bytes(b"\x80\x02partial")

    code = train_cli().main(["--recipe", "toy", "--recipes-dir", str(recipes_dir), "--out", str(out), "--device", "cpu",
                        "--no-progress", "--resume", "model.args.dropout=0.2"])
    assert code == 0
    ours, ref = load_file(str(out / "export" / "model.safetensors")), load_file(str(base_out / "export" / "model.safetensors"))
    assert ours.keys() == ref.keys()
    for key in ref:
        assert torch.equal(ours[key], ref[key]), key
    # The log is rewound to the checkpoint and replayed: the same losses, no duplicate steps.
    assert [(r["step"], r["loss"]) for r in _rows(out)] == [(r["step"], r["loss"]) for r in _rows(base_out)]


def test_torchrun_two_processes_match_one(recipes_dir: Path, tmp_path: Path) -> None:
    # Per-sample mean loss (no batch-level term, no dropout): 1 x 8 == 2 processes x 2 micro-batches x 2.
    common = ["task_args.anchor_weight=0"]
    _run(recipes_dir, tmp_path / "one", *common)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           str(REPO / "training" / "train.py"), "--recipe", "toy", "--recipes-dir", str(recipes_dir),
           "--out", str(tmp_path / "two"), "--device", "cpu", "--no-progress", *common, "grad_accum_steps=2"]
    proc = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    one = load_file(str(tmp_path / "one" / "export" / "model.safetensors"))
    two = load_file(str(tmp_path / "two" / "export" / "model.safetensors"))
    for key in one:
        torch.testing.assert_close(two[key], one[key], rtol=0, atol=1e-5)
    init = zoo.create_model("toy_mlp", pretrained=False).state_dict()
    assert any((one[k] - init[k]).abs().max() > 1e-2 for k in one)  # it did train
    losses_one = [r["loss"] for r in _rows(tmp_path / "one")]
    losses_two = [r["loss"] for r in _rows(tmp_path / "two")]  # averaged over ranks
    assert losses_two == pytest.approx(losses_one, rel=1e-5)


def test_bf16_on_cpu_with_clipping(recipes_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    recipe = resolve_recipe("toy", ["precision=bf16", "clip_grad_norm=0.05", "epochs=1", "log_every=1",
                                   "task_args.anchor_weight=0"], recipes_dir)
    result = train(recipe, TrainOptions(tmp_path, device="cpu", progress=False, tensorboard=True))
    if importlib.util.find_spec("tensorboard") is None:
        assert "tensorboard package is not installed" in caplog.text
    else:
        assert any((tmp_path / "tensorboard").iterdir())
    rows = _rows(tmp_path)
    assert result.step == 6 and len(rows) == 6
    assert all(r["loss"] == pytest.approx(r["fit"], rel=1e-6) for r in rows)  # loss == fit here, logged once
    assert any(r["grad_norm"] > 0.05 for r in rows)  # the norm before clipping is logged
    assert rows[-1]["loss"] < rows[0]["loss"]


def test_export_loads_through_hubconf(tmp_path: Path) -> None:
    name = "aml_student"  # a single-input CNN, cheap at 32 px
    recipe = dict(TOY, model={"name": name}, batch_size=2, epochs=1, max_steps_per_epoch=1,
                  optimizer={"name": "adam", "lr": 1e-3}, scheduler={"name": "none"},
                  task_args={"size": 4, "images": [3, 32, 32], "anchor_weight": 0})
    trainer = Trainer(validate(recipe), TrainOptions(tmp_path, device="cpu", progress=False))
    trainer.run()
    trained = unwrap(trainer.model).eval()
    hub = torch.hub.load(str(REPO), name, source="local", pretrained=str(tmp_path / "export"))
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(hub.encode_query(x), trained.encode_query(x), rtol=0, atol=0)
    _seed_all(TOY.get("seed", 0))  # the engine's initial weights: training changed them
    initial = zoo.create_model(name, pretrained=False).state_dict()
    assert any(not torch.equal(v, initial[k]) for k, v in hub.state_dict().items() if v.is_floating_point())


def test_task_state_must_be_loadable_without_code() -> None:
    import numpy as np

    from zoo.engine.checkpoint import check_plain
    from zoo.errors import CheckpointError

    state = {"bank": torch.zeros(3, 2), "assign": [1, 2], "meta": {"k": 3, "name": "x", "p": None}}
    assert check_plain(state, "task") is state
    with pytest.raises(CheckpointError, match=r"task\['bank'\]\['x'\]: a numpy.ndarray .*torch.from_numpy"):
        check_plain({"bank": {"x": np.zeros(2)}}, "task")


def test_evaluation_during_training(tmp_path: Path) -> None:
    """eval: {table, every_epochs} runs the evaluation engine on the current weights each epoch,
    logs its metrics, and leaves training untouched (same weights as without evaluation)."""
    from zoo.data.synthetic import make_vpr_lists

    data = tmp_path / "data"
    make_vpr_lists(data, "nordland", num_places=3)
    table = tmp_path / "toy_table.yaml"
    row = {"label": "student", "model": "aml_student.mobilenetv2_resnet101", "model_args": {"imsize": 40}, "dataset": "nordland",
           "data_subdir": "Nordland", "protocol": "vpr_recall", "metrics": ["R@1"]}
    other = {**row, "label": "other variant", "model": "aml_student.efficientnetb3_vgg16"}  # not evaluated
    table.write_text(yaml.safe_dump({"name": "toy_table", "title": "toy", "rows": [row, other]}))
    recipe = dict(TOY, model={"name": "aml_student"}, batch_size=2, epochs=2, max_steps_per_epoch=2,
                  optimizer={"name": "adam", "lr": 1e-3}, scheduler={"name": "none"}, log_every=1,
                  task_args={"size": 4, "images": [3, 32, 32], "anchor_weight": 0, "jitter": 0.1})
    with_eval = dict(recipe, eval={"table": str(table), "every_epochs": 1, "args": {"batch_size": 4, "num_workers": 0}})
    train(validate(with_eval), TrainOptions(tmp_path / "a", data_root=data, device="cpu", progress=False))
    train(validate(recipe), TrainOptions(tmp_path / "b", data_root=data, device="cpu", progress=False))
    rows = [json.loads(line) for line in (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()]
    evals = [r for r in rows if r["kind"] == "eval"]
    assert [(r["epoch"], r["step"]) for r in evals] == [(0, 2), (1, 4)]
    assert all(0 <= r["student/R@1"] <= 100 for r in evals)
    assert not any(key.startswith("other variant") for r in evals for key in r)
    assert (tmp_path / "a" / "eval" / "epoch-001").is_dir()
    a = load_file(str(tmp_path / "a" / "export" / "model.safetensors"))
    b = load_file(str(tmp_path / "b" / "export" / "model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)

    bad = dict(with_eval, eval={"table": str(table), "args": {"no_such_option": 1}})
    with pytest.raises(RecipeError, match="eval.args.no_such_option"):
        Trainer(validate(bad), TrainOptions(tmp_path / "c", data_root=data, device="cpu"))
    with pytest.raises(RecipeError, match="has no row for aml_student.teacher_vgg16"):
        Trainer(validate(dict(with_eval, model={"name": "aml_student", "variant": "teacher_vgg16"})),
                TrainOptions(tmp_path / "c", data_root=data, device="cpu"))
    with pytest.raises(DatasetError, match="Nordland under --data-root"):
        Trainer(validate(with_eval), TrainOptions(tmp_path / "c", data_root=tmp_path / "a", device="cpu"))
