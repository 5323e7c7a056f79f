"""Visual place recognition benchmarks: MSLS val / challenge, Nordland, Pittsburgh 30k/250k, SPED.

Each reader accepts the on-disk layouts these benchmarks are distributed in:

``lists`` — the image lists and ground truth as ``.npy`` files used by the evaluation of
    serizba/salad (inherited from MixVPR / GSV-Cities), e.g. ``msls_val_dbImages.npy``,
    ``msls_val_qImages.npy``, ``msls_val_qIdx.npy``, ``msls_val_pIdx.npy``; ``Nordland_gt.npy``;
    ``SPED_gt.npy``; ``pitts30k_test_gt.npy``. Image paths in the lists are relative to ``root``.
    The lists are looked up in ``lists_dir`` (option), else in ``root``, else in
    ``root/datasets/<folder>`` (the original repository's ``datasets/`` folder copied next to the images).
``utm`` — the folder layout of the common VPR data-set downloaders: ``root/images/<split>/database``
    and ``root/images/<split>/queries`` with file names ``@UTM_east@UTM_north@...@.jpg``; positives
    are the database images within ``threshold`` metres of the query (25 m, as every VPR paper).
``mat`` (Pittsburgh) — the NetVLAD ``datasets/pitts30k_test.mat`` dbStruct (image names + UTM),
    database images under ``root``, queries under ``root/queries_real``; positives within the
    struct's ``posDistThr`` (25 m).
``folders`` (SPED) — ``root/ref`` and ``root/query`` with one query per reference image, paired
    by sorted file name (ground truth: the same index).

``layout="auto"`` (default) takes the first layout whose files exist. Ground truth is a list
with one int64 array of positive database indices per query, for the ``vpr_recall`` protocol
(Recall@1/5/10/15/20/25, as ``eval.py`` of serizba/salad). MSLS challenge has no public ground
truth: its protocol ``msls_challenge`` writes the submission file for the evaluation server.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np

from zoo.data.base import ImageRecord, RetrievalSet, register_eval_dataset
from zoo.errors import DatasetError
from zoo.io import IMAGE_SUFFIXES, load_npy

#: Recall cut-offs of serizba/salad's eval.py.
K_VALUES = (1, 5, 10, 15, 20, 25)
#: Positive distance of MSLS and Pittsburgh (metres).
POSITIVE_METRES = 25.0


# --------------------------------------------------------------------------- helpers


def _records(root: Path, names: Sequence[str]) -> list[ImageRecord]:
    return [ImageRecord(root / str(name)) for name in names]


def _find_lists(root: Path, files: Sequence[str], lists_dir: str | Path | None, folder: str) -> Path | None:
    """The first candidate folder holding every file of ``files`` (None if none does)."""
    candidates = [Path(lists_dir).expanduser()] if lists_dir else [root, root / "datasets" / folder]
    for where in candidates:
        if all((where / f).is_file() for f in files):
            return where
    if lists_dir:
        missing = [f for f in files if not (Path(lists_dir) / f).is_file()]
        raise DatasetError(f"lists_dir {lists_dir}: missing {', '.join(missing)}")
    return None


def _as_positives(gt: Any, num_queries: int, source: Path) -> list[np.ndarray]:
    if len(gt) != num_queries:
        raise DatasetError(f"{source}: ground truth for {len(gt)} queries, but there are {num_queries} queries")
    return [np.asarray(p, dtype=np.int64).reshape(-1) for p in gt]


def utm_from_name(path: Path) -> tuple[float, float]:
    """``@UTM_east@UTM_north@...`` file name -> (east, north)."""
    fields = path.name.split("@")
    try:
        return float(fields[1]), float(fields[2])
    except (IndexError, ValueError):
        raise DatasetError(f"{path}: file name does not start with @UTM_east@UTM_north@") from None


def positives_within(query_xy: np.ndarray, db_xy: np.ndarray, radius: float, chunk: int = 1024) -> list[np.ndarray]:
    """Database indices within ``radius`` of each query (Euclidean, in the coordinates' units), sorted by distance."""
    out: list[np.ndarray] = []
    db_xy = np.asarray(db_xy, dtype=np.float64)
    for start in range(0, len(query_xy), chunk):
        q = np.asarray(query_xy[start:start + chunk], dtype=np.float64)
        d2 = ((q[:, None, :] - db_xy[None, :, :]) ** 2).sum(-1)
        for row in d2:
            idx = np.flatnonzero(row <= radius * radius)
            out.append(idx[np.argsort(row[idx], kind="stable")].astype(np.int64))
    return out


def _list_folder(folder: Path) -> list[Path]:
    if not folder.is_dir():
        raise DatasetError(f"image folder not found: {folder}")
    images = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not images:
        raise DatasetError(f"no images in {folder}")
    return images


def _utm_split(root: Path, split: str) -> tuple[Path, Path] | None:
    db, q = root / "images" / split / "database", root / "images" / split / "queries"
    return (db, q) if db.is_dir() and q.is_dir() else None


def _read_utm(name: str, root: Path, split: str, threshold: float) -> RetrievalSet:
    found = _utm_split(root, split)
    if found is None:
        raise DatasetError(f"{name}: {root}/images/{split}/database and .../queries not found")
    db_paths, q_paths = _list_folder(found[0]), _list_folder(found[1])
    db_xy = np.array([utm_from_name(p) for p in db_paths])
    q_xy = np.array([utm_from_name(p) for p in q_paths])
    return RetrievalSet(name, root, [ImageRecord(p) for p in q_paths], [ImageRecord(p) for p in db_paths],
                        positives_within(q_xy, db_xy, threshold), "vpr_recall",
                        {"layout": "utm", "threshold_m": threshold, "k_values": list(K_VALUES)})


def _read_lists(name: str, root: Path, where: Path, files: Sequence[str]) -> RetrievalSet:
    """The ``lists`` layout with three files in ``where``: database images, query images, positives per query."""
    db, queries = load_npy(where / files[0]), load_npy(where / files[1])
    gt = _as_positives(load_npy(where / files[2]), len(queries), where / files[2])
    return RetrievalSet(name, root, _records(root, queries), _records(root, db), gt, "vpr_recall",
                        {"layout": "lists", "lists_dir": str(where), "k_values": list(K_VALUES)})


def _no_layout(name: str, root: Path, expected: Sequence[str]) -> DatasetError:
    return DatasetError(f"{name}: no known layout under {root}; expected one of: " + "; ".join(expected))


def _check_layout(layout: str, allowed: Sequence[str], name: str) -> None:
    if layout not in ("auto", *allowed):
        raise DatasetError(f"{name}: unknown layout {layout!r}; choose auto, {', '.join(allowed)}")


# --------------------------------------------------------------------------- MSLS


@register_eval_dataset("msls_val")
def read_msls_val(root: Path, layout: str = "auto", lists_dir: str | None = None,
                  threshold: float = POSITIVE_METRES) -> RetrievalSet:
    """MSLS validation (740 queries of cph + sf in serizba/salad's lists; the database is every
    val city image; positives precomputed in ``msls_val_pIdx.npy``)."""
    _check_layout(layout, ("lists", "utm"), "msls_val")
    files = ["msls_val_dbImages.npy", "msls_val_qImages.npy", "msls_val_qIdx.npy", "msls_val_pIdx.npy"]
    where = _find_lists(root, files, lists_dir, "msls_val") if layout in ("auto", "lists") else None
    if where is not None:
        db = load_npy(where / files[0])
        q_all = load_npy(where / files[1])
        q_idx = np.asarray(load_npy(where / files[2]), dtype=np.int64)
        queries = [q_all[i] for i in q_idx]
        gt = _as_positives(load_npy(where / files[3]), len(queries), where / files[3])
        return RetrievalSet("msls_val", root, _records(root, queries), _records(root, db), gt, "vpr_recall",
                            {"layout": "lists", "lists_dir": str(where), "k_values": list(K_VALUES)})
    if layout in ("auto", "utm") and _utm_split(root, "val") is not None:
        return _read_utm("msls_val", root, "val", threshold)
    raise _no_layout("msls_val", root, [f"{', '.join(files)} (in root, root/datasets/msls_val or lists_dir)",
                                        "images/val/{database,queries}/@east@north@...jpg"])


@register_eval_dataset("msls_challenge")
def read_msls_challenge(root: Path, lists_dir: str | None = None) -> RetrievalSet:
    """MSLS test set ("challenge"): image lists only; the ground truth is held by the evaluation
    server, so the ``msls_challenge`` protocol writes the submission file instead of recalls."""
    files = ["msls_test_dbImages.npy", "msls_test_qImages.npy"]
    where = _find_lists(root, files, lists_dir, "msls_test")
    if where is None:
        raise _no_layout("msls_challenge", root, [f"{', '.join(files)} (in root, root/datasets/msls_test or lists_dir)"])
    db, queries = load_npy(where / files[0]), load_npy(where / files[1])
    return RetrievalSet("msls_challenge", root, _records(root, queries), _records(root, db), None, "msls_challenge",
                        {"layout": "lists", "lists_dir": str(where),
                         "query_keys": [Path(str(q)).stem for q in queries],
                         "database_keys": [Path(str(d)).stem for d in db]})


# --------------------------------------------------------------------------- Nordland, SPED


@register_eval_dataset("nordland")
def read_nordland(root: Path, layout: str = "auto", lists_dir: str | None = None,
                  threshold: float = POSITIVE_METRES) -> RetrievalSet:
    """Nordland (VPR-Bench split: 27592 summer references, 2760 winter queries); positives are the
    matching frame ±1, as listed in ``Nordland_gt.npy``. With the ``utm`` layout the positives come
    from the coordinates in the file names and ``threshold``."""
    _check_layout(layout, ("lists", "utm"), "nordland")
    files = ["Nordland_dbImages.npy", "Nordland_qImages.npy", "Nordland_gt.npy"]
    where = _find_lists(root, files, lists_dir, "Nordland") if layout in ("auto", "lists") else None
    if where is not None:
        return _read_lists("nordland", root, where, files)
    if layout in ("auto", "utm") and _utm_split(root, "test") is not None:
        return _read_utm("nordland", root, "test", threshold)
    raise _no_layout("nordland", root, [f"{', '.join(files)} (in root, root/datasets/Nordland or lists_dir) "
                                        "with ref/ and query/ images", "images/test/{database,queries}/@east@north@...jpg"])


@register_eval_dataset("sped")
def read_sped(root: Path, layout: str = "auto", lists_dir: str | None = None) -> RetrievalSet:
    """SPED (VPR-Bench: 607 queries, 607 references); query i matches reference i."""
    _check_layout(layout, ("lists", "folders"), "sped")
    files = ["SPED_dbImages.npy", "SPED_qImages.npy", "SPED_gt.npy"]
    where = _find_lists(root, files, lists_dir, "SPED") if layout in ("auto", "lists") else None
    if where is not None:
        return _read_lists("sped", root, where, files)
    if layout in ("auto", "folders") and (root / "ref").is_dir() and (root / "query").is_dir():
        refs, queries = _list_folder(root / "ref"), _list_folder(root / "query")
        if [p.name for p in refs] != [p.name for p in queries]:
            raise DatasetError(f"sped: {root}/ref and {root}/query must hold the same file names "
                               f"({len(refs)} vs {len(queries)} images)")
        gt = [np.array([i], dtype=np.int64) for i in range(len(queries))]
        return RetrievalSet("sped", root, [ImageRecord(p) for p in queries], [ImageRecord(p) for p in refs], gt,
                            "vpr_recall", {"layout": "folders", "k_values": list(K_VALUES)})
    raise _no_layout("sped", root, [f"{', '.join(files)} (in root, root/datasets/SPED or lists_dir)",
                                    "ref/ and query/ with the same file names"])


# --------------------------------------------------------------------------- Pittsburgh


def _read_pitts_mat(path: Path) -> tuple[list[str], np.ndarray, list[str], np.ndarray, float]:
    """NetVLAD dbStruct: (db image names, db UTM (N, 2), query names, query UTM (Q, 2), positive threshold)."""
    from scipy.io import loadmat

    try:
        struct = loadmat(str(path))["dbStruct"].item()
    except Exception as err:  # scipy raises many kinds for a malformed file
        raise DatasetError(f"{path}: not a NetVLAD dbStruct .mat file ({err})") from err
    db = [str(np.asarray(f).reshape(-1)[0]) for f in struct[1].reshape(-1)]
    queries = [str(np.asarray(f).reshape(-1)[0]) for f in struct[3].reshape(-1)]
    return db, np.asarray(struct[2]).T, queries, np.asarray(struct[4]).T, float(np.asarray(struct[7]).item())


def _read_pitts(which: str, root: Path, layout: str, lists_dir: str | None, threshold: float) -> RetrievalSet:
    _check_layout(layout, ("lists", "mat", "utm"), which)
    files = [f"{which}_dbImages.npy", f"{which}_qImages.npy", f"{which}_gt.npy"]
    where = _find_lists(root, files, lists_dir, "Pittsburgh") if layout in ("auto", "lists") else None
    if where is not None:
        return _read_lists(which, root, where, files)
    mat = root / "datasets" / f"{which}.mat"
    if layout in ("auto", "mat") and mat.is_file():
        db, db_xy, queries, q_xy, radius = _read_pitts_mat(mat)
        return RetrievalSet(which, root, _records(root / "queries_real", queries), _records(root, db),
                            positives_within(q_xy, db_xy, radius), "vpr_recall",
                            {"layout": "mat", "threshold_m": radius, "k_values": list(K_VALUES)})
    if layout in ("auto", "utm") and _utm_split(root, "test") is not None:
        return _read_utm(which, root, "test", threshold)
    raise _no_layout(which, root, [f"{', '.join(files)} (in root, root/datasets/Pittsburgh or lists_dir)",
                                   f"datasets/{which}.mat (NetVLAD dbStruct) with queries_real/",
                                   "images/test/{database,queries}/@east@north@...jpg"])


@register_eval_dataset("pitts30k_test")
def read_pitts30k_test(root: Path, layout: str = "auto", lists_dir: str | None = None,
                       threshold: float = POSITIVE_METRES) -> RetrievalSet:
    """Pittsburgh 30k test (10k database, 6816 queries); positives within 25 m."""
    return _read_pitts("pitts30k_test", root, layout, lists_dir, threshold)


@register_eval_dataset("pitts30k_val")
def read_pitts30k_val(root: Path, layout: str = "auto", lists_dir: str | None = None,
                      threshold: float = POSITIVE_METRES) -> RetrievalSet:
    """Pittsburgh 30k validation; positives within 25 m."""
    return _read_pitts("pitts30k_val", root, layout, lists_dir, threshold)


@register_eval_dataset("pitts250k_test")
def read_pitts250k_test(root: Path, layout: str = "auto", lists_dir: str | None = None,
                        threshold: float = POSITIVE_METRES) -> RetrievalSet:
    """Pittsburgh 250k test (83952 database, 8280 queries); positives within 25 m."""
    return _read_pitts("pitts250k_test", root, layout, lists_dir, threshold)
