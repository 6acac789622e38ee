"""Verified download of a release or an archive, with resume, retries and safe extraction.

:func:`fetch` streams a URL into ``<target>.part`` and resumes an interrupted transfer with an
HTTP ``Range`` request. It retries connection errors, timeouts and 5xx responses with
exponential backoff, and checks the sha256 before moving the file into place with an atomic
rename. It can extract zip and tar archives, rejecting members that would land outside the
destination.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import stat
import tarfile
import tempfile
import time
import zipfile
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlparse

from tunisian_lung.errors import ChecksumMismatchError, FetchError, UnsafeArchiveError

if TYPE_CHECKING:
    import requests

logger = logging.getLogger(__name__)

_CHUNK_BYTES = 64 * 1024
_PART_SUFFIX = ".part"


class _RetryableError(Exception):
    """A transfer failed in a way that another attempt may fix (5xx, short body)."""


def _file_name_from_url(url: str) -> str:
    name = PurePosixPath(unquote(urlparse(url).path)).name
    if not name:
        raise FetchError(f"cannot derive a file name from {url!r}; pass a file path as dest")
    return name


def _sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(_CHUNK_BYTES), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _check_disk_space(folder: Path, needed_bytes: int, url: str) -> None:
    free = shutil.disk_usage(folder).free
    if needed_bytes > free:
        raise FetchError(
            f"not enough disk space to download {url}: {needed_bytes:,} bytes needed, "
            f"{free:,} bytes free in {folder}; free some space or choose another destination"
        )


def _content_range_start(header: str | None) -> int | None:
    """Return the first byte of a ``Content-Range: bytes START-END/TOTAL`` header."""
    if not header or not header.startswith("bytes "):
        return None
    span = header[len("bytes ") :].split("/", 1)[0]
    start = span.split("-", 1)[0]
    return int(start) if start.isdigit() else None


def _content_range_total(header: str | None) -> int | None:
    if not header or "/" not in header:
        return None
    total = header.rsplit("/", 1)[1]
    return int(total) if total.isdigit() else None


def _download_once(
    session: requests.Session, url: str, part: Path, *, timeout: float, progress: bool
) -> None:
    """Run one request, appending to ``part`` from its current size; raise on failure."""
    offset = part.stat().st_size if part.exists() else 0
    # NOTE: the resumed bytes are not matched to the first ones (no If-Range), so a file that
    # changed on the server between attempts is only caught when a sha256 is given.
    headers = {"Range": f"bytes={offset}-"} if offset else {}
    with session.get(url, stream=True, timeout=timeout, headers=headers) as response:
        status = response.status_code
        if status == 416 and offset:
            total = _content_range_total(response.headers.get("Content-Range"))
            if total == offset:
                return  # the partial file already contains the whole body
            part.unlink()
            raise _RetryableError(f"server rejected resuming at byte {offset} (HTTP 416)")
        if status >= 500:
            raise _RetryableError(f"HTTP {status} {response.reason}")
        if status >= 400:
            raise FetchError(
                f"download of {url} failed with HTTP {status} {response.reason}; check the URL and your access rights"
            )
        mode = "ab"
        if offset and status == 206:
            start = _content_range_start(response.headers.get("Content-Range"))
            if start != offset:
                logger.warning("server resumed %s at byte %s instead of %d; restarting", url, start, offset)
                part.unlink()
                raise _RetryableError("mismatched Content-Range")
        elif offset:
            logger.info("server ignored the Range request for %s; downloading from the start", url)
            offset = 0
            mode = "wb"
        length_header = response.headers.get("Content-Length")
        remaining = int(length_header) if length_header and length_header.isdigit() else None
        if remaining is not None:
            _check_disk_space(part.parent, remaining, url)
        total = offset + remaining if remaining is not None else None
        bar: Any = None
        if progress:
            from tqdm import tqdm

            bar = tqdm(total=total, initial=offset, unit="B", unit_scale=True, desc=part.name[: -len(_PART_SUFFIX)])
        try:
            with part.open(mode) as handle:
                for chunk in response.iter_content(chunk_size=_CHUNK_BYTES):
                    handle.write(chunk)
                    if bar is not None:
                        bar.update(len(chunk))
                handle.flush()
                os.fsync(handle.fileno())
        finally:
            if bar is not None:
                bar.close()
    if total is not None and part.stat().st_size != total:
        raise _RetryableError(f"connection closed after {part.stat().st_size:,} of {total:,} bytes")


def download(
    url: str,
    target: Path,
    *,
    sha256: str | None = None,
    retries: int = 5,
    backoff: float = 0.5,
    timeout: float = 30.0,
    progress: bool = False,
    session: requests.Session | None = None,
) -> Path:
    """Download ``url`` to the file ``target`` (resume, retries, checksum, atomic rename).

    See :func:`fetch` for the parameters. Returns ``target``.
    """
    import requests

    expected = sha256.lower() if sha256 else None
    if expected is not None and (len(expected) != 64 or any(c not in "0123456789abcdef" for c in expected)):
        raise FetchError(f"invalid sha256 {sha256!r}: expected 64 hexadecimal characters")
    if retries < 0:
        raise FetchError(f"retries must be >= 0, got {retries}")
    if target.exists() and expected is not None and _sha256_of(target) == expected:
        logger.info("%s is already present with the expected sha256; not downloading", target)
        return target

    target.parent.mkdir(parents=True, exist_ok=True)
    part = target.with_name(target.name + _PART_SUFFIX)
    owns_session = session is None
    http = session or requests.Session()
    try:
        for attempt in range(retries + 1):
            try:
                _download_once(http, url, part, timeout=timeout, progress=progress)
                break
            except (
                requests.ConnectionError,
                requests.Timeout,
                requests.exceptions.ChunkedEncodingError,
                _RetryableError,
            ) as error:
                if attempt == retries:
                    resume_hint = f"; the partial file {part} is kept, rerun to resume" if part.exists() else ""
                    raise FetchError(
                        f"download of {url} failed after {retries + 1} attempt(s): {error}{resume_hint}"
                    ) from error
                delay = backoff * 2**attempt
                logger.warning(
                    "download of %s failed (attempt %d of %d): %s; retrying in %.1f s",
                    url, attempt + 1, retries + 1, error, delay,
                )
                time.sleep(delay)
    finally:
        if owns_session:
            http.close()

    if expected is not None:
        actual = _sha256_of(part)
        if actual != expected:
            part.unlink()
            raise ChecksumMismatchError(
                f"sha256 of {url} is {actual}, expected {expected}; the download was deleted. "
                "Check the checksum you passed, or the file changed on the server"
            )
    os.replace(part, target)
    logger.info("downloaded %s to %s", url, target)
    return target


# --- safe extraction -------------------------------------------------------------------------


def _check_member_name(name: str, archive: Path) -> PurePosixPath:
    if not name:
        raise UnsafeArchiveError(f"archive {archive} has a member with an empty name")
    windows = PureWindowsPath(name)
    posix = PurePosixPath(name.replace("\\", "/"))
    if posix.is_absolute() or windows.is_absolute() or windows.drive:
        raise UnsafeArchiveError(
            f"archive {archive} member {name!r} has an absolute path; refusing to extract it"
        )
    if ".." in posix.parts:
        raise UnsafeArchiveError(
            f"archive {archive} member {name!r} contains a '..' component; refusing to extract it"
        )
    return posix


def _check_link_target(member: str, link: str, archive: Path, *, hard: bool = False) -> None:
    """Reject a link whose target resolves outside the extraction folder."""
    link_path = PurePosixPath(link.replace("\\", "/"))
    if link_path.is_absolute():
        raise UnsafeArchiveError(
            f"archive {archive} member {member!r} links to the absolute path {link!r}; refusing to extract it"
        )
    base = PurePosixPath() if hard else PurePosixPath(member).parent
    depth = 0
    for part in (base / link_path).parts:
        if part == "..":
            depth -= 1
        elif part != ".":
            depth += 1
        if depth < 0:
            raise UnsafeArchiveError(
                f"archive {archive} member {member!r} links to {link!r}, outside the destination; refusing to extract it"
            )


def _validate_zip(archive: Path, handle: zipfile.ZipFile) -> None:
    for info in handle.infolist():
        _check_member_name(info.filename, archive)
        mode = info.external_attr >> 16
        if stat.S_ISLNK(mode):
            _check_link_target(info.filename, handle.read(info).decode("utf-8", "replace"), archive)
        elif stat.S_IFMT(mode) and not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
            # Zip writers often store permission bits without a file type; only a set type counts.
            raise UnsafeArchiveError(f"archive {archive} member {info.filename!r} is a special file; refusing to extract it")


def _validate_tar(archive: Path, handle: tarfile.TarFile) -> None:
    for member in handle.getmembers():
        _check_member_name(member.name, archive)
        if member.issym():
            _check_link_target(member.name, member.linkname, archive)
        elif member.islnk():
            _check_member_name(member.linkname, archive)
            _check_link_target(member.name, member.linkname, archive, hard=True)
        elif not (member.isfile() or member.isdir()):
            raise UnsafeArchiveError(
                f"archive {archive} member {member.name!r} is a device, FIFO or other special file; refusing to extract it"
            )


def extract_archive(archive: str | Path, dest: str | Path) -> list[Path]:
    """Extract a zip or tar archive into ``dest`` after checking every member.

    Members with absolute paths, ``..`` components, links pointing outside ``dest``, or device
    and FIFO entries raise :class:`UnsafeArchiveError` before anything is written. Extraction
    goes to a temporary folder inside ``dest`` first and each top-level entry is then renamed
    into place, so a failure leaves ``dest`` as it was.

    Returns
    -------
    list of Path
        The top-level paths created in ``dest``.

    Raises
    ------
    UnsafeArchiveError
        An unsafe member (nothing is extracted).
    FetchError
        The file is not a readable archive, or an extracted entry already exists in ``dest``.
    """
    archive = Path(archive)
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    staging = _make_staging_dir(dest, archive.name)
    try:
        if zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as handle:
                _validate_zip(archive, handle)
                for info in handle.infolist():
                    if stat.S_ISLNK(info.external_attr >> 16):
                        target = staging / info.filename
                        target.parent.mkdir(parents=True, exist_ok=True)
                        os.symlink(handle.read(info).decode("utf-8"), target)
                    else:
                        handle.extract(info, staging)
        elif tarfile.is_tarfile(archive):
            with tarfile.open(archive) as handle:
                _validate_tar(archive, handle)
                if hasattr(tarfile, "data_filter"):
                    handle.extractall(staging, filter="data")
                else:  # Python releases before the extraction filters; members were checked above
                    handle.extractall(staging)
        else:
            raise FetchError(f"{archive} is not a zip or tar archive; fetch it without extract")
        created = []
        for entry in sorted(staging.iterdir()):
            final = dest / entry.name
            if final.exists() or final.is_symlink():
                raise FetchError(
                    f"cannot extract {archive}: {final} already exists; remove it or extract into another folder"
                )
            created.append(final)
        for entry, final in zip(sorted(staging.iterdir()), created):
            os.replace(entry, final)
        return created
    except tarfile.TarError as error:
        raise UnsafeArchiveError(f"archive {archive} was rejected while extracting: {error}") from error
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _make_staging_dir(parent: Path, name: str) -> Path:
    """Create a hidden temporary folder inside ``parent`` to extract ``name`` into first."""
    return Path(tempfile.mkdtemp(prefix=f".{name}.", suffix=".extract", dir=parent))


def fetch(
    url: str,
    dest: str | Path,
    *,
    sha256: str | None = None,
    extract: bool = False,
    retries: int = 5,
    backoff: float = 0.5,
    timeout: float = 30.0,
    progress: bool = False,
    session: requests.Session | None = None,
) -> Path:
    """Download ``url`` with resume and retries, verify its sha256, and optionally extract it.

    Parameters
    ----------
    url:
        HTTP or HTTPS URL of the file.
    dest:
        Without ``extract``: the target file path, or a folder in which the file keeps the
        URL's file name. The folder is an existing one, or a string that ends with a path
        separator (``"downloads/"``), which is created. With ``extract``: the folder to extract
        into (created if needed); the archive itself is kept there under the URL's file name.
    sha256:
        Expected hexadecimal SHA-256 of the file. The download is checked before it is renamed
        into place; a mismatch deletes it and raises :class:`ChecksumMismatchError`. A target
        already present with this checksum is not downloaded again.
    extract:
        Extract a zip or tar archive with the checks of :func:`extract_archive`.
    retries:
        Additional attempts after a connection error, timeout, short body or HTTP 5xx. Each
        attempt resumes from the bytes already in ``<target>.part``.
    backoff:
        Seconds before the first retry; the wait doubles at every retry.
    timeout:
        Seconds to wait for the connection and between received chunks.
    progress:
        Show a tqdm bar in bytes.
    session:
        A ``requests.Session`` to reuse (proxies, authentication). One is created otherwise.

    Returns
    -------
    Path
        The downloaded file, or the extraction folder when ``extract`` is true.

    Raises
    ------
    FetchError
        HTTP 4xx, retries exhausted, or not enough disk space for the announced Content-Length.
    ChecksumMismatchError
        The sha256 differs from ``sha256``.
    UnsafeArchiveError
        An archive member would be written outside ``dest``.
    """
    # Path() drops a trailing separator, so a folder named "downloads/" is recognised first.
    names_folder = isinstance(dest, str) and dest.endswith(("/", os.sep))
    dest = Path(dest)
    if extract:
        folder = dest
        target = folder / _file_name_from_url(url)
    elif dest.is_dir() or names_folder:
        target = dest / _file_name_from_url(url)
    else:
        target = dest
    path = download(
        url, target, sha256=sha256, retries=retries, backoff=backoff, timeout=timeout,
        progress=progress, session=session,
    )
    if not extract:
        return path
    extract_archive(path, dest)
    return dest
