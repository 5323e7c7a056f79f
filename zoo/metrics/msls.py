"""MSLS challenge (test set): write the submission file for the Mapillary evaluation server.

The test set's ground truth is private, so no recall can be computed here. Like
serizba/salad's ``eval.py`` (``MSLSTest.save_predictions``), the protocol ranks the database
by L2 distance (the same order as cosine for L2-normalised descriptors) and writes one line per
query: the query's image key followed by the keys of its top ``k`` (25) database images, keys
being the file names without extension. Upload the file to the MSLS challenge server to get
R@1/5/10.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from zoo.data.base import RetrievalSet
from zoo.errors import InputError
from zoo.io import atomic_write_text
from zoo.metrics.base import ProtocolResult, register_protocol

DEFAULT_SUBMISSION = "msls_challenge_submission.txt"


def write_submission(path: Path, query_keys: list[str], database_keys: list[str], topk: torch.Tensor) -> Path:
    """One line per query: ``query_key db_key_1 ... db_key_k`` (atomically written)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, "".join(q + " " + " ".join(database_keys[j] for j in row) + "\n"
                                    for q, row in zip(query_keys, topk.tolist())))
    return path


@register_protocol("msls_challenge")
def msls_challenge(query_desc: torch.Tensor, db_desc: torch.Tensor, dataset: RetrievalSet, k: int = 25,
                   submission_path: str | Path | None = None, out_dir: str | Path | None = None,
                   **_: Any) -> ProtocolResult:
    """Top-``k`` predictions -> submission file. ``submission_path`` (relative to ``out_dir`` when
    given, else to the working directory) defaults to ``msls_challenge_submission.txt``."""
    from zoo.search import knn

    query_keys, db_keys = dataset.meta.get("query_keys"), dataset.meta.get("database_keys")
    if query_keys is None or db_keys is None:
        raise InputError(f"msls_challenge: data set {dataset.name!r} carries no image keys (read it with the msls_challenge reader)")
    if len(query_keys) != query_desc.shape[0] or len(db_keys) != db_desc.shape[0]:
        raise InputError(f"msls_challenge: {query_desc.shape[0]} query / {db_desc.shape[0]} database descriptors for "
                         f"{len(query_keys)} / {len(db_keys)} images")
    _, topk = knn(query_desc, db_desc, k, metric="l2")
    path = Path(submission_path or DEFAULT_SUBMISSION)
    if not path.is_absolute() and out_dir is not None:
        path = Path(out_dir) / path
    write_submission(path, list(query_keys), list(db_keys), topk.cpu())
    return ProtocolResult(metrics={}, topk=topk.cpu(), correct=None,
                          extra={"submission": str(path), "note": "upload to the MSLS challenge server for R@K"})
