"""Atomic writing of a release folder, shared by the importers and :func:`merge_releases`.

A release is assembled in a hidden temporary folder next to the destination and renamed into
place only when complete, so a reader never sees half a release and a failed import leaves the
destination as it was.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from pathlib import Path
from types import TracebackType
from typing import Any, Iterable, Mapping, Sequence

import pandas as pd

from tunisian_lung import layout
from tunisian_lung.schema.columns import ANNOTATION_COLUMN_NAMES
from tunisian_lung.errors import SourceImportError

logger = logging.getLogger(__name__)


LIDC_IDRI_CITATION = (
    "Armato III, S. G., et al. (2015). Data From LIDC-IDRI. The Cancer Imaging Archive. "
    "https://doi.org/10.7937/K9/TCIA.2015.LO9QL9SX"
)
LUNA16_CITATION = (
    "Setio, A. A. A., et al. (2017). Validation, comparison, and combination of algorithms for "
    "automatic detection of pulmonary nodules in computed tomography images: the LUNA16 "
    "challenge. Medical Image Analysis 42:1-13."
)
#: SPDX identifier of the Creative Commons Attribution 3.0 licence of LIDC-IDRI and LUNA16.
CC_BY_3 = "CC-BY-3.0"


def check_identifier(value: str, kind: str, where: str) -> str:
    """Return ``value`` if it can name a release folder, else raise naming ``where`` it came from."""
    text = str(value).strip()
    if not text or text in (".", "..") or "/" in text or "\\" in text or "\x00" in text:
        raise SourceImportError(
            f"{where}: {kind} {value!r} cannot name a folder of the release (empty, '.', '..' or a path "
            "separator); fix the source identifier or pass a prefix"
        )
    return text


class ReleaseBuilder:
    """Context manager that builds a release in a temporary sibling folder of ``out``.

    Call :meth:`commit` inside the ``with`` block to rename the finished folder to ``out``.
    Leaving the block without a commit, or with an exception, deletes the temporary folder.

    Parameters
    ----------
    out:
        The destination release folder. It must not exist unless ``overwrite`` is true.
    overwrite:
        Replace an existing ``out`` (it is removed only after the new release is complete).
    """

    def __init__(self, out: str | Path, *, overwrite: bool = False) -> None:
        self.out = Path(out).absolute()
        self.overwrite = overwrite
        if self.out.exists() and not overwrite:
            raise SourceImportError(
                f"output folder {self.out} already exists; choose a new path or pass overwrite=True (--overwrite)"
            )
        self._temporary: Path | None = None
        self._committed = False

    @property
    def root(self) -> Path:
        """The temporary folder being filled."""
        if self._temporary is None:
            raise RuntimeError("ReleaseBuilder.root is only available inside the 'with' block")
        return self._temporary

    def __enter__(self) -> "ReleaseBuilder":
        self.out.parent.mkdir(parents=True, exist_ok=True)
        self._temporary = Path(tempfile.mkdtemp(dir=self.out.parent, prefix=f".{self.out.name}.partial-"))
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._temporary is not None and not self._committed:
            shutil.rmtree(self._temporary, ignore_errors=True)

    def copy_series(self, files: Iterable[Path], patient_id: str, series_id: str) -> Path:
        """Copy the files of one series into ``dicom/<patient_id>/<series_id>/``; sources are only read.

        File names are kept. Two source files with one name (from different sub-folders) raise,
        because one would overwrite the other.
        """
        target = layout.series_dicom_dir(self.root, patient_id, series_id)
        target.mkdir(parents=True, exist_ok=True)
        for source in files:
            destination = target / source.name
            if destination.exists():
                raise SourceImportError(
                    f"two files named {source.name!r} belong to series {series_id}; the second is {source}. "
                    "Keep one copy of each slice in the source folder"
                )
            shutil.copy2(source, destination)
        return target

    def copy_tree(self, source: Path, relative_target: str | Path) -> None:
        """Copy a folder from another release into this one (used by the merge)."""
        shutil.copytree(source, self.root / relative_target, copy_function=shutil.copy2)

    def write_table(self, name: str, table: pd.DataFrame) -> Path:
        """Write a CSV table at the release root (UTF-8, no index) and return its path."""
        path = self.root / name
        table.to_csv(path, index=False)
        return path

    def commit(self) -> Path:
        """Rename the finished folder to ``out`` and return ``out``."""
        temporary = self.root
        if self.out.exists():
            if not self.overwrite:
                raise SourceImportError(f"output folder {self.out} appeared during the import; nothing was replaced")
            previous = Path(tempfile.mkdtemp(dir=self.out.parent, prefix=f".{self.out.name}.old-"))
            os.replace(self.out, previous / self.out.name)
            os.replace(temporary, self.out)
            shutil.rmtree(previous, ignore_errors=True)
        else:
            os.replace(temporary, self.out)
        self._committed = True
        logger.info("wrote release %s", self.out)
        return self.out


def annotation_table(rows: Sequence[Mapping[str, Any]], extra_columns: Sequence[str] = ()) -> pd.DataFrame:
    """Build an ``annotations.csv`` table with the library's column order from row dicts."""
    columns = list(ANNOTATION_COLUMN_NAMES) + [c for c in extra_columns if c not in ANNOTATION_COLUMN_NAMES]
    table = pd.DataFrame(list(rows), columns=columns)
    table["patient_id"] = table["patient_id"].astype(str)
    table["series_id"] = table["series_id"].astype(str)
    # Integer columns with empty cells need the nullable type, else pandas writes 1.0.
    table["class"] = pd.array(table["class"], dtype="Int64")
    table["nodule_present"] = table["nodule_present"].astype(int)
    return table.sort_values(["patient_id", "series_id", "nodule_present"], kind="stable", ignore_index=True)


def finish_release(
    root: Path,
    *,
    name: str,
    version: str,
    license: str,
    citation: str,
    source: Mapping[str, Any],
) -> None:
    """Write ``dataset.json`` (counts and the sha256 of every file) into a release folder being built."""
    from tunisian_lung import manifest as manifest_module

    annotations = pd.read_csv(root / layout.ANNOTATIONS_NAME, dtype={"patient_id": str, "series_id": str})
    counts = {
        "patients": int(annotations["patient_id"].nunique()),
        "series": int(annotations["series_id"].nunique()),
        "nodules": int((annotations["nodule_present"] == 1).sum()),
    }
    manifest = manifest_module.Manifest(
        name=name,
        version=version,
        license=license,
        citation=citation,
        coordinate_space=layout.DEFAULT_COORDINATE_SPACE,
        counts=counts,
        files=manifest_module.compute_file_entries(root),
        source=dict(source),
    )
    manifest_module.write_manifest(root, manifest)
