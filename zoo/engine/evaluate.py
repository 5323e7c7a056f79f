"""Evaluate the rows of a declarative table (``zoo/tables/<name>.yaml``) and report them.

For each row: build the model (``zoo.create_model(row.model, pretrained=...)``), read the data
set (``build_eval_dataset(row.dataset, data_root / row.data_subdir, **row.dataset_args)``),
extract query and database descriptors (cached, see :mod:`zoo.engine.extract`), run the row's
protocol (:mod:`zoo.metrics`) and compare with the published numbers. ``eval/reproduce.py`` is
the command line over :func:`evaluate_table`; the table schema is documented in
``zoo/tables/README.md`` and checked by :func:`load_table`.
"""

from __future__ import annotations

import importlib.resources
import inspect
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import torch
import yaml

from zoo.data.base import RetrievalSet
from zoo.errors import DatasetError, InputError, ZooError
from zoo.io import check_output_dir
from zoo.metrics.base import ProtocolResult
from zoo.registry import did_you_mean

__all__ = ["TableRow", "Table", "RowResult", "TableResult", "default_tables_dir", "list_tables",
           "load_table", "select_rows", "evaluate_table", "data_status"]

REQUIRED_ROW_KEYS = ("label", "model", "dataset", "data_subdir", "protocol", "metrics")
OPTIONAL_ROW_KEYS = {"pretrained": True, "model_args": {}, "dataset_args": {}, "protocol_args": {},
                     "benchmark": None, "tolerance": 0.5}
TABLE_KEYS = ("name", "title", "rows")


@dataclass
class TableRow:
    """One row of a table: a model evaluated on a data set with a protocol, and what was published.

    ``published`` and ``source`` are not written in the table: they are the numbers of the row's
    ``benchmark`` (default: its data set) on the card of the row's model variant.
    """

    label: str
    model: str
    dataset: str
    data_subdir: str
    protocol: str
    metrics: list[str]
    pretrained: bool | str = True
    model_args: dict[str, Any] = field(default_factory=dict)
    dataset_args: dict[str, Any] = field(default_factory=dict)
    protocol_args: dict[str, Any] = field(default_factory=dict)
    benchmark: str | None = None
    tolerance: float = 0.5
    published: dict[str, float | None] | None = None
    source: str = ""

    def published_value(self, metric: str) -> float | None:
        return None if not self.published else self.published.get(metric)


@dataclass
class Table:
    name: str
    title: str
    rows: list[TableRow]
    path: Path


@dataclass
class RowResult:
    """What one row produced. ``dataset`` and ``result`` are kept for the pictures (not in JSON)."""

    row: TableRow
    metrics: dict[str, float]
    result: ProtocolResult
    dataset: RetrievalSet
    pretrained: bool | str
    weights: str
    skipped: dict[str, list[tuple[int, str]]]
    extraction: dict[str, dict[str, float]]
    search_seconds: float


@dataclass
class TableResult:
    table: Table
    rows: list[RowResult]
    settings: dict[str, Any]


def default_tables_dir() -> Path:
    """The evaluation tables shipped inside the package (``zoo/tables``)."""
    return Path(os.fspath(importlib.resources.files("zoo") / "tables"))


def list_tables(tables_dir: str | Path | None = None) -> list[str]:
    folder = Path(tables_dir) if tables_dir else default_tables_dir()
    return sorted(p.stem for p in folder.glob("*.yaml")) if folder.is_dir() else []


def _check_keys(where: str, given: dict, required: Sequence[str], optional: Sequence[str]) -> None:
    missing = [k for k in required if k not in given]
    unknown = [k for k in given if k not in required and k not in optional]
    if missing:
        raise InputError(f"{where}: missing key(s) {', '.join(missing)}")
    if unknown:
        hints = [f"{k!r}.{did_you_mean(k, [*required, *optional])}".rstrip(".") for k in unknown]
        raise InputError(f"{where}: unknown key(s) {', '.join(hints)}")


