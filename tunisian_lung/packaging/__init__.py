"""Release packaging: build, de-identification, audit, verification, dataset card and fetch.

The submodules import pydicom, requests and matplotlib, so the names here are loaded lazily.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_LAZY_EXPORTS: dict[str, str] = {
    "build_release": "tunisian_lung.packaging.build",
    "BuildResult": "tunisian_lung.packaging.build",
    "audit": "tunisian_lung.packaging.audit",
    "AuditReport": "tunisian_lung.packaging.audit",
    "verify": "tunisian_lung.packaging.verify",
    "fetch": "tunisian_lung.packaging.fetch",
    "extract_archive": "tunisian_lung.packaging.fetch",
    "write_card": "tunisian_lung.packaging.card",
    "DeidOptions": "tunisian_lung.packaging.deid",
    "deidentify_dataset": "tunisian_lung.packaging.deid",
}

__all__ = list(_LAZY_EXPORTS)

if TYPE_CHECKING:  # pragma: no cover
    from tunisian_lung.packaging.audit import AuditReport, audit
    from tunisian_lung.packaging.build import BuildResult, build_release
    from tunisian_lung.packaging.card import write_card
    from tunisian_lung.packaging.deid import DeidOptions, deidentify_dataset
    from tunisian_lung.packaging.fetch import extract_archive, fetch
    from tunisian_lung.packaging.verify import verify


def __getattr__(name: str) -> Any:
    module_name = _LAZY_EXPORTS.get(name)
    if module_name is None:
        raise AttributeError(f"module 'tunisian_lung.packaging' has no attribute {name!r}")
    value = getattr(importlib.import_module(module_name), name)
    globals()[name] = value
    return value
