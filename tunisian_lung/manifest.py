"""The ``dataset.json`` manifest of a release folder: read, validate, write and checksum.

A release folder may omit ``dataset.json``. :func:`read_manifest` then returns the defaults
(:attr:`Manifest.is_default` is true, coordinate space ``world_lps_mm``). A ``dataset.json``
that is present is validated in full, and every problem is reported in one
:class:`~tunisian_lung.errors.DatasetLayoutError`. The format is documented in
``docs/dataset-layout.md``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from types import MappingProxyType
from typing import Any, Mapping

from tunisian_lung.errors import DatasetLayoutError
from tunisian_lung.layout import (
    COORDINATE_SPACES,
    DEFAULT_COORDINATE_SPACE,
    FORMAT_VERSION,
    MANIFEST_NAME,
    SUPPORTED_FORMAT_VERSIONS,
)

logger = logging.getLogger(__name__)

_SHA256_PATTERN = re.compile(r"^[0-9a-f]{64}$")
_READ_CHUNK_BYTES = 1024 * 1024

_REQUIRED_KEYS = ("format_version", "name", "version", "license")
_OPTIONAL_KEYS = (
    "citation",
    "coordinate_space",
    "counts",
    "files",
    "deidentification",
    "source",
)


@dataclass(frozen=True)
class FileEntry:
    """Checksum record of one file of a release.

    Attributes
    ----------
    sha256:
        Lower-case hexadecimal SHA-256 digest of the file content (64 characters).
    size:
        File size in bytes.
    """

    sha256: str
    size: int

    def __post_init__(self) -> None:
        if not isinstance(self.sha256, str) or not _SHA256_PATTERN.match(self.sha256):
            raise DatasetLayoutError(
                f"invalid sha256 {self.sha256!r}: expected 64 lower-case hexadecimal characters"
            )
        if isinstance(self.size, bool) or not isinstance(self.size, int) or self.size < 0:
            raise DatasetLayoutError(
                f"invalid file size {self.size!r}: expected a non-negative integer number of bytes"
            )

    def to_dict(self) -> dict[str, Any]:
        """Return the JSON form ``{"sha256": ..., "size": ...}``."""
        return {"sha256": self.sha256, "size": self.size}


@dataclass(frozen=True)
class VerifyResult:
    """Differences between the files of a release folder and its manifest.

    Attributes
    ----------
    missing:
        Relative POSIX paths listed in the manifest but absent from the folder.
    changed:
        Listed paths whose size or SHA-256 differs from the manifest.
    extra:
        Files in the folder (other than ``dataset.json``) that the manifest does not list.
    """

    missing: tuple[str, ...]
    changed: tuple[str, ...]
    extra: tuple[str, ...]

    @property
    def ok(self) -> bool:
        """True when no file is missing, changed or extra."""
        return not (self.missing or self.changed or self.extra)


@dataclass(frozen=True)
class Manifest:
    """Content of ``dataset.json``.

    Attributes
    ----------
    name, version, license:
        Dataset name, release version and licence (an SPDX identifier such as ``CC-BY-4.0``
        where one exists). ``None`` only in the defaults used when ``dataset.json`` is absent.
    citation:
        How to cite the dataset, or ``None``.
    coordinate_space:
        Frame of the ``coordX/coordY/coordZ`` annotation columns: ``"world_lps_mm"`` (DICOM
        patient coordinates, LPS, millimetres; the default) or ``"voxel"`` (column, row,
        slice indices).
    counts:
        Named counts of the release, such as ``{"patients": 123, "series": 130}``.
    files:
        Relative POSIX path (from the release root) -> :class:`FileEntry`.
    deidentification, source:
        Optional free-form records of the de-identification profile and of the data's origin.
    format_version:
        Version of the ``dataset.json`` format, one of ``layout.SUPPORTED_FORMAT_VERSIONS``.
    is_default:
        True when the folder has no ``dataset.json`` and these are the defaults.

    The mappings are stored as read-only views, so a manifest cannot change after
    construction. Use :func:`dataclasses.replace` to derive a modified copy.
    """

    name: str | None = None
    version: str | None = None
    license: str | None = None
    citation: str | None = None
    coordinate_space: str = DEFAULT_COORDINATE_SPACE
    counts: Mapping[str, int] = field(default_factory=dict)
    files: Mapping[str, FileEntry] = field(default_factory=dict)
    deidentification: Mapping[str, Any] | None = None
    source: Mapping[str, Any] | None = None
    format_version: str = FORMAT_VERSION
    is_default: bool = field(default=False, compare=False)

    def __post_init__(self) -> None:
        problems = _check_manifest_fields(self)
        if problems:
            raise DatasetLayoutError(_format_problems("invalid manifest", problems))
        object.__setattr__(self, "counts", MappingProxyType(dict(self.counts)))
        object.__setattr__(self, "files", MappingProxyType(dict(sorted(self.files.items()))))
        if self.deidentification is not None:
            object.__setattr__(
                self, "deidentification", MappingProxyType(dict(self.deidentification))
            )
        if self.source is not None:
            object.__setattr__(self, "source", MappingProxyType(dict(self.source)))

    # A frozen dataclass with mapping fields cannot be hashed by value.
    __hash__ = None  # type: ignore[assignment]

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, origin: str = MANIFEST_NAME) -> Manifest:
        """Build a manifest from parsed ``dataset.json`` content.

        Parameters
        ----------
        data:
            The parsed JSON object.
        origin:
            Name of the file the data came from, used in error messages.

        Raises
        ------
        DatasetLayoutError
            Listing every missing key, unknown key and invalid value at once, or naming the
            unsupported ``format_version``.
        """
        if not isinstance(data, Mapping):
            raise DatasetLayoutError(
                f"{origin}: expected a JSON object at the top level, found {type(data).__name__}; "
                "rewrite the file as {\"format_version\": \"1.0\", \"name\": ..., ...}"
            )
        version = data.get("format_version")
        if version is not None and version not in SUPPORTED_FORMAT_VERSIONS:
            raise DatasetLayoutError(
                f"{origin}: unsupported format_version {version!r}; this version of tunisian_lung "
                f"reads {', '.join(SUPPORTED_FORMAT_VERSIONS)}. Upgrade tunisian_lung or rewrite "
                "the manifest in a supported format"
            )

        problems: list[str] = []
        for key in _REQUIRED_KEYS:
            if key not in data:
                problems.append(f"missing required key {key!r}")
        known = set(_REQUIRED_KEYS) | set(_OPTIONAL_KEYS)
        for key in data:
            if key not in known:
                problems.append(
                    f"unknown key {key!r}; the keys of format 1.0 are {sorted(known)}. "
                    "Put extra information under 'source'"
                )

        files, file_problems = _parse_files(data.get("files", {}))
        problems.extend(file_problems)
        if problems:
            raise DatasetLayoutError(_format_problems(f"invalid {origin}", problems))

        try:
            return cls(
                name=data["name"],
                version=data["version"],
                license=data["license"],
                citation=data.get("citation"),
                coordinate_space=data.get("coordinate_space", DEFAULT_COORDINATE_SPACE),
                counts=data.get("counts", {}),
                files=files,
                deidentification=data.get("deidentification"),
                source=data.get("source"),
                format_version=data["format_version"],
            )
        except DatasetLayoutError as error:
            raise DatasetLayoutError(f"{origin}: {error}") from None

    def to_dict(self) -> dict[str, Any]:
        """Return the JSON form written to ``dataset.json`` (files sorted by path)."""
        data: dict[str, Any] = {
            "format_version": self.format_version,
            "name": self.name,
            "version": self.version,
            "license": self.license,
            "citation": self.citation,
            "coordinate_space": self.coordinate_space,
            "counts": dict(self.counts),
            "files": {path: entry.to_dict() for path, entry in sorted(self.files.items())},
        }
        if self.deidentification is not None:
            data["deidentification"] = _plain(self.deidentification)
        if self.source is not None:
            data["source"] = _plain(self.source)
        return data


def _plain(value: Any) -> Any:
    """Convert read-only mapping views back to dicts for JSON output."""
    if isinstance(value, Mapping):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    return value


def _format_problems(head: str, problems: list[str]) -> str:
    return head + ":\n" + "\n".join(f"  - {problem}" for problem in problems)


def _check_manifest_fields(manifest: Manifest) -> list[str]:
    problems: list[str] = []
    if manifest.format_version not in SUPPORTED_FORMAT_VERSIONS:
        problems.append(
            f"unsupported format_version {manifest.format_version!r}; supported: "
            f"{', '.join(SUPPORTED_FORMAT_VERSIONS)}"
        )
    for key in ("name", "version", "license"):
        value = getattr(manifest, key)
        if manifest.is_default and value is None:
            continue
        if not isinstance(value, str) or not value.strip():
            problems.append(f"{key!r} must be a non-empty string, got {value!r}")
    if manifest.citation is not None and not isinstance(manifest.citation, str):
        problems.append(f"'citation' must be a string or null, got {manifest.citation!r}")
    if manifest.coordinate_space not in COORDINATE_SPACES:
        problems.append(
            f"invalid coordinate_space {manifest.coordinate_space!r}; use one of "
            f"{', '.join(COORDINATE_SPACES)}"
        )
    if not isinstance(manifest.counts, Mapping):
        problems.append(f"'counts' must be an object of name -> integer, got {manifest.counts!r}")
    else:
        for name, count in manifest.counts.items():
            if not isinstance(name, str) or isinstance(count, bool) or not isinstance(count, int) or count < 0:
                problems.append(
                    f"counts[{name!r}] must be a non-negative integer, got {count!r}"
                )
    if not isinstance(manifest.files, Mapping):
        problems.append(f"'files' must be an object of path -> entry, got {manifest.files!r}")
    elif not isinstance(manifest.files, _CheckedFiles):
        for path, entry in manifest.files.items():
            path_problem = _check_relative_path(path)
            if path_problem:
                problems.append(path_problem)
            if not isinstance(entry, FileEntry):
                problems.append(f"files[{path!r}] must be a FileEntry, got {type(entry).__name__}")
    for key in ("deidentification", "source"):
        value = getattr(manifest, key)
        if value is not None and not isinstance(value, Mapping):
            problems.append(f"{key!r} must be an object or absent, got {type(value).__name__}")
    return problems


def _check_relative_path(path: Any) -> str | None:
    """Return a problem description when ``path`` is not a safe relative POSIX path."""
    if not isinstance(path, str) or not path:
        return f"file path {path!r} must be a non-empty string"
    if "\\" in path:
        return f"file path {path!r} must use '/' separators, not '\\'"
    # Fast path for the usual valid entry, because a release lists every DICOM file (120,000
    # for 1,000 series of 120 slices) and building a PurePosixPath per entry dominated
    # open_dataset. A path without empty, "." or ".." components is already relative and
    # normalised. Every other path takes the full check below.
    if path != MANIFEST_NAME:
        parts = path.split("/")
        if "" not in parts and "." not in parts and ".." not in parts:
            return None
    posix = PurePosixPath(path)
    if posix.is_absolute() or ".." in posix.parts or path != posix.as_posix():
        return (
            f"file path {path!r} must be relative to the release root, normalised, "
            "and must not contain '..'"
        )
    if path == MANIFEST_NAME:
        return f"file path {path!r}: the manifest does not list itself"
    return None


class _CheckedFiles(dict[str, FileEntry]):
    """Files table built by :func:`_parse_files`, whose every path and entry was already checked.

    ``Manifest.__post_init__`` skips the per-file checks for this type only, so that opening a
    release that lists 120,000 files checks each path once. Any other mapping is checked in full.
    """


def _parse_files(raw: Any) -> tuple[_CheckedFiles, list[str]]:
    if not isinstance(raw, Mapping):
        return _CheckedFiles(), [f"'files' must be an object of path -> {{sha256, size}}, got {type(raw).__name__}"]
    files = _CheckedFiles()
    problems: list[str] = []
    for path, entry in raw.items():
        path_problem = _check_relative_path(path)
        if path_problem:
            problems.append(path_problem)
            continue
        # type() before isinstance(): the Mapping ABC check is slow and JSON gives plain dicts.
        is_mapping = type(entry) is dict or isinstance(entry, Mapping)
        if not is_mapping or len(entry) != 2 or "sha256" not in entry or "size" not in entry:
            problems.append(
                f"files[{path!r}] must be an object with exactly the keys 'sha256' and 'size', "
                f"got {entry!r}"
            )
            continue
        try:
            files[path] = FileEntry(sha256=entry["sha256"], size=entry["size"])
        except DatasetLayoutError as error:
            problems.append(f"files[{path!r}]: {error}")
    return files, problems


def read_manifest(root: str | Path) -> Manifest:
    """Read and validate ``<root>/dataset.json``, or return the defaults when it is absent.

    Parameters
    ----------
    root:
        Release folder.

    Returns
    -------
    Manifest
        The validated manifest, or ``Manifest(is_default=True)`` (coordinate space
        ``world_lps_mm``, no file checksums) when the folder has no ``dataset.json``.

    Raises
    ------
    DatasetLayoutError
        If ``root`` is not a folder, or ``dataset.json`` is not valid JSON or breaks the format.
    """
    root = Path(root)
    if not root.is_dir():
        raise DatasetLayoutError(f"dataset folder not found: {root}")
    path = root / MANIFEST_NAME
    if not path.exists():
        logger.debug("%s has no %s; using the default manifest", root, MANIFEST_NAME)
        return Manifest(is_default=True)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise DatasetLayoutError(f"{path}: not valid UTF-8 ({error}); save it as UTF-8 JSON") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        raise DatasetLayoutError(
            f"{path}: invalid JSON at line {error.lineno}, column {error.colno}: {error.msg}; "
            "fix the syntax or delete the file to use the defaults"
        ) from None
    return Manifest.from_dict(data, origin=str(path))


def write_manifest(root: str | Path, manifest: Manifest) -> Path:
    """Write ``manifest`` to ``<root>/dataset.json`` atomically and return the path.

    The JSON is written to a temporary file in ``root``, flushed to disk and moved over the
    old file with :func:`os.replace`, so a reader sees either the old or the new manifest.
    """
    root = Path(root)
    if not root.is_dir():
        raise DatasetLayoutError(f"dataset folder not found: {root}")
    target = root / MANIFEST_NAME
    text = json.dumps(manifest.to_dict(), indent=2, ensure_ascii=False) + "\n"
    handle, temp_name = tempfile.mkstemp(prefix=f".{MANIFEST_NAME}.", suffix=".tmp", dir=root)
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as stream:
            stream.write(text)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temp_name, target)
    except BaseException:
        Path(temp_name).unlink(missing_ok=True)
        raise
    logger.info("wrote %s (%d files listed)", target, len(manifest.files))
    return target


def _sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        while chunk := stream.read(_READ_CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def _release_files(root: Path) -> list[str]:
    """Return the relative POSIX paths of every regular file under ``root`` except the manifest.

    Symbolic links to files are listed and hashed by their target's content. Temporary files
    left by :func:`write_manifest` (``.dataset.json.*.tmp``) are skipped.
    """
    paths: list[str] = []
    for directory, subdirectories, filenames in os.walk(root):
        subdirectories.sort()
        for filename in filenames:
            full = Path(directory) / filename
            relative = full.relative_to(root).as_posix()
            if relative == MANIFEST_NAME:
                continue
            if relative.startswith(f".{MANIFEST_NAME}.") and relative.endswith(".tmp"):
                continue
            if full.is_file():
                paths.append(relative)
    return sorted(paths)


def compute_file_entries(root: str | Path, *, progress: bool = False) -> dict[str, FileEntry]:
    """Compute the SHA-256 and size of every file of a release folder except ``dataset.json``.

    Files are read in 1 MiB chunks, so memory use does not grow with file size.

    Parameters
    ----------
    root:
        Release folder.
    progress:
        Show a tqdm progress bar over the bytes read (on stderr).

    Returns
    -------
    dict[str, FileEntry]
        Relative POSIX path -> entry, sorted by path.
    """
    root = Path(root)
    if not root.is_dir():
        raise DatasetLayoutError(f"dataset folder not found: {root}")
    relative_paths = _release_files(root)
    entries: dict[str, FileEntry] = {}
    bar = None
    if progress:
        from tqdm import tqdm

        total = sum((root / relative).stat().st_size for relative in relative_paths)
        bar = tqdm(total=total, unit="B", unit_scale=True, desc="sha256")
    try:
        for relative in relative_paths:
            path = root / relative
            size = path.stat().st_size
            entries[relative] = FileEntry(sha256=_sha256_of(path), size=size)
            if bar is not None:
                bar.update(size)
    finally:
        if bar is not None:
            bar.close()
    logger.info("computed sha256 of %d files under %s", len(entries), root)
    return entries


def verify_files(root: str | Path, manifest: Manifest) -> VerifyResult:
    """Compare the files of a release folder with the checksums of its manifest.

    A file whose size differs is reported as changed without reading it. Other listed files are
    hashed in full.
    """
    root = Path(root)
    if not root.is_dir():
        raise DatasetLayoutError(f"dataset folder not found: {root}")
    on_disk = set(_release_files(root))
    missing: list[str] = []
    changed: list[str] = []
    for relative, entry in sorted(manifest.files.items()):
        if relative not in on_disk:
            missing.append(relative)
            continue
        path = root / relative
        if path.stat().st_size != entry.size or _sha256_of(path) != entry.sha256:
            changed.append(relative)
    extra = sorted(on_disk - set(manifest.files))
    result = VerifyResult(missing=tuple(missing), changed=tuple(changed), extra=tuple(extra))
    if not result.ok:
        logger.warning(
            "%s differs from its manifest: %d missing, %d changed, %d extra files",
            root,
            len(result.missing),
            len(result.changed),
            len(result.extra),
        )
    return result
