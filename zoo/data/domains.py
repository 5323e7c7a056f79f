"""Category-labelled image domains (Office-Home, DomainNet) and the cross-domain retrieval set built from two of them.

A *domain* is a folder of class folders (``<domain>/<class>/<image>``). UCDIR retrieves images of
one domain (queries) in another (database); an image is relevant when its class equals the
query's (``RetrievalSet.ground_truth`` = ``{"query_labels", "database_labels"}``, protocol
``class_precision``). Labels are indices into the class names shared by both domains, matched by
*name*: the original numbers each domain's sorted folder listing separately, which agrees as long
as both domains hold the same class folders and nothing else.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from zoo.data.base import ImageRecord, RetrievalSet
from zoo.errors import DatasetError
from zoo.io import IMAGE_SUFFIXES


@dataclass
class Domain:
    """The images of one domain, in the original's order (classes sorted, files sorted within a class)."""

    name: str
    paths: list[Path]
    labels: np.ndarray        # (N,) int64, index into ``classes``
    classes: list[str]

    def __len__(self) -> int:
        return len(self.paths)


def read_class_folders(folder: Path, classes: Sequence[str] | None = None, what: str = "domain") -> Domain:
    """``folder/<class>/<image>``: every class folder (or only ``classes``), images sorted by name."""
    if not folder.is_dir():
        raise DatasetError(f"{what} folder not found: {folder}")
    found = sorted(p.name for p in folder.iterdir() if p.is_dir())
    names = list(classes) if classes is not None else found
    missing = [c for c in names if c not in found]
    if missing:
        raise DatasetError(f"{folder}: class folder(s) missing: {', '.join(missing[:8])}")
    if not names:
        raise DatasetError(f"{folder}: no class folders (expected {what}/<class>/<image>)")
    paths, labels = [], []
    for label, name in enumerate(names):
        files = sorted(p for p in (folder / name).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
        paths += files
        labels += [label] * len(files)
    if not paths:
        raise DatasetError(f"{folder}: no images ({', '.join(IMAGE_SUFFIXES)}) in its class folders")
    return Domain(folder.name, paths, np.asarray(labels, dtype=np.int64), names)


def read_list_file(root: Path, list_file: Path, classes: Sequence[str], domain: str) -> Domain:
    """A split file of lines ``<relative path> <label>`` (DomainNet's ``<domain>_<split>.txt``),
    keeping the images of ``classes`` (the class is the path's second component)."""
    if not list_file.is_file():
        raise DatasetError(f"split file not found: {list_file}")
    index = {c: i for i, c in enumerate(classes)}
    by_class: dict[str, list[Path]] = {c: [] for c in classes}
    for n, line in enumerate(list_file.read_text().splitlines(), 1):
        if not line.strip():
            continue
        rel = line.split()[0]
        parts = rel.split("/")
        if len(parts) < 3:
            raise DatasetError(f"{list_file}:{n}: expected '<domain>/<class>/<image> <label>', got {line!r}")
        if parts[1] in index:
            by_class[parts[1]].append(root / rel)
    paths, labels = [], []
    for c in classes:
        files = sorted(by_class[c])
        paths += files
        labels += [index[c]] * len(files)
    if not paths:
        raise DatasetError(f"{list_file}: no image of the classes {', '.join(classes)}")
    missing = [p for p in paths if not p.is_file()]
    if missing:
        raise DatasetError(f"{list_file} lists {len(missing)} image(s) that do not exist, e.g. {missing[0]}")
    return Domain(domain, paths, np.asarray(labels, dtype=np.int64), list(classes))


def cross_domain_set(name: str, root: Path, query: Domain, database: Domain) -> RetrievalSet:
    """Queries from one domain, database from another, relevance = same class (matched by name)."""
    classes = sorted(set(query.classes) | set(database.classes))
    index = {c: i for i, c in enumerate(classes)}
    q_labels = np.asarray([index[query.classes[i]] for i in query.labels], dtype=np.int64)
    d_labels = np.asarray([index[database.classes[i]] for i in database.labels], dtype=np.int64)
    return RetrievalSet(
        name=name, root=root,
        queries=[ImageRecord(p) for p in query.paths], database=[ImageRecord(p) for p in database.paths],
        ground_truth={"query_labels": q_labels, "database_labels": d_labels}, protocol="class_precision",
        meta={"classes": classes, "query_domain": query.name, "database_domain": database.name})
