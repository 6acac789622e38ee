"""Verification of a release folder against the checksums of its ``dataset.json``."""

from __future__ import annotations

import logging
from pathlib import Path

from tunisian_lung.errors import PackagingError
from tunisian_lung.layout import MANIFEST_NAME
from tunisian_lung.manifest import VerifyResult, read_manifest, verify_files

logger = logging.getLogger(__name__)


def verify(root: str | Path) -> VerifyResult:
    """Recompute the sha256 and size of every file of a release and compare them with ``dataset.json``.

    Returns
    -------
    VerifyResult
        ``missing`` (listed but absent), ``changed`` (size or sha256 differs) and ``extra``
        (present but not listed) relative paths; ``result.ok`` is True when all three are empty.

    Raises
    ------
    PackagingError
        The folder has no ``dataset.json``, or it lists no files, so there is nothing to verify.
    DatasetLayoutError
        ``dataset.json`` is invalid.
    """
    root = Path(root)
    if not (root / MANIFEST_NAME).is_file():
        raise PackagingError(f"cannot verify {root}: no {MANIFEST_NAME} found; build the release with `tunisian-lung build`")
    manifest = read_manifest(root)
    if not manifest.files:
        raise PackagingError(
            f"{root / MANIFEST_NAME} lists no files, so there is nothing to verify; rebuild the release to record checksums"
        )
    result = verify_files(root, manifest)
    logger.info(
        "verified %d file(s) of %s: %d missing, %d changed, %d extra",
        len(manifest.files), root, len(result.missing), len(result.changed), len(result.extra),
    )
    return result
