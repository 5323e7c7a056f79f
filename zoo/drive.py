"""Files inside public Google Drive archives (e.g. CVFT's trained models), fetched with gdown.

Drive answers a large file with an HTML page asking to confirm the download (it cannot be
virus-scanned); gdown follows that page to the file. The archive is downloaded once into
``$TORCH_HOME/zoo/drive/<file id>/``, checked against its sha256 when pinned, unpacked safely
(:mod:`zoo.archive`) beside it, and the wanted member is returned. gdown is an optional
dependency (``pip install retrieval-zoo[drive]``); it honours the usual ``HTTPS_PROXY`` and
``REQUESTS_CA_BUNDLE`` variables of ``requests``.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from zoo.archive import find_member, unpack_archive
from zoo.errors import ChecksumError, DownloadError, WeightsNotFoundError, WeightsUnavailableError
from zoo.io import sha256_file, zoo_cache_dir
from zoo.models.cards import DriveFile

ARCHIVE_NAME = "archive"
_TRUE = {"1", "true", "yes", "on"}


def _by_hand(ref: DriveFile) -> str:
    return (f"Or download {ref.url} in a browser, unpack it and pass pretrained='<unpacked folder>/.../{ref.member}' "
            "(a TensorFlow checkpoint is named by its prefix, without .index/.data-*).")


def _offline() -> bool:
    # zoo.hub.is_offline's rule; zoo.hub imports this module, so importing it back would make a cycle.
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in _TRUE


def drive_cache_dir(ref: DriveFile) -> Path:
    return zoo_cache_dir() / "drive" / ref.file_id


def download_drive_archive(ref: DriveFile, quiet: bool = False) -> Path:
    """Download the Drive file ``ref.file_id`` once (atomic; sha256 checked when pinned); its path."""
    folder = drive_cache_dir(ref)
    dest = folder / ARCHIVE_NAME
    if dest.is_file():
        return dest
    if _offline():
        raise WeightsUnavailableError(f"{ref.url} is not in the local cache ({dest}) and HF_HUB_OFFLINE is set. {_by_hand(ref)}")
    try:
        import gdown
        import requests
    except ImportError as err:
        raise WeightsUnavailableError(
            f"{ref.url} is a Google Drive file: downloading it needs gdown (pip install 'retrieval-zoo[drive]' "
            f"or pip install gdown). {_by_hand(ref)}") from err
    folder.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=folder, prefix=f".{ARCHIVE_NAME}.", suffix=".part")
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        try:
            # use_cookies=False: nothing is read from or written to ~/.cache/gdown (the session keeps
            # the cookies Drive sets during the confirmation within this one download).
            gdown.download(id=ref.file_id, output=str(tmp), quiet=quiet, use_cookies=False)
        except requests.HTTPError as err:
            status = err.response.status_code if err.response is not None else None
            if status == 404:
                raise WeightsNotFoundError(f"{ref.url}: not found on Google Drive (HTTP 404)") from err
            raise DownloadError(f"{ref.url}: HTTP {status} from Google Drive") from err
        except requests.RequestException as err:
            raise WeightsUnavailableError(f"{ref.url} cannot be reached ({err}) and it is not cached. {_by_hand(ref)}") from err
        except gdown.exceptions.FileURLRetrievalError as err:
            raise DownloadError(f"{ref.url}: Google Drive did not hand out the file ({err})") from err
        except getattr(gdown.exceptions, "DownloadError", ()) as err:  # gdown >= 6: a transfer broke off
            raise DownloadError(f"{ref.url}: download broke off ({err})") from err
        actual = sha256_file(tmp)
        if ref.sha256 and actual != ref.sha256:
            raise ChecksumError(f"{ref.url}: sha256 {actual} differs from the pinned {ref.sha256}; "
                                "the download was deleted")
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)
    return dest


def download_drive(ref: DriveFile, quiet: bool = False) -> Path:
    """The path of ``ref.member`` inside the unpacked Drive archive (downloaded and unpacked once).

    Raises:
        WeightsUnavailableError: offline or unreachable with nothing cached, or gdown missing.
        WeightsNotFoundError: Drive has no such file.
        ChecksumError: the archive differs from its pin.
        CheckpointError: the archive cannot be unpacked safely, or holds no (or several) ``member``.
    """
    archive = download_drive_archive(ref, quiet=quiet)
    # The archive is written once and never replaced, so its unpacked folder stays valid.
    unpacked = unpack_archive(archive, archive.parent / "unpacked")
    return find_member(unpacked, ref.member)
