"""DA-Campus (DyCL): drone and satellite images of campus places with geodesic relevance levels.

Layout (Hub dataset ``www0wwwjs1/DA_Campus``, as DyCL's ``datasets/*da_campus_dataset.py`` read it)::

    <root>/satellite/{train,test}.txt      header "path class_id latitude longitude", one row per place
    <root>/drone/{train,test}.txt          same columns, 60 drone images per satellite image
    <root>/{satellite,drone}/<path>        the images (paths relative to their platform folder)

Relevance levels between two places come from the geodesic (WGS-84 ellipsoid) distance ``d`` in
metres, as DyCL's ``lib/create_label_matrix*.py`` (geopy ``distance``):

    3: d <= 3 m (same place)   2: 3 < d <= 200   1: 200 < d <= 500   0: d > 500

**Quirk of the original, reproduced by default** (``row_batch``): the place-level matrix is built
in row blocks (128 rows for the test set, ``TestDataset.RELEVANCE_BS``; 80 for training,
``BaseDataset.RELEVANCE_BS``) by a function that sets the entry at *local* row ``i``, *global*
column ``i`` to distance 0. For every block after the first, row ``k*B + i`` is therefore marked
"same place" as column ``i``. The evaluation ranks with this matrix (``create_label_test``) while
the H-AP relevances (``get_all_relevance``) come from the exact coordinates. ``row_batch=None``
gives the corrected matrix.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from zoo.data.base import ImageRecord, RetrievalSet, register_eval_dataset
from zoo.errors import DatasetError

PLATFORMS = ("satellite", "drone")
COLUMNS = ("path", "class_id", "latitude", "longitude")
#: (upper bound in metres, level) from the finest level down; beyond the last: level 0
THRESHOLDS = ((3.0, 3), (200.0, 2), (500.0, 1))
TEST_ROW_BATCH = 128
TRAIN_ROW_BATCH = 80

# WGS-84
_A = 6378137.0
_F = 1 / 298.257223563
_B = _A * (1 - _F)


def geodesic_distance(lat1: Any, lon1: Any, lat2: Any, lon2: Any, iterations: int = 200) -> np.ndarray:
    """Geodesic distance in metres on the WGS-84 ellipsoid (Vincenty's inverse formula, vectorised).

    Broadcasts its arguments (degrees). Agrees with geopy's ``distance`` (Karney's algorithm),
    which DyCL uses, to well below a millimetre for points that are not nearly antipodal.
    """
    lat1, lon1, lat2, lon2 = np.broadcast_arrays(*(np.asarray(v, dtype=np.float64) for v in (lat1, lon1, lat2, lon2)))
    u1 = np.arctan((1 - _F) * np.tan(np.radians(lat1)))
    u2 = np.arctan((1 - _F) * np.tan(np.radians(lat2)))
    big_l = np.radians(lon2 - lon1)
    su1, cu1, su2, cu2 = np.sin(u1), np.cos(u1), np.sin(u2), np.cos(u2)
    lam = big_l.copy()
    for _ in range(iterations):
        sl, cl = np.sin(lam), np.cos(lam)
        sin_sigma = np.hypot(cu2 * sl, cu1 * su2 - su1 * cu2 * cl)
        cos_sigma = su1 * su2 + cu1 * cu2 * cl
        sigma = np.arctan2(sin_sigma, cos_sigma)
        with np.errstate(invalid="ignore", divide="ignore"):
            sin_alpha = np.where(sin_sigma == 0, 0.0, cu1 * cu2 * sl / sin_sigma)
            cos2_alpha = 1 - sin_alpha ** 2
            cos_2sm = np.where(cos2_alpha == 0, 0.0, cos_sigma - 2 * su1 * su2 / cos2_alpha)
        c = _F / 16 * cos2_alpha * (4 + _F * (4 - 3 * cos2_alpha))
        lam_new = big_l + (1 - c) * _F * sin_alpha * (
            sigma + c * sin_sigma * (cos_2sm + c * cos_sigma * (-1 + 2 * cos_2sm ** 2)))
        done = np.abs(lam_new - lam) < 1e-12
        lam = lam_new
        if done.all():
            break
    u_sq = cos2_alpha * (_A ** 2 - _B ** 2) / _B ** 2
    big_a = 1 + u_sq / 16384 * (4096 + u_sq * (-768 + u_sq * (320 - 175 * u_sq)))
    big_b = u_sq / 1024 * (256 + u_sq * (-128 + u_sq * (74 - 47 * u_sq)))
    delta_sigma = big_b * sin_sigma * (cos_2sm + big_b / 4 * (
        cos_sigma * (-1 + 2 * cos_2sm ** 2) - big_b / 6 * cos_2sm * (-3 + 4 * sin_sigma ** 2) * (-3 + 4 * cos_2sm ** 2)))
    return np.where(sin_sigma == 0, 0.0, _B * big_a * (sigma - delta_sigma))


def distance_levels(distances: np.ndarray) -> np.ndarray:
    """Metres -> relevance level (int8): 3 (<= 3 m), 2 (<= 200 m), 1 (<= 500 m), 0."""
    d = np.asarray(distances)
    out = np.zeros(d.shape, dtype=np.int8)
    for bound, level in reversed(THRESHOLDS):
        out[d <= bound] = level
    return out


def coordinate_levels(coords: np.ndarray, other: np.ndarray) -> np.ndarray:
    """Levels between every row of ``coords`` (M, 2) and of ``other`` (N, 2) (lat, lon in degrees).

    Distances are computed once per pair of *distinct* coordinates (drone images share their
    place's coordinates), so the cost is that of the places, not of the images.
    """
    ua, ia = np.unique(coords, axis=0, return_inverse=True)
    ub, ib = np.unique(other, axis=0, return_inverse=True)
    d = geodesic_distance(ua[:, None, 0], ua[:, None, 1], ub[None, :, 0], ub[None, :, 1])
    return distance_levels(d)[ia.reshape(-1)][:, ib.reshape(-1)]


def place_level_matrix(coords: np.ndarray, row_batch: int | None = TEST_ROW_BATCH) -> np.ndarray:
    """``(P, P)`` levels between places; with ``row_batch`` the original's false "same place"
    entries ``(k*row_batch + i, i)`` for ``k >= 1`` (see the module docstring)."""
    levels = coordinate_levels(coords, coords)
    if row_batch:
        n = len(coords)
        for start in range(row_batch, n, row_batch):
            rows = np.arange(start, min(start + row_batch, n))
            levels[rows, rows - start] = 3
    return levels


@dataclass
class PlatformList:
    """One ``<platform>/<split>.txt``: image paths, class ids and coordinates (lat, lon)."""

    paths: list[Path]
    class_ids: np.ndarray
    coords: np.ndarray


def read_list(root: Path, platform: str, split: str) -> PlatformList:
    """Read ``root/<platform>/<split>.txt`` (space separated, header ``path class_id latitude longitude``)."""
    path = Path(root) / platform / f"{split}.txt"
    if not path.is_file():
        raise DatasetError(f"DA-Campus: {path} not found (expected <root>/{{satellite,drone}}/{{train,test}}.txt)")
    lines = [line.split() for line in path.read_text().splitlines() if line.strip()]
    if not lines or tuple(lines[0]) != COLUMNS:
        raise DatasetError(f"{path}: first line must be the header {' '.join(COLUMNS)!r}, got {' '.join(lines[0]) if lines else 'an empty file'!r}")
    paths, ids, coords = [], [], []
    for n, row in enumerate(lines[1:], start=2):
        if len(row) != 4:
            raise DatasetError(f"{path}:{n}: expected 4 columns ({' '.join(COLUMNS)}), got {len(row)}")
        try:
            ids.append(int(row[1]))
            coords.append((float(row[2]), float(row[3])))
        except ValueError as err:
            raise DatasetError(f"{path}:{n}: {err}") from err
        paths.append(path.parent / row[0])
    return PlatformList(paths, np.asarray(ids, dtype=np.int64), np.asarray(coords, dtype=np.float64).reshape(-1, 2))


def _class_to_row(sat: PlatformList, where: str) -> dict[int, int]:
    rows = {int(c): i for i, c in enumerate(sat.class_ids)}
    if len(rows) != len(sat.class_ids):
        raise DatasetError(f"{where}: a class_id appears on several satellite rows")
    return rows


def _places(ids: np.ndarray, rows: dict[int, int], where: str) -> np.ndarray:
    missing = sorted({int(c) for c in ids if int(c) not in rows})
    if missing:
        raise DatasetError(f"{where}: drone class_id(s) without a satellite image: {missing[:10]}")
    return np.asarray([rows[int(c)] for c in ids], dtype=np.int64)


def read_da_campus(root: str | Path, direction: str = "drone_satellite", split: str = "test",
                   row_batch: int | None = TEST_ROW_BATCH, check_images: bool = True) -> RetrievalSet:
    """DA-Campus retrieval split in one direction.

    Args:
        root: the DA_Campus folder.
        direction: ``drone_satellite`` (drone queries, satellite database) or ``satellite_drone``.
        split: ``test`` (as the paper) or ``train``.
        row_batch: row block of the original's place-level matrix (its false "same place" entries);
            ``None`` for the corrected matrix.
        check_images: check that every listed image exists.

    ``ground_truth``: ``place_levels`` (P, P) int8, ``query_place`` (Q,) and ``db_place`` (N,) rows of
    it (the levels used to judge rankings), and ``level_counts`` (Q, 4): per query, the number of
    database images at each level from the exact coordinates (the H-AP relevances).
    """
    if direction not in ("drone_satellite", "satellite_drone"):
        raise DatasetError(f"DA-Campus direction must be drone_satellite or satellite_drone, not {direction!r}")
    root = Path(root)
    for platform in PLATFORMS:
        if not (root / platform).is_dir():
            raise DatasetError(f"DA-Campus: folder {root / platform} not found")
    sat, drone = read_list(root, "satellite", split), read_list(root, "drone", split)
    where = str(root / "satellite" / f"{split}.txt")
    rows = _class_to_row(sat, where)
    drone_place = _places(drone.class_ids, rows, str(root / "drone" / f"{split}.txt"))
    sat_place = np.arange(len(sat.paths))
    if check_images:
        for lst in (sat, drone):
            absent = [p for p in lst.paths if not p.is_file()]
            if absent:
                raise DatasetError(f"DA-Campus: {len(absent)} listed image(s) missing, e.g. {absent[0]}")
    query, db = (drone, sat) if direction == "drone_satellite" else (sat, drone)
    q_place, d_place = (drone_place, sat_place) if direction == "drone_satellite" else (sat_place, drone_place)
    exact = coordinate_levels(query.coords, db.coords)
    counts = np.stack([(exact == level).sum(1) for level in range(4)], axis=1)
    return RetrievalSet(
        name=f"da_campus_{split}_{direction}", root=root,
        queries=[ImageRecord(p) for p in query.paths], database=[ImageRecord(p) for p in db.paths],
        ground_truth={"place_levels": place_level_matrix(sat.coords, row_batch), "query_place": q_place,
                      "db_place": d_place, "level_counts": counts},
        protocol="hierarchical",
        meta={"direction": direction, "split": split, "row_batch": row_batch, "num_places": len(sat.paths)})


@register_eval_dataset("da_campus_drone_satellite")
def da_campus_drone_satellite(root: Path, **options: Any) -> RetrievalSet:
    """DA-Campus, drone queries against satellite images (options: see :func:`read_da_campus`)."""
    return read_da_campus(root, "drone_satellite", **options)


@register_eval_dataset("da_campus_satellite_drone")
def da_campus_satellite_drone(root: Path, **options: Any) -> RetrievalSet:
    """DA-Campus, satellite queries against drone images (options: see :func:`read_da_campus`)."""
    return read_da_campus(root, "satellite_drone", **options)


class DACampusPairs(torch.utils.data.Dataset):
    """Training pairs of DyCL's ``DaCampusDataset``: each drone image with its place's satellite image.

    Item: ``(satellite_image, drone_image, label, index)`` where ``label`` is the place's row in
    :attr:`place_levels` (``(P, P)`` int8 level matrix of the training places, built with the
    original's row block of 80 unless ``row_batch`` says otherwise).
    """

    def __init__(self, root: str | Path, transform: Callable, split: str = "train",
                 row_batch: int | None = TRAIN_ROW_BATCH) -> None:
        from zoo.io import load_image

        root = Path(root)
        self._load = load_image
        sat, drone = read_list(root, "satellite", split), read_list(root, "drone", split)
        rows = _class_to_row(sat, str(root / "satellite" / f"{split}.txt"))
        self.labels = _places(drone.class_ids, rows, str(root / "drone" / f"{split}.txt"))
        self.satellite, self.drone = sat.paths, drone.paths
        self.place_levels = torch.from_numpy(place_level_matrix(sat.coords, row_batch).astype(np.int64))
        self.num_places = len(sat.paths)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.drone)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor, int, int]:
        label = int(self.labels[index])
        sat = self.transform(self._load(self.satellite[label]))
        drone = self.transform(self._load(self.drone[index]))
        return sat, drone, label, index
