"""eval/reproduce.py --table office_home end to end on a tiny generated Office-Home (all 12 rows)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import zoo
from zoo.cli.reproduce import main
from zoo.data.synthetic import make_office_home


def test_reproduce_office_home_table_end_to_end(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                capsys: pytest.CaptureFixture) -> None:
    make_office_home(tmp_path / "data", num_classes=2, per_class=1, size=40)  # 2-4 images per domain: 12 rows of ResNet-50
    # A random UCDIR (ResNet-50, the rows' architecture) in the zoo format stands in for trained weights
    # (the table's rows take --pretrained; weights of another architecture are refused).
    from zoo.export import export_pretrained
    weights = export_pretrained(zoo.create_model("ucdir_moco", pretrained=False), tmp_path / "weights", card=False)
    out = tmp_path / "out"
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    code = main(["--table", "office_home", "--data-root", str(tmp_path / "data"),
                 "--pretrained", str(weights), "--device", "cpu", "--out", str(out), "--num-workers", "0",
                 "--no-progress", "--batch-size", "16"])
    printed = capsys.readouterr()
    assert code == 0, printed.out[-3000:] + printed.err[-3000:]
    assert "not yet transcribed" in printed.out, printed.out[-2000:]
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
