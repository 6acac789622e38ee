"""Merge several releases (sites) into one release with a ``site`` column.

Every table of the merged release that has a ``patient_id`` column (``annotations.csv``,
``clinical.csv`` and extra tables such as ``readers.csv``) gets a ``site`` column, so splits can
stratify on the site or hold one site out as the test set. Images are copied, never moved, and
the merged release gets its own ``dataset.json`` with the sha256 of every file.
"""

from __future__ import annotations

import csv
import io
import logging
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import pandas as pd

from tunisian_lung import layout
from tunisian_lung.errors import SourceImportError
from tunisian_lung.importers._release import ReleaseBuilder, check_identifier
from tunisian_lung.schema.columns import ANNOTATION_COLUMNS, CLINICAL_COLUMNS, ColumnSpec, normalize_header
from tunisian_lung.schema.reading import _detect_delimiter

logger = logging.getLogger(__name__)

SITE_COLUMN = "site"
_ID_COLUMNS = ("patient_id", "series_id")
#: A DICOM UID (PS3.5 section 9.1): digits in dot-separated components, at most 64 characters.
_DICOM_UID = re.compile(r"^[0-9]+(\.[0-9]+)+$")
_MAX_UID_LENGTH = 64


@dataclass
class MergeReport:
    """Summary of a merge: sites, counts, merged tables, and the source files not carried over."""

    out: Path
    sites: list[str] = field(default_factory=list)
    patients: int = 0
    series: int = 0
    tables: list[str] = field(default_factory=list)
    files_not_merged: list[str] = field(default_factory=list)
    card_written: bool = False


@dataclass
class _Site:
    root: Path
    name: str
    prefix: str
    manifest: Any
    tables: dict[str, pd.DataFrame]


def _schema_specs(name: str) -> Sequence[ColumnSpec]:
    """Return the column declarations of a schema table (``annotations.csv``, ``clinical.csv``)."""
    return {layout.ANNOTATIONS_NAME: ANNOTATION_COLUMNS, layout.CLINICAL_NAME: CLINICAL_COLUMNS}.get(name, ())


def _read_table(path: Path) -> pd.DataFrame:
    """Read a release table as text, as the schema reader does, with canonical column names.

    A built release keeps the hospital's table as exported, so it may use ``;`` or tab
    separators, decimal commas, header variants (``Patient ID``) and blank rows. Cells stay
    text (no ``1`` -> ``1.0``, no lost zeros). In the schema tables the only changes are the
    ones that the schema reader makes anyway: canonical header names, values without
    surrounding spaces, and ``.`` as the decimal mark of number columns. The merged release
    is written with ``,`` separators, where a decimal comma would be invalid.
    """
    text = path.read_text(encoding="utf-8-sig")
    first_line = next((line for line in text.splitlines() if line.strip()), "")
    delimiter = _detect_delimiter(first_line)
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    rows = [row for row in reader if any(cell.strip() for cell in row)]
    if not rows:
        return pd.DataFrame()
    header = list(rows[0])
    while header and not header[-1].strip():
        header.pop()  # trailing empty header cells, as spreadsheets export them
    body = []
    for row in rows[1:]:
        if len(row) > len(header) and not any(cell.strip() for cell in row[len(header) :]):
            row = row[: len(header)]
        if len(row) != len(header):
            raise SourceImportError(
                f"{path}: a row has {len(row)} fields but the header has {len(header)}; "
                f"run 'tunisian-lung validate {path.parent}' and fix the table first"
            )
        body.append(row)
    table = pd.DataFrame(body, columns=header, dtype=str)
    specs = _schema_specs(path.name)
    if not specs:
        return table
    lookup: dict[str, str] = {}
    for spec in specs:
        lookup[normalize_header(spec.name)] = spec.name
        lookup.update({alias: spec.name for alias in spec.aliases})
    table.columns = [lookup.get(normalize_header(name), name.strip()) for name in header]
    table = table.apply(lambda column: column.str.strip())
    if delimiter != ",":
        for spec in specs:
            if spec.kind in ("float", "binary") and spec.name in table.columns:
                table[spec.name] = table[spec.name].str.replace(",", ".", regex=False)
    return table


