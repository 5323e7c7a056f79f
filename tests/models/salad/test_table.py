"""eval/reproduce.py --table salad end to end on tiny generated benchmarks (the five data sets of the table;
the 8192+256 rows, the other variants' rows differ only in the model variant)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import zoo
from zoo.cli.reproduce import main
from zoo.data.synthetic import make_vpr_lists


def test_reproduce_salad_table_end_to_end(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                          capsys: pytest.CaptureFixture) -> None:
    data = tmp_path / "data"
    for name in ("msls_val", "msls_challenge", "nordland", "sped", "pitts250k_test"):
        make_vpr_lists(data, name, num_places=3)
    # A 1-block model of the variant the rows ask for, exported in the zoo format, stands in for the released
    # weights (weights of another variant are refused: a row must not report numbers of a different model).
    model = zoo.create_model("dinov2_salad.8192_256", pretrained=False, depth=1, num_trainable_blocks=1)
    from zoo.export import export_pretrained
    weights = export_pretrained(model, tmp_path / "weights", card=False)
    out = tmp_path / "out"
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    code = main(["--table", "salad", "--data-root", str(data),
                 "--pretrained", str(weights), "--device", "cpu", "--out", str(out),
                 "--model", "dinov2_salad.8192_256", "--num-workers", "0", "--no-progress"])
    printed = capsys.readouterr()
    assert code == 0, printed.out[-3000:] + printed.err[-3000:]
    # Published numbers are printed beside ours.
    for published in ("75.0", "92.2", "76.0", "95.1", "92.1"):
        assert published in printed.out, printed.out
    # The MSLS challenge row wrote its submission file: one line per query, query key first.
    submissions = list(out.rglob("msls_challenge_submission_*.txt"))
    assert submissions, sorted(str(p.relative_to(out)) for p in out.rglob("*"))
    lines = submissions[0].read_text().splitlines()
    assert [line.split()[0] for line in lines] == ["q0", "q1", "q2"]
    # Our recalls are written as JSON beside the published numbers and their source.
    report = json.loads((out / "salad.json").read_text())
    rows = {r["dataset"]: r for r in report["rows"]}
    assert sorted(rows) == ["msls_challenge", "msls_val", "nordland", "pitts250k_test", "sped"]
    for name in ("msls_val", "nordland", "pitts250k_test"):
        cmp = {c["metric"]: c for c in rows[name]["comparison"]}
        assert 0.0 <= cmp["R@1"]["ours"] <= cmp["R@5"]["ours"] <= 100.0
    assert {c["metric"]: c["published"] for c in rows["msls_val"]["comparison"]} == {"R@1": 92.2, "R@5": 96.4, "R@10": 97.0}
