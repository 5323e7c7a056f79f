"""Read PyTorch checkpoints without running code from them.

Original checkpoints are pickles. Some hold only tensors and plain containers and load with
``torch.load(weights_only=True)``; others also hold objects of their training code (an
OmegaConf config, a Lightning callback state, numpy RNG states). :func:`load_checkpoint`
rebuilds tensors, numpy arrays and plain containers, replaces every other object with an inert
:class:`SkippedObject` (its class is never imported, its constructor never called), and
refuses outright any global that can run code (``os.system``, ``builtins.eval``,
``subprocess.*`` ...), naming it.
"""

from __future__ import annotations

import collections
import pickle
import types
from pathlib import Path
from typing import Any

import torch

from zoo.errors import UnsafeCheckpointError, CheckpointError

# Modules whose globals can execute code, touch files or the network when called.
_DANGEROUS_MODULES = (
    "os", "posix", "nt", "subprocess", "sys", "shutil", "importlib", "runpy", "socket",
    "pickle", "_pickle", "marshal", "ctypes", "pty", "code", "codeop", "webbrowser", "types",
    "functools", "operator", "io", "_io", "builtins", "__builtin__", "pathlib", "tempfile",
    "multiprocessing", "threading", "signal", "urllib", "http", "ftplib", "smtplib", "pdb",
    "torch.hub", "torch.serialization", "numpy.testing", "numpy.f2py", "numpy.distutils",
    "setuptools", "pip", "asyncio", "inspect", "gc",
)

_SAFE_BUILTINS = {"set", "frozenset", "slice", "complex", "range", "bytearray", "bytes", "int",
                  "float", "bool", "str", "tuple", "list", "dict"}

_TORCH_REBUILDERS = {
    "_rebuild_tensor", "_rebuild_tensor_v2", "_rebuild_tensor_v3", "_rebuild_parameter",
    "_rebuild_parameter_with_state", "_rebuild_sparse_tensor", "_rebuild_device_tensor_from_numpy",
    "_rebuild_meta_tensor_no_storage", "_rebuild_wrapper_subclass",
}

_NUMPY_SAFE = {
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
    ("numpy", "ndarray"), ("numpy", "dtype"),
}


class SkippedObject:
    """Stands in for an object of a class the checkpoint's training code defined.

    It records the class name and swallows whatever the pickle tries to give it, so the
    rest of the checkpoint (the tensors) can still be read.
    """

    qualified_name = "?"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __setstate__(self, state: Any) -> None:
        pass

    def __setitem__(self, key: Any, value: Any) -> None:
        pass

    def append(self, value: Any) -> None:
        pass

    def extend(self, values: Any) -> None:
        pass

    def __repr__(self) -> str:
        return f"<skipped {self.qualified_name}>"

    @classmethod
    def __class_getitem__(cls, item: Any) -> Any:
        return cls


def _skipped_class(module: str, name: str) -> type:
    return type("SkippedObject", (SkippedObject,), {"qualified_name": f"{module}.{name}"})


def _is_dangerous(module: str) -> bool:
    return any(module == bad or module.startswith(bad + ".") for bad in _DANGEROUS_MODULES)


class _RestrictedUnpickler(pickle.Unpickler):
    source = "<checkpoint>"

    def find_class(self, module: str, name: str) -> Any:
        if module == "torch._utils" and name in _TORCH_REBUILDERS:
            return getattr(torch._utils, name)
        if module == "torch" and (name == "Size" or isinstance(getattr(torch, name, None), (torch.dtype, torch.layout))):
            return getattr(torch, name)
        if module == "torch" and name.endswith("Storage"):
            return getattr(torch, name)
        if module == "torch.serialization" and name == "_get_layout":
            return torch.serialization._get_layout
        if module == "collections" and name in ("OrderedDict", "defaultdict"):
            return getattr(collections, name)
        if module in ("builtins", "__builtin__") and name in _SAFE_BUILTINS:
            return __builtins__[name] if isinstance(__builtins__, dict) else getattr(__builtins__, name)
        if module in ("_codecs", "codecs") and name == "encode":
            # numpy/py2 pickles store bytes as codecs.encode(str, "latin1"); harmless.
            import codecs
            return codecs.encode
        if (module, name) in _NUMPY_SAFE:
            import numpy  # noqa: F401  (numpy is a core dependency)
            if name in ("ndarray", "dtype"):
                return getattr(numpy, name)
            try:
                from numpy._core import multiarray
            except ImportError:  # numpy < 2
                from numpy.core import multiarray
            return getattr(multiarray, name)
        if _is_dangerous(module):
            raise UnsafeCheckpointError(
                f"{self.source}: refused to load; the checkpoint references {module}.{name}, "
                "which could run code. Only tensors and plain containers are read."
            )
        return _skipped_class(module, name)


def _restricted_module(source: str) -> types.ModuleType:
    module = types.ModuleType("zoo_restricted_pickle")
    unpickler = type("Unpickler", (_RestrictedUnpickler,), {"source": source})
    module.Unpickler = unpickler  # type: ignore[attr-defined]
    module.load = lambda f, **kw: unpickler(f, **kw).load()  # type: ignore[attr-defined]
    module.__name__ = "pickle"
    return module


def load_checkpoint(path: str | Path) -> Any:
    """Load a ``torch.save`` checkpoint (zip or legacy format) or a plain pickle, keeping only data.

    Raises:
        UnsafeCheckpointError: the pickle references a code-running global.
        CheckpointError: the file is missing or not a readable checkpoint.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=False,
                          pickle_module=_restricted_module(str(path)))
    except UnsafeCheckpointError:
        raise
    except Exception as err:  # corrupt zip, truncated file, or a plain pickle (not torch.save)
        torch_error = err
    try:
        with open(path, "rb") as f:
            unpickler = _RestrictedUnpickler(f, encoding="latin1")
            unpickler.source = str(path)
            return unpickler.load()
    except UnsafeCheckpointError:
        raise
    except Exception as err:
        raise CheckpointError(f"{path}: not a readable checkpoint or pickle "
                              f"({type(torch_error).__name__}: {torch_error})") from err


def tensors_only(obj: Any) -> Any:
    """Drop every :class:`SkippedObject` from nested dicts/lists, keeping the data."""
    if isinstance(obj, dict):
        return {k: tensors_only(v) for k, v in obj.items() if not isinstance(v, SkippedObject)}
    if isinstance(obj, (list, tuple)):
        return type(obj)(tensors_only(v) for v in obj if not isinstance(v, SkippedObject))
    return obj


def load_npy(path: str | Path) -> Any:
    """``numpy.load`` of a ``.npy`` file; object arrays are unpickled with the restricted unpickler.

    Ground-truth files of VPR benchmarks are object arrays (lists of index arrays, file names),
    which ``numpy.load`` only reads with ``allow_pickle=True``, i.e. by running pickle.
    """
    import numpy as np

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"file not found: {path}")
    with open(path, "rb") as f:
        try:
            version = np.lib.format.read_magic(f)
            read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            _, _, dtype = read_header(f)
        except ValueError as err:
            raise CheckpointError(f"{path}: not a .npy file ({err})") from err
        if not dtype.hasobject:
            f.seek(0)
            return np.load(f, allow_pickle=False)
        return _restricted_module(str(path)).Unpickler(f).load()
