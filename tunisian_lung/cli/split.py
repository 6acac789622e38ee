"""``tunisian-lung split``: make patient-level splits or folds and write ``splits.json``.

The file goes to ``./splits.json`` in the current directory unless ``--out`` names another
path, because the dataset folder is treated as read-only. Pass ``--out ROOT/splits.json`` to
ship the splits with the release.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tunisian_lung.cli import EXIT_OK, UsageError


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``split`` subcommand."""
    parser = subparsers.add_parser(
        "split",
        help="make patient-level stratified splits (or k folds) and write splits.json",
        description=(
            "Assign every patient to one split, stratified by the given columns, reproducibly for a "
            "seed. Prints the per-split table and writes splits.json (default ./splits.json; the "
            "dataset folder is never written unless --out points into it)."
        ),
    )
    parser.add_argument("root", metavar="ROOT", type=Path, help="dataset release folder")
    parser.add_argument("--seed", type=int, default=0, help="seed of the assignment (default 0)")
    parser.add_argument(
        "--ratios",
        type=float,
        nargs="+",
        default=None,
        metavar="R",
        help="fraction of patients per split, summing to 1 (default 0.7 0.15 0.15)",
    )
    parser.add_argument(
        "--names",
        nargs="+",
        default=None,
        metavar="NAME",
        help="split names, one per ratio (default train val test)",
    )
    parser.add_argument(
        "--folds",
        type=int,
        default=None,
        metavar="K",
        help="make K cross-validation folds (fold-0 .. fold-K-1) instead of train/val/test",
    )
    parser.add_argument(
        "--stratify",
        nargs="*",
        default=None,
        metavar="COLUMN",
        help="patient or clinical columns to stratify on, most important first "
        "(default health_status histology; pass no column for none)",
    )
    parser.add_argument(
        "--holdout",
        nargs=2,
        action="append",
        default=None,
        metavar=("COLUMN", "VALUE"),
        help="put every patient whose COLUMN equals VALUE into the last split (or a separate "
        "'test' split with --folds), for example --holdout site LIDC; repeat for more values",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        metavar="FILE",
        help="where to write the split file (default ./splits.json in the current directory)",
    )
    parser.set_defaults(handler=run)


def _holdout_rule(pairs: list[list[str]] | None) -> dict[str, list[str]] | None:
    if not pairs:
        return None
    rule: dict[str, list[str]] = {}
    for column, value in pairs:
        rule.setdefault(column, []).append(value)
    return rule


def run(args: argparse.Namespace) -> int:
    """Make the splits, print the table and write the file; return the exit code."""
    from tunisian_lung.dataset import open_dataset
    from tunisian_lung.splits import DEFAULT_NAMES, DEFAULT_RATIOS, DEFAULT_STRATIFY, make_folds, make_splits

    root: Path = args.root
    if not root.is_dir():
        raise UsageError(f"dataset folder not found: {root}")
    stratify = DEFAULT_STRATIFY if args.stratify is None else tuple(args.stratify)
    holdout = _holdout_rule(args.holdout)
    dataset = open_dataset(root)

    if args.folds is not None:
        if args.ratios is not None or args.names is not None:
            raise UsageError("--folds cannot be combined with --ratios or --names")
        if args.folds < 2:
            raise UsageError(f"--folds must be at least 2, got {args.folds}")
        splits = make_folds(dataset, k=args.folds, seed=args.seed, stratify=stratify, holdout=holdout)
    else:
        ratios = DEFAULT_RATIOS if args.ratios is None else tuple(args.ratios)
        names = args.names
        if names is None:
            if len(ratios) > len(DEFAULT_NAMES):
                raise UsageError(f"got {len(ratios)} ratios; pass --names with one name per ratio")
            names = DEFAULT_NAMES[: len(ratios)]
        splits = make_splits(dataset, seed=args.seed, ratios=ratios, stratify=stratify, names=names, holdout=holdout)

    out = args.out if args.out is not None else Path.cwd() / "splits.json"
    table = splits.table()
    print(f"{len(splits.assignment)} patients, strategy {splits.strategy}, seed {splits.seed}, "
          f"stratified by {', '.join(splits.stratify) or 'nothing'}")
    print(table.T.to_string())
    written = splits.save(out)
    print(f"wrote {written.resolve()}", file=sys.stdout)
    return EXIT_OK
