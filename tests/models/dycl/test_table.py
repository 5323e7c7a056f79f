"""eval/reproduce.py --table da_campus end to end on a tiny generated DA-Campus (both directions, with re-ranking)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import zoo
from zoo.cli.reproduce import main
from zoo.data.synthetic import make_da_campus


def test_reproduce_da_campus_table_end_to_end(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                              capsys: pytest.CaptureFixture) -> None:
    data = tmp_path / "data"
    make_da_campus(data, train_places=2, test_places=4, drones_per_place=2, size=16)
    from zoo.export import export_pretrained
    weights = export_pretrained(zoo.create_model("dycl_resnet", pretrained=False), tmp_path / "weights", card=False)
    out = tmp_path / "out"
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    code = main(["--table", "da_campus", "--data-root", str(data),
                 "--pretrained", str(weights), "--device", "cpu", "--num-workers", "0", "--batch-size", "8",
                 "--out", str(out), "--no-progress"])
    printed = capsys.readouterr()
    assert code == 0, printed.out[-3000:] + printed.err[-3000:]
    assert "H-AP" in printed.out
    reports = [json.loads(p.read_text()) for p in out.rglob("*.json")]
    text = json.dumps(reports)
    for needle in ("satellite -> drone", "re-ranking", "mAP@R_level2", "NDCG"):
        assert needle in text, needle
    assert list((out).rglob("rerank_*.npy")), "re-ranking rows cache their distances under --out"
