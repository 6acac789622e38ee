"""DistributedDataParallel training with the gloo backend and two CPU processes."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.utils.data import Dataset

from tunisian_lung.training import TrainConfig, train
from tunisian_lung.training.checkpoints import RunFiles

WORLD_SIZE = 2
TRAIN_SCANS = 8


class TinyScans(Dataset[dict[str, Any]]):
    """Random 16^3 volumes shifted by their label, one scan per patient."""

    def __init__(self, count: int, seed: int) -> None:
        generator = torch.Generator().manual_seed(seed)
        self.labels = [index % 2 for index in range(count)]
        self.images = [torch.randn(1, 16, 16, 16, generator=generator) + 0.5 * y for y in self.labels]

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return {
            "image": self.images[index],
            "label": torch.tensor(self.labels[index]),
            "patient_id": f"P{index:03d}",
            "series_id": f"S{index:03d}",
        }


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _worker(rank: int, port: int, run_dir: str, results_dir: str) -> None:
    torch.set_num_threads(1)
    os.environ.update(
        {
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": str(port),
            "RANK": str(rank),
            "LOCAL_RANK": str(rank),
            "WORLD_SIZE": str(WORLD_SIZE),
        }
    )
    config = TrainConfig(depth=10, epochs=1, batch_size=2, device="cpu", bootstrap_resamples=20)
    try:
        result = train(
            config, TinyScans(TRAIN_SCANS, 0), TinyScans(4, 1), out_dir=run_dir, test_ds=TinyScans(4, 2)
        )
        summary = {
            "rank": rank,
            "distributed": dist.is_initialized(),
            "train_count": sum(result.history[0][f"train_{k}"] for k in ("tn", "fp", "fn", "tp")),
            "has_test_metrics": result.test_metrics is not None,
        }
        Path(results_dir, f"rank{rank}.json").write_text(json.dumps(summary))
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


@pytest.mark.slow
def test_ddp_two_cpu_processes(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    results = tmp_path / "results"
    results.mkdir()
    mp.spawn(_worker, args=(_free_port(), str(run_dir), str(results)), nprocs=WORLD_SIZE, join=True)

    summaries = [json.loads((results / f"rank{r}.json").read_text()) for r in range(WORLD_SIZE)]
    assert all(s["distributed"] for s in summaries)
    # Gathered training metrics count every training scan once across both ranks.
    assert summaries[0]["train_count"] == TRAIN_SCANS
    assert summaries[1]["train_count"] == TRAIN_SCANS
    assert summaries[0]["has_test_metrics"] is True
    assert summaries[1]["has_test_metrics"] is False

    files = RunFiles(run_dir)
    for path in (files.config, files.history_csv, files.last_checkpoint, files.test_metrics, files.report):
        assert path.is_file(), path.name
    leftovers = [p.name for p in run_dir.rglob("*.tmp")]
    assert leftovers == []
