"""Persisted DICOM header index, so that re-opening a large export reads no DICOM file.

One JSON file per indexed folder lives in the user cache directory (``$TUNISIAN_LUNG_CACHE``
overrides it), never in the DICOM folder. It stores the path, size and modification time of
every file under the folder and the resulting series records. The entry is used only when the
folder's listing still matches exactly; any added, removed or modified file re-indexes it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

CACHE_ENV = "TUNISIAN_LUNG_CACHE"
_SUBDIRECTORY = "dicom-index-v1"
_FORMAT = "tunisian_lung.dicom-index/1"

Fingerprint = dict[str, list[int]]


def index_cache_dir() -> Path:
    """Return the folder of the header index entries (``$TUNISIAN_LUNG_CACHE/dicom-index-v1`` when set)."""
    override = os.environ.get(CACHE_ENV)
    if override:
        return Path(override).expanduser() / _SUBDIRECTORY
    import platformdirs

    return Path(platformdirs.user_cache_dir("tunisian_lung")) / _SUBDIRECTORY


def folder_fingerprint(folder: Path) -> Fingerprint:
    """Map every file under ``folder`` (relative POSIX path) to ``[size in bytes, mtime in ns]``."""
    fingerprint: Fingerprint = {}
    stack = [folder]
    while stack:
        directory = stack.pop()
        with os.scandir(directory) as entries:
            for entry in entries:
                if entry.is_dir(follow_symlinks=False):
                    stack.append(Path(entry.path))
                elif entry.is_file():
                    stat = entry.stat()
                    relative = Path(entry.path).relative_to(folder).as_posix()
                    fingerprint[relative] = [stat.st_size, stat.st_mtime_ns]
    return fingerprint


def _entry_path(folder: Path, use_dicomdir: bool, cache_dir: Path) -> Path:
    key = hashlib.sha256(f"{folder.resolve()}|dicomdir={use_dicomdir}".encode()).hexdigest()[:32]
    return cache_dir / f"{key}.json"


def load_entry(folder: Path, use_dicomdir: bool, fingerprint: Fingerprint, cache_dir: Path) -> list[dict[str, Any]] | None:
    """Return the cached series records of ``folder`` if its fingerprint is unchanged, else ``None``."""
    path = _entry_path(folder, use_dicomdir, cache_dir)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as error:
        logger.warning("%s: unreadable DICOM index cache entry (%s); indexing the folder again", path, error)
        return None
    if data.get("format") != _FORMAT or data.get("folder") != str(folder.resolve()):
        return None
    if data.get("files") != fingerprint:
        logger.info("%s changed since it was indexed; indexing it again", folder)
        return None
    series: list[dict[str, Any]] = data["series"]
    return series


def store_entry(folder: Path, use_dicomdir: bool, fingerprint: Fingerprint, series: list[dict[str, Any]], cache_dir: Path) -> None:
    """Write the index entry of ``folder`` atomically (temporary file, then rename)."""
    path = _entry_path(folder, use_dicomdir, cache_dir)
    payload = {"format": _FORMAT, "folder": str(folder.resolve()), "files": fingerprint, "series": series}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(handle, "w") as stream:
                json.dump(payload, stream)
            os.replace(temporary, path)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise
    except OSError as error:
        logger.warning("cannot write the DICOM index cache entry %s (%s); the index is not cached", path, error)
