"""Hostile and careless input on every command line: one line on stderr, exit 2, nothing lost.

Each command runs in-process (``zoo.__main__.main`` and the ``train``/``eval`` front ends); what
a user can fix is answered ``PROG: error: MESSAGE`` on one line, a bug keeps its traceback.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn
from torchvision import transforms as T

import tests.fixtures.tiny_eval_plugin  # noqa: F401 - registers tiny_eval_cnn and the tiny_eval reader
import zoo
from tests.fixtures.eval_data import make_tiny_eval
from zoo.__main__ import main
from zoo.cli.guard import run_guarded
from zoo.cli.reproduce import main as eval_main
from zoo.engine.evaluate import evaluate_table
from zoo.export import export_pretrained
from zoo.models import MODELS
from zoo.models.cards import ModelInfo, Variant

SAMPLES = Path(__file__).resolve().parents[1] / "assets" / "samples"

TABLE = """
name: tiny
title: "Tiny table"
rows:
  - label: "tiny / recall"
    model: tiny_eval_cnn.d8
    pretrained: false
    dataset: tiny_eval
    data_subdir: tiny
    protocol: vpr_recall
    protocol_args: {k_values: [1, 2]}
    metrics: [R@1, R@2]
"""


class MeanColour(nn.Module):
    """Parameter-free descriptor (channel means over a 2x2 grid): instant, and enough to rank."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.normalize(nn.functional.adaptive_avg_pool2d(x, 2).flatten(1) - 0.5, dim=-1)

    encode_query = encode_database = forward


@pytest.fixture
def mean_colour(monkeypatch: pytest.MonkeyPatch) -> str:
    tf = T.Compose([T.Resize((16, 16)), T.ToTensor()])
    info = ModelInfo(name="mean_colour_test", builder=MeanColour, paper="-", arxiv=None, task="test", licence="MIT",
                     code_licence="MIT", original_code="-", citation="-", descriptor_dim=12,
                     variants={"default": Variant()}, preprocessing=lambda args: {}, transforms=lambda: (tf, tf))
    monkeypatch.setitem(MODELS._entries, "mean_colour_test", info)
    return "mean_colour_test"


def _one_line(capsys: pytest.CaptureFixture, prog: str, *fragments: str) -> str:
    """The error line on stderr (progress bars aside), checked to be the only one."""
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = [line for line in err.replace("\r", "\n").splitlines() if line.strip() and "img/s]" not in line]
    assert len(lines) == 1, err
    assert lines[0].startswith(f"{prog}: error: "), err
    for fragment in fragments:
        assert fragment in lines[0], err
    return lines[0]


def _retrieve(model: str, queries: Path, database: Path, out: Path, *extra: str) -> int:
    return main(["retrieve", "--model", model, "--pretrained", "false", "--queries", str(queries),
                 "--database", str(database), "--out", str(out), "--topk", "2", *extra])


def _folders_with_bomb(tmp_path: Path) -> tuple[Path, Path]:
    """8x8 queries and database images, and a 64x64 database image: the bomb under a 1000-pixel limit."""
    queries, database = tmp_path / "queries", tmp_path / "database"
    for folder in (queries, database):
        folder.mkdir()
        for i in range(3):
            Image.new("RGB", (8, 8), (40 * i, 90, 200 - 50 * i)).save(folder / f"ok_{i}.png")
    Image.new("RGB", (64, 64)).save(database / "bomb.png")
    return queries, database


def test_retrieve_refuses_a_decompression_bomb_then_skips_it(mean_colour, tmp_path, monkeypatch, capsys):
    queries, database = _folders_with_bomb(tmp_path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # the 64x64 image is over twice the limit
    assert _retrieve(mean_colour, queries, database, tmp_path / "out") == 2
    _one_line(capsys, "python -m zoo retrieve", "bomb.png", "--skip-corrupt")
    assert _retrieve(mean_colour, queries, database, tmp_path / "out", "--skip-corrupt") == 0
    out = capsys.readouterr().out
    assert "skipped 1 unreadable image(s)" in out and "bomb.png" in out
    payload = json.loads((tmp_path / "out" / "results.json").read_text())
    assert len(payload["skipped"]) == 1 and all("bomb" not in r["database"] for r in payload["topk"])


def test_evaluation_skips_a_decompression_bomb(tmp_path, monkeypatch):
    make_tiny_eval(tmp_path / "data" / "tiny", n_database=6, n_queries=3)
    Image.new("RGB", (64, 64)).save(tmp_path / "data" / "tiny" / "database" / "db_004.png")
    (tmp_path / "tables").mkdir()
    (tmp_path / "tables" / "tiny.yaml").write_text(TABLE)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1100)  # the 32x32 images pass, the 64x64 one does not
    result = evaluate_table("tiny", tmp_path / "data", tables_dir=tmp_path / "tables", out_dir=tmp_path / "out",
                            device="cpu", num_workers=0, progress=False, skip_corrupt=True, use_cache=False)
    skipped = result.rows[0].skipped["database"]
    assert [i for i, _ in skipped] == [4] and "db_004.png" in skipped[0][1]


