"""Compare lossless DICOM transfer syntaxes on the real LIDC-IDRI-0001 series.

For each transfer syntax, every selected slice of the original (uncompressed) series is
re-encoded with pydicom, written to memory, read back and decoded. The script prints the size
relative to the original, the mean encode and decode time per slice, and whether the decoded
pixels equal the original ones. ``docs/sample-data.md`` reports its output; it is the basis for
storing the bundled sample as JPEG-LS lossless.

Usage::

    python benchmarks/bench_sample_encoding.py [SOURCE_DIR] [--slices 10]

SOURCE_DIR defaults to ``../shared/data/real/lidc-idri-0001`` beside the repository (set it to
the folder of the original 133 files).
"""

from __future__ import annotations

import argparse
import io
import sys
import time
from pathlib import Path

import numpy as np
import pydicom
from pydicom.uid import UID, DeflatedExplicitVRLittleEndian, JPEG2000Lossless, JPEGLSLossless, RLELossless

DEFAULT_SOURCE = Path(__file__).resolve().parents[2] / "shared" / "data" / "real" / "lidc-idri-0001"
SYNTAXES = (JPEGLSLossless, JPEG2000Lossless, RLELossless, DeflatedExplicitVRLittleEndian)


def measure(files: list[Path], syntax: UID) -> tuple[float, float, float, bool]:
    """Return (size ratio, encode seconds per slice, decode seconds per slice, lossless)."""
    original_bytes = encoded_bytes = 0
    encode_seconds = decode_seconds = 0.0
    lossless = True
    for path in files:
        original_bytes += path.stat().st_size
        dataset = pydicom.dcmread(path)
        reference = dataset.pixel_array.copy()

        start = time.perf_counter()
        if syntax == DeflatedExplicitVRLittleEndian:
            # Deflate compresses the whole data set, not the pixel data, so only the syntax changes.
            dataset.file_meta.TransferSyntaxUID = syntax
        else:
            dataset.compress(syntax, generate_instance_uid=False)
        buffer = io.BytesIO()
        dataset.save_as(buffer, enforce_file_format=True)
        encode_seconds += time.perf_counter() - start
        encoded_bytes += len(buffer.getvalue())

        start = time.perf_counter()
        decoded = pydicom.dcmread(io.BytesIO(buffer.getvalue())).pixel_array
        decode_seconds += time.perf_counter() - start
        lossless &= bool(np.array_equal(decoded, reference))
    count = len(files)
    return encoded_bytes / original_bytes, encode_seconds / count, decode_seconds / count, lossless


def main(argv: list[str] | None = None) -> int:
    """Parse the arguments and print one line per transfer syntax."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", nargs="?", type=Path, default=DEFAULT_SOURCE, help="folder of the original series")
    parser.add_argument("--slices", type=int, default=10, help="number of slices to encode (default 10)")
    args = parser.parse_args(argv)
    files = sorted(args.source.glob("*.dcm"))[: args.slices]
    if not files:
        print(f"error: no .dcm files in {args.source}", file=sys.stderr)
        return 2
    print(f"{len(files)} slices from {args.source}")
    for syntax in SYNTAXES:
        ratio, encode, decode, lossless = measure(files, syntax)
        print(f"{syntax.name}: {100 * ratio:.1f} % of the original size, encode {1000 * encode:.1f} ms, "
              f"decode {1000 * decode:.1f} ms per slice, decoded pixels equal: {lossless}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
