"""eval/reproduce.py --table cvusa end to end on a tiny generated CVUSA set, checked against ranks
computed here with the original's formula (test_cvusa.py) from the model's own descriptors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

import zoo
from zoo.cli.reproduce import main
from zoo.data.synthetic import make_cvusa
from zoo.io import load_image


def test_reproduce_cvusa_table_end_to_end(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                          capsys: pytest.CaptureFixture) -> None:
    root = make_cvusa(tmp_path / "data" / "CVUSA", n_train=0, n_val=3)
    torch.manual_seed(0)
    model = zoo.create_model("cvft_vgg", pretrained=False)
    from zoo.export import export_pretrained
    weights = export_pretrained(model, tmp_path / "weights", card=False)
    out = tmp_path / "out"
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    code = main(["--table", "cvusa", "--data-root", str(tmp_path / "data"),
                 "--pretrained", str(weights), "--device", "cpu", "--out", str(out), "--batch-size", "2",
                 "--num-workers", "0", "--no-progress"])
    printed = capsys.readouterr()
    assert code == 0, printed.out[-3000:] + printed.err[-3000:]
    for published in ("61.43", "84.69", "90.49", "99.02"):
        assert published in printed.out, printed.out

    # The original's evaluation on the same images and weights.
    ground_tf, aerial_tf = zoo.get_transforms("cvft_vgg")
    pairs = [line.split(",")[:2] for line in (root / "splits/val-19zl.csv").read_text().split()]
    with torch.no_grad():
        grd = model.encode_query(torch.stack([ground_tf(load_image(root / g)) for _, g in pairs])).double().numpy()
        sat = model.encode_database(torch.stack([aerial_tf(load_image(root / a)) for a, _ in pairs])).double().numpy()
    dist = 2 - 2 * sat @ grd.T
    ranks = np.array([np.sum(dist[:, i] < dist[i, i]) for i in range(len(pairs))])
    expected = {f"R@{k}": 100.0 * np.mean(ranks < k) for k in (1, 5, 10)}
    expected["R@1%"] = 100.0 * np.mean(ranks < int(len(pairs) * 0.01))

    report = json.loads((out / "cvusa.json").read_text())
    (row,) = report["rows"]
    ours = {c["metric"]: c["ours"] for c in row["comparison"]}
    assert ours == pytest.approx(expected), (ours, expected, ranks)
    assert {c["metric"]: c["published"] for c in row["comparison"]} == {"R@1": 61.43, "R@5": 84.69, "R@10": 90.49, "R@1%": 99.02}
