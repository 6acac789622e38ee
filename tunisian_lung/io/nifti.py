"""NIfTI-1 reading and writing: RAS on disk, LPS in memory.

A NIfTI affine maps voxel indices ``(i, j, k)`` (the file's array axes, x fastest) to RAS+
millimetres. A :class:`Volume` keeps DICOM/ITK LPS coordinates and a ``(z, y, x)`` array, so
this module flips the sign of the first two world axes and transposes the array. This is the
only module of the library that converts between RAS and LPS.
"""

from __future__ import annotations

import logging
import os
import uuid
from pathlib import Path
from typing import Union

import numpy as np

from tunisian_lung.errors import NiftiError
from tunisian_lung.io.volume import Volume

__all__ = ["read_nifti", "write_nifti", "LPS_TO_RAS"]

logger = logging.getLogger(__name__)

PathLike = Union[str, "os.PathLike[str]"]

#: Homogeneous 4x4 matrix that flips x and y: LPS world points to RAS and back (it is its own inverse).
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])

_NIFTI_SUFFIXES = (".nii", ".nii.gz")
_ORTHONORMAL_ATOL = 1e-4


def _check_suffix(path: Path) -> None:
    name = path.name.lower()
    if not name.endswith(_NIFTI_SUFFIXES):
        raise NiftiError(f"{path}: a NIfTI path must end with .nii or .nii.gz")


def read_nifti(path: PathLike, *, lazy: bool = False) -> Volume:
    """Read a NIfTI-1 or NIfTI-2 file into a :class:`Volume` in LPS coordinates.

    The sform is used when its code is set, else the qform. The array keeps the file's stored
    dtype when the header has no scaling (``scl_slope`` 0, NaN, or 1 with ``scl_inter`` 0), so
    int16 volumes round trip exactly. Scaled data are returned as float32.

    Parameters
    ----------
    path:
        ``.nii`` or ``.nii.gz`` file.
    lazy:
        Read the header now and the voxels on first access of ``Volume.array``.

    Returns
    -------
    Volume
        Array ``(z, y, x)`` (the file's third, second and first axes), LPS geometry in mm.

    Raises
    ------
    NiftiError
        The file is missing or unreadable, is not 3D, or its affine has shear or zero spacing.
    """
    import nibabel as nib

    file_path = Path(path)
    if not file_path.is_file():
        raise NiftiError(f"NIfTI file not found: {file_path}")
    try:
        image = nib.load(str(file_path))
    except (OSError, ValueError, nib.filebasedimages.ImageFileError) as error:
        raise NiftiError(f"{file_path}: cannot read as NIfTI ({error})") from error
    if not isinstance(image, (nib.Nifti1Image, nib.Nifti2Image)):
        raise NiftiError(f"{file_path}: not a NIfTI image (nibabel read it as {type(image).__name__})")
    shape = tuple(int(n) for n in image.shape)
    if len(shape) == 4 and shape[3] == 1:
        shape = shape[:3]
    if len(shape) != 3:
        raise NiftiError(f"{file_path}: a volume must be 3D, got image shape {image.shape}")

    header = image.header
    sform, sform_code = header.get_sform(coded=True)
    qform, qform_code = header.get_qform(coded=True)
    if sform is not None and int(sform_code) > 0:
        affine_ras = np.asarray(sform, dtype=np.float64)
    elif qform is not None and int(qform_code) > 0:
        affine_ras = np.asarray(qform, dtype=np.float64)
    else:
        logger.warning("%s: neither sform nor qform is set; using the pixdim-only fallback affine", file_path)
        affine_ras = np.asarray(image.affine, dtype=np.float64)
    affine_lps = LPS_TO_RAS @ affine_ras
    linear = affine_lps[:3, :3]
    spacing = np.linalg.norm(linear, axis=0)
    if np.any(spacing <= 0) or not np.all(np.isfinite(linear)):
        raise NiftiError(f"{file_path}: affine has zero or invalid voxel spacing: {affine_ras.tolist()}")
    direction = linear / spacing
    if not np.allclose(direction.T @ direction, np.eye(3), atol=_ORTHONORMAL_ATOL):
        raise NiftiError(
            f"{file_path}: affine has shear (its axes are not orthogonal), which a Volume cannot represent: "
            f"{affine_ras.tolist()}. Resample the image onto an orthogonal grid first"
        )

    # nibabel moves scl_slope and scl_inter from the header of a loaded image into its array
    # proxy (the header then reads NaN), so the scaling is taken from the proxy.
    slope = float(getattr(image.dataobj, "slope", 1.0))
    intercept = float(getattr(image.dataobj, "inter", 0.0))
    scaled = not (slope == 1.0 and intercept == 0.0)
    zyx_shape = (shape[2], shape[1], shape[0])

    def load_array() -> np.ndarray:
        if scaled:
            # caching="unchanged" keeps nibabel from holding a second copy of the voxels.
            data = image.get_fdata(dtype=np.float32, caching="unchanged")
        else:
            data = np.asanyarray(image.dataobj)
        if data.ndim == 4:
            data = data[..., 0]
        return np.ascontiguousarray(np.asarray(data).transpose(2, 1, 0))

    metadata = {"source": str(file_path), "units": "HU"}
    origin = affine_lps[:3, 3]
    if lazy:
        return Volume(None, spacing=spacing, origin=origin, direction=direction, loader=load_array, shape=zyx_shape, metadata=metadata)
    return Volume(load_array(), spacing=spacing, origin=origin, direction=direction, metadata=metadata)


