"""LIDC-IDRI import: XML parsing, contour geometry, reader grouping, classes and the release written."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tunisian_lung.cli import EXIT_OK, EXIT_USAGE, main
from tunisian_lung.errors import SourceImportError
from tunisian_lung.importers import import_lidc
from tunisian_lung.importers._dicom_headers import scan_dicom_headers
from tunisian_lung.importers.lidc import (
    LidcImportConfig,
    MalignancyMapping,
    MarkMeasurement,
    ReaderMark,
    SliceLookup,
    group_marks,
    measure_mark,
    parse_lidc_xml,
)
from tunisian_lung.manifest import read_manifest, verify_files

SERIES_UID = "1.3.6.1.4.1.14519.5.2.1.6279.6001.179049373636438705059720603192"


@pytest.fixture(scope="module")
def lidc_release(lidc_0001_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The real LIDC-IDRI-0001 case imported once through the command line."""
    out = tmp_path_factory.mktemp("lidc") / "release"
    code = main(["import", "lidc", "--dicom", str(lidc_0001_dir), "--xml", str(lidc_0001_dir), "--out", str(out)])
    assert code == EXIT_OK
    return out


@pytest.fixture(scope="module")
def luna16_centre(lidc_0001_dir: Path) -> np.ndarray:
    row = pd.read_csv(lidc_0001_dir / "annotations_luna16.csv", dtype={"seriesuid": str}).iloc[0]
    return row[["coordX", "coordY", "coordZ"]].to_numpy(dtype=float)


@pytest.fixture(scope="module")
def series_lookup(lidc_0001_dir: Path) -> SliceLookup:
    return SliceLookup(scan_dicom_headers(lidc_0001_dir)[SERIES_UID])


# --- parsing ---------------------------------------------------------------------------------


def test_parse_real_xml_counts(lidc_0001_dir: Path) -> None:
    message = parse_lidc_xml(lidc_0001_dir / "069.xml")
    assert message is not None
    assert message.series_uid == SERIES_UID
    assert message.session_count == 4
    kinds = [mark.kind for mark in message.marks]
    assert kinds.count("nodule") == 4
    assert kinds.count("small_nodule") == 9
    assert kinds.count("non_nodule") == 4 + 1 + 8 + 0


def test_parse_reads_characteristics(lidc_0001_dir: Path) -> None:
    message = parse_lidc_xml(lidc_0001_dir / "069.xml")
    assert message is not None
    first = next(mark for mark in message.marks if mark.kind == "nodule")
    assert first.characteristics == {
        "subtlety": 5,
        "internalStructure": 1,
        "calcification": 6,
        "sphericity": 3,
        "margin": 3,
        "lobulation": 3,
        "spiculation": 4,
        "texture": 5,
        "malignancy": 5,
    }
    assert first.rois[0].points_colrow[0].tolist() == [312.0, 355.0]


def test_parse_without_namespace(tmp_path: Path) -> None:
    xml = tmp_path / "plain.xml"
    xml.write_text(
        "<LidcReadMessage><ResponseHeader><SeriesInstanceUid>1.2.3</SeriesInstanceUid></ResponseHeader>"
        "<readingSession><servicingRadiologistID>r1</servicingRadiologistID>"
        "<unblindedReadNodule><noduleID>n1</noduleID><roi><imageZposition>-10</imageZposition>"
        "<imageSOP_UID>9.9</imageSOP_UID><inclusion>TRUE</inclusion>"
        "<edgeMap><xCoord>4</xCoord><yCoord>5</yCoord></edgeMap></roi></unblindedReadNodule>"
        "</readingSession></LidcReadMessage>"
    )
    message = parse_lidc_xml(xml)
    assert message is not None
    assert message.series_uid == "1.2.3"
    assert [mark.kind for mark in message.marks] == ["small_nodule"]
    assert message.marks[0].reader_id == "r1"


