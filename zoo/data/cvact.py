"""CVACT (Liu & Li, CVPR 2019), as CVFT reads it (``OriNet_CVACT/input_data_VGG.py`` for val and
training, ``input_data_ACT_test.py`` for test).

``ACT_data.mat`` (from Liumouliu/OriCNN, ``CVACT_orientations/``) holds ``panoIds`` (N strings),
``utm`` (N x 2 easting/northing, metres) and 1-based index lists ``trainSet.trainInd``,
``valSet.valInd`` (CVACT_val, 8,884 pairs) and ``valSetAll.valInd`` (CVACT_test, 92,802 pairs).

Layouts under ``root``:

* ``val`` / ``train`` (``ANU_data_small``): ``streetview/<id>_grdView.png`` (112x616) and
  ``satview_polish/<id>_satView_polish.png`` (256x256), used as they are;
* ``test`` (``ANU_data_test``): ``streetview/<id>_grdView.jpg`` (832x1664 panoramas, of which the
  loader keeps rows 208..623, the middle 416, before resizing to 112x616) and
  ``satview_polish/<id>_satView_polish.jpg`` (resized to 256x256).

The ground truth of the ``cross_view_rank`` protocol is the query's own aerial index, as CVFT's
``test_cvact.py``; ``meta["utm"]`` keeps the coordinates (CVACT_test is usually scored with every
aerial image within 25 m counted as correct, which needs a distance-aware protocol).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from zoo.data.base import ImageRecord, RetrievalSet, register_eval_dataset
from zoo.errors import DatasetError

SPLIT_KEYS = {"train": ("trainSet", "trainInd"), "val": ("valSet", "valInd"), "test": ("valSetAll", "valInd")}
PANO_HEIGHT = 832        # full-resolution CVACT_test panorama height
PANO_CROP = 832 // 2     # panoCropPixels: rows kept around the horizon
POSITIVE_METRES = 25.0   # posDistThr


def _load_mat(path: Path) -> dict[str, Any]:
    try:
        import scipy.io
    except ImportError as err:
        raise ImportError("reading CVACT's ACT_data.mat needs scipy: pip install retrieval-zoo[eval]") from err
    if not path.is_file():
        raise DatasetError(f"CVACT index not found: {path} (ACT_data.mat from Liumouliu/OriCNN "
                           "CVACT_orientations/; pass mat_file=PATH if it lives elsewhere)")
    try:
        return scipy.io.loadmat(str(path))
    except Exception as err:  # scipy raises several types for a corrupt file
        raise DatasetError(f"{path}: not a readable MATLAB file ({err})") from err


def read_cvact_split(root: str | Path, split: str = "val", mat_file: str | Path = "ACT_data.mat") -> tuple[list[str], np.ndarray]:
    """``(pano ids, utm (N, 2) float64)`` of a split, in the .mat file's order."""
    root = Path(root)
    if split not in SPLIT_KEYS:
        raise DatasetError(f"CVACT split must be one of {', '.join(SPLIT_KEYS)}, got {split!r}")
    mat_path = Path(mat_file) if Path(mat_file).is_absolute() else root / mat_file
    data = _load_mat(mat_path)
    struct, field = SPLIT_KEYS[split]
    for key in ("panoIds", "utm", struct):
        if key not in data:
            raise DatasetError(f"{mat_path}: no variable {key!r} (found {', '.join(k for k in data if not k.startswith('__'))})")
    try:
        indices = np.asarray(data[struct][field][0][0]).reshape(-1).astype(np.int64) - 1  # MATLAB is 1-based
    except (ValueError, IndexError) as err:
        raise DatasetError(f"{mat_path}: {struct}.{field} is not an index list ({err})") from err
    ids = [str(p).strip() for p in np.asarray(data["panoIds"]).reshape(-1)]
    utm = np.asarray(data["utm"], dtype=np.float64)
    if utm.shape != (len(ids), 2):
        raise DatasetError(f"{mat_path}: utm has shape {utm.shape}, expected ({len(ids)}, 2)")
    if indices.size == 0 or indices.min() < 0 or indices.max() >= len(ids):
        raise DatasetError(f"{mat_path}: {struct}.{field} indexes outside the {len(ids)} panoIds")
    return [ids[i] for i in indices], utm[indices]


def cvact_paths(root: Path, pano_id: str, split: str) -> tuple[Path, Path]:
    """``(ground, aerial)`` file of one location (PNG for train/val, JPEG for test)."""
    ext = "jpg" if split == "test" else "png"
    return (root / "streetview" / f"{pano_id}_grdView.{ext}",
            root / "satview_polish" / f"{pano_id}_satView_polish.{ext}")


def _check_test_panorama(path: Path) -> None:
    """The crop box assumes CVACT_test's 832x1664 panoramas; a resized copy would be cropped wrongly."""
    from zoo.io import image_size

    size = image_size(path)
    if size != (2 * PANO_HEIGHT, PANO_HEIGHT):
        raise DatasetError(f"{path}: CVACT_test panoramas must be {2 * PANO_HEIGHT}x{PANO_HEIGHT} (the loader keeps rows "
                           f"{(PANO_HEIGHT - PANO_CROP) // 2}..{(PANO_HEIGHT + PANO_CROP) // 2 - 1}), got {size[0]}x{size[1]}")


@register_eval_dataset("cvact")
def cvact(root: Path, split: str = "val", mat_file: str | Path = "ACT_data.mat", check_files: bool = True) -> RetrievalSet:
    """Ground panoramas (queries) and aerial images (database) of CVACT val or test."""
    root = Path(root)
    ids, utm = read_cvact_split(root, split, mat_file)
    pairs = [cvact_paths(root, pano_id, split) for pano_id in ids]
    if check_files:
        missing = [p for pair in pairs for p in pair if not p.is_file()]
        if missing:
            raise DatasetError(f"CVACT {split}: {len(missing)} image(s) missing under {root}, e.g. {missing[0]}")
    if split == "test" and check_files:
        _check_test_panorama(pairs[0][0])
    start = (PANO_HEIGHT - PANO_CROP) // 2
    # CVACT_test panoramas are cropped to their middle rows before the transform's resize.
    box = (0.0, float(start), float(2 * PANO_HEIGHT), float(start + PANO_CROP)) if split == "test" else None
    return RetrievalSet(
        name=f"cvact_{split}", root=root,
        queries=[ImageRecord(ground, box) for ground, _ in pairs],
        database=[ImageRecord(aerial) for _, aerial in pairs],
        ground_truth=list(range(len(pairs))),
        protocol="cross_view_rank",
        meta={"split": split, "utm": utm, "positive_metres": POSITIVE_METRES},
    )
