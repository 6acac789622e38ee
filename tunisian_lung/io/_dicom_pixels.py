"""Decoding DICOM pixel data and mapping stored values to modality values (Hounsfield units for CT).

Decoding uses pydicom's pixel handlers, with the installed pylibjpeg, openjpeg, RLE, JPEG-LS and
GDCM plugins for compressed transfer syntaxes. pydicom 3 applies PixelRepresentation to JPEG 2000
codestreams whose sign disagrees with the header, so signed CT stored as unsigned J2K decodes
correctly.

The output dtype rule: ``int16`` when every slice has an integer RescaleSlope and
RescaleIntercept (or a Modality LUT) and every rescaled value lies in the int16 range, else
``float32``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
from pydicom.dataset import Dataset
from pydicom.pixels import apply_modality_lut

_INT16_MIN = int(np.iinfo(np.int16).min)
_INT16_MAX = int(np.iinfo(np.int16).max)


@dataclass(frozen=True)
class DecodedSlice:
    """Stored values of one slice and the linear map to modality values.

    ``values`` are the stored pixel values, or the Modality LUT output when the image has a
    Modality LUT Sequence. :func:`make_slice` may also store the final int16 modality values.
    In those two cases ``slope`` is 1 and ``intercept`` 0.
    """

    values: np.ndarray
    slope: float
    intercept: float
    minimum: int | float
    maximum: int | float

    @property
    def integer_map(self) -> bool:
        """Whether slope and intercept map integers to integers."""
        return float(self.slope).is_integer() and float(self.intercept).is_integer() and self.values.dtype.kind in "iub"

    def output_range(self) -> tuple[float, float]:
        """Smallest and largest modality value of this slice."""
        ends = (self.minimum * self.slope + self.intercept, self.maximum * self.slope + self.intercept)
        return (min(ends), max(ends))


_NATIVE_LITTLE_ENDIAN = ("1.2.840.10008.1.2", "1.2.840.10008.1.2.1")


def _native_frames(dataset: Dataset) -> np.ndarray | None:
    """Read uncompressed little-endian 16-bit greyscale pixel data without a copy, or return ``None``.

    This is the layout of most CT exports, and reading it directly skips pydicom's generic
    pixel pipeline. Bits above BitsStored are masked (unsigned) or sign-extended (signed) as
    DICOM PS3.5 section 8 requires.
    """
    syntax = str(dataset.file_meta.get("TransferSyntaxUID", ""))
    if syntax not in _NATIVE_LITTLE_ENDIAN or "PixelData" not in dataset:
        return None
    if int(dataset.get("BitsAllocated", 0) or 0) != 16 or int(dataset.get("SamplesPerPixel", 1) or 1) != 1:
        return None
    rows = int(dataset.Rows)
    columns = int(dataset.Columns)
    frames = int(dataset.get("NumberOfFrames", 1) or 1)
    signed = int(dataset.get("PixelRepresentation", 0) or 0) == 1
    data = dataset.PixelData
    expected = rows * columns * frames * 2
    if len(data) < expected:
        return None
    array = np.frombuffer(data, dtype="<i2" if signed else "<u2", count=rows * columns * frames)
    array = array.reshape(frames, rows, columns)
    bits_stored = int(dataset.get("BitsStored", 16) or 16)
    if bits_stored < 16:
        unused = 16 - bits_stored
        if signed:
            array = (array << unused) >> unused
        else:
            array = array & np.uint16((1 << bits_stored) - 1)
    return array


def decode_frames(dataset: Dataset) -> np.ndarray:
    """Decode every frame of a dataset to stored values (or Modality LUT output), shape ``(frames, rows, columns)``."""
    array = _native_frames(dataset)
    if array is None:
        array = dataset.pixel_array
        frames = int(dataset.get("NumberOfFrames", 1) or 1)
        if array.ndim == 2 or (frames == 1 and array.ndim == 3):
            # pydicom drops the frame axis of a single frame: (rows, columns), or
            # (rows, columns, samples) for colour images.
            array = array[np.newaxis]
    if "ModalityLUTSequence" in dataset:
        # NOTE: only a top-level Modality LUT Sequence is applied. A LUT inside the functional
        # groups of an enhanced multi-frame image is ignored (rescale there is applied).
        array = apply_modality_lut(array, dataset)
    return array


def make_slice(values: np.ndarray, slope: float, intercept: float) -> DecodedSlice:
    """Wrap one 2D array of stored values with its rescale and its value range.

    When the rescale maps this slice exactly into int16, this function computes the modality
    values and returns them with an identity rescale. It runs in the reading thread while the
    slice is in the CPU cache, and stacking the volume becomes a plain copy.
    """
    if values.size:
        minimum = values.min().item()
        maximum = values.max().item()
    else:
        minimum = maximum = 0
    item = DecodedSlice(values, float(slope), float(intercept), minimum, maximum)
    if item.integer_map and output_dtype([item]) == np.int16:
        rescaled = np.empty(values.shape, dtype=np.int16)
        rescale_into(rescaled, item)
        low, high = item.output_range()
        return DecodedSlice(rescaled, 1.0, 0.0, int(low), int(high))
    return item


def output_dtype(slices: Sequence[DecodedSlice]) -> np.dtype:
    """Return int16 when every slice maps to integers inside the int16 range, else float32."""
    for item in slices:
        if not item.integer_map:
            return np.dtype(np.float32)
        low, high = item.output_range()
        if low < _INT16_MIN or high > _INT16_MAX:
            return np.dtype(np.float32)
    return np.dtype(np.int16)


def rescale_into(out: np.ndarray, item: DecodedSlice) -> None:
    """Write the modality values of one slice into ``out`` (a 2D view of the output volume)."""
    if out.dtype == np.int16:
        # 16-bit integer arithmetic wraps modulo 2**16, and the result is exact whenever the true
        # value lies in the int16 range, which output_dtype checked. This avoids an int32 copy.
        np.copyto(out, item.values, casting="unsafe")
        if item.slope != 1.0:
            out *= np.asarray(int(item.slope)).astype(np.int16)
        if item.intercept != 0.0:
            out += np.asarray(int(item.intercept)).astype(np.int16)
        return
    scaled64 = item.values.astype(np.float64)
    if item.slope != 1.0:
        scaled64 *= item.slope
    if item.intercept != 0.0:
        scaled64 += item.intercept
    out[...] = scaled64
