"""--precision auto: bf16 only on hardware with native bf16, each answer of the hardware check exercised."""

from __future__ import annotations

import logging

import pytest
import torch

import zoo.engine.precision as precision
from zoo.engine.extract import autocast_dtype
from zoo.errors import InputError


@pytest.fixture(autouse=True)
def fresh_log_state(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(precision, "_logged", set())


def _fake_cpu(monkeypatch: pytest.MonkeyPatch, caps: dict | None, cpuinfo_flags: set[str] = frozenset()) -> None:
    monkeypatch.setattr(precision, "_torch_capabilities", lambda: None if caps is None else {"cpu_name": "Test CPU", **caps})
    monkeypatch.setattr(precision, "_cpuinfo", lambda: ("Test CPU", frozenset(cpuinfo_flags)))


@pytest.mark.parametrize("flag", ["avx512_bf16", "amx_bf16", "bf16"])
def test_cpu_with_native_bf16_gets_bf16(monkeypatch: pytest.MonkeyPatch, flag: str) -> None:
    _fake_cpu(monkeypatch, {"avx512_f": True, flag: True})
    choice = precision.choose_precision("cpu")
    assert choice.precision == "bf16"
    assert flag in choice.reason and "Test CPU" in choice.reason
    assert autocast_dtype("auto", torch.device("cpu")) == torch.bfloat16


def test_cpu_without_native_bf16_gets_fp32(monkeypatch: pytest.MonkeyPatch) -> None:
    # AVX-512 alone (Skylake-SP/Cascade Lake) emulates bf16: slower than fp32.
    _fake_cpu(monkeypatch, {"avx512_f": True, "avx512_bw": True, "avx512_bf16": False, "amx_bf16": False})
    choice = precision.choose_precision("cpu")
    assert choice.precision == "fp32" and "no native bf16" in choice.reason
    assert autocast_dtype("auto", torch.device("cpu")) is None


def test_proc_cpuinfo_is_the_fallback_of_old_torch(monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_cpu(monkeypatch, None, {"avx2", "avx512_bf16"})
    assert precision.choose_precision("cpu").precision == "bf16"
    assert "/proc/cpuinfo" in precision.choose_precision("cpu").reason
    _fake_cpu(monkeypatch, None, {"avx2", "avx512f"})
    assert precision.choose_precision("cpu").precision == "fp32"


@pytest.mark.parametrize("bf16, expected", [(True, "bf16"), (False, "fp16")])
def test_cuda_prefers_bf16_else_fp16(monkeypatch: pytest.MonkeyPatch, bf16: bool, expected: str) -> None:
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: bf16)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a, **k: "Test GPU")
    choice = precision.choose_precision("cuda")
    assert choice.precision == expected and "Test GPU" in choice.reason


def test_explicit_precisions_pass_through_and_bad_ones_are_named() -> None:
    for p in ("fp32", "bf16", "fp16"):
        assert precision.resolve_precision(p, "cpu") == p
    with pytest.raises(InputError, match="--precision: expected one of auto, fp32, bf16, fp16, got 'fp8'"):
        precision.resolve_precision("fp8", "cpu")


def test_choice_is_logged_once_with_its_reason(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
                                               capsys: pytest.CaptureFixture) -> None:
    _fake_cpu(monkeypatch, {"avx512_bf16": True})
    with caplog.at_level(logging.INFO, logger="zoo.precision"):
        assert precision.resolve_precision("auto", "cpu", announce=True) == "bf16"
        assert precision.resolve_precision("auto", "cpu", announce=True) == "bf16"
    lines = [r.getMessage() for r in caplog.records if r.name == "zoo.precision"]
    assert lines == ["--precision auto on cpu: bf16 (Test CPU has avx512_bf16 (torch.cpu.get_capabilities()))"]
    assert capsys.readouterr().err.count("--precision auto on cpu: bf16") == 1


def test_this_machine_is_named() -> None:
    native, evidence = precision.native_cpu_bf16()
    assert isinstance(native, bool) and precision.cpu_name() in evidence
