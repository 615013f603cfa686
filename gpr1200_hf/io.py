"""Reading embeddings, rankings and labels from files. Never unpickles anything."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .protocol import canonical_order
from .ranking import InputError

EMBEDDING_SUFFIXES = (".npy", ".npz", ".safetensors", ".parquet")
ARRAY_KEYS = ("embeddings", "features", "indices", "embedding")
PICKLE_SUFFIXES = (".pkl", ".pickle", ".pck", ".pt", ".pth", ".joblib")
PICKLE_HINT = (
    "pickle files can run arbitrary code when loaded, so they are refused; convert the array "
    "with numpy.save('embeddings.npy', array) or safetensors and pass that file"
)


@dataclass
class LoadedArray:
    """An array read from a file, with the file names of its rows when the file has them."""

    array: np.ndarray
    file_names: list[str] | None = None
    metadata: dict | None = None


def _is_pickle(path: Path) -> bool:
    with open(path, "rb") as f:
        head = f.read(2)
    return len(head) == 2 and head[0] == 0x80 and head[1] <= 5


def _pick(arrays: dict, path: Path) -> np.ndarray:
    for key in ARRAY_KEYS:
        if key in arrays:
            return arrays[key]
    candidates = [k for k, a in arrays.items() if getattr(a, "ndim", 0) == 2]
    if len(candidates) == 1:
        return arrays[candidates[0]]
    raise InputError(
        f"{path}: cannot tell which array holds the data (keys: {', '.join(arrays) or 'none'}); "
        f"name it one of {', '.join(ARRAY_KEYS)}"
    )


def _names(value) -> list[str] | None:
    if value is None:
        return None
    return [str(v) for v in np.asarray(value).reshape(-1).tolist()]


def read_array(path: str | Path) -> LoadedArray:
    """Read an (N, D) embeddings or (N, K) indices array from .npy/.npz/.safetensors/.parquet."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    suffix = path.suffix.lower()
    # Sniff only where a pickle could pose as the file (safetensors/parquet have own headers).
    sniff = suffix not in (".safetensors", ".parquet")
    if suffix in PICKLE_SUFFIXES or (sniff and _is_pickle(path)):
        raise InputError(f"{path}: {PICKLE_HINT}")
    if suffix == ".npy":
        try:
            return LoadedArray(np.load(path, allow_pickle=False))
        except ValueError as e:
            raise InputError(f"{path}: not a plain numeric .npy array ({e}); {PICKLE_HINT}") from e
    if suffix == ".npz":
        try:
            with np.load(path, allow_pickle=False) as z:
                arrays = {k: z[k] for k in z.files}
        except ValueError as e:
            raise InputError(f"{path}: holds object arrays ({e}); {PICKLE_HINT}") from e
        names = arrays.pop("file_names", arrays.pop("file_name", None))
        return LoadedArray(_pick(arrays, path), _names(names))
    if suffix == ".safetensors":
        try:
            from safetensors import safe_open
        except ImportError as e:
            raise InputError("reading .safetensors needs: pip install safetensors") from e
        with safe_open(str(path), framework="numpy") as f:
            arrays = {k: f.get_tensor(k) for k in f.keys()}
            meta = f.metadata() or {}
        names = json.loads(meta["file_names"]) if "file_names" in meta else None
        return LoadedArray(_pick(arrays, path), names, meta)
    if suffix == ".parquet":
        return _read_parquet(path)
    raise InputError(
        f"{path}: unsupported file type {suffix or '(none)'}; use one of "
        f"{', '.join(EMBEDDING_SUFFIXES)}"
    )


def _read_parquet(path: Path) -> LoadedArray:
    try:
        import pyarrow.parquet as pq
    except ImportError as e:
        raise InputError("reading .parquet needs: pip install pyarrow") from e
    table = pq.read_table(path)
    column = next((c for c in ARRAY_KEYS if c in table.column_names), None)
    if column is None:
        raise InputError(
            f"{path}: no embeddings column (columns: {', '.join(table.column_names)}); "
            f"name it one of {', '.join(ARRAY_KEYS)}"
        )
    col = table.column(column).combine_chunks()
    try:
        values = col.flatten().to_numpy(zero_copy_only=False)
        lengths = col.value_lengths().to_numpy(zero_copy_only=False)
    except (AttributeError, NotImplementedError) as e:
        raise InputError(f"{path}: column {column!r} must hold lists of numbers") from e
    if col.null_count or (lengths.size and (lengths != lengths[0]).any()):
        raise InputError(f"{path}: rows of {column!r} differ in length or are null")
    width = int(lengths[0]) if lengths.size else 0
    array = values.reshape(len(col), width)
    names = None
    for name_col in ("file_name", "file_names"):
        if name_col in table.column_names:
            names = [str(v) for v in table.column(name_col).to_pylist()]
    return LoadedArray(array, names)


def read_labels(path: str | Path) -> np.ndarray:
    """Labels from .npy (no pickle), .json (a list) or text (one label per line)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    if path.suffix.lower() == ".npy":
        try:
            return np.load(path, allow_pickle=False)
        except ValueError as e:
            raise InputError(f"{path}: not a plain .npy array ({e}); {PICKLE_HINT}") from e
    if path.suffix.lower() == ".json":
        data = json.loads(path.read_text())
        if not isinstance(data, list):
            raise InputError(f"{path}: a labels JSON must be a list, one label per row")
        return np.asarray(data)
    lines = [ln.strip() for ln in path.read_text().splitlines() if ln.strip()]
    return np.asarray([int(v) if v.lstrip("-").isdigit() else v for v in lines])


def in_canonical_order(loaded: LoadedArray) -> tuple[np.ndarray, np.ndarray | None]:
    """(rows in canonical GPR1200 order, their category IDs) when file names are known;
    otherwise the rows as they are and ``None`` labels."""
    if loaded.file_names is None:
        return loaded.array, None
    order, labels = canonical_order_checked(loaded)
    return loaded.array[order], labels


def canonical_order_checked(loaded: LoadedArray) -> tuple[np.ndarray, np.ndarray]:
    """(canonical permutation, category IDs in canonical order) from the file names."""
    if len(loaded.file_names) != loaded.array.shape[0]:
        raise InputError(
            f"{len(loaded.file_names)} file names for {loaded.array.shape[0]} rows; "
            "there must be one file name per row"
        )
    try:
        return canonical_order(loaded.file_names)
    except ValueError as e:
        raise InputError(str(e)) from e


def load_for_scoring(path: str | Path, mode: str, labels_path: str | None):
    """(array, labels or None) ready for scoring: canonical order when the file names rows.

    In indices mode the ranked positions are renumbered into canonical order as well.
    """
    loaded = read_array(path)
    labels = read_labels(labels_path) if labels_path else None
    if loaded.file_names is not None and labels is None:
        array = np.asarray(loaded.array)
        if mode == "indices":
            from .scoring import validate_indices

            array = validate_indices(array)
            order, labels = canonical_order_checked(loaded)
            inverse = np.empty_like(order)
            inverse[order] = np.arange(order.size)
            return inverse[array[order]], labels
        return in_canonical_order(loaded)
    return loaded.array, labels