def load_table(name: str | Path, tables_dir: str | Path | None = None) -> Table:
    """Read and check a table, given its name (``zoo/tables/<name>.yaml``) or a path to a YAML file.

    Raises:
        InputError: unknown table (with close matches), or a schema error naming file, row and key.
    """
    folder = Path(tables_dir) if tables_dir else default_tables_dir()
    path = Path(name)
    if not (path.suffix in (".yaml", ".yml") and path.is_file()):
        path = folder / f"{name}.yaml"
    if not path.is_file():
        known = list_tables(folder)
        raise InputError(f"unknown table {str(name)!r}.{did_you_mean(str(name), known)} Known tables: {', '.join(known) or 'none'} "
                         f"(in {folder})")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise InputError(f"{path}: not valid YAML ({err})") from err
    if not isinstance(raw, dict):
        raise InputError(f"{path}: expected a mapping with keys {', '.join(TABLE_KEYS)}")
    _check_keys(str(path), raw, TABLE_KEYS, ())
    if not isinstance(raw["rows"], list) or not raw["rows"]:
        raise InputError(f"{path}: 'rows' must be a non-empty list")
    rows = []
    for i, r in enumerate(raw["rows"]):
        where = f"{path}, row {i} ({r.get('label', '?') if isinstance(r, dict) else '?'})"
        if not isinstance(r, dict):
            raise InputError(f"{where}: expected a mapping")
        _check_keys(where, r, REQUIRED_ROW_KEYS, tuple(OPTIONAL_ROW_KEYS))
        values = {**{k: (dict(v) if isinstance(v, dict) else v) for k, v in OPTIONAL_ROW_KEYS.items()}, **r}
        for key in ("model_args", "dataset_args", "protocol_args"):
            values[key] = values[key] or {}
            if not isinstance(values[key], dict):
                raise InputError(f"{where}: {key} must be a mapping")
        if not isinstance(values["metrics"], list) or not values["metrics"]:
            raise InputError(f"{where}: metrics must be a non-empty list")
        row = TableRow(**values)
        row.benchmark = row.benchmark or row.dataset
        row.published, row.source = card_results(row.model, row.benchmark)
        rows.append(row)
    return Table(name=str(raw["name"]), title=str(raw["title"]), rows=rows, path=path)


def card_results(model: str, benchmark: str) -> tuple[dict[str, float | None] | None, str]:
    """The published numbers of ``benchmark`` on the card of ``model`` (``arch[.variant]``) and their source.

    A model the registry does not know (e.g. one a plugin registers later) has none yet.
    """
    from zoo.models import MODELS, get_model_info, split_name

    arch, tag = split_name(model)
    if arch not in MODELS:
        return None, ""
    found = [r for r in get_model_info(arch).published(tag) if r.benchmark == benchmark]
    if not found:
        return None, ""
    return {r.metric: r.value for r in found}, "; ".join(dict.fromkeys(r.source for r in found))


def select_rows(table: Table, rows: Sequence[str] | None = None, model: str | None = None) -> list[TableRow]:
    """Rows chosen by ``--rows`` (indices as ``--list`` shows them, or exact labels) and ``--model``
    (registry name with or without variant: rows whose model is it)."""
    chosen = list(table.rows)
    if rows:
        picked = []
        for sel in rows:
            if sel.isdigit() and int(sel) < len(table.rows):
                picked.append(table.rows[int(sel)])
                continue
            match = [r for r in table.rows if r.label == sel]
            if not match:
                labels = [r.label for r in table.rows]
                raise InputError(f"--rows: table {table.name} has no row {sel!r} (rows are numbered 0-"
                                 f"{len(labels) - 1}).{did_you_mean(sel, labels, 0.4)}")
            picked.extend(match)
        chosen = [r for r in table.rows if any(r is p for p in picked)]
    if model:
        chosen = [r for r in chosen if r.model == model or r.model.split(".")[0] == model]
        if not chosen:
            models = sorted({r.model for r in table.rows})
            raise InputError(f"--model {model}: no selected row of table {table.name} uses it (models: {', '.join(models)})")
    return chosen


def _call_protocol(protocol, query_desc, db_desc, dataset, options: dict, device: torch.device, out_dir: Path,
                   skipped_queries: list[int]):
    """Call a protocol with the engine's context where its signature asks for it: ``device`` (where
    to search), ``out_dir`` (for files it writes) and ``skipped_queries`` (unreadable queries,
    whose zero descriptors it should count as misses)."""
    params = inspect.signature(protocol).parameters
    extra: dict[str, Any] = {}
    if "skipped_queries" in params:
        extra["skipped_queries"] = skipped_queries
    if "device" in params and "device" not in options:
        extra["device"] = str(device)
    if "out_dir" in params and "out_dir" not in options:
        extra["out_dir"] = out_dir
    return protocol(query_desc, db_desc, dataset, **options, **extra)


def check_rows(table: Table, selected: Sequence[TableRow], data_root: Path) -> None:
    """Fail on a missing data folder or a misspelt model, data set or protocol before extracting anything."""
    from zoo.data.base import eval_dataset_names
    from zoo.metrics.base import get_protocol
    from zoo.models import get_model_info

    if not data_root.is_dir():
        raise DatasetError(f"--data-root {data_root}: no such folder")
    missing = sorted({str(data_root / r.data_subdir) for r in selected if not (data_root / r.data_subdir).is_dir()})
    if missing:
        raise DatasetError(f"table {table.name}: data folder(s) not found: {', '.join(missing)}. "
                           "Put the data sets there, or pick rows whose data is present with --rows "
                           "(python -m zoo eval --list --data-root ... shows which).")
    known_sets = eval_dataset_names()
    for r in selected:
        get_model_info(r.model)
        get_protocol(r.protocol)
        if r.dataset not in known_sets:
            raise DatasetError(f"row {r.label!r}: unknown eval data set {r.dataset!r}."
                               f"{did_you_mean(r.dataset, known_sets)} Known: {', '.join(known_sets)}")


