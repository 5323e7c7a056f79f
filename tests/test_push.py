"""``python -m zoo push``: an exported folder goes up through huggingface_hub's real upload client
(to the loopback Hub) and comes back, pinned to the printed commit, as the same model."""

from __future__ import annotations

import hashlib
import re

import torch

import zoo
from zoo.__main__ import main
from zoo.export import export_pretrained


def test_push_then_load_the_pinned_commit(hub_server, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf_test")
    torch.manual_seed(0)
    model = zoo.create_model("dycl_resnet", pretrained=False)
    folder = export_pretrained(model, tmp_path / "export")

    assert main(["push", str(folder), "--repo", "me/dycl-test"]) == 0
    printed = capsys.readouterr().out
    commit, sha = re.search(r'HubFile\("me/dycl-test", "model.safetensors", "([0-9a-f]{40})", "([0-9a-f]{64})"\)',
                            printed).groups()
    assert sha == hashlib.sha256((folder / "model.safetensors").read_bytes()).hexdigest()
    assert ("POST", "/api/models/me/dycl-test/commit/main") in hub_server.requests

    again = zoo.create_model("dycl_resnet", pretrained=f"hf-hub:me/dycl-test@{commit}")
    for (name, a), b in zip(model.state_dict().items(), again.state_dict().values()):
        assert torch.equal(a, b), name


def test_push_refuses_a_folder_without_weights(tmp_path, capsys):
    assert main(["push", str(tmp_path), "--repo", "me/x"]) == 2
    assert "model.safetensors is missing" in capsys.readouterr().err
