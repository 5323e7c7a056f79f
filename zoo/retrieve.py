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
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import torch

from zoo.data.base import ImageRecord, RetrievalSet
from zoo.data.images import list_images


@dataclass
class RetrievalOutput:
    out_dir: Path
    queries: list[Path]
    database: list[Path]
    scores: torch.Tensor      # (Q, k) cosine similarities, decreasing
    indices: torch.Tensor     # (Q, k) database indices
    files: list[Path]

    def summary_lines(self) -> list[str]:
        lines = []
        for qi, query in enumerate(self.queries):
            best = ", ".join(f"{self.database[int(j)].name} ({float(s):.3f})"
                             for s, j in zip(self.scores[qi], self.indices[qi]))
            lines.append(f"{query.name}: {best}")
        lines.append("wrote " + ", ".join(str(f) for f in self.files))
        return lines


def _atomic_text(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w", newline="") as f:
        f.write(text)
    os.replace(tmp, path)


def retrieve_folders(model_name: str, queries: str | Path, database: str | Path, out_dir: str | Path,
                     pretrained: bool | str = True, topk: int = 5, device: str = "cpu", batch_size: int = 8,
                     precision: str = "fp32", num_workers: int = 0, coords: str | None = None,
                     utm_zone: str | None = None, radius: float | None = None) -> RetrievalOutput:
    """Embed both folders with ``model_name`` and write ``results.csv``, ``results.json`` and ``grid.png``.

    With ``coords`` (a source of :func:`zoo.geo.read_coordinates` covering the database and, for
    errors in metres, the queries) each query is also localised: ``positions.csv`` and ``map.png``.

    Raises the zoo's errors (unreadable weights, missing folder, corrupt image) before writing anything.
    """
    import zoo
    from zoo.engine.extract import extract_descriptors
    from zoo.engine.report import plot_retrieval_grid
    from zoo.metrics.base import ProtocolResult
    from zoo.search import knn

    query_paths, database_paths = list_images(queries), list_images(database)
    model = zoo.create_model(model_name, pretrained=pretrained).to(device)
    query_tf, database_tf = zoo.get_transforms(model_name, **model.zoo_config["variant"])
    common = dict(batch_size=batch_size, device=device, precision=precision, num_workers=num_workers)
    q = extract_descriptors(model, [ImageRecord(p) for p in query_paths], query_tf, side="query",
                            desc="queries", **common).descriptors
    d = extract_descriptors(model, [ImageRecord(p) for p in database_paths], database_tf, side="database",
                            desc="database", **common).descriptors
    scores, indices = knn(q, d, k=min(topk, len(database_paths)), metric="ip")
    scores, indices = scores.cpu(), indices.cpu()

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rows = [{"query": str(qp), "rank": r + 1, "database": str(database_paths[int(indices[i, r])]),
             "similarity": round(float(scores[i, r]), 6)}
            for i, qp in enumerate(query_paths) for r in range(indices.shape[1])]
    csv_path, json_path, grid_path = out / "results.csv", out / "results.json", out / "grid.png"
    table = io.StringIO()
    writer = csv.DictWriter(table, fieldnames=["query", "rank", "database", "similarity"])
    writer.writeheader()
    writer.writerows(rows)
    _atomic_text(csv_path, table.getvalue())
    payload = {"model": model.zoo_config, "topk": rows}
    files = [csv_path, json_path, grid_path]
    if coords is not None:
        from zoo.geo import localise_map
        payload["localisation"], extra = localise_map(out, query_paths, database_paths, scores.numpy(),
                                                      indices.numpy(), coords, utm_zone, radius)
        files += extra
    _atomic_text(json_path, json.dumps(payload, indent=2, default=str) + "\n")
    view = SimpleNamespace(
        result=ProtocolResult(metrics={}, topk=indices, correct=None),
        dataset=RetrievalSet("retrieve", Path(queries), [ImageRecord(p) for p in query_paths],
                             [ImageRecord(p) for p in database_paths], None, "none"))
    plot_retrieval_grid(view, grid_path, n_queries=min(len(query_paths), 12), k=indices.shape[1])
    return RetrievalOutput(out, query_paths, database_paths, scores, indices, files)
