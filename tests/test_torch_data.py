"""Tests of the torch adapters: samples, labels, DataLoader workers, samplers and collate.

Volumes come from a small synthetic chest written per series id, patched in place of
``tunisian_lung.preprocess.load_preprocessed``. DataLoader workers are forked on Linux, so they
inherit the patch.
"""

from __future__ import annotations

import pickle
from collections import Counter

import numpy as np
import pandas as pd
import pytest
import torch
from torch.utils.data import DataLoader, DistributedSampler

import tunisian_lung.preprocess as preprocess
from split_fixtures import make_fake_dataset, reference_like_statuses
from tunisian_lung.errors import ConfigError, LabelError
from tunisian_lung.io.volume import Volume
from tunisian_lung.preprocess import Augmentation, PreprocessCache, PreprocessConfig
from tunisian_lung.splits import make_splits
from tunisian_lung.torch_data import (
    NoduleDataset,
    ScanDataset,
    class_balanced_sampler,
    collate,
    sample_seed,
)

SHAPE_ZYX = (16, 24, 24)
SPACING_XYZ = (4.0, 4.0, 5.0)
NODULE_XYZ = (10.0, -20.0, 30.0)
NEEDS_FORK = pytest.mark.skipif(
    torch.multiprocessing.get_start_method(allow_none=True) not in (None, "fork"),
    reason="the patched loader reaches DataLoader workers only with the fork start method",
)


def _window(hu: np.ndarray) -> np.ndarray:
    return (np.clip(hu, -1000.0, 400.0) + 1000.0) / 1400.0 * 2.0 - 1.0


def fake_chest(dataset, series_id, config, *, cache=None):
    """Return a windowed chest volume: air outside, a body, two lungs and a nodule at NODULE_XYZ."""
    seed = sum(series_id.encode())
    z, y, x = np.meshgrid(*(np.arange(n, dtype=np.float32) for n in SHAPE_ZYX), indexing="ij")
    hu = np.full(SHAPE_ZYX, -1000.0, dtype=np.float32)
    body = ((y - 12) / 11) ** 2 + ((x - 12) / 11) ** 2 < 1
    hu[body] = 40.0
    for centre_x in (7.0, 17.0):
        lung = ((y - 12) / 7) ** 2 + ((x - centre_x) / 4) ** 2 < 1
        hu[lung & (z > 1) & (z < 14)] = -850.0
    origin = (NODULE_XYZ[0] - 7 * SPACING_XYZ[0], NODULE_XYZ[1] - 12 * SPACING_XYZ[1], NODULE_XYZ[2] - 8 * SPACING_XYZ[2])
    dx, dy, dz = SPACING_XYZ
    nodule = ((z - 8) * dz) ** 2 + ((y - 12) * dy) ** 2 + ((x - 7) * dx) ** 2 < 4.0**2
    hu[nodule] = 30.0
    hu += np.random.default_rng(seed).normal(0, 5, SHAPE_ZYX).astype(np.float32)
    return Volume(_window(hu).astype(np.float32), spacing=SPACING_XYZ, origin=origin, metadata={"cache_key": f"{seed:064x}"})


@pytest.fixture
def patched_loader(monkeypatch):
    monkeypatch.setattr(preprocess, "load_preprocessed", fake_chest)


@pytest.fixture
def cohort(tmp_path):
    statuses = [("healthy", None, None)] * 6 + [("cancer", "adenocarcinoma", "II")] * 4 + [(None, None, None)] * 2
    return make_fake_dataset(statuses, root=tmp_path / "release")


def _config():
    return PreprocessConfig(name="test", target_shape_zyx=SHAPE_ZYX)


# --- samples and labels -------------------------------------------------------------------


def test_scan_sample_layout(patched_loader, cohort):
    dataset = ScanDataset(cohort, config=_config(), exclude_unlabeled=True)
    sample = dataset[0]

    assert len(dataset) == 10
    assert sample["image"].shape == (1, *SHAPE_ZYX)
    assert sample["image"].dtype == torch.float32
    assert sample["label"].dtype == torch.int64
    assert sample["label"].shape == ()
    assert sample["patient_id"] == "P0000"
    assert sample["series_id"] == "P0000-S0"
    assert sample["spacing"].tolist() == list(SPACING_XYZ)
    assert sample["image"].is_contiguous()


def test_scan_labels_per_target(patched_loader, cohort):
    cancer = ScanDataset(cohort, config=_config(), exclude_unlabeled=True)
    nodule = ScanDataset(cohort, target="malignant_nodule", config=_config())
    stage = ScanDataset(cohort, target="stage", config=_config(), exclude_unlabeled=True)

    assert Counter(cancer.labels) == {0: 6, 1: 4}
    assert Counter(nodule.labels) == {0: 8, 1: 4}
    assert stage.labels == [1, 1, 1, 1]
    assert stage.class_names == ("I", "II", "III", "IV")


