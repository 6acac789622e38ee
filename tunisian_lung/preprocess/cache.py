"""On-disk cache of preprocessed volumes, safe for parallel workers.

Layout (``<dir>`` is the cache directory)::

    <dir>/entries-v1/<key[:2]>/<key>.npy    the float32 array, read with np.load(mmap_mode="r")
    <dir>/entries-v1/<key[:2]>/<key>.json   sidecar: geometry, config, source identity, checksums
    <dir>/entries-v1/<key[:2]>/<key>.lock   per-entry lock file (POSIX advisory lock)

``key`` is the sha256 of the canonical JSON of the key parts (source series identity, the
config's cache key) plus ``tunisian_lung.__version__``, so a change in any of them misses.

Writes go to a temporary file in the entry's folder and are moved into place with
``os.replace``: the array first, the sidecar last, so a sidecar always describes a complete
array. Writers hold the entry's lock while computing, so two processes asking for the same
missing entry compute it once and the second one reads the first one's result. Every read
checks the file size, shape, dtype and the CRC-32 of the array bytes against the sidecar. A
truncated or corrupted entry is logged, deleted and rebuilt.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import sys
import tempfile
import time
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Literal, Mapping

import numpy as np

from tunisian_lung.errors import CacheError
from tunisian_lung.io.volume import Volume

logger = logging.getLogger(__name__)

#: Environment variable that overrides the default cache directory.
CACHE_ENV = "TUNISIAN_LUNG_CACHE"
ENTRIES_DIR = "entries-v1"
SIDECAR_FORMAT = "tunisian_lung.preprocess-cache-entry/1"

Verify = Literal["crc32", "sha256", "size"]


def default_cache_dir() -> Path:
    """Return ``$TUNISIAN_LUNG_CACHE`` if set, else the platform's user cache dir for tunisian_lung."""
    override = os.environ.get(CACHE_ENV)
    if override:
        return Path(override).expanduser()
    import platformdirs

    return Path(platformdirs.user_cache_dir("tunisian_lung")) / "preprocess"


def make_cache_key(key_parts: Mapping[str, Any]) -> str:
    """Return the sha256 hex key of ``key_parts`` plus the library version.

    ``key_parts`` must be JSON-serialisable; dict key order does not matter.
    """
    from tunisian_lung import __version__

    payload = {"key_parts": key_parts, "library_version": __version__}
    try:
        canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError) as error:
        raise CacheError(f"cache key parts must be JSON-serialisable, got {key_parts!r}: {error}") from error
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class CacheInfo:
    """Size of a cache directory: complete entries and bytes on disk (arrays plus sidecars)."""

    path: Path
    entries: int
    bytes: int


class _CorruptEntry(Exception):
    """Internal: an entry's files do not match its sidecar."""


def _json_safe(metadata: Mapping[str, Any]) -> dict[str, Any]:
    safe: dict[str, Any] = {}
    for key, value in metadata.items():
        try:
            json.dumps(value, allow_nan=False)
        except (TypeError, ValueError):
            continue
        safe[str(key)] = value
    return safe


def _array_bytes(array: np.ndarray) -> memoryview:
    """Return a flat byte view of a C-contiguous array, without copying."""
    return np.ascontiguousarray(array).reshape(-1).view(np.uint8).data


