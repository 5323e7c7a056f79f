"""eval/reproduce.py --table da_campus end to end on a tiny generated DA-Campus (both directions, with re-ranking)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import zoo
from zoo.data.synthetic import make_da_campus

REPO = Path(__file__).resolve().parents[3]
REPRODUCE = REPO / "eval" / "reproduce.py"


def test_reproduce_da_campus_table_end_to_end(tmp_path: Path) -> None:
    data = tmp_path / "data"
    make_da_campus(data, train_places=2, test_places=4, drones_per_place=2, size=16)
    from zoo.export import export_pretrained
    weights = export_pretrained(zoo.create_model("dycl_resnet", pretrained=False), tmp_path / "weights", card=False)
    out = tmp_path / "out"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, str(REPRODUCE), "--table", "da_campus", "--data-root", str(data),
                           "--pretrained", str(weights), "--device", "cpu", "--num-workers", "0", "--batch-size", "8",
                           "--out", str(out), "--no-progress"],
                          capture_output=True, text=True, env=env, timeout=300, cwd=REPO)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "H-AP" in proc.stdout
    reports = [json.loads(p.read_text()) for p in out.rglob("*.json")]
    text = json.dumps(reports)
    for needle in ("satellite -> drone", "re-ranking", "mAP@R_level2", "NDCG"):
        assert needle in text, needle
    assert list((out).rglob("rerank_*.npy")), "re-ranking rows cache their distances under --out"