def test_stage_target_rejects_healthy(patched_loader, cohort):
    with pytest.raises(LabelError, match="no 'stage' label.*P0000-S0.*exclude_unlabeled=True"):
        ScanDataset(cohort, target="stage", config=_config())


def test_unknown_status_rejected(patched_loader, cohort):
    with pytest.raises(LabelError, match="2 series have no 'cancer' label.*P0010-S0"):
        ScanDataset(cohort, config=_config())


def test_unknown_target_rejected(cohort):
    with pytest.raises(ConfigError, match="'grade'"):
        ScanDataset(cohort, target="grade", config=_config())


def test_augment_argument_checked(cohort):
    with pytest.raises(ConfigError, match="augment must be"):
        ScanDataset(cohort, config=_config(), augment="flip", exclude_unlabeled=True)


def test_dataset_pickles(patched_loader, cohort):
    dataset = ScanDataset(cohort, config=_config(), augment=True, seed=3, exclude_unlabeled=True)
    copy = pickle.loads(pickle.dumps(dataset))

    assert copy.labels == dataset.labels
    assert torch.equal(copy[4]["image"], dataset[4]["image"])


def test_split_to_torch(patched_loader, cohort):
    labelled = make_fake_dataset(reference_like_statuses(), root=cohort.root)
    train = make_splits(labelled, seed=1).split("train")
    dataset = train.to_torch(task="scan", config=_config())

    assert isinstance(dataset, ScanDataset)
    assert {record.patient_id for record in dataset.records} == set(train.patient_ids)
    assert dataset[0]["image"].shape == (1, *SHAPE_ZYX)


# --- augmentation and seeding -------------------------------------------------------------


def test_sample_seed_stable():
    assert sample_seed(0, 0, 0) == sample_seed(0, 0, 0)
    assert len({sample_seed(0, epoch, index) for epoch in range(3) for index in range(50)}) == 150
    assert 0 <= sample_seed(2**40, 7, 12345) < 2**63


def test_augmentation_only_when_asked(patched_loader, cohort):
    plain = ScanDataset(cohort, config=_config(), exclude_unlabeled=True)
    augmented = ScanDataset(cohort, config=_config(), exclude_unlabeled=True, augment=Augmentation(flip_axes=(2,), flip_probability=1.0, rot90_probability=0.0))
    original = torch.from_numpy(fake_chest(cohort, "P0000-S0", None).array).unsqueeze(0)

    assert torch.equal(plain[0]["image"], original)
    assert not torch.equal(augmented[0]["image"], original)


def test_epochs_change_augmentation(patched_loader, cohort):
    dataset = ScanDataset(cohort, config=_config(), augment=True, seed=5, exclude_unlabeled=True)
    first = [dataset[i]["image"] for i in range(len(dataset))]
    dataset.set_epoch(1)
    second = [dataset[i]["image"] for i in range(len(dataset))]
    dataset.set_epoch(0)
    again = [dataset[i]["image"] for i in range(len(dataset))]

    assert all(torch.equal(a, b) for a, b in zip(first, again))
    assert not all(torch.equal(a, b) for a, b in zip(first, second))


def _epoch_images(loader, dataset, epoch):
    dataset.set_epoch(epoch)
    images, ids = [], []
    for batch in loader:
        images.append(batch["image"])
        ids.extend(batch["series_id"])
    return torch.cat(images), ids


@NEEDS_FORK
def test_two_workers_batches_and_identical_epochs(patched_loader, cohort):
    dataset = ScanDataset(cohort, config=_config(), augment=True, seed=9, exclude_unlabeled=True)
    serial = DataLoader(dataset, batch_size=4, num_workers=0, collate_fn=collate)
    workers = DataLoader(
        dataset, batch_size=4, num_workers=2, persistent_workers=True, collate_fn=collate
    )

    batch = next(iter(workers))
    assert batch["image"].shape == (4, 1, *SHAPE_ZYX)
    assert batch["image"].dtype == torch.float32
    assert batch["label"].shape == (4,)
    assert batch["label"].dtype == torch.int64
    assert batch["spacing"].shape == (4, 3)
    assert isinstance(batch["patient_id"], list)

    reference, reference_ids = _epoch_images(serial, dataset, 0)
    first, first_ids = _epoch_images(workers, dataset, 0)
    second, _ = _epoch_images(workers, dataset, 0)
    next_epoch, _ = _epoch_images(workers, dataset, 1)
    serial_next, _ = _epoch_images(serial, dataset, 1)

    assert first_ids == reference_ids
    assert torch.equal(first, reference)
    assert torch.equal(second, reference)
    assert torch.equal(next_epoch, serial_next)
    assert not torch.equal(next_epoch, reference)