def test_parse_skips_radiograph_xml(tmp_path: Path) -> None:
    xml = tmp_path / "cxr.xml"
    xml.write_text("<IdriReadMessage><ResponseHeader/></IdriReadMessage>")
    assert parse_lidc_xml(xml) is None


def test_parse_rejects_broken_xml(tmp_path: Path) -> None:
    xml = tmp_path / "broken.xml"
    xml.write_text("<LidcReadMessage><ResponseHeader>")
    with pytest.raises(SourceImportError, match="not well-formed"):
        parse_lidc_xml(xml)


# --- geometry --------------------------------------------------------------------------------


def test_reader_centres_near_luna16(lidc_0001_dir: Path, series_lookup: SliceLookup, luna16_centre: np.ndarray) -> None:
    message = parse_lidc_xml(lidc_0001_dir / "069.xml")
    assert message is not None
    outlines = [mark for mark in message.marks if mark.kind == "nodule"]
    for mark in outlines:
        measurement = measure_mark(mark, series_lookup)
        assert measurement is not None
        distance = float(np.linalg.norm(np.asarray(measurement.centre_xyz_mm) - luna16_centre))
        assert distance < 1.5, f"session {mark.session_index} centre {measurement.centre_xyz_mm} is {distance:.2f} mm away"
        assert 20.0 < measurement.equivalent_diameter_mm < 30.0
        assert 25.0 < measurement.max_inplane_diameter_mm < 40.0


def _mark_with_rois(mark: ReaderMark, **changes: object) -> ReaderMark:
    rois = tuple(type(roi)(**{**roi.__dict__, **changes}) for roi in mark.rois)
    return ReaderMark(**{**mark.__dict__, "rois": rois})


def test_contour_falls_back_to_z(lidc_0001_dir: Path, series_lookup: SliceLookup) -> None:
    message = parse_lidc_xml(lidc_0001_dir / "069.xml")
    assert message is not None
    mark = next(mark for mark in message.marks if mark.kind == "nodule")
    by_uid = measure_mark(mark, series_lookup)
    by_z = measure_mark(_mark_with_rois(mark, sop_instance_uid="1.2.3.unknown"), series_lookup)
    assert by_uid is not None and by_z is not None
    assert by_z.centre_xyz_mm == pytest.approx(by_uid.centre_xyz_mm)
    assert by_z.volume_mm3 == pytest.approx(by_uid.volume_mm3)


def test_unplaceable_contour_strict_and_lenient(lidc_0001_dir: Path, series_lookup: SliceLookup) -> None:
    message = parse_lidc_xml(lidc_0001_dir / "069.xml")
    assert message is not None
    mark = next(mark for mark in message.marks if mark.kind == "nodule")
    lost = _mark_with_rois(mark, sop_instance_uid="1.2.3.unknown", z_position_mm=500.0)
    with pytest.raises(SourceImportError, match="z = 500.0 mm"):
        measure_mark(lost, series_lookup)
    assert measure_mark(lost, series_lookup, strict=False) is None


# --- grouping and classes --------------------------------------------------------------------


def _point_mark(session: int, centre: tuple[float, float, float], malignancy: int | None = None):
    ratings = {} if malignancy is None else {"malignancy": malignancy}
    mark = ReaderMark(Path("x.xml"), "1.2", session, f"r{session}", f"m{session}", "nodule", ratings, ())
    nan = float("nan")
    return mark, MarkMeasurement(centre, nan, 10.0, 12.0, 3)


def test_group_marks_by_distance() -> None:
    marks = [
        _point_mark(1, (0.0, 0.0, 0.0)),
        _point_mark(2, (3.0, 0.0, 0.0)),
        _point_mark(3, (0.0, 0.0, 9.0)),
    ]
    groups = group_marks(marks, group_distance_mm=5.0)
    assert [sorted(group.readers) for group in groups] == [[1, 2], [3]]
    wide = group_marks(marks, group_distance_mm=10.0)
    assert [sorted(group.readers) for group in wide] == [[1, 2, 3]]


