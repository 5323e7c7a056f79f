"""A real ``python -m zoo`` process for ``export`` and ``push``, whose other tests call ``main(argv)``
in this process. (``list``, ``convert``, ``retrieve``, ``train`` and ``eval`` run as a real process in
test_cli.py, tests/models/salad/test_convert.py, test_retrieve.py, tests/smoke_runs.py and
tests/engine/test_evaluate.py.)"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import torch

import zoo
from zoo.export import export_pretrained
from zoo.hub import save_pretrained

REPO = Path(__file__).resolve().parents[1]
NAME = "aml_student.mobilenetv2_vgg16"  # a 3.4M-parameter student: cheap to build and write


def _zoo(*args: str, cwd: Path, **env: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "2", "PYTHONPATH": str(REPO), **env}
    return subprocess.run([sys.executable, "-m", "zoo", *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=900)


def test_export_process_writes_the_weights_it_was_given(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = zoo.create_model(NAME, pretrained=False)
    save_pretrained(tmp_path / "weights", model.state_dict(), dict(model.zoo_config))
    proc = _zoo("export", NAME, "--pretrained", "weights", "--out", "release", cwd=tmp_path, HF_HUB_OFFLINE="1")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"exported {NAME} to release" in proc.stdout
    assert {p.name for p in (tmp_path / "release").iterdir()} == {"model.safetensors", "config.json", "README.md"}
    assert json.loads((tmp_path / "release" / "config.json").read_text())["architecture"] == "aml_student"
    again = zoo.create_model(NAME, pretrained=str(tmp_path / "release"))
    for (key, a), b in zip(model.state_dict().items(), again.state_dict().values()):
        assert torch.equal(a, b), key


def test_push_process_uploads_a_folder_that_loads_back(hub_server, tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = zoo.create_model(NAME, pretrained=False)
    folder = export_pretrained(model, tmp_path / "export")
    proc = _zoo("push", str(folder), "--repo", "me/student", cwd=tmp_path, HF_ENDPOINT=hub_server.url, HF_TOKEN="hf_test",
                HF_HUB_DISABLE_XET="1")  # the loopback Hub speaks Git LFS, not Xet
    assert proc.returncode == 0, proc.stderr[-3000:]
    commit = re.search(r'HubFile\("me/student", "model.safetensors", "([0-9a-f]{40})"', proc.stdout).group(1)
    assert ("POST", "/api/models/me/student/commit/main") in hub_server.requests
    again = zoo.create_model(NAME, pretrained=f"hf-hub:me/student@{commit}")
    for (key, a), b in zip(model.state_dict().items(), again.state_dict().values()):
        assert torch.equal(a, b), key
