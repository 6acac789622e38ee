"""MetaImage (``.mhd`` header with ``.raw`` pixel file, or one ``.mha`` file) reading and writing.

LUNA16 distributes its CT volumes as MetaImage files named ``<SeriesInstanceUID>.mhd``. The
header is plain ``Key = value`` text. The keys used here:

* ``NDims = 3`` and ``DimSize = nx ny nz``: the grid size in x, y, z index order.
* ``ElementSpacing``: voxel size in mm along the x, y, z index axes.
* ``Offset`` (synonyms ``Origin``, ``Position``): world position of the centre of voxel
  ``(0, 0, 0)``. ITK writes world coordinates in the LPS frame, so for LUNA16 the ``Offset``
  is the LPS origin in mm, the frame of ``annotations.csv``.
* ``TransformMatrix`` (synonyms ``Rotation``, ``Orientation``): nine numbers, row ``i`` being
  the world direction of index axis ``i``, which is how ITK's MetaImageIO (ITK 5) reads and
  writes it. :class:`~tunisian_lung.io.volume.Volume` stores those directions as columns.
* ``ElementType`` (``MET_SHORT``, ``MET_FLOAT``, ...), ``ElementByteOrderMSB`` (or
  ``BinaryDataByteOrderMSB``), ``CompressedData`` (zlib), ``HeaderSize`` and
  ``ElementDataFile``, which is ``LOCAL`` for data after the header or a file name relative to
  the header's folder. ``ElementDataFile`` must be the last key.

Only 3D, single-channel images with one data file are supported.
"""

from __future__ import annotations

import os
import tempfile
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from tunisian_lung.errors import VolumeError
from tunisian_lung.io.volume import Volume

#: MetaImage element types and their numpy dtypes (without byte order).
ELEMENT_TYPES: dict[str, str] = {
    "MET_CHAR": "i1",
    "MET_UCHAR": "u1",
    "MET_SHORT": "i2",
    "MET_USHORT": "u2",
    "MET_INT": "i4",
    "MET_UINT": "u4",
    "MET_LONG": "i4",
    "MET_ULONG": "u4",
    "MET_LONG_LONG": "i8",
    "MET_ULONG_LONG": "u8",
    "MET_FLOAT": "f4",
    "MET_DOUBLE": "f8",
}

_ORIGIN_KEYS = ("Offset", "Origin", "Position")
_DIRECTION_KEYS = ("TransformMatrix", "Rotation", "Orientation")
_BYTE_ORDER_KEYS = ("ElementByteOrderMSB", "BinaryDataByteOrderMSB")
_MAX_HEADER_BYTES = 64 * 1024


class MetaImageError(VolumeError):
    """A MetaImage header or its pixel data cannot be read as a 3D volume."""


def read_metaimage_header(path: str | Path) -> dict[str, str]:
    """Read the ``Key = value`` pairs of a MetaImage header, up to and including ``ElementDataFile``.

    Raises
    ------
    MetaImageError
        The file is missing, is not text or has no ``ElementDataFile`` key.
    """
    header_path = Path(path)
    if not header_path.is_file():
        raise MetaImageError(f"MetaImage header not found: {header_path}")
    with header_path.open("rb") as stream:
        head = stream.read(_MAX_HEADER_BYTES)
    header: dict[str, str] = {}
    for raw_line in head.split(b"\n"):
        try:
            line = raw_line.decode("ascii").strip()
        except UnicodeDecodeError as error:
            raise MetaImageError(
                f"{header_path}: header line {raw_line[:40]!r} is not ASCII text before ElementDataFile"
            ) from error
        if not line:
            continue
        key, separator, value = line.partition("=")
        if not separator:
            raise MetaImageError(f"{header_path}: header line {line!r} is not of the form 'Key = value'")
        header[key.strip()] = value.strip()
        if key.strip() == "ElementDataFile":
            return header
    raise MetaImageError(f"{header_path}: no ElementDataFile key in the first {_MAX_HEADER_BYTES} bytes")


