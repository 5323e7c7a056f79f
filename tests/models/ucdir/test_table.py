"""eval/reproduce.py --table office_home end to end on a tiny generated Office-Home (all 12 rows)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import zoo
from zoo.data.synthetic import make_office_home

REPO = Path(__file__).resolve().parents[3]
REPRODUCE = REPO / "eval" / "reproduce.py"


def test_reproduce_office_home_table_end_to_end(tmp_path: Path) -> None:
    make_office_home(tmp_path / "data", num_classes=3, per_class=2, size=40)
    # A ResNet-18 UCDIR in the zoo format stands in for trained weights (the table's rows take --pretrained).
    from zoo.export import export_pretrained
    weights = export_pretrained(zoo.create_model("ucdir_moco", pretrained=False, arch="resnet18"),
                                tmp_path / "weights", card=False)
    out = tmp_path / "out"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, str(REPRODUCE), "--table", "office_home", "--data-root", str(tmp_path / "data"),
                           "--pretrained", str(weights), "--device", "cpu", "--out", str(out), "--num-workers", "0",
                           "--no-progress", "--batch-size", "16"],
                          capture_output=True, text=True, env=env, timeout=300, cwd=REPO)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "not yet transcribed" in proc.stdout, proc.stdout[-2000:]
    report = json.loads((out / "office_home.json").read_text())
    labels = [r["label"] for r in report["rows"]]
    assert len(labels) == 12 and "Real World -> Product" in labels and "Product -> Real World" in labels
    for row in report["rows"]:
        cmp = {c["metric"]: c for c in row["comparison"]}
        assert list(cmp) == ["P@1", "P@5", "P@15", "mAP"]
        assert all(c["published"] is None for c in cmp.values())
        assert all(0.0 <= c["ours"] <= 100.0 for c in cmp.values())
        # the per-query alternatives are reported beside the original's pooled P@K, labelled as such
        assert {"per-query P@1", "per-query P@15"} <= set(row["metrics"])
