"""Preprocess whole datasets or single series through the cache, in a process pool or on Dask.

The unit of work is one series: load it, run :func:`preprocess_volume`, store the result in
the cache. Finished series are cache hits on a second run, so an interrupted run resumes where
it stopped.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import logging
import multiprocessing
import os
import time
from stat import S_ISREG
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

from tunisian_lung.errors import PreprocessError, TunisianLungError
from tunisian_lung.io.volume import Volume
from tunisian_lung.preprocess.cache import PreprocessCache
from tunisian_lung.preprocess.config import PreprocessConfig
from tunisian_lung.preprocess.pipeline import preprocess_volume

logger = logging.getLogger(__name__)

_HASH_CHUNK_BYTES = 1 << 20


def _dicom_series_uid(path: Path) -> str | None:
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        header = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["SeriesInstanceUID"])
    except (InvalidDicomError, OSError):
        return None
    uid = header.get("SeriesInstanceUID")
    return str(uid) if uid else None


def _file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(_HASH_CHUNK_BYTES), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _list_files(folder: Path) -> list[tuple[str, Path, os.stat_result]]:
    """Return (relative POSIX name, path, stat) of every non-hidden file below ``folder``, sorted by name."""
    entries: list[tuple[str, Path, os.stat_result]] = []
    for directory, subdirectories, names in os.walk(folder):
        subdirectories[:] = [name for name in subdirectories if not name.startswith(".")]
        relative = os.path.relpath(directory, folder)
        prefix = "" if relative == "." else relative.replace(os.sep, "/") + "/"
        for name in names:
            if name.startswith("."):
                continue
            item = Path(directory, name)
            stat = item.stat()
            if not S_ISREG(stat.st_mode):
                continue
            entries.append((prefix + name, item, stat))
    entries.sort(key=lambda entry: entry[0])
    return entries


def source_identity(source: str | os.PathLike[str], *, hash_contents: bool = False) -> dict[str, Any]:
    """Describe a DICOM folder or an image file by what changes when its content changes.

    Parameters
    ----------
    source:
        A DICOM series folder (every non-hidden file below it counts) or one file (NIfTI,
        single DICOM).
    hash_contents:
        Add the sha256 of every file. Slower (reads every byte) but also detects a content
        change that kept a file's size and modification time.

    Returns
    -------
    dict
        JSON-serialisable: ``kind``, ``series_uid`` (of the first of the first five files that
        is DICOM, or ``None``) and
        ``files`` as ``[relative name, size in bytes, mtime in ns(, sha256)]`` rows, sorted.
        Absolute paths are left out, so a moved dataset with preserved timestamps still hits.
    """
    path = Path(source)
    if path.is_dir():
        entries = _list_files(path)
        if not entries:
            raise PreprocessError(f"series folder {path} contains no files; check the path")
        kind = "folder"
    elif path.is_file():
        entries = [(path.name, path, path.stat())]
        kind = "file"
    else:
        raise PreprocessError(f"source {path} does not exist; pass a DICOM series folder or a NIfTI/DICOM file")

    rows: list[list[Any]] = []
    for name, item, stat in entries:
        row: list[Any] = [name, stat.st_size, stat.st_mtime_ns]
        if hash_contents:
            row.append(_file_digest(item))
        rows.append(row)
    series_uid = None
    dicom_candidates = [item for _, item, _ in entries if not item.name.endswith((".nii", ".nii.gz"))]
    # A few tries skip a README or XML file that sorts before the first DICOM file.
    for item in dicom_candidates[:5]:
        series_uid = _dicom_series_uid(item)
        if series_uid is not None:
            break
    return {"kind": kind, "series_uid": series_uid, "files": rows, "hashed": hash_contents}


def _key_parts(identity: dict[str, Any], config: PreprocessConfig, series_id: str | None) -> dict[str, Any]:
    return {"source": identity, "series_id": series_id, "config": config.cache_key()}


def _load_source(source: Path) -> Volume:
    from tunisian_lung.io import load_volume

    volume: Volume = load_volume(source)
    return volume


def preprocess_series(
    source: str | os.PathLike[str],
    config: PreprocessConfig,
    *,
    cache: PreprocessCache | None = None,
    series_id: str | None = None,
    hash_contents: bool = False,
    use_cache: bool = True,
) -> Volume:
    """Load one series (DICOM folder or NIfTI/DICOM file) and preprocess it through the cache.

    Parameters
    ----------
    source:
        DICOM series folder or image file, read with :func:`tunisian_lung.io.load_volume`.
    config:
        The recipe.
    cache:
        Cache to use; defaults to ``PreprocessCache()`` (user cache directory).
    series_id:
        Name for error messages and part of the cache key.
    hash_contents:
        Key the cache on file contents too (see :func:`source_identity`).
    use_cache:
        ``False`` preprocesses without reading or writing any cache.

    Returns
    -------
    Volume
        ``float32``; memory-mapped and read-only when it comes from the cache.

    Raises
    ------
    CacheError
        If ``source`` is a folder and the cache directory is that folder or inside it.
    PreprocessError
        If the series cannot be preprocessed (the message names it).
    """
    path = Path(source)
    name = series_id or path.name

    def compute() -> Volume:
        volume = _load_source(path)
        return preprocess_volume(volume, config, series_id=name)

    if not use_cache:
        return compute()
    cache = cache if cache is not None else PreprocessCache()
    # A cache cannot be inside a single image file, and the folder beside that file (for
    # example the home directory above ~/.cache) is not part of the source.
    if path.is_dir():
        cache.check_outside(path)
    identity = source_identity(path, hash_contents=hash_contents)
    return cache.get_or_create(_key_parts(identity, config, series_id), compute)


# --- datasets ------------------------------------------------------------------------------


def _series_source(record: Any) -> Path:
    for attribute in ("dicom_dir", "nifti_path"):
        value = getattr(record, attribute, None)
        if value is not None:
            return Path(value)
    raise PreprocessError(
        f"series {getattr(record, 'series_id', record)!r} has neither a DICOM folder nor a NIfTI file in the dataset"
    )


def _find_series(dataset: Any, series_id: str) -> Any:
    for record in dataset.series:
        if str(record.series_id) == str(series_id):
            return record
    raise PreprocessError(f"series {series_id!r} is not in the dataset; known series ids come from dataset.series")


def load_preprocessed(
    dataset: Any,
    series_id: str,
    config: PreprocessConfig,
    *,
    cache: PreprocessCache | None = None,
    hash_contents: bool = False,
) -> Volume:
    """Return the preprocessed volume of one series of a dataset, from the cache when possible.

    Used by the torch adapters: the first call per series computes and stores it, later calls
    (also from DataLoader workers) memory-map the cached ``.npy``.

    Parameters
    ----------
    dataset:
        A :class:`~tunisian_lung.dataset.TunisianLungDataset` (anything with ``.series``
        records that have ``series_id`` and ``dicom_dir`` or ``nifti_path``, and ``.root``).
    series_id:
        Series to load.
    config:
        The recipe.
    cache:
        Cache to use; defaults to ``PreprocessCache()``.
    """
    record = _find_series(dataset, series_id)
    cache = cache if cache is not None else PreprocessCache()
    root = getattr(dataset, "root", None)
    if root is not None:
        cache.check_outside(root)
    return preprocess_series(
        _series_source(record), config, cache=cache, series_id=str(series_id), hash_contents=hash_contents
    )


@dataclass(frozen=True)
class SeriesFailure:
    """One series that could not be preprocessed: the error type and message."""

    series_id: str
    error_type: str
    message: str


@dataclass
class PreprocessResult:
    """Outcome of :func:`preprocess_dataset`.

    ``succeeded`` maps series id to cache key. ``computed`` and ``cache_hits`` split the
    successes into series computed in this run and series that were already cached.
    """

    succeeded: dict[str, str] = field(default_factory=dict)
    failed: list[SeriesFailure] = field(default_factory=list)
    computed: int = 0
    cache_hits: int = 0
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        """Whether every series succeeded."""
        return not self.failed


@dataclass(frozen=True)
class _Task:
    series_id: str
    source: str
    config_json: str
    cache_dir: str
    cache_verify: str
    hash_contents: bool


def _run_task(task: _Task) -> tuple[str, str | None, bool, str | None, str | None]:
    """Preprocess one series in a worker; return (series_id, cache key, was_hit, error type, message).

    Top-level and argument-only, so process pools and Dask can pickle it. Every exception is
    turned into a per-series failure, so one bad series does not stop the others.
    """
    config = PreprocessConfig.from_json(task.config_json)
    cache = PreprocessCache(task.cache_dir, verify=task.cache_verify)  # type: ignore[arg-type]
    computed = False

    try:
        path = Path(task.source)
        identity = source_identity(path, hash_contents=task.hash_contents)

        def compute() -> Volume:
            nonlocal computed
            computed = True
            return preprocess_volume(_load_source(path), config, series_id=task.series_id)

        volume = cache.get_or_create(_key_parts(identity, config, task.series_id), compute)
        return task.series_id, str(volume.metadata["cache_key"]), not computed, None, None
    except Exception as error:  # noqa: BLE001 - reported per series (and logged) by the caller
        return task.series_id, None, False, type(error).__name__, str(error)


def _iterate_pool(tasks: Sequence[_Task], workers: int) -> Iterator[tuple[str, str | None, bool, str | None, str | None]]:
    if workers == 1:
        for task in tasks:
            yield _run_task(task)
        return
    # spawn: fork after torch or BLAS threads have started can deadlock a worker.
    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
        futures = [pool.submit(_run_task, task) for task in tasks]
        try:
            for future in concurrent.futures.as_completed(futures):
                yield future.result()
        except BaseException:
            for future in futures:
                future.cancel()
            raise


def _iterate_dask(tasks: Sequence[_Task], client: Any) -> Iterator[tuple[str, str | None, bool, str | None, str | None]]:
    try:
        from distributed import as_completed
    except ImportError as error:  # pragma: no cover - only without the dask extra
        raise PreprocessError("dask_client needs the 'distributed' package: pip install 'tunisian-lung[dask]'") from error
    futures = client.map(_run_task, list(tasks), pure=False)
    for future in as_completed(futures):
        yield future.result()


def preprocess_dataset(
    dataset: Any,
    config: PreprocessConfig,
    *,
    workers: int = 1,
    cache: PreprocessCache | None = None,
    progress: bool = False,
    dask_client: Any = None,
    hash_contents: bool = False,
    series_ids: Iterable[str] | None = None,
) -> PreprocessResult:
    """Preprocess every series of a dataset into the cache.

    Parameters
    ----------
    dataset:
        A :class:`~tunisian_lung.dataset.TunisianLungDataset` (or anything with ``.series``
        records and an optional ``.root``).
    config:
        The recipe.
    workers:
        Number of worker processes (``1`` runs in this process).
    cache:
        Cache to fill; defaults to ``PreprocessCache()``. It must not be inside the dataset.
    progress:
        Show a tqdm progress bar on stderr.
    dask_client:
        A ``distributed.Client``; when given, series run as tasks on its cluster (each worker
        must see the dataset and cache paths) and ``workers`` is ignored.
    hash_contents:
        Key the cache on file contents too (see :func:`source_identity`).
    series_ids:
        Only these series (default: all).

    Returns
    -------
    PreprocessResult
        Successes and per-series failures; finished series stay cached even when others fail,
        so running again resumes.
    """
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise PreprocessError(f"workers must be a positive integer, got {workers!r}")
    cache = cache if cache is not None else PreprocessCache()
    root = getattr(dataset, "root", None)
    if root is not None:
        cache.check_outside(root)

    requested = None if series_ids is None else {str(s) for s in series_ids}
    result = PreprocessResult()
    tasks: list[_Task] = []
    for record in dataset.series:
        series_id = str(record.series_id)
        if requested is not None and series_id not in requested:
            continue
        try:
            source = _series_source(record)
            cache.check_outside(source)
        except TunisianLungError as error:
            logger.warning("series %s skipped: %s: %s", series_id, type(error).__name__, error)
            result.failed.append(SeriesFailure(series_id, type(error).__name__, str(error)))
            continue
        tasks.append(
            _Task(series_id, str(source), config.to_json(), str(cache.directory), cache.verify, hash_contents)
        )
    if requested is not None:
        missing = requested - {task.series_id for task in tasks} - {failure.series_id for failure in result.failed}
        for series_id in sorted(missing):
            result.failed.append(SeriesFailure(series_id, "PreprocessError", "series id is not in the dataset"))

    start = time.perf_counter()
    logger.info("preprocessing %d series with %s into %s", len(tasks), "dask" if dask_client else f"{workers} worker(s)", cache.directory)
    outcomes = _iterate_dask(tasks, dask_client) if dask_client is not None else _iterate_pool(tasks, workers)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(tasks), unit="series", desc="preprocess")
    try:
        for series_id, key, was_hit, error_type, message in outcomes:
            if key is not None:
                result.succeeded[series_id] = key
                if was_hit:
                    result.cache_hits += 1
                else:
                    result.computed += 1
            else:
                logger.warning("series %s failed: %s: %s", series_id, error_type, message)
                result.failed.append(SeriesFailure(series_id, error_type or "Error", message or ""))
            if bar is not None:
                bar.update(1)
    finally:
        if bar is not None:
            bar.close()
    result.seconds = time.perf_counter() - start
    logger.info(
        "preprocessed %d series (%d computed, %d cached), %d failed, in %.1f s",
        len(result.succeeded), result.computed, result.cache_hits, len(result.failed), result.seconds,
    )
    return result