def test_group_marks_one_mark_per_reader() -> None:
    marks = [_point_mark(1, (0.0, 0.0, 0.0)), _point_mark(1, (1.0, 0.0, 0.0))]
    groups = group_marks(marks, group_distance_mm=5.0)
    assert len(groups) == 2


def test_group_median_malignancy() -> None:
    marks = [_point_mark(1, (0.0, 0.0, 0.0), 2), _point_mark(2, (1.0, 0.0, 0.0), 3)]
    (group,) = group_marks(marks, group_distance_mm=5.0)
    assert group.median_malignancy() == 2.5
    assert group.diameter_mm("max_inplane") == 12.0


@pytest.mark.parametrize(
    ("median", "expected"),
    [(1.0, "benign"), (2.0, "benign"), (2.5, "benign"), (3.0, "indeterminate"), (3.5, "malignant"), (5.0, "malignant"), (None, "unrated")],
)
def test_default_malignancy_mapping(median: float | None, expected: str) -> None:
    assert MalignancyMapping().classify(median) == expected


def test_custom_malignancy_mapping() -> None:
    mapping = MalignancyMapping(benign_max=3.0, malignant_min=4.0)
    assert mapping.classify(3.0) == "benign"
    assert mapping.classify(3.5) == "indeterminate"
    assert mapping.classify(4.0) == "malignant"


def test_invalid_config_rejected() -> None:
    with pytest.raises(SourceImportError, match="benign_max"):
        MalignancyMapping(benign_max=4.0, malignant_min=3.0)
    with pytest.raises(SourceImportError, match="group_distance_mm"):
        LidcImportConfig(group_distance_mm=0.0)


# --- the release -----------------------------------------------------------------------------


def test_release_one_malignant_nodule(lidc_release: Path, luna16_centre: np.ndarray) -> None:
    annotations = pd.read_csv(lidc_release / "annotations.csv", dtype={"patient_id": str, "series_id": str})
    assert len(annotations) == 1
    row = annotations.iloc[0]
    assert row["patient_id"] == "LIDC-IDRI-0001"
    assert row["series_id"] == SERIES_UID
    assert row["nodule_present"] == 1
    assert row["class"] == 1
    assert pd.isna(row["stage"])
    centre = row[["coordX", "coordY", "coordZ"]].to_numpy(dtype=float)
    assert np.linalg.norm(centre - luna16_centre) < 1.5
    assert 20.0 < row["diameter_mm"] < 30.0


def test_release_grouped_nodule_table(lidc_release: Path) -> None:
    nodules = pd.read_csv(lidc_release / "lidc_nodules.csv")
    outlined = nodules[nodules["label"] != "small_nodule"]
    assert len(outlined) == 1
    nodule = outlined.iloc[0]
    assert nodule["num_readers"] == 4
    assert nodule["num_outlining_readers"] == 4
    assert nodule["malignancy_median"] == 5.0
    assert nodule["label"] == "malignant"
    assert bool(nodule["in_annotations"])


def test_release_reports_small_nodules(lidc_release: Path) -> None:
    nodules = pd.read_csv(lidc_release / "lidc_nodules.csv")
    small = nodules[nodules["label"] == "small_nodule"]
    assert len(small) == 3
    assert small["num_readers"].tolist() == [3, 3, 3]
    assert not small["in_annotations"].any()
    assert small["diameter_mm"].isna().all()
    expected = np.array([(-34.0, -55.0, -150.0), (117.5, 19.8, -175.0), (109.6, 51.0, -175.0)])
    centres = small[["coordX", "coordY", "coordZ"]].to_numpy(dtype=float)
    for point in expected:
        nearest = np.linalg.norm(centres - point, axis=1).min()
        assert nearest < 1.5, f"no small nodule near {point.tolist()}"


