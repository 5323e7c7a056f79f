"""CVFT checkpoint conversion: the 60 TF variables -> our state dict, optimiser slots skipped,
other variable sets refused. Tiny tensors here; tests/models/test_cvft.py converts a full-size one."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from tests.fixtures.tf_checkpoint import write_tf_checkpoint
from zoo.errors import CheckpointError
from zoo.models.cvft.convert import convert_cvft_checkpoint, variable_map


def tiny_variables(seed: int = 0) -> dict[str, np.ndarray]:
    """CVFT's variable names with small shapes (the converter reads layouts, not sizes)."""
    rng = np.random.default_rng(seed)
    out = {}
    for scope, (_, kind) in variable_map().items():
        if kind == "conv":
            out[f"{scope}/weights"] = rng.standard_normal((3, 3, 2, 5)).astype(np.float32)
            out[f"{scope}/biases"] = rng.standard_normal(5).astype(np.float32)
        else:
            out[f"{scope}/weights"] = rng.standard_normal((4, 16)).astype(np.float32)
            out[f"{scope}/biases"] = rng.standard_normal(16).astype(np.float32)
    return out


def test_sixty_variables_mapped_with_layouts(tmp_path: Path) -> None:
    variables = tiny_variables()
    assert len(variables) == 60
    training_state = {f"{name}/Adam": np.zeros_like(v) for name, v in list(variables.items())[:5]}
    training_state.update({f"{name}/Adam_1": np.zeros_like(v) for name, v in list(variables.items())[:5]})
    # as train_cvusa.py saves them: Adam under name_scope("train"), global step tf.Variable(0) named "Variable"
    training_state.update({"train/beta1_power": np.array(0.9, np.float32), "train/beta2_power": np.array(0.99, np.float32),
                           "Variable": np.array(100, np.int32)})
    prefix = write_tf_checkpoint(tmp_path / "model.ckpt", {**variables, **training_state})
    state_dict, config = convert_cvft_checkpoint(prefix)
    assert len(state_dict) == 60
    assert config["source"]["skipped_training_state"] == len(training_state)
    hwio = variables["VGG_sat/conv4_2/weights"]
    torch.testing.assert_close(state_dict["sat_vgg.conv4_2.weight"], torch.from_numpy(hwio.transpose(3, 2, 0, 1)))
    assert state_dict["sat_vgg.conv4_2.weight"][1, 0, 2, 1] == hwio[2, 1, 0, 1]
    torch.testing.assert_close(state_dict["grd_vgg.conv1_1.bias"], torch.from_numpy(variables["VGG_grd/conv1_1/biases"]))
    torch.testing.assert_close(state_dict["transport.fc.weight"], torch.from_numpy(variables["ot_grd_branchot_fc/weights"].T))
    torch.testing.assert_close(state_dict["transport.conv.weight"],
                               torch.from_numpy(variables["ot_grd_branchot_conv/weights"].transpose(3, 2, 0, 1)))
    assert {k.rsplit(".", 1)[0] for k in state_dict} >= {"grd_conv", "sat_conv", "transport.conv", "transport.fc"}


def test_other_variable_sets_fail_clearly(tmp_path: Path) -> None:
    variables = tiny_variables()
    extra = write_tf_checkpoint(tmp_path / "extra.ckpt", {**variables, "CVM/netvlad/centers": np.zeros(3, np.float32)})
    with pytest.raises(CheckpointError, match=r"not a CVFT checkpoint.*unexpected \(1\): CVM/netvlad/centers"):
        convert_cvft_checkpoint(extra)
    del variables["ot_grd_branchot_fc/weights"]
    missing = write_tf_checkpoint(tmp_path / "missing.ckpt", variables)
    with pytest.raises(CheckpointError, match=r"missing \(1\): ot_grd_branchot_fc/weights"):
        convert_cvft_checkpoint(missing)


def test_cli_convert_refuses_a_checkpoint_that_does_not_fit(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    # Tiny shapes convert, but `python -m zoo convert` loads them strictly into the real model first.
    from zoo.__main__ import main

    prefix = write_tf_checkpoint(tmp_path / "model.ckpt", tiny_variables())
    assert main(["convert", "cvft_vgg", "--checkpoint", str(prefix), "--out", str(tmp_path / "out")]) == 2
    assert "shape mismatches" in capsys.readouterr().err
    assert not (tmp_path / "out" / "model.safetensors").exists()
