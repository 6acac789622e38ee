"""PreprocessCache: hits and misses, keys, corruption, concurrent writers, location rules."""

from __future__ import annotations

import json
import logging
import mmap
import multiprocessing
import os
from pathlib import Path

import numpy as np
import pytest

import tunisian_lung
from preprocess_support import race_for_entry, ramp_volume
from tunisian_lung.errors import CacheError
from tunisian_lung.io.volume import Volume
from tunisian_lung.preprocess import PreprocessCache, PreprocessConfig, make_cache_key, source_identity
from tunisian_lung.preprocess.cache import CACHE_ENV


class CountingCompute:
    def __init__(self, volume: Volume) -> None:
        self.volume = volume
        self.calls = 0

    def __call__(self) -> Volume:
        self.calls += 1
        return self.volume


KEY_PARTS = {"source": {"series_uid": "1.2.3", "files": [["a.dcm", 10, 1]]}, "config": PreprocessConfig().cache_key()}


def test_hit_equals_miss_bit_for_bit(tmp_path: Path) -> None:
    cache = PreprocessCache(tmp_path / "cache")
    compute = CountingCompute(ramp_volume())
    miss = cache.get_or_create(KEY_PARTS, compute)
    hit = cache.get_or_create(KEY_PARTS, compute)
    assert compute.calls == 1
    assert miss.array.tobytes() == ramp_volume().array.tobytes()
    assert hit.array.tobytes() == miss.array.tobytes()
    assert hit.array.dtype == np.float32
    assert hit.same_geometry(ramp_volume(), atol_mm=0.0)
    assert hit.metadata["series_uid"] == "1.2.0"
    assert hit.metadata["cache_key"] == make_cache_key(KEY_PARTS)


def test_hit_is_read_only_memory_map(tmp_path: Path) -> None:
    cache = PreprocessCache(tmp_path)
    cache.get_or_create(KEY_PARTS, CountingCompute(ramp_volume()))
    hit = cache.get(make_cache_key(KEY_PARTS))
    assert hit is not None
    assert not hit.array.flags.writeable
    base = hit.array
    while base is not None and not isinstance(base, (np.memmap, mmap.mmap)):
        base = base.base
    assert base is not None, "the cached array is a copy, not a memory map of the .npy file"


def test_changed_config_misses(tmp_path: Path) -> None:
    cache = PreprocessCache(tmp_path)
    compute = CountingCompute(ramp_volume())
    cache.get_or_create(KEY_PARTS, compute)
    changed = {**KEY_PARTS, "config": PreprocessConfig(window_hu=(-1000, 500)).cache_key()}
    cache.get_or_create(changed, compute)
    assert compute.calls == 2
    assert cache.info().entries == 2


