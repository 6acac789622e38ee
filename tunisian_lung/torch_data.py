"""torch ``Dataset`` adapters over the preprocessing cache, with samplers and a collate function.

Two datasets cover the two training set-ups of the library:

* :class:`ScanDataset`: one sample per CT series, the whole preprocessed volume as
  ``image`` float32 ``(1, D, H, W)`` with ``D, H, W = z, y, x``, and a scan label.
* :class:`NoduleDataset`: one sample per annotated nodule, a patch of fixed physical size around
  its world centre, labelled benign 0 / malignant 1, plus optional negative patches from
  nodule-free lung.

Both read volumes through :func:`tunisian_lung.preprocess.load_preprocessed`, which memory-maps
the cached array, so a worker holds only the samples of its current batch. Both are picklable
and work with ``num_workers > 0``, ``persistent_workers=True`` and ``DistributedSampler``.

Randomness (augmentation, negative patch centres) comes from a ``torch.Generator`` seeded with
:func:`sample_seed` of ``(seed, epoch, index)``. A sample therefore does not depend on which
worker loads it or on how many workers there are, and an epoch is identical for a seed. Call
:meth:`ScanDataset.set_epoch` before iterating each epoch, as with ``DistributedSampler``. The
epoch is kept in shared memory, so persistent workers see the new value.
"""

from __future__ import annotations

import hashlib
import logging
import struct
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset, WeightedRandomSampler
from torch.utils.data._utils.collate import default_collate

from tunisian_lung.errors import ConfigError, LabelError
from tunisian_lung.labels import (
    CLASS_NAMES,
    SCAN_TARGETS,
    STAGE_INDEX,
    NoduleRecord,
    ScanRecord,
    nodule_records,
    scan_records,
    series_label_table,
)

if TYPE_CHECKING:  # pragma: no cover
    from tunisian_lung.io.volume import Volume
    from tunisian_lung.preprocess import Augmentation, PreprocessCache, PreprocessConfig

logger = logging.getLogger(__name__)

__all__ = [
    "CLASS_NAMES",
    "SCAN_TARGETS",
    "STAGE_INDEX",
    "NoduleDataset",
    "NoduleRecord",
    "ScanDataset",
    "ScanRecord",
    "SeriesIndex",
    "class_balanced_sampler",
    "collate",
    "nodule_records",
    "sample_seed",
    "scan_records",
    "series_label_table",
]


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """Return the 63-bit seed of one sample's generator, from sha256 of ``(seed, epoch, index)``.

    The value is the same on every platform and in every process, so a sample's augmentation
    does not depend on the worker that loads it.
    """
    digest = hashlib.sha256(struct.pack("<qqq", int(seed), int(epoch), int(index))).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


# --- dataset plumbing -------------------------------------------------------------------------


@dataclass(frozen=True)
class SeriesIndex:
    """The part of a dataset that image loading needs: its root folder and series records.

    The torch datasets keep this instead of the whole dataset object, so they pickle cheaply
    into DataLoader workers started with ``spawn``. It has the ``root`` and ``series``
    attributes that :func:`tunisian_lung.preprocess.load_preprocessed` reads.
    """

    root: Path | None
    series: tuple[Any, ...]


def _series_index(dataset: Any) -> SeriesIndex:
    root = getattr(dataset, "root", None)
    return SeriesIndex(root=None if root is None else Path(root), series=tuple(dataset.series))


def _split_source(source: Any) -> tuple[Any, tuple[Any, ...]]:
    """Return (full dataset, series records) of a dataset or a :class:`~tunisian_lung.splits.DatasetSplit`."""
    dataset = getattr(source, "source", None)
    if dataset is not None and hasattr(source, "patient_ids"):
        return dataset, tuple(source.series)
    return source, tuple(source.series)


def _split_nodules(source: Any) -> tuple[Any, tuple[Any, ...], tuple[Any, ...]]:
    dataset, series = _split_source(source)
    return dataset, series, tuple(source.nodules)



# --- shared machinery of both datasets --------------------------------------------------------


