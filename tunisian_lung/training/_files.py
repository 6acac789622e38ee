"""Atomic file writes for run folders: a temporary file in the same folder, then a rename."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any, Callable


def _write_atomic(path: Path, write: Callable[[Path], None]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(handle)
    try:
        write(Path(temporary))
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def write_text_atomic(path: Path, text: str) -> None:
    """Write UTF-8 text to ``path`` so that readers see the old or the new file, never half."""
    def write(temporary: Path) -> None:
        temporary.write_text(text, encoding="utf-8")

    _write_atomic(path, write)


def save_torch_atomic(path: Path, payload: Any) -> None:
    """``torch.save`` ``payload`` to ``path`` atomically."""
    import torch

    _write_atomic(path, lambda tmp: torch.save(payload, tmp))


def save_figure_atomic(path: Path, figure: Any) -> None:
    """Save a matplotlib figure to ``path`` atomically, in the format of the path's suffix."""
    suffix = path.suffix.lstrip(".") or "png"
    _write_atomic(path, lambda tmp: figure.savefig(tmp, format=suffix, dpi=120))
