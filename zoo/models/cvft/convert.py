"""CVFT TensorFlow checkpoint -> ``zoo.models.cvft.modeling.CVFT`` state dict.

The authors' ``model.ckpt`` holds 60 model variables (TF names on the left):

* ``VGG_grd/convX_Y/{weights,biases}``, ``VGG_sat/...``   -> ``grd_vgg.convX_Y``, ``sat_vgg.convX_Y`` (26 + 26)
* ``grd_conv/{weights,biases}``, ``sat_conv/...``          -> ``grd_conv``, ``sat_conv``
* ``ot_grd_branchot_conv/{weights,biases}``                -> ``transport.conv``
* ``ot_grd_branchot_fc/{weights,biases}``                  -> ``transport.fc``

Conv kernels are HWIO (-> OIHW); the FC weight is ``(in, out)`` (-> transposed). Adam slots,
``[train/]beta1_power``/``beta2_power`` and the scalar global step (``Variable`` / ``global_step``) are
training state and are skipped; anything else means the checkpoint is not CVFT's and fails.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

from zoo.errors import CheckpointError
from zoo.models.cvft.tf_checkpoint import TFCheckpointReader

_VGG_LAYERS = ("conv1_1", "conv1_2", "conv2_1", "conv2_2", "conv3_1", "conv3_2", "conv3_3",
               "conv4_1", "conv4_2", "conv4_3", "conv5_1", "conv5_2", "conv5_3")
# train_cvusa.py creates Adam under name_scope("train"): its powers are train/beta1_power, train/beta2_power
_TRAINING_STATE = re.compile(r"(.*/Adam(_\d+)?|(.*/)?beta[12]_power(_\d+)?|Variable(_\d+)?|global_step)$")


def variable_map() -> dict[str, tuple[str, str]]:
    """TF layer scope -> (our module path, kind) with kind ``conv`` or ``fc``."""
    mapping = {}
    for tf_stack, ours in (("VGG_grd", "grd_vgg"), ("VGG_sat", "sat_vgg")):
        for layer in _VGG_LAYERS:
            mapping[f"{tf_stack}/{layer}"] = (f"{ours}.{layer}", "conv")
    mapping.update({
        "grd_conv": ("grd_conv", "conv"),
        "sat_conv": ("sat_conv", "conv"),
        "ot_grd_branchot_conv": ("transport.conv", "conv"),
        "ot_grd_branchot_fc": ("transport.fc", "fc"),
    })
    return mapping


def convert_cvft_checkpoint(path: str | Path, **_: Any) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Read a CVFT checkpoint (prefix, ``.index`` or ``.data-*`` path) into our state dict and config.

    Raises:
        CheckpointError: missing files, unreadable index, or a variable set other than CVFT's
            (the message lists missing and unexpected variables).
    """
    reader = TFCheckpointReader(path)
    mapping = variable_map()
    expected = {f"{scope}/{leaf}" for scope in mapping for leaf in ("weights", "biases")}
    present = set(reader)
    model_vars = {name for name in present if not _TRAINING_STATE.match(name)}
    missing = sorted(expected - model_vars)
    unexpected = sorted(model_vars - expected)
    if missing or unexpected:
        def show(names: list[str]) -> str:
            return ", ".join(names[:10]) + (f" ... (+{len(names) - 10} more)" if len(names) > 10 else "")
        detail = "; ".join(f"{label} ({len(names)}): {show(names)}" for label, names in
                           (("missing", missing), ("unexpected", unexpected)) if names)
        raise CheckpointError(f"{reader.prefix}: not a CVFT checkpoint (expected the 60 variables of "
                              f"ot_net.CVFT); {detail}")

    state_dict: dict[str, torch.Tensor] = {}
    for scope, (ours, kind) in mapping.items():
        weight = reader.read(f"{scope}/weights")
        bias = reader.read(f"{scope}/biases")
        if weight.dtype != np.float32 or bias.dtype != np.float32:
            raise CheckpointError(f"{reader.prefix}: {scope} is {weight.dtype}/{bias.dtype}, expected float32")
        if kind == "conv":
            if weight.ndim != 4 or bias.shape != (weight.shape[3],):
                raise CheckpointError(f"{reader.prefix}: {scope}/weights has shape {weight.shape} and biases "
                                      f"{bias.shape}; expected an HWIO kernel and one bias per output channel")
            weight = weight.transpose(3, 2, 0, 1)
        else:
            if weight.ndim != 2 or bias.shape != (weight.shape[1],):
                raise CheckpointError(f"{reader.prefix}: {scope}/weights has shape {weight.shape} and biases "
                                      f"{bias.shape}; expected an (in, out) matrix and one bias per output")
            weight = weight.T
        state_dict[f"{ours}.weight"] = torch.from_numpy(np.ascontiguousarray(weight))
        state_dict[f"{ours}.bias"] = torch.from_numpy(np.ascontiguousarray(bias))

    positions, squared = state_dict["transport.fc.weight"].shape[1], state_dict["transport.fc.weight"].shape[0]
    if squared != positions * positions:
        raise CheckpointError(f"{reader.prefix}: ot_grd_branchot_fc maps {positions} -> {squared}; CVFT's cost "
                              f"matrix needs {positions} -> {positions * positions}")
    skipped = sorted(present - model_vars)
    config = {
        "variant": {},
        "source": {"format": "tensorflow-v2-checkpoint", "skipped_training_state": len(skipped)},
    }
    return state_dict, config
