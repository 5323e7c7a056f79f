"""hubconf.py as torch.hub sees it: exactly the five entry points, each loadable from the repo root."""

from __future__ import annotations

import inspect
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from zoo.models import ENTRY_POINTS

REPO_ROOT = Path(__file__).resolve().parents[1]


def _hub_module():
    # torch.hub.list() only accepts GitHub repos; this is the code path it runs on the
    # downloaded repo: import hubconf.py by file, then keep public callables.
    return torch.hub._import_module("hubconf", str(REPO_ROOT / "hubconf.py"))


def test_torch_hub_lists_exactly_the_five_entry_points():
    module = _hub_module()
    listed = sorted(f for f in dir(module) if callable(getattr(module, f)) and not f.startswith("_"))
    assert listed == sorted(ENTRY_POINTS)
    torch.hub._check_dependencies(module)  # raises if a declared dependency is missing


@pytest.mark.parametrize("name", ENTRY_POINTS)
def test_entry_point_docstring_and_signature(name):
    fn = getattr(_hub_module(), name)
    doc = inspect.getdoc(fn) or ""
    assert "Output" in doc and "icence" in doc and "arXiv" in doc, doc
    params = inspect.signature(fn).parameters
    assert params["pretrained"].default is True


def test_hub_load_from_clean_checkout_without_weights(tmp_path):
    """A fresh process where only the repo root is importable (as torch.hub arranges it)."""
    code = (
        "import torch, json\n"
        "out = {}\n"
        f"for name in {list(ENTRY_POINTS)!r}:\n"
        f"    m = torch.hub.load({str(REPO_ROOT)!r}, name, source='local', pretrained=False)\n"
        "    out[name] = [type(m).__name__, m.training, m.zoo_config['descriptor_dim']]\n"
        "print(json.dumps(out))\n"
    )
    env = {"PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1", "TORCH_HOME": str(tmp_path), "HF_HOME": str(tmp_path),
           "OMP_NUM_THREADS": "2"}
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                            timeout=900)
    assert result.returncode == 0, result.stderr
    import json
    loaded = json.loads(result.stdout.strip().splitlines()[-1])
    assert set(loaded) == set(ENTRY_POINTS)
    for name, value in loaded.items():
        assert value[1] is False, f"{name} must come back in eval mode"
        assert value[2] > 0
    assert list(Path(tmp_path).rglob("*.safetensors")) == [], "pretrained=False must download nothing"