@dataclass
class _Run:
    """What every row of one evaluation shares: where, how to extract, where outputs and cache go."""

    data_root: Path
    device: torch.device
    out: Path
    cache_root: Path | None
    extract: dict[str, Any]


class ModelCache:
    """The model of the current row, rebuilt only when the next row needs another one: a zoo model
    (``backend="torch"``) or onnxruntime running the graphs exported to the folder ``onnx``."""

    def __init__(self, backend: str = "torch", onnx: str | Path | None = None) -> None:
        self.backend, self.onnx = backend, onnx
        self._key: tuple | None = None
        self.net: torch.nn.Module | None = None
        self.weights_hash = ""

    def get(self, row: TableRow, source: bool | str) -> tuple[torch.nn.Module, str]:
        import zoo
        from zoo.engine.extract import weights_hash

        key = (row.model, repr(source), repr(sorted(row.model_args.items())))
        if key != self._key:
            torch.manual_seed(0)  # random-initialised rows are reproducible (and equal on every torchrun rank)
            if self.backend == "torch":
                self.net = zoo.create_model(row.model, pretrained=source, **row.model_args)
            else:
                from zoo.onnx import load_onnx_model
                self.net = load_onnx_model(self.onnx, row.model, row.model_args,
                                           quantized=self.backend == "onnxruntime-int8")
            self._key, self.weights_hash = key, weights_hash(self.net)
        assert self.net is not None
        return self.net, self.weights_hash


def extract_sides(run: _Run, row: TableRow, net: torch.nn.Module, w_hash: str, dataset: RetrievalSet) -> dict:
    """Query and database descriptors of one row, with the transforms of the model actually built
    (converted weights carry their own preprocessing), through the descriptor cache."""
    import zoo
    from zoo.engine.extract import DescriptorCache, extract_descriptors, records_fingerprint, transform_id

    q_tf, d_tf = zoo.model_transforms(net)
    sides = {}
    for side, records, tf in (("query", dataset.queries, q_tf), ("database", dataset.database, d_tf)):
        cache = None
        if run.cache_root is not None:
            cache = DescriptorCache(run.cache_root, {
                "model": row.model, "model_args": row.model_args, "weights": w_hash,
                "transform": transform_id(tf), "images": records_fingerprint(records), "side": side,
                "precision": run.extract["precision"], "device": run.device.type})
        sides[side] = extract_descriptors(net, records, tf, side=side, device=run.device, cache=cache,
                                          desc=f"{row.label}: {side}", **run.extract)
    return sides


def score_row(run: _Run, row: TableRow, dataset: RetrievalSet, sides: dict, source: bool | str,
              weights: str) -> RowResult:
    """Run the row's protocol on its descriptors."""
    from zoo.metrics.base import get_protocol

    start = time.perf_counter()
    result = _call_protocol(get_protocol(row.protocol), sides["query"].descriptors, sides["database"].descriptors,
                            dataset, dict(row.protocol_args), run.device, run.out,
                            [i for i, _ in sides["query"].skipped])
    return RowResult(
        row=row, metrics=dict(result.metrics), result=result, dataset=dataset, pretrained=source, weights=weights,
        skipped={s: e.skipped for s, e in sides.items()},
        extraction={s: {"cached_images": e.cached_images, "computed_images": e.computed_images,
                        "seconds": round(e.seconds, 3), "dim": int(e.descriptors.shape[1])}
                    for s, e in sides.items()},
        search_seconds=time.perf_counter() - start)


