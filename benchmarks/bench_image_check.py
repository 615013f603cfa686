"""Cost of the per-image check of the loader: header + verify (the old check) vs full decode.

Run by hand: ``python benchmarks/bench_image_check.py IMAGES_FOLDER`` (e.g. the ``images/``
folder that ``bench_dataset.py`` generates under its ``--work`` folder). Reads every file once
into memory first, so only the checking is timed.
"""

from __future__ import annotations

import argparse
import io
import time
from pathlib import Path

from PIL import Image

from gpr1200_hf.dataset import check_image


def verify_only(data: bytes, where: str) -> None:
    """The check before issue 10: header and structure, no decoding."""
    with Image.open(io.BytesIO(data)) as im:
        im.verify()


def full_decode(data: bytes, where: str) -> None:
    """A full-resolution decode, for comparison with check_image's 1/8-scale JPEG decode."""
    with Image.open(io.BytesIO(data)) as im:
        im.load()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("folder")
    args = ap.parse_args()
    files = sorted(p for p in Path(args.folder).iterdir() if p.is_file())
    blobs = [p.read_bytes() for p in files]
    mib = sum(map(len, blobs)) / 2**20
    print(f"{len(blobs)} images, {mib:.0f} MiB")
    for name, fn in {
        "verify only (old check)": verify_only,
        "check_image (new)": check_image,
        "full-resolution decode": full_decode,
    }.items():
        t = time.perf_counter()
        for p, data in zip(files, blobs, strict=True):
            fn(data, p.name)
        dt = time.perf_counter() - t
        print(f"  {name:26s} {dt:7.2f} s  {1000 * dt / len(blobs):6.2f} ms/image")


if __name__ == "__main__":
    main()
