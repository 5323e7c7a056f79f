"""What every evaluation data set reader returns, and the registry of readers.

A reader is a function ``reader(root: Path, **options) -> RetrievalSet`` registered with
:func:`register_eval_dataset`. It checks the on-disk layout first and raises
:class:`~zoo.errors.DatasetError` naming the missing folder or file.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from zoo.errors import DatasetError
from zoo.registry import Registry, import_submodules


@dataclass(frozen=True)
class ImageRecord:
    """One image of a retrieval set; ``box`` = (x0, y0, x1, y1) crops it before the transform."""

    path: Path
    box: tuple[float, float, float, float] | None = None


@dataclass
class RetrievalSet:
    """Queries, database and ground truth of one evaluation split.

    ``ground_truth`` is whatever the split's protocol (``zoo.metrics``) consumes, e.g. a list of
    positive database indices per query (VPR), the true database index per query (cross-view),
    class labels of both sides (UCDIR), revisitop's ``gnd`` list (ROxford), or the pairwise
    relevance levels (DA-Campus). ``meta`` holds anything else the protocol needs.
    """

    name: str
    root: Path
    queries: list[ImageRecord]
    database: list[ImageRecord]
    ground_truth: Any
    protocol: str
    meta: dict[str, Any] = field(default_factory=dict)

    def fingerprint(self) -> str:
        """Stable hash of the split: name, protocol and every image path (relative to root) + box."""
        digest = hashlib.sha256(f"{self.name}|{self.protocol}".encode())
        for side, records in (("q", self.queries), ("d", self.database)):
            for r in records:
                try:
                    rel = r.path.relative_to(self.root)
                except ValueError:
                    rel = r.path
                digest.update(f"{side}|{rel}|{r.box}\n".encode())
        return digest.hexdigest()[:16]


EvalReader = Callable[..., RetrievalSet]
#: Evaluation splits by name; the modules of :mod:`zoo.data` register theirs when first needed.
DATASETS: Registry[EvalReader] = Registry("data set", discover=lambda: import_submodules("zoo.data"))


def register_eval_dataset(name: str) -> Callable[[EvalReader], EvalReader]:
    return DATASETS.register(name)


def eval_dataset_names() -> list[str]:
    return DATASETS.names()


def build_eval_dataset(name: str, root: str | Path, **options: Any) -> RetrievalSet:
    reader = DATASETS.get(name)
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DatasetError(f"data root for {name} not found: {root}")
    return reader(root, **options)
