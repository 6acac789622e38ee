"""Helpers for the preprocessing tests: a chest phantom with known geometry, a tiny DICOM
writer and a loader for the real LIDC-IDRI-0001 series."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tunisian_lung.io.volume import Volume

#: LUNA16 annotation of the one large nodule of LIDC-IDRI-0001 (world LPS mm).
LIDC_0001_NODULE_XYZ_MM = (56.208, 86.343, -115.868)
LIDC_0001_NODULE_DIAMETER_MM = 23.35

# Phantom geometry, in voxel indices (z, y, x) of a (40, 96, 96) grid.
PHANTOM_SHAPE = (40, 96, 96)
PHANTOM_LUNG_CENTRES = ((20, 44, 30), (20, 44, 66))
PHANTOM_LUNG_RADII = (14, 22, 13)
PHANTOM_NODULE_CENTRE = (20, 44, 30)
PHANTOM_NODULE_RADIUS = 4


def chest_phantom(
    *, spacing: tuple[float, float, float] = (2.0, 2.0, 2.5), origin: tuple[float, float, float] = (-96.0, -96.0, -50.0)
) -> Volume:
    """Build an int16 HU chest phantom: outside air, a soft-tissue body, two lungs, one nodule
    in the left-hand lung, a scanner table below the body, and -2048 HU corners outside the
    field of view."""
    z, y, x = np.indices(PHANTOM_SHAPE)
    array = np.full(PHANTOM_SHAPE, -1000, dtype=np.int16)

    body = ((y - 44) / 38.0) ** 2 + ((x - 48) / 44.0) ** 2 <= 1.0
    array[body] = 40
    for centre in PHANTOM_LUNG_CENTRES:
        inside = sum(((axis - c) / r) ** 2 for axis, c, r in zip((z, y, x), centre, PHANTOM_LUNG_RADII)) <= 1.0
        array[inside] = -850
    nodule = sum((axis - c) ** 2 for axis, c in zip((z, y, x), PHANTOM_NODULE_CENTRE)) <= PHANTOM_NODULE_RADIUS**2
    array[nodule] = 30
    array[:, 86:90, 10:86] = 300  # table: 3 rows of air (83..85) below the body's lowest row 82
    field_of_view = ((y - 47.5) ** 2 + (x - 47.5) ** 2) <= 50.0**2
    array[~field_of_view] = -2048
    return Volume(array, spacing=spacing, origin=origin, metadata={"series_uid": "1.2.3.phantom"})


def write_dicom_series(folder: Path, volume: Volume, *, series_uid: str = "1.2.826.0.1.3680043.10.1.1") -> Path:
    """Write an int16 HU volume as one axial CT DICOM file per slice (identity direction)."""
    import pydicom
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

    folder.mkdir(parents=True, exist_ok=True)
    array = np.asarray(volume.array)
    study_uid = generate_uid()
    for index in range(array.shape[0]):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CTImageStorage
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = pydicom.Dataset()
        ds.file_meta = meta
        ds.SOPClassUID = CTImageStorage
        ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
        ds.StudyInstanceUID = study_uid
        ds.SeriesInstanceUID = series_uid
        ds.Modality = "CT"
        ds.PatientID = "PHANTOM"
        ds.InstanceNumber = index + 1
        ds.ImagePositionPatient = [volume.origin[0], volume.origin[1], volume.origin[2] + index * volume.spacing[2]]
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.PixelSpacing = [volume.spacing[1], volume.spacing[0]]
        ds.SliceThickness = volume.spacing[2]
        ds.Rows, ds.Columns = array.shape[1], array.shape[2]
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.BitsAllocated = 16
        ds.BitsStored = 16
        ds.HighBit = 15
        ds.PixelRepresentation = 1
        ds.RescaleIntercept = 0
        ds.RescaleSlope = 1
        ds.PixelData = array[index].astype("<i2").tobytes()
        ds.save_as(folder / f"slice_{index:03d}.dcm", enforce_file_format=True)
    return folder


def load_dicom_folder(folder: Path) -> Volume:
    """Load an axial CT series with the library's DICOM reader, or with plain pydicom (slices
    sorted by ImagePositionPatient z) while that reader is not available."""
    try:
        from tunisian_lung.io.dicom import load_series
    except ImportError:
        pass
    else:
        return load_series(folder)

    import pydicom

    slices = [pydicom.dcmread(path) for path in sorted(folder.glob("*.dcm"))]
    slices.sort(key=lambda ds: float(ds.ImagePositionPatient[2]))
    array = np.stack(
        [ds.pixel_array.astype(np.float32) * float(ds.RescaleSlope) + float(ds.RescaleIntercept) for ds in slices]
    ).astype(np.int16)
    first, second = slices[0], slices[1]
    row_spacing, column_spacing = (float(v) for v in first.PixelSpacing)
    slice_spacing = float(second.ImagePositionPatient[2]) - float(first.ImagePositionPatient[2])
    return Volume(
        array,
        spacing=(column_spacing, row_spacing, slice_spacing),
        origin=[float(v) for v in first.ImagePositionPatient],
        metadata={"series_uid": str(first.SeriesInstanceUID)},
    )


def ramp_volume(seed: int = 0) -> Volume:
    """A small deterministic float32 volume for cache tests."""
    generator = np.random.default_rng(seed)
    array = generator.standard_normal((8, 9, 10)).astype(np.float32)
    return Volume(array, spacing=(0.7, 0.8, 2.5), origin=(-10.0, 20.0, -300.0), metadata={"series_uid": f"1.2.{seed}"})


def race_for_entry(cache_dir: str, counter_path: str, barrier: object, result_path: str) -> None:
    """Wait at ``barrier``, then request one entry from the cache and save the returned array.

    The entry's computation is slow and appends a line to ``counter_path``, so the caller can
    count how many processes computed it."""
    import time

    from tunisian_lung.preprocess import PreprocessCache

    def compute() -> Volume:
        with open(counter_path, "a", encoding="utf-8") as handle:
            handle.write("computed\n")
        time.sleep(0.5)
        return ramp_volume(7)

    cache = PreprocessCache(cache_dir)
    barrier.wait()  # type: ignore[attr-defined]
    volume = cache.get_or_create({"source": "race", "config": "c"}, compute)
    np.save(result_path, np.asarray(volume.array))
