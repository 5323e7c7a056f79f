"""SALAD converter: release state dict, Lightning checkpoints, variants from shapes, wrong checkpoints."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
import types
from pathlib import Path

import pytest
import torch

import zoo
from zoo.errors import CheckpointError
from zoo.hub import load_pretrained_dir
from zoo.models.salad.convert import convert_salad_checkpoint

REPO = Path(__file__).resolve().parents[3]
VARIANTS = {"8192_256": (64, 128, 256), "2048_64": (32, 64, 64), "512_32": (16, 32, 32)}


def _original_layout(tag: str, depth: int = 1) -> tuple[torch.nn.Module, dict[str, torch.Tensor]]:
    """Our model with random weights, and its state dict under the original VPRModel's key names."""
    model = zoo.create_model("dinov2_salad", pretrained=False, variant=tag, depth=depth,
                             num_trainable_blocks=depth).eval()
    state = {("backbone.model." + k[len("backbone."):] if k.startswith("backbone.") else k): v.clone()
             for k, v in model.state_dict().items()}
    state["backbone.model.mask_token"] = torch.randn(1, 768)
    return model, state


@pytest.mark.parametrize("tag", list(VARIANTS))
def test_release_state_dict_converts_with_variant_from_shapes(tag: str, tmp_path: Path) -> None:
    model, state = _original_layout(tag)
    path = tmp_path / "dino_salad.ckpt"
    torch.save(state, path)
    converted, config = convert_salad_checkpoint(path)
    m, dim, g = VARIANTS[tag]
    assert config["variant_tag"] == tag
    assert config["variant"] == {"num_clusters": m, "cluster_dim": dim, "token_dim": g,
                                 "depth": 1, "num_trainable_blocks": 1}
    assert "backbone.mask_token" not in converted and "backbone.model.mask_token" not in converted
    assert converted.keys() == model.state_dict().keys()
    for key, value in model.state_dict().items():
        assert torch.equal(converted[key], value), key


class _HParams(types.SimpleNamespace):
    """Stands in for Lightning's AttributeDict / callback objects inside a training checkpoint."""


def test_lightning_checkpoint_with_foreign_objects_and_prefix(tmp_path: Path) -> None:
    model, state = _original_layout("512_32", depth=2)
    ckpt = {"epoch": 3, "global_step": 4000, "hyper_parameters": _HParams(lr=6e-5),
            "state_dict": {"module." + k: v for k, v in state.items()},
            "optimizer_states": [{"state": {}, "param_groups": []}]}
    path = tmp_path / "last.ckpt"
    # The restricted unpickler never imports _HParams' module; it keeps an inert placeholder.
    torch.save(ckpt, path, pickle_protocol=pickle.HIGHEST_PROTOCOL)
    converted, config = convert_salad_checkpoint(path)
    assert config["variant"]["depth"] == 2 and config["variant_tag"] == "512_32"
    assert converted.keys() == model.state_dict().keys()


def test_checkpoint_of_another_model_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "resnet.pth"
    torch.save({"conv1.weight": torch.zeros(64, 3, 7, 7), "fc.weight": torch.zeros(10, 2048)}, path)
    with pytest.raises(CheckpointError, match=r"resnet\.pth.*not a DINOv2 SALAD checkpoint.*aggregator\.score\.3\.weight"):
        convert_salad_checkpoint(path)
    _, state = _original_layout("512_32")
    state["head.weight"] = torch.zeros(2, 2)
    torch.save(state, path)
    with pytest.raises(CheckpointError, match="head.weight"):
        convert_salad_checkpoint(path)


def test_cli_convert_writes_a_loadable_directory(tmp_path: Path) -> None:
    """A real ``python -m zoo convert`` process (the other command-line tests call main() in-process)."""
    model, state = _original_layout("2048_64")
    path = tmp_path / "dino_salad.ckpt"
    torch.save(state, path)
    out = tmp_path / "converted"
    env = {**os.environ, "OMP_NUM_THREADS": "2", "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "-m", "zoo", "convert", "dinov2_salad", "--checkpoint", str(path), "--out", str(out)],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"wrote {out / 'model.safetensors'}" in proc.stdout
    _, config = load_pretrained_dir(out)
    assert config["variant_tag"] == "2048_64" and config["source"]["file"] == "dino_salad.ckpt"
    loaded = zoo.create_model("dinov2_salad", pretrained=str(out))
    x = torch.randn(1, 3, 126, 126)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))