def test_retrieve_output_inside_the_database_is_refused_before_embedding(mean_colour, tmp_path, monkeypatch,
                                                                          capsys):
    import zoo.engine.extract

    def never(*args, **kwargs):
        raise AssertionError("images were embedded before the output folder was checked")

    monkeypatch.setattr(zoo.engine.extract, "extract_descriptors", never)
    database = tmp_path / "db"
    database.mkdir()
    Image.new("RGB", (8, 8)).save(database / "a.png")
    assert _retrieve(mean_colour, SAMPLES / "queries", database, database / "results") == 2
    _one_line(capsys, "python -m zoo retrieve", "inside --database")
    (tmp_path / "file").write_text("x")
    assert _retrieve(mean_colour, SAMPLES / "queries", database, tmp_path / "file") == 2
    _one_line(capsys, "python -m zoo retrieve", "exists and is not a folder")
    assert _retrieve(mean_colour, SAMPLES / "queries", database, Path("/proc/zoo-out")) == 2
    _one_line(capsys, "python -m zoo retrieve", "cannot write in /proc")


def test_unknown_variant_is_one_line(capsys, tmp_path):
    assert _retrieve("ucdir_moco.bogus", SAMPLES / "queries", SAMPLES / "database", tmp_path / "o") == 2
    _one_line(capsys, "python -m zoo retrieve", "unknown variant 'bogus'", "resnet50_128")


