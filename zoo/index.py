"""City-scale search: faiss indexes of a map's descriptors, approximate shortlists, exact re-ranking.

The work behind ``python -m zoo index build | add | search``. An *index folder* holds:

``index.faiss``      the faiss index (ids = row numbers of the map)
``descriptors.npy``  ``(N, D)`` float16 descriptors, opened memory-mapped to re-rank shortlists
``images.txt``       the map's image paths, one per line, in row order
``coords.npy``       ``(N, 2)`` float64 positions (only with ``--coords``; NaN = unknown)
``manifest.json``    model (name, variant, weight source, weights sha256, transforms), dimension,
                     metric, faiss kind and parameters, count, coordinate kind
``cache/``           the extraction engine's descriptor shards (a killed build resumes from them)

Every file is written to a temporary name and renamed into place; the manifest last, so a folder
whose files disagree (a crash between renames) is detected on opening, naming the file.

Kinds (``--kind``):

``flat``   exact inner-product search (``IndexFlatIP``): every query scans the whole map. Right
           for maps up to a few hundred thousand images.
``ivfpq``  inverted lists over product-quantised codes, searched approximately for a shortlist
           that is then re-ranked exactly (float32 products with the stored float16 descriptors).
``hnsw``   a graph over the float32 descriptors (``HNSW32``): fast, but holds the full
           descriptors plus the graph in memory.

IVF-PQ parameters (:func:`ivfpq_params`), from the map's size ``n`` and dimension ``d``:

* ``nlist`` (inverted lists): the power of two nearest ``4 sqrt(n)``, at most ``n / 39`` (faiss's
  minimum of 39 training points per centroid), at least 1;
* ``M`` (code bytes per image): ``d / 8`` capped at 64 (and at least 1), so that each
  sub-quantiser codes 8 dimensions;
* OPQ, a learned rotation before PQ, only where PQ cannot take the descriptor directly: when
  ``d > 8 M`` (high-dimensional descriptors, e.g. SALAD's 8448, rotated and reduced to ``8 M``
  dimensions) or ``d`` is no multiple of ``M``. At ``d = 256`` it brought nothing after
  re-ranking in our measurement and took 9x the training time, so it is not used there;
* ``nbits`` (bits per sub-quantiser code): 8, fewer for tiny maps (``floor(log2(n / 39))``, at
  least 1) so that every PQ centroid gets training points;
* training sample: ``64 nlist`` images (all of a smaller map), at most 2^18 (262144);
* ``nprobe`` (lists visited per query, change with ``--nprobe``): ``max(16, nlist / 64)``, at most
  ``nlist``: on the clustered maps of ``bench/index.py`` (20k and 200k) 16 lists already kept the true
  item in 99% of the shortlists of 100, 8 lost 12% of them.

GPUs: when faiss sees GPUs (``faiss.get_num_gpus() > 0``, i.e. the faiss-gpu build), flat and
IVF-PQ indexes are trained and filled on GPU 0 and copied back to the CPU for writing, and searches
run on a copy sharded over all visible GPUs (``index_cpu_to_all_gpus``, ``shard=True``); HNSW has
no GPU implementation in faiss and stays on the CPU. This code path is untested here (faiss-cpu only).
"""

from __future__ import annotations

import csv
import io
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Sequence

import numpy as np

from zoo.errors import DatasetError, InputError
from zoo.io import atomic_path, atomic_write_text
from zoo.settings import parse_pretrained

__all__ = ["KINDS", "DEFAULT_RERANK", "ivfpq_params", "factory_string", "build_faiss_index", "set_search_params",
           "rerank", "index_bytes", "MapIndex", "build_index", "add_to_index", "search_index", "read_image_list"]

KINDS = ("flat", "ivfpq", "hnsw")
#: Shortlist re-ranked exactly by default (``--rerank``).
DEFAULT_RERANK = 100
#: HNSW: neighbours per node, neighbours explored while building and while searching (``--ef``).
HNSW_M, HNSW_EF_CONSTRUCTION, HNSW_EF_SEARCH = 32, 80, 128
#: Largest IVF-PQ training sample (k-means cost grows with it; 64 points per list are plenty).
MAX_TRAIN = 2 ** 18
MANIFEST_FORMAT = 1
INDEX_FILE, DESCRIPTORS_FILE, IMAGES_FILE, COORDS_FILE, MANIFEST_FILE = (
    "index.faiss", "descriptors.npy", "images.txt", "coords.npy", "manifest.json")


# --------------------------------------------------------------------------- faiss


