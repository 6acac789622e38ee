"""Fine-tune a MedicalNet 3D ResNet on a release: cancer against healthy scans.

Run::

    python examples/finetune_medicalnet.py --weights resnet_10.pth [--release DIR] [--epochs N]

``--weights`` is a MedicalNet checkpoint file you downloaded yourself (for example
``resnet_10.pth`` or ``resnet_10_23dataset.pth`` from the Tencent/MedicalNet release); this
library never downloads weights. Only the backbone is loaded and the classification head starts
fresh. Without ``--release`` the script writes a small synthetic release to the output folder.

Without ``--weights`` the script explains what it needs and exits, unless ``--from-scratch``
is given: then it trains the same model from random initialisation.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

MISSING_WEIGHTS = """\
This example fine-tunes MedicalNet's pretrained 3D ResNet and needs its weights file.
MedicalNet (Chen et al. 2019, github.com/Tencent/MedicalNet) publishes resnet_10.pth,
resnet_18.pth, ... trained on 23 medical segmentation datasets. Download the file for the depth
you want, then run:

    python examples/finetune_medicalnet.py --weights /path/to/resnet_10.pth --depth 10

To try the same training from random initialisation, pass --from-scratch."""


def main(argv: list[str] | None = None) -> int:
    """Parse the arguments, prepare the data and train."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", type=Path, default=None, help="MedicalNet checkpoint (.pth)")
    parser.add_argument("--from-scratch", action="store_true", help="train without pretrained weights")
    parser.add_argument("--depth", type=int, default=10, choices=(10, 18, 34, 50), help="ResNet depth (default 10)")
    parser.add_argument("--release", type=Path, default=None, help="release folder (default: a synthetic one)")
    parser.add_argument("--patients", type=int, default=12, help="synthetic patients when no --release (default 12)")
    parser.add_argument("--epochs", type=int, default=2, help="training epochs (default 2)")
    parser.add_argument("--out", type=Path, default=Path("finetune-output"), help="output folder (default ./finetune-output)")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"), help="training device")
    args = parser.parse_args(argv)

    if args.weights is None and not args.from_scratch:
        print(MISSING_WEIGHTS)
        return 0
    if args.weights is not None and not args.weights.is_file():
        print(f"error: weights file not found: {args.weights}", file=sys.stderr)
        return 2

    # Imported here so that the explanation above prints without loading torch.
    from tunisian_lung import open_dataset
    from tunisian_lung.preprocess import PreprocessCache, preprocess_dataset, preset
    from tunisian_lung.splits import make_splits
    from tunisian_lung.synthetic import write_synthetic_release
    from tunisian_lung.torch_data import ScanDataset
    from tunisian_lung.training import TrainConfig, train

    release = args.release
    if release is None:
        release = write_synthetic_release(args.out / "release", patients=args.patients, seed=0)
        print(f"synthetic release written to {release}")
    dataset = open_dataset(release)

    config = preset("reference")
    cache = PreprocessCache(args.out / "cache")
    preprocess_dataset(dataset, config, cache=cache)
    splits = make_splits(dataset, seed=0)
    train_ds, val_ds, test_ds = (
        ScanDataset(splits.split(name), target="cancer", config=config, cache=cache) for name in ("train", "val", "test")
    )

    train_config = TrainConfig(
        depth=args.depth,
        pretrained=None if args.weights is None else str(args.weights),
        epochs=args.epochs,
        batch_size=4,
        # A pretrained backbone learns slowly and the new head fast; both rates are per step.
        lr=1e-4,
        head_lr=1e-3,
        freeze_backbone_epochs=1 if args.weights is not None and args.epochs > 1 else 0,
        device=args.device,
        bootstrap_resamples=200,
    )
    result = train(train_config, train_ds, val_ds, out_dir=args.out / "run", test_ds=test_ds)
    metrics = result.test_metrics or {}
    print(f"best epoch {result.best_epoch}; test accuracy {metrics.get('accuracy', float('nan')):.3f} "
          f"on {metrics.get('n', 0)} scans")
    print(f"run folder: {result.run_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
