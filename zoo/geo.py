"""Where images were taken, how far apart two places are, and where a query was probably taken.

Coordinates of a set of images come from one *source* (the ``--coords`` option of
``python -m zoo index`` and ``python -m zoo retrieve``):

``FILE.csv``  a table with a header ``path,lat,lon`` (degrees, WGS84) or ``path,east,north``
              (UTM metres). A row's path is matched against an image's path as given, relative to
              the CSV file's folder, and finally by file name alone when that name is unique.
``exif``      the GPS block of each image's EXIF (GPSLatitude/GPSLongitude with their N/S, E/W refs),
              read with PIL.
``names``     the ``@UTM_east@UTM_north@...`` file names of the VPR benchmarks (MSLS, Pittsburgh,
              the VPR data-set downloaders), parsed by :func:`zoo.data.vpr.utm_from_name`.

UTM coordinates need a zone to become latitude/longitude (``--utm-zone 17T``, converted with the
optional ``utm`` package from PyPI, in the ``index`` extra). Without a zone they stay UTM metres: distances between them
are then Euclidean, which is exact within one zone, and maps are drawn in metres. Every image
set keeps one kind (``latlon`` or ``utm``); an image its source says nothing about has NaN
coordinates and is left out of every estimate and error.

Distances are haversine great-circle metres on a sphere of the mean Earth radius
(:data:`EARTH_RADIUS_M`, IUGG) for latitude/longitude, Euclidean for UTM.

Localisation (:func:`localise`): the *top-1* estimate is the position of the best match that has
one. The *consensus* estimate looks at the top ``K`` matches: each match's support is the sum of
the similarities (clipped at 0) of the matches within ``radius`` metres of it (itself included);
the best-supported match (the better-ranked on ties) and the matches within ``radius`` of it are
the inliers, and the estimate is their similarity-weighted mean position. The default radius,
:data:`DEFAULT_RADIUS_M` = 25 m, is the positive threshold of the VPR benchmarks (MSLS,
Pittsburgh): matches closer than that show the same place. For latitude/longitude the mean is
taken over offsets from the best-supported match (longitude wrapped to +-180 degrees), which is
exact to well below a millimetre at that radius.
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from zoo.errors import DatasetError, InputError

__all__ = ["Coordinates", "read_coordinates", "haversine_m", "distances_m", "localise", "Localisation",
           "localise_all", "localise_map", "write_localisation", "plot_map", "EARTH_RADIUS_M", "DEFAULT_RADIUS_M", "KINDS"]

#: Mean Earth radius R1 of the IUGG (metres).
EARTH_RADIUS_M = 6371008.8
#: Radius of the consensus (metres): the 25 m positive threshold of MSLS and Pittsburgh.
DEFAULT_RADIUS_M = 25.0
#: The two kinds of coordinates a set can hold.
KINDS = ("latlon", "utm")


@dataclass
class Coordinates:
    """Positions of ``N`` images: ``xy`` is ``(N, 2)`` float64, (lat, lon) degrees for ``latlon``
    or (east, north) metres for ``utm``; NaN rows are unknown."""

    xy: np.ndarray
    kind: str
    source: str = ""

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise InputError(f"coordinate kind: expected one of {KINDS}, got {self.kind!r}")
        self.xy = np.asarray(self.xy, dtype=np.float64).reshape(-1, 2)

    @property
    def known(self) -> np.ndarray:
        """``(N,)`` bool: which images have coordinates."""
        return ~np.isnan(self.xy).any(1)

    def take(self, index: np.ndarray) -> "Coordinates":
        return Coordinates(self.xy[np.asarray(index)], self.kind, self.source)


# --------------------------------------------------------------------------- sources


def _utm_to_latlon(east: float, north: float, zone: str) -> tuple[float, float]:
    try:
        import utm
    except ImportError:
        raise InputError("--utm-zone needs the `utm` package (pip install utm, or the `index` extra); "
                         "without a zone, coordinates stay UTM metres") from None
    number, letter = _parse_zone(zone)
    return tuple(float(v) for v in utm.to_latlon(east, north, number, letter))  # type: ignore[return-value]


def _parse_zone(zone: str) -> tuple[int, str]:
    text = zone.strip().upper()
    digits = "".join(ch for ch in text if ch.isdigit())
    letter = text[len(digits):]
    if not digits or not text.startswith(digits) or len(letter) != 1 or not 1 <= int(digits) <= 60 \
            or letter not in "CDEFGHJKLMNPQRSTUVWX":
        raise InputError(f"--utm-zone: expected a zone number 1-60 and latitude band letter, e.g. 17T, got {zone!r}")
    return int(digits), letter


def _rational(value) -> float:
    # EXIF rationals come as PIL IFDRational (float() works) or (numerator, denominator) pairs.
    if isinstance(value, tuple) and len(value) == 2:
        return value[0] / value[1]
    return float(value)


def exif_latlon(path: Path) -> tuple[float, float] | None:
    """(lat, lon) degrees from an image's EXIF GPS block, or None when it has none."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            gps = img.getexif().get_ifd(0x8825)  # GPSInfo
    except FileNotFoundError:
        raise DatasetError(f"image not found: {path}") from None
    except (UnidentifiedImageError, OSError) as err:
        raise InputError(f"cannot read EXIF of {path}: {err}") from err
    # Tags 1-4: GPSLatitudeRef, GPSLatitude, GPSLongitudeRef, GPSLongitude.
    if not all(tag in gps for tag in (1, 2, 3, 4)):
        return None
    try:
        lat = sum(_rational(v) / 60 ** i for i, v in enumerate(gps[2]))
        lon = sum(_rational(v) / 60 ** i for i, v in enumerate(gps[4]))
    except (TypeError, ValueError, ZeroDivisionError) as err:
        raise InputError(f"{path}: malformed EXIF GPS coordinates ({err})") from err
    lat = -lat if str(gps[1]).upper().startswith("S") else lat
    lon = -lon if str(gps[3]).upper().startswith("W") else lon
    return lat, lon


