"""Read MoCo v2 and UCDIR checkpoints into ``ucdir_moco`` weights.

Both are ``torch.save`` of a dict whose ``state_dict`` holds a MoCo-style model:

* MoCo v2 releases (``moco_v2_800ep_pretrain.pth.tar``, saved from DistributedDataParallel):
  ``module.encoder_q.<torchvision resnet key>`` with the MLP head ``module.encoder_q.fc.0.*`` and
  ``fc.2.*``; a full MoCo training checkpoint also has ``module.encoder_k.*`` and ``module.queue``.
* UCDIR models (``builder.py`` ``UCDIR.state_dict()``, with or without ``module.``): ``encoder_q.*``,
  ``encoder_k.*`` and the per-domain memory banks ``queue_A``/``queue_B`` (+ pointers).

UCDIR evaluates its key encoder, so ``encoder="auto"`` takes ``encoder_k`` from a UCDIR checkpoint
(one with ``queue_A``/``queue_B``); from a MoCo checkpoint it takes ``encoder_q``, which is what
UCDIR's ``--clean-model`` loads into both of its encoders (``main.py:169-184``). ``encoder="key"``
or ``"query"`` forces one. Memory banks and queues are dropped. The file is read with the
restricted unpickler (tensors and plain containers only).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from zoo.errors import CheckpointError
from zoo.io import load_checkpoint

_QUEUE_KEYS = {"queue", "queue_ptr", "queue_A", "queue_A_ptr", "queue_B", "queue_B_ptr"}
_ENCODERS = {"query": "encoder_q", "key": "encoder_k"}


def _arch_from(state: dict[str, torch.Tensor], source: str) -> str:
    """torchvision ResNet depth from the block counts of layer3 and the width of fc.0."""
    blocks3 = len({k.split(".")[1] for k in state if k.startswith("layer3.")})
    bottleneck = any(k.endswith("conv3.weight") for k in state)
    arch = {(False, 2): "resnet18", (False, 6): "resnet34", (True, 6): "resnet50", (True, 23): "resnet101"}.get(
        (bottleneck, blocks3))
    if arch is None:
        raise CheckpointError(f"{source}: a ResNet with {blocks3} blocks in layer3 is none of resnet18/34/50/101")
    return arch


def convert_ucdir(path: str | Path, encoder: str = "auto", **_: Any) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """``(state_dict, config)``; ``config["variant"]`` = ``{"arch": ..., "dim": ...}`` read from shapes."""
    if encoder not in ("auto", "key", "query"):
        raise CheckpointError(f"encoder={encoder!r}: expected auto, key or query")
    obj = load_checkpoint(path)
    state = obj.get("state_dict", obj) if isinstance(obj, dict) else None
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: not a MoCo/UCDIR checkpoint (expected a dict with 'state_dict', "
                              f"found {type(obj).__name__})")
    groups: dict[str, dict[str, torch.Tensor]] = {"encoder_q": {}, "encoder_k": {}}
    others = []
    for key, value in state.items():
        key = str(key).removeprefix("module.")
        head, _, rest = key.partition(".")
        if head in groups and isinstance(value, torch.Tensor):
            groups[head][rest] = value
        elif key not in _QUEUE_KEYS:
            others.append(key)
    if others:
        raise CheckpointError(f"{path}: keys that are not a MoCo/UCDIR model's: {', '.join(others[:8])}"
                              + (f" (+{len(others) - 8} more)" if len(others) > 8 else ""))
    is_ucdir = any(k.removeprefix("module.") in ("queue_A", "queue_B") for k in state)
    if encoder == "auto":
        encoder = "key" if is_ucdir and groups["encoder_k"] else "query"
    chosen = groups[_ENCODERS[encoder]]
    if not chosen:
        found = [k for k, v in groups.items() if v]
        raise CheckpointError(f"{path}: no {_ENCODERS[encoder]}.* weights (found: {', '.join(found) or 'none'})")
    if "fc.2.weight" not in chosen:
        raise CheckpointError(f"{path}: {_ENCODERS[encoder]} has no MLP head (fc.0/fc.2); a MoCo v1 checkpoint "
                              "(linear fc) does not fit UCDIR's MoCo v2 model")
    out = {f"encoder.{k}": v for k, v in chosen.items()}
    arch = _arch_from(chosen, str(path))
    dim = int(chosen["fc.2.weight"].shape[0])
    source: dict[str, Any] = {"encoder": _ENCODERS[encoder], "format": "ucdir" if is_ucdir else "moco"}
    if isinstance(obj, dict) and isinstance(obj.get("epoch"), int):
        source["epoch"] = obj["epoch"]
    return out, {"variant": {"arch": arch, "dim": dim}, "variant_tag": f"{arch}_{dim}", "source": source}
