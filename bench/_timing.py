"""Timing helpers shared by the benchmark scripts in this folder.

The scripts put the repository root on ``sys.path`` and import this module as ``bench._timing``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import time
from pathlib import Path
from typing import Callable, TypeVar

import torch

T = TypeVar("T")

#: ``--precision`` choices -> autocast dtype (None: no autocast, plain fp32).
DTYPES: dict[str, torch.dtype | None] = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def check_precision(parser: argparse.ArgumentParser, device: torch.device, precision: str) -> None:
    """Exit through ``parser.error`` when fp16 is asked for off CUDA (the scripts time fp16 on GPUs only)."""
    if precision == "fp16" and device.type != "cuda":
        parser.error("--precision fp16 needs --device cuda")


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """A fresh autocast context for ``precision`` (a key of :data:`DTYPES`); fp32 gives a no-op context."""
    dtype = DTYPES[precision]
    return torch.autocast(device.type, dtype=dtype) if dtype is not None else contextlib.nullcontext()


def synchronize(device: torch.device) -> None:
    """Wait for the queued CUDA kernels, so that a clock read after it covers their work (no-op off CUDA)."""
    if device.type == "cuda":
        torch.cuda.synchronize()


def seconds_per_call(fn: Callable[[], T], iters: int, warmup: int, device: torch.device) -> tuple[float, T]:
    """``(mean seconds per call, last result)`` of ``fn()`` over ``iters`` timed calls after ``warmup`` untimed ones.

    One clock read around the whole timed loop, with the device synchronised before and after, so
    asynchronous CUDA work is counted but not a per-call synchronisation.
    """
    out = None
    for _ in range(warmup):
        out = fn()
    synchronize(device)
    start = time.perf_counter()
    for _ in range(iters):
        out = fn()
    synchronize(device)
    return (time.perf_counter() - start) / iters, out


def report(result: T, line: str, json_path: str | Path | None) -> T:
    """Print the benchmark's one-line summary and, when asked, write its result as JSON."""
    print(line)
    if json_path:
        Path(json_path).write_text(json.dumps(result, indent=2) + "\n")
    return result
