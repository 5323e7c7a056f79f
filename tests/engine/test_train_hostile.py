"""Training never silently replaces an earlier run; --resume survives a truncated last checkpoint;
recipe values a task or the output folder cannot take are one line, exit 2."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest
import torch
import yaml

from tests.engine.toy_task import train_cli  # also registers the toy model and task
from zoo.engine.checkpoint import list_checkpoints, save_checkpoint
from zoo.engine.recipes import resolve_recipe
from zoo.engine.train import Trainer, TrainOptions
from zoo.errors import InputError

TOY = {
    "name": "toy", "task": "toy", "imports": ["tests.engine.toy_task"], "model": {"name": "toy_mlp"},
    "batch_size": 8, "epochs": 1, "optimizer": {"name": "sgd", "lr": 0.1}, "checkpoint_every": 2,
    "keep_checkpoints": 3, "task_args": {"size": 48},
}  # 6 steps, checkpoints at steps 2, 4, 6


@pytest.fixture()
def recipes(tmp_path: Path) -> Path:
    folder = tmp_path / "recipes"
    folder.mkdir()
    (folder / "toy.yaml").write_text(yaml.safe_dump(TOY))
    return folder


def _trainer(recipes: Path, out: Path, *overrides: str, **options) -> Trainer:
    return Trainer(resolve_recipe("toy", overrides, recipes),
                   TrainOptions(out_dir=out, device="cpu", progress=False, **options))


def _cli(recipes: Path, out: Path, *extra: str) -> int:
    return train_cli().main(["--recipe", "toy", "--recipes-dir", str(recipes), "--out", str(out), "--device", "cpu",
                             "--no-progress", *extra])


def test_an_earlier_run_without_checkpoints_is_not_replaced(recipes, tmp_path, capsys):
    out = tmp_path / "run"
    _trainer(recipes, out).run()
    export = (out / "export" / "model.safetensors").read_bytes()
    for path in list_checkpoints(out / "checkpoints"):
        path.unlink()
    (out / "checkpoints").rmdir()

    assert _cli(recipes, out, "optimizer.lr=0.5") == 2
    err = capsys.readouterr().err
    assert "already holds export/, metrics.jsonl, metrics.csv, recipe.yaml of an earlier run" in err
    assert "--overwrite" in err and len(err.strip().splitlines()) == 1
    # --resume has no checkpoint to continue from: starting over would replace the export too.
    assert _cli(recipes, out, "--resume", "optimizer.lr=0.5") == 2
    assert "holds no checkpoint to continue from" in capsys.readouterr().err
    assert (out / "export" / "model.safetensors").read_bytes() == export

    assert _cli(recipes, out, "--overwrite", "optimizer.lr=0.5") == 0
    assert "--overwrite: removed export, metrics.jsonl, metrics.csv, recipe.yaml" in capsys.readouterr().out
    assert (out / "export" / "model.safetensors").read_bytes() != export
    assert yaml.safe_load((out / "recipe.yaml").read_text())["optimizer"]["lr"] == 0.5
    with pytest.raises(InputError, match="pass only one"):
        _trainer(recipes, out, resume=True, overwrite=True)


def test_resume_falls_back_past_a_truncated_last_checkpoint(recipes, tmp_path, caplog):
    out = tmp_path / "run"
    _trainer(recipes, out).run()
    *_, before, last = list_checkpoints(out / "checkpoints")
    last.write_bytes(last.read_bytes()[: last.stat().st_size // 2])  # a write cut off by a crash
    with caplog.at_level(logging.WARNING, logger="zoo.train"):
        trainer = _trainer(recipes, out, resume=True)
    assert trainer.resume_from == before
    log = caplog.text
    assert f"{last.name} cannot be read" in log and f"continuing from {before}" in log
    trainer.run()
    assert (out / "export" / "model.safetensors").is_file()


def test_task_args_that_do_not_fit_are_one_line(tmp_path, capsys):
    (tmp_path / "DA_Campus").mkdir()
    base = ["--recipe", "dycl-smoke", "--data-root", str(tmp_path), "--out", str(tmp_path / "out"), "--device", "cpu"]
    for override, fragment in [("task_args.bogus=1", "unknown key 'task_args.bogus'. Allowed keys: warmup_epochs"),
                               ("task_args.warmup_epochs=[1,2]", "task_args.warmup_epochs: expected an integer >= 0, got [1, 2]")]:
        assert train_cli().main([*base, override]) == 2
        err = capsys.readouterr().err
        assert err.startswith("python -m zoo train: error: ") and fragment in err, err
        assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_output_folder_is_checked_before_any_work(recipes, tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    assert _cli(recipes, tmp_path / "file") == 2
    assert "exists and is not a folder" in capsys.readouterr().err
    data = tmp_path / "data"
    (data / "toyset").mkdir(parents=True)
    (recipes / "toy-data.yaml").write_text(yaml.safe_dump({**TOY, "name": "toy-data", "data": {"subdir": "toyset"}}))
    code = train_cli().main(["--recipe", "toy-data", "--recipes-dir", str(recipes), "--data-root", str(data),
                             "--out", str(data / "toyset" / "run"), "--device", "cpu"])
    assert code == 2
    assert "inside the data set folder" in capsys.readouterr().err


def test_checkpoints_follow_the_umask(tmp_path):
    old = os.umask(0o027)
    try:
        saved = save_checkpoint({"w": torch.ones(1)}, tmp_path / "ckpt", step=1, keep=2)
    finally:
        os.umask(old)
    assert saved.stat().st_mode & 0o777 == 0o640
    assert [p.name for p in (tmp_path / "ckpt").iterdir()] == [saved.name]