def _read_csv(csv_path: Path) -> tuple[str, dict[str, tuple[float, float]]]:
    if not csv_path.is_file():
        raise DatasetError(f"coordinates file not found: {csv_path}")
    with open(csv_path, newline="") as f:
        reader = csv.DictReader(f)
        fields = [c.strip().lower() for c in reader.fieldnames or []]
        if fields[:3] == ["path", "lat", "lon"]:
            kind = "latlon"
        elif fields[:3] == ["path", "east", "north"]:
            kind = "utm"
        else:
            raise DatasetError(f"{csv_path}: expected a header 'path,lat,lon' or 'path,east,north', got "
                               f"{','.join(reader.fieldnames or [])!r}")
        rows: dict[str, tuple[float, float]] = {}
        for line, row in enumerate(reader, start=2):
            values = list(row.values())
            try:
                a, b = float(values[1]), float(values[2])
            except (TypeError, ValueError, IndexError):
                raise DatasetError(f"{csv_path} line {line}: expected a path and two numbers, got {values!r}") from None
            if kind == "latlon" and not (-90 <= a <= 90 and -180 <= b <= 360):
                raise DatasetError(f"{csv_path} line {line}: latitude {a} / longitude {b} out of range")
            rows[str(values[0]).strip()] = (a, b)
    return kind, rows


def _match_csv(paths: Sequence[Path], csv_path: Path, rows: dict[str, tuple[float, float]]) -> np.ndarray:
    base = csv_path.parent.resolve()
    resolved = {str((base / p).resolve()): v for p, v in rows.items()}
    names: dict[str, list[tuple[float, float]]] = {}
    for p, v in rows.items():
        names.setdefault(Path(p).name, []).append(v)
    out = np.full((len(paths), 2), np.nan)
    for i, path in enumerate(paths):
        hit = rows.get(str(path)) or resolved.get(str(Path(path).resolve()))
        if hit is None and len(names.get(Path(path).name, ())) == 1:
            hit = names[Path(path).name][0]
        if hit is not None:
            out[i] = hit
    return out


