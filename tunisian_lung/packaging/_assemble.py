"""The steps of a release build inside its staging folder (see :func:`build.build_release`)."""

from __future__ import annotations

import logging
import re
import shutil
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tunisian_lung import __version__, layout
from tunisian_lung.errors import PackagingError, ValidationError, ValidationIssue
from tunisian_lung.packaging.deid import DeidOptions, burned_in_reason, deidentify_dataset, remap_uid
from tunisian_lung.packaging.quality import (
    NoduleCentre,
    check_volume,
    duplicate_pixel_issues,
    load_series_checked,
    pixel_digest,
)
from tunisian_lung.packaging.tables import rewrite_identifiers

if TYPE_CHECKING:
    from tunisian_lung.packaging.build import ExcludedImage, _RawSeries

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class AssembledRelease:
    """Counts, exclusions and warnings of an assembled staging folder."""

    counts: Mapping[str, int]
    excluded: tuple[ExcludedImage, ...]
    issues: tuple[ValidationIssue, ...]


def _progress(items: list[Any], enabled: bool, desc: str) -> Any:
    if not enabled:
        return items
    from tqdm import tqdm

    return tqdm(items, desc=desc, unit="series")


def _copy_series(
    staging: Path,
    entry: _RawSeries,
    *,
    patient_id: str,
    series_id: str,
    deidentify: bool,
    secret: bytes,
    options: DeidOptions,
    allow_burned_in: bool,
    pixel_hashes: dict[str, list[tuple[str, str]]],
    excluded: list[ExcludedImage],
) -> int:
    """Copy (and de-identify) the files of one series; return the number of files written."""
    from pydicom import dcmread

    from tunisian_lung.packaging.build import ExcludedImage

    folder = layout.series_dicom_dir(staging, patient_id, series_id)
    folder.mkdir(parents=True, exist_ok=True)
    written = 0
    for _, _, source in entry.files:
        ds = dcmread(source)
        reason = burned_in_reason(ds)
        if reason is not None:
            if deidentify and not allow_burned_in:
                excluded.append(ExcludedImage(str(source), reason))
                logger.warning("excluded %s from the release: %s", source, reason)
                continue
            logger.warning("%s may show burned-in identifying text (%s); kept", source, reason)
        written += 1
        target = folder / f"{written:06d}.dcm"
        if "PixelData" in ds:
            digest = pixel_digest(bytes(ds.PixelData))
            if digest is not None:
                relative = str(target.relative_to(staging))
                pixel_hashes[digest].append((patient_id, relative))
        if deidentify:
            deidentify_dataset(ds, pseudonym=patient_id, secret=secret, options=options)
            ds.save_as(target, enforce_file_format=True)
        else:
            shutil.copyfile(source, target)
    if written == 0:
        folder.rmdir()
    return written


def _write_tables(
    staging: Path,
    annotations: Path,
    clinical: Path | None,
    *,
    deidentify: bool,
    patient_map: Mapping[str, str],
    series_map: Mapping[str, str],
) -> None:
    targets = [(annotations, staging / layout.ANNOTATIONS_NAME)]
    if clinical is not None:
        targets.append((clinical, staging / layout.CLINICAL_NAME))
    for source, target in targets:
        if deidentify:
            rewrite_identifiers(source, target, patient_ids=patient_map, series_ids=series_map)
        else:
            shutil.copyfile(source, target)


def _nodule_centres(frame: Any) -> dict[str, list[NoduleCentre]]:
    centres: dict[str, list[NoduleCentre]] = defaultdict(list)
    if "nodule_present" not in frame.columns:
        return centres
    present = frame[frame["nodule_present"] == 1]
    for row in present.itertuples(index=False):
        row_dict = row._asdict()
        centre = (float(row_dict["coordX"]), float(row_dict["coordY"]), float(row_dict["coordZ"]))
        centres[str(row_dict["series_id"])].append(NoduleCentre(str(row_dict["series_id"]), centre, int(row_dict["csv_line"])))
    return centres


