"""``python -m zoo retrieve`` on the shipped sample images."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import torch
from PIL import Image
from torch import nn
from torchvision import transforms as T

from zoo.__main__ import main
from zoo.models import MODELS
from zoo.models.cards import ModelInfo, Variant

REPO_ROOT = Path(__file__).resolve().parents[1]
SAMPLES = REPO_ROOT / "assets" / "samples"


class ColourHistogram(nn.Module):
    """A parameter-free descriptor (per-channel means over a 4x4 grid): good enough to find a
    place's own picture among the samples, and fast."""

    def __init__(self) -> None:
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.normalize(self.pool(x).flatten(1) - 0.5, dim=-1)

    encode_query = encode_database = forward


def _register(monkeypatch) -> None:
    tf = T.Compose([T.Resize((48, 64)), T.ToTensor()])
    info = ModelInfo(name="histogram_test", builder=ColourHistogram, paper="-", arxiv=None, task="test",
                     licence="MIT", code_licence="MIT", original_code="-", citation="-", descriptor_dim=48,
                     variants={"default": Variant()}, preprocessing=lambda args: {}, transforms=lambda: (tf, tf))
    monkeypatch.setitem(MODELS._entries, "histogram_test", info)


def test_retrieve_writes_csv_json_and_grid(tmp_path, monkeypatch, capsys):
    _register(monkeypatch)
    out = tmp_path / "out"
    code = main(["retrieve", "--model", "histogram_test", "--pretrained", "false", "--queries",
                 str(SAMPLES / "queries"), "--database", str(SAMPLES / "database"), "--out", str(out), "--topk", "3"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "query_00_of_place_01.jpg" in printed
    with open(out / "results.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 3 * 3
    assert [r["rank"] for r in rows[:3]] == ["1", "2", "3"]
    sims = [float(r["similarity"]) for r in rows[:3]]
    assert sims == sorted(sims, reverse=True)
    # The samples' queries are rotated, cropped, re-lit views of one database place each.
    for row in rows:
        if row["rank"] == "1":
            place = Path(row["query"]).stem.split("_of_")[1]
            assert Path(row["database"]).stem == place, row
    payload = json.loads((out / "results.json").read_text())
    assert payload["model"]["architecture"] == "histogram_test" and len(payload["topk"]) == 9
    grid = Image.open(out / "grid.png")
    assert grid.width > 300 and grid.height > 100


def test_retrieve_missing_folder_and_corrupt_image(tmp_path, monkeypatch, capsys):
    _register(monkeypatch)
    assert main(["retrieve", "--model", "histogram_test", "--pretrained", "false", "--queries",
                 str(tmp_path / "absent"), "--database", str(SAMPLES / "database"), "--out", str(tmp_path / "o")]) == 2
    assert "absent" in capsys.readouterr().err
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    assert main(["retrieve", "--model", "histogram_test", "--pretrained", "false", "--queries", str(bad),
                 "--database", str(SAMPLES / "database"), "--out", str(tmp_path / "o")]) == 2
    assert "broken.jpg" in capsys.readouterr().err
    assert not (tmp_path / "o" / "results.csv").exists()


def test_offline_without_weights_is_one_clear_message(tmp_path):
    env = {"PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1", "TORCH_HOME": str(tmp_path), "HF_HOME": str(tmp_path)}
    result = subprocess.run([sys.executable, "-m", "zoo", "retrieve", "--model", "dinov2_salad", "--queries",
                             str(SAMPLES / "queries"), "--database", str(SAMPLES / "database"), "--out",
                             str(tmp_path / "o")], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "--pretrained PATH" in result.stderr and "dino_salad.ckpt" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_retrieve_refuses_nan_weights_naming_the_images(tmp_path, capsys):
    """Converted weights holding NaN: an error naming the images, no results written."""
    from tests.fixtures.tiny_eval_plugin import tiny_eval_cnn
    from zoo.hub import save_pretrained

    state = tiny_eval_cnn().state_dict()
    first = next(k for k, v in state.items() if v.is_floating_point() and v.ndim > 1)
    state[first] = torch.full_like(state[first], float("nan"))
    weights = save_pretrained(tmp_path / "broken", state, {"architecture": "tiny_eval_cnn", "variant": {"dim": 8}})
    out = tmp_path / "o"
    code = main(["retrieve", "--model", "tiny_eval_cnn", "--pretrained", str(weights), "--queries",
                 str(SAMPLES / "queries"), "--database", str(SAMPLES / "database"), "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2, err
    assert "query descriptors: 3 of 3 images gave descriptors with NaN or inf values" in err
    assert "query_00_of_place_01.jpg (row 0)" in err
    assert not (out / "results.csv").exists()
