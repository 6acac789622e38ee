"""Tests of patient-level splits, k-fold, splits.json and the split CLI."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from collections import Counter
from fractions import Fraction
from pathlib import Path

import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from split_fixtures import HISTOLOGIES, STAGES, make_fake_dataset, reference_like_statuses
from tunisian_lung.errors import SplitError
from tunisian_lung.splits import (
    load_splits,
    make_folds,
    make_splits,
    patient_list_sha256,
)

TESTS_DIR = Path(__file__).resolve().parent

patient_status = st.one_of(
    st.just(("healthy", None, None)),
    st.tuples(st.just("cancer"), st.sampled_from(HISTOLOGIES), st.sampled_from(STAGES)),
    st.just((None, None, None)),
)
ratio_sets = st.sampled_from(
    [(0.7, 0.15, 0.15), (0.8, 0.1, 0.1), (0.6, 0.2, 0.2), (0.5, 0.5), (1 / 3, 1 / 3, 1 / 3), (0.9, 0.1, 0.0)]
)


def _names_for(ratios: tuple[float, ...]) -> tuple[str, ...]:
    return ("train", "val", "test")[: len(ratios)] if len(ratios) <= 3 else tuple(f"s{i}" for i in range(len(ratios)))


def _exact(ratios: tuple[float, ...]) -> list[Fraction]:
    fractions = [Fraction(r).limit_denominator(1_000_000) for r in ratios]
    total = sum(fractions)
    return [f / total for f in fractions]


# --- properties ---------------------------------------------------------------------------


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(statuses=st.lists(patient_status, min_size=1, max_size=160), seed=st.integers(0, 2**32), ratios=ratio_sets)
def test_splits_disjoint_and_complete(statuses, seed, ratios):
    dataset = make_fake_dataset(statuses)
    names = _names_for(ratios)
    splits = make_splits(dataset, seed=seed, ratios=ratios, names=names)

    assert sorted(splits.assignment) == sorted(dataset.patients)
    assert set(splits.assignment.values()) <= set(names)
    members = [set(splits.patient_ids(name)) for name in names]
    for i in range(len(names)):
        for j in range(i + 1, len(names)):
            assert not members[i] & members[j]
    assert sum(splits.counts().values()) == len(statuses)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(statuses=st.lists(patient_status, min_size=1, max_size=160), seed=st.integers(0, 2**32), ratios=ratio_sets)
def test_split_sizes_within_one_of_ratio(statuses, seed, ratios):
    dataset = make_fake_dataset(statuses)
    names = _names_for(ratios)
    counts = make_splits(dataset, seed=seed, ratios=ratios, names=names).counts()
    for name, ratio in zip(names, _exact(ratios)):
        assert abs(counts[name] - len(statuses) * ratio) < 1


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(statuses=st.lists(patient_status, min_size=1, max_size=160), seed=st.integers(0, 2**32), ratios=ratio_sets)
def test_stratum_counts_within_one_of_target(statuses, seed, ratios):
    dataset = make_fake_dataset(statuses)
    names = _names_for(ratios)
    splits = make_splits(dataset, seed=seed, ratios=ratios, names=names)

    stratum_sizes = Counter(splits.strata.values())
    per_split = splits.stratum_counts()
    for stratum, size in stratum_sizes.items():
        for name, ratio in zip(names, _exact(ratios)):
            observed = per_split[name].get(stratum, 0)
            assert abs(observed - size * ratio) < 1, (stratum, name, observed, size, ratio)


@settings(max_examples=60, deadline=None)
@given(statuses=st.lists(patient_status, min_size=2, max_size=80), seed=st.integers(0, 2**32), k=st.integers(2, 6))
def test_folds_partition_patients(statuses, seed, k):
    dataset = make_fake_dataset(statuses)
    if k > len(statuses):
        with pytest.raises(SplitError, match="folds"):
            make_folds(dataset, k=k, seed=seed)
        return
    folds = make_folds(dataset, k=k, seed=seed)

    sizes = list(folds.counts().values())
    assert len(sizes) == k
    assert max(sizes) - min(sizes) <= 1
    val_union: set[str] = set()
    for fold in folds.folds():
        train, val = set(fold.patient_ids("train")), set(fold.patient_ids("val"))
        assert not train & val
        assert train | val == set(dataset.patients)
        assert not val & val_union
        val_union |= val
    assert val_union == set(dataset.patients)


# --- determinism --------------------------------------------------------------------------


def test_same_seed_same_assignment():
    dataset = make_fake_dataset(reference_like_statuses())
    first = make_splits(dataset, seed=7)
    second = make_splits(dataset, seed=7)
    other = make_splits(dataset, seed=8)

    assert first.assignment == second.assignment
    assert first.to_json_dict() == second.to_json_dict()
    assert first.assignment != other.assignment


def test_assignment_ignores_patient_order():
    statuses = reference_like_statuses()
    dataset = make_fake_dataset(statuses)
    reordered = make_fake_dataset(statuses)
    reordered.patients = dict(reversed(list(reordered.patients.items())))

    assert make_splits(dataset, seed=3).assignment == make_splits(reordered, seed=3).assignment


_SUBPROCESS_SCRIPT = """
import json, sys
sys.path.insert(0, {tests!r})
from split_fixtures import make_fake_dataset, reference_like_statuses
from tunisian_lung.splits import make_splits, make_folds
ds = make_fake_dataset(reference_like_statuses())
print(json.dumps([make_splits(ds, seed=11).assignment, make_folds(ds, k=5, seed=11).assignment]))
"""


def test_assignment_same_across_hash_seeds():
    dataset = make_fake_dataset(reference_like_statuses())
    expected = [make_splits(dataset, seed=11).assignment, make_folds(dataset, k=5, seed=11).assignment]
    script = _SUBPROCESS_SCRIPT.format(tests=str(TESTS_DIR))
    for hash_seed in ("0", "4242"):
        env = {**os.environ, "PYTHONHASHSEED": hash_seed}
        output = subprocess.run(
            [sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True
        ).stdout
        assert json.loads(output) == expected


def test_assignment_digest_pinned():
    # Pins the algorithm: a change to the ordering or rounding rules changes every user's splits,
    # so it must be deliberate (and released as a new splits.json format version).
    dataset = make_fake_dataset(reference_like_statuses())
    text = json.dumps(make_splits(dataset, seed=0).assignment, sort_keys=True)

    assert hashlib.sha256(text.encode()).hexdigest() == PINNED_DIGEST


# sha256 of the seed-0 assignment of the 123-patient test cohort, computed once with this code.
PINNED_DIGEST = "e67861243c064237dc67d19afdf0050480160eae6791a6ed91a7c194f91e5251"


# --- small strata and stratification ------------------------------------------------------


def test_small_stratum_joins_largest_sibling():
    statuses = [("healthy", None, None)] * 20 + [("cancer", "adenocarcinoma", "I")] * 20
    statuses += [("cancer", "squamous cell carcinoma", "II")] * 5 + [("cancer", "small cell lung cancer", "IV")]
    splits = make_splits(make_fake_dataset(statuses))

    assert splits.strata["P0045"] == "cancer / adenocarcinoma"
    assert splits.strata["P0000"] == "healthy / unknown"
    assert splits.strata["P0040"] == "cancer / squamous cell carcinoma"


def test_small_strata_merge_by_status():
    statuses = [("healthy", None, None)] * 20 + [("cancer", "other", "II"), ("cancer", "small cell lung cancer", "I")]
    statuses += [("cancer", "adenocarcinoma", "III")]
    splits = make_splits(make_fake_dataset(statuses))

    assert {splits.strata[pid] for pid in ("P0020", "P0021", "P0022")} == {"cancer"}


def test_small_known_status_keeps_stratum():
    # Two cancer patients among 30 healthy stay a "cancer" stratum, and the patient of unknown
    # status joins the largest stratum.
    statuses = [("healthy", None, None)] * 30 + [("cancer", "other", "II")] * 2 + [(None, None, None)]
    splits = make_splits(make_fake_dataset(statuses))

    assert splits.strata["P0030"] == "cancer"
    assert splits.strata["P0031"] == "cancer"
    assert splits.strata["P0032"] == "healthy / unknown"
    for name, ratio in zip(("train", "val", "test"), (0.70, 0.15, 0.15)):
        cancer = len({"P0030", "P0031"} & set(splits.patient_ids(name)))
        assert abs(cancer - 2 * ratio) < 1, f"{name} has {cancer} cancer patients"


def test_lone_unknown_joins_largest_stratum():
    statuses = [("healthy", None, None)] * 30 + [("cancer", "other", "II")] * 10 + [(None, None, None)]
    splits = make_splits(make_fake_dataset(statuses))

    assert splits.strata["P0040"] == "healthy / unknown"


def test_stratify_on_stage():
    dataset = make_fake_dataset(reference_like_statuses())
    splits = make_splits(dataset, stratify=("health_status", "stage"))

    assert "cancer / IV" in set(splits.strata.values())
    for name, counts in splits.stratum_counts().items():
        assert counts["healthy / unknown"] >= 5


def test_no_stratification():
    splits = make_splits(make_fake_dataset(reference_like_statuses()), stratify=())

    assert splits.strategy == "random"
    assert set(splits.strata.values()) == {"pooled"}


def test_unknown_column_rejected():
    with pytest.raises(SplitError, match="'smoking'"):
        make_splits(make_fake_dataset(reference_like_statuses()), stratify=("smoking",))


@pytest.mark.parametrize(
    ("ratios", "message"),
    [
        ((0.7, 0.2, 0.2), "sum to 1"),
        ((0.7, 0.3), "one ratio per split"),
        ((1.2, -0.1, -0.1), "non-negative"),
        ((float("nan"), 0.5, 0.5), "non-negative"),
    ],
)
def test_invalid_ratios_rejected(ratios, message):
    with pytest.raises(SplitError, match=message):
        make_splits(make_fake_dataset(reference_like_statuses()), ratios=ratios)


def test_invalid_seed_rejected():
    with pytest.raises(SplitError, match="seed"):
        make_splits(make_fake_dataset(reference_like_statuses()), seed=-1)


def test_empty_dataset_rejected():
    with pytest.raises(SplitError, match="no patients"):
        make_splits(make_fake_dataset([]))


# --- site hold-out ------------------------------------------------------------------------


def _two_site_dataset():
    statuses = reference_like_statuses()
    sites = ["LIDC" if number % 5 == 0 else "Tunis" for number in range(len(statuses))]
    return make_fake_dataset(statuses, sites=sites)


def test_holdout_site_goes_to_test():
    dataset = _two_site_dataset()
    splits = make_splits(dataset, holdout={"site": "LIDC"})
    lidc = {pid for pid, site in zip(dataset.clinical["patient_id"], dataset.clinical["site"]) if site == "LIDC"}

    assert set(splits.patient_ids("test")) == lidc
    assert not lidc & set(splits.patient_ids("train"))
    rest = len(dataset.patients) - len(lidc)
    assert abs(len(splits.patient_ids("train")) - rest * 0.7 / 0.85) < 1
    assert splits.holdout == {"site": ("LIDC",)}


def _site_in_annotations_only():
    dataset = _two_site_dataset()
    sites = dict(zip(dataset.clinical["patient_id"], dataset.clinical["site"]))
    rows = [{"patient_id": n.patient_id, "series_id": n.series_id} for n in dataset.nodules]
    annotations = pd.DataFrame(rows)
    annotations["site"] = [sites[row["patient_id"]] for row in rows]
    dataset.clinical = None
    dataset.annotations = annotations  # type: ignore[attr-defined]
    return dataset, sites


def test_holdout_site_from_annotations():
    dataset, sites = _site_in_annotations_only()
    splits = make_splits(dataset, holdout={"site": "LIDC"})

    lidc = {pid for pid, site in sites.items() if site == "LIDC"}
    assert set(splits.patient_ids("test")) == lidc


def test_annotation_site_conflict_rejected():
    dataset, _ = _site_in_annotations_only()
    first = dataset.nodules[0].patient_id
    dataset.annotations.loc[len(dataset.annotations)] = {  # a second row for the first patient
        "patient_id": first, "series_id": dataset.nodules[0].series_id, "site": "Tunis"
    }
    with pytest.raises(SplitError, match=f"several values for patient '{first}'"):
        make_splits(dataset, holdout={"site": "LIDC"})


def test_holdout_matching_nothing_rejected():
    with pytest.raises(SplitError, match="matches no patient.*Tunis"):
        make_splits(_two_site_dataset(), holdout={"site": "Sfax"})


def test_holdout_matching_everyone_rejected():
    with pytest.raises(SplitError, match="every patient"):
        make_splits(_two_site_dataset(), holdout={"site": ["LIDC", "Tunis"]})


def test_folds_with_holdout_site():
    dataset = _two_site_dataset()
    folds = make_folds(dataset, k=4, holdout={"site": "LIDC"})
    fold = folds.fold(2)

    assert folds.names == ("fold-0", "fold-1", "fold-2", "fold-3", "test")
    assert fold.names == ("train", "val", "test")
    assert set(fold.patient_ids("test")) == set(folds.patient_ids("test"))
    assert not set(fold.patient_ids("val")) & set(fold.patient_ids("test"))


# --- splits.json --------------------------------------------------------------------------


def test_save_load_round_trip(tmp_path):
    dataset = make_fake_dataset(reference_like_statuses(), root=tmp_path)
    splits = make_splits(dataset, seed=5)
    path = splits.save(tmp_path / "splits.json")
    loaded = load_splits(dataset)

    assert loaded.assignment == splits.assignment
    assert loaded.names == splits.names
    assert loaded.seed == 5
    assert loaded.ratios == (0.7, 0.15, 0.15)
    assert loaded.stratify == ("health_status", "histology")
    assert loaded.stratum_counts() == splits.stratum_counts()
    assert not list(tmp_path.glob(".splits.json.*"))
    data = json.loads(path.read_text())
    assert data["format_version"] == "1.0"
    assert data["patient_list_sha256"] == patient_list_sha256(dataset.patients)
    assert data["counts"] == splits.counts()
    assert data["patients"] == 123


def test_folds_round_trip(tmp_path):
    dataset = make_fake_dataset(reference_like_statuses())
    folds = make_folds(dataset, k=3, seed=2)
    loaded = load_splits(dataset, folds.save(tmp_path / "folds.json"))

    assert loaded.strategy == "kfold"
    assert loaded.k == 3
    assert loaded.fold(1).assignment == folds.fold(1).assignment


def _write(path: Path, data: dict) -> Path:
    path.write_text(json.dumps(data))
    return path


def test_load_rejects_patient_in_two_splits(tmp_path):
    dataset = make_fake_dataset([("healthy", None, None)] * 4)
    path = _write(
        tmp_path / "splits.json",
        {"splits": {"train": ["P0000", "P0001", "P0002"], "test": ["P0002", "P0003"]}},
    )
    with pytest.raises(SplitError, match="P0002 in train, test"):
        load_splits(dataset, path)


def test_load_rejects_duplicate_assignment_key(tmp_path):
    dataset = make_fake_dataset([("healthy", None, None)] * 3)
    path = tmp_path / "splits.json"
    path.write_text('{"assignment": {"P0000": "train", "P0001": "train", "P0002": "test", "P0001": "test"}}')
    with pytest.raises(SplitError, match="P0001"):
        load_splits(dataset, path)


def test_load_rejects_other_dataset(tmp_path):
    ours = make_fake_dataset(reference_like_statuses())
    theirs = make_fake_dataset(reference_like_statuses(), prefix="Q")
    path = make_splits(theirs).save(tmp_path / "splits.json")

    with pytest.raises(SplitError, match="not in the dataset: Q0000.*another dataset"):
        load_splits(ours, path)


def test_load_rejects_missing_patient(tmp_path):
    dataset = make_fake_dataset([("healthy", None, None)] * 4)
    path = _write(tmp_path / "splits.json", {"assignment": {"P0000": "train", "P0001": "train", "P0002": "test"}})
    with pytest.raises(SplitError, match="in no split: P0003"):
        load_splits(dataset, path)


def test_load_rejects_hash_mismatch(tmp_path):
    dataset = make_fake_dataset([("healthy", None, None)] * 4)
    data = make_splits(dataset, ratios=(0.5, 0.5), names=("train", "test")).to_json_dict()
    data["patient_list_sha256"] = "0" * 64
    with pytest.raises(SplitError, match="patient list sha256 000000000000"):
        load_splits(dataset, _write(tmp_path / "splits.json", data))


def test_load_rejects_future_version(tmp_path):
    dataset = make_fake_dataset([("healthy", None, None)] * 4)
    data = make_splits(dataset, ratios=(0.5, 0.5), names=("train", "test")).to_json_dict()
    data["format_version"] = "9.0"
    with pytest.raises(SplitError, match="format_version '9.0' is not supported"):
        load_splits(dataset, _write(tmp_path / "splits.json", data))


def test_load_rejects_invalid_json(tmp_path):
    path = tmp_path / "splits.json"
    path.write_text("{not json")
    with pytest.raises(SplitError, match="not valid UTF-8 JSON"):
        load_splits(make_fake_dataset([("healthy", None, None)]), path)


def test_load_missing_file_names_fix(tmp_path):
    dataset = make_fake_dataset([("healthy", None, None)], root=tmp_path)
    with pytest.raises(SplitError, match="split file not found.*tunisian-lung split"):
        load_splits(dataset)


def test_unknown_split_name_rejected():
    splits = make_splits(make_fake_dataset(reference_like_statuses()))
    with pytest.raises(SplitError, match="unknown split 'training'.*'train'"):
        splits.split("training")


def test_with_dataset_checks_patients():
    dataset = make_fake_dataset(reference_like_statuses())
    splits = make_splits(dataset)
    other = make_fake_dataset(reference_like_statuses(), prefix="Q")

    assert splits.with_dataset(dataset).split("val").patient_ids == splits.patient_ids("val")
    with pytest.raises(SplitError, match="in no split: Q0000"):
        splits.with_dataset(other)


def test_fold_of_plain_splits_rejected():
    splits = make_splits(make_fake_dataset(reference_like_statuses()))
    with pytest.raises(SplitError, match="make_folds"):
        splits.fold(0)


# --- DatasetSplit and table ---------------------------------------------------------------


def test_dataset_split_views(tmp_path):
    dataset = make_fake_dataset(reference_like_statuses(), series_per_patient=2, root=tmp_path)
    train = make_splits(dataset).split("train")

    assert train.name == "train"
    assert len(train) == 86
    assert {record.patient_id for record in train.series} == set(train.patient_ids)
    assert len(train.series) == 2 * 86
    assert {record.patient_id for record in train.nodules} == set(train.patient_ids)
    assert set(train.dataset.patients) == set(train.patient_ids)

    frame = train.to_pandas()
    assert len(frame) == 2 * 86
    assert set(frame["split"]) == {"train"}
    assert frame["cancer"].sum() == 2 * sum(dataset.patients[pid].health_status == "cancer" for pid in train.patient_ids)
    assert frame["dicom_dir"].str.startswith(str(tmp_path)).all()

    datalist = train.to_datalist()
    assert len(datalist) == 2 * 86
    assert set(datalist[0]) == {"image", "label", "patient_id", "series_id"}
    assert {item["label"] for item in datalist} == {0, 1}

    nodules = train.to_datalist("nodule")
    assert len(nodules) == len(train.nodules)
    assert nodules[0]["center_xyz_mm"] == list(train.nodules[0].coord_xyz_mm)


def test_table_counts_per_split():
    dataset = make_fake_dataset(reference_like_statuses())
    table = make_splits(dataset).table()

    assert list(table.index) == ["train", "val", "test", "all"]
    assert table.loc["all", "patients"] == 123
    assert table.loc["all", "cancer"] == 88
    assert table.loc["all", "healthy"] == 35
    assert table.loc["all", "histology: adenocarcinoma"] == 44
    assert table.loc["all", "stage IV"] == 22
    assert (table.loc[["train", "val", "test"]].sum() == table.loc["all"]).all()


# --- real dataset and command line --------------------------------------------------------


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    from tunisian_lung.synthetic import write_synthetic_release

    return write_synthetic_release(tmp_path_factory.mktemp("split") / "release", patients=10, seed=1, slices=8, rows=32)


def test_open_dataset_split_round_trip(release, tmp_path):
    from tunisian_lung.dataset import open_dataset

    dataset = open_dataset(release)
    splits = make_splits(dataset, ratios=(0.6, 0.2, 0.2), seed=4)
    path = splits.save(tmp_path / "splits.json")
    test = dataset.split("test", path=path)

    assert test.patient_ids == splits.patient_ids("test")
    assert {record.patient_id for record in test.series} == set(test.patient_ids)
    assert len(test.dataset) == len(test.patient_ids)
    with pytest.raises(SplitError, match="does not match the dataset"):
        load_splits(dataset.subset(list(dataset.patients)[:5]), path)


def test_cli_split_writes_cwd(release, tmp_path, monkeypatch, capsys):
    from tunisian_lung.cli import main

    monkeypatch.chdir(tmp_path)
    code = main(["split", str(release), "--seed", "3", "--ratios", "0.6", "0.2", "0.2"])
    output = capsys.readouterr().out

    assert code == 0
    assert (tmp_path / "splits.json").is_file()
    assert not (Path(release) / "splits.json").exists()
    assert f"wrote {tmp_path / 'splits.json'}" in output
    assert "patients" in output
    assert "healthy" in output
    data = json.loads((tmp_path / "splits.json").read_text())
    assert data["seed"] == 3
    assert data["ratios"] == [0.6, 0.2, 0.2]


def test_cli_split_folds_out(release, tmp_path, capsys):
    from tunisian_lung.cli import main

    out = tmp_path / "nested" / "folds.json"
    code = main(["split", str(release), "--folds", "3", "--stratify", "health_status", "--out", str(out)])

    assert code == 0
    data = json.loads(out.read_text())
    assert data["strategy"] == "kfold"
    assert data["names"] == ["fold-0", "fold-1", "fold-2"]
    assert "fold-2" in capsys.readouterr().out


def test_cli_split_usage_errors(release, tmp_path, capsys):
    from tunisian_lung.cli import main

    assert main(["split", str(tmp_path / "missing")]) == 2
    assert main(["split", str(release), "--folds", "3", "--ratios", "0.5", "0.5"]) == 2
    assert main(["split", str(release), "--ratios", "0.5", "0.6", "--out", str(tmp_path / "s.json")]) == 1
    assert "ratios must sum to 1" in capsys.readouterr().err


def test_folds_spread_few_healthy_patients():
    # 4 healthy patients and 5 folds: each fold gets at most one, instead of the healthy
    # patients being merged into the cancer stratum and bunching up.
    statuses = [("healthy", None, None)] * 4 + [("cancer", "adenocarcinoma", "II")] * 16
    dataset = make_fake_dataset(statuses)
    healthy = {pid for pid, patient in dataset.patients.items() if patient.health_status == "healthy"}

    folds = make_folds(dataset, k=5, seed=0)

    per_fold = [len(healthy & set(fold.patient_ids("val"))) for fold in folds.folds()]
    assert sorted(per_fold) == [0, 1, 1, 1, 1]