def _deep_issues(staging: Path, known: list[ValidationIssue]) -> list[ValidationIssue]:
    """Run the ``validate --deep`` rules on the staged release; drop issues already in ``known``."""
    from tunisian_lung.checks import deep_validate
    from tunisian_lung.dataset import open_dataset

    seen = {(issue.rule, issue.file, issue.line) for issue in known}
    deep = deep_validate(open_dataset(staging))
    return [issue for issue in deep if (issue.rule, issue.file, issue.line) not in seen]


def _source_issues(
    issues: Sequence[ValidationIssue],
    *,
    staging: Path,
    tables: Mapping[str, Path],
    original_ids: Mapping[str, str],
) -> list[ValidationIssue]:
    """Rewrite issues found in the staging folder so that they name the caller's inputs.

    A failed build deletes the staging folder, and a de-identified one contains pseudonyms and
    remapped UIDs that appear nowhere in the caller's files. So each issue names the input
    table in place of the staged copy (``tables`` maps release file name to input path) and
    the original ids in place of the release ids (``original_ids``). Line numbers stay as they
    are, because :func:`rewrite_identifiers` keeps every line of a table in place.
    """
    pattern = None
    if original_ids:
        alternatives = "|".join(re.escape(value) for value in sorted(original_ids, key=len, reverse=True))
        # An id ends where no letter, digit, '-' or '.digit' follows, so TL-0001 does not match inside TL-00011.
        pattern = re.compile(rf"(?<![\w.-])({alternatives})(?![\w-]|\.\d)")

    def translate(text: str) -> str:
        return text if pattern is None else pattern.sub(lambda match: original_ids[match.group(1)], text)

    result = []
    for issue in issues:
        file = issue.file
        if file is not None:
            path = Path(file)
            if path.name in tables and path.parent in (staging, Path()):
                file = str(tables[path.name])
            else:
                if path.is_relative_to(staging):
                    file = str(path.relative_to(staging))
                file = translate(file)
        value = translate(issue.value) if isinstance(issue.value, str) else issue.value
        result.append(replace(issue, file=file, value=value, message=translate(issue.message), fix=translate(issue.fix)))
    return result


