"""Read DyCL training checkpoints (``dycl_20epoch.ckpt``) into ``dycl_resnet`` weights.

The file is ``torch.save`` of the dict written by DyCL's ``engine/checkpoint.py``: ``net_state``
(the network's state dict), optimiser/scheduler/criterion/scaler states, ``epoch``, ``config``
(an OmegaConf ``DictConfig``), ``command``, ``metrics`` and the RNG states of ``random``, numpy
and torch. It is read with the restricted unpickler: the OmegaConf object becomes an inert
placeholder (OmegaConf is never imported), only tensors of ``net_state`` are used.

``net_state`` keys (``RetrievalNet_two``; ``module.`` when saved from DataParallel):
``backbone.<i>.*`` is torchvision ``resnet50`` children without avgpool/fc
(0 conv1, 1 bn1, 4-7 layer1-4) and ``fc.{weight,bias}``; LayerNorm has no parameters.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from zoo.errors import CheckpointError
from zoo.io import load_checkpoint

_CHILDREN = {"0": "conv1", "1": "bn1", "4": "layer1", "5": "layer2", "6": "layer3", "7": "layer4"}


def net_state_to_zoo(state: dict[str, Any], source: str) -> dict[str, torch.Tensor]:
    """Rename ``RetrievalNet_two`` keys to ours (``backbone.conv1.*`` ..., ``fc.*``)."""
    out: dict[str, torch.Tensor] = {}
    unknown = []
    for key, value in state.items():
        key = key.removeprefix("module.")
        if not isinstance(value, torch.Tensor):
            unknown.append(key)
            continue
        parts = key.split(".", 2)
        if parts[0] == "backbone" and len(parts) == 3 and parts[1] in _CHILDREN:
            out[f"backbone.{_CHILDREN[parts[1]]}.{parts[2]}"] = value
        elif key in ("fc.weight", "fc.bias"):
            out[key] = value
        else:
            unknown.append(key)
    if unknown:
        hint = (" (backbone_1/2/3: the three-branch RetrievalNet, not the released resnet_ln)"
                if any(k.startswith("backbone_") for k in unknown) else "")
        raise CheckpointError(f"{source}: keys that are not DyCL resnet_ln's: {', '.join(unknown[:8])}{hint}")
    if "fc.weight" not in out or "backbone.conv1.weight" not in out:
        raise CheckpointError(f"{source}: net_state lacks fc.weight or backbone.0.weight; not a DyCL resnet_ln checkpoint")
    return out


def convert_dycl(path: str | Path, **_: Any) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """``(state_dict, config)`` from a DyCL checkpoint; ``config["variant"]`` = ``{"embed_dim": D}``."""
    obj = load_checkpoint(path)
    if not isinstance(obj, dict) or not isinstance(obj.get("net_state"), dict):
        keys = ", ".join(map(str, list(obj)[:8])) if isinstance(obj, dict) else type(obj).__name__
        raise CheckpointError(f"{path}: not a DyCL checkpoint (expected a dict with 'net_state'; found {keys})")
    state = net_state_to_zoo(obj["net_state"], str(path))
    embed_dim = int(state["fc.weight"].shape[0])
    if state["fc.weight"].shape[1] != 2048:
        raise CheckpointError(f"{path}: fc.weight has shape {tuple(state['fc.weight'].shape)}; resnet_ln projects 2048-d")
    epoch = obj.get("epoch")
    source = {"epoch": epoch} if isinstance(epoch, int) else {}
    return state, {"variant": {"embed_dim": embed_dim}, "variant_tag": f"resnet50_{embed_dim}", "source": source}