def test_release_reader_table(lidc_release: Path) -> None:
    readers = pd.read_csv(lidc_release / "readers.csv", dtype={"reader_id": str})
    assert len(readers) == 26
    outlines = readers[readers["kind"] == "nodule"]
    assert sorted(outlines["malignancy"].tolist()) == [4, 5, 5, 5]
    assert outlines["nodule_index"].nunique() == 1
    assert readers.loc[readers["kind"] == "non_nodule", "nodule_index"].isna().all()
    assert set(readers["reading_session"]) == {1, 2, 3, 4}


def test_release_manifest(lidc_release: Path) -> None:
    manifest = read_manifest(lidc_release)
    assert manifest.license == "CC-BY-3.0"
    assert manifest.citation is not None
    assert "10.7937/K9/TCIA.2015.LO9QL9SX" in manifest.citation
    assert manifest.source is not None
    assert manifest.source["collection"] == "LIDC-IDRI"
    assert dict(manifest.counts) == {"patients": 1, "series": 1, "nodules": 1}
    assert verify_files(lidc_release, manifest).ok
    copied = list((lidc_release / "dicom" / "LIDC-IDRI-0001" / SERIES_UID).glob("*.dcm"))
    assert len(copied) == 133


def test_release_leaves_no_temporary_folder(lidc_release: Path) -> None:
    leftovers = [path.name for path in lidc_release.parent.iterdir() if path.name.startswith(".")]
    assert leftovers == []


def test_existing_output_rejected(lidc_release: Path, lidc_0001_dir: Path) -> None:
    before = json.loads((lidc_release / "dataset.json").read_text())
    code = main(["import", "lidc", "--dicom", str(lidc_0001_dir), "--xml", str(lidc_0001_dir), "--out", str(lidc_release)])
    assert code == 1
    assert json.loads((lidc_release / "dataset.json").read_text()) == before


def test_no_matching_series(tmp_path: Path, lidc_0001_dir: Path) -> None:
    xml_dir = tmp_path / "xml"
    xml_dir.mkdir()
    text = (lidc_0001_dir / "069.xml").read_text().replace(SERIES_UID, "1.2.3.4")
    (xml_dir / "other.xml").write_text(text)
    with pytest.raises(SourceImportError, match="no DICOM series"):
        import_lidc(lidc_0001_dir, xml_dir, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_cli_without_source_is_usage_error() -> None:
    assert main(["import"]) == EXIT_USAGE


def test_measure_square_prism() -> None:
    """A 10-pixel square outline on 4 slices of 1 mm pixels and 2 mm spacing: volume is known."""
    from tunisian_lung.importers._dicom_headers import SeriesHeaders, SliceHeader
    from tunisian_lung.importers.lidc import RoiContour

    slices = [
        SliceHeader(Path(f"{k}.dcm"), f"uid{k}", (0.0, 0.0, 2.0 * k), (1.0, 0.0, 0.0), (0.0, 1.0, 0.0), 1.0, 1.0)
        for k in range(6)
    ]
    lookup = SliceLookup(SeriesHeaders("1.2", "p", "CT", slices))
    square = np.array([(10, 10), (19, 10), (19, 19), (10, 19)], dtype=float)
    rois = tuple(RoiContour(f"uid{k}", 2.0 * k, True, square) for k in range(1, 5))
    mark = ReaderMark(Path("x.xml"), "1.2", 1, "r", "n", "nodule", {"malignancy": 3}, rois)
    measurement = measure_mark(mark, lookup)
    assert measurement is not None
    assert measurement.volume_mm3 == pytest.approx(10 * 10 * 4 * 2.0)
    assert measurement.equivalent_diameter_mm == pytest.approx((6 * 800.0 / math.pi) ** (1 / 3))
    assert measurement.centre_xyz_mm == pytest.approx((14.5, 14.5, 5.0))
    assert measurement.max_inplane_diameter_mm == pytest.approx(9 * math.sqrt(2))
