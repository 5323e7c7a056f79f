"""Low-level input and output: safe checkpoint reading, atomic writes, image reading, caches.

Nothing here knows a model. Three guarantees the rest of the zoo builds on:

* checkpoints are read without running code from them (:func:`load_checkpoint`);
* every file is written atomically (:func:`atomic_path`, :func:`atomic_write_text`): readers see
  the old file or the new one, never half of one, and a failed write leaves no temporary behind;
* every image failure names the file (:func:`load_image`).

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
import contextlib
import hashlib
import logging
import os
import pickle
import tempfile
import types
import warnings
from pathlib import Path
from typing import Any, Iterator, Mapping

import torch
from PIL import Image

from zoo.errors import CheckpointError, DatasetError, InputError, StateDictMismatchError, UnsafeCheckpointError

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
            obj = unpickler.load()
    except UnsafeCheckpointError:
        raise
    except Exception as err:
        raise CheckpointError(f"{path}: truncated or not a checkpoint "
                              f"({type(torch_error).__name__}: {torch_error})") from err
    if isinstance(obj, int) and obj == torch.serialization.MAGIC_NUMBER:
        # The first pickle of a legacy torch.save file is this number; torch.load failed on the rest.
        raise CheckpointError(f"{path}: truncated or not a checkpoint (a legacy torch.save file that "
                              f"torch cannot read: {type(torch_error).__name__}: {torch_error})")
    return obj


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


# --------------------------------------------------------------------------- state dicts


def load_state_dict_strict(model: torch.nn.Module, state_dict: dict[str, torch.Tensor], source: str) -> None:
    """``load_state_dict(strict=True)`` with an error that lists every missing, unexpected and misshaped key."""
    own = model.state_dict()
    missing = sorted(set(own) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(own))
    misshaped = sorted(f"{k}: checkpoint {tuple(state_dict[k].shape)} vs model {tuple(own[k].shape)}"
                       for k in set(own) & set(state_dict) if own[k].shape != state_dict[k].shape)
    if missing or unexpected or misshaped:
        def show(keys: list[str]) -> str:
            return ", ".join(keys[:12]) + (f" ... (+{len(keys) - 12} more)" if len(keys) > 12 else "")
        parts = [f"{label} ({len(keys)}): {show(keys)}" for label, keys in
                 (("missing keys", missing), ("unexpected keys", unexpected), ("shape mismatches", misshaped)) if keys]
        raise StateDictMismatchError(
            f"{source} does not fit {type(model).__name__} — is it a checkpoint of another model or variant? "
            + "; ".join(parts))
    model.load_state_dict(state_dict, strict=True)


# --------------------------------------------------------------------------- atomic writes


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path: str | Path, fsync: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it replaces ``path`` in one step.

    For writers that take a file name (``torch.save``, safetensors, matplotlib). The file gets
    the permissions a plain ``open(path, "w")`` would (``0o666`` less the umask), ``fsync=True``
    flushes it to disk before the rename, and on any error the temporary file is removed. The
    temporary name ends in ``path``'s suffix, so writers that infer the format from it (numpy,
    matplotlib, faiss) write the right one.
    """
    path = Path(path)
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=f".part{path.suffix}")
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~_umask())
        if fsync:
            with open(tmp, "rb") as f:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically (see :func:`atomic_path`)."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, newline="")