def read_coordinates(paths: Sequence[str | Path], source: str, utm_zone: str | None = None,
                     required: bool = True) -> Coordinates:
    """Coordinates of ``paths`` from ``source``: a CSV file, ``"exif"`` or ``"names"`` (module docstring).

    With ``utm_zone`` (e.g. ``"17T"``), UTM coordinates are converted to latitude/longitude. A file
    name that is no ``@UTM@`` name raises (naming it) when ``required``, else gets NaN.

    Returns:
        :class:`Coordinates` with ``(len(paths), 2)`` positions (NaN where the source has none).
    """
    from zoo.data.vpr import utm_from_name

    paths = [Path(p) for p in paths]
    if source == "exif":
        kind = "latlon"
        xy = np.array([exif_latlon(p) or (np.nan, np.nan) for p in paths], dtype=np.float64).reshape(-1, 2)
    elif source == "names":
        kind = "utm"
        xy = np.full((len(paths), 2), np.nan)
        for i, p in enumerate(paths):
            try:
                xy[i] = utm_from_name(p)
            except DatasetError:
                if required:
                    raise
    else:
        csv_path = Path(source).expanduser()
        if csv_path.suffix.lower() != ".csv" and not csv_path.is_file():
            raise InputError(f"--coords: expected a CSV file, 'exif' or 'names', got {source!r}")
        kind, rows = _read_csv(csv_path)
        xy = _match_csv(paths, csv_path, rows)
    if kind == "utm" and utm_zone:
        xy = np.array([_utm_to_latlon(e, n, utm_zone) if not math.isnan(e) else (np.nan, np.nan)
                       for e, n in xy], dtype=np.float64).reshape(-1, 2)
        kind = "latlon"
    return Coordinates(xy, kind, source + (f" (UTM zone {utm_zone})" if utm_zone else ""))


# --------------------------------------------------------------------------- distances


