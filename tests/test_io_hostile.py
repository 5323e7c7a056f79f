"""Hostile and careless files at the lowest level: the one image reader, output folders, atomic writes."""

from __future__ import annotations

import logging
import os

import numpy as np
import pytest
import torch
from PIL import Image

from zoo.errors import CheckpointError, InputError
from zoo.io import atomic_path, atomic_write_text, check_output_dir, image_size, load_checkpoint, load_image


def _gradient(height: int = 12, width: int = 20) -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (height, width)).astype(np.uint8)


def test_sixteen_bit_png_reads_as_its_eight_bit_twin(tmp_path):
    eight = _gradient()
    Image.fromarray(eight).save(tmp_path / "eight.png")
    # The same picture in 16 bits: v * 257 maps 0..255 onto 0..65535 exactly.
    Image.fromarray(eight.astype(np.uint16) * 257).save(tmp_path / "sixteen.png")
    assert Image.open(tmp_path / "sixteen.png").mode.startswith("I")
    ours = np.asarray(load_image(tmp_path / "sixteen.png"))
    twin = np.asarray(load_image(tmp_path / "eight.png"))
    assert ours.shape == twin.shape == (12, 20, 3)
    assert np.array_equal(ours, twin)
    # Values between two 8-bit levels round to the nearest one.
    Image.fromarray(np.array([[0, 128, 32896, 65535]], dtype=np.uint16)).save(tmp_path / "levels.png")
    assert np.asarray(load_image(tmp_path / "levels.png", mode="L")).tolist() == [[0, 0, 128, 255]]


def test_decompression_bomb_is_an_input_error_naming_the_file(tmp_path, monkeypatch):
    Image.fromarray(_gradient(64, 64)).save(tmp_path / "bomb.png")
    # 4096 pixels against a limit of 1000: more than twice the limit, Pillow's error case.
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    for read in (load_image, image_size):
        with pytest.raises(InputError, match=r"bomb\.png.*decompression bomb"):
            read(tmp_path / "bomb.png")


def test_image_between_the_warning_and_the_error_limit_loads_and_the_log_names_it(tmp_path, monkeypatch, caplog):
    Image.fromarray(_gradient(40, 40)).save(tmp_path / "large.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # 1600 pixels: over the limit, under twice it
    with caplog.at_level(logging.WARNING, logger="zoo.io"):
        assert load_image(tmp_path / "large.png").size == (40, 40)
    assert any("large.png" in r.getMessage() for r in caplog.records)


def test_any_decoder_failure_names_the_file(tmp_path, monkeypatch):
    Image.fromarray(_gradient()).save(tmp_path / "odd.png")

    def broken_decoder(self):
        raise IndexError("list index out of range")  # what some Pillow parsers raise on crafted files

    monkeypatch.setattr(Image.Image, "load", broken_decoder)
    with pytest.raises(InputError, match=r"odd\.png.*IndexError"):
        load_image(tmp_path / "odd.png")


def test_output_folder_that_is_a_file_is_refused(tmp_path):
    (tmp_path / "taken").write_text("x")
    with pytest.raises(InputError, match="--out .*taken: exists and is not a folder"):
        check_output_dir(tmp_path / "taken")
    with pytest.raises(InputError, match="taken is a file"):
        check_output_dir(tmp_path / "taken" / "below")


def test_output_folder_that_cannot_be_written_is_refused(tmp_path):
    # /proc refuses new files even to root, unlike a chmod-ed folder.
    with pytest.raises(InputError, match="--out /proc/zoo-results: cannot write in /proc"):
        check_output_dir("/proc/zoo-results")


def test_output_folder_inside_an_input_is_refused(tmp_path):
    (tmp_path / "db").mkdir()
    with pytest.raises(InputError, match="inside --database"):
        check_output_dir(tmp_path / "db" / "results", {"--database": tmp_path / "db"})
    with pytest.raises(InputError, match="inside --database"):
        check_output_dir(tmp_path / "db", {"--database": tmp_path / "db"})
    assert check_output_dir(tmp_path / "results", {"--database": tmp_path / "db"}) == tmp_path / "results"
    assert not (tmp_path / "results").exists()  # checked, not created


def test_truncated_legacy_checkpoint_says_so(tmp_path):
    path = tmp_path / "legacy.pth"
    torch.save({"w": torch.ones(100)}, path, _use_new_zipfile_serialization=False)
    data = path.read_bytes()
    for cut in (len(data) // 2, len(data) - 10):
        path.write_bytes(data[:cut])
        with pytest.raises(CheckpointError, match="legacy.pth: truncated or not a checkpoint"):
            load_checkpoint(path)


def test_a_failed_write_leaves_no_temporary_file(tmp_path):
    with pytest.raises(RuntimeError, match="disk full"):
        with atomic_path(tmp_path / "results.csv") as tmp:
            tmp.write_text("half")
            raise RuntimeError("disk full")
    assert list(tmp_path.iterdir()) == []


def test_written_files_follow_the_umask(tmp_path):
    old = os.umask(0o027)
    try:
        atomic_write_text(tmp_path / "a.txt", "x")
    finally:
        os.umask(old)
    assert (tmp_path / "a.txt").stat().st_mode & 0o777 == 0o640
