"""DataLoader benchmark: memory of a 2-worker loader over the cache, and samples per second.

Two measurements on a synthetic release preprocessed into a temporary cache:

1. Peak memory of the whole process tree (main process plus DataLoader workers) while one
   epoch runs. ``ScanDataset`` reads memory-mapped cache entries per sample. A MONAI
   ``CacheDataset`` over the same cached ``.npy`` arrays keeps every transformed volume in the
   main process. Each case runs in a fresh Python process, for three dataset sizes,
   so growth with the number of cached volumes is visible. Memory is the sum over the tree of
   the proportional set size (PSS) of anonymous and shared-memory pages, read from
   ``/proc/<pid>/smaps_rollup``. PSS counts a page shared by forked workers once. File-backed
   pages (libraries, memory-mapped cache files) are left out; see ``_process_memory_bytes``.
2. Samples per second for one epoch read from a warm cache, with 0 and 2 workers, with and
   without augmentation.

Usage::

    python benchmarks/bench_dataloader.py [--patients 48] [--sizes 8 24] [--shape 96]

Needs the ``bench`` extra (psutil, monai). Writes only under a temporary directory.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any


def _process_memory_bytes(process: Any) -> int:
    """Return the anonymous plus shared-memory PSS of one process (Linux), else its PSS or RSS.

    File-backed pages (shared libraries, memory-mapped cache files) are left out. They are
    reclaimable page cache, and their PSS share changes whenever other processes on the machine
    map the same libraries, which would drown the signal.
    """
    try:
        text = Path(f"/proc/{process.pid}/smaps_rollup").read_text()
    except OSError:
        info = process.memory_full_info()
        return int(getattr(info, "pss", info.rss))
    fields = dict(line.split(":", 1) for line in text.splitlines()[1:] if ":" in line)
    return sum(int(fields.get(name, "0 kB").split()[0]) for name in ("Pss_Anon", "Pss_Shmem")) * 1024


def _tree_memory_bytes(process: Any) -> int:
    import psutil

    total = 0
    for member in [process, *process.children(recursive=True)]:
        try:
            total += _process_memory_bytes(member)
        except (psutil.NoSuchProcess, psutil.AccessDenied, FileNotFoundError, ProcessLookupError):
            continue
    return total


def _run_measured(command: list[str]) -> tuple[int, str]:
    """Run ``command`` and return (peak tree memory in bytes, its stdout)."""
    import psutil

    child = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    process = psutil.Process(child.pid)
    peak = 0
    done = threading.Event()

    def poll() -> None:
        nonlocal peak
        while not done.is_set():
            try:
                peak = max(peak, _tree_memory_bytes(process))
            except psutil.NoSuchProcess:
                return
            time.sleep(0.05)

    thread = threading.Thread(target=poll, daemon=True)
    thread.start()
    output, _ = child.communicate()
    done.set()
    thread.join()
    if child.returncode != 0:
        raise SystemExit(f"measured command failed with exit code {child.returncode}: {command}")
    return peak, output


def _prepare(workdir: Path, patients: int, shape: int) -> dict[str, Any]:
    from tunisian_lung.dataset import open_dataset
    from tunisian_lung.preprocess import PreprocessCache, PreprocessConfig, load_preprocessed
    from tunisian_lung.synthetic import write_synthetic_release

    root = write_synthetic_release(workdir / "release", patients=patients, seed=0, healthy_fraction=0.3)
    dataset = open_dataset(root)
    cache = PreprocessCache(workdir / "cache")
    config = PreprocessConfig(name=f"bench-{shape}", target_shape_zyx=(shape, shape, shape))
    arrays = []
    for record in dataset.series:
        volume = load_preprocessed(dataset, record.series_id, config, cache=cache)
        key = volume.metadata["cache_key"]
        arrays.append(str(cache.entries_dir / key[:2] / f"{key}.npy"))
    return {"root": str(root), "cache": str(cache.directory), "shape": shape, "arrays": arrays}


def _child_epoch(kind: str, setup: dict[str, Any], count: int) -> None:
    """Run one epoch of a 2-worker DataLoader over ``count`` volumes (child process)."""
    import torch
    from torch.utils.data import DataLoader

    if kind == "scan":
        from tunisian_lung.dataset import open_dataset
        from tunisian_lung.preprocess import PreprocessCache, PreprocessConfig
        from tunisian_lung.torch_data import ScanDataset, collate

        dataset = open_dataset(setup["root"])
        subset = dataset.subset(sorted(dataset.patients)[:count])
        shape = setup["shape"]
        data: Any = ScanDataset(
            subset,
            config=PreprocessConfig(name=f"bench-{shape}", target_shape_zyx=(shape, shape, shape)),
            cache=PreprocessCache(setup["cache"]),
            exclude_unlabeled=True,
        )
        loader = DataLoader(data, batch_size=2, num_workers=2, collate_fn=collate)
    else:
        import warnings

        # MONAI 1.6 warns at import about an optional GPU DICOM decoder; it is irrelevant here.
        warnings.filterwarnings("ignore", category=UserWarning, module="monai")
        from monai.data import CacheDataset
        from monai.transforms import Compose, EnsureChannelFirstd, LoadImaged

        items = [{"image": path, "label": 0} for path in setup["arrays"][:count]]
        transform = Compose([LoadImaged(keys="image", reader="NumpyReader"), EnsureChannelFirstd(keys="image", channel_dim="no_channel")])
        data = CacheDataset(items, transform=transform, cache_rate=1.0, num_workers=0, progress=False)
        loader = DataLoader(data, batch_size=2, num_workers=2)
    seen = 0
    for batch in loader:
        seen += int(torch.as_tensor(batch["image"]).shape[0])
    print(json.dumps({"samples": seen}))


def _throughput(setup: dict[str, Any], workers: int, augment: bool) -> float:
    from torch.utils.data import DataLoader

    from tunisian_lung.dataset import open_dataset
    from tunisian_lung.preprocess import PreprocessCache, PreprocessConfig
    from tunisian_lung.torch_data import ScanDataset, collate

    shape = setup["shape"]
    data = ScanDataset(
        open_dataset(setup["root"]),
        config=PreprocessConfig(name=f"bench-{shape}", target_shape_zyx=(shape, shape, shape)),
        cache=PreprocessCache(setup["cache"]),
        augment=augment,
        exclude_unlabeled=True,
    )
    loader = DataLoader(data, batch_size=2, num_workers=workers, collate_fn=collate)
    start = time.perf_counter()
    seen = 0
    for batch in loader:
        seen += int(batch["image"].shape[0])
    elapsed = time.perf_counter() - start
    return seen / elapsed


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--patients", type=int, default=48, help="patients (= volumes) of the synthetic release")
    parser.add_argument(
        "--sizes", type=int, nargs="+", default=[8, 24], help="volume counts of the memory cases (the full release is added)"
    )
    parser.add_argument("--small", type=int, default=None, help="one smaller volume count, same as --sizes N")
    parser.add_argument("--shape", type=int, default=96, help="edge of the cubic preprocessed volume in voxels")
    parser.add_argument("--child", nargs=3, metavar=("KIND", "SETUP", "COUNT"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.child:
        kind, setup_path, count = args.child
        _child_epoch(kind, json.loads(Path(setup_path).read_text()), int(count))
        return

    from _suite import describe_machine, machine_info

    with tempfile.TemporaryDirectory(prefix="bench_dataloader_") as temporary:
        workdir = Path(temporary)
        start = time.perf_counter()
        setup = _prepare(workdir, args.patients, args.shape)
        setup_path = workdir / "setup.json"
        setup_path.write_text(json.dumps(setup))
        volume_mib = args.shape**3 * 4 / 2**20
        print(f"machine: {describe_machine(machine_info())}")
        print(f"prepared {len(setup['arrays'])} cached volumes of {args.shape}^3 float32 ({volume_mib:.1f} MiB each) "
              f"in {time.perf_counter() - start:.1f} s")

        requested = [args.small] if args.small is not None else args.sizes
        sizes = sorted({*(n for n in requested if n < len(setup["arrays"])), len(setup["arrays"])})
        results: dict[str, Any] = {"volumes": len(setup["arrays"]), "shape": args.shape, "peak_memory_mib": {}, "samples_per_second": {}}
        print("\npeak anonymous + shared-memory PSS of the process tree during one epoch, 2 workers, batch 2 (MiB)")
        print(f"{'dataset':<28}" + "".join(f"{f'{n} vols':>10}" for n in sizes))
        for kind, label in (("scan", "ScanDataset (cache, mmap)"), ("monai", "MONAI CacheDataset")):
            peaks = []
            for count in sizes:
                peak, _ = _run_measured([sys.executable, __file__, "--child", kind, str(setup_path), str(count)])
                peaks.append(peak / 2**20)
            print(f"{label:<28}" + "".join(f"{peak:>10.0f}" for peak in peaks))
            results["peak_memory_mib"][kind] = {str(count): round(peak, 1) for count, peak in zip(sizes, peaks)}

        print("\nsamples per second, one epoch from a warm cache, batch 2")
        for workers in (0, 2):
            for augment in (False, True):
                rate = _throughput(setup, workers, augment)
                print(f"workers={workers} augment={'yes' if augment else 'no ':<3}  {rate:8.1f} samples/s")
                results["samples_per_second"][f"workers={workers} augment={augment}"] = round(rate, 2)
        print(json.dumps(results))


if __name__ == "__main__":
    main()