def haversine_m(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Great-circle distance in metres between (lat, lon) degrees ``a (..., 2)`` and ``b (..., 2)``
    (broadcast), on a sphere of radius :data:`EARTH_RADIUS_M`."""
    a, b = np.radians(np.asarray(a, dtype=np.float64)), np.radians(np.asarray(b, dtype=np.float64))
    dlat, dlon = b[..., 0] - a[..., 0], b[..., 1] - a[..., 1]
    h = np.sin(dlat / 2) ** 2 + np.cos(a[..., 0]) * np.cos(b[..., 0]) * np.sin(dlon / 2) ** 2
    return 2 * EARTH_RADIUS_M * np.arcsin(np.sqrt(np.clip(h, 0.0, 1.0)))


def distances_m(a: np.ndarray, b: np.ndarray, kind: str) -> np.ndarray:
    """Metres between positions ``a`` and ``b`` (broadcast ``(..., 2)``): haversine for ``latlon``,
    Euclidean for ``utm``."""
    if kind == "latlon":
        return haversine_m(a, b)
    if kind == "utm":
        return np.linalg.norm(np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64), axis=-1)
    raise InputError(f"coordinate kind: expected one of {KINDS}, got {kind!r}")


# --------------------------------------------------------------------------- localisation


@dataclass
class Localisation:
    """Estimates for one query; positions are NaN when no match has coordinates."""

    top1: np.ndarray        # (2,) the best match's position
    consensus: np.ndarray   # (2,) weighted mean of the inliers
    inliers: np.ndarray     # (K,) bool over the matches: those averaged
    support: float          # summed similarity of the inliers


def _weighted_mean(points: np.ndarray, weights: np.ndarray, anchor: np.ndarray, kind: str) -> np.ndarray:
    offsets = points - anchor
    if kind == "latlon":
        offsets[:, 1] = (offsets[:, 1] + 180.0) % 360.0 - 180.0  # across the antimeridian
    mean = anchor + (weights[:, None] * offsets).sum(0) / weights.sum()
    if kind == "latlon":
        mean[1] = (mean[1] + 180.0) % 360.0 - 180.0
    return mean


def localise(match_xy: np.ndarray, scores: np.ndarray, kind: str, radius: float = DEFAULT_RADIUS_M) -> Localisation:
    """Top-1 and consensus position of one query from its ``K`` matches, best first.

    Args:
        match_xy: ``(K, 2)`` positions of the matches (NaN rows: unknown, ignored).
        scores: ``(K,)`` similarities of the matches (cosine for the zoo's descriptors).
        kind: ``latlon`` or ``utm``.
        radius: consensus radius in metres.
    """
    if radius <= 0:
        raise InputError(f"--radius must be positive, got {radius}")
    match_xy = np.asarray(match_xy, dtype=np.float64).reshape(-1, 2)
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    known = ~np.isnan(match_xy).any(1)
    nan2 = np.full(2, np.nan)
    if not known.any():
        return Localisation(nan2, nan2.copy(), np.zeros(len(scores), bool), 0.0)
    weights = np.clip(scores, 0.0, None)
    if not weights[known].any():  # every similarity <= 0: count matches instead
        weights = np.ones_like(weights)
    weights = np.where(known, weights, 0.0)
    pts = np.where(known[:, None], match_xy, 0.0)
    near = (distances_m(pts[:, None, :], pts[None, :, :], kind) <= radius) & known[:, None] & known[None, :]
    support = near.astype(np.float64) @ weights
    support[~known] = -1.0
    best = int(np.argmax(support))  # first maximum = the better-ranked match on ties
    inliers = near[best]
    consensus = _weighted_mean(match_xy[inliers], weights[inliers], match_xy[best], kind) \
        if weights[inliers].sum() > 0 else match_xy[best].copy()
    return Localisation(match_xy[int(np.argmax(known))].copy(), consensus, inliers, float(weights[inliers].sum()))


def localise_all(db: Coordinates, scores: np.ndarray, indices: np.ndarray, queries: Coordinates | None = None,
                 radius: float = DEFAULT_RADIUS_M) -> list[dict]:
    """One record per query: top-1 and consensus estimates, the inliers (count and mask over the
    query's valid matches) and, where the query's own position is known, the errors in metres.

    Args:
        db: coordinates of the database.
        scores, indices: ``(Q, K)`` similarities and database indices of each query's matches, best first.
        queries: the queries' own coordinates (same kind as ``db``), or None.
    """
    scores, indices = np.asarray(scores), np.asarray(indices)
    if queries is not None and queries.kind != db.kind:
        raise InputError(f"query coordinates are {queries.kind} but the map's are {db.kind}; give --utm-zone "
                         "so that both become latitude/longitude")
    out = []
    for qi in range(indices.shape[0]):
        valid = indices[qi] >= 0
        est = localise(db.xy[indices[qi][valid]], scores[qi][valid], db.kind, radius)
        rec = {"top1": est.top1, "consensus": est.consensus, "inliers": int(est.inliers.sum()),
               "inlier_mask": est.inliers,
               "support": est.support, "truth": None, "top1_error_m": None, "consensus_error_m": None}
        if queries is not None and queries.known[qi]:
            truth = queries.xy[qi]
            rec["truth"] = truth
            if not np.isnan(est.top1).any():
                rec["top1_error_m"] = float(distances_m(est.top1, truth, db.kind))
                rec["consensus_error_m"] = float(distances_m(est.consensus, truth, db.kind))
        out.append(rec)
    return out


def _labels(kind: str) -> tuple[str, str]:
    return ("lat", "lon") if kind == "latlon" else ("east", "north")


def _num(v) -> float | None:
    return None if v is None or (isinstance(v, float) and math.isnan(v)) else round(float(v), 8)


def write_localisation(out_dir: str | Path, query_paths: Sequence[Path], records: list[dict], kind: str,
                       radius: float) -> tuple[Path, dict]:
    """Write ``positions.csv`` (one row per query) and return it with a JSON-ready summary
    (per-query records and median/mean errors over the queries with known positions)."""
    from zoo.io import atomic_write_text

    a, b = _labels(kind)
    header = ["query", f"top1_{a}", f"top1_{b}", f"consensus_{a}", f"consensus_{b}", "inliers",
              f"true_{a}", f"true_{b}", "top1_error_m", "consensus_error_m"]
    rows = []
    for path, r in zip(query_paths, records):
        truth = r["truth"] if r["truth"] is not None else (None, None)
        rows.append([str(path), *map(_num, r["top1"]), *map(_num, r["consensus"]), r["inliers"],
                     *map(_num, truth), _num(r["top1_error_m"]), _num(r["consensus_error_m"])])
    table = [",".join(header)] + [",".join("" if v is None else str(v) for v in row) for row in rows]
    path = Path(out_dir) / "positions.csv"
    atomic_write_text(path, "\n".join(table) + "\n")
    summary: dict = {"kind": kind, "radius_m": radius, "queries": [dict(zip(header, row)) for row in rows]}
    for name in ("top1_error_m", "consensus_error_m"):
        errs = np.array([r[name] for r in records if r[name] is not None], dtype=np.float64)
        summary[name.replace("_m", "_median_m")] = float(np.median(errs)) if errs.size else None
        summary[name.replace("_m", "_mean_m")] = float(errs.mean()) if errs.size else None
    summary["queries_with_truth"] = int(sum(r["truth"] is not None for r in records))
    json.dumps(summary)  # fail here, not half-way through a results file, on a non-JSON value
    return path, summary


#: At most this many map points are drawn (a random subset beyond): a scatter of a million
#: points takes minutes to render and shows no more than 50k.
MAX_MAP_POINTS = 50_000


def plot_map(path: str | Path, db: Coordinates, indices: np.ndarray, records: list[dict], radius: float,
             n_panels: int = 5) -> Path:
    """A map (matplotlib, no tiles): an overview of the map's points, each query's estimate and,
    where known, its true position; then one zoomed panel for each of the first ``n_panels``
    queries with its matches (inliers filled), the two estimates and the truth."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    known = np.flatnonzero(db.known)
    if known.size > MAX_MAP_POINTS:
        known = np.sort(np.random.default_rng(0).choice(known, MAX_MAP_POINTS, replace=False))
    latlon = db.kind == "latlon"
    # Plot x is longitude (or east), y latitude (or north); one unit of x spans x_scale units of y.
    x_scale = math.cos(math.radians(float(np.nanmean(db.xy[db.known, 0])))) if latlon and known.size else 1.0
    radius_units = radius / (EARTH_RADIUS_M * math.pi / 180) if latlon else radius

    def xy(p: np.ndarray) -> tuple:
        p = np.asarray(p, dtype=np.float64).reshape(-1, 2)
        return (p[:, 1], p[:, 0]) if latlon else (p[:, 0], p[:, 1])

    def frame(ax, pts: np.ndarray) -> tuple[float, float, float, float]:
        """Square limits around ``pts`` (at least two radii wide); returns them."""
        pts = pts[~np.isnan(pts).any(1)]
        x, y = xy(pts)
        cx, cy = (x.min() + x.max()) / 2, (y.min() + y.max()) / 2
        half = 1.15 * max((x.max() - x.min()) * x_scale / 2, (y.max() - y.min()) / 2, radius_units)
        limits = (cx - half / x_scale, cx + half / x_scale, cy - half, cy + half)
        ax.set_xlim(*limits[:2])
        ax.set_ylim(*limits[2:])
        return limits

    panels = min(n_panels, len(records))
    cols = min(3, panels + 1)
    rows = math.ceil((panels + 1) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 4.2 * rows), dpi=100, squeeze=False)
    a_name, b_name = _labels(db.kind)
    for ax in axes.flat:
        ax.set_axis_off()
    ax = axes.flat[0]
    ax.set_axis_on()
    ax.scatter(*xy(db.xy[known]), s=3, c="0.7", label="map images", rasterized=True)
    est = np.array([r["consensus"] for r in records]).reshape(-1, 2)
    ax.scatter(*xy(est), s=30, marker="*", c="tab:red", label="estimate (consensus)")
    truths = np.array([r["truth"] for r in records if r["truth"] is not None]).reshape(-1, 2)
    if len(truths):
        ax.scatter(*xy(truths), s=25, marker="x", c="tab:blue", label="true position")
    frame(ax, np.concatenate([db.xy[known], est, truths]))
    ax.set_title(f"{len(records)} queries on {int(db.known.sum())} map images", fontsize=9)
    ax.legend(fontsize=6, loc="upper right")
    for i in range(panels):
        ax = axes.flat[i + 1]
        ax.set_axis_on()
        r = records[i]
        mxy = db.xy[indices[i][indices[i] >= 0]]
        inl = np.asarray(r["inlier_mask"], dtype=bool)
        pts = [mxy, r["consensus"].reshape(1, 2)] + ([np.reshape(r["truth"], (1, 2))] if r["truth"] is not None else [])
        pts = np.concatenate(pts)
        if not np.isnan(pts).all():  # zoom on the matches, the estimates and the truth
            x0, x1, y0, y1 = frame(ax, pts)
            kx, ky = xy(db.xy[known])
            inside = (kx >= x0) & (kx <= x1) & (ky >= y0) & (ky <= y1)
            ax.scatter(kx[inside], ky[inside], s=4, c="0.75", rasterized=True)
        ax.scatter(*xy(mxy[~inl]), s=28, facecolors="none", edgecolors="tab:orange", label="matches")
        ax.scatter(*xy(mxy[inl]), s=28, c="tab:orange", label=f"inliers ({radius:g} m)")
        ax.scatter(*xy(r["top1"]), s=60, marker="s", facecolors="none", edgecolors="k", label="top-1")
        ax.scatter(*xy(r["consensus"]), s=80, marker="*", c="tab:red", label="consensus")
        title = f"query {i}"
        if r["truth"] is not None:
            ax.scatter(*xy(np.asarray(r["truth"])), s=50, marker="x", c="tab:blue", label="truth")
            if r["consensus_error_m"] is not None:
                title += f": error {r['consensus_error_m']:.1f} m"
        ax.set_title(title, fontsize=9)
        if i == 0:
            ax.legend(fontsize=6, loc="upper right")
    for ax in axes.flat:
        if ax.axison:
            ax.set_xlabel(b_name if latlon else a_name, fontsize=8)
            ax.set_ylabel(a_name if latlon else b_name, fontsize=8)
            ax.tick_params(labelsize=6)
            ax.ticklabel_format(useOffset=False, style="plain")
            ax.locator_params(nbins=4)
            ax.set_aspect(1.0 / x_scale, adjustable="box")
    fig.tight_layout()
    path = Path(path)
    tmp = path.with_name(f".{path.stem}.part{path.suffix}")
    fig.savefig(tmp)
    plt.close(fig)
    tmp.replace(path)
    return path


def localise_map(out_dir: str | Path, query_paths: Sequence[Path], database_paths: Sequence[Path],
                 scores: np.ndarray, indices: np.ndarray, source: str, utm_zone: str | None = None,
                 radius: float | None = None) -> tuple[dict, list[Path]]:
    """Localise queries against database images whose coordinates ``source`` gives (the queries'
    own, where it gives them, for errors): writes ``positions.csv`` and ``map.png`` in ``out_dir``
    and returns the JSON summary and the files."""
    radius = DEFAULT_RADIUS_M if radius is None else radius
    db = read_coordinates(database_paths, source, utm_zone)
    if not db.known.any():
        raise InputError(f"--coords {source}: no coordinates found for any of the {len(database_paths)} database images")
    queries = read_coordinates(query_paths, source, utm_zone, required=False)
    records = localise_all(db, scores, indices, queries, radius)
    path, summary = write_localisation(out_dir, query_paths, records, db.kind, radius)
    return summary, [path, plot_map(Path(out_dir) / "map.png", db, indices, records, radius)]
