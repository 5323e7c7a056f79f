"""Training checkpoints: written atomically, the last few kept, read back without running code.

A checkpoint is one ``torch.save`` file ``OUT/checkpoints/step-XXXXXXXX.pt`` holding only tensors
and plain containers, so that :func:`load_checkpoint` can read it with ``weights_only=True``.
"""

from __future__ import annotations

import os
import random
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

from zoo.errors import CheckpointError
from zoo.io import atomic_path

FORMAT = "zoo-train-checkpoint/1"
_NAME = re.compile(r"^step-(\d{8,})\.pt$")


def checkpoint_path(folder: Path, step: int) -> Path:
    return Path(folder) / f"step-{step:08d}.pt"


def list_checkpoints(folder: Path) -> list[Path]:
    """Checkpoints in ``folder``, oldest first (temporary files of an interrupted write are ignored)."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := _NAME.match(p.name))]
    return [p for _, p in sorted(found)]


def save_checkpoint(state: dict[str, Any], folder: Path, step: int, keep: int) -> Path:
    """Write ``state`` as ``step-<step>.pt`` atomically (:func:`zoo.io.atomic_path`, flushed to disk);
    keep the last ``keep``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    dest = checkpoint_path(folder, step)
    with atomic_path(dest, fsync=True) as tmp:
        torch.save({"format": FORMAT, **state}, tmp)
    _fsync_dir(folder)
    for old in list_checkpoints(folder)[:-keep]:
        old.unlink(missing_ok=True)
    return dest


def _fsync_dir(folder: Path) -> None:
    # Makes the rename itself durable; not possible on every platform (e.g. Windows).
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def check_plain(obj: Any, where: str) -> Any:
    """``obj`` if it holds only tensors, numbers, str, bool, None, lists, tuples and str-keyed dicts.

    What else a checkpoint held could not be read back with ``weights_only=True``: fail when
    saving, naming the key, rather than at resume.
    """
    if isinstance(obj, (torch.Tensor, int, float, str, bool, type(None))):
        return obj
    if isinstance(obj, (list, tuple)):
        for i, value in enumerate(obj):
            check_plain(value, f"{where}[{i}]")
        return obj
    if isinstance(obj, dict):
        for key, value in obj.items():
            if not isinstance(key, (str, int)):
                raise CheckpointError(f"{where}: key {key!r} is a {type(key).__name__}; use str or int keys")
            check_plain(value, f"{where}[{key!r}]")
        return obj
    hint = " (use torch.from_numpy)" if isinstance(obj, np.ndarray) else ""
    raise CheckpointError(f"{where}: a {type(obj).__module__}.{type(obj).__name__} cannot go into a checkpoint; "
                          f"use tensors, numbers, str, lists and dicts{hint}")


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint` (tensors and plain containers only)."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise CheckpointError(f"{path}: not a readable training checkpoint ({err})") from err
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a training checkpoint of this engine (format {FORMAT})")
    return state


# --------------------------------------------------------------------------- RNG states


def rng_state() -> dict[str, Any]:
    """Python, numpy, torch (CPU and every CUDA device) generator states, as tensors and plain values."""
    np_state = np.random.get_state()
    return {
        "python": random.getstate(),
        "numpy": {"key": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                  "has_gauss": int(np_state[3]), "gauss": float(np_state[4])},
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() and torch.cuda.is_initialized() else [],
    }


def set_rng_state(state: dict[str, Any]) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    n = state["numpy"]
    np.random.set_state(("MT19937", n["key"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
