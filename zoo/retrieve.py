"""Retrieve: embed a folder of queries and a folder of database images, write each query's top-k.

The work behind ``python -m zoo retrieve``: the model's own evaluation transforms,
``encode_query`` for queries and ``encode_database`` for the database (batched extraction of
:mod:`zoo.engine.extract`), exact search of :mod:`zoo.search`, and the retrieval grid of
:mod:`zoo.engine.report`.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING

import torch

from zoo.data.base import ImageRecord, RetrievalSet
from zoo.io import atomic_write_text, check_output_dir, list_images

if TYPE_CHECKING:
    from zoo.engine.extract import Extraction


@dataclass
class RetrievalOutput:
    out_dir: Path
    queries: list[Path]
    database: list[Path]
    scores: torch.Tensor      # (Q, k) cosine similarities, decreasing
    indices: torch.Tensor     # (Q, k) database indices
    files: list[Path]
    skipped: list[str] = field(default_factory=list)  # unreadable images left out (--skip-corrupt), with why

    def summary_lines(self) -> list[str]:
        lines = []
        for qi, query in enumerate(self.queries):
            best = ", ".join(f"{self.database[int(j)].name} ({float(s):.3f})"
                             for s, j in zip(self.scores[qi], self.indices[qi]))
            lines.append(f"{query.name}: {best}")
        if self.skipped:
            lines.append(f"skipped {len(self.skipped)} unreadable image(s): " + "; ".join(self.skipped))
        lines.append("wrote " + ", ".join(str(f) for f in self.files))
        return lines


def _readable(paths: list[Path], extraction: Extraction) -> tuple[list[Path], torch.Tensor]:
    """The images that were read and their descriptors (skipped ones are zero rows: dropped here)."""
    bad = {i for i, _ in extraction.skipped}
    keep = [i for i in range(len(paths)) if i not in bad]
    return [paths[i] for i in keep], extraction.descriptors[keep]


def retrieve_folders(model_name: str, queries: str | Path, database: str | Path, out_dir: str | Path,
                     pretrained: bool | str = True, topk: int = 5, device: str = "cpu", batch_size: int = 8,
                     precision: str = "fp32", num_workers: int = 0, skip_corrupt: bool = False,
                     coords: str | None = None, utm_zone: str | None = None, radius: float | None = None
                     ) -> RetrievalOutput:
    """Embed both folders with ``model_name`` and write ``results.csv``, ``results.json`` and ``grid.png``.

    ``out_dir`` is checked first (not a file, writable, outside both input folders, so that a later
    run never reads this run's grid as a database image). With ``skip_corrupt`` unreadable images
    are left out of the search and listed in ``skipped``; without it the first one stops the run.
    With ``coords`` (a source of :func:`zoo.geo.read_coordinates` covering the database and, for
    errors in metres, the queries) each query is also localised: ``positions.csv`` and ``map.png``.

    Raises the zoo's errors (refused output folder, unreadable weights, missing folder, corrupt
    image, coordinates that do not cover the database) before writing any result.
    """
    import zoo
    from zoo.engine.extract import extract_descriptors
    from zoo.engine.report import plot_retrieval_grid
    from zoo.metrics.base import ProtocolResult
    from zoo.search import knn

    out = check_output_dir(out_dir, {"--queries": queries, "--database": database})
    query_paths, database_paths = list_images(queries), list_images(database)
    model = zoo.create_model(model_name, pretrained=pretrained).to(device)
    query_tf, database_tf = zoo.model_transforms(model)
    common = dict(batch_size=batch_size, device=device, precision=precision, num_workers=num_workers,
                  skip_corrupt=skip_corrupt)
    q_side = extract_descriptors(model, [ImageRecord(p) for p in query_paths], query_tf, side="query",
                                 desc="queries", **common)
    d_side = extract_descriptors(model, [ImageRecord(p) for p in database_paths], database_tf, side="database",
                                 desc="database", **common)
    skipped = [message for side in (q_side, d_side) for _, message in side.skipped]
    query_paths, q = _readable(query_paths, q_side)
    database_paths, d = _readable(database_paths, d_side)
    scores, indices = knn(q, d, k=min(topk, len(database_paths)), metric="ip")
    scores, indices = scores.cpu(), indices.cpu()

    out.mkdir(parents=True, exist_ok=True)
    rows = [{"query": str(qp), "rank": r + 1, "database": str(database_paths[int(indices[i, r])]),
             "similarity": round(float(scores[i, r]), 6)}
            for i, qp in enumerate(query_paths) for r in range(indices.shape[1])]
    csv_path, json_path, grid_path = out / "results.csv", out / "results.json", out / "grid.png"
    table = io.StringIO()
    writer = csv.DictWriter(table, fieldnames=["query", "rank", "database", "similarity"])
    writer.writeheader()
    writer.writerows(rows)
    payload = {"model": model.zoo_config, "topk": rows, "skipped": skipped}
    files = [csv_path, json_path, grid_path]
    if coords is not None:
        from zoo.geo import localise_map
        payload["localisation"], extra = localise_map(out, query_paths, database_paths, scores.numpy(),
                                                      indices.numpy(), coords, utm_zone, radius)
        files += extra
    atomic_write_text(csv_path, table.getvalue())
    atomic_write_text(json_path, json.dumps(payload, indent=2, default=str) + "\n")
    view = SimpleNamespace(
        result=ProtocolResult(metrics={}, topk=indices, correct=None),
        dataset=RetrievalSet("retrieve", Path(queries), [ImageRecord(p) for p in query_paths],
                             [ImageRecord(p) for p in database_paths], None, "none"))
    plot_retrieval_grid(view, grid_path, n_queries=min(len(query_paths), 12), k=indices.shape[1])
    return RetrievalOutput(out, query_paths, database_paths, scores, indices, files, skipped)
