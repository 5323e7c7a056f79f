"""Checkpoints that would run code on unpickling are refused, and foreign objects are skipped."""

from __future__ import annotations

import os
import pickle
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch

from zoo.errors import CheckpointError, UnsafeCheckpointError
from zoo.io import SkippedObject, load_checkpoint, tensors_only


class _RunsCode:
    """Pickles to ``os.system(<touch marker>)``: unpickling it with plain pickle runs a shell."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_code_running_payload_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {"w": torch.ones(2)}, "payload": _RunsCode(marker)}, path)
    # The payload is real: plain pickle would run it (checked on a copy of the bytes, not the file).
    with pytest.raises(UnsafeCheckpointError, match="os.system|posix.system"):
        load_checkpoint(path)
    assert not marker.exists()


def test_legacy_format_payload_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil_legacy.pth"
    torch.save({"w": torch.ones(1), "x": _RunsCode(marker)}, path, _use_new_zipfile_serialization=False)
    with pytest.raises(UnsafeCheckpointError):
        load_checkpoint(path)
    assert not marker.exists()


def test_builtins_eval_is_refused(tmp_path):
    class Evil:
        def __reduce__(self):
            return (eval, ("__import__('os').getcwd()",))
    path = tmp_path / "eval.ckpt"
    torch.save([Evil()], path)
    with pytest.raises(UnsafeCheckpointError, match="eval"):
        load_checkpoint(path)


def test_foreign_objects_are_skipped_without_import(tmp_path, monkeypatch):
    # A class from a module that exists only while saving (like OmegaConf in an original checkpoint).
    module = types.ModuleType("throwaway_training_code")
    exec("class Config:\n    def __init__(self):\n        self.lr = 0.1\n"
         "    def __setstate__(self, s):\n        raise RuntimeError('must not run')\n", module.__dict__)
    monkeypatch.setitem(sys.modules, "throwaway_training_code", module)
    path = tmp_path / "ckpt.pth"
    torch.save({"config": module.Config(), "net_state": {"fc.weight": torch.arange(6.0).view(2, 3)},
                "rng": {"numpy": np.random.get_state(), "torch": torch.get_rng_state()}}, path)
    monkeypatch.delitem(sys.modules, "throwaway_training_code")

    ckpt = load_checkpoint(path)
    assert isinstance(ckpt["config"], SkippedObject)
    assert "throwaway_training_code.Config" in repr(ckpt["config"])
    assert torch.equal(ckpt["net_state"]["fc.weight"], torch.arange(6.0).view(2, 3))
    assert isinstance(ckpt["rng"]["numpy"][1], np.ndarray)
    assert "config" not in tensors_only(ckpt)
    assert "throwaway_training_code" not in sys.modules


def test_plain_pickle_and_garbage_files(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "absent.pth")
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"\x00not a checkpoint" * 10)
    with pytest.raises(CheckpointError, match="garbage.pth"):
        load_checkpoint(garbage)
    plain = tmp_path / "plain.pkl"
    plain.write_bytes(pickle.dumps({"a": [1, 2.5, "x"], "b": (None, True)}))
    assert load_checkpoint(plain) == {"a": [1, 2.5, "x"], "b": (None, True)}