def assemble(
    staging: Path,
    *,
    annotated: Mapping[str, _RawSeries],
    skipped: list[str],
    report: Any,
    annotations: Path,
    clinical: Path | None,
    deidentify: bool,
    patient_map: Mapping[str, str],
    secret: bytes,
    options: DeidOptions,
    nifti: bool,
    allow_burned_in: bool,
    allow_quality_errors: bool,
    progress: bool,
    metadata: Mapping[str, Any],
) -> AssembledRelease:
    """Write DICOM, tables, NIfTI, card and ``dataset.json`` into ``staging`` and check them."""
    from tunisian_lung.manifest import Manifest, compute_file_entries, write_manifest
    from tunisian_lung.schema import validate_tables

    excluded: list[ExcludedImage] = []
    pixel_hashes: dict[str, list[tuple[str, str]]] = defaultdict(list)
    series_map = {uid: remap_uid(uid, secret) for uid in annotated} if deidentify else {uid: uid for uid in annotated}
    release_series: list[tuple[str, str]] = []
    files = 0
    for original_uid in _progress(sorted(annotated), progress, "copy series"):
        entry = annotated[original_uid]
        patient_id = patient_map[entry.patient_id] if deidentify else entry.patient_id
        series_id = series_map[original_uid]
        if not deidentify:
            from tunisian_lung.packaging.build import _check_folder_name

            _check_folder_name(patient_id, "PatientID")
            _check_folder_name(series_id, "SeriesInstanceUID")
        count = _copy_series(
            staging, entry, patient_id=patient_id, series_id=series_id, deidentify=deidentify,
            secret=secret, options=options, allow_burned_in=allow_burned_in,
            pixel_hashes=pixel_hashes, excluded=excluded,
        )
        files += count
        if count:
            release_series.append((patient_id, series_id))

    _write_tables(staging, annotations, clinical, deidentify=deidentify, patient_map=patient_map, series_map=series_map)
    tables = {layout.ANNOTATIONS_NAME: annotations}
    if clinical is not None:
        tables[layout.CLINICAL_NAME] = clinical
    original_ids: dict[str, str] = {}
    if deidentify:
        original_ids = {release_id: original for original, release_id in (*patient_map.items(), *series_map.items())}
    release_report = validate_tables(
        staging / layout.ANNOTATIONS_NAME,
        staging / layout.CLINICAL_NAME if clinical is not None else None,
    )
    if not release_report.ok or release_report.annotations is None:
        raise ValidationError(
            _source_issues(release_report.errors, staging=staging, tables=tables, original_ids=original_ids),
            summary="the rewritten release tables are invalid; nothing was written",
        )
    issues: list[ValidationIssue] = list(release_report.issues)
    frame = release_report.annotations

    centres = _nodule_centres(frame)
    for patient_id, series_id in _progress(release_series, progress, "check series"):
        folder = layout.series_dicom_dir(staging, patient_id, series_id)
        volume, load_issues = load_series_checked(folder, series_id, name=str(folder.relative_to(staging)))
        issues += load_issues
        if volume is None:
            continue
        issues += check_volume(volume, series_id, centres.get(series_id, []), folder=folder.relative_to(staging), file=layout.ANNOTATIONS_NAME)
        if nifti:
            from tunisian_lung.io.nifti import write_nifti

            target = layout.series_nifti_path(staging, patient_id, series_id)
            target.parent.mkdir(parents=True, exist_ok=True)
            write_nifti(volume, target)
    missing = sorted(set(series_map.values()) - {series_id for _, series_id in release_series})
    for series_id in missing:
        issues.append(
            ValidationIssue(
                layout.ANNOTATIONS_NAME, None, "series_id", series_id, "series_has_images",
                "every image of this series was excluded (burned-in annotations)",
                "review the images and rebuild with allow_burned_in=True, or drop the series",
            )
        )
    issues += duplicate_pixel_issues(pixel_hashes)
    issues += _deep_issues(staging, issues)
    errors = [issue for issue in issues if issue.severity == "error"]
    if errors and not allow_quality_errors:
        raise ValidationError(
            _source_issues(errors, staging=staging, tables=tables, original_ids=original_ids),
            summary=f"the release failed {len(errors)} check(s); nothing was written",
        )
    for issue in issues:
        logger.warning("%s", issue.format())

    if deidentify:
        from tunisian_lung.packaging.audit import audit

        findings = audit(staging / layout.DICOM_DIR).findings
        if allow_burned_in:
            # The caller chose to keep flagged images; every other finding still fails the build.
            findings = [finding for finding in findings if finding.category != "burned_in"]
        if findings:
            first_findings = "\n".join(finding.format() for finding in findings[:20])
            raise PackagingError(
                f"identifying attributes remain after de-identification ({len(findings)} finding(s)); "
                f"nothing was written:\n{first_findings}"
            )

    nodules = int((frame["nodule_present"] == 1).sum()) if "nodule_present" in frame.columns else len(frame)
    counts = {
        "patients": len({patient for patient, _ in release_series}),
        "series": len(release_series),
        "nodules": nodules,
        "dicom_files": files,
        "excluded_images": len(excluded),
    }
    deid_record: dict[str, Any] | None = None
    if deidentify:
        deid_record = {**options.to_dict(), "pseudonym_map": "kept outside the release by the data holder"}

    from tunisian_lung.packaging.card import write_card

    write_card(
        staging,
        metadata=metadata,
        counts=counts,
        deidentification=deid_record,
        annotations=frame,
        clinical=release_report.clinical,
    )
    manifest = Manifest(
        name=metadata["name"],
        version=metadata["version"],
        license=metadata["license"],
        citation=metadata.get("citation"),
        coordinate_space=layout.DEFAULT_COORDINATE_SPACE,
        counts=counts,
        files=compute_file_entries(staging, progress=progress),
        deidentification=deid_record,
        source={"builder": f"tunisian_lung {__version__}", "skipped_series": len(skipped)},
    )
    write_manifest(staging, manifest)
    return AssembledRelease(counts=counts, excluded=tuple(excluded), issues=tuple(issues))


__all__ = ["AssembledRelease", "assemble"]
