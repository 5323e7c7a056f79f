"""Read SALAD checkpoints (serizba/salad, and CliqueMining's which use the same model) into our state dict.

Accepted layouts:

* the release ``dino_salad.ckpt``: a plain state dict of the Lightning ``VPRModel`` with keys
  ``backbone.model.<DINOv2 key>`` and ``aggregator.<SALAD key>``;
* a Lightning training checkpoint ``{"state_dict": {...}, "optimizer_states": ..., ...}`` of
  the same model (read with the restricted unpickler: callbacks and hyper-parameter objects are
  skipped, never imported);
* either of these with a ``module.`` (DataParallel/DDP) or ``model.`` prefix on every key.

Our keys: ``backbone.<timm key>`` (equal to DINOv2's) and ``aggregator.<same names>``. DINOv2's
``mask_token`` (used only by its masked-image pre-training) is dropped. The variant (m, l, g)
and the number of ViT blocks are read from the tensor shapes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from zoo.errors import CheckpointError
from zoo.io import load_checkpoint, tensors_only

_BACKBONE = "backbone.model."
_AGGREGATOR = "aggregator."
_DROPPED = ("backbone.model.mask_token",)
# Shapes the SALAD aggregator must have (key -> what it determines).
_REQUIRED = ("aggregator.score.3.weight", "aggregator.cluster_features.3.weight",
             "aggregator.token_features.2.weight", "aggregator.dust_bin", "backbone.model.pos_embed")


def _find_state_dict(obj: Any, source: str) -> dict[str, torch.Tensor]:
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not obj:
        raise CheckpointError(f"{source}: expected a state dict or a Lightning checkpoint with 'state_dict', "
                              f"got {type(obj).__name__}")
    state = {k: v for k, v in tensors_only(obj).items() if isinstance(v, torch.Tensor)}
    for prefix in ("module.", "model."):
        if state and all(k.startswith(prefix) for k in state):
            state = {k[len(prefix):]: v for k, v in state.items()}
    return state


def salad_state_dict_to_zoo(state: dict[str, torch.Tensor], source: str = "<state dict>"
                            ) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Rename an original ``VPRModel`` state dict to ours and read the variant from its shapes."""
    missing = [k for k in _REQUIRED if k not in state]
    if missing:
        raise CheckpointError(
            f"{source}: not a DINOv2 SALAD checkpoint — missing {', '.join(missing)} "
            f"(found keys such as {', '.join(list(state)[:5])})")
    out: dict[str, torch.Tensor] = {}
    unknown = []
    for key, value in state.items():
        if key in _DROPPED:
            continue
        if key.startswith(_BACKBONE):
            out["backbone." + key[len(_BACKBONE):]] = value
        elif key.startswith(_AGGREGATOR):
            out[key] = value
        else:
            unknown.append(key)
    if unknown:
        raise CheckpointError(f"{source}: keys outside backbone.model.* and aggregator.*: {', '.join(unknown[:10])}")
    depth = 1 + max((int(k.split(".")[3]) for k in state if k.startswith(_BACKBONE + "blocks.")), default=-1)
    if state["backbone.model.pos_embed"].shape[-1] != 768 or depth == 0:
        raise CheckpointError(f"{source}: backbone is not a DINOv2 ViT-B/14 "
                              f"(embedding width {state['backbone.model.pos_embed'].shape[-1]}, {depth} blocks)")
    variant = {
        "num_clusters": int(state["aggregator.score.3.weight"].shape[0]),
        "cluster_dim": int(state["aggregator.cluster_features.3.weight"].shape[0]),
        "token_dim": int(state["aggregator.token_features.2.weight"].shape[0]),
    }
    if depth != 12:
        # Only reduced test models are shallower; train at most all of their blocks.
        variant["depth"] = depth
        variant["num_trainable_blocks"] = min(4, depth)
    tag = f"{variant['num_clusters'] * variant['cluster_dim']}_{variant['token_dim']}"
    config = {
        "variant": variant,
        "variant_tag": tag,
    }
    return out, config


def convert_salad_checkpoint(path: str | Path, **_: Any) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """``python -m zoo convert dinov2_salad --checkpoint FILE``: original checkpoint -> (state dict, config)."""
    path = Path(path)
    state = _find_state_dict(load_checkpoint(path), str(path))
    return salad_state_dict_to_zoo(state, str(path))