def _load_site(root: Path, name: str | None, prefix: str) -> _Site:
    from tunisian_lung.manifest import read_manifest

    if not root.is_dir():
        raise SourceImportError(f"release folder not found: {root}")
    if not (root / layout.ANNOTATIONS_NAME).is_file():
        raise SourceImportError(f"{root} has no {layout.ANNOTATIONS_NAME}; only releases can be merged")
    manifest = read_manifest(root)
    tables: dict[str, pd.DataFrame] = {}
    for path in sorted(root.glob("*.csv")):
        table = _read_table(path)
        if "patient_id" not in table.columns:
            continue
        tables[path.name] = table
    site_name = name or manifest.name or root.name
    return _Site(root=root, name=str(site_name), prefix=prefix, manifest=manifest, tables=tables)


def _prefixed(table: pd.DataFrame, prefix: str) -> pd.DataFrame:
    result = table.copy()
    for column in _ID_COLUMNS:
        if column in result.columns:
            result[column] = prefix + result[column].astype(str)
    return result


def _check_shared_scans(sites: Sequence[_Site]) -> None:
    """Raise when two sites contain a series under the same SeriesInstanceUID.

    A UID names one scan worldwide, so such a series is the same scan twice (LUNA16, for
    example, is a subset of LIDC-IDRI). Prefixes would give the copies two ids and let a split
    put them on both sides, so they are no remedy. Series ids that are not UIDs (``S1``) are
    left to the id collision check.

    NOTE: the same scan under another id is not found: a prefixed id from an earlier merge
    (``lidc-1.3.6...``) or a UID remapped by a de-identified build.
    """
    owners: dict[str, str] = {}
    shared: list[str] = []
    for site in sites:
        for value in sorted(set(site.tables[layout.ANNOTATIONS_NAME]["series_id"].astype(str))):
            if len(value) > _MAX_UID_LENGTH or not _DICOM_UID.match(value):
                continue
            if value in owners and owners[value] != site.name:
                shared.append(f"series {value} in sites {owners[value]!r} and {site.name!r}")
            owners.setdefault(value, site.name)
    if shared:
        examples = "; ".join(shared[:5])
        raise SourceImportError(
            f"{len(shared)} series appear in two sites with the same SeriesInstanceUID, so the merged release "
            f"would contain the same scan twice, for example {examples}. Remove these series from all but one "
            "release before merging (LUNA16 is a subset of LIDC-IDRI: merge only one of the two); prefixes "
            "would hide the duplicate, not remove it"
        )


def _check_collisions(sites: Sequence[_Site]) -> None:
    owners: dict[tuple[str, str], str] = {}
    collisions: list[str] = []
    for site in sites:
        annotations = _prefixed(site.tables[layout.ANNOTATIONS_NAME], site.prefix)
        for column in _ID_COLUMNS:
            for value in sorted(set(annotations[column].astype(str))):
                key = (column, value)
                if key in owners and owners[key] != site.name:
                    collisions.append(f"{column} {value!r} in sites {owners[key]!r} and {site.name!r}")
                owners.setdefault(key, site.name)
    if collisions:
        examples = "; ".join(collisions[:5])
        raise SourceImportError(
            f"{len(collisions)} identifier(s) collide between sites, for example {examples}. "
            "Give each release a prefix (prefixes=[...] or --prefix) so the ids stay apart"
        )


def _copy_images(builder: ReleaseBuilder, site: _Site, report: MergeReport) -> None:
    dicom_root = site.root / layout.DICOM_DIR
    if dicom_root.is_dir():
        for patient_dir in sorted(p for p in dicom_root.iterdir() if p.is_dir()):
            for series_dir in sorted(p for p in patient_dir.iterdir() if p.is_dir()):
                target = layout.series_dicom_dir(Path(), site.prefix + patient_dir.name, site.prefix + series_dir.name)
                builder.copy_tree(series_dir, target)
    nifti_root = site.root / layout.NIFTI_DIR
    if nifti_root.is_dir():
        for path in sorted(nifti_root.glob("*/*.nii.gz")):
            series_id = path.name[: -len(".nii.gz")]
            target = layout.series_nifti_path(builder.root, site.prefix + path.parent.name, site.prefix + series_id)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, target)
    for path in sorted(site.root.iterdir()):
        carried = path.name in (layout.DICOM_DIR, layout.NIFTI_DIR, layout.MANIFEST_NAME) or path.name in site.tables
        if not carried:
            report.files_not_merged.append(str(path))
            logger.info("not merged: %s (only tables with a patient_id column and images are carried over)", path)


