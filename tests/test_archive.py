"""Unpacking downloaded archives: members found by path suffix, TF checkpoint prefixes, and archives
whose members would land outside the target folder refused before anything is written."""

from __future__ import annotations

import io
import tarfile
import zipfile
from pathlib import Path

import pytest

from zoo.archive import find_member, unpack_archive
from zoo.errors import CheckpointError


def _zip(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


def test_zip_and_tar_unpack_and_members_are_found_by_suffix(tmp_path: Path) -> None:
    members = {"Model/trained_model/CVUSA/CVFT/model.ckpt.index": b"i",
               "Model/trained_model/CVUSA/CVFT/model.ckpt.data-00000-of-00001": b"d",
               "Model/trained_model/CVACT/CVFT/model.ckpt.index": b"j", "Model/notes.txt": b"n"}
    out = unpack_archive(_zip(tmp_path / "a.zip", members), tmp_path / "zip")
    prefix = find_member(out, "trained_model/CVUSA/CVFT/model.ckpt")
    assert prefix == out / "Model/trained_model/CVUSA/CVFT/model.ckpt"
    assert find_member(out, "notes.txt").read_bytes() == b"n"

    with tarfile.open(tmp_path / "a.tar.gz", "w:gz") as tf:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    out = unpack_archive(tmp_path / "a.tar.gz", tmp_path / "tar")
    assert find_member(out, "CVACT/CVFT/model.ckpt").with_suffix(".ckpt.index").read_bytes() == b"j"
    with pytest.raises(CheckpointError, match="ambiguous.*CVACT.*CVUSA"):
        find_member(out, "CVFT/model.ckpt")
    with pytest.raises(CheckpointError, match="holds no 'CVFT/other.ckpt'.*notes.txt"):
        find_member(out, "CVFT/other.ckpt")


@pytest.mark.parametrize("name", ["../escape.txt", "/abs/escape.txt", "a/../../escape.txt"])
def test_members_outside_the_folder_are_refused(tmp_path: Path, name: str) -> None:
    archive = _zip(tmp_path / "bad.zip", {"ok.txt": b"fine", name: b"evil"})
    with pytest.raises(CheckpointError, match="points outside"):
        unpack_archive(archive, tmp_path / "out" / "x")
    assert not (tmp_path / "out" / "x").exists() and not (tmp_path / "escape.txt").exists()
    assert list((tmp_path / "out").iterdir()) == []  # no temporary folder left behind


def test_links_and_non_archives_are_refused(tmp_path: Path) -> None:
    with tarfile.open(tmp_path / "link.tar", "w") as tf:
        link = tarfile.TarInfo("model.ckpt.index")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tf.addfile(link)
    with pytest.raises(CheckpointError, match="not a regular file"):
        unpack_archive(tmp_path / "link.tar", tmp_path / "out")
    (tmp_path / "page.html").write_text("<html>virus scan warning</html>")
    with pytest.raises(CheckpointError, match="page.html: not a zip or tar archive"):
        unpack_archive(tmp_path / "page.html", tmp_path / "out2")
