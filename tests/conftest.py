"""Shared fixtures: an isolated cache per test and a loopback Hugging Face Hub."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

os.environ.setdefault("OMP_NUM_THREADS", "2")
# huggingface_hub reads HF_HUB_OFFLINE once, when first imported: import it now, online, so that a
# test which sets the variable (the zoo reads it at call time) cannot leave the whole run offline.
os.environ.pop("HF_HUB_OFFLINE", None)
import huggingface_hub  # noqa: E402
import huggingface_hub.constants  # noqa: E402

from tests.hub_server import LoopbackHub  # noqa: E402

#: session fixtures: smoke_run (one training run per smoke recipe, shared by the tests that check it)
pytest_plugins = ["tests.smoke_runs"]


@pytest.fixture(autouse=True)
def isolated_caches(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test gets empty HF and torch caches, and no real Hub (an unknown endpoint fails fast)."""
    root = tmp_path_factory.mktemp("cache")
    monkeypatch.setenv("HF_HOME", str(root / "hf"))
    monkeypatch.setenv("HF_HUB_CACHE", str(root / "hf" / "hub"))
    monkeypatch.setenv("TORCH_HOME", str(root / "torch"))
    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    return root


@pytest.fixture
def hub_server(monkeypatch: pytest.MonkeyPatch) -> LoopbackHub:
    """A running loopback Hub; ``HF_ENDPOINT`` points at it for the test's duration. Uploads of large
    files take huggingface_hub's Git LFS path (the loopback does not speak Xet, the client's default)."""
    hub = LoopbackHub().start()
    monkeypatch.setenv("HF_ENDPOINT", hub.url)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_DISABLE_XET", True)
    yield hub
    hub.stop()


@pytest.fixture
def drive_server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A loopback Google Drive that gdown reaches through ``HTTPS_PROXY`` (see tests/drive_server.py)."""
    pytest.importorskip("gdown")
    pytest.importorskip("trustme")
    from tests.drive_server import LoopbackDrive

    drive = LoopbackDrive(tmp_path).start()
    for var in ("HTTPS_PROXY", "https_proxy"):
        monkeypatch.setenv(var, drive.proxy_url)
    for var in ("NO_PROXY", "no_proxy"):
        monkeypatch.setenv(var, "127.0.0.1,localhost")
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(drive.ca_bundle))
    yield drive
    drive.stop()
