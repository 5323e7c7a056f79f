"""Unpack downloaded archives (zip, tar, tar.gz/bz2/xz) safely and atomically.

An archive from the network may hold members that escape the target folder (``../x``, absolute
paths, links pointing outside, device files): those are refused before anything is written.
The archive is unpacked into a temporary folder beside the target, which replaces the target in
one ``os.replace``: a reader never sees a half-unpacked folder, and a finished folder is reused.
"""

from __future__ import annotations

import os
import shutil
import tarfile
import tempfile
import zipfile
from pathlib import Path, PurePosixPath

from zoo.errors import CheckpointError


def _check_name(archive: Path, name: str) -> None:
    path = PurePosixPath(name.replace("\\", "/"))
    if path.is_absolute() or ".." in path.parts or (path.parts and path.parts[0].endswith(":")):
        raise CheckpointError(f"{archive}: member {name!r} points outside the archive's folder; refused to unpack")


def _extract_zip(archive: Path, dest: Path) -> None:
    with zipfile.ZipFile(archive) as zf:
        for info in zf.infolist():
            _check_name(archive, info.filename)
            # A zip symlink is a member whose Unix mode says so; its target could point anywhere.
            if (info.external_attr >> 16) & 0o170000 == 0o120000:
                raise CheckpointError(f"{archive}: member {info.filename!r} is a symbolic link; refused to unpack")
        zf.extractall(dest)


def _extract_tar(archive: Path, dest: Path) -> None:
    with tarfile.open(archive) as tf:
        for member in tf.getmembers():
            _check_name(archive, member.name)
            if not (member.isfile() or member.isdir()):
                raise CheckpointError(f"{archive}: member {member.name!r} is not a regular file or folder "
                                      "(link or device); refused to unpack")
        # The "data" filter (Python >= 3.11.4 / 3.10.12) re-checks paths and drops unsafe modes.
        if hasattr(tarfile, "data_filter"):
            tf.extractall(dest, filter="data")
        else:  # pragma: no cover - older Pythons: every member was checked above
            tf.extractall(dest)


def unpack_archive(archive: str | Path, dest: str | Path) -> Path:
    """Unpack ``archive`` into the folder ``dest`` (once: an existing ``dest`` is returned as it is).

    Raises:
        CheckpointError: the file is neither a zip nor a tar archive, or one of its members would
            be written outside ``dest`` (absolute path, ``..``, link, device file).
    """
    archive, dest = Path(archive), Path(dest)
    if dest.is_dir():
        return dest
    if zipfile.is_zipfile(archive):
        extract = _extract_zip
    elif tarfile.is_tarfile(archive):
        extract = _extract_tar
    else:
        raise CheckpointError(f"{archive}: not a zip or tar archive (cannot unpack it)")
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part"))
    try:
        extract(archive, tmp)
        try:
            os.replace(tmp, dest)
        except OSError:
            if not dest.is_dir():  # another process finished first: its folder is as good as ours
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dest


def find_member(root: str | Path, member: str) -> Path:
    """The one path under ``root`` that ends with ``member`` (a file, or a TF checkpoint prefix).

    A TensorFlow checkpoint prefix ``.../model.ckpt`` matches when ``model.ckpt.index`` exists.

    Raises:
        CheckpointError: no path or several paths match, naming what the archive holds.
    """
    root = Path(root)
    suffix = PurePosixPath(member).parts
    found = []
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        rel = path.relative_to(root).parts
        if rel[-len(suffix):] == suffix:
            found.append(path)
        elif path.name.endswith(".index"):
            prefix = rel[:-1] + (path.name.removesuffix(".index"),)
            if prefix[-len(suffix):] == suffix:
                found.append(path.with_name(prefix[-1]))
    found = sorted(set(found))
    if len(found) == 1:
        return found[0]
    listing = ", ".join(str(p.relative_to(root)) for p in sorted(root.rglob("*")) if p.is_file())
    if not found:
        raise CheckpointError(f"{root}: the archive holds no {member!r} (its files: {listing[:600]})")
    raise CheckpointError(f"{root}: {member!r} is ambiguous in the archive: "
                          f"{', '.join(str(p.relative_to(root)) for p in found)}")
