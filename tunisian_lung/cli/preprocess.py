"""``tunisian-lung preprocess``: preprocess every series of a release into the cache."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tunisian_lung.cli import EXIT_OK, EXIT_PROBLEM, UsageError


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``preprocess`` subcommand."""
    parser = subparsers.add_parser(
        "preprocess",
        help="preprocess every series of a release into the cache (exit 1 when any series fails)",
        description=(
            "Load every series of the release at ROOT, apply a preprocessing preset and store the "
            "result in the preprocessing cache. Series already cached with the same files, preset "
            "and library version are skipped, so an interrupted run resumes. Failed series are "
            "listed at the end; the others stay cached."
        ),
    )
    parser.add_argument("root", metavar="ROOT", type=Path, help="release folder (with dataset.json)")
    parser.add_argument(
        "--preset", default="reference", metavar="NAME",
        help="preprocessing preset (default: reference; see the list in docs/preprocessing.md)",
    )
    parser.add_argument(
        "--config", type=Path, metavar="JSON", help="PreprocessConfig JSON file; replaces --preset"
    )
    parser.add_argument("--workers", type=int, default=1, metavar="N", help="worker processes (default: 1)")
    parser.add_argument(
        "--cache-dir", type=Path, metavar="DIR",
        help="cache directory (default: $TUNISIAN_LUNG_CACHE, else the user cache directory)",
    )
    parser.add_argument(
        "--hash-contents", action="store_true",
        help="key the cache on the sha256 of every file, not only on sizes and modification times",
    )
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Preprocess the release; print a summary and a table of failed series."""
    from tunisian_lung.dataset import open_dataset
    from tunisian_lung.errors import ConfigError
    from tunisian_lung.preprocess import PreprocessCache, PreprocessConfig, list_presets, preprocess_dataset, preset

    if not args.root.is_dir():
        raise UsageError(f"release folder {args.root} not found")
    if args.workers < 1:
        raise UsageError(f"--workers must be at least 1, got {args.workers}")
    try:
        if args.config is not None:
            config = PreprocessConfig.from_json(args.config.read_text(encoding="utf-8"))
        else:
            config = preset(args.preset)
    except OSError as error:
        raise UsageError(f"cannot read --config {args.config}: {error}") from error
    except ConfigError as error:
        if args.config is None:
            raise UsageError(f"unknown --preset {args.preset!r}; choose one of {', '.join(list_presets())}") from error
        raise UsageError(f"invalid --config {args.config}: {error}") from error

    dataset = open_dataset(args.root)
    cache = PreprocessCache(args.cache_dir)
    result = preprocess_dataset(
        dataset,
        config,
        workers=args.workers,
        cache=cache,
        progress=not args.no_progress,
        hash_contents=args.hash_contents,
    )

    print(
        f"{len(result.succeeded)} series preprocessed ({result.computed} computed, {result.cache_hits} already cached), "
        f"{len(result.failed)} failed, in {result.seconds:.1f} s; cache: {cache.directory}"
    )
    if result.failed:
        width = max(len("series"), *(len(failure.series_id) for failure in result.failed))
        print(f"\n{'series':<{width}}  error", file=sys.stderr)
        for failure in result.failed:
            print(f"{failure.series_id:<{width}}  {failure.error_type}: {failure.message}", file=sys.stderr)
        return EXIT_PROBLEM
    return EXIT_OK