def scan_augmentation() -> "Augmentation":
    """Return the default augmentation of whole scans: left-right flips and rotations of up to
    10 degrees in the axial plane.

    Whole scans keep their anterior-posterior and superior-inferior direction (the table stays
    at the back), so front-back flips and 90-degree turns, which no real scan shows, are left out.
    Nodule patches have no such orientation and use the full default ``Augmentation()``.
    """
    from tunisian_lung.preprocess import Augmentation

    return Augmentation(flip_axes=(2,), rot90_probability=0.0, max_rotation_degrees=10.0)


def _resolve_augmentation(augment: Any, *, whole_scan: bool) -> "Augmentation | None":
    if augment is None or augment is False:
        return None
    from tunisian_lung.preprocess import Augmentation

    if augment is True:
        return scan_augmentation() if whole_scan else Augmentation()
    if isinstance(augment, Augmentation):
        return augment
    raise ConfigError(f"augment must be None, False, True or an Augmentation, got {augment!r}")


def _resolve_config(config: "PreprocessConfig | None", default_preset: str) -> "PreprocessConfig":
    from tunisian_lung.preprocess import PreprocessConfig, preset

    if config is None:
        return preset(default_preset)
    if not isinstance(config, PreprocessConfig):
        raise ConfigError(f"config must be a PreprocessConfig or None, got {type(config).__name__}")
    return config


def _to_image_tensor(array: np.ndarray) -> torch.Tensor:
    # Copy out of the read-only memory map, so the sample owns its memory and can be augmented.
    return torch.from_numpy(np.array(array, dtype=np.float32, copy=True)).unsqueeze(0)


class _SeededDataset(Dataset):
    """Epoch counter in shared memory and per-sample generators (see the module docstring)."""

    seed: int
    augmentation: "Augmentation | None"

    def __init__(self, seed: int) -> None:
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise ConfigError(f"seed must be a non-negative integer, got {seed!r}")
        self.seed = seed
        # A shared-memory tensor is passed to DataLoader workers by reference, so set_epoch()
        # in the main process reaches persistent workers too.
        self._epoch = torch.zeros(1, dtype=torch.int64).share_memory_()

    @property
    def epoch(self) -> int:
        """The epoch used in the per-sample seeds."""
        return int(self._epoch.item())

    def set_epoch(self, epoch: int) -> None:
        """Set the epoch; call it before iterating a ``DataLoader`` over this dataset each epoch."""
        if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 0:
            raise ConfigError(f"epoch must be a non-negative integer, got {epoch!r}")
        self._epoch.fill_(epoch)

    def generator(self, index: int) -> torch.Generator:
        """Return the CPU generator of sample ``index`` in the current epoch."""
        generator = torch.Generator()
        generator.manual_seed(sample_seed(self.seed, self.epoch, index))
        return generator

    def _augment(self, image: torch.Tensor, index: int) -> torch.Tensor:
        if self.augmentation is None:
            return image
        from tunisian_lung.preprocess import augment

        return augment(image, self.augmentation, self.generator(index))

    @property
    def labels(self) -> list[int]:  # pragma: no cover - overridden
        raise NotImplementedError


# --- scan-level dataset -----------------------------------------------------------------------


