"""Read AML student checkpoints, their whitening files and cirtorch teacher checkpoints.

Formats (all pickles, read with the restricted unpickler: only tensors, numpy arrays and plain
values are kept):

* cirtorch / AML network: ``{"meta": {"architecture", "pooling", ..., ["Lw"]}, "state_dict": {...}}``
  with keys ``features.<i>.*`` (the trunk as a flat ``nn.Sequential``) and ``pool.p``. A teacher's
  ``meta["Lw"]["retrieval-SfM-120k"]`` holds ``{"ss": {"m", "P"}, "ms": {"m", "P"}}`` (numpy).
* AML whitening file (``<student>_whitening.pth``): ``{"m": (D, 1), "P": (D, D)}`` numpy arrays.

``features`` indices -> our keys:

* ResNet-101 teacher: 0 conv1, 1 bn1, 4-7 layer1-4 -> ``teacher.backbone.<name>``;
  VGG16 teacher: ``features.<i>`` -> ``teacher.backbone.<i>``.
* MobileNetV2 student: ``features.0.<i>`` (torchvision ``mobilenet_v2().features``) ->
  ``student.backbone.<i>``; ``features.1`` (1x1 conv) -> ``student.proj``.
* EfficientNet-B3 student (timm ``tf_efficientnet_b3`` children): with the timm of 2020 that
  AML used, 0 conv_stem, 1 bn1, (2 act1), 3 blocks, 4 conv_head, 5 bn2, (6 act2), 7 1x1 conv;
  with timm >= 0.5 (activations folded into the BN) 0, 1, 2, 3, 4 and 5 conv. Both are accepted.
  AML's ``efficientnet_b3_new`` (the efficientnet_pytorch package, static 'same' padding for
  300 px) is refused with a clear error.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from zoo.errors import CheckpointError
from zoo.io import load_checkpoint, tensors_only

WHITENING_SET = "retrieval-SfM-120k"
_RESNET = {"0": "conv1", "1": "bn1", "4": "layer1", "5": "layer2", "6": "layer3", "7": "layer4"}
_EFFNET_OLD = {"0": "net.conv_stem", "1": "net.bn1", "3": "net.blocks", "4": "net.conv_head", "5": "net.bn2", "7": "proj"}
_EFFNET_NEW = {"0": "net.conv_stem", "1": "net.bn1", "2": "net.blocks", "3": "net.conv_head", "4": "net.bn2", "5": "proj"}


def _tensor(x: Any, where: str) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        return x.detach().to(torch.float32)
    if isinstance(x, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    raise CheckpointError(f"{where}: expected an array, got {type(x).__name__}")


def read_network(path: str | Path) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """``(meta, state_dict)`` of a cirtorch/AML network checkpoint (``module.`` prefixes removed)."""
    obj = tensors_only(load_checkpoint(path))
    if not isinstance(obj, dict) or not isinstance(obj.get("state_dict"), dict):
        raise CheckpointError(f"{path}: not a cirtorch/AML network checkpoint (expected a dict with 'meta' and "
                              f"'state_dict', got {type(obj).__name__} with keys {list(obj)[:6] if isinstance(obj, dict) else '-'})")
    state = {k.removeprefix("module."): v for k, v in obj["state_dict"].items() if isinstance(v, torch.Tensor)}
    meta = obj.get("meta") if isinstance(obj.get("meta"), dict) else {}
    if "pool.p" not in state:
        raise CheckpointError(f"{path}: no 'pool.p' — only GeM networks are supported "
                              f"(meta pooling: {meta.get('pooling', '?')})")
    for flag in ("local_whitening", "regional", "whitening"):
        if meta.get(flag):
            raise CheckpointError(f"{path}: meta[{flag!r}] is set; AML/cirtorch networks with {flag} are not supported")
    return meta, state


def _guess_arch(meta: dict[str, Any], state: dict[str, torch.Tensor], source: str) -> str:
    arch = meta.get("architecture")
    if arch == "efficientnet_b3_new":
        raise CheckpointError(f"{source}: architecture 'efficientnet_b3_new' (efficientnet_pytorch with static "
                              "padding) is not supported; AML's released EfficientNet students use timm's tf_efficientnet_b3")
    if arch in ("resnet101", "vgg16", "mobilenet_v2", "efficientnet_b3"):
        return arch
    if "features.0.0.0.weight" in state:
        return "mobilenet_v2"
    if any(k.startswith("features.3.0.0.conv_dw") or k.startswith("features.2.0.0.conv_dw") for k in state):
        return "efficientnet_b3"
    if "features.4.0.conv1.weight" in state:
        return "resnet101"
    if "features.28.weight" in state:
        return "vgg16"
    raise CheckpointError(f"{source}: cannot tell the architecture (meta architecture {arch!r}; keys such as "
                          f"{', '.join(list(state)[:5])}); supported: resnet101, vgg16, mobilenet_v2, efficientnet_b3")


def network_to_zoo(meta: dict[str, Any], state: dict[str, torch.Tensor], prefix: str,
                   source: str) -> tuple[dict[str, torch.Tensor], str, int]:
    """Rename one network's ``features.*``/``pool.p`` to ``<prefix>.backbone.*``/``proj``/``pool.p``.

    Returns ``(state_dict, architecture, descriptor size)``.
    """
    arch = _guess_arch(meta, state, source)
    out: dict[str, torch.Tensor] = {f"{prefix}.pool.p": state["pool.p"].reshape(1)}
    unknown = []
    if arch == "efficientnet_b3":
        table = _EFFNET_OLD if any(k.startswith("features.3.0.0.") for k in state) else _EFFNET_NEW
    for key, value in state.items():
        if key == "pool.p":
            continue
        parts = key.split(".")
        if parts[0] != "features" or len(parts) < 3:
            unknown.append(key)
            continue
        idx, rest = parts[1], ".".join(parts[2:])
        if arch == "resnet101" and idx in _RESNET:
            out[f"{prefix}.backbone.{_RESNET[idx]}.{rest}"] = value
        elif arch == "vgg16":
            out[f"{prefix}.backbone.{idx}.{rest}"] = value
        elif arch == "mobilenet_v2" and idx in ("0", "1"):
            out[f"{prefix}.backbone.{rest}" if idx == "0" else f"{prefix}.proj.{rest}"] = value
        elif arch == "efficientnet_b3" and idx in table:
            name = table[idx]
            out[f"{prefix}.{name}.{rest}" if name == "proj" else f"{prefix}.backbone.{name}.{rest}"] = value
        else:
            unknown.append(key)
    if unknown:
        raise CheckpointError(f"{source}: unexpected keys for {arch}: {', '.join(unknown[:10])}")
    if arch in ("mobilenet_v2", "efficientnet_b3"):
        proj = out.get(f"{prefix}.proj.weight")
        if proj is None:
            raise CheckpointError(f"{source}: student {arch} without its 1x1 projection conv")
        dim = int(proj.shape[0])
    else:
        dim = {"resnet101": 2048, "vgg16": 512}[arch]
    return out, arch, dim


def _whitening_pair(obj: Any, where: str, dim: int) -> dict[str, torch.Tensor]:
    if not isinstance(obj, dict) or "m" not in obj or "P" not in obj:
        raise CheckpointError(f"{where}: expected a whitening {{'m', 'P'}}, got "
                              f"{sorted(obj) if isinstance(obj, dict) else type(obj).__name__}")
    m, P = _tensor(obj["m"], f"{where}['m']").reshape(-1), _tensor(obj["P"], f"{where}['P']")
    if m.shape[0] != dim or P.shape != (dim, dim):
        raise CheckpointError(f"{where}: whitening of size m {tuple(m.shape)}, P {tuple(P.shape)} does not fit "
                              f"{dim}-d descriptors")
    return {"m": m, "P": P}


def whitening_from(obj: Any, where: str, dim: int) -> dict[str, torch.Tensor]:
    """Our ``whiten_ss.*``/``whiten_ms.*`` from a cirtorch ``Lw`` entry or an AML ``{m, P}`` file."""
    if isinstance(obj, dict) and "ss" in obj and "ms" in obj:
        ss, ms = _whitening_pair(obj["ss"], f"{where}['ss']", dim), _whitening_pair(obj["ms"], f"{where}['ms']", dim)
    else:
        # AML's test.py uses its single student whitening for single- and multi-scale alike.
        ss = ms = _whitening_pair(obj, where, dim)
    return {**{f"whiten_ss.{k}": v for k, v in ss.items()}, **{f"whiten_ms.{k}": v.clone() for k, v in ms.items()}}


def _meta_whitening(meta: dict[str, Any], source: str, dim: int, whitening_set: str) -> dict[str, torch.Tensor] | None:
    lw = meta.get("Lw")
    if not isinstance(lw, dict):
        return None
    if whitening_set not in lw:
        raise CheckpointError(f"{source}: meta['Lw'] has no {whitening_set!r} (has {', '.join(map(str, lw))})")
    return whitening_from(lw[whitening_set], f"{source}: meta['Lw'][{whitening_set!r}]", dim)


def convert_aml(path: str | Path, whitening: str | Path | None = None, teacher_checkpoint: str | Path | None = None,
                whitening_set: str = WHITENING_SET, **_: Any) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Convert an AML student or a cirtorch teacher checkpoint to our state dict and config.

    Args:
        path: the student (or the teacher alone) checkpoint.
        whitening: an AML whitening file for a symmetric student (default: the student's
            ``meta['Lw']``, else ``<stem>_whitening.pth`` beside the checkpoint, else no whitening).
        teacher_checkpoint: the cirtorch teacher: builds the asymmetric model, whitened with the
            teacher's ``meta['Lw']`` on both sides (as AML's test.py).
        whitening_set: key of ``meta['Lw']`` (cirtorch: ``retrieval-SfM-120k``).

    Returns:
        ``(state_dict, {"variant": {...}, "variant_tag": ..., "source": {...}})``.
    """
    path = Path(path)
    meta, state = read_network(path)
    out, arch, dim = network_to_zoo(meta, state, "net", str(path))
    source: dict[str, Any] = {}
    if arch in ("resnet101", "vgg16"):
        if teacher_checkpoint is not None:
            raise CheckpointError(f"{path} is a teacher ({arch}); pass the student as --checkpoint and this as the teacher")
        student, teacher, asym = None, arch, False
        sd = {k.replace("net.", "teacher.", 1): v for k, v in out.items()}
        white = _meta_whitening(meta, str(path), dim, whitening_set)
    else:
        student, asym = arch, teacher_checkpoint is not None
        sd = {k.replace("net.", "student.", 1): v for k, v in out.items()}
        teacher = {2048: "resnet101", 512: "vgg16"}.get(dim)
        if teacher is None:
            raise CheckpointError(f"{path}: student projects to {dim}-d; AML teachers are 2048-d (resnet101) or 512-d (vgg16)")
        if asym:
            tmeta, tstate = read_network(teacher_checkpoint)
            tout, tarch, tdim = network_to_zoo(tmeta, tstate, "teacher", str(teacher_checkpoint))
            if tarch not in ("resnet101", "vgg16") or tdim != dim:
                raise CheckpointError(f"{teacher_checkpoint}: teacher {tarch} ({tdim}-d) does not fit the {dim}-d student {path}")
            teacher = tarch
            sd.update(tout)
            white = _meta_whitening(tmeta, str(teacher_checkpoint), dim, whitening_set)
            source["teacher"] = {"file": Path(teacher_checkpoint).name}
        else:
            white = None
            if whitening is None:
                white = _meta_whitening(meta, str(path), dim, whitening_set)
                beside = path.parent / (path.name.split(".")[0] + "_whitening.pth")
                if white is None and beside.is_file():
                    whitening = beside
            if whitening is not None:
                white = whitening_from(tensors_only(load_checkpoint(whitening)), str(whitening), dim)
                source["whitening"] = {"file": Path(whitening).name}
    if white is not None:
        sd.update(white)
    variant = {"student": student, "teacher": teacher, "asymmetric": asym, "whitening": white is not None}
    short = {"mobilenet_v2": "mobilenetv2", "efficientnet_b3": "efficientnetb3"}
    tag = f"teacher_{teacher}" if student is None else f"{short[student]}_{teacher}" + ("_asym" if asym else "")
    return sd, {"variant": variant, "variant_tag": tag, "source": source}