@pytest.fixture(scope="module")
def toy_export(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.engine.toy_task import train_cli  # noqa: F401 - registers toy_mlp
    return export_pretrained(zoo.create_model("toy_mlp", pretrained=False), tmp_path_factory.mktemp("toy") / "e")


@pytest.mark.parametrize("config, fragment", [
    ("{oops", "not valid JSON"),
    ("[1, 2, 3]", "expected a JSON object, got list"),
    ('{"architecture": "toy_mlp", "variant": "big"}', "variant: expected an object"),
    ('{"architecture": "toy_mlp", "variant": {"dim": 4000000}}', "variant.dim=4000000 is outside"),
])
def test_export_of_a_malformed_config_is_one_line(toy_export, tmp_path, capsys, config, fragment):
    folder = tmp_path / "weights"
    folder.mkdir()
    (folder / "model.safetensors").write_bytes((toy_export / "model.safetensors").read_bytes())
    (folder / "config.json").write_text(config)
    assert main(["export", "toy_mlp", "--pretrained", str(folder), "--out", str(tmp_path / "out")]) == 2
    _one_line(capsys, "python -m zoo export", "config.json", fragment)


def test_invalid_hub_id_is_one_line(tmp_path, capsys):
    assert main(["export", "dycl_resnet", "--pretrained", "hf-hub:a/b/c", "--out", str(tmp_path / "o")]) == 2
    _one_line(capsys, "python -m zoo export", "'a/b/c' is not a Hub repo id")


def test_convert_refuses_unknown_and_malformed_options(tmp_path, capsys):
    checkpoint = tmp_path / "dino_salad.ckpt"
    checkpoint.write_bytes(b"not read: the options are checked first")
    out = str(tmp_path / "out")
    assert main(["convert", "dinov2_salad", "--checkpoint", str(checkpoint), "--out", out, "--option", "m=64"]) == 2
    _one_line(capsys, "python -m zoo convert", "unknown converter option(s) 'm'", "takes no options")
    assert main(["convert", "dinov2_salad", "--checkpoint", str(checkpoint), "--out", out, "--option", "m"]) == 2
    _one_line(capsys, "python -m zoo convert", "--option expects key=value")
    assert main(["convert", "dycl_resnet", "--checkpoint", str(checkpoint), "--out", out, "--whitening", "w.pth"]) == 2
    _one_line(capsys, "python -m zoo convert", "'whitening'")


def test_push_uploads_only_the_model_and_its_card(hub_server, toy_export, tmp_path, monkeypatch, capsys):
    folder = tmp_path / "release"
    folder.mkdir()
    for name in ("model.safetensors", "config.json", "README.md"):
        (folder / name).write_bytes((toy_export / name).read_bytes())
    (folder / "notes-with-a-secret.txt").write_text("hf_private")
    (folder / "checkpoints").mkdir()
    (folder / "checkpoints" / "step-00000001.pt").write_bytes(b"training state")
    assert main(["push", str(folder), "--repo", "me/toy", "--token", "hf_visible"]) == 2
    _one_line(capsys, "python -m zoo push", "--token is not accepted", "HF_TOKEN")
    assert "me/toy" not in hub_server.repos
    monkeypatch.setenv("HF_TOKEN", "hf_from_env")
    assert main(["push", str(folder), "--repo", "me/toy"]) == 0
    (files,) = hub_server.repos["me/toy"].values()
    assert sorted(files) == ["README.md", "config.json", "model.safetensors"]


def test_eval_list_checks_each_rows_folders(tmp_path, capsys):
    (tmp_path / "OfficeHome" / "Product" / "chair").mkdir(parents=True)
    Image.new("RGB", (8, 8)).save(tmp_path / "OfficeHome" / "Product" / "chair" / "a.jpg")
    assert eval_main(["--list", "--data-root", str(tmp_path)]) == 0
    rows = [line for line in capsys.readouterr().out.splitlines() if "in OfficeHome/" in line]
    assert rows and all(": found," not in line for line in rows)
    assert all("incomplete (Office-Home domain folder not found" in line for line in rows)


def test_eval_output_inside_the_data_folder_is_refused(tmp_path, capsys):
    make_tiny_eval(tmp_path / "data" / "tiny", n_database=4, n_queries=2)
    (tmp_path / "tables").mkdir()
    (tmp_path / "tables" / "tiny.yaml").write_text(TABLE)
    argv = ["--table", "tiny", "--tables-dir", str(tmp_path / "tables"), "--data-root", str(tmp_path / "data"),
            "--device", "cpu", "--no-progress", "--num-workers", "0"]
    assert eval_main([*argv, "--out", str(tmp_path / "data" / "tiny" / "report")]) == 2
    _one_line(capsys, "python -m zoo eval", "inside the data folder of row 'tiny / recall'")
    assert not (tmp_path / "data" / "tiny" / "report").exists()
    assert eval_main([*argv, "--plugin", "no_such_plugin_module"]) == 2
    _one_line(capsys, "python -m zoo eval", "--plugin no_such_plugin_module")


def test_guard_keeps_the_traceback_of_a_bug_and_answers_input_in_one_line(capsys):
    with pytest.raises(KeyError):
        run_guarded(lambda: {}["missing"], "prog")
    with pytest.raises(TypeError):
        run_guarded(lambda: len(5), "prog")

    def unreadable() -> int:
        raise PermissionError(13, "Permission denied", "/data/locked.jpg")
    assert run_guarded(unreadable, "prog") == 2
    _one_line(capsys, "prog", "/data/locked.jpg: Permission denied")

    def missing_extra() -> int:
        raise ModuleNotFoundError("No module named 'faiss'", name="faiss")
    assert run_guarded(missing_extra, "prog") == 2
    _one_line(capsys, "prog", "No module named 'faiss'", "retrieval-zoo[eval]")
    with pytest.raises(ModuleNotFoundError):
        run_guarded(lambda: __import__("zoo.no_such_module"), "prog")


def test_sixteen_bit_query_ranks_like_its_eight_bit_twin(mean_colour, tmp_path, capsys):
    rng = np.random.default_rng(1)
    database = tmp_path / "db"
    database.mkdir()
    for i in range(4):
        Image.fromarray(rng.integers(0, 256, (16, 16)).astype(np.uint8)).save(database / f"g_{i}.png")
    queries = tmp_path / "q"
    queries.mkdir()
    grey = np.asarray(Image.open(database / "g_2.png"))
    Image.fromarray(grey.astype(np.uint16) * 257).save(queries / "g_2_sixteen_bit.png")
    assert _retrieve(mean_colour, queries, database, tmp_path / "out") == 0
    payload = json.loads((tmp_path / "out" / "results.json").read_text())
    top = payload["topk"][0]
    assert Path(top["database"]).name == "g_2.png" and top["similarity"] > 0.999


def test_retrieve_topk_must_be_positive(capsys):
    with pytest.raises(SystemExit) as stop:
        main(["retrieve", "--model", "x", "--queries", "q", "--database", "d", "--topk", "-1"])
    assert stop.value.code == 2
    assert "--topk: expected an integer >= 1, got -1" in capsys.readouterr().err


def test_retrieve_write_failure_leaves_no_temporary_file(mean_colour, tmp_path, monkeypatch, capsys):
    import os

    def disk_full(src, dst):
        raise OSError(28, "No space left on device", str(dst))

    queries, database = _folders_with_bomb(tmp_path)
    (database / "bomb.png").unlink()
    monkeypatch.setattr(os, "replace", disk_full)
    assert _retrieve(mean_colour, queries, database, tmp_path / "out") == 2
    _one_line(capsys, "python -m zoo retrieve", "results.csv: No space left on device")
    assert list((tmp_path / "out").iterdir()) == []
