"""Revisited Oxford 5k / Paris 6k (revisitop layout).

``<root>/gnd_<name>.pkl``: ``{'imlist': [...], 'qimlist': [...], 'gnd': [{'bbx', 'easy', 'hard',
'junk'}, ...]}`` and ``<root>/jpg/<image>.jpg``. ``root`` is the data set folder itself
(revisitop's ``<data>/datasets/roxford5k``). Queries are cropped to ``gnd[i]['bbx']``
(x1, y1, x2, y2), as in revisitop and cirtorch. The pickle is read with the restricted
unpickler (plain containers and numpy arrays only).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from zoo.data.base import ImageRecord, RetrievalSet, register_eval_dataset
from zoo.errors import CheckpointError, DatasetError
from zoo.io import load_checkpoint

NAMES = ("roxford5k", "rparis6k")


def read_gnd(path: Path) -> dict[str, Any]:
    """revisitop's ground-truth pickle, checked for the keys the protocol needs."""
    if not path.is_file():
        raise DatasetError(f"ground-truth file not found: {path}")
    try:
        cfg = load_checkpoint(path)
    except CheckpointError as err:
        raise DatasetError(f"{path}: not a readable revisitop ground-truth pickle ({err})") from err
    if not isinstance(cfg, dict) or not all(k in cfg for k in ("imlist", "qimlist", "gnd")):
        raise DatasetError(f"{path}: expected a dict with 'imlist', 'qimlist', 'gnd'")
    if len(cfg["gnd"]) != len(cfg["qimlist"]):
        raise DatasetError(f"{path}: {len(cfg['gnd'])} gnd entries for {len(cfg['qimlist'])} queries")
    for i, g in enumerate(cfg["gnd"]):
        missing = [k for k in ("bbx", "easy", "hard", "junk") if k not in g]
        if missing:
            raise DatasetError(f"{path}: gnd[{i}] lacks {', '.join(missing)}")
    return cfg


def read_revisited(root: Path, name: str, check_images: bool = True) -> RetrievalSet:
    root = Path(root)
    cfg = read_gnd(root / f"gnd_{name}.pkl")
    images = root / "jpg"
    if not images.is_dir():
        raise DatasetError(f"image folder not found: {images} (expected {name}'s jpg/ beside gnd_{name}.pkl)")
    database = [ImageRecord(images / f"{n}.jpg") for n in cfg["imlist"]]
    queries = [ImageRecord(images / f"{n}.jpg", tuple(float(v) for v in g["bbx"]))
               for n, g in zip(cfg["qimlist"], cfg["gnd"])]
    if check_images:
        missing = [str(r.path) for r in (*queries, *database) if not r.path.is_file()]
        if missing:
            raise DatasetError(f"{name}: {len(missing)} image(s) missing, e.g. {', '.join(missing[:3])}")
    return RetrievalSet(name, root, queries, database, list(cfg["gnd"]), "revisited",
                        meta={"imsize_relative_to_full_image": True})


@register_eval_dataset("roxford5k")
def roxford5k(root: Path, **options: Any) -> RetrievalSet:
    """Revisited Oxford 5k: 70 queries (cropped), 4993 database images."""
    return read_revisited(root, "roxford5k", **options)


@register_eval_dataset("rparis6k")
def rparis6k(root: Path, **options: Any) -> RetrievalSet:
    """Revisited Paris 6k: 70 queries (cropped), 6322 database images."""
    return read_revisited(root, "rparis6k", **options)
