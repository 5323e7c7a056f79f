"""End to end: a table YAML over a tiny generated data set, through the Python API, through
``eval/reproduce.py`` in a subprocess, and as ``python -m zoo eval`` under ``torchrun`` with 2 gloo processes."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

import tests.fixtures.tiny_eval_plugin  # noqa: F401 - registers tiny_eval_cnn and the tiny_eval reader
from tests.fixtures.eval_data import make_tiny_eval
from zoo.engine.evaluate import evaluate_table, load_table
from zoo.errors import DatasetError, InputError

REPO_ROOT = Path(__file__).resolve().parents[2]
SCRIPT = REPO_ROOT / "eval" / "reproduce.py"
PLUGIN = "tests.fixtures.tiny_eval_plugin"

TABLE = """
name: tiny
title: "Tiny table for the engine's tests"
rows:
  - label: "tiny / recall"
    model: tiny_eval_cnn.d8
    pretrained: false
    dataset: tiny_eval
    data_subdir: tiny
    protocol: vpr_recall
    protocol_args: {k_values: [1, 2, 5]}
    metrics: [R@1, R@2, R@5]
    tolerance: 0.5
  - label: "tiny / cross-view rank"
    model: tiny_eval_cnn.d8
    pretrained: false
    dataset: tiny_eval
    dataset_args: {protocol: cross_view_rank}
    data_subdir: tiny
    protocol: cross_view_rank
    metrics: [R@1, R@5, R@10, R@1%]
    benchmark: tiny_eval_cross_view
