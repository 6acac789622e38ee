"""Measure 3D ResNet training throughput, loader throughput and a short fine-tune.

Run from the repository root::

    python benchmarks/gpu_train.py --out benchmark_train.json

On a CUDA device it first measures ResNet10/18/34/50 at 64x64x64, batch 32, bfloat16
autocast. It then measures the scan loader's samples/s on a synthetic release, cold
(preprocessing into an empty cache) and warm (reading the cache). Last comes a 2-epoch
fine-tune of ResNet10 on that release.

Without CUDA it runs a reduced setting (ResNet10/18 at 32^3, batch 4, float32, 16^3
fine-tune) and prints that it did. The full setting would take hours on a CPU: the reduced
run reached 1 volume/s for ResNet10 at 32^3 on 2 cores, which suggests about 0.1 volumes/s at
64^3 (an estimate).

``--budget-s`` skips the remaining models once that much wall time has passed.
NOTE: the GPU path has not been run yet; the 10-minute limit on one GPU is a design target.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure_training(
    depth: int, *, size: int, batch: int, steps: int, warmup: int, device: torch.device, bf16: bool
) -> dict[str, Any]:
    """Time optimiser steps of one model on random input; returns volumes/s and peak memory."""
    from tunisian_lung.models import resnet3d

    model = resnet3d(depth).to(device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    images = torch.randn(batch, 1, size, size, size, device=device)
    labels = torch.randint(0, 2, (batch,), device=device)
    autocast = torch.autocast(device_type="cuda", dtype=torch.bfloat16, enabled=bf16)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        with autocast:
            logits = model(images)
        torch.nn.functional.cross_entropy(logits.float(), labels).backward()
        optimizer.step()

    for _ in range(warmup):
        step()
    _synchronize(device)
    started = time.perf_counter()
    for _ in range(steps):
        step()
    _synchronize(device)
    elapsed = time.perf_counter() - started
    result = {
        "model": f"resnet{depth}",
        "input": [size, size, size],
        "batch": batch,
        "steps": steps,
        "seconds": round(elapsed, 3),
        "volumes_per_s": round(steps * batch / elapsed, 1),
    }
    if device.type == "cuda":
        result["peak_memory_gib"] = round(torch.cuda.max_memory_allocated(device) / 2**30, 2)
    del model, optimizer
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return result


def measure_loader(root: Path, *, shape: int, batch: int, workers: int) -> dict[str, Any]:
    """Time two passes of the scan loader: cold (preprocessing into the cache) and warm."""
    from tunisian_lung.dataset import open_dataset
    from tunisian_lung.preprocess import preset
    from tunisian_lung.splits import make_splits

    dataset = open_dataset(root)
    config = preset("reference").replace(target_shape_zyx=(shape, shape, shape))
    scans = make_splits(dataset, seed=0).split("train").to_torch("scan", config=config)
    passes = {}
    for name in ("cold", "warm"):
        loader = DataLoader(scans, batch_size=batch, num_workers=workers, shuffle=False)
        started = time.perf_counter()
        count = sum(int(item["image"].shape[0]) for item in loader)
        elapsed = time.perf_counter() - started
        passes[name] = {"samples": count, "seconds": round(elapsed, 3), "samples_per_s": round(count / elapsed, 1)}
    return {"shape": [shape] * 3, "batch": batch, "workers": workers, **passes}


def short_fine_tune(root: Path, run_dir: Path, *, shape: int, batch: int, device: str) -> dict[str, Any]:
    """Train ResNet10 for 2 epochs through the library's own data path; returns timing and metrics."""
    from tunisian_lung.training import TrainConfig, train
    from tunisian_lung.training.data import prepare_run_data

    config = TrainConfig(depth=10, epochs=2, batch_size=batch, device=device, bootstrap_resamples=200)  # type: ignore[arg-type]
    data = prepare_run_data(root, run_dir, shape=shape, seed=0)
    started = time.perf_counter()
    result = train(config, data.train, data.val, out_dir=run_dir, test_ds=data.test, context=data.context)
    elapsed = time.perf_counter() - started
    return {
        "model": "resnet10",
        "epochs": 2,
        "shape": [shape] * 3,
        "train_scans": len(data.train),
        "seconds": round(elapsed, 2),
        "epoch_seconds": [row["seconds"] for row in result.history],
        "test_accuracy": None if result.test_metrics is None else result.test_metrics["accuracy"],
        "note": "random initialisation on synthetic phantoms; the accuracy only shows the pipeline runs",
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument("--budget-s", type=float, default=480.0, help="skip further models after this many seconds")
    parser.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1), help="loader worker processes")
    args = parser.parse_args()

    device = torch.device("cuda" if args.device != "cpu" and torch.cuda.is_available() else "cpu")
    gpu = device.type == "cuda"
    if gpu:
        torch.backends.cudnn.benchmark = True
        setting = {"depths": [10, 18, 34, 50], "size": 64, "batch": 32, "steps": 10, "warmup": 3, "bf16": True,
                   "patients": 24, "loader_shape": 64, "tune_shape": 64, "tune_batch": 8}
    else:
        torch.set_num_threads(os.cpu_count() or 1)
        setting = {"depths": [10, 18], "size": 32, "batch": 4, "steps": 2, "warmup": 1, "bf16": False,
                   "patients": 8, "loader_shape": 32, "tune_shape": 16, "tune_batch": 4}
    started = time.perf_counter()
    report: dict[str, Any] = {
        "device": torch.cuda.get_device_name(device) if gpu else f"CPU ({platform.processor() or platform.machine()}, {os.cpu_count()} cores)",
        "setting": "full (64^3, batch 32, bfloat16)" if gpu else "reduced CPU setting (no CUDA device): not comparable with GPU numbers",
        "torch": torch.__version__,
        "training": [],
    }
    print(f"{report['device']}: {report['setting']}", file=sys.stderr)

    for depth in setting["depths"]:
        if time.perf_counter() - started > args.budget_s:
            report["training"].append({"model": f"resnet{depth}", "skipped": "time budget spent"})
            continue
        row = measure_training(depth, size=setting["size"], batch=setting["batch"], steps=setting["steps"],
                               warmup=setting["warmup"], device=device, bf16=setting["bf16"])
        report["training"].append(row)
        print(json.dumps(row), file=sys.stderr)

    with tempfile.TemporaryDirectory(prefix="tl-bench-") as scratch:
        os.environ["TUNISIAN_LUNG_CACHE"] = str(Path(scratch) / "cache")
        from tunisian_lung.synthetic import write_synthetic_release

        root = write_synthetic_release(Path(scratch) / "release", patients=setting["patients"], seed=0)
        report["loader"] = measure_loader(root, shape=setting["loader_shape"], batch=setting["batch"], workers=args.workers)
        print(json.dumps(report["loader"]), file=sys.stderr)
        report["fine_tune"] = short_fine_tune(root, Path(scratch) / "run", shape=setting["tune_shape"],
                                              batch=setting["tune_batch"], device=device.type)
        print(json.dumps(report["fine_tune"]), file=sys.stderr)

    fastest = max((row.get("volumes_per_s", 0.0) for row in report["training"]), default=0.0)
    warm = report["loader"]["warm"]["samples_per_s"]
    report["loader_keeps_up"] = bool(warm >= fastest)
    report["total_seconds"] = round(time.perf_counter() - started, 1)
    text = json.dumps(report, indent=2)
    print(text)
    if args.out is not None:
        args.out.write_text(text + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
