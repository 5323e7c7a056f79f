"""The real download path: huggingface_hub's client against a loopback Hub, and release URLs."""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save as safetensors_bytes
from torch import nn

import zoo
from zoo.errors import (
    CheckpointError,
    ChecksumError,
    DownloadError,
    StateDictMismatchError,
    WeightsNotFoundError,
    WeightsUnavailableError,
)
from zoo.io import load_checkpoint
from zoo.models import MODELS
from zoo.models.cards import HubFile, ModelInfo, UrlFile, Variant, WeightSource


class TinyNet(nn.Module):
    def __init__(self, dim: int = 4) -> None:
        super().__init__()
        self.proj = nn.Linear(3, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.normalize(self.proj(x.mean((2, 3))), dim=-1)

    encode_query = encode_database = forward


def _reference_state(dim: int = 4) -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    return TinyNet(dim).state_dict()


def _convert_original(path: Path) -> tuple[dict, dict]:
    """Converter of the test's "original" format: {'net': state dict with a 'module.' prefix}."""
    ckpt = load_checkpoint(path)
    state = {k.removeprefix("module."): v for k, v in ckpt["net"].items()}
    variant = {"dim": state["proj.weight"].shape[0]} if "proj.weight" in state else {}
    return state, {"variant": variant}


def _register(monkeypatch: pytest.MonkeyPatch, weights: dict[str, WeightSource]) -> ModelInfo:
    """A test model whose variant ``d4`` loads ``weights["default"]`` (and ``"default+"...`` after it)
    with ``pretrained=True``; the other entries are named sources."""
    default = tuple(w for name, w in weights.items() if name.startswith("default"))
    named = {name: w for name, w in weights.items() if not name.startswith("default")}
    info = ModelInfo(
        name="tiny_test", builder=TinyNet, paper="test", arxiv=None, task="test", licence="MIT",
        code_licence="MIT", original_code="-", citation="@misc{t}", descriptor_dim=lambda v: v["dim"],
        variants={"d4": Variant(args={"dim": 4}, weights=default)}, preprocessing=lambda args: {},
        transforms=lambda: (None, None), weights=named, converter=_convert_original)
    monkeypatch.setitem(MODELS._entries, "tiny_test", info)
    return info


def _publish(hub_server, state: dict[str, torch.Tensor], repo: str = "zoo-test/tiny") -> tuple[str, bytes]:
    weights = safetensors_bytes(state)
    config = json.dumps({"architecture": "tiny_test", "variant": {"dim": 4}}).encode()
    commit = hub_server.add_commit(repo, {"model.safetensors": weights, "config.json": config})
    return commit, weights


def test_hub_download_then_offline_reload(hub_server, monkeypatch):
    state = _reference_state()
    commit, blob = _publish(hub_server, state)
    _register(monkeypatch, {"default": WeightSource(
        "zoo", "test weights", HubFile("zoo-test/tiny", "model.safetensors", commit, hashlib.sha256(blob).hexdigest()))})

    model = zoo.create_model("tiny_test", pretrained=True)
    assert torch.equal(model.proj.weight, state["proj.weight"])
    assert not model.training
    assert any(method == "GET" for method, _ in hub_server.requests)

    # Pinned commit + warm cache: no request at all, even with the Hub gone.
    hub_server.requests.clear()
    hub_server.stop()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    again = zoo.create_model("tiny_test", pretrained=True)
    assert torch.equal(again.proj.weight, state["proj.weight"])


def test_revision_pinning_ignores_newer_commits(hub_server, monkeypatch):
    old_state = _reference_state()
    old_commit, old_blob = _publish(hub_server, old_state)
    new_state = {k: v + 1 for k, v in old_state.items()}
    _publish(hub_server, new_state)  # main now points at a newer commit
    _register(monkeypatch, {"default": WeightSource(
        "zoo", "pinned", HubFile("zoo-test/tiny", "model.safetensors", old_commit, hashlib.sha256(old_blob).hexdigest()))})
    model = zoo.create_model("tiny_test", pretrained=True)
    assert torch.equal(model.proj.weight, old_state["proj.weight"])
    latest = zoo.create_model("tiny_test", pretrained="hf-hub:zoo-test/tiny")
    assert torch.equal(latest.proj.weight, new_state["proj.weight"])
    pinned = zoo.create_model("tiny_test", pretrained=f"hf-hub:zoo-test/tiny@{old_commit}")
    assert torch.equal(pinned.proj.weight, old_state["proj.weight"])


def test_checksum_mismatch_is_an_error_and_evicts(hub_server, monkeypatch, isolated_caches):
    commit, _ = _publish(hub_server, _reference_state())
    _register(monkeypatch, {"default": WeightSource(
        "zoo", "bad sha", HubFile("zoo-test/tiny", "model.safetensors", commit, "0" * 64))})
    with pytest.raises(ChecksumError, match="zoo-test/tiny/model.safetensors"):
        zoo.create_model("tiny_test", pretrained=True)
    blobs = list((isolated_caches / "hf" / "hub").rglob("blobs/*"))
    weights_blobs = [b for b in blobs if b.stat().st_size > 200]
    assert weights_blobs == [], "the corrupt file must not stay in the cache"


def test_missing_file_repo_and_revision_are_clear(hub_server, monkeypatch):
    commit, _ = _publish(hub_server, _reference_state())
    _register(monkeypatch, {
        "default": WeightSource("zoo", "missing", HubFile("zoo-test/tiny", "nope.safetensors", commit)),
        "badrev": WeightSource("zoo", "bad revision", HubFile("zoo-test/tiny", "model.safetensors", "f" * 40)),
    })
    with pytest.raises(WeightsNotFoundError, match="nope.safetensors"):
        zoo.create_model("tiny_test", pretrained=True)
    with pytest.raises(WeightsNotFoundError, match="revision"):
        zoo.create_model("tiny_test", pretrained="badrev")
    with pytest.raises(WeightsNotFoundError):
        zoo.create_model("tiny_test", pretrained="hf-hub:zoo-test/does-not-exist")


def test_offline_with_nothing_cached(monkeypatch):
    _register(monkeypatch, {"default": WeightSource(
        "zoo", "never downloaded", HubFile("zoo-test/tiny", "model.safetensors", "a" * 40))})
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(WeightsUnavailableError, match="pretrained=PATH"):
        zoo.create_model("tiny_test", pretrained=True)


def _original_checkpoint(state: dict[str, torch.Tensor]) -> bytes:
    buffer = io.BytesIO()
    torch.save({"net": {f"module.{k}": v for k, v in state.items()}, "epoch": 3}, buffer)
    return buffer.getvalue()


def test_release_downloaded_once_converted_and_cached(hub_server, monkeypatch, isolated_caches):
    state = _reference_state()
    blob = _original_checkpoint(state)
    monkeypatch.setenv("ZOO_TEST_RELEASE", hub_server.add_release("tiny.ckpt", blob))
    _register(monkeypatch, {"default": WeightSource("release", "authors' release", UrlFile(
        "https://example.invalid/download/tiny.ckpt", hashlib.sha256(blob).hexdigest(), env_base="ZOO_TEST_RELEASE"))})
    model = zoo.create_model("tiny_test", pretrained=True)
    assert torch.equal(model.proj.weight, state["proj.weight"])
    converted = list((isolated_caches / "torch" / "zoo" / "converted" / "tiny_test").rglob("model.safetensors"))
    assert len(converted) == 1
    config = json.loads((converted[0].parent / "config.json").read_text())
    assert config["source"]["sha256"] == hashlib.sha256(blob).hexdigest()

    hub_server.requests.clear()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    zoo.create_model("tiny_test", pretrained=True)
    assert hub_server.requests == []


def test_release_checksum_and_truncation(hub_server, monkeypatch, isolated_caches):
    blob = _original_checkpoint(_reference_state())
    base = hub_server.add_release("tiny.ckpt", blob)
    monkeypatch.setenv("ZOO_TEST_RELEASE", base)
    _register(monkeypatch, {
        "default": WeightSource("release", "wrong sha", UrlFile("https://x.invalid/tiny.ckpt", "1" * 64, env_base="ZOO_TEST_RELEASE")),
        "missing": WeightSource("release", "404", UrlFile("https://x.invalid/absent.ckpt", None, env_base="ZOO_TEST_RELEASE")),
    })
    with pytest.raises(ChecksumError, match="tiny.ckpt"):
        zoo.create_model("tiny_test", pretrained=True)
    with pytest.raises(WeightsNotFoundError, match="404"):
        zoo.create_model("tiny_test", pretrained="missing")
    hub_server.truncate.add("/releases/tiny.ckpt")
    with pytest.raises(DownloadError, match="truncated"):
        zoo.create_model("tiny_test", pretrained=True)
    leftovers = [p for p in (isolated_caches / "torch").rglob("*") if p.is_file()]
    assert leftovers == [], f"partial files left behind: {leftovers}"


def test_local_paths_and_wrong_model(tmp_path, monkeypatch):
    state = _reference_state()
    _register(monkeypatch, {})
    original = tmp_path / "orig.ckpt"
    original.write_bytes(_original_checkpoint(state))
    model = zoo.create_model("tiny_test", pretrained=str(original))
    assert torch.equal(model.proj.weight, state["proj.weight"])

    from zoo.export import export_pretrained
    out = export_pretrained(model, tmp_path / "export", card=False)
    again = zoo.create_model("tiny_test", pretrained=str(out))
    assert torch.equal(again.proj.weight, state["proj.weight"])

    wrong = tmp_path / "wrong.ckpt"
    torch.save({"net": {"module.other.weight": torch.zeros(2)}}, wrong)
    with pytest.raises(StateDictMismatchError, match="missing keys .*proj.weight.*unexpected keys .*other.weight"):
        zoo.create_model("tiny_test", pretrained=str(wrong))
    other_format = tmp_path / "other_format.ckpt"
    torch.save({"something_else": 1}, other_format)
    with pytest.raises(CheckpointError, match="cannot be read as a tiny_test checkpoint"):
        zoo.create_model("tiny_test", pretrained=str(other_format))
    with pytest.raises(WeightsNotFoundError, match="no such file"):
        zoo.create_model("tiny_test", pretrained=str(tmp_path / "absent"))


def test_pretrained_true_without_published_weights(monkeypatch):
    info = _register(monkeypatch, {})
    info.no_weights_reason = "tiny_test: the authors released nothing; train it with the recipe."
    with pytest.raises(WeightsUnavailableError, match="released nothing"):
        zoo.create_model("tiny_test", pretrained=True)


def test_pretrained_false_makes_no_request(hub_server, monkeypatch):
    _register(monkeypatch, {"default": WeightSource("zoo", "x", HubFile("zoo-test/tiny", "model.safetensors", "a" * 40))})
    zoo.create_model("tiny_test", pretrained=False)
    assert hub_server.requests == []


def test_requested_variant_must_match_the_weights(tmp_path, monkeypatch):
    info = _register(monkeypatch, {})
    info.variants = {"d4": Variant(args={"dim": 4}), "d8": Variant(args={"dim": 8})}
    original = tmp_path / "orig.ckpt"
    original.write_bytes(_original_checkpoint(_reference_state(dim=8)))
    # Unspecified variant: the weights' own variant is built.
    assert zoo.create_model("tiny_test", pretrained=str(original)).zoo_config["variant"] == {"dim": 8}
    # An explicitly requested variant is built as asked; weights of another one are refused, never swapped.
    with pytest.raises(StateDictMismatchError, match=r"proj.weight: checkpoint \(8, 3\) vs model \(4, 3\)"):
        zoo.create_model("tiny_test.d4", pretrained=str(original))
    with pytest.raises(StateDictMismatchError, match="shape mismatches"):
        zoo.create_model("tiny_test", variant="d4", pretrained=str(original))
    with pytest.raises(StateDictMismatchError, match="shape mismatches"):
        zoo.create_model("tiny_test", dim=4, pretrained=str(original))
    assert zoo.create_model("tiny_test.d8", pretrained=str(original)).zoo_config["variant"] == {"dim": 8}
