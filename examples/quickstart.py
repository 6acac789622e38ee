"""Quick start: write a small release, open it, look at a nodule, preprocess, split.

Run::

    python examples/quickstart.py [--out DIR] [--patients N]

Without ``--out`` the release goes to a temporary folder that is deleted at the end. With your
own release, skip the first step and call ``open_dataset`` on its folder.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np

from tunisian_lung import open_dataset
from tunisian_lung.preprocess import PreprocessCache, preprocess_volume, preset
from tunisian_lung.splits import make_splits
from tunisian_lung.synthetic import write_synthetic_release


def run(out: Path, patients: int) -> None:
    """Walk through the library's main objects on a synthetic release written to ``out``."""
    # 1. A release folder: dicom/<patient>/<series>/, annotations.csv, clinical.csv, dataset.json.
    root = write_synthetic_release(out / "release", patients=patients, seed=0)
    print(f"release written to {root}")

    # 2. Opening validates the tables (every failing row at once) and reads no pixels.
    dataset = open_dataset(root)
    summary = dataset.describe()
    print(f"{summary['patients']} patients, {summary['series']} series, {summary['nodules']} nodules")
    print(f"health status: {summary['health_status']}")

    # 3. A volume is (z, y, x) in Hounsfield units with LPS world geometry in mm.
    nodule = dataset.nodules[0]
    volume = dataset.load_volume(nodule.series_id)
    index_zyx = tuple(int(i) for i in np.rint(volume.world_to_voxel(nodule.coord_xyz_mm)))
    print(f"series {nodule.series_id[:24]}...: shape {volume.shape}, spacing {volume.spacing} mm")
    print(
        f"nodule at {nodule.coord_xyz_mm} mm (LPS) -> voxel (z, y, x) {index_zyx}, "
        f"HU there {volume.array[index_zyx]}"
    )

    # 4. The reference recipe: window -1000..400 HU to [-1, 1], resize to 64x64x64, float32.
    model_input = preprocess_volume(volume, preset("reference"))
    print(f"preprocessed: shape {model_input.shape}, dtype {model_input.dtype}, "
          f"range [{model_input.array.min():.2f}, {model_input.array.max():.2f}]")

    # 5. Patient-level, stratified, reproducible splits.
    splits = make_splits(dataset, seed=0)
    print(splits.table()[["patients", "cancer", "healthy"]].to_string())

    # The torch adapters read preprocessed volumes through an on-disk cache.
    from tunisian_lung.torch_data import ScanDataset

    train = ScanDataset(splits.split("train"), config=preset("reference"), cache=PreprocessCache(out / "cache"))
    sample = train[0]
    print(f"first training sample: image {tuple(sample['image'].shape)}, label {int(sample['label'])}")


def main() -> None:
    """Parse the arguments and run the walk-through."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=None, help="folder to write into (default: a temporary folder)")
    parser.add_argument("--patients", type=int, default=10, help="synthetic patients (default 10)")
    args = parser.parse_args()
    if args.out is not None:
        run(args.out, args.patients)
        return
    with tempfile.TemporaryDirectory(prefix="tunisian-lung-quickstart-") as folder:
        run(Path(folder), args.patients)


if __name__ == "__main__":
    main()
