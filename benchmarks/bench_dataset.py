"""Building GPR1200 from the zip vs ``load_dataset("imagefolder")``, and export throughput.

Run by hand: ``python benchmarks/bench_dataset.py [--per-subset 200] [--work DIR]``. The first
run generates a 12000-image sample of realistic JPEG sizes (300-800 px) under ``--work``.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
import zipfile
from pathlib import Path

import datasets

from gpr1200_hf.dataset import load_gpr1200
from gpr1200_hf.demo import CATEGORIES_FILE, make_demo
from gpr1200_hf.hub import export_hub


def prepare(work: Path, per_subset: int) -> tuple[Path, Path, Path]:
    folder, zipped = work / "sample", work / "GPR1200.zip"
    if not (folder / "images").is_dir():
        t = time.perf_counter()
        make_demo(folder, per_subset=per_subset, size=(300, 800), workers=2)
        print(f"generated {per_subset * 60} images in {time.perf_counter() - t:.0f} s")
    if not zipped.exists():
        with zipfile.ZipFile(zipped, "w", zipfile.ZIP_STORED) as zf:
            for p in sorted((folder / "images").iterdir()):
                zf.write(p, f"images/{p.name}")
    return folder / "images", zipped, folder / CATEGORIES_FILE


def timed(fn):
    t = time.perf_counter()
    out = fn()
    return time.perf_counter() - t, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--per-subset", type=int, default=200)
    ap.add_argument("--work", default=str(Path(tempfile.gettempdir()) / "gpr1200-bench"))
    args = ap.parse_args()
    work = Path(args.work)
    images, zipped, cats = prepare(work, args.per_subset)
    n = len(list(images.iterdir()))
    size_mb = zipped.stat().st_size / 2**20
    datasets.disable_progress_bars()
    results = {}
    for name, fn in {
        "imagefolder (extracted files)": lambda c: datasets.load_dataset(
            "imagefolder", data_dir=str(images), split="train", cache_dir=c
        ),
        "load_gpr1200 (zip)": lambda c: load_gpr1200(
            zipped, categories=cats, cache_dir=c, strict=args.per_subset == 200
        ),
        "load_gpr1200 (folder)": lambda c: load_gpr1200(
            images.parent, categories=cats, cache_dir=c, strict=args.per_subset == 200
        ),
    }.items():
        cache = work / "cache"
        shutil.rmtree(cache, ignore_errors=True)
        results[name], ds = timed(lambda fn=fn, cache=cache: fn(cache))
        assert len(ds) == n
    base = results["imagefolder (extracted files)"]
    print(f"{n} images, {size_mb:.0f} MiB")
    for name, t in results.items():
        print(f"  {name:32s} {t:7.2f} s  {t / base:5.2f} x imagefolder  {n / t:7.0f} images/s")
    shutil.rmtree(work / "cache", ignore_errors=True)
    shutil.rmtree(work / "export", ignore_errors=True)
    t, _ = timed(
        lambda: export_hub(
            work / "export",
            zipped,
            categories=cats,
            cache_dir=work / "cache",
            strict=args.per_subset == 200,
        )
    )
    print(
        f"  export-hub (build + parquet)     {t:7.2f} s  {n / t:7.0f} images/s  "
        f"{size_mb / t:6.1f} MiB/s"
    )


if __name__ == "__main__":
    main()
