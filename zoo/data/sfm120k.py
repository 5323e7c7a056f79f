"""retrieval-SfM-120k (Radenović et al.): the training set of cnnimageretrieval-pytorch and AML.

On-disk layout (cirtorch's ``<data>/train/retrieval-SfM-120k``)::

    retrieval-SfM-120k.pkl     {'train': {...}, 'val': {...}}, each {'cids': [str], 'cluster': [int],
                               'qidxs': [int], 'pidxs': [int]} (query i matches positive pidxs[i])
    ims/<cid[-2:]>/<cid[-4:-2]>/<cid[-6:-4]>/<cid>

The pickle is read with the restricted unpickler (plain containers only).

Tuple mining follows cirtorch's ``TuplesDataset.create_epoch_tuples``: each epoch draws
``query_size`` query/positive pairs and a pool of ``pool_size`` random images, ranks the pool by
inner product with each query descriptor, and walks down the ranking taking a negative whenever
its cluster is neither the query's nor one already taken (at most one negative per cluster)
until ``num_negatives`` are found. AML's asymmetric modes rank the pool with the *teacher's*
descriptors against the student's query descriptors.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import torch

from zoo.errors import CheckpointError, DatasetError
from zoo.io import load_checkpoint

PICKLE = "retrieval-SfM-120k.pkl"


def cid2filename(cid: str, ims_root: Path) -> Path:
    """cirtorch's image path of a training image id: ``ims/<cid[-2:]>/<cid[-4:-2]>/<cid[-6:-4]>/<cid>``."""
    return Path(ims_root) / cid[-2:] / cid[-4:-2] / cid[-6:-4] / cid


@dataclass
class SfMSplit:
    """One split of retrieval-SfM-120k: image paths, cluster ids and the query/positive pairs."""

    images: list[Path]
    clusters: list[int]
    qpool: list[int]
    ppool: list[int]


def read_sfm120k(root: Path, split: str = "train", check_images: bool = False) -> SfMSplit:
    """Read ``<root>/retrieval-SfM-120k.pkl`` and locate the ``ims/`` files of ``split``."""
    root = Path(root)
    path = root / PICKLE
    if not path.is_file():
        raise DatasetError(f"retrieval-SfM-120k: {path} not found (expected the data set folder with {PICKLE} and ims/)")
    if not (root / "ims").is_dir():
        raise DatasetError(f"retrieval-SfM-120k: image folder {root / 'ims'} not found")
    try:
        db = load_checkpoint(path)
    except CheckpointError as err:
        raise DatasetError(f"{path}: not a readable retrieval-SfM-120k pickle ({err})") from err
    if not isinstance(db, dict) or split not in db:
        raise DatasetError(f"{path}: no split {split!r} (has {', '.join(map(str, db)) if isinstance(db, dict) else type(db).__name__})")
    part = db[split]
    missing = [k for k in ("cids", "cluster", "qidxs", "pidxs") if k not in part]
    if missing:
        raise DatasetError(f"{path}: split {split!r} lacks {', '.join(missing)}")
    if len(part["qidxs"]) != len(part["pidxs"]) or len(part["cids"]) != len(part["cluster"]):
        raise DatasetError(f"{path}: split {split!r} has mismatched list lengths")
    images = [cid2filename(c, root / "ims") for c in part["cids"]]
    if check_images:
        absent = [str(p) for p in images if not p.is_file()]
        if absent:
            raise DatasetError(f"retrieval-SfM-120k: {len(absent)} image(s) missing, e.g. {', '.join(absent[:3])}")
    return SfMSplit(images, [int(c) for c in part["cluster"]], [int(i) for i in part["qidxs"]],
                    [int(i) for i in part["pidxs"]])


@dataclass
class EpochTuples:
    """The tuples of one epoch: query, positive and negative image indices."""

    qidxs: list[int]
    pidxs: list[int]
    nidxs: list[list[int]]


def draw_pairs(split: SfMSplit, query_size: int, generator: torch.Generator) -> tuple[list[int], list[int]]:
    """``query_size`` random (query, positive) pairs of the split (cirtorch: ``randperm(len(qpool))[:qsize]``)."""
    pick = torch.randperm(len(split.qpool), generator=generator)[:min(query_size, len(split.qpool))].tolist()
    return [split.qpool[i] for i in pick], [split.ppool[i] for i in pick]


def draw_pool(split: SfMSplit, pool_size: int, generator: torch.Generator) -> list[int]:
    return torch.randperm(len(split.images), generator=generator)[:min(pool_size, len(split.images))].tolist()


def mine_negatives(query_vecs: torch.Tensor, pool_vecs: torch.Tensor, pool: Sequence[int], qidxs: Sequence[int],
                   clusters: Sequence[int], num_negatives: int) -> list[list[int]]:
    """Hardest negatives per query, at most one per cluster, never the query's cluster.

    Args:
        query_vecs: ``(Q, D)`` descriptors of the queries.
        pool_vecs: ``(P, D)`` descriptors of the pool images ``pool`` (image indices).
        qidxs: image index of each query; ``clusters``: cluster id of every image.

    Returns:
        ``Q`` lists of ``num_negatives`` image indices (fewer only if the pool runs out of clusters).
    """
    scores = query_vecs.float() @ pool_vecs.float().t()
    ranks = torch.sort(scores, dim=1, descending=True, stable=True).indices.tolist()
    out = []
    for q, row in enumerate(ranks):
        taken = {clusters[qidxs[q]]}
        negs: list[int] = []
        for r in row:
            image = pool[r]
            if clusters[image] not in taken:
                negs.append(image)
                taken.add(clusters[image])
                if len(negs) == num_negatives:
                    break
        out.append(negs)
    return out


class ImageList(torch.utils.data.Dataset):
    """Images by index through a transform (cirtorch ``ImagesFromList`` for descriptor extraction)."""

    def __init__(self, paths: Sequence[Path], transform: Callable) -> None:
        self.paths, self.transform = list(paths), transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> torch.Tensor:
        from zoo.io import load_image
        return self.transform(load_image(self.paths[i]))
