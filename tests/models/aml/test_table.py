"""eval/reproduce.py --table roxford_rparis end to end on tiny generated ROxford5k / RParis6k sets."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from zoo.data.synthetic import make_revisited

REPO = Path(__file__).resolve().parents[3]
REPRODUCE = REPO / "eval" / "reproduce.py"


def test_reproduce_roxford_rparis_end_to_end(tmp_path: Path) -> None:
    data = tmp_path / "data"
    for name in ("roxford5k", "rparis6k"):
        make_revisited(data / name, name, n_landmarks=2, per_landmark=3, n_distractors=2, size=(96, 72))
    out = tmp_path / "out"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    # random weights (no download); rows: the four teacher rows (published numbers) and the MobileNetV2
    # student of VGG16, symmetric and asymmetric (the ResNet-101 / EfficientNet rows only cost time)
    proc = subprocess.run([sys.executable, str(REPRODUCE), "--table", "roxford_rparis", "--data-root", str(data),
                           "--rows", "0", "1", "6", "7", "10", "11", "--pretrained", "false", "--device", "cpu",
                           "--num-workers", "0", "--no-progress", "--out", str(out)],
                          capture_output=True, text=True, env=env, timeout=300, cwd=REPO)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    for published in ("65.4", "40.1", "76.7", "55.2", "60.9", "32.9", "69.3", "44.2"):
        assert published in proc.stdout, proc.stdout
    report = json.loads((out / "roxford_rparis.json").read_text())
    rows = {r["model"]: r for r in report["rows"] if r["dataset"] == "roxford5k"}
    assert set(rows) == {"aml_student.teacher_resnet101", "aml_student.teacher_vgg16", "aml_student.mobilenetv2_vgg16",
                         "aml_student.mobilenetv2_vgg16_asym"}
    for row in report["rows"]:
        for setting in "EMH":  # every setting has queries with positives: finite percentages
            assert 0.0 <= row["metrics"][f"mAP-{setting}"] <= 100.0, row["metrics"]