def _atomic_write(path: Path, write: Callable[[Any], None]) -> None:
    descriptor, temp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(descriptor, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp_name, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp_name)
        raise


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``path`` (created if missing). The OS releases it if the process dies."""
    try:
        handle = open(path, "a+b")
    except OSError as error:
        raise CacheError(f"cannot open the cache lock file {path}: {error}; pass a writable cache directory") from error
    with handle:
        if sys.platform == "win32":  # pragma: no cover - exercised on Windows only
            # NOTE: this branch has not been run; the tests run on Linux only.
            import msvcrt

            handle.seek(0)
            while True:
                try:
                    msvcrt.locking(handle.fileno(), msvcrt.LK_LOCK, 1)
                    break
                except OSError:
                    time.sleep(0.05)
            try:
                yield
            finally:
                handle.seek(0)
                msvcrt.locking(handle.fileno(), msvcrt.LK_UNLCK, 1)
        else:
            import fcntl

            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


class PreprocessCache:
    """A directory of preprocessed volumes keyed by source identity, config and library version.

    Parameters
    ----------
    directory:
        Cache directory. Defaults to ``$TUNISIAN_LUNG_CACHE``, else the user cache directory
        from ``platformdirs`` (``~/.cache/tunisian_lung/preprocess`` on Linux). Created on
        first write.
    verify:
        Check made on every read: ``"crc32"`` (default, about 0.2 ms for a 64^3 float32
        entry) compares the CRC-32 of the array bytes, ``"sha256"`` the sha256 (slower), and
        ``"size"`` only the file size, shape and dtype (catches truncation, not bit flips).
    """

    def __init__(self, directory: str | os.PathLike[str] | None = None, *, verify: Verify = "crc32") -> None:
        if verify not in ("crc32", "sha256", "size"):
            raise CacheError(f"verify must be 'crc32', 'sha256' or 'size', got {verify!r}")
        self.directory = Path(directory).expanduser() if directory is not None else default_cache_dir()
        self.verify: Verify = verify

    def __repr__(self) -> str:
        return f"PreprocessCache({str(self.directory)!r})"

    # --- paths ---------------------------------------------------------------------------

    @property
    def entries_dir(self) -> Path:
        """Folder holding the entry files (inside :attr:`directory`)."""
        return self.directory / ENTRIES_DIR

    def _paths(self, key: str) -> tuple[Path, Path, Path]:
        if len(key) != 64 or any(c not in "0123456789abcdef" for c in key):
            raise CacheError(f"cache key must be a 64-character sha256 hex digest, got {key!r}")
        folder = self.entries_dir / key[:2]
        return folder / f"{key}.npy", folder / f"{key}.json", folder / f"{key}.lock"

    def check_outside(self, folder: str | os.PathLike[str]) -> None:
        """Raise :class:`CacheError` if the cache directory is ``folder`` or inside it.

        Source dataset folders are read-only for the library, so a cache there is rejected.
        """
        cache = self.directory.resolve()
        source = Path(folder).resolve()
        if cache == source or source in cache.parents:
            raise CacheError(
                f"cache directory {cache} is inside the dataset folder {source}; dataset folders are never "
                f"written to, so pass another cache directory (argument or ${CACHE_ENV})"
            )

    # --- reading -------------------------------------------------------------------------

    def _read(self, key: str) -> Volume | None:
        array_path, sidecar_path, _ = self._paths(key)
        try:
            sidecar_text = sidecar_path.read_text(encoding="utf-8")
        except (FileNotFoundError, NotADirectoryError):
            return None
        try:
            sidecar = json.loads(sidecar_text)
            if sidecar.get("format") != SIDECAR_FORMAT or sidecar.get("key") != key:
                raise _CorruptEntry(f"sidecar format {sidecar.get('format')!r} or key does not match")
            size = array_path.stat().st_size
            if size != sidecar["npy_bytes"]:
                raise _CorruptEntry(f"array file has {size} bytes, sidecar expects {sidecar['npy_bytes']}")
            array = np.load(array_path, mmap_mode="r", allow_pickle=False)
            if list(array.shape) != sidecar["shape"] or str(array.dtype) != sidecar["dtype"]:
                raise _CorruptEntry(f"array is {array.shape} {array.dtype}, sidecar expects {sidecar['shape']} {sidecar['dtype']}")
            if self.verify == "crc32":
                if zlib.crc32(_array_bytes(array)) != sidecar["crc32"]:
                    raise _CorruptEntry("CRC-32 of the array bytes does not match the sidecar")
            elif self.verify == "sha256":
                if hashlib.sha256(_array_bytes(array)).hexdigest() != sidecar["sha256"]:
                    raise _CorruptEntry("sha256 of the array bytes does not match the sidecar")
            return Volume(
                array,
                spacing=sidecar["spacing_xyz_mm"],
                origin=sidecar["origin_xyz_mm"],
                direction=sidecar["direction"],
                metadata={**sidecar["metadata"], "cache_key": key},
            )
        except FileNotFoundError as error:
            raise _CorruptEntry(f"array file is missing ({error.filename})") from error
        except (ValueError, KeyError, TypeError, OSError) as error:
            # ValueError covers invalid JSON and a truncated or invalid .npy header.
            raise _CorruptEntry(f"{type(error).__name__}: {error}") from error

    def get(self, key: str) -> Volume | None:
        """Return the cached volume for ``key`` (memory-mapped, read-only) or ``None`` on a miss.

        A corrupted or truncated entry is logged, deleted and reported as a miss.
        """
        try:
            return self._read(key)
        except _CorruptEntry as first_error:
            _, _, lock_path = self._paths(key)
            with _locked(lock_path):
                # Another process may have been replacing the entry while we read it.
                try:
                    return self._read(key)
                except _CorruptEntry:
                    logger.warning("cache entry %s in %s is corrupted (%s); deleting it so it is rebuilt", key, self.entries_dir, first_error)
                    self._delete(key)
                    return None

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and self.get(key) is not None

    # --- writing -------------------------------------------------------------------------

    def _delete(self, key: str) -> None:
        array_path, sidecar_path, _ = self._paths(key)
        # Sidecar first, so a reader never sees a sidecar without its array.
        for path in (sidecar_path, array_path):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()

    def _write(self, key: str, volume: Volume, key_parts: Mapping[str, Any]) -> Volume:
        array_path, sidecar_path, _ = self._paths(key)
        array = np.ascontiguousarray(volume.array)
        if array.dtype.hasobject:
            raise CacheError(f"cannot cache an object array (dtype {array.dtype})")
        try:
            return self._write_files(key, array, volume, key_parts)
        except OSError as error:
            raise CacheError(
                f"writing cache entry {key} to {array_path.parent} failed: {error}; free disk space or pass another cache directory"
            ) from error

    def _write_files(self, key: str, array: np.ndarray, volume: Volume, key_parts: Mapping[str, Any]) -> Volume:
        array_path, sidecar_path, _ = self._paths(key)
        _atomic_write(array_path, lambda handle: np.save(handle, array, allow_pickle=False))
        from tunisian_lung import __version__

        payload = _array_bytes(array)
        sidecar = {
            "format": SIDECAR_FORMAT,
            "key": key,
            "key_parts": key_parts,
            "library_version": __version__,
            "created_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "shape": list(array.shape),
            "dtype": str(array.dtype),
            "npy_bytes": array_path.stat().st_size,
            "crc32": zlib.crc32(payload),
            "sha256": hashlib.sha256(payload).hexdigest(),
            "spacing_xyz_mm": list(volume.spacing),
            "origin_xyz_mm": list(volume.origin),
            "direction": volume.direction.tolist(),
            "metadata": _json_safe(volume.metadata),
        }
        text = json.dumps(sidecar, indent=1, allow_nan=False).encode("utf-8")
        _atomic_write(sidecar_path, lambda handle: handle.write(text))
        cached = self._read(key)
        if cached is None:  # pragma: no cover - only if another process cleared the cache meanwhile
            raise CacheError(f"cache entry {key} disappeared right after it was written in {self.entries_dir}")
        return cached

    def put(self, key_parts: Mapping[str, Any], volume: Volume) -> Volume:
        """Store ``volume`` under ``key_parts`` (replacing an entry) and return the cached copy."""
        key = make_cache_key(key_parts)
        array_path, _, lock_path = self._paths(key)
        array_path.parent.mkdir(parents=True, exist_ok=True)
        with _locked(lock_path):
            self._delete(key)
            return self._write(key, volume, key_parts)

    def get_or_create(self, key_parts: Mapping[str, Any], compute: Callable[[], Volume]) -> Volume:
        """Return the cached volume for ``key_parts``, computing and storing it on a miss.

        Parameters
        ----------
        key_parts:
            JSON-serialisable identity of the entry (source identity and config key); the
            library version is added by :func:`make_cache_key`.
        compute:
            Zero-argument function that returns the volume. It runs at most once, only on a
            miss, while this entry's lock is held, so concurrent callers wait for its result
            instead of computing it again.

        Returns
        -------
        Volume
            Read back from the cache (memory-mapped and read-only), also right after a miss,
            so a hit and a miss return bit-identical arrays. ``metadata["cache_key"]`` is the key.
        """
        key = make_cache_key(key_parts)
        cached = self.get(key)
        if cached is not None:
            logger.debug("cache hit %s", key)
            return cached
        array_path, _, lock_path = self._paths(key)
        try:
            array_path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise CacheError(f"cannot create the cache folder {array_path.parent}: {error}; pass a writable cache directory") from error
        with _locked(lock_path):
            try:
                cached = self._read(key)
            except _CorruptEntry as error:
                logger.warning("cache entry %s in %s is corrupted (%s); rebuilding it", key, self.entries_dir, error)
                self._delete(key)
                cached = None
            if cached is not None:
                logger.debug("cache hit %s after waiting for its lock", key)
                return cached
            logger.debug("cache miss %s; computing", key)
            return self._write(key, compute(), key_parts)

    # --- maintenance ---------------------------------------------------------------------

    def keys(self) -> list[str]:
        """Return the keys of the entries that have a sidecar, sorted."""
        if not self.entries_dir.is_dir():
            return []
        return sorted(path.stem for path in self.entries_dir.glob("??/*.json"))

    def info(self) -> CacheInfo:
        """Return the number of entries and the bytes used by entry files."""
        total = 0
        if self.entries_dir.is_dir():
            for path in self.entries_dir.glob("??/*"):
                if path.suffix in (".npy", ".json"):
                    with contextlib.suppress(FileNotFoundError):
                        total += path.stat().st_size
        return CacheInfo(path=self.directory, entries=len(self.keys()), bytes=total)

    def clear(self) -> int:
        """Delete every entry (only files of this cache's layout) and return how many were removed."""
        removed = 0
        if not self.entries_dir.is_dir():
            return 0
        for folder in sorted(self.entries_dir.glob("??")):
            for path in folder.iterdir():
                if path.suffix == ".json":
                    removed += 1
                if path.suffix in (".npy", ".json", ".lock", ".tmp"):
                    with contextlib.suppress(FileNotFoundError):
                        path.unlink()
            with contextlib.suppress(OSError):
                folder.rmdir()
        with contextlib.suppress(OSError):
            self.entries_dir.rmdir()
        logger.info("cleared %d cache entries from %s", removed, self.directory)
        return removed