def _handle_partial_clinical(sites: Sequence[_Site], drop: bool) -> None:
    with_clinical = [site.name for site in sites if layout.CLINICAL_NAME in site.tables]
    if not with_clinical or len(with_clinical) == len(sites):
        return
    without = [site.name for site in sites if layout.CLINICAL_NAME not in site.tables]
    if not drop:
        raise SourceImportError(
            f"sites {with_clinical} have {layout.CLINICAL_NAME} but {without} do not, and the merged release would "
            f"need a clinical row with a health status for every patient of {without}. Add {layout.CLINICAL_NAME} "
            "to those releases, or pass drop_partial_clinical=True (--drop-partial-clinical) to merge without it"
        )
    for site in sites:
        if site.tables.pop(layout.CLINICAL_NAME, None) is not None:
            # _copy_images lists the file in report.files_not_merged.
            logger.warning("not merged: %s, because sites %s have no clinical table", site.root / layout.CLINICAL_NAME, without)


def _combined_text(values: Sequence[str | None], separator: str) -> str | None:
    unique = list(dict.fromkeys(v for v in values if v))
    return separator.join(unique) if unique else None


def merge_releases(
    roots: Sequence[str | Path],
    out: str | Path,
    *,
    prefixes: Sequence[str] | None = None,
    site_names: Sequence[str] | None = None,
    name: str = "merged",
    version: str = "1.0",
    drop_partial_clinical: bool = False,
    overwrite: bool = False,
) -> MergeReport:
    """Combine releases into one new release with a ``site`` column.

    Parameters
    ----------
    roots:
        Two or more release folders. They are only read.
    out:
        The merged release folder to create; written atomically.
    prefixes:
        One string per release, prepended to its ``patient_id`` and ``series_id`` values and to
        the matching ``dicom/`` and ``nifti/`` folder names. ``"tn-"`` turns ``P001`` into
        ``tn-P001``, and an empty string keeps the ids. The DICOM files are copied unchanged, so
        their PatientID tag keeps the original id.
    site_names:
        One name per release for the ``site`` column. By default each release's
        ``dataset.json`` name, or the folder names when those names repeat. Names must differ.
        A source table that already has a ``site`` column (a merged release) keeps its values.
    name, version:
        Name and version written to the merged ``dataset.json``.
    drop_partial_clinical:
        When only some releases have ``clinical.csv``, merge without a clinical table in place
        of raising. The schema needs a clinical row, with a health status, for every annotated
        patient once ``clinical.csv`` exists, and the imported public collections have none.

    Returns
    -------
    MergeReport
        Sites, counts, the merged tables, and the source files that were not carried over
        (``splits.json`` and files without a ``patient_id`` column), which are also logged.

    Raises
    ------
    SourceImportError
        On any of these:

        * fewer than two releases, list lengths that do not match, or duplicate site names;
        * a folder that is not a release;
        * a series with the same SeriesInstanceUID in two sites (the same scan twice);
        * another ``patient_id`` or ``series_id`` found in two sites (pass ``prefixes`` to
          keep them apart);
        * ``clinical.csv`` in only some releases without ``drop_partial_clinical``.
    """
    paths = [Path(root) for root in roots]
    if len(paths) < 2:
        raise SourceImportError(f"merge needs at least two releases, got {len(paths)}")
    if prefixes is not None and len(prefixes) != len(paths):
        raise SourceImportError(f"got {len(prefixes)} prefixes for {len(paths)} releases; give one per release ('' for none)")
    if site_names is not None and len(site_names) != len(paths):
        raise SourceImportError(f"got {len(site_names)} site names for {len(paths)} releases; give one per release")
    sites = [
        _load_site(path, None if site_names is None else site_names[i], "" if prefixes is None else prefixes[i])
        for i, path in enumerate(paths)
    ]
    names = [site.name for site in sites]
    if site_names is None and len(set(names)) != len(names):
        folder_names = [site.root.name for site in sites]
        logger.info("dataset names %s repeat, so the folder names %s name the sites", names, folder_names)
        for site, folder_name in zip(sites, folder_names):
            site.name = folder_name
        names = folder_names
    if len(set(names)) != len(names):
        raise SourceImportError(f"site names must differ, got {names}; pass site_names=[...] or --site")
    for site in sites:
        if site.prefix:
            check_identifier(site.prefix + "x", "prefix", f"release {site.root}")
    _check_shared_scans(sites)
    _check_collisions(sites)
    report = MergeReport(out=Path(out), sites=names)
    _handle_partial_clinical(sites, drop_partial_clinical)

    with ReleaseBuilder(out, overwrite=overwrite) as builder:
        merged: dict[str, list[pd.DataFrame]] = {}
        for site in sites:
            for table_name, table in site.tables.items():
                result = _prefixed(table, site.prefix)
                if SITE_COLUMN not in result.columns:
                    result.insert(0, SITE_COLUMN, site.name)
                merged.setdefault(table_name, []).append(result)
            _copy_images(builder, site, report)
        for table_name, parts in merged.items():
            table = pd.concat(parts, ignore_index=True, sort=False)
            builder.write_table(table_name, table)
            report.tables.append(table_name)
        annotations = pd.concat(merged[layout.ANNOTATIONS_NAME], ignore_index=True)
        report.patients = int(annotations["patient_id"].nunique())
        report.series = int(annotations["series_id"].nunique())
        _write_merged_manifest(builder.root, sites, annotations, name=name, version=version)
        report.card_written = _write_card_if_available(builder.root)
        if report.card_written:
            # The card may read dataset.json, so the manifest is written again to list the card too.
            _write_merged_manifest(builder.root, sites, annotations, name=name, version=version)
        builder.commit()
    logger.info(
        "merged %d releases (%s) into %s: %d patients, %d series",
        len(sites),
        ", ".join(names),
        report.out,
        report.patients,
        report.series,
    )
    return report


