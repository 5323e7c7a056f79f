"""Evaluation protocols: descriptors + ground truth -> metrics.

A protocol is ``protocol(query_desc, database_desc, dataset, **options) -> ProtocolResult``
registered with :func:`register_protocol`. Descriptors are L2-normalised float tensors
``(Q, D)`` and ``(N, D)``; protocols search with :mod:`zoo.search` (never a full Q×N matrix
for large sets) and compute metrics with the functions of this package.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from zoo.registry import Registry, import_submodules


@dataclass
class ProtocolResult:
    """Metrics (name -> value, percentages where the paper uses them) and, for pictures, the
    top-k database indices per query with a correctness mask (both ``(Q, k)``)."""

    metrics: dict[str, float]
    topk: torch.Tensor | None = None
    correct: torch.Tensor | None = None
    extra: dict[str, Any] = field(default_factory=dict)


Protocol = Callable[..., ProtocolResult]
#: Evaluation protocols by name; the modules of :mod:`zoo.metrics` register theirs when first needed.
PROTOCOLS: Registry[Protocol] = Registry("evaluation protocol", discover=lambda: import_submodules("zoo.metrics"))


def register_protocol(name: str) -> Callable[[Protocol], Protocol]:
    return PROTOCOLS.register(name)


def get_protocol(name: str) -> Protocol:
    return PROTOCOLS.get(name)
