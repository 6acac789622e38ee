"""Body and lung masks from HU thresholds, connected components and hole filling.

Both masks are computed on the array as it is (no resampling) and return boolean arrays with
the volume's ``(z, y, x)`` shape.
"""

from __future__ import annotations

import logging

import numpy as np
from scipy import ndimage

from tunisian_lung.io.volume import Volume

logger = logging.getLogger(__name__)

# 26-connectivity would join the lungs to outside air through single diagonal voxels.
_STRUCTURE_6 = ndimage.generate_binary_structure(3, 1)


def _fill_holes_per_slice(mask: np.ndarray) -> np.ndarray:
    filled = np.empty_like(mask)
    for index in range(mask.shape[0]):
        filled[index] = ndimage.binary_fill_holes(mask[index])
    return filled


def body_mask(volume: Volume, *, threshold_hu: float = -500.0) -> np.ndarray:
    """Return the patient's body as a boolean ``(z, y, x)`` mask.

    Voxels above ``threshold_hu`` are labelled in 3D, and the largest connected component is
    the body. In a normal scan air separates the scanner table from the body, so the table is
    another component. Holes are filled slice by slice, so the lungs and airways count as body.

    Returns an all-false mask when no voxel is above the threshold.
    """
    dense = volume.array > threshold_hu
    labels, count = ndimage.label(dense, structure=_STRUCTURE_6)
    if count == 0:
        return np.zeros(volume.shape, dtype=bool)
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    body = labels == int(np.argmax(sizes))
    return _fill_holes_per_slice(body)


def lung_mask(
    volume: Volume,
    *,
    threshold_hu: float = -320.0,
    min_lung_volume_ml: float = 50.0,
    second_lung_min_fraction: float = 0.1,
) -> np.ndarray:
    """Return both lungs as a boolean ``(z, y, x)`` mask.

    Steps:

    1. Voxels below ``threshold_hu`` are air candidates.
    2. Candidates are labelled in 3D (6-connectivity). Components that touch the in-plane border
       of the array (first/last row or column) are outside air, including the air under the
       scanner table and the -2048 HU padding outside the field of view, and are dropped.
    3. The largest remaining component is kept, and the second largest too when it is at least
       ``second_lung_min_fraction`` of the first (the two lungs are often separate components).
       Components smaller than ``min_lung_volume_ml`` are never kept, which drops bowel gas and
       small air pockets.
    4. Holes (vessels, nodules surrounded by lung) are filled slice by slice.

    Returns an all-false mask when nothing qualifies; callers decide whether that is an error.

    Notes
    -----
    A nodule attached to the chest wall may be left outside the mask, because lung does not
    enclose it in any slice. A crop margin keeps it inside the crop box.
    """
    air = volume.array < threshold_hu
    labels, count = ndimage.label(air, structure=_STRUCTURE_6)
    if count == 0:
        return np.zeros(volume.shape, dtype=bool)

    border_labels = np.unique(
        np.concatenate(
            [labels[:, 0, :].ravel(), labels[:, -1, :].ravel(), labels[:, :, 0].ravel(), labels[:, :, -1].ravel()]
        )
    )
    sizes = np.bincount(labels.ravel(), minlength=count + 1)
    sizes[0] = 0
    sizes[border_labels] = 0

    voxel_ml = float(np.prod(volume.spacing)) / 1000.0
    min_voxels = min_lung_volume_ml / voxel_ml
    order = np.argsort(sizes)[::-1]
    lung_labels: list[int] = []
    for label in order[:2]:
        size = sizes[label]
        if size == 0 or size < min_voxels:
            break
        if lung_labels and size < second_lung_min_fraction * sizes[lung_labels[0]]:
            break
        lung_labels.append(int(label))
    if not lung_labels:
        logger.debug("lung mask: no air component inside the body reaches %.1f mL", min_lung_volume_ml)
        return np.zeros(volume.shape, dtype=bool)
    lungs = np.isin(labels, lung_labels)
    return _fill_holes_per_slice(lungs)
