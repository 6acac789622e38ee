"""Import public collections (LIDC-IDRI, LUNA16) as releases, and merge releases across sites.

See ``docs/importers.md`` for the rules: how LIDC reader marks are measured and grouped, the
malignancy mapping, how LUNA16 series missing on disk are reported, and the ``site`` column.
"""

from tunisian_lung.importers.lidc import (
    LidcImportConfig,
    LidcImportReport,
    MalignancyMapping,
    import_lidc,
    parse_lidc_xml,
)
from tunisian_lung.importers.luna16 import Luna16ImportReport, import_luna16, read_luna16_csv
from tunisian_lung.importers.merge import MergeReport, merge_releases

__all__ = [
    "LidcImportConfig",
    "LidcImportReport",
    "Luna16ImportReport",
    "MalignancyMapping",
    "MergeReport",
    "import_lidc",
    "import_luna16",
    "merge_releases",
    "parse_lidc_xml",
    "read_luna16_csv",
]