def ivfpq_params(n: int, d: int) -> dict[str, Any]:
    """IVF-PQ parameters for a map of ``n`` descriptors of dimension ``d`` (the rule of the module docstring)."""
    if n < 2:
        raise InputError(f"an IVF-PQ index needs at least 2 images to train on, got {n}; use --kind flat")
    if d < 1:
        raise InputError(f"descriptor dimension must be positive, got {d}")
    nlist = 2 ** round(math.log2(4 * math.sqrt(n)))
    nlist = max(1, min(nlist, 2 ** math.floor(math.log2(max(n // 39, 1)))))
    m = max(1, min(64, d // 8))
    d_pq = min(d, 8 * m)
    opq = d_pq < d or d % m != 0
    if opq:
        d_pq = 8 * m if d >= 8 * m else m * (d // m)
    train = min(n, MAX_TRAIN, max(64 * nlist, 39 * 256))
    nbits = max(1, min(8, math.floor(math.log2(max(train / 39, 1)))))
    return {"nlist": nlist, "m": m, "nbits": nbits, "opq": opq, "d_pq": d_pq, "train_size": train,
            "nprobe": min(nlist, max(16, nlist // 64))}


def factory_string(kind: str, d: int, params: dict[str, Any] | None = None) -> str:
    """The ``faiss.index_factory`` description of an index of ``kind``."""
    if kind == "flat":
        return "Flat"
    if kind == "hnsw":
        return f"HNSW{HNSW_M}"
    if kind == "ivfpq":
        p = params or ivfpq_params(2 ** 20, d)
        pre = f"OPQ{p['m']}_{p['d_pq']}," if p["opq"] else ""
        return f"{pre}IVF{p['nlist']},PQ{p['m']}x{p['nbits']}"
    raise InputError(f"--kind: expected one of {', '.join(KINDS)}, got {kind!r}")


def _faiss():
    try:
        import faiss
    except ImportError:
        raise InputError("python -m zoo index needs faiss: pip install faiss-cpu (or faiss-gpu)") from None
    return faiss


def gpu_count() -> int:
    """GPUs faiss can use (0 for faiss-cpu)."""
    faiss = _faiss()
    return int(faiss.get_num_gpus()) if hasattr(faiss, "get_num_gpus") else 0


def _metric(kind: str) -> int:
    # Descriptors are L2-normalised, so L2 and inner-product rankings agree; IVF and HNSW use L2,
    # where faiss's k-means and graph construction are at home, flat returns cosine scores directly.
    faiss = _faiss()
    return faiss.METRIC_INNER_PRODUCT if kind == "flat" else faiss.METRIC_L2


def build_faiss_index(x: np.ndarray, kind: str, params: dict[str, Any] | None = None, *, seed: int = 0,
                      progress: bool = False) -> Any:
    """A faiss index of ``kind`` over ``x`` ``(n, d)`` float32, trained (IVF-PQ: on a random sample
    of ``params['train_size']`` rows) and filled, ids = row numbers."""
    faiss = _faiss()
    x = np.ascontiguousarray(x, dtype=np.float32)
    n, d = x.shape
    if kind == "ivfpq":
        params = params or ivfpq_params(n, d)
    index = faiss.index_factory(d, factory_string(kind, d, params), _metric(kind))
    if kind == "hnsw":
        index.hnsw.efConstruction = HNSW_EF_CONSTRUCTION
    ivf = faiss.downcast_index(faiss.extract_index_ivf(index)) if kind == "ivfpq" else None
    if ivf is not None:
        ivf.cp.niter = 10  # faiss's default of 25 k-means iterations buys nothing measurable after re-ranking
        ivf.do_polysemous_training = False  # only for polysemous filtering, unused; it took 95% of the training
        ivf.cp.seed = seed
        ivf.pq.cp.seed = seed
        if params["opq"]:
            opq = faiss.downcast_VectorTransform(index.chain.at(0))
            opq.niter = 25
    work = index
    gpu = kind != "hnsw" and gpu_count() > 0
    if gpu:
        res = faiss.StandardGpuResources()
        work = faiss.index_cpu_to_gpu(res, 0, index)
    if not work.is_trained:
        sample = np.random.default_rng(seed).choice(n, min(n, params["train_size"]), replace=False)
        work.train(x[np.sort(sample)])
    _add_batched(work, x, progress)
    return faiss.index_gpu_to_cpu(work) if gpu else work


def _add_batched(index: Any, x: np.ndarray, progress: bool, batch: int = 65536) -> None:
    from tqdm import tqdm

    with tqdm(total=len(x), desc="indexing", unit="img", disable=not progress, dynamic_ncols=True) as bar:
        for start in range(0, len(x), batch):
            index.add(np.ascontiguousarray(x[start:start + batch], dtype=np.float32))
            bar.update(min(batch, len(x) - start))


def set_search_params(index: Any, kind: str, nprobe: int | None = None, ef: int | None = None) -> None:
    """Search-time parameters: lists visited (IVF-PQ) or candidates explored (HNSW)."""
    faiss = _faiss()
    space = faiss.GpuParameterSpace() if hasattr(faiss, "GpuParameterSpace") and gpu_count() > 0 \
        and kind != "hnsw" else faiss.ParameterSpace()
    if kind == "ivfpq" and nprobe is not None:
        if nprobe < 1:
            raise InputError(f"--nprobe must be positive, got {nprobe}")
        space.set_index_parameter(index, "nprobe", int(nprobe))
    if kind == "hnsw" and ef is not None:
        if ef < 1:
            raise InputError(f"--ef must be positive, got {ef}")
        space.set_index_parameter(index, "efSearch", int(ef))


def to_search_device(index: Any, kind: str) -> Any:
    """The index sharded over all visible GPUs (flat and IVF-PQ), else unchanged."""
    if kind == "hnsw" or gpu_count() == 0:
        return index
    faiss = _faiss()
    co = faiss.GpuMultipleClonerOptions()
    co.shard = True
    co.useFloat16 = kind == "ivfpq"  # float16 lookup tables; a flat index stays exact float32
    return faiss.index_cpu_to_all_gpus(index, co=co)


def rerank(store: np.ndarray, queries: np.ndarray, shortlist: np.ndarray, k: int,
           batch: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-``k`` of each query's shortlist.

    Args:
        store: ``(N, D)`` descriptors (float16, memory-mapped: only the shortlisted rows are read).
        queries: ``(Q, D)`` float32 descriptors.
        shortlist: ``(Q, S)`` int64 candidate rows (-1 = none, as faiss pads).
        k: results per query.

    Returns:
        ``(scores, indices)``, both ``(Q, min(k, S))``: inner products computed in float32,
        decreasing, and rows (-1 where a query had fewer than ``k`` candidates).
    """
    q_count, s = shortlist.shape
    k = min(k, s)
    scores = np.full((q_count, k), -np.inf, dtype=np.float32)
    indices = np.full((q_count, k), -1, dtype=np.int64)
    for start in range(0, q_count, batch):
        ids = shortlist[start:start + batch]
        valid = ids >= 0
        # One sorted, de-duplicated read of the rows this batch needs (sequential on disk).
        rows, inverse = np.unique(ids[valid], return_inverse=True)
        vecs = np.asarray(store[rows], dtype=np.float32)
        cand = np.full(ids.shape, -np.inf, dtype=np.float32)
        q = np.asarray(queries[start:start + batch], dtype=np.float32)
        qi = np.nonzero(valid)[0]
        cand[valid] = np.einsum("ij,ij->i", q[qi], vecs[inverse])
        order = np.argsort(-cand, axis=1, kind="stable")[:, :k]
        scores[start:start + batch] = np.take_along_axis(cand, order, 1)
        indices[start:start + batch] = np.where(np.isfinite(scores[start:start + batch]),
                                                np.take_along_axis(ids, order, 1), -1)
    return scores, indices


def index_bytes(index: Any) -> int:
    """Bytes of the index as faiss serialises it (its memory footprint, less allocator slack)."""
    return int(_faiss().serialize_index(index).nbytes)


# --------------------------------------------------------------------------- files


def read_image_list(list_file: str | Path) -> list[Path]:
    """Image paths of a list file: one per line, relative to the list's folder unless absolute;
    blank lines and lines starting with ``#`` are skipped. Raises naming the file and line of a
    missing image."""
    list_file = Path(list_file).expanduser()
    if not list_file.is_file():
        raise DatasetError(f"image list not found: {list_file}")
    paths = []
    for line_no, line in enumerate(list_file.read_text().splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        path = Path(line).expanduser()
        path = path if path.is_absolute() else list_file.parent / path
        if not path.is_file():
            raise DatasetError(f"{list_file} line {line_no}: image not found: {path}")
        paths.append(path)
    if not paths:
        raise DatasetError(f"{list_file}: no image paths")
    return paths


def _image_paths(images: str | Path | None, list_file: str | Path | None) -> list[Path]:
    from zoo.io import list_images

    if (images is None) == (list_file is None):
        raise InputError("give exactly one of --images DIR and --list FILE")
    paths = list_images(images) if images is not None else read_image_list(list_file)
    return [p.resolve() for p in paths]


# --------------------------------------------------------------------------- model identity



def _load_model(name: str, pretrained: bool | str) -> tuple[Any, dict[str, Any], tuple]:
    """The model, its identity (what the manifest records) and its (query, database) transforms.

    Random initialisation is seeded (0), so that ``--pretrained false`` builds and searches agree.
    """
    import torch

    import zoo
    from zoo.engine.extract import transform_id, weights_hash

    torch.manual_seed(0)
    model = zoo.create_model(name, pretrained=parse_pretrained(pretrained))
    cfg = model.zoo_config
    transforms = zoo.model_transforms(model)
    identity = {"name": cfg["architecture"], "variant_tag": cfg["variant_tag"], "variant": cfg["variant"],
                "pretrained": str(pretrained).lower() if isinstance(pretrained, bool) else str(pretrained),
                "weights": cfg["weights"], "weights_sha256": weights_hash(model),
                "query_transform": transform_id(transforms[0]), "database_transform": transform_id(transforms[1])}
    return model, identity, transforms


def _label(identity: dict[str, Any]) -> str:
    return f"{identity['name']}.{identity['variant_tag']} (weights sha256 {identity['weights_sha256'][:12]})"


def _check_same_model(index_model: dict[str, Any], query_model: dict[str, Any], where: Path,
                      transform: str) -> None:
    keys = ("name", "variant_tag", "variant", "weights_sha256", transform)
    if any(json.dumps(index_model.get(k), sort_keys=True) != json.dumps(query_model.get(k), sort_keys=True)
           for k in keys):
        raise InputError(f"the model {_label(query_model)} does not match the index {where}, built with "
                         f"{_label(index_model)}; use the index's model and weights (--pretrained)")


# --------------------------------------------------------------------------- the index folder


@dataclass
class MapIndex:
    """An opened index folder: faiss index, memory-mapped descriptors, images, coordinates."""

    folder: Path
    manifest: dict[str, Any]
    index: Any
    descriptors: np.ndarray
    images: list[Path]
    coords: Any = None  # zoo.geo.Coordinates or None

    @property
    def kind(self) -> str:
        return self.manifest["faiss"]["kind"]

    @classmethod
    def open(cls, folder: str | Path) -> "MapIndex":
        """Open and cross-check an index folder; raises :class:`DatasetError` naming the file at fault."""
        from zoo.geo import Coordinates

        folder = Path(folder).expanduser()
        manifest_path = folder / MANIFEST_FILE
        if not manifest_path.is_file():
            raise DatasetError(f"not an index folder (no {MANIFEST_FILE}): {folder}; build one with "
                               "python -m zoo index build")
        try:
            manifest = json.loads(manifest_path.read_text())
            count, kind = int(manifest["count"]), manifest["faiss"]["kind"]
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as err:
            raise DatasetError(f"{manifest_path}: malformed manifest ({err})") from None
        if kind not in KINDS:
            raise DatasetError(f"{manifest_path}: unknown faiss kind {kind!r} (expected one of {', '.join(KINDS)})")
        if manifest.get("format") != MANIFEST_FORMAT:
            raise DatasetError(f"{manifest_path}: format {manifest.get('format')!r}, this zoo reads {MANIFEST_FORMAT}")
        for name in (INDEX_FILE, DESCRIPTORS_FILE, IMAGES_FILE):
            if not (folder / name).is_file():
                raise DatasetError(f"{folder / name} is missing")
        index = _faiss().read_index(str(folder / INDEX_FILE))
        descriptors = np.load(folder / DESCRIPTORS_FILE, mmap_mode="r")
        images = [Path(line) for line in (folder / IMAGES_FILE).read_text().splitlines() if line]
        coords = None
        if manifest.get("coords"):
            xy = np.load(folder / COORDS_FILE)
            coords = Coordinates(xy, manifest["coords"]["kind"], manifest["coords"].get("source", ""))
        sizes = {INDEX_FILE: index.ntotal, DESCRIPTORS_FILE: descriptors.shape[0], IMAGES_FILE: len(images)}
        if coords is not None:
            sizes[COORDS_FILE] = len(coords.xy)
        for name, size in sizes.items():
            if size != count:
                raise DatasetError(f"{folder / name} holds {size} images but {manifest_path} says {count}: the "
                                   "folder was left half-written; rebuild it")
        if descriptors.ndim != 2 or descriptors.shape[1] != manifest["dim"] or index.d != manifest["dim"]:
            raise DatasetError(f"{folder}: descriptor dimension disagrees with the manifest's {manifest['dim']}")
        return cls(folder, manifest, index, descriptors, images, coords)

    def search(self, queries: np.ndarray, k: int, rerank_n: int = DEFAULT_RERANK, nprobe: int | None = None,
               ef: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` ``(scores, rows)``, both ``(Q, k)``: cosine similarities (float32), decreasing.

        Flat indexes are exact already; IVF-PQ and HNSW return a shortlist of ``max(rerank_n, k)``
        re-ranked with the stored descriptors.
        """
        if k < 1:
            raise InputError(f"--topk must be at least 1, got {k}")
        q = np.ascontiguousarray(queries, dtype=np.float32)
        if q.ndim != 2 or q.shape[1] != self.manifest["dim"]:
            raise InputError(f"queries have shape {q.shape}, the index {self.folder} holds {self.manifest['dim']}-d "
                             "descriptors")
        k = min(k, self.index.ntotal)
        params = self.manifest["faiss"]["params"]
        set_search_params(self.index, self.kind, nprobe or params.get("nprobe"), ef or params.get("ef_search"))
        index = to_search_device(self.index, self.kind)
        if self.kind == "flat":
            scores, rows = index.search(q, k)
            return scores, rows
        if rerank_n < 1:
            raise InputError(f"--rerank must be at least 1, got {rerank_n}")
        _, shortlist = index.search(q, min(max(rerank_n, k), self.index.ntotal))
        return rerank(self.descriptors, q, shortlist, k)


def _extract(model: Any, paths: Sequence[Path], transform: Any, identity: dict[str, Any], side: str,
             cache_dir: Path | None, opts: dict[str, Any]) -> Any:
    from zoo.data.base import ImageRecord
    from zoo.engine.extract import DescriptorCache, extract_descriptors, records_fingerprint

    records = [ImageRecord(p) for p in paths]
    cache = None
    if cache_dir is not None:
        cache = DescriptorCache(cache_dir, {
            "model": f"{identity['name']}.{identity['variant_tag']}", "model_args": identity["variant"],
            "weights": identity["weights_sha256"], "transform": identity[f"{side}_transform"],
            "images": records_fingerprint(records), "side": side, "precision": opts["precision"],
            "device": str(opts["device"]).split(":")[0]})
    return extract_descriptors(model, records, transform, side=side, batch_size=opts["batch_size"],
                               num_workers=opts["num_workers"], device=opts["device"],
                               precision=opts["precision"], cache=cache, shard_size=opts["shard_size"],
                               progress=opts["progress"], desc=f"{side} descriptors")


@dataclass
class BuildSummary:
    folder: Path
    count: int
    added: int
    cached_images: int
    computed_images: int
    extract_seconds: float
    index_seconds: float
    kind: str
    params: dict[str, Any]
    index_bytes: int
    notes: list[str] = field(default_factory=list)

    def summary_lines(self) -> list[str]:
        out = [f"{self.folder}: {self.count} images ({self.added} added), {self.kind} {json.dumps(self.params)}",
               (f"descriptors: {self.cached_images} from the cache, {self.computed_images} computed in "
                f"{self.extract_seconds:.1f} s; index built in {self.index_seconds:.1f} s, "
                f"{self.index_bytes / 2**20:.1f} MiB")]
        return out + self.notes


def _extraction_opts(device: str, batch_size: int, precision: str, num_workers: int, shard_size: int,
                     progress: bool) -> dict[str, Any]:
    return {"device": device, "batch_size": batch_size, "precision": precision, "num_workers": num_workers,
            "shard_size": shard_size, "progress": progress}


def _read_coords(paths: Sequence[Path], source: str | None, utm_zone: str | None, required: bool = True):
    if source is None:
        return None
    from zoo.geo import read_coordinates

    coords = read_coordinates(paths, source, utm_zone, required)
    if not coords.known.any():
        raise InputError(f"--coords {source}: no coordinates found for any of the {len(paths)} images")
    return coords


def _write_folder(folder: Path, manifest: dict[str, Any], index: Any, write_descriptors: Any,
                  images: Sequence[Path], coords: Any) -> None:
    """Write every file of an index folder, each atomically, the manifest last."""
    faiss = _faiss()
    folder.mkdir(parents=True, exist_ok=True)
    with atomic_path(folder / INDEX_FILE) as tmp:
        faiss.write_index(index, str(tmp))
    with atomic_path(folder / DESCRIPTORS_FILE) as tmp:
        write_descriptors(tmp)
    atomic_write_text(folder / IMAGES_FILE, "".join(f"{p}\n" for p in images))
    if coords is not None:
        with atomic_path(folder / COORDS_FILE) as tmp:
            _save_npy(tmp, coords.xy)
    atomic_write_text(folder / MANIFEST_FILE, json.dumps(manifest, indent=2, sort_keys=True, default=str) + "\n")


def build_index(model_name: str, out: str | Path, *, images: str | Path | None = None,
                list_file: str | Path | None = None, kind: str = "ivfpq", pretrained: bool | str = True,
                coords: str | None = None, utm_zone: str | None = None, cache_dir: str | Path | None = None,
                overwrite: bool = False, device: str = "cpu", batch_size: int = 32, precision: str = "fp32",
                num_workers: int = 0, shard_size: int = 1024, progress: bool = True) -> BuildSummary:
    """Embed a map's images (``encode_database``) and write an index folder (module docstring).

    Descriptors go through :func:`zoo.engine.extract.extract_descriptors` with a cache in
    ``cache_dir`` (default ``out/cache``), so that a killed build resumes where it stopped.
    """
    import zoo

    if kind not in KINDS:
        raise InputError(f"--kind: expected one of {', '.join(KINDS)}, got {kind!r}")
    folder = Path(out).expanduser()
    if (folder / MANIFEST_FILE).exists() and not overwrite:
        raise InputError(f"{folder} already holds an index; add images with python -m zoo index add, or pass "
                         "--overwrite to rebuild it")
    paths = _image_paths(images, list_file)
    xy = _read_coords(paths, coords, utm_zone)
    model, identity, (_, db_tf) = _load_model(model_name, pretrained)
    folder.mkdir(parents=True, exist_ok=True)
    cache = Path(cache_dir).expanduser() if cache_dir else folder / "cache"
    opts = _extraction_opts(device, batch_size, precision, num_workers, shard_size, progress)
    ext = _extract(model, paths, db_tf, identity, "database", cache, opts)
    x = ext.descriptors.numpy().astype(np.float32, copy=False)
    n, d = x.shape
    params: dict[str, Any] = {}
    if kind == "ivfpq":
        params = {**ivfpq_params(n, d), "chosen_for": n}
    elif kind == "hnsw":
        params = {"m": HNSW_M, "ef_construction": HNSW_EF_CONSTRUCTION, "ef_search": HNSW_EF_SEARCH}
    start = time.perf_counter()
    index = build_faiss_index(x, kind, params or None, progress=progress)
    index_seconds = time.perf_counter() - start
    manifest = {
        "format": MANIFEST_FORMAT, "zoo": zoo.__version__, "model": identity, "dim": d, "metric": "ip",
        "count": n, "precision": precision,
        "faiss": {"kind": kind, "factory": factory_string(kind, d, params or None), "params": params,
                  "metric": "inner product" if kind == "flat" else "L2 (on L2-normalised descriptors)",
                  "gpu": gpu_count() > 0 and kind != "hnsw"},
        "coords": {"kind": xy.kind, "source": xy.source} if xy is not None else None,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    _write_folder(folder, manifest, index, lambda tmp: _save_npy(tmp, x.astype(np.float16)), paths, xy)
    return BuildSummary(folder, n, n, ext.cached_images, ext.computed_images, ext.seconds, index_seconds, kind,
                        params, index_bytes(index))


def _save_npy(path: Path, array: np.ndarray) -> None:
    with open(path, "wb") as f:
        np.save(f, array)


def add_to_index(index_dir: str | Path, *, images: str | Path | None = None, list_file: str | Path | None = None,
                 pretrained: bool | str | None = None, coords: str | None = None, utm_zone: str | None = None,
                 cache_dir: str | Path | None = None, device: str = "cpu", batch_size: int = 32,
                 num_workers: int = 0, shard_size: int = 1024, progress: bool = True) -> BuildSummary:
    """Append images to an index folder with the model its manifest names (checked by weights hash).

    IVF-PQ keeps the lists and codebooks it was trained with: past 4x the size they were chosen
    for, the summary recommends a rebuild.
    """
    from zoo.geo import Coordinates

    mi = MapIndex.open(index_dir)
    folder, manifest = mi.folder, mi.manifest
    paths = _image_paths(images, list_file)
    present = set(map(str, mi.images))
    dup = [p for p in paths if str(p) in present]
    if dup:
        raise InputError(f"{dup[0]} is already in the index {folder} ({len(dup)} of the images are)")
    source = manifest["model"]["pretrained"] if pretrained is None else pretrained
    model, identity, (_, db_tf) = _load_model(
        f"{manifest['model']['name']}.{manifest['model']['variant_tag']}", source)
    _check_same_model(manifest["model"], identity, folder, "database_transform")
    new_xy = _read_coords(paths, coords, utm_zone)
    old = mi.coords
    if new_xy is not None and old is not None and new_xy.kind != old.kind:
        raise InputError(f"--coords gives {new_xy.kind} coordinates but the index {folder} holds {old.kind}")
    merged = None
    if new_xy is not None or old is not None:
        kind = (old or new_xy).kind
        old_xy = old.xy if old is not None else np.full((len(mi.images), 2), np.nan)
        add_xy = new_xy.xy if new_xy is not None else np.full((len(paths), 2), np.nan)
        merged = Coordinates(np.concatenate([old_xy, add_xy]), kind, (old or new_xy).source)
    cache = Path(cache_dir).expanduser() if cache_dir else folder / "cache"
    ext = _extract(model, paths, db_tf, identity, "database", cache,
                   _extraction_opts(device, batch_size, manifest["precision"], num_workers, shard_size, progress))
    x = ext.descriptors.numpy().astype(np.float32, copy=False)
    start = time.perf_counter()
    index = mi.index
    _add_batched(index, x, progress)
    index_seconds = time.perf_counter() - start
    n_old, n = len(mi.images), len(mi.images) + len(paths)
    manifest = {**manifest, "count": n,
                "coords": {"kind": merged.kind, "source": merged.source} if merged is not None else None}

    def write_descriptors(tmp: Path) -> None:
        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float16, shape=(n, manifest["dim"]))
        for s in range(0, n_old, 65536):
            e = min(n_old, s + 65536)
            out[s:e] = mi.descriptors[s:e]
        out[n_old:] = x.astype(np.float16)
        out.flush()
        del out

    _write_folder(folder, manifest, index, write_descriptors, [*mi.images, *paths], merged)
    notes = []
    chosen = manifest["faiss"]["params"].get("chosen_for")
    if chosen and n > 4 * chosen:
        notes.append(f"note: the IVF-PQ parameters were chosen for {chosen} images, the index now holds {n}; "
                     f"rebuild it (index build --overwrite) for parameters that fit")
    return BuildSummary(folder, n, len(paths), ext.cached_images, ext.computed_images, ext.seconds, index_seconds,
                        mi.kind, manifest["faiss"]["params"], index_bytes(index), notes)


@dataclass
class SearchOutput:
    out_dir: Path
    queries: list[Path]
    database: list[Path]
    scores: np.ndarray    # (Q, k) cosine similarities, decreasing
    indices: np.ndarray   # (Q, k) map rows
    localisation: dict[str, Any] | None
    files: list[Path]
    seconds: float

    def summary_lines(self) -> list[str]:
        lines = []
        for qi, query in enumerate(self.queries[:20]):
            best = ", ".join(f"{self.database[int(j)].name} ({float(s):.3f})"
                             for s, j in zip(self.scores[qi][:5], self.indices[qi][:5]) if j >= 0)
            lines.append(f"{query.name}: {best}")
        if len(self.queries) > 20:
            lines.append(f"... and {len(self.queries) - 20} more queries")
        if self.localisation:
            loc = self.localisation
            if loc.get("queries_with_truth"):
                lines.append(f"localisation error over {loc['queries_with_truth']} queries with known positions: "
                             f"top-1 median {loc['top1_error_median_m']:.1f} m, consensus median "
                             f"{loc['consensus_error_median_m']:.1f} m (radius {loc['radius_m']:g} m)")
        lines.append(f"searched {len(self.queries)} queries in {self.seconds:.2f} s; wrote "
                     + ", ".join(str(f) for f in self.files))
        return lines


def search_index(index_dir: str | Path, queries: str | Path, out: str | Path, *, topk: int = 5,
                 rerank_n: int = DEFAULT_RERANK, pretrained: bool | str | None = None, nprobe: int | None = None,
                 ef: int | None = None, coords: str | None = None, utm_zone: str | None = None,
                 radius: float | None = None, device: str = "cpu", batch_size: int = 32, num_workers: int = 0,
                 progress: bool = True) -> SearchOutput:
    """Embed the query images (``encode_query``), search the index, write ``results.csv``,
    ``results.json``, ``grid.png`` and, when the map has coordinates, ``positions.csv`` and ``map.png``.

    ``coords`` gives the queries' own positions (for errors in metres); ``radius`` the consensus
    radius (default :data:`zoo.geo.DEFAULT_RADIUS_M`).
    """
    from zoo.geo import DEFAULT_RADIUS_M
    from zoo.io import list_images

    mi = MapIndex.open(index_dir)
    manifest = mi.manifest
    query_paths = [p.resolve() for p in list_images(queries)]
    source = manifest["model"]["pretrained"] if pretrained is None else pretrained
    model, identity, (q_tf, _) = _load_model(f"{manifest['model']['name']}.{manifest['model']['variant_tag']}", source)
    _check_same_model(manifest["model"], identity, mi.folder, "query_transform")
    if coords and mi.coords is None:
        raise InputError(f"--coords gives query positions but the index {mi.folder} has no coordinates; build it "
                         "with --coords to localise")
    q_xy = _read_coords(query_paths, coords, utm_zone, required=False) if coords else None
    ext = _extract(model, query_paths, q_tf, identity, "query", None,
                   _extraction_opts(device, batch_size, manifest["precision"], num_workers, 1024, progress))
    start = time.perf_counter()
    scores, rows = mi.search(ext.descriptors.numpy(), topk, rerank_n, nprobe, ef)
    seconds = time.perf_counter() - start
    out_dir = Path(out).expanduser()
    out_dir.mkdir(parents=True, exist_ok=True)
    loc_records = None
    radius = DEFAULT_RADIUS_M if radius is None else radius
    if mi.coords is not None:
        from zoo.geo import localise_all
        loc_records = localise_all(mi.coords, scores, rows, q_xy, radius)
    files, loc_summary = _write_results(
        out_dir, query_paths, mi, scores, rows,
        {"topk": topk, "rerank": rerank_n if mi.kind != "flat" else None,
         "nprobe": nprobe or manifest["faiss"]["params"].get("nprobe"),
         "ef": ef or manifest["faiss"]["params"].get("ef_search"), "search_seconds": seconds},
        loc_records, radius)
    return SearchOutput(out_dir, query_paths, mi.images, scores, rows, loc_summary, files, seconds)


def _write_results(out_dir: Path, query_paths: list[Path], mi: MapIndex, scores: np.ndarray, rows: np.ndarray,
                   settings: dict[str, Any], loc_records: list[dict] | None,
                   radius: float) -> tuple[list[Path], dict[str, Any] | None]:
    """Write the result files; returns them and the localisation summary (None without coordinates)."""
    import torch

    from zoo.data.base import ImageRecord, RetrievalSet
    from zoo.engine.report import plot_retrieval_grid
    from zoo.geo import plot_map, write_localisation
    from zoo.metrics.base import ProtocolResult

    coords = mi.coords
    names = ("lat", "lon") if coords is not None and coords.kind == "latlon" else ("east", "north")
    header = ["query", "rank", "database", "similarity"] + (list(names) if coords is not None else [])
    table = []
    for qi, qp in enumerate(query_paths):
        for r in range(rows.shape[1]):
            j = int(rows[qi, r])
            if j < 0:
                continue
            row = [str(qp), r + 1, str(mi.images[j]), round(float(scores[qi, r]), 6)]
            if coords is not None:
                row += [None if math.isnan(v) else float(v) for v in coords.xy[j]]
            table.append(row)
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(header)
    writer.writerows([["" if v is None else v for v in row] for row in table])
    csv_path, json_path, grid_path = out_dir / "results.csv", out_dir / "results.json", out_dir / "grid.png"
    atomic_write_text(csv_path, buf.getvalue())
    files = [csv_path, json_path, grid_path]
    summary = None
    payload: dict[str, Any] = {"index": str(mi.folder), "model": mi.manifest["model"], "faiss": mi.manifest["faiss"],
                               "settings": settings, "topk": [dict(zip(header, row)) for row in table]}
    if loc_records is not None:
        pos_path, summary = write_localisation(out_dir, query_paths, loc_records, coords.kind, radius)
        payload["localisation"] = summary
        files += [pos_path, plot_map(out_dir / "map.png", coords, rows, loc_records, radius)]
    atomic_write_text(json_path, json.dumps(payload, indent=2, default=str) + "\n")
    view = SimpleNamespace(
        result=ProtocolResult(metrics={}, topk=torch.from_numpy(np.maximum(rows, 0)), correct=None),
        dataset=RetrievalSet("index search", mi.folder, [ImageRecord(p) for p in query_paths],
                             [ImageRecord(p) for p in mi.images], None, "none"))
    with atomic_path(grid_path) as tmp:
        plot_retrieval_grid(view, tmp, n_queries=min(len(query_paths), 12), k=rows.shape[1])
    return files, summary