class ScanDataset(_SeededDataset):
    """One sample per CT series: the whole preprocessed volume and a scan-level label.

    Parameters
    ----------
    source:
        A :class:`~tunisian_lung.splits.DatasetSplit` or a whole
        :class:`~tunisian_lung.dataset.TunisianLungDataset`.
    target:
        ``"cancer"`` (healthy 0, cancer 1; default), ``"malignant_nodule"`` (1 when the series
        has an annotated malignant nodule) or ``"stage"`` (I..IV -> 0..3).
    config:
        Preprocessing config; ``None`` uses ``preset("reference")`` (window -1000..400 HU to
        [-1, 1], whole volume resized to 64x64x64).
    cache:
        :class:`~tunisian_lung.preprocess.PreprocessCache`; ``None`` uses the default cache.
    augment:
        ``None``/``False`` (default), ``True`` for :func:`scan_augmentation` (left-right flips
        and small axial rotations), or an :class:`~tunisian_lung.preprocess.Augmentation`.
    seed:
        Seed of the augmentation generators.
    exclude_unlabeled:
        Leave out series without a label for ``target`` instead of raising :class:`LabelError`.

    Each sample is a dict with these keys:

    * ``image``: float32 tensor ``(1, D, H, W)``, axes z, y, x, normalised as set by the config.
    * ``label``: int64 scalar tensor.
    * ``patient_id``, ``series_id``: strings.
    * ``spacing``: float64 tensor ``(3,)``, the preprocessed voxel size in mm along x, y, z,
      before augmentation (a 90-degree turn in the axial plane swaps the x and y sizes).
    * ``index``: the sample index (int).
    """

    def __init__(
        self,
        source: Any,
        *,
        target: str = "cancer",
        config: "PreprocessConfig | None" = None,
        cache: "PreprocessCache | None" = None,
        augment: "Augmentation | bool | None" = None,
        seed: int = 0,
        exclude_unlabeled: bool = False,
    ) -> None:
        super().__init__(seed)
        dataset, series = _split_source(source)
        self.dataset = _series_index(dataset)
        self.target = target
        self.config = _resolve_config(config, "reference")
        self.cache = cache
        self.augmentation = _resolve_augmentation(augment, whole_scan=True)
        self.records: tuple[ScanRecord, ...] = tuple(
            scan_records(dataset, series, target=target, exclude_unlabeled=exclude_unlabeled)
        )

    def __len__(self) -> int:
        return len(self.records)

    @property
    def labels(self) -> list[int]:
        """Label of every sample, in index order (read without loading any image)."""
        return [record.label for record in self.records]

    @property
    def class_names(self) -> tuple[str, ...]:
        """Names of the label values, index = label."""
        return CLASS_NAMES[self.target]

    def load_volume(self, index: int) -> "Volume":
        """Return the preprocessed (cached, memory-mapped) volume of sample ``index``."""
        from tunisian_lung.preprocess import load_preprocessed

        return load_preprocessed(self.dataset, self.records[index].series_id, self.config, cache=self.cache)

    def __getitem__(self, index: int) -> dict[str, Any]:
        if not -len(self) <= index < len(self):
            raise IndexError(f"sample index {index} is out of range for {len(self)} series")
        index = index % len(self)
        record = self.records[index]
        volume = self.load_volume(index)
        image = self._augment(_to_image_tensor(volume.array), index)
        return {
            "image": image,
            "label": torch.tensor(record.label, dtype=torch.int64),
            "patient_id": record.patient_id,
            "series_id": record.series_id,
            "spacing": torch.tensor(volume.spacing, dtype=torch.float64),
            "index": index,
        }

    def __repr__(self) -> str:
        counts = Counter(self.labels)
        shown = ", ".join(f"{self.class_names[label]}={counts[label]}" for label in sorted(counts))
        return f"ScanDataset({len(self)} series, target={self.target!r}, {shown}, config={self.config.name!r})"


# --- nodule-level dataset ---------------------------------------------------------------------


@dataclass(frozen=True)
class _PatchSpec:
    series_id: str
    patient_id: str
    label: int
    is_nodule: bool
    center_xyz_mm: tuple[float, float, float] | None
    diameter_mm: float
    negative_index: int


