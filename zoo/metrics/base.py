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


@dataclass
class ProtocolResult:
    """Metrics (name -> value, percentages where the paper uses them) and, for pictures, the
    top-k database indices per query with a correctness mask (both ``(Q, k)``)."""

    metrics: dict[str, float]
    topk: torch.Tensor | None = None
    correct: torch.Tensor | None = None
    extra: dict[str, Any] = field(default_factory=dict)


Protocol = Callable[..., ProtocolResult]
_PROTOCOLS: dict[str, Protocol] = {}


def register_protocol(name: str) -> Callable[[Protocol], Protocol]:
    def wrap(fn: Protocol) -> Protocol:
        if name in _PROTOCOLS and _PROTOCOLS[name] is not fn:
            raise ValueError(f"protocol {name!r} registered twice")
        _PROTOCOLS[name] = fn
        return fn
    return wrap


def get_protocol(name: str) -> Protocol:
    import importlib
    import pkgutil

    import zoo.metrics as package
    for mod in pkgutil.iter_modules(package.__path__):
        importlib.import_module(f"zoo.metrics.{mod.name}")
    if name not in _PROTOCOLS:
        raise KeyError(f"unknown evaluation protocol {name!r}; known: {', '.join(sorted(_PROTOCOLS))}")
    return _PROTOCOLS[name]
