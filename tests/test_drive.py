"""Google Drive archives through gdown, against a loopback Drive (tests/drive_server.py): the
confirmation page of a large file is followed, the archive is cached, pinned and unpacked safely."""

from __future__ import annotations

import hashlib
import io
import zipfile

import pytest

from zoo.drive import download_drive
from zoo.errors import ChecksumError, DownloadError, WeightsUnavailableError
from zoo.models.cards import DriveFile


def _archive(size: int = 4096) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        zf.writestr("Model/trained_model/CVUSA/CVFT/model.ckpt.index", b"index")
        zf.writestr("Model/trained_model/CVUSA/CVFT/model.ckpt.data-00000-of-00001", bytes(size))
    return buffer.getvalue()


def test_large_file_follows_the_confirmation_page_then_comes_from_the_cache(drive_server, monkeypatch) -> None:
    blob = _archive()
    drive_server.add_file("FILEID_large_0123456789abc", "trained_model.zip", blob)
    assert len(blob) > drive_server.confirm_above
    ref = DriveFile("FILEID_large_0123456789abc", "trained_model/CVUSA/CVFT/model.ckpt", hashlib.sha256(blob).hexdigest())
    prefix = download_drive(ref, quiet=True)
    assert prefix.name == "model.ckpt" and prefix.with_name("model.ckpt.index").read_bytes() == b"index"
    hosts = [host for host, _ in drive_server.requests]
    assert hosts == ["drive.google.com", "drive.usercontent.google.com"], drive_server.requests
    assert "confirm=t" in drive_server.requests[1][1]

    drive_server.requests.clear()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert download_drive(ref, quiet=True) == prefix
    assert drive_server.requests == []


def test_small_file_is_served_at_once_and_a_wrong_pin_is_refused(drive_server, isolated_caches) -> None:
    blob = _archive(size=10)
    drive_server.confirm_above = 10 ** 6
    drive_server.add_file("FILEID_small_0123456789abc", "m.zip", blob)
    with pytest.raises(ChecksumError, match="FILEID_small.*differs from the pinned"):
        download_drive(DriveFile("FILEID_small_0123456789abc", "CVFT/model.ckpt", "0" * 64), quiet=True)
    assert [p for p in (isolated_caches / "torch").rglob("*") if p.is_file()] == []
    assert len(drive_server.requests) == 1
    assert download_drive(DriveFile("FILEID_small_0123456789abc", "CVFT/model.ckpt"), quiet=True).name == "model.ckpt"


def test_missing_file_and_offline_are_clear(drive_server, monkeypatch) -> None:
    with pytest.raises(DownloadError, match="drive.google.com/file/d/NO_SUCH_FILE_0123456789"):
        download_drive(DriveFile("NO_SUCH_FILE_0123456789", "x/model.ckpt"), quiet=True)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(WeightsUnavailableError, match="HF_HUB_OFFLINE.*unpack it and pass pretrained="):
        download_drive(DriveFile("OTHER_FILE_0123456789", "x/model.ckpt"), quiet=True)