def _numbers(header: dict[str, str], key: str, count: int, path: Path) -> list[float]:
    try:
        values = [float(token) for token in header[key].split()]
    except ValueError as error:
        raise MetaImageError(f"{path}: {key} = {header[key]!r} is not a list of numbers") from error
    if len(values) != count:
        raise MetaImageError(f"{path}: {key} needs {count} values for a 3D image, got {header[key]!r}")
    return values


def _first_key(header: dict[str, str], keys: tuple[str, ...]) -> str | None:
    return next((key for key in keys if key in header), None)


def _is_true(value: str) -> bool:
    return value.strip().lower() in ("true", "1")


def _geometry(header: dict[str, str], path: Path) -> dict[str, Any]:
    ndims = header.get("NDims", "3").strip()
    if ndims != "3":
        raise MetaImageError(f"{path}: NDims = {ndims}, but only 3D volumes are supported")
    channels = header.get("ElementNumberOfChannels", "1").strip()
    if channels != "1":
        raise MetaImageError(f"{path}: ElementNumberOfChannels = {channels}, only single-channel images are supported")
    if "DimSize" not in header:
        raise MetaImageError(f"{path}: the header has no DimSize")
    size_xyz = [int(n) for n in _numbers(header, "DimSize", 3, path)]
    if min(size_xyz) <= 0:
        raise MetaImageError(f"{path}: DimSize must be positive, got {header['DimSize']!r}")
    if "ElementSpacing" in header:
        spacing = _numbers(header, "ElementSpacing", 3, path)
    elif "ElementSize" in header:
        spacing = _numbers(header, "ElementSize", 3, path)
    else:
        # A missing spacing would silently turn mm into voxels, so it is an error, not 1.0.
        raise MetaImageError(f"{path}: the header has neither ElementSpacing nor ElementSize")
    origin_key = _first_key(header, _ORIGIN_KEYS)
    origin = _numbers(header, origin_key, 3, path) if origin_key else [0.0, 0.0, 0.0]
    direction_key = _first_key(header, _DIRECTION_KEYS)
    if direction_key:
        rows = np.asarray(_numbers(header, direction_key, 9, path)).reshape(3, 3)
        direction = rows.T
    else:
        direction = np.eye(3)
    return {"size_xyz": size_xyz, "spacing": spacing, "origin": origin, "direction": direction}


def _dtype(header: dict[str, str], path: Path) -> np.dtype:
    element_type = header.get("ElementType", "").strip()
    if element_type not in ELEMENT_TYPES:
        raise MetaImageError(
            f"{path}: ElementType {element_type!r} is not supported; expected one of {sorted(ELEMENT_TYPES)}"
        )
    byte_order_key = _first_key(header, _BYTE_ORDER_KEYS)
    big_endian = byte_order_key is not None and _is_true(header[byte_order_key])
    return np.dtype(("<" if not big_endian else ">") + ELEMENT_TYPES[element_type])


def _read_pixels(path: Path, header: dict[str, str], dtype: np.dtype, size_xyz: list[int]) -> np.ndarray:
    data_file = header["ElementDataFile"]

    if data_file.upper() == "LOCAL":
        data_path = path
        with path.open("rb") as stream:
            content = stream.read()
        # The pixel data start after the newline that ends the ElementDataFile line.
        marker = content.find(b"ElementDataFile")
        start = content.find(b"\n", marker) + 1
        payload = content[start:]
    else:
        if data_file.split()[0] in ("LIST",) or "%" in data_file:
            raise MetaImageError(f"{path}: ElementDataFile = {data_file!r}: multi-file data are not supported")
        data_path = path.parent / data_file
        if not data_path.is_file():
            raise MetaImageError(
                f"{path}: ElementDataFile {data_file!r} not found at {data_path}; keep the .raw file next to its .mhd header"
            )
        payload = data_path.read_bytes()

    header_size = int(header.get("HeaderSize", "0"))
    if header_size > 0:
        payload = payload[header_size:]
    if _is_true(header.get("CompressedData", "False")):
        try:
            payload = zlib.decompress(payload)
        except zlib.error as error:
            raise MetaImageError(f"{data_path}: CompressedData = True but the data are not a zlib stream: {error}") from error

    count = int(np.prod(size_xyz))
    expected = count * dtype.itemsize
    if header_size == -1:
        payload = payload[len(payload) - expected :]
    if len(payload) != expected:
        raise MetaImageError(
            f"{data_path}: expected {expected} bytes for DimSize {size_xyz} of {header['ElementType']}, "
            f"found {len(payload)}; the pixel file is truncated or belongs to another header"
        )
    nx, ny, nz = size_xyz
    # MetaImage stores x fastest, then y, then z, which is C order for a (z, y, x) array.
    array = np.frombuffer(payload, dtype=dtype).reshape(nz, ny, nx)
    return array.astype(dtype.newbyteorder("="), copy=True)