def test_changed_library_version_misses(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cache = PreprocessCache(tmp_path)
    compute = CountingCompute(ramp_volume())
    cache.get_or_create(KEY_PARTS, compute)
    monkeypatch.setattr(tunisian_lung, "__version__", "99.0.0")
    cache.get_or_create(KEY_PARTS, compute)
    assert compute.calls == 2


def test_key_ignores_dict_order() -> None:
    reordered = {"config": KEY_PARTS["config"], "source": KEY_PARTS["source"]}
    assert make_cache_key(reordered) == make_cache_key(KEY_PARTS)


def entry_paths(cache: PreprocessCache) -> tuple[Path, Path]:
    key = make_cache_key(KEY_PARTS)
    folder = cache.entries_dir / key[:2]
    return folder / f"{key}.npy", folder / f"{key}.json"


def test_truncated_entry_is_rebuilt(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    cache = PreprocessCache(tmp_path)
    compute = CountingCompute(ramp_volume())
    cache.get_or_create(KEY_PARTS, compute)
    array_path, _ = entry_paths(cache)
    array_path.write_bytes(array_path.read_bytes()[:200])
    with caplog.at_level(logging.WARNING, logger="tunisian_lung.preprocess.cache"):
        rebuilt = cache.get_or_create(KEY_PARTS, compute)
    assert compute.calls == 2
    assert "corrupted" in caplog.text
    assert rebuilt.array.tobytes() == ramp_volume().array.tobytes()


def test_flipped_byte_is_detected(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    cache = PreprocessCache(tmp_path)
    compute = CountingCompute(ramp_volume())
    cache.get_or_create(KEY_PARTS, compute)
    array_path, _ = entry_paths(cache)
    data = bytearray(array_path.read_bytes())
    data[-5] ^= 0xFF
    array_path.write_bytes(bytes(data))
    with caplog.at_level(logging.WARNING, logger="tunisian_lung.preprocess.cache"):
        assert cache.get(make_cache_key(KEY_PARTS)) is None
    assert "CRC-32" in caplog.text
    assert not array_path.exists()
    cache.get_or_create(KEY_PARTS, compute)
    assert compute.calls == 2


def test_invalid_sidecar_is_rebuilt(tmp_path: Path) -> None:
    cache = PreprocessCache(tmp_path)
    compute = CountingCompute(ramp_volume())
    cache.get_or_create(KEY_PARTS, compute)
    _, sidecar_path = entry_paths(cache)
    sidecar_path.write_text("{not json", encoding="utf-8")
    cache.get_or_create(KEY_PARTS, compute)
    assert compute.calls == 2
    assert json.loads(sidecar_path.read_text(encoding="utf-8"))["key"] == make_cache_key(KEY_PARTS)


@pytest.mark.slow
def test_two_processes_race_for_one_entry(tmp_path: Path) -> None:
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(2)
    counter = tmp_path / "computed.txt"
    processes = [
        context.Process(
            target=race_for_entry, args=(str(tmp_path / "cache"), str(counter), barrier, str(tmp_path / f"out{i}.npy"))
        )
        for i in range(2)
    ]
    for process in processes:
        process.start()
    for process in processes:
        process.join(timeout=120)
    assert [process.exitcode for process in processes] == [0, 0]
    assert counter.read_text(encoding="utf-8").splitlines() == ["computed"]
    first, second = (np.load(tmp_path / f"out{i}.npy") for i in range(2))
    assert first.tobytes() == second.tobytes() == ramp_volume(7).array.tobytes()
    cache = PreprocessCache(tmp_path / "cache")
    assert cache.info().entries == 1
    leftovers = [path.name for path in cache.entries_dir.rglob("*") if path.suffix == ".tmp"]
    assert leftovers == []


def test_info_and_clear(tmp_path: Path) -> None:
    cache = PreprocessCache(tmp_path)
    (tmp_path / "notes.txt").write_text("user file", encoding="utf-8")
    assert cache.info().entries == 0
    cache.get_or_create(KEY_PARTS, CountingCompute(ramp_volume()))
    cache.get_or_create({**KEY_PARTS, "config": "other"}, CountingCompute(ramp_volume(1)))
    info = cache.info()
    assert info.entries == 2
    assert info.bytes > 2 * ramp_volume().array.nbytes
    assert info.path == tmp_path
    assert cache.clear() == 2
    assert cache.info().entries == 0
    assert (tmp_path / "notes.txt").read_text(encoding="utf-8") == "user file"


def test_unwritable_directory_raises_cache_error(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the cache folder should be", encoding="utf-8")
    cache = PreprocessCache(blocker)
    with pytest.raises(CacheError, match="not-a-folder"):
        cache.get_or_create(KEY_PARTS, CountingCompute(ramp_volume()))


def test_directory_from_env_and_argument(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "from-env"))
    assert PreprocessCache().directory == tmp_path / "from-env"
    assert PreprocessCache(tmp_path / "argument").directory == tmp_path / "argument"
    monkeypatch.delenv(CACHE_ENV)
    assert "tunisian_lung" in str(PreprocessCache().directory)


def test_cache_inside_dataset_is_rejected(tmp_path: Path) -> None:
    dataset = tmp_path / "release"
    dataset.mkdir()
    with pytest.raises(CacheError, match="inside the dataset folder"):
        PreprocessCache(dataset / "cache").check_outside(dataset)
    with pytest.raises(CacheError):
        PreprocessCache(dataset).check_outside(dataset)
    PreprocessCache(tmp_path / "cache").check_outside(dataset)


def test_source_identity_tracks_size_mtime_and_contents(tmp_path: Path) -> None:
    folder = tmp_path / "series"
    folder.mkdir()
    (folder / "a.dcm").write_bytes(b"x" * 100)
    (folder / "b.dcm").write_bytes(b"y" * 50)
    (folder / ".DS_Store").write_bytes(b"ignored")
    first = source_identity(folder)
    assert [row[:2] for row in first["files"]] == [["a.dcm", 100], ["b.dcm", 50]]
    assert first["series_uid"] is None

    stat = (folder / "a.dcm").stat()
    os.utime(folder / "a.dcm", ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    assert source_identity(folder) != first

    hashed = source_identity(folder, hash_contents=True)
    stat = (folder / "b.dcm").stat()
    (folder / "b.dcm").write_bytes(b"z" * 50)
    os.utime(folder / "b.dcm", ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert [row[:3] for row in source_identity(folder)["files"]] == [row[:3] for row in hashed["files"]]
    assert source_identity(folder, hash_contents=True) != hashed