class NoduleDataset(_SeededDataset):
    """One patch per annotated nodule (benign 0 / malignant 1), plus optional negative patches.

    Patches are cut in world coordinates from the preprocessed volume with
    :func:`tunisian_lung.preprocess.extract_patch` and cached through the
    :class:`~tunisian_lung.preprocess.PreprocessCache`, so later epochs read them from disk.

    Parameters
    ----------
    source:
        A :class:`~tunisian_lung.splits.DatasetSplit` or a whole dataset.
    config:
        Preprocessing of the whole volume before cutting; ``None`` uses
        ``preset("lung-crop-1.5mm")`` (window to [-1, 1], lung bounding box at 1.5 mm). Use a
        config without ``target_shape_zyx`` so that patches keep their physical size.
    patch_size_mm:
        Physical edge length of a patch in mm, one number (cube) or ``(x, y, z)``.
    patch_shape_zyx:
        Voxel shape of a patch.
    negatives_per_scan:
        Negative patches per series (label 0, ``is_nodule`` false), centred on random lung
        voxels whose distance to every annotated nodule centre is more than the nodule radius
        plus half the patch diagonal. Requires ``normalisation="window"`` in the config.
    cache, augment, seed:
        As for :class:`ScanDataset`, except that ``augment=True`` means the full default
        :class:`~tunisian_lung.preprocess.Augmentation` (flips in-plane and 90-degree turns),
        because a patch has no anatomical up. The seed also fixes the negative centres, which stay the
        same in every epoch.
    exclude_unlabeled:
        Leave out nodules without a class instead of raising :class:`LabelError`.

    Each sample is a dict with these keys:

    * ``image``: float32 tensor ``(1, D, H, W)``.
    * ``label``: int64 scalar tensor, 0 for benign nodules and negatives, 1 for malignant.
    * ``is_nodule``: bool tensor, false for negative patches.
    * ``center_xyz_mm``: float64 ``(3,)``, the patch centre (LPS, mm).
    * ``diameter_mm``: float64 scalar, 0 for negatives.
    * ``patient_id``, ``series_id``: strings.
    * ``spacing``: float64 ``(3,)``, the patch voxel size in mm along x, y, z, before
      augmentation.
    * ``index``: the sample index (int).
    """

    def __init__(
        self,
        source: Any,
        *,
        config: "PreprocessConfig | None" = None,
        cache: "PreprocessCache | None" = None,
        augment: "Augmentation | bool | None" = None,
        seed: int = 0,
        patch_size_mm: float | Sequence[float] = 48.0,
        patch_shape_zyx: Sequence[int] = (32, 32, 32),
        negatives_per_scan: int = 0,
        max_negative_tries: int = 200,
        exclude_unlabeled: bool = False,
    ) -> None:
        super().__init__(seed)
        dataset, series, nodules = _split_nodules(source)
        self.dataset = _series_index(dataset)
        self.config = _resolve_config(config, "lung-crop-1.5mm")
        self.cache = cache
        self.augmentation = _resolve_augmentation(augment, whole_scan=False)
        size = np.broadcast_to(np.asarray(patch_size_mm, dtype=np.float64), (3,))
        if not np.all(np.isfinite(size)) or np.any(size <= 0):
            raise ConfigError(f"patch_size_mm must be positive and finite, got {patch_size_mm!r}")
        self.patch_size_mm = (float(size[0]), float(size[1]), float(size[2]))
        shape = tuple(int(n) for n in patch_shape_zyx)
        if len(shape) != 3 or min(shape) <= 0:
            raise ConfigError(f"patch_shape_zyx must be 3 positive integers (z, y, x), got {patch_shape_zyx!r}")
        self.patch_shape_zyx: tuple[int, int, int] = (shape[0], shape[1], shape[2])
        if isinstance(negatives_per_scan, bool) or not isinstance(negatives_per_scan, int) or negatives_per_scan < 0:
            raise ConfigError(f"negatives_per_scan must be a non-negative integer, got {negatives_per_scan!r}")
        if negatives_per_scan and self.config.normalisation != "window":
            raise ConfigError(
                "negative patches need normalisation='window' to find the lungs, "
                f"but config {self.config.name!r} uses {self.config.normalisation!r}"
            )
        self.negatives_per_scan = negatives_per_scan
        self.max_negative_tries = max_negative_tries

        specs = [
            _PatchSpec(
                series_id=record.series_id,
                patient_id=record.patient_id,
                label=record.label,
                is_nodule=True,
                center_xyz_mm=record.center_xyz_mm,
                diameter_mm=record.diameter_mm,
                negative_index=-1,
            )
            for record in nodule_records(dataset, nodules, exclude_unlabeled=exclude_unlabeled)
        ]
        for record in series:
            for number in range(negatives_per_scan):
                specs.append(
                    _PatchSpec(
                        series_id=str(record.series_id),
                        patient_id=str(record.patient_id),
                        label=0,
                        is_nodule=False,
                        center_xyz_mm=None,
                        diameter_mm=0.0,
                        negative_index=number,
                    )
                )
        self.specs: tuple[_PatchSpec, ...] = tuple(specs)
        self._nodule_centres: dict[str, list[tuple[np.ndarray, float]]] = {}
        # Every annotated nodule, labelled or not, is kept away from negative patches.
        for record in dataset.nodules:
            self._nodule_centres.setdefault(str(record.series_id), []).append(
                (np.asarray(record.coord_xyz_mm, dtype=np.float64), float(record.diameter_mm))
            )

    def __len__(self) -> int:
        return len(self.specs)

    @property
    def labels(self) -> list[int]:
        """Label of every sample, in index order."""
        return [spec.label for spec in self.specs]

    @property
    def class_names(self) -> tuple[str, ...]:
        """Names of the label values: benign (and negatives) 0, malignant 1."""
        return CLASS_NAMES["nodule"]

    def _load_volume(self, series_id: str) -> "Volume":
        from tunisian_lung.preprocess import load_preprocessed

        return load_preprocessed(self.dataset, series_id, self.config, cache=self.cache)

    def _fill_value(self) -> float:
        return -1.0 if self.config.normalisation == "window" else 0.0

    def _negative_centre(self, spec: _PatchSpec) -> tuple[float, float, float]:
        """Draw the centre of a negative patch in lung tissue away from every nodule."""
        from tunisian_lung.preprocess import lung_mask
        from tunisian_lung.io.volume import Volume

        volume = self._load_volume(spec.series_id)
        lower, upper = self.config.window_hu
        # Undo the window normalisation ([-1, 1] -> HU) so the HU thresholds of lung_mask apply.
        hu = (np.asarray(volume.array, dtype=np.float32) + 1.0) * 0.5 * (upper - lower) + lower
        mask = lung_mask(Volume(hu, spacing=volume.spacing, origin=volume.origin, direction=volume.direction),
                         threshold_hu=self.config.lung_threshold_hu)
        candidates = np.argwhere(mask)
        if len(candidates) == 0:
            raise LabelError(
                f"series {spec.series_id}: no lung voxels found for negative patches; "
                "set negatives_per_scan=0 or check the preprocessing config"
            )
        generator = torch.Generator()
        # Fixed across epochs: the seed has no epoch part.
        generator.manual_seed(sample_seed(self.seed, -1, hash_series(spec.series_id, spec.negative_index)))
        half_diagonal = 0.5 * float(np.linalg.norm(self.patch_size_mm))
        nodules = self._nodule_centres.get(spec.series_id, [])
        for _ in range(self.max_negative_tries):
            pick = int(torch.randint(len(candidates), (1,), generator=generator).item())
            centre = volume.voxel_to_world(candidates[pick].astype(np.float64))
            if all(np.linalg.norm(centre - point) > diameter / 2 + half_diagonal for point, diameter in nodules):
                return (float(centre[0]), float(centre[1]), float(centre[2]))
        raise LabelError(
            f"series {spec.series_id}: no lung voxel farther than radius + {half_diagonal:.1f} mm from every "
            f"nodule after {self.max_negative_tries} tries; use a smaller patch_size_mm or fewer negatives"
        )

    def _compute_patch(self, spec: _PatchSpec) -> "Volume":
        from tunisian_lung.preprocess import extract_patch

        centre = spec.center_xyz_mm if spec.center_xyz_mm is not None else self._negative_centre(spec)
        volume = self._load_volume(spec.series_id)
        patch = extract_patch(
            volume,
            centre,
            self.patch_size_mm,
            self.patch_shape_zyx,
            fill_value=self._fill_value(),
        )
        patch.metadata["center_xyz_mm"] = list(centre)
        return patch

    def load_patch(self, index: int) -> "Volume":
        """Return the cached patch of sample ``index`` (computed and stored on the first call)."""
        from tunisian_lung.preprocess import PreprocessCache

        spec = self.specs[index]
        cache = self.cache if self.cache is not None else PreprocessCache()
        # The preprocessed volume's own cache key covers the source files and the config, so a
        # changed source or config also misses here.
        volume_key = self._load_volume(spec.series_id).metadata.get("cache_key")
        key_parts = {
            "kind": "nodule_patch" if spec.is_nodule else "negative_patch",
            "series_id": spec.series_id,
            "volume": volume_key,
            "config": self.config.cache_key(),
            "center_xyz_mm": None if spec.center_xyz_mm is None else [round(v, 4) for v in spec.center_xyz_mm],
            "negative": [self.seed, spec.negative_index] if not spec.is_nodule else None,
            "patch_size_mm": list(self.patch_size_mm),
            "patch_shape_zyx": list(self.patch_shape_zyx),
        }
        return cache.get_or_create(key_parts, lambda: self._compute_patch(spec))

    def __getitem__(self, index: int) -> dict[str, Any]:
        if not -len(self) <= index < len(self):
            raise IndexError(f"sample index {index} is out of range for {len(self)} patches")
        index = index % len(self)
        spec = self.specs[index]
        patch = self.load_patch(index)
        centre = spec.center_xyz_mm or tuple(patch.metadata.get("center_xyz_mm", (np.nan,) * 3))
        return {
            "image": self._augment(_to_image_tensor(patch.array), index),
            "label": torch.tensor(spec.label, dtype=torch.int64),
            "is_nodule": torch.tensor(spec.is_nodule),
            "center_xyz_mm": torch.tensor(centre, dtype=torch.float64),
            "diameter_mm": torch.tensor(spec.diameter_mm, dtype=torch.float64),
            "patient_id": spec.patient_id,
            "series_id": spec.series_id,
            "spacing": torch.tensor(patch.spacing, dtype=torch.float64),
            "index": index,
        }

    def __repr__(self) -> str:
        nodules = sum(spec.is_nodule for spec in self.specs)
        malignant = sum(spec.label for spec in self.specs)
        return (
            f"NoduleDataset({nodules} nodules ({malignant} malignant), {len(self) - nodules} negatives, "
            f"patch {self.patch_size_mm} mm -> {self.patch_shape_zyx}, config={self.config.name!r})"
        )


