"""CVUSA (Workman et al. / Zhai et al.'s release, as used by CVM-Net and CVFT).

Released layout under ``root`` (the CVFT loader's ``Data/CVUSA/``)::

    splits/train-19zl.csv      35,532 rows  "bingmap/19/0000001.jpg,streetview/panos/0000001.jpg,streetview/annotations/0000001.png"
    splits/val-19zl.csv         8,884 rows
    bingmap/19/*.jpg           aerial images, 750x750
    streetview/panos/*.jpg     ground panoramas, 1232x224

Column 0 is the aerial image, column 1 the ground panorama, paths relative to ``root``
(``input_data_cvusa.py``). Evaluation (``test_cvusa.py``): every ground panorama of ``val-19zl``
queries every aerial image of the same split; the true match of query ``i`` is aerial ``i``
(protocol ``cross_view_rank``).
"""

from __future__ import annotations

import csv
from pathlib import Path

from zoo.data.base import ImageRecord, RetrievalSet, register_eval_dataset
from zoo.errors import DatasetError

SPLIT_FILES = {"train": "splits/train-19zl.csv", "val": "splits/val-19zl.csv"}


def read_cvusa_split(root: str | Path, split: str = "val", check_files: bool = True) -> list[tuple[Path, Path]]:
    """``[(aerial path, ground path), ...]`` of a split, in file order.

    Raises:
        DatasetError: unknown split, missing CSV, a malformed row, or (``check_files``) missing images.
    """
    root = Path(root)
    if split not in SPLIT_FILES:
        raise DatasetError(f"CVUSA split must be one of {', '.join(SPLIT_FILES)}, got {split!r}")
    csv_path = root / SPLIT_FILES[split]
    if not csv_path.is_file():
        raise DatasetError(f"CVUSA split file not found: {csv_path} (expected the released layout: "
                           f"{root}/splits/{{train,val}}-19zl.csv, bingmap/19/, streetview/panos/)")
    pairs = []
    with open(csv_path, newline="") as f:
        for line_no, row in enumerate(csv.reader(f), 1):
            if not row or not "".join(row).strip():
                continue
            if len(row) < 2:
                raise DatasetError(f"{csv_path}:{line_no}: expected 'aerial,ground[,annotation]', got {row!r}")
            pairs.append((root / row[0].strip(), root / row[1].strip()))
    if not pairs:
        raise DatasetError(f"{csv_path}: no image pairs")
    if check_files:
        missing = [p for pair in pairs for p in pair if not p.is_file()]
        if missing:
            raise DatasetError(f"CVUSA {split}: {len(missing)} image(s) listed in {csv_path} are missing, "
                               f"e.g. {missing[0]}")
    return pairs


@register_eval_dataset("cvusa")
def cvusa(root: Path, split: str = "val", check_files: bool = True) -> RetrievalSet:
    """Ground panoramas (queries) and aerial images (database) of a CVUSA split; ground truth =
    the index of each query's aerial image (``range(N)``)."""
    pairs = read_cvusa_split(root, split, check_files)
    return RetrievalSet(
        name=f"cvusa_{split}", root=Path(root),
        queries=[ImageRecord(ground) for _, ground in pairs],
        database=[ImageRecord(aerial) for aerial, _ in pairs],
        ground_truth=list(range(len(pairs))),
        protocol="cross_view_rank",
        meta={"split": split},
    )
