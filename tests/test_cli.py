"""``python -m zoo``: readable table, clear errors with a non-zero exit and no traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import torch

from zoo.__main__ import main
from zoo.models import ENTRY_POINTS

REPO_ROOT = Path(__file__).resolve().parents[1]


def _run(*args: str, env_extra: dict | None = None) -> subprocess.CompletedProcess:
    import os
    env = {**os.environ, "HF_HUB_OFFLINE": "1", **(env_extra or {})}
    return subprocess.run([sys.executable, "-m", "zoo", *args], cwd=REPO_ROOT, capture_output=True, text=True,
                          env=env, timeout=900)


def test_list_prints_every_entry_point_as_a_table():
    result = _run("list")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split()[:5] == ["model", "variants", "with", "weights", "dim"]
    assert set(lines[1].replace(" ", "")) == {"-"}
    for name in ENTRY_POINTS:
        assert any(line.startswith(name) for line in lines), name


def test_list_variants_prints_every_card(capsys):
    import zoo

    assert main(["list", "--variants"]) == 0
    out = capsys.readouterr().out.splitlines()
    rows = {line.split()[0]: line for line in out[2:]}
    assert set(rows) == {f"{arch}.{tag}" for arch in ENTRY_POINTS for tag in zoo.get_model_info(arch).variants}
    assert "authors' release" in rows["dinov2_salad.8192_256"] and " salad " in rows["dinov2_salad.8192_256"]
    assert rows["dinov2_salad.2048_64"].split()[2] == "-"  # no published weights


def test_unknown_model_suggests_close_matches(capsys):
    assert main(["export", "dinov2_slad", "--out", "x"]) == 2
    err = capsys.readouterr().err
    assert "dinov2_salad" in err and "Traceback" not in err


def test_convert_missing_checkpoint_is_named(tmp_path, capsys):
    code = main(["convert", ENTRY_POINTS[0], "--checkpoint", str(tmp_path / "absent.ckpt"), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 2
    assert "absent.ckpt" in err
    assert not (tmp_path / "o").exists()


def test_convert_rejects_checkpoint_of_another_model(tmp_path, capsys):
    bogus = tmp_path / "other_model.pth"
    torch.save({"state_dict": {"classifier.weight": torch.zeros(3, 3)}}, bogus)
    for name in ENTRY_POINTS:
        code = main(["convert", name, "--checkpoint", str(bogus), "--out", str(tmp_path / name)])
        err = capsys.readouterr().err
        assert code == 2, name
        assert "other_model.pth" in err, err
        assert not (tmp_path / name / "model.safetensors").exists()


def test_readme_model_table_is_the_registry():
    from zoo.__main__ import markdown_model_table
    readme = (REPO_ROOT / "README.md").read_text()
    assert markdown_model_table() in readme, "regenerate the README table with `python -m zoo list --markdown`"
