"""zoo.data.synthetic: every registered set lands complete in its folder, once, with nothing left over."""

from __future__ import annotations

from pathlib import Path

import pytest

from zoo.data.synthetic import SYNTHETIC_SETS, SyntheticSet, materialise
from zoo.errors import UnknownNameError


@pytest.mark.parametrize("name", [n for n in SYNTHETIC_SETS.names() if n != "cvusa"])  # cvusa: tests/test_end_to_end.py
def test_each_set_writes_its_subdir(name: str, tmp_path: Path) -> None:
    folder = materialise(name, tmp_path)
    assert folder == tmp_path / SYNTHETIC_SETS.get(name).subdir
    assert sum(1 for p in folder.rglob("*") if p.is_file()) >= 10
    assert sorted(p.name for p in tmp_path.iterdir()) == [folder.name]  # no staging folder left


def test_an_existing_set_is_reused_not_rewritten(tmp_path: Path) -> None:
    folder = materialise("da_campus", tmp_path)
    (folder / "drone" / "train.txt").write_text("kept\n")
    assert materialise("da_campus", tmp_path) == folder
    assert (folder / "drone" / "train.txt").read_text() == "kept\n"


def test_a_set_renamed_in_by_another_process_first_wins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def write(staging: Path) -> None:
        (tmp_path / "race").mkdir()  # the other process finishes while this one writes
        (tmp_path / "race" / "theirs.txt").write_text("first")
        (staging / "race").mkdir()
        (staging / "race" / "ours.txt").write_text("second")

    monkeypatch.setitem(SYNTHETIC_SETS._entries, "race", SyntheticSet("race", write, "test"))
    assert materialise("race", tmp_path) == tmp_path / "race"
    assert [p.name for p in (tmp_path / "race").iterdir()] == ["theirs.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["race"]


def test_a_failed_write_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def write(staging: Path) -> None:
        (staging / "broken").mkdir()
        raise OSError("disk full")

    monkeypatch.setitem(SYNTHETIC_SETS._entries, "broken", SyntheticSet("broken", write, "test"))
    with pytest.raises(OSError, match="disk full"):
        materialise("broken", tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_unknown_set_names_the_close_ones(tmp_path: Path) -> None:
    with pytest.raises(UnknownNameError, match="unknown synthetic data set 'da_campos'.*da_campus"):
        materialise("da_campos", tmp_path)
