"""Convert every DICOM series of a release to NIfTI (RAS affine on disk, gzip-compressed).

Run::

    python examples/convert_to_nifti.py RELEASE OUT

Each series ``dicom/<patient_id>/<series_id>/`` of RELEASE becomes
``OUT/nifti/<patient_id>/<series_id>.nii.gz``, the layout a release uses for converted volumes.
The release itself is only read. The NIfTI affine maps voxel indices to RAS millimetres, so
its x and y world coordinates have the opposite sign of the LPS coordinates in
``annotations.csv``. ``tunisian_lung.io.read_nifti`` converts back to LPS, so annotations still
land on their nodules when the files are read with this library.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tunisian_lung import layout, open_dataset
from tunisian_lung.io.nifti import write_nifti


def convert(release: Path, out: Path) -> list[Path]:
    """Write one NIfTI file per series of ``release`` under ``out``; return the paths."""
    dataset = open_dataset(release)
    written = []
    for series in dataset.series:
        volume = dataset.load_volume(series.series_id)
        target = layout.series_nifti_path(out, series.patient_id, series.series_id)
        target.parent.mkdir(parents=True, exist_ok=True)
        written.append(write_nifti(volume, target))
        print(f"{series.patient_id}/{series.series_id}: {volume.shape} -> {target}")
    return written


def main(argv: list[str] | None = None) -> int:
    """Parse the arguments and convert the release."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("release", type=Path, help="release folder to read")
    parser.add_argument("out", type=Path, help="folder that receives nifti/<patient_id>/<series_id>.nii.gz")
    args = parser.parse_args(argv)
    if args.out.resolve() == args.release.resolve() or args.release.resolve() in args.out.resolve().parents:
        print("error: write the NIfTI files outside the release folder, which stays read-only", file=sys.stderr)
        return 2
    paths = convert(args.release, args.out)
    print(f"{len(paths)} series converted")
    return 0


if __name__ == "__main__":
    sys.exit(main())