@NEEDS_FORK
def test_distributed_sampler_shards(patched_loader, cohort):
    dataset = ScanDataset(cohort, config=_config(), exclude_unlabeled=True)
    seen: list[str] = []
    for rank in range(2):
        sampler = DistributedSampler(dataset, num_replicas=2, rank=rank, shuffle=True, seed=4)
        sampler.set_epoch(0)
        loader = DataLoader(dataset, batch_size=2, sampler=sampler, num_workers=2, collate_fn=collate)
        shard = [sid for batch in loader for sid in batch["series_id"]]
        assert len(shard) == 5
        seen.extend(shard)

    assert sorted(seen) == sorted(record.series_id for record in dataset.records)


# --- samplers and collate -----------------------------------------------------------------


class _Labels:
    def __init__(self, labels):
        self.labels = labels

    def __len__(self):
        return len(self.labels)


def test_class_balanced_sampler_balances():
    labels = [0] * 90 + [1] * 10
    sampler = class_balanced_sampler(_Labels(labels), seed=1, num_samples=4000)
    drawn = Counter(labels[index] for index in sampler)

    assert abs(drawn[1] / 4000 - 0.5) < 0.05
    assert list(class_balanced_sampler(_Labels(labels), seed=1)) == list(class_balanced_sampler(_Labels(labels), seed=1))
    assert list(class_balanced_sampler(_Labels(labels), seed=1)) != list(class_balanced_sampler(_Labels(labels), seed=2))


def test_class_balanced_sampler_on_scans(patched_loader, cohort):
    dataset = ScanDataset(cohort, config=_config(), exclude_unlabeled=True)
    sampler = class_balanced_sampler(dataset, seed=0, num_samples=2000)
    drawn = Counter(dataset.labels[index] for index in sampler)

    assert abs(drawn[1] / 2000 - 0.5) < 0.05


def test_class_balanced_sampler_rejects_empty():
    with pytest.raises(LabelError, match="empty"):
        class_balanced_sampler(_Labels([]))


def test_collate_keeps_strings():
    batch = collate(
        [
            {"image": torch.zeros(1, 2, 2, 2), "label": torch.tensor(1), "series_id": "a", "index": 0},
            {"image": torch.ones(1, 2, 2, 2), "label": torch.tensor(0), "series_id": "b", "index": 1},
        ]
    )

    assert batch["image"].shape == (2, 1, 2, 2, 2)
    assert batch["label"].tolist() == [1, 0]
    assert batch["series_id"] == ["a", "b"]
    assert batch["index"].tolist() == [0, 1]


# --- nodule patches -----------------------------------------------------------------------


def test_nodule_patches_cached(patched_loader, cohort, tmp_path):
    cache = PreprocessCache(tmp_path / "cache")
    config = PreprocessConfig(name="test", target_shape_zyx=None)
    dataset = NoduleDataset(cohort, config=config, cache=cache, patch_size_mm=12.0, patch_shape_zyx=(8, 8, 8))
    sample = dataset[0]

    assert len(dataset) == len(cohort.nodules)
    assert sample["image"].shape == (1, 8, 8, 8)
    assert sample["label"].item() == 0
    assert sample["is_nodule"].item() is True
    assert sample["center_xyz_mm"].tolist() == list(cohort.nodules[0].coord_xyz_mm)
    assert sample["spacing"].tolist() == pytest.approx([1.5, 1.5, 1.5])
    entries = cache.info().entries
    assert torch.equal(dataset[0]["image"], sample["image"])
    assert cache.info().entries == entries
    assert Counter(dataset.labels) == {0: 8, 1: 4}


def test_negative_patches_avoid_nodules(patched_loader, cohort, tmp_path):
    cache = PreprocessCache(tmp_path / "cache")
    config = PreprocessConfig(name="test", target_shape_zyx=None)
    dataset = NoduleDataset(
        cohort, config=config, cache=cache, patch_size_mm=6.0, patch_shape_zyx=(4, 4, 4), negatives_per_scan=2, seed=1
    )
    negatives = [index for index in range(len(dataset)) if not dataset.specs[index].is_nodule]

    assert len(negatives) == 2 * len(cohort.series)
    first = dataset[negatives[0]]
    assert first["label"].item() == 0
    assert first["is_nodule"].item() is False
    nodule = np.asarray(cohort.nodules[0].coord_xyz_mm)
    distance = np.linalg.norm(first["center_xyz_mm"].numpy() - nodule)
    assert distance > 4.0 + 0.5 * np.linalg.norm([6.0] * 3)
    assert torch.equal(dataset[negatives[0]]["center_xyz_mm"], first["center_xyz_mm"])


