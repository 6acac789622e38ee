"""Dataset runner, single-series helper and the real LIDC-IDRI-0001 series through the reference preset."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from preprocess_support import (
    LIDC_0001_NODULE_DIAMETER_MM,
    LIDC_0001_NODULE_XYZ_MM,
    chest_phantom,
    write_dicom_series,
)
from tunisian_lung.errors import CacheError, PreprocessError
from tunisian_lung.io.volume import Volume
from tunisian_lung.preprocess import (
    PreprocessCache,
    PreprocessConfig,
    load_preprocessed,
    lung_mask,
    preprocess_dataset,
    preprocess_series,
    preset,
)

pytest.importorskip("tunisian_lung.io.dicom", reason="the DICOM reader is needed to load series")

SMALL = PreprocessConfig(target_shape_zyx=(16, 24, 24))


@pytest.fixture(scope="module")
def release(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    """A dataset-like object with two phantom series, one constant series and one without files."""
    root = tmp_path_factory.mktemp("release")
    phantom = chest_phantom()
    write_dicom_series(root / "dicom" / "P1" / "S1", phantom, series_uid="1.2.826.0.1.3680043.10.1.1")
    shifted = phantom.with_array(np.roll(phantom.array, 3, axis=2))
    write_dicom_series(root / "dicom" / "P2" / "S2", shifted, series_uid="1.2.826.0.1.3680043.10.1.2")
    constant = phantom.with_array(np.full(phantom.shape, 40, dtype=np.int16))
    write_dicom_series(root / "dicom" / "P3" / "S3", constant, series_uid="1.2.826.0.1.3680043.10.1.3")
    series = [
        SimpleNamespace(patient_id=f"P{i}", series_id=f"S{i}", dicom_dir=root / "dicom" / f"P{i}" / f"S{i}", nifti_path=None)
        for i in (1, 2, 3)
    ]
    series.append(SimpleNamespace(patient_id="P4", series_id="S4", dicom_dir=None, nifti_path=None))
    return SimpleNamespace(root=root, series=series)


def test_dataset_reports_failures_and_resumes(release: SimpleNamespace, tmp_path: Path) -> None:
    cache = PreprocessCache(tmp_path / "cache")
    first = preprocess_dataset(release, SMALL, cache=cache)
    assert sorted(first.succeeded) == ["S1", "S2"]
    assert first.computed == 2
    assert not first.ok
    failures = {failure.series_id: failure for failure in first.failed}
    assert sorted(failures) == ["S3", "S4"]
    assert failures["S3"].error_type == "PreprocessError"
    assert "series S3: every voxel has the value 40" in failures["S3"].message
    assert "neither a DICOM folder nor a NIfTI file" in failures["S4"].message

    second = preprocess_dataset(release, SMALL, cache=cache, series_ids=["S1", "S2"])
    assert second.ok
    assert second.cache_hits == 2
    assert second.computed == 0
    assert second.succeeded == first.succeeded


def test_dataset_matches_single_volume(release: SimpleNamespace, tmp_path: Path) -> None:
    cache = PreprocessCache(tmp_path / "cache")
    preprocess_dataset(release, SMALL, cache=cache, series_ids=["S1"])
    cached = load_preprocessed(release, "S1", SMALL, cache=cache)
    direct = preprocess_series(release.series[0].dicom_dir, SMALL, use_cache=False, series_id="S1")
    assert cached.array.tobytes() == direct.array.tobytes()
    assert cached.same_geometry(direct)
    assert cache.info().entries == 1


@pytest.mark.slow
def test_dataset_with_two_worker_processes(release: SimpleNamespace, tmp_path: Path) -> None:
    cache = PreprocessCache(tmp_path / "cache")
    result = preprocess_dataset(release, SMALL, cache=cache, workers=2, series_ids=["S1", "S2", "S3"])
    assert sorted(result.succeeded) == ["S1", "S2"]
    assert [failure.series_id for failure in result.failed] == ["S3"]
    assert cache.info().entries == 2


def test_dataset_with_dask_local_cluster(release: SimpleNamespace, tmp_path: Path) -> None:
    distributed = pytest.importorskip("distributed")
    cache = PreprocessCache(tmp_path / "cache")
    with distributed.LocalCluster(
        n_workers=1, threads_per_worker=1, processes=False, protocol="tcp://", host="127.0.0.1", dashboard_address=None
    ) as cluster, distributed.Client(cluster) as client:
        result = preprocess_dataset(release, SMALL, cache=cache, dask_client=client, series_ids=["S1", "S3"])
    assert sorted(result.succeeded) == ["S1"]
    assert [failure.series_id for failure in result.failed] == ["S3"]
    local = preprocess_dataset(release, SMALL, cache=cache, series_ids=["S1"])
    assert local.cache_hits == 1
    assert local.succeeded == result.succeeded


def test_dataset_rejects_cache_inside_release(release: SimpleNamespace) -> None:
    with pytest.raises(CacheError, match="inside the dataset folder"):
        preprocess_dataset(release, SMALL, cache=PreprocessCache(release.root / ".cache"))


def test_dataset_rejects_bad_workers(release: SimpleNamespace, tmp_path: Path) -> None:
    with pytest.raises(PreprocessError, match="0"):
        preprocess_dataset(release, SMALL, cache=PreprocessCache(tmp_path), workers=0)


def test_load_preprocessed_unknown_series(release: SimpleNamespace, tmp_path: Path) -> None:
    with pytest.raises(PreprocessError, match="'S9' is not in the dataset"):
        load_preprocessed(release, "S9", SMALL, cache=PreprocessCache(tmp_path))


def test_changed_source_file_misses(tmp_path: Path) -> None:
    folder = write_dicom_series(tmp_path / "series", chest_phantom())
    cache = PreprocessCache(tmp_path / "cache")
    first = preprocess_series(folder, SMALL, cache=cache)
    altered = chest_phantom()
    write_dicom_series(folder, altered.with_array(np.flip(altered.array, axis=2).copy()))
    second = preprocess_series(folder, SMALL, cache=cache)
    assert cache.info().entries == 2
    assert first.metadata["cache_key"] != second.metadata["cache_key"]


def test_series_file_beside_cache(tmp_path: Path) -> None:
    # A NIfTI file in a folder that also contains the cache, like ~/scan.nii.gz with ~/.cache.
    from tunisian_lung.io.nifti import write_nifti

    image = tmp_path / "scan.nii.gz"
    write_nifti(chest_phantom(), image)
    cache = PreprocessCache(tmp_path / ".cache" / "preprocess")
    volume = preprocess_series(image, SMALL, cache=cache)
    assert volume.shape == (16, 24, 24)
    assert cache.info().entries == 1


def test_series_folder_rejects_cache_inside(tmp_path: Path) -> None:
    folder = write_dicom_series(tmp_path / "series", chest_phantom())
    with pytest.raises(CacheError, match="inside the dataset folder"):
        preprocess_series(folder, SMALL, cache=PreprocessCache(folder / "cache"))


# --- the real LIDC-IDRI-0001 series ----------------------------------------------------------


@pytest.mark.shared_data
def test_reference_preset_on_real_series(lidc_0001_dir: Path, tmp_path: Path) -> None:
    cache = PreprocessCache(tmp_path / "cache")
    miss = preprocess_series(lidc_0001_dir, preset("reference"), cache=cache)
    hit = preprocess_series(lidc_0001_dir, preset("reference"), cache=cache)
    assert hit.array.tobytes() == miss.array.tobytes()
    assert cache.info().entries == 1

    array = hit.array
    assert array.shape == (64, 64, 64)
    assert array.dtype == np.float32
    assert float(array.min()) >= -1.0
    assert float(array.max()) <= 1.0

    # Nodule region: output voxels within a quarter diameter of the LUNA16 centre.
    indices = np.stack(np.indices(array.shape), axis=-1).reshape(-1, 3)
    distance = np.linalg.norm(hit.voxel_to_world(indices) - np.asarray(LIDC_0001_NODULE_XYZ_MM), axis=1)
    nodule = (distance <= LIDC_0001_NODULE_DIAMETER_MM / 4).reshape(array.shape)
    assert nodule.sum() >= 3

    # Lung region: the lung mask of the output, mapped back to HU, without the nodule.
    hu = (array.astype(np.float64) + 1.0) / 2.0 * 1400.0 - 1000.0
    lung = lung_mask(hit.with_array(hu)) & ~nodule
    assert lung.sum() > 1000
    nodule_mean = float(array[nodule].mean())
    lung_mean = float(array[lung].mean())
    assert nodule_mean > lung_mean + 0.5, (nodule_mean, lung_mean)
