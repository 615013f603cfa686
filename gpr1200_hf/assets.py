"""Where the package's non-code assets live, in a clone and in an installed wheel.

The repository keeps its top-level folders (``metric/gpr1200_map``, ``dataset_script``,
``spaces/explorer``); ``pyproject.toml`` maps each into the package under the name below, so a
wheel carries copies and a clone (or an editable install) reads the folders themselves. No
symlinks anywhere.
"""

from __future__ import annotations

from pathlib import Path

from .errors import InputError

# package sub-folder in a wheel -> folder in the repository (mirrored in pyproject.toml)
ASSET_DIRS: dict[str, str] = {
    "_metric_space": "metric/gpr1200_map",
    "_dataset_card": "dataset_script",
    "_explorer_space": "spaces/explorer",
}


def asset_dir(name: str) -> Path:
    """The folder of asset ``name`` (a key of ``ASSET_DIRS``), installed or in the clone."""
    here = Path(__file__).resolve().parent
    for candidate in (here / name, here.parent / ASSET_DIRS[name]):
        if candidate.is_dir():
            return candidate
    raise InputError(
        f"the package's {ASSET_DIRS[name]} folder is missing from {here}; reinstall gpr1200-hf"
    )