def _write_merged_manifest(root: Path, sites: Sequence[_Site], annotations: pd.DataFrame, *, name: str, version: str) -> None:
    from tunisian_lung.manifest import Manifest, compute_file_entries, write_manifest

    license_expression = _combined_text([site.manifest.license for site in sites], " AND ") or "NOASSERTION"
    counts = {
        "patients": int(annotations["patient_id"].nunique()),
        "series": int(annotations["series_id"].nunique()),
        "nodules": int((pd.to_numeric(annotations["nodule_present"], errors="coerce") == 1).sum()),
        "sites": len(sites),
    }
    source = {
        "merged_from": [
            {
                "site": site.name,
                "root": str(site.root),
                "name": site.manifest.name,
                "version": site.manifest.version,
                "license": site.manifest.license,
                "prefix": site.prefix,
            }
            for site in sites
        ]
    }
    manifest = Manifest(
        name=name,
        version=version,
        license=license_expression,
        citation=_combined_text([site.manifest.citation for site in sites], "\n"),
        coordinate_space=_common_coordinate_space(sites),
        counts=counts,
        files=compute_file_entries(root),
        source=source,
    )
    write_manifest(root, manifest)


def _common_coordinate_space(sites: Sequence[_Site]) -> str:
    spaces = {site.manifest.coordinate_space for site in sites}
    if len(spaces) != 1:
        described = ", ".join(f"{site.name}: {site.manifest.coordinate_space}" for site in sites)
        raise SourceImportError(
            f"the releases use different annotation coordinate spaces ({described}); convert them to one space first"
        )
    return str(spaces.pop())


def _write_card_if_available(root: Path) -> bool:
    """Write the dataset card when ``tunisian_lung.packaging.card.write_card`` exists; return whether it did."""
    try:
        from tunisian_lung.packaging.card import write_card
    except ImportError:
        logger.info("no dataset card writer (tunisian_lung.packaging.card) is installed; the merged release has no card")
        return False
    write_card(root)
    return True