"""


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("e2e")
    make_tiny_eval(root / "data" / "tiny", n_database=12, n_queries=6)
    (root / "tables").mkdir()
    (root / "tables" / "tiny.yaml").write_text(TABLE)
    return root


def _env():
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO_ROOT), NO_COLOR="1")
    env.pop("WORLD_SIZE", None)
    return env


def _run(args, cwd, timeout=900):
    return subprocess.run([sys.executable, str(SCRIPT), *args], cwd=cwd, env=_env(), capture_output=True,
                          text=True, timeout=timeout)


def _shards(cache_dir: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file
    return {str(p.relative_to(cache_dir)): load_file(p)["descriptors"] for p in sorted(cache_dir.rglob("shard_*.safetensors"))}


@pytest.fixture(scope="module")
def api_result(setup):
    return evaluate_table("tiny", setup / "data", tables_dir=setup / "tables", out_dir=setup / "api", num_workers=0,
                          batch_size=4, shard_size=4, device="cpu", progress=False)


def test_api_metrics_and_report_files(setup, api_result):
    rows = {r.row.label: r for r in api_result.rows}
    recall = rows["tiny / recall"]
    # Query i is a noisy copy of database image 2i (positives 2i, 2i+1): found first for every query.
    assert recall.metrics["R@1"] == 100.0
    assert recall.result.topk.shape == (6, 5) and recall.result.correct[:, 0].all()
    assert rows["tiny / cross-view rank"].result.extra["ranks"].tolist() == [0] * 6
    assert rows["tiny / cross-view rank"].extraction["query"]["cached_images"] == 6  # reused from row 1

    out = setup / "api"
    report = json.loads((out / "tiny.json").read_text())
    comparison = {c["metric"]: c for c in report["rows"][0]["comparison"]}
    assert comparison["R@1"]["status"] == "ok" and comparison["R@1"]["difference"] == 0.0
    assert comparison["R@2"]["status"] == "beyond tolerance"  # 100 or 83.3 vs the 80 made up above
    assert comparison["R@5"]["status"] == "not yet transcribed"
    assert all(c["status"] == "not yet transcribed" for c in report["rows"][1]["comparison"])
    assert report["rows"][1]["extra"]["top1_percent_k"] == 0
    md = (out / "tiny.md").read_text()
    assert "| tiny / recall | tiny_eval | R@1 | 100.00 | 100.00 | +0.00 | ok |" in md
    assert "not yet transcribed" in md and "made up for the test" in md
    curve = Image.open(out / "recall_tiny_eval.png")
    assert curve.size[0] > 300
    grid = Image.open(out / "grid_tiny_recall.png").convert("RGB")
    assert grid.size == (6 * 122 + 8, 6 * 136)
    # The first match of the first query is correct: its frame (left edge) is green.
    assert grid.getpixel((122 + 8 + 1, 14 + 60)) == (0, 170, 0)


def test_cli_subprocess_matches_api_and_resumes_from_cache(setup, api_result):
    args = ["--table", "tiny", "--tables-dir", str(setup / "tables"), "--data-root", str(setup / "data"),
            "--plugin", PLUGIN, "--num-workers", "1", "--batch-size", "4", "--shard-size", "4",
            "--device", "cpu", "--no-progress", "--out", str(setup / "cli")]
    first = _run(args, cwd=setup)
    assert first.returncode == 0, first.stderr
    assert "not yet transcribed" in first.stdout and "beyond tolerance" in first.stdout
    report = json.loads((setup / "cli" / "tiny.json").read_text())
    assert [r["metrics"] for r in report["rows"]] == [r.metrics for r in api_result.rows]
    before = _shards(setup / "cli" / "cache")
    assert _cli_main()(args) == 0  # the same command again, in this process: everything from the cache
    again = json.loads((setup / "cli" / "tiny.json").read_text())
    assert [r["metrics"] for r in again["rows"]] == [r["metrics"] for r in report["rows"]]
    assert all(r["extraction"][s]["computed_images"] == 0 for r in again["rows"] for s in ("query", "database"))
    after = _shards(setup / "cli" / "cache")
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)


def test_list(setup, capsys):
    assert _cli_main()(["--list", "--tables-dir", str(setup / "tables"), "--data-root", str(setup / "data")]) == 0
    out = capsys.readouterr().out
    assert "tiny: Tiny table" in out and "[1] tiny / cross-view rank" in out and "tiny/: found" in out
    assert _cli_main()(["--list", "--tables-dir", str(setup / "tables"), "--data-root", str(setup)]) == 0
    assert f"missing ({setup / 'tiny'})" in capsys.readouterr().out


def test_torchrun_two_processes_equal_one(setup, api_result):
    import socket
    with socket.socket() as sock:  # a free port: other test runs may be using torchrun's default
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    # torchrun's -m: every process runs ``python -m zoo eval`` (the subprocess test above runs eval/reproduce.py)
    args = ["-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(port), "-m", "zoo", "eval",
            "--table", "tiny", "--tables-dir", str(setup / "tables"), "--data-root", str(setup / "data"),
            "--plugin", PLUGIN, "--num-workers", "0", "--batch-size", "4", "--shard-size", "4", "--device", "cpu",
            "--no-progress", "--out", str(setup / "ddp")]
    run = subprocess.run([sys.executable, *args], cwd=setup, env=_env(), capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stderr[-3000:]
    report = json.loads((setup / "ddp" / "tiny.json").read_text())
    assert report["settings"]["world_size"] == 2
    assert [r["metrics"] for r in report["rows"]] == [r.metrics for r in api_result.rows]
    # Shards 0 and 2 came from rank 0, shard 1 from rank 1: bitwise the single-process descriptors.
    ddp, single = _shards(setup / "ddp" / "cache"), _shards(setup / "api" / "cache")
    assert ddp.keys() == single.keys() and len(ddp) == 5  # 2 query shards + 3 database shards (one key each side)
    assert all(torch.equal(ddp[k], single[k]) for k in ddp)


def _cli_main():
    spec = importlib.util.spec_from_file_location("reproduce_cli", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


def test_cli_errors_are_clear(setup, capsys):
    main = _cli_main()
    base = ["--tables-dir", str(setup / "tables"), "--no-progress"]
    assert main(["--table", "tinny", "--data-root", str(setup / "data"), *base]) == 2
    err = capsys.readouterr().err
    assert "unknown table 'tinny'" in err and "Did you mean tiny?" in err and "Traceback" not in err
    assert main(["--table", "tiny", "--data-root", str(setup / "nowhere"), *base]) == 2
    assert "--data-root" in capsys.readouterr().err
    (setup / "empty").mkdir(exist_ok=True)
    assert main(["--table", "tiny", "--data-root", str(setup / "empty"), *base]) == 2
    assert f"data folder(s) not found: {setup / 'empty' / 'tiny'}" in capsys.readouterr().err
    assert main(["--table", "tiny", "--data-root", str(setup / "data"), "--rows", "tiny / recal", *base]) == 2
    assert "Did you mean tiny / recall" in capsys.readouterr().err
    assert main(["--table", "tiny", *base]) == 2
    assert "--data-root is required" in capsys.readouterr().err


def test_corrupt_image_named_then_skipped_and_counted(setup, tmp_path, capsys):
    make_tiny_eval(tmp_path / "data" / "tiny", corrupt=("database/db_005.png", "queries/q_002.png"))
    code = _cli_main()(["--table", "tiny", "--tables-dir", str(setup / "tables"), "--data-root",
                        str(tmp_path / "data"), "--num-workers", "1", "--no-progress", "--device", "cpu",
                        "--rows", "0", "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2
    assert "q_002.png" in err and "--skip-corrupt" in err and "Traceback" not in err  # queries come first
    result = evaluate_table("tiny", tmp_path / "data", tables_dir=setup / "tables", out_dir=tmp_path / "out",
                            rows=["0"], num_workers=0, skip_corrupt=True, device="cpu", progress=False)
    assert [i for i, _ in result.rows[0].skipped["database"]] == [5]
    assert [i for i, _ in result.rows[0].skipped["query"]] == [2]
    assert result.rows[0].metrics["R@1"] == pytest.approx(500 / 6)  # the skipped query is a miss
    report = json.loads((tmp_path / "out" / "tiny.json").read_text())
    assert len(report["rows"][0]["skipped"]["database"]) == 1
    assert "db_005.png" in report["rows"][0]["skipped"]["database"][0]["reason"]
    assert "Unreadable images skipped" in (tmp_path / "out" / "tiny.md").read_text()


def test_pretrained_override_and_model_filter(setup, tmp_path):
    from tests.fixtures.tiny_eval_plugin import tiny_eval_cnn
    from zoo.hub import save_pretrained
    torch.manual_seed(1)
    save_pretrained(tmp_path / "w", tiny_eval_cnn().state_dict(), {"architecture": "tiny_eval_cnn"})
    result = evaluate_table("tiny", setup / "data", tables_dir=setup / "tables", out_dir=tmp_path / "out",
                            pretrained=str(tmp_path / "w"), model="tiny_eval_cnn", rows=["tiny / recall"],
                            num_workers=0, device="cpu", progress=False, write=False)
    assert len(result.rows) == 1 and result.rows[0].weights == str(tmp_path / "w")
    assert result.rows[0].extraction["database"]["computed_images"] == 12  # other weights: not the cached ones
    with pytest.raises(InputError, match="no selected row"):
        evaluate_table("tiny", setup / "data", tables_dir=setup / "tables", model="dinov2_salad", write=False)


def test_table_schema_errors(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(TABLE.replace("data_subdir: tiny\n    protocol: vpr_recall", "data_subdr: tiny\n    protocol: vpr_recall"))
    with pytest.raises(InputError, match=r"row 0 \(tiny / recall\): missing key\(s\) data_subdir"):
        load_table(bad)
    bad.write_text(TABLE.replace("    tolerance: 0.5\n", "    tolerance: 0.5\n    tolerence: 1\n"))
    with pytest.raises(InputError, match="'tolerence'. Did you mean tolerance\\?"):
        load_table(bad)
    good = tmp_path / "good.yaml"
    good.write_text(TABLE)
    with pytest.raises(DatasetError, match="no such folder"):
        evaluate_table(load_table(good), tmp_path / "none", write=False)
    (tmp_path / "tiny").mkdir()
    bad.write_text(TABLE.replace("protocol: vpr_recall", "protocol: vpr_recal"))
    with pytest.raises(KeyError, match="unknown evaluation protocol 'vpr_recal'"):
        evaluate_table(load_table(bad), tmp_path, write=False)
    bad.write_text(TABLE.replace("dataset: tiny_eval\n", "dataset: tiny_evl\n"))
    with pytest.raises(DatasetError, match="unknown eval data set 'tiny_evl'. Did you mean tiny_eval"):
        evaluate_table(load_table(bad), tmp_path, write=False)