def hash_series(series_id: str, number: int) -> int:
    """Return a stable non-negative 63-bit integer for ``(series_id, number)`` (sha256 based)."""
    digest = hashlib.sha256(f"{series_id}:{number}".encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


# --- samplers and collate ---------------------------------------------------------------------


def class_balanced_sampler(
    dataset: Any,
    *,
    seed: int = 0,
    num_samples: int | None = None,
    replacement: bool = True,
) -> WeightedRandomSampler:
    """Return a sampler that draws every class equally often in expectation.

    Each sample's weight is ``1 / (number of samples of its class)``. With ``replacement``, an
    epoch of ``num_samples`` draws (default ``len(dataset)``) therefore contains about the same
    number of samples of every class. The draws come from a ``torch.Generator`` seeded with ``seed``.

    Parameters
    ----------
    dataset:
        A :class:`ScanDataset`, :class:`NoduleDataset` or any object with a ``labels`` sequence.

    Raises
    ------
    LabelError
        If the dataset is empty or has no ``labels``.
    """
    labels = getattr(dataset, "labels", None)
    if labels is None:
        raise LabelError(f"{type(dataset).__name__} has no 'labels' attribute; pass a ScanDataset or NoduleDataset")
    labels = [int(label) for label in labels]
    if not labels:
        raise LabelError("cannot balance an empty dataset")
    counts = Counter(labels)
    weights = torch.tensor([1.0 / counts[label] for label in labels], dtype=torch.float64)
    generator = torch.Generator()
    generator.manual_seed(int(seed))
    if len(counts) == 1:
        logger.warning("class-balanced sampler over a dataset with a single class %s", next(iter(counts)))
    return WeightedRandomSampler(
        weights,  # type: ignore[arg-type]  # torch accepts a tensor of weights
        num_samples=num_samples or len(labels), replacement=replacement, generator=generator
    )


def collate(batch: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Stack tensors along a new batch axis and keep strings and other metadata as lists.

    ``image`` becomes ``(N, 1, D, H, W)`` and ``label`` ``(N,)``. Unlike ``default_collate``,
    a value that is not a tensor or a number stays a plain list of length ``N``.
    """
    if not batch:
        raise LabelError("cannot collate an empty batch")
    result: dict[str, Any] = {}
    for key in batch[0]:
        values = [sample[key] for sample in batch]
        if all(isinstance(value, torch.Tensor) for value in values):
            result[key] = torch.stack(values)
        elif all(isinstance(value, (int, float)) and not isinstance(value, bool) for value in values):
            result[key] = default_collate(values)
        else:
            result[key] = list(values)
    return result