def evaluate_table(table: Table | str, data_root: str | Path, *, rows: Sequence[str] | None = None,
                   model: str | None = None, pretrained: bool | str | None = None,
                   device: str | None = None, batch_size: int = 32, num_workers: int = 4,
                   precision: str = "fp32", out_dir: str | Path | None = None,
                   cache_dir: str | Path | None = None, use_cache: bool = True, skip_corrupt: bool = False,
                   shard_size: int = 1024, progress: bool = True, write: bool = True,
                   tables_dir: str | Path | None = None, backend: str = "torch",
                   onnx: str | Path | None = None) -> TableResult | None:
    """Evaluate the selected rows of a table; write the report (rank 0) when ``write``.

    Args:
        table: a :class:`Table` or a table name / YAML path.
        data_root: folder holding every row's ``data_subdir``.
        rows, model: row selection (see :func:`select_rows`).
        pretrained: overrides every selected row's ``pretrained`` (e.g. a converted weights folder).
        device: ``cpu`` or ``cuda`` (default: CUDA when available). Under torchrun each process
            takes ``cuda:LOCAL_RANK`` and extracts its share of the images.
        batch_size, num_workers, precision, skip_corrupt, shard_size, progress: see
            :func:`zoo.engine.extract.extract_descriptors`.
        out_dir: report folder (default ``outputs/eval/<table>``).
        cache_dir: descriptor cache (default ``<out_dir>/cache``); ``use_cache=False`` disables it.
        backend, onnx: ``torch``, or ``onnxruntime`` / ``onnxruntime-int8`` running the graphs
            exported to the folder ``onnx`` (:class:`zoo.onnx.OnnxModel`, float32 whatever ``precision``).

    Returns:
        The :class:`TableResult` on rank 0, None on other ranks.
    """
    from zoo.data.base import build_eval_dataset
    from zoo.distributed import init_distributed
    from zoo.engine.extract import autocast_dtype
    from zoo.engine.precision import resolve_precision
    from zoo.onnx import check_backend

    if not isinstance(table, Table):
        table = load_table(table, tables_dir)
    selected = select_rows(table, rows, model)
    check_rows(table, selected, Path(data_root).expanduser())
    dist_info = init_distributed(device)
    check_backend(backend, onnx)
    # 'auto' is resolved here so that cache keys and the report name what ran.
    precision = "fp32" if backend != "torch" else resolve_precision(precision, dist_info.device, announce=progress)
    autocast_dtype(precision, dist_info.device)  # fail on a bad precision before loading anything
    out = Path(out_dir) if out_dir else Path("outputs") / "eval" / table.name
    run = _Run(Path(data_root).expanduser(), dist_info.device, out,
               (Path(cache_dir) if cache_dir else out / "cache") if use_cache else None,
               dict(batch_size=batch_size, num_workers=num_workers, precision=precision, shard_size=shard_size,
                    skip_corrupt=skip_corrupt, progress=progress))
    # Before any image is embedded: outputs are writable and never inside a data set folder.
    data_folders = {f"the data folder of row {r.label!r}": run.data_root / r.data_subdir for r in selected}
    if write:
        check_output_dir(out, data_folders)
    if run.cache_root is not None:
        check_output_dir(run.cache_root, data_folders, what="--cache-dir")
    is_main = dist_info.rank == 0

    # One process scores each row right after extracting it (only one row's descriptors in memory).
    # Under torchrun every row is extracted first: otherwise the other ranks would wait in the next
    # row's gather while rank 0 searches, and a long CPU search could outlast the collective timeout.
    deferred = dist_info.world_size > 1
    results: list[RowResult] = []
    pending: list[tuple] = []
    models = ModelCache(backend, onnx)
    for row in selected:
        source = row.pretrained if pretrained is None else pretrained
        net, w_hash = models.get(row, source)
        dataset = build_eval_dataset(row.dataset, run.data_root / row.data_subdir, **row.dataset_args)
        sides = extract_sides(run, row, net, w_hash, dataset)
        if not is_main:
            continue
        item = (row, dataset, sides, source, getattr(net, "zoo_config", {}).get("weights", str(source)))
        if deferred:
            pending.append(item)
        else:
            results.append(score_row(run, *item))
    results += [score_row(run, *item) for item in pending]
    if not is_main:
        return None
    settings = {"data_root": str(run.data_root), "device": str(run.device), "precision": precision,
                "batch_size": batch_size, "world_size": dist_info.world_size, "pretrained_override": pretrained,
                "out_dir": str(out), "cache_dir": str(run.cache_root) if use_cache else None,
                "skip_corrupt": skip_corrupt}
    table_result = TableResult(table=table, rows=results, settings=settings)
    if write:
        from zoo.engine.report import write_report
        write_report(table_result, out)
    return table_result


def data_status(table: Table, data_root: str | Path | None) -> list[str]:
    """Per row: ``found``, ``missing (folder)``, ``incomplete (why)`` or ``no --data-root given``.

    ``found`` means the row's data set reader accepted the folder (its list files, domain folders
    ...), as the evaluation will read it, not only that the folder exists.
    """
    from zoo.data.base import build_eval_dataset

    if data_root is None:
        return ["no --data-root given"] * len(table.rows)
    root = Path(data_root).expanduser()
    seen: dict[str, str] = {}
    statuses = []
    for r in table.rows:
        folder = root / r.data_subdir
        if not folder.is_dir():
            statuses.append(f"missing ({folder})")
            continue
        key = repr((r.dataset, str(folder), sorted(r.dataset_args.items())))
        if key not in seen:
            try:
                build_eval_dataset(r.dataset, folder, **r.dataset_args)
                seen[key] = "found"
            except (ZooError, TypeError, ValueError) as err:
                seen[key] = f"incomplete ({' '.join(str(err).split())})"
        statuses.append(seen[key])
    return statuses