def test_negative_patches_need_window(cohort):
    config = PreprocessConfig(name="z", normalisation="zscore_foreground", target_shape_zyx=None)
    with pytest.raises(ConfigError, match="normalisation='window'"):
        NoduleDataset(cohort, config=config, negatives_per_scan=1)


# --- through a real synthetic release and the real cache ----------------------------------


@pytest.fixture(scope="module")
def synthetic_release(tmp_path_factory):
    from tunisian_lung.dataset import open_dataset
    from tunisian_lung.synthetic import write_synthetic_release

    base = tmp_path_factory.mktemp("synthetic")
    root = write_synthetic_release(base / "release", patients=8, seed=0, slices=24, rows=48)
    return open_dataset(root), PreprocessCache(base / "cache")


@NEEDS_FORK
def test_release_split_to_loader(synthetic_release):
    dataset, cache = synthetic_release
    splits = make_splits(dataset, ratios=(0.5, 0.25, 0.25), seed=0)
    splits.save(dataset.root / "splits.json")
    train = dataset.split("train")
    scans = train.to_torch(
        task="scan", config=PreprocessConfig(name="small", target_shape_zyx=(16, 32, 32)), cache=cache, augment=True
    )
    loader = DataLoader(scans, batch_size=2, num_workers=2, collate_fn=collate)

    assert {record.patient_id for record in scans.records} == set(splits.patient_ids("train"))
    assert pickle.loads(pickle.dumps(scans)).labels == scans.labels
    first, ids = _epoch_images(loader, scans, 0)
    again, _ = _epoch_images(loader, scans, 0)
    assert first.shape == (4, 1, 16, 32, 32)
    assert ids == [record.series_id for record in scans.records]
    assert torch.equal(first, again)
    assert float(first.min()) >= -1.0
    assert float(first.max()) <= 1.0


def test_release_nodule_patches(synthetic_release):
    dataset, cache = synthetic_release
    patches = NoduleDataset(dataset, cache=cache, patch_size_mm=24.0, patch_shape_zyx=(12, 12, 12), negatives_per_scan=1)
    nodule = patches[0]
    negative_index = next(index for index, spec in enumerate(patches.specs) if not spec.is_nodule)
    negative = patches[negative_index]

    assert nodule["image"].shape == (1, 12, 12, 12)
    assert nodule["label"].item() == dataset.nodules[0].label
    assert negative["label"].item() == 0
    # A nodule patch is centred on soft tissue, a negative patch on lung parenchyma.
    assert nodule["image"][0, 6, 6, 6] > negative["image"][0, 6, 6, 6]


# --- labels of partly annotated data ------------------------------------------------------


def test_unlabeled_nodule_labels(cohort):
    from dataclasses import replace

    from tunisian_lung.labels import nodule_records, series_label_table

    nodules = list(cohort.nodules)
    nodules[0] = replace(nodules[0], label=None)
    cohort.nodules = tuple(nodules)
    table = series_label_table(cohort, cohort.series)

    assert table.loc[0, "malignant_nodule"] is pd.NA
    assert table["malignant_nodule"].dtype == "Int64"
    with pytest.raises(LabelError, match="1 nodules have no benign/malignant class: series P0000-S0"):
        nodule_records(cohort, cohort.nodules)
    assert len(nodule_records(cohort, cohort.nodules, exclude_unlabeled=True)) == len(nodules) - 1


@pytest.mark.slow
def test_spawn_workers_follow_set_epoch(synthetic_release):
    dataset, cache = synthetic_release
    scans = ScanDataset(
        dataset, config=PreprocessConfig(name="tiny", target_shape_zyx=(8, 16, 16)), cache=cache, augment=True, seed=2
    )
    loader = DataLoader(
        scans, batch_size=2, num_workers=2, persistent_workers=True, multiprocessing_context="spawn", collate_fn=collate
    )
    for epoch in (0, 1):
        scans.set_epoch(epoch)
        expected = torch.stack([scans[index]["image"] for index in range(len(scans))])
        loaded = torch.cat([batch["image"] for batch in loader])
        assert torch.equal(loaded, expected)


def test_scan_default_augmentation_keeps_orientation():
    # Whole scans must not be turned upside down: the default keeps the table at the back.
    from tunisian_lung.torch_data import scan_augmentation

    augmentation = scan_augmentation()

    assert augmentation.flip_axes == (2,)
    assert augmentation.rot90_probability == 0.0
    assert 0.0 < augmentation.max_rotation_degrees <= 15.0


def test_nodule_default_augmentation_is_full():
    from tunisian_lung.preprocess import Augmentation
    from tunisian_lung.torch_data import _resolve_augmentation

    assert _resolve_augmentation(True, whole_scan=False) == Augmentation()
    assert _resolve_augmentation(True, whole_scan=True) != Augmentation()
