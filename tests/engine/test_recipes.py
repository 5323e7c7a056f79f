"""Recipes: schema, overrides, and the clear errors raised before any work starts; schedules vs torch's."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

from tests.engine.toy_task import train_cli  # also registers the toy model and task
from zoo.engine.recipes import RecipeError, available, recipe_table, resolve_recipe, validate
from zoo.engine.schedules import Schedule
from zoo.engine.train import Trainer, TrainOptions
from zoo.errors import DatasetError, InputError

REPO = Path(__file__).resolve().parents[2]
TOY = {
    "name": "toy", "task": "toy", "imports": ["tests.engine.toy_task"], "model": {"name": "toy_mlp"},
    "batch_size": 8, "epochs": 1, "optimizer": {"name": "adamw", "lr": "6e-5"},
}


@pytest.fixture()
def recipes(tmp_path: Path) -> Path:
    folder = tmp_path / "recipes"
    folder.mkdir()
    (folder / "toy.yaml").write_text(yaml.safe_dump(TOY))
    (folder / "toy-data.yaml").write_text(yaml.safe_dump({**TOY, "name": "toy-data", "data": {"subdir": "toyset"}}))
    return folder


def test_defaults_and_yaml_typed_overrides(recipes: Path) -> None:
    r = resolve_recipe("toy", ["optimizer.lr=1e-4", "epochs=3", "task_args.sampler.k=4", "eval=null",
                               "scheduler.name=step", "scheduler.step_size=2", "model.args.dropout=0.1"], recipes)
    assert r["optimizer"]["lr"] == 1e-4 and isinstance(r["optimizer"]["lr"], float)
    assert r["epochs"] == 3 and r["task_args"] == {"sampler": {"k": 4}} and r["model"]["args"] == {"dropout": 0.1}
    assert r["scheduler"] == {"name": "step", "per": "step", "warmup_steps": 0, "warmup_epochs": 0,
                              "warmup_start_factor": 0.001, "step_size": 2, "gamma": 0.1}
    assert r["precision"] == "fp32" and r["grad_accum_steps"] == 1 and r["eval"] is None
    assert resolve_recipe("toy", [], recipes)["optimizer"]["lr"] == 6e-5  # "6e-5" in YAML is a string
    # YAML reads 512_32 as the integer 51232: a string field keeps the text as written
    assert resolve_recipe("toy", ["model.variant=512_32"], recipes)["model"]["variant"] == "512_32"
    with pytest.raises(RecipeError, match="model.variant: expected a string, got the number 51232; quote it"):
        validate({**TOY, "model": {"name": "toy_mlp", "variant": 512_32}})


@pytest.mark.parametrize("overrides, message", [
    (["optimizer.lrr=1"], "unknown recipe key 'optimizer.lrr'. Did you mean lr"),
    (["bach_size=4"], "unknown recipe key 'bach_size'. Did you mean batch_size"),
    (["epochs=two"], "epochs: expected an integer >= 1, got 'two'"),
    (["epochs=0"], "epochs: expected an integer >= 1, got 0"),
    (["optimizer.lr=-1"], "optimizer.lr: expected a number > 0"),
    (["precision=fp8"], "precision: expected one of fp32, bf16, fp16, got 'fp8'"),
    (["optimizer.name=adamm"], "Did you mean adam"),
    (["epochs.x=1"], "epochs is not a mapping"),
    (["epochs"], "expected key=value"),
    (["scheduler.gamma=0.5"], "scheduler.gamma is not a parameter of scheduler 'none'"),
    (["scheduler.name=exponential"], "scheduler.gamma: required by scheduler 'exponential'"),
    (["optimizer.momentum=0.9"], "momentum/nesterov apply to sgd only"),
    (["optimizer.betas=[0.9]"], "optimizer.betas: expected a list of 2 values"),
])
def test_bad_overrides(recipes: Path, overrides: list[str], message: str) -> None:
    with pytest.raises(RecipeError, match=None) as err:
        resolve_recipe("toy", overrides, recipes)
    assert message in str(err.value)


def test_bad_recipe_files(recipes: Path) -> None:
    with pytest.raises(RecipeError, match=r"unknown recipe 'toi'\. Did you mean toy"):
        resolve_recipe("toi", [], recipes)
    (recipes / "broken.yaml").write_text("name: broken\ntask: [unclosed\n")
    with pytest.raises(RecipeError, match="broken.yaml: not valid YAML"):
        resolve_recipe("broken", [], recipes)
    (recipes / "other.yaml").write_text(yaml.safe_dump({**TOY, "name": "something"}))
    with pytest.raises(RecipeError, match="differs from the file name 'other'"):
        resolve_recipe("other", [], recipes)
    (recipes / "typo.yaml").write_text(yaml.safe_dump({**TOY, "name": "typo", "optimiser": {}}))
    with pytest.raises(RecipeError, match="unknown recipe key 'optimiser'. Did you mean optimizer"):
        resolve_recipe("typo", [], recipes)
    missing = {k: v for k, v in TOY.items() if k != "task"}
    with pytest.raises(RecipeError, match="task: required key is missing"):
        validate({**missing, "name": "x"})
    table = recipe_table(recipes)
    assert "toy " in table and "typo" in table and "INVALID" in table
    assert set(available(recipes)) == {"toy", "toy-data", "broken", "other", "typo"}


def test_checks_before_any_work(recipes: Path, tmp_path: Path) -> None:
    def trainer(name: str, *overrides: str, **options) -> Trainer:
        opts = {"out_dir": tmp_path / "out", "device": "cpu", "progress": False, **options}
        return Trainer(resolve_recipe(name, overrides, recipes), TrainOptions(**opts))

    with pytest.raises(DatasetError, match="trains on 'toyset': pass --data-root"):
        trainer("toy-data")
    with pytest.raises(DatasetError, match="--data-root .*nowhere: no such directory"):
        trainer("toy-data", data_root=tmp_path / "nowhere")
    with pytest.raises(DatasetError, match="toyset: no such directory"):
        trainer("toy-data", data_root=tmp_path)
    (tmp_path / "toyset").mkdir()
    assert trainer("toy-data", data_root=tmp_path).task.data_root == tmp_path / "toyset"
    with pytest.raises(RecipeError, match="unknown training task 'toyy'. Did you mean toy"):
        trainer("toy", "task=toyy")
    with pytest.raises(RecipeError, match="model: unknown model 'toy_mpl'. Did you mean toy_mlp"):
        trainer("toy", "model.name=toy_mpl")
    with pytest.raises(RecipeError, match="imports: cannot import 'no_such_module'"):
        trainer("toy", "imports=[no_such_module]")
    with pytest.raises(RecipeError, match="fp16 needs a CUDA device"):
        trainer("toy", "precision=fp16")
    with pytest.raises(RecipeError, match="global batch 8 does not divide into 1 process.* x 3 accumulation"):
        trainer("toy", "grad_accum_steps=3")
    assert not (tmp_path / "out").exists()  # nothing was written by any of them

    trainer("toy").run()
    with pytest.raises(InputError, match="already holds checkpoints.*--resume"):
        trainer("toy")
    with pytest.raises(RecipeError, match=r"recipe differs .*batch_size: 8 in the checkpoint vs 4 now"):
        trainer("toy", "batch_size=4", resume=True)
    trainer("toy", "log_every=1", resume=True)  # logging settings may change on resume


def test_cli_errors_are_one_line(recipes: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    cli = train_cli()
    base = ["--recipes-dir", str(recipes), "--out", str(tmp_path / "o"), "--device", "cpu"]
    for argv, message in [
        (["--recipe", "tyo"], "unknown recipe 'tyo'. Did you mean toy"),
        (["--recipe", "toy", "optimizer.lrr=1"], "unknown recipe key 'optimizer.lrr'"),
        (["--recipe", "toy-data"], "pass --data-root"),
        (["--recipe", "toy-data", "--data-root", str(tmp_path / "none")], "no such directory"),
    ]:
        assert cli.main(base + argv) == 2
        err = capsys.readouterr().err
        assert err.startswith("python -m zoo train: error: ") and message in err and "Traceback" not in err
        assert len(err.strip().splitlines()) == 1, err
    assert cli.main(base + ["--recipe", "toy", "--check", "epochs=5"]) == 0
    out = capsys.readouterr().out
    assert "epochs: 5" in out and "# OK: 8 item(s) per process" in out and not (tmp_path / "o").exists()
    assert cli.main(["--list", "--recipes-dir", str(recipes)]) == 0
    assert "toy-data" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    assert "--resume" in capsys.readouterr().out


def _torch_lrs(make, steps: int) -> list[float]:
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    sched = make(opt)
    lrs = []
    for _ in range(steps):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return lrs


@pytest.mark.parametrize("spec, make", [
    ({"name": "linear", "start_factor": 1.0, "end_factor": 0.2, "total_iters": 7},
     lambda o: torch.optim.lr_scheduler.LinearLR(o, 1.0, 0.2, total_iters=7)),
    ({"name": "cosine", "total_iters": 9, "eta_min": 0.01},
     lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=9, eta_min=0.01)),
    ({"name": "exponential", "gamma": 0.9}, lambda o: torch.optim.lr_scheduler.ExponentialLR(o, 0.9)),
    ({"name": "step", "step_size": 3, "gamma": 0.5}, lambda o: torch.optim.lr_scheduler.StepLR(o, 3, 0.5)),
    ({"name": "multistep", "milestones": [2, 5], "gamma": 0.1},
     lambda o: torch.optim.lr_scheduler.MultiStepLR(o, [2, 5], 0.1)),
])
@pytest.mark.parametrize("per", ["step", "epoch"])
def test_schedules_match_torch(spec: dict, make, per: str) -> None:
    steps_per_epoch = 3 if per == "epoch" else 1
    expected = _torch_lrs(make, 12)
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    schedule = Schedule(opt, validate({**TOY, "scheduler": {**spec, "per": per}})["scheduler"], steps_per_epoch, 12)
    ours = [schedule.apply(step, step // steps_per_epoch)[0] for step in range(12 * steps_per_epoch)]
    assert ours[::steps_per_epoch] == pytest.approx(expected, rel=1e-9, abs=1e-12)


def test_warmup_and_group_scales() -> None:
    model = torch.nn.Linear(2, 2)
    from zoo.engine.schedules import build_optimizer
    opt = build_optimizer({"name": "adamw", "lr": 0.1, "weight_decay": 0.0},
                          [{"params": [model.weight]}, {"params": [model.bias], "lr_scale": 10, "weight_decay": 0}],
                          model)
    schedule = Schedule(opt, {"name": "none", "warmup_steps": 4, "warmup_start_factor": 0.0}, 10, 1)
    lrs = [lr for step in (0, 2, 4, 9) for lr in schedule.apply(step, 0)]
    assert lrs == pytest.approx([0, 0, 0.05, 0.5, 0.1, 1.0, 0.1, 1.0])
