"""eval/reproduce.py --table roxford_rparis end to end on tiny generated ROxford5k / RParis6k sets."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fixtures.aml_data import make_revisited

REPO = Path(__file__).resolve().parents[2]
REPRODUCE = REPO / "eval" / "reproduce.py"


@pytest.mark.skipif(not REPRODUCE.is_file(), reason="eval/reproduce.py (evaluation engine, issue 4) has not landed")
def test_reproduce_roxford_rparis_end_to_end(tmp_path: Path) -> None:
    data = tmp_path / "data"
    for name in ("roxford5k", "rparis6k"):
        make_revisited(data / name, name, n_landmarks=2, per_landmark=3, n_distractors=2, size=(40, 30))
    out = tmp_path / "out"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    # random weights (no download): every row, symmetric and asymmetric, runs through the whole pipeline
    proc = subprocess.run([sys.executable, str(REPRODUCE), "--table", "roxford_rparis", "--data-root", str(data),
                           "--pretrained", "false", "--device", "cpu", "--out", str(out)],
                          capture_output=True, text=True, env=env, timeout=300, cwd=REPO)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    for published in ("65.4", "40.1", "76.7", "55.2", "60.9", "32.9", "69.3", "44.2"):
        assert published in proc.stdout, proc.stdout
    text = json.dumps([json.loads(p.read_text()) for p in out.rglob("*.json")])
    assert "mAP-M" in text and "mAP-H" in text and "asym" in text
