"""``--precision auto``: the fastest autocast precision this hardware runs natively.

* CUDA: ``bf16`` where the GPU supports it (``torch.cuda.is_bf16_supported()``: Ampere and newer),
  else ``fp16``.
* CPU: ``bf16`` only where the processor has native bf16 arithmetic (x86 ``avx512_bf16`` or AMX
  ``amx_bf16``; Arm ``bf16``/``sve_bf16``). Elsewhere ``fp32``: without those instructions
  PyTorch emulates bf16, and a bf16 matmul ran 4.5x *slower* than fp32 on an Intel Xeon without
  them, while on an AMD EPYC with ``avx512_bf16`` autocast was 1.5-2.3x faster.
* Any other device: ``fp32``.

The CPU answer is torch's own (``torch.cpu.get_capabilities()``, torch >= 2.8); older torch falls
back to the kernel's flags in ``/proc/cpuinfo``.
"""

from __future__ import annotations

import logging
import platform
import sys
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import torch

from zoo.errors import InputError

__all__ = ["PRECISION_CHOICES", "PrecisionChoice", "cpu_name", "native_cpu_bf16", "choose_precision",
           "resolve_precision"]

log = logging.getLogger("zoo.precision")

#: what ``--precision`` accepts
PRECISION_CHOICES = ("auto", "fp32", "bf16", "fp16")
#: capability names (torch's, and /proc/cpuinfo's) that mean native bf16 arithmetic
_NATIVE_BF16_FLAGS = ("avx512_bf16", "amx_bf16", "bf16", "sve_bf16")


@dataclass(frozen=True)
class PrecisionChoice:
    """A concrete precision (``fp32``, ``bf16`` or ``fp16``) and why it was chosen."""

    precision: str
    reason: str


@lru_cache(maxsize=None)
def _cpuinfo() -> tuple[str, frozenset[str]]:
    """Model name and flags of the first processor in /proc/cpuinfo (empty where there is none)."""
    name, flags = "", frozenset()
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return name, flags
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip().lower()
        if key == "model name" and not name:
            name = value.strip()
        elif key in ("flags", "features") and not flags:
            flags = frozenset(value.split())
    return name, flags


def _torch_capabilities() -> dict | None:
    get = getattr(getattr(torch, "cpu", None), "get_capabilities", None)
    if get is None:
        return None
    try:
        return dict(get())
    except Exception:  # noqa: BLE001 - cpuinfo can fail in odd sandboxes; /proc/cpuinfo is the fallback
        return None


def cpu_name() -> str:
    """The processor's model name (e.g. ``AMD EPYC``), or the machine type where unknown."""
    caps = _torch_capabilities() or {}
    return str(caps.get("cpu_name") or _cpuinfo()[0] or platform.processor() or platform.machine())


def native_cpu_bf16() -> tuple[bool, str]:
    """Whether this CPU computes bf16 natively, and the evidence (flag names and where they were read)."""
    caps = _torch_capabilities()
    if caps is not None:
        found = [f for f in _NATIVE_BF16_FLAGS if caps.get(f) is True]
        source = "torch.cpu.get_capabilities()"
    else:
        flags = _cpuinfo()[1]
        found = [f for f in _NATIVE_BF16_FLAGS if f in flags]
        source = "/proc/cpuinfo"
    if found:
        return True, f"{cpu_name()} has {', '.join(found)} ({source})"
    return False, f"{cpu_name()} has no native bf16 (none of {', '.join(_NATIVE_BF16_FLAGS)} in {source})"


def choose_precision(device: str | torch.device) -> PrecisionChoice:
    """The precision ``auto`` means on ``device`` (see the module docstring)."""
    device = torch.device(device)
    if device.type == "cuda":
        if torch.cuda.is_bf16_supported():
            return PrecisionChoice("bf16", f"{torch.cuda.get_device_name(device)} supports bf16")
        return PrecisionChoice("fp16", f"{torch.cuda.get_device_name(device)} has no bf16 support")
    if device.type == "cpu":
        native, evidence = native_cpu_bf16()
        if native:
            return PrecisionChoice("bf16", evidence)
        return PrecisionChoice("fp32", evidence + "; emulated bf16 would be slower than fp32")
    return PrecisionChoice("fp32", f"no precision rule for {device.type} devices")


_logged: set[tuple[str, str]] = set()


def resolve_precision(precision: str, device: str | torch.device, announce: bool = False) -> str:
    """``precision`` itself, or for ``auto`` the hardware's choice, logged (and with ``announce``
    also printed to stderr) once per process and device type.

    Raises:
        InputError: ``precision`` is not one of :data:`PRECISION_CHOICES`.
    """
    if precision not in PRECISION_CHOICES:
        raise InputError(f"--precision: expected one of {', '.join(PRECISION_CHOICES)}, got {precision!r}")
    if precision != "auto":
        return precision
    device = torch.device(device)
    choice = choose_precision(device)
    if (device.type, choice.precision) not in _logged:
        _logged.add((device.type, choice.precision))
        message = f"--precision auto on {device.type}: {choice.precision} ({choice.reason})"
        log.info(message)
        if announce:
            print(message, file=sys.stderr, flush=True)
    return choice.precision
