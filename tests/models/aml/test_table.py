"""eval/reproduce.py --table roxford_rparis end to end on tiny generated ROxford5k / RParis6k sets."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from zoo.cli.reproduce import main
from zoo.data.synthetic import make_revisited


def test_reproduce_roxford_rparis_end_to_end(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                             capsys: pytest.CaptureFixture) -> None:
    data = tmp_path / "data"
    for name in ("roxford5k", "rparis6k"):
        make_revisited(data / name, name, n_landmarks=2, per_landmark=3, n_distractors=2, size=(96, 72))
    out = tmp_path / "out"
    # random weights (no download); rows: the four teacher rows (published numbers) and the MobileNetV2
    # student of VGG16, symmetric and asymmetric (the ResNet-101 / EfficientNet rows only cost time)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    code = main(["--table", "roxford_rparis", "--data-root", str(data),
                 "--rows", "0", "1", "6", "7", "10", "11", "--pretrained", "false", "--device", "cpu",
                 "--num-workers", "0", "--no-progress", "--out", str(out)])
    printed = capsys.readouterr()
    assert code == 0, printed.out[-3000:] + printed.err[-3000:]
    for published in ("65.4", "40.1", "76.7", "55.2", "60.9", "32.9", "69.3", "44.2"):
        assert published in printed.out, printed.out
    report = json.loads((out / "roxford_rparis.json").read_text())
    rows = {r["model"]: r for r in report["rows"] if r["dataset"] == "roxford5k"}
    assert set(rows) == {"aml_student.teacher_resnet101", "aml_student.teacher_vgg16", "aml_student.mobilenetv2_vgg16",
                         "aml_student.mobilenetv2_vgg16_asym"}
    for row in report["rows"]:
        for setting in "EMH":  # every setting has queries with positives: finite percentages
            assert 0.0 <= row["metrics"][f"mAP-{setting}"] <= 100.0, row["metrics"]