def write_nifti(volume: Volume, path: PathLike) -> Path:
    """Write a volume to a NIfTI-1 file with its RAS affine in both the qform and the sform.

    The array is stored with its own dtype and no intensity scaling, so int16 Hounsfield units
    round trip exactly. The file is written to a temporary file in the target folder and then
    renamed, so a reader never sees a half-written file. Parent folders are created.

    Parameters
    ----------
    volume:
        The volume; ``volume.array`` is ``(z, y, x)`` and its geometry LPS in mm.
    path:
        Output path ending in ``.nii`` or ``.nii.gz`` (gzip compressed).

    Returns
    -------
    Path
        The written path.

    Raises
    ------
    NiftiError
        The path does not end in ``.nii``/``.nii.gz`` or the dtype cannot be stored in NIfTI-1.
    """
    import nibabel as nib

    out_path = Path(path)
    _check_suffix(out_path)
    data = np.asarray(volume.array)
    if data.dtype == np.bool_:
        data = data.astype(np.uint8)
    affine_ras = LPS_TO_RAS @ volume.affine
    image = nib.Nifti1Image(np.ascontiguousarray(data.transpose(2, 1, 0)), affine_ras)
    try:
        image.set_data_dtype(data.dtype)
    except nib.spatialimages.HeaderDataError as error:
        raise NiftiError(f"{out_path}: dtype {data.dtype} cannot be stored in NIfTI-1 ({error})") from error
    image.set_qform(affine_ras, code=1)
    image.set_sform(affine_ras, code=1)
    image.header.set_xyzt_units(xyz="mm")
    image.header["scl_slope"] = 1.0
    image.header["scl_inter"] = 0.0

    out_path.parent.mkdir(parents=True, exist_ok=True)
    suffix = ".nii.gz" if out_path.name.lower().endswith(".nii.gz") else ".nii"
    # Unlike tempfile.mkstemp (mode 0600), os.open with mode 0666 honours the user's umask, so
    # the renamed file gets the permissions a plain open() would give it.
    temporary = out_path.parent / f".{out_path.name}.{uuid.uuid4().hex}{suffix}"
    os.close(os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
    try:
        nib.save(image, temporary)
        os.replace(temporary, out_path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return out_path
