"""Folders to upload to the Hub as Spaces, written from the package's own files.

One source of truth: the scoring modules are the package's modules copied byte for byte; the
Space's script, card, app and requirements come from ``metric/gpr1200_map``.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from pathlib import Path

from .assets import asset_dir
from .errors import InputError

PACKAGE_DIR = Path(__file__).resolve().parent

# The modules the metric script imports (evaluate copies exactly these next to it). Each is
# numpy-only at import time and imports only modules of this list, relatively.
METRIC_MODULES: tuple[str, ...] = (
    "errors.py",
    "protocol.py",
    "ranking.py",
    "ranking_torch.py",
    "scoring.py",
)
# What the Space's app.py needs besides: file readers, the paper's table and the chart.
METRIC_APP_MODULES: tuple[str, ...] = ("io.py", "report.py", "plots.py", "data/paper_results.csv")
METRIC_SPACE_FILES: tuple[str, ...] = ("gpr1200_map.py", "README.md", "app.py", "requirements.txt")


def _metric_sources() -> dict[str, Path]:
    """Relative path in the Space folder -> source file."""
    space = asset_dir("_metric_space")
    files = {name: space / name for name in METRIC_SPACE_FILES}
    files |= {name: PACKAGE_DIR / name for name in METRIC_MODULES + METRIC_APP_MODULES}
    return files


def _check_target(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise InputError(f"{out} is a file; give a folder for the Space (it will be created)")
    if out.is_dir() and any(out.iterdir()):
        raise InputError(
            f"{out} is not empty; give a new or empty folder (nothing in it was changed)"
        )


def _copy_all(files: dict[str, Path], out: Path) -> Path:
    """Copy ``files`` into ``out`` (absent or empty) all at once: a failure leaves no half."""
    _check_target(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    try:
        for rel, src in files.items():
            (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, tmp / rel)
        if out.is_dir():
            out.rmdir()
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def export_metric_space(out_dir: str | Path) -> Path:
    """Write the ``gpr1200_map`` metric's Space folder (absent or empty) and return it.

    ``evaluate.load(out_dir / "gpr1200_map.py")`` (or ``evaluate.load(out_dir)`` when the folder
    is named ``gpr1200_map``) then needs only the packages of its ``requirements.txt``.
    """
    return _copy_all(_metric_sources(), Path(out_dir))


def metric_fingerprint() -> str:
    """A hash of every file of the metric's Space folder (names and bytes)."""
    h = hashlib.sha256()
    for rel, src in sorted(_metric_sources().items()):
        h.update(rel.encode() + b"\0" + src.read_bytes() + b"\0")
    return h.hexdigest()


def cache_root() -> Path:
    """``$GPR1200_HF_CACHE``, else ``$XDG_CACHE_HOME/gpr1200_hf``, else ``~/.cache/gpr1200_hf``."""
    if os.environ.get("GPR1200_HF_CACHE"):
        return Path(os.environ["GPR1200_HF_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "gpr1200_hf"


def metric_path() -> str:
    """A folder ``.../gpr1200_map`` that ``evaluate.load`` takes: this package's metric Space.

    Written once per content (the folder name holds a hash of every file), so it always matches
    the installed package.
    """
    folder = cache_root() / "metric" / metric_fingerprint()[:16] / "gpr1200_map"
    if not (folder / "gpr1200_map.py").is_file():
        try:
            export_metric_space(folder)
        except (InputError, OSError):
            # Another process may have written it meanwhile; anything else is a real failure.
            if not (folder / "gpr1200_map.py").is_file():
                raise
    return str(folder)