def read_metaimage(path: str | Path) -> Volume:
    """Read a MetaImage volume (``.mhd`` with its data file, or ``.mha``).

    Parameters
    ----------
    path:
        The ``.mhd`` or ``.mha`` header file.

    Returns
    -------
    Volume
        Array with axes ``(z, y, x)`` in the file's element type (``int16`` for LUNA16 CT,
        which stores Hounsfield units), ``spacing`` and ``origin`` in mm and LPS world ``(x, y, z)``
        order, and ``direction`` with the index axes' world directions as columns.
        ``metadata["source_path"]`` is the header path.

    Raises
    ------
    MetaImageError
        The header lacks a required key, has an unsupported type, or the data size does not
        match ``DimSize``.
    """
    header_path = Path(path)
    header = read_metaimage_header(header_path)
    geometry = _geometry(header, header_path)
    dtype = _dtype(header, header_path)
    array = _read_pixels(header_path, header, dtype, geometry["size_xyz"])
    return Volume(
        array,
        spacing=geometry["spacing"],
        origin=geometry["origin"],
        direction=geometry["direction"],
        metadata={"source_path": str(header_path), "format": "metaimage"},
    )


def _format_numbers(values: Any) -> str:
    return " ".join(repr(float(v)) if not float(v).is_integer() else str(int(v)) for v in values)


def write_metaimage(volume: Volume, path: str | Path) -> Path:
    """Write a volume as an ``.mhd`` header and an uncompressed ``.raw`` file beside it.

    The header names the data file by its base name, so the pair can be moved together. Both
    files are written to temporary names first and then renamed, so a reader never sees half a
    file. Returns the header path.

    Raises
    ------
    MetaImageError
        The path does not end in ``.mhd`` or the array's dtype has no MetaImage element type.
    """
    header_path = Path(path)
    if header_path.suffix.lower() != ".mhd":
        raise MetaImageError(f"write_metaimage writes .mhd files, got {header_path}")
    array = np.asarray(volume.array)
    code = array.dtype.newbyteorder("=").str.lstrip("<>=|")
    element_type = next((name for name, value in ELEMENT_TYPES.items() if value == code), None)
    if element_type is None:
        raise MetaImageError(f"dtype {array.dtype} has no MetaImage element type; cast to int16 or float32 first")
    raw_path = header_path.with_suffix(".raw")
    nz, ny, nx = volume.shape
    header_lines = [
        "ObjectType = Image",
        "NDims = 3",
        "BinaryData = True",
        "BinaryDataByteOrderMSB = False",
        "CompressedData = False",
        f"TransformMatrix = {_format_numbers(np.asarray(volume.direction).T.reshape(-1))}",
        f"Offset = {_format_numbers(volume.origin)}",
        f"ElementSpacing = {_format_numbers(volume.spacing)}",
        f"DimSize = {nx} {ny} {nz}",
        f"ElementType = {element_type}",
        f"ElementDataFile = {raw_path.name}",
    ]
    little_endian = np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<"))
    _atomic_write(raw_path, little_endian.tobytes())
    _atomic_write(header_path, ("\n".join(header_lines) + "\n").encode("ascii"))
    return header_path


def _atomic_write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(descriptor, "wb") as stream:
            stream.write(data)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