def check_output_dir(path: str | Path, inputs: Mapping[str, str | Path | None] | None = None,
                     what: str = "--out") -> Path:
    """Check, before any work, that ``path`` can become an output folder; nothing is created.

    Refused: ``path`` (or a folder above it) is an existing file; the folder that would hold it
    cannot be written; ``path`` is one of ``inputs`` (label -> folder) or lies inside one, where
    a later run would read the outputs back as inputs.

    Raises:
        InputError: naming ``what`` (the option), the path and the reason.
    """
    path = Path(path).expanduser()
    if path.exists() and not path.is_dir():
        raise InputError(f"{what} {path}: exists and is not a folder")
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise InputError(f"{what} {path}: {existing} is a file, so no folder can be made under it")
    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as err:
        raise InputError(f"{what} {path}: cannot write in {existing} ({err.strerror or err})") from None
    resolved = path.resolve()
    for label, folder in (inputs or {}).items():
        if folder is None:
            continue
        source = Path(folder).expanduser().resolve()
        if resolved == source or source in resolved.parents:
            raise InputError(f"{what} {path} is inside {label} {folder}: outputs would be read back as "
                             "inputs; choose an output folder outside it")
    return path


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def zoo_cache_dir() -> Path:
    """``$TORCH_HOME/zoo`` (``~/.cache/torch/zoo`` by default): converted releases and downloads."""
    torch_home = os.environ.get("TORCH_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "torch")
    return Path(torch_home) / "zoo"


# --------------------------------------------------------------------------- images

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")


#: Pillow's 16-bit greyscale modes ("I" is how some readers hand over 16-bit PNG/PGM/TIFF data).
_SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")


@contextlib.contextmanager
def _reading_image(path: Path) -> Iterator[None]:
    """Turn every failure of decoding ``path`` into an :class:`InputError` naming it.

    Pillow raises far more than ``OSError`` on hostile files: ``DecompressionBombError`` (an
    ``Exception``) for images over twice ``Image.MAX_IMAGE_PIXELS``, ``SyntaxError``,
    ``struct.error``, ``IndexError`` ... from its parsers. Any of them is this file's fault.
    Images between the warning and the error limit still load; the warning then names the file.
    """
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", Image.DecompressionBombWarning)
        try:
            yield
        except Image.DecompressionBombError as err:
            raise InputError(f"refused image {path}: {err} (a decompression bomb, or raise "
                             "PIL.Image.MAX_IMAGE_PIXELS if the picture is real)") from err
        except MemoryError as err:
            raise InputError(f"image {path} does not fit in memory once decoded") from err
        except Exception as err:  # noqa: BLE001 - see the docstring
            raise InputError(f"corrupt or unreadable image: {path} ({type(err).__name__}: {err})") from err
    for warning in caught:
        if issubclass(warning.category, Image.DecompressionBombWarning):
            logging.getLogger("zoo.io").warning("%s: %s", path, warning.message)
        else:
            warnings.warn_explicit(warning.message, warning.category, warning.filename, warning.lineno)


def _to_eight_bits(img: Image.Image) -> Image.Image:
    """16-bit greyscale as the 8-bit picture it is: ``round(v * 255 / 65535)``.

    Pillow's own conversion of these modes to ``L``/``RGB`` clips every value above 255,
    which turns a 16-bit photo almost white.
    """
    import numpy as np

    values = np.asarray(img).astype(np.uint32).clip(0, 65535)
    return Image.fromarray(((values * 255 + 32767) // 65535).astype(np.uint8), mode="L")


def load_image(path: str | Path, mode: str = "RGB") -> Image.Image:
    """Open an image fully (decoding every pixel now, so a truncated file fails here).

    The one reader of the zoo: every image read goes through it (or :func:`image_size`), so every
    failure names the file. 16-bit greyscale files read as the same picture as their 8-bit twins.

    Raises:
        DatasetError: the file does not exist.
        InputError: the file is not a decodable image, or a decompression bomb.
    """
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"image not found: {path}")
    with _reading_image(path), Image.open(path) as img:
        img.load()
        if img.mode in _SIXTEEN_BIT_MODES and mode != img.mode:
            return _to_eight_bits(img).convert(mode)
        return img.convert(mode)


def image_size(path: str | Path) -> tuple[int, int]:
    """``(width, height)`` of an image from its header, without decoding the pixels.

    Raises the same errors as :func:`load_image`.
    """
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"image not found: {path}")
    with _reading_image(path), Image.open(path) as img:
        return img.size


def list_images(folder: str | Path) -> list[Path]:
    """Images directly inside ``folder`` and its subfolders, sorted."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DatasetError(f"image folder not found: {folder}")
    images = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not images:
        raise DatasetError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {folder}")
    return images
