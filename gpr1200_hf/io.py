"""Reading embeddings, rankings, labels and run results from files. Never unpickles anything.

Only what is used is read: the data array and the file names of a .npz (each member's .npy
header is checked before a byte of it is decompressed), the used columns of a .parquet, the
used tensors of a .safetensors. Every failure is an ``InputError`` naming the file.
"""

from __future__ import annotations

import json
import re
import zipfile
import zlib
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np

from .protocol import canonical_order
from .ranking import InputError

EMBEDDING_SUFFIXES = (".npy", ".npz", ".safetensors", ".parquet")
ARRAY_KEYS = ("embeddings", "features", "indices", "embedding")
NAME_KEYS = ("file_names", "file_name")
PICKLE_SUFFIXES = (".pkl", ".pickle", ".pck", ".pt", ".pth", ".joblib")
PICKLE_HINT = (
    "pickle files can run arbitrary code when loaded, so they are refused; convert the array "
    "with numpy.save('embeddings.npy', array) or safetensors and pass that file"
)
# Largest array read from any file (12000 x 12000 int64 rankings take 1.2 GB).
MAX_ARRAY_BYTES = 4 << 30
# Compressed data (npz members, parquet columns) above this size may expand at most
# MAX_COMPRESSION_RATIO times: real embeddings and rankings compress far less.
RATIO_CHECK_BYTES = 64 << 20
MAX_COMPRESSION_RATIO = 100
# Longest file name accepted in a file_names array or column (characters).
MAX_NAME_CHARS = 4096
_ALLOWED_KINDS = "biufUS"  # bool, integers, floats, unicode/byte strings


@dataclass
class LoadedArray:
    """An array read from a file, with the file names of its rows when the file has them."""

    array: np.ndarray
    file_names: list[str] | None = None
    metadata: dict | None = None


def check_input_file(path: str | Path) -> Path:
    """``path`` as a Path if it is a readable regular file, else an ``InputError`` saying why."""
    path = Path(path)
    if path.is_dir():
        raise InputError(f"{path}: is a directory; pass a file")
    if not path.exists():
        raise InputError(f"{path}: no such file")
    if not path.is_file():
        raise InputError(f"{path}: not a regular file")
    return path


def _is_pickle(path: Path) -> bool:
    with open(path, "rb") as f:
        head = f.read(2)
    return len(head) == 2 and head[0] == 0x80 and head[1] <= 5


def check_expansion(compressed: int, expanded: int, where: str) -> None:
    """Refuse compressed data that expands implausibly (a decompression bomb)."""
    if expanded > RATIO_CHECK_BYTES and expanded > MAX_COMPRESSION_RATIO * max(compressed, 1):
        raise InputError(
            f"{where}: {_fmt_bytes(compressed)} compressed expand to {_fmt_bytes(expanded)} "
            f"({expanded // max(compressed, 1)}x), which no real embeddings or rankings do; "
            "refused as a likely decompression bomb (store the array uncompressed)"
        )


def _fmt_bytes(n: int) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if n < 1024 or unit == "PiB":
            return f"{n} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} bytes"  # pragma: no cover


# --------------------------------------------------------------------------- .npy / .npz


@dataclass(frozen=True)
class NpyHeader:
    """A checked .npy header: what the array will be, and how many data bytes it needs."""

    shape: tuple[int, ...]
    dtype: np.dtype
    fortran_order: bool
    nbytes: int


def read_npy_header(f: BinaryIO, where: str) -> NpyHeader:
    """Read and check the header of a .npy stream; ``where`` names it in messages."""
    fmt = np.lib.format
    try:
        version = fmt.read_magic(f)
    except ValueError as e:
        raise InputError(
            f"{where}: not a .npy array (no NUMPY header: the file is empty, truncated or of "
            "another type); save the array with numpy.save"
        ) from e
    try:
        if version == (1, 0):
            shape, fortran, dtype = fmt.read_array_header_1_0(f)
        elif version == (2, 0):
            shape, fortran, dtype = fmt.read_array_header_2_0(f)
        else:
            raise ValueError(f"unsupported .npy format version {version}")
    except Exception as e:  # numpy parses the header text: any failure means a bad header
        raise InputError(f"{where}: corrupt .npy header ({e}); save the array again") from e
    if dtype.hasobject:
        raise InputError(
            f"{where}: holds Python objects, which .npy stores with pickle; {PICKLE_HINT}"
        )
    if dtype.kind not in _ALLOWED_KINDS or dtype.fields is not None or dtype.subdtype:
        raise InputError(
            f"{where}: unsupported array type {dtype}; store plain numbers (or strings for "
            "file names)"
        )
    if any(int(s) < 0 for s in shape):
        raise InputError(f"{where}: negative size in shape {shape}")
    count = 1
    for s in shape:
        count *= int(s)  # Python ints: no overflow
    nbytes = count * dtype.itemsize
    if nbytes > MAX_ARRAY_BYTES:
        raise InputError(
            f"{where}: the header declares shape {tuple(shape)} of {dtype} "
            f"({_fmt_bytes(nbytes)}), more than the {_fmt_bytes(MAX_ARRAY_BYTES)} accepted; "
            "the file is corrupt or not a GPR1200 array"
        )
    return NpyHeader(tuple(int(s) for s in shape), dtype, bool(fortran), nbytes)


def read_npy_data(f: BinaryIO, header: NpyHeader, where: str) -> np.ndarray:
    """Read exactly the bytes ``header`` declares (never more) and build the array."""
    buf = bytearray(header.nbytes)
    view = memoryview(buf)
    got = 0
    while got < header.nbytes:
        n = f.readinto(view[got:])
        if not n:
            break
        got += n
    if got != header.nbytes:
        raise InputError(
            f"{where}: truncated: the header declares {header.nbytes} data bytes "
            f"(shape {header.shape}), the file holds {got}; save the array again"
        )
    array = np.frombuffer(buf, dtype=header.dtype)
    order = "F" if header.fortran_order else "C"
    return array.reshape(header.shape, order=order)


def _read_npy(path: Path) -> np.ndarray:
    size = path.stat().st_size
    with open(path, "rb") as f:
        header = read_npy_header(f, str(path))
        available = size - f.tell()
        if header.nbytes > available:
            raise InputError(
                f"{path}: the header declares shape {header.shape} of {header.dtype} "
                f"({_fmt_bytes(header.nbytes)}) but the file holds {_fmt_bytes(available)} "
                "of data: truncated or corrupt; save the array again"
            )
        return read_npy_data(f, header, str(path))


class _Npz:
    """Members of an .npz read lazily and only on request, each checked before reading."""

    def __init__(self, path: Path, zf: zipfile.ZipFile):
        self.path = path
        self.zf = zf
        self.members = {
            info.filename[:-4]: info for info in zf.infolist() if info.filename.endswith(".npy")
        }
        self._headers: dict[str, NpyHeader] = {}

    def where(self, key: str) -> str:
        return f"{self.path} (array {key!r})"

    def header(self, key: str) -> NpyHeader:
        if key not in self._headers:
            with self.zf.open(self.members[key]) as f:
                self._headers[key] = read_npy_header(f, self.where(key))
        return self._headers[key]

    def read(self, key: str) -> np.ndarray:
        info = self.members[key]
        check_expansion(info.compress_size, info.file_size, self.where(key))
        with self.zf.open(info) as f:
            header = read_npy_header(f, self.where(key))
            check_expansion(info.compress_size, header.nbytes, self.where(key))
            declared = info.file_size - f.tell()  # the zip's uncompressed size, less the header
            if header.nbytes > declared:
                raise InputError(
                    f"{self.where(key)}: the .npy header declares {_fmt_bytes(header.nbytes)} "
                    f"but the zip member holds {_fmt_bytes(max(declared, 0))}: corrupt file"
                )
            return read_npy_data(f, header, self.where(key))


def read_npz_arrays(path: str | Path, keys: tuple[str, ...]) -> dict[str, np.ndarray]:
    """The named arrays of an .npz (each checked before reading; other members never read)."""
    path = check_input_file(path)
    if _is_pickle(path):
        raise InputError(f"{path}: {PICKLE_HINT}")
    try:
        with zipfile.ZipFile(path) as zf:
            npz = _Npz(path, zf)
            missing = [k for k in keys if k not in npz.members]
            if missing:
                raise InputError(
                    f"{path}: lacks the arrays {', '.join(missing)} "
                    f"(has: {', '.join(npz.members) or 'none'})"
                )
            return {k: npz.read(k) for k in keys}
    except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError, RuntimeError) as e:
        raise InputError(f"{path}: not a readable .npz archive ({e})") from e


def _read_npz(path: Path) -> LoadedArray:
    try:
        with zipfile.ZipFile(path) as zf:
            npz = _Npz(path, zf)
            key = _pick_key(npz.members, lambda k: len(npz.header(k).shape), path)
            name_key = next((k for k in NAME_KEYS if k in npz.members), None)
            rows = None
            if name_key is not None:
                rows = _check_names_header(npz.header(name_key), npz.where(name_key))
                data = npz.header(key)
                if data.shape and data.shape[0] != rows:
                    raise InputError(
                        f"{path}: {rows} file names for {data.shape[0]} rows; "
                        "there must be one file name per row"
                    )
            array = npz.read(key)
            names = _names(npz.read(name_key)) if name_key else None
            return LoadedArray(array, names)
    except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError, RuntimeError) as e:
        raise InputError(
            f"{path}: not a readable .npz archive ({e}); save the arrays with numpy.savez"
        ) from e


def _check_names_header(header: NpyHeader, where: str) -> int:
    if header.dtype.kind not in "US" or len(header.shape) != 1:
        raise InputError(f"{where}: file names must be a 1-D array of strings")
    chars = header.dtype.itemsize // (4 if header.dtype.kind == "U" else 1)
    if chars > MAX_NAME_CHARS:
        raise InputError(
            f"{where}: file names of up to {chars} characters; at most {MAX_NAME_CHARS} accepted"
        )
    return header.shape[0]


def _pick_key(keys, ndim, path: Path) -> str:
    """The key holding the data: a known name, else the only 2-D array."""
    for key in ARRAY_KEYS:
        if key in keys:
            return key
    candidates = [k for k in keys if k not in NAME_KEYS and ndim(k) == 2]
    if len(candidates) == 1:
        return candidates[0]
    raise InputError(
        f"{path}: cannot tell which array holds the data (keys: {', '.join(keys) or 'none'}); "
        f"name it one of {', '.join(ARRAY_KEYS)}"
    )


def _names(value) -> list[str] | None:
    if value is None:
        return None
    return [str(v) for v in np.asarray(value).reshape(-1).tolist()]


# --------------------------------------------------------------------------- safetensors


def _read_safetensors(path: Path) -> LoadedArray:
    try:
        from safetensors import SafetensorError, safe_open
    except ImportError as e:
        raise InputError("reading .safetensors needs: pip install safetensors") from e
    try:
        with safe_open(str(path), framework="numpy") as f:
            keys = list(f.keys())
            key = _pick_key(keys, lambda k: len(f.get_slice(k).get_shape()), path)
            meta = f.metadata() or {}
            array = f.get_tensor(key)
    except InputError:
        raise
    except SafetensorError as e:
        raise InputError(f"{path}: not a valid .safetensors file ({e})") from e
    except (TypeError, ValueError) as e:  # e.g. a dtype numpy lacks (bf16)
        raise InputError(
            f"{path}: cannot read the tensor as a numpy array ({e}); store float32 or float16"
        ) from e
    names = None
    if "file_names" in meta:
        try:
            names = json.loads(meta["file_names"])
        except json.JSONDecodeError as e:
            raise InputError(
                f"{path}: metadata 'file_names' is not valid JSON ({e}); store "
                "json.dumps(list_of_names)"
            ) from e
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise InputError(f"{path}: metadata 'file_names' must be a JSON list of strings")
    return LoadedArray(array, names, meta)


# --------------------------------------------------------------------------- parquet


def _read_parquet(path: Path) -> LoadedArray:
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError as e:
        raise InputError("reading .parquet needs: pip install pyarrow") from e
    try:
        columns = pq.ParquetFile(path).schema_arrow.names
        column = next((c for c in ARRAY_KEYS if c in columns), None)
        if column is None:
            raise InputError(
                f"{path}: no embeddings column (columns: {', '.join(columns)}); "
                f"name it one of {', '.join(ARRAY_KEYS)}"
            )
        name_col = next((c for c in ("file_name", "file_names") if c in columns), None)
        wanted = [column] + ([name_col] if name_col else [])
        # File names stay dictionary-encoded: a repeated name is not materialised per row.
        pf = pq.ParquetFile(path, read_dictionary=[name_col] if name_col else None)
        _check_parquet_size(pf, column, name_col, path)
        table = pf.read(columns=wanted)  # only the used columns are decompressed
    except (pa.ArrowException, OSError) as e:
        raise InputError(f"{path}: not a readable .parquet file ({e})") from e
    col = table.column(column).combine_chunks()
    if not (pa.types.is_list(col.type) or pa.types.is_large_list(col.type)) or not (
        pa.types.is_integer(col.type.value_type) or pa.types.is_floating(col.type.value_type)
    ):
        raise InputError(f"{path}: column {column!r} must hold lists of numbers, not {col.type}")
    values = col.flatten().to_numpy(zero_copy_only=False)
    lengths = col.value_lengths().to_numpy(zero_copy_only=False)
    if col.null_count or (lengths.size and (lengths != lengths[0]).any()):
        raise InputError(f"{path}: rows of {column!r} differ in length or are null")
    width = int(lengths[0]) if lengths.size else 0
    array = values.reshape(len(col), width)
    names = None
    if name_col is not None:
        names = _parquet_names(table.column(name_col).combine_chunks(), f"{path} ({name_col!r})")
    return LoadedArray(array, names)


def _parquet_names(col, where: str) -> list[str]:
    import pyarrow as pa
    import pyarrow.compute as pc

    if pa.types.is_dictionary(col.type):
        dictionary, indices = col.dictionary, col.indices
    else:
        dictionary, indices = col, None
    if not (pa.types.is_string(dictionary.type) or pa.types.is_large_string(dictionary.type)):
        raise InputError(f"{where}: file names must be strings, not {dictionary.type}")
    if col.null_count:
        raise InputError(f"{where}: has empty (null) file names")
    longest = pc.max(pc.utf8_length(dictionary)).as_py() or 0
    if longest > MAX_NAME_CHARS:
        raise InputError(
            f"{where}: a file name of {longest} characters; at most {MAX_NAME_CHARS} accepted"
        )
    values = dictionary.to_pylist()
    if indices is None:
        return values
    return [values[i] for i in indices.to_numpy(zero_copy_only=False)]


_PARQUET_WIDTH = {"BOOLEAN": 1, "INT32": 4, "FLOAT": 4, "INT64": 8, "DOUBLE": 8}


def _check_parquet_size(pf, column: str, name_col: str | None, path: Path) -> None:
    """Refuse before reading when the used columns would decode to an absurd size: the values
    of ``column`` (counted from the metadata) and the file name pages, against their bytes on
    disk."""
    meta = pf.metadata
    expanded = packed = 0
    for rg in range(meta.num_row_groups):
        group = meta.row_group(rg)
        for c in range(group.num_columns):
            chunk = group.column(c)
            top = chunk.path_in_schema.split(".")[0]
            if top == column:
                width = _PARQUET_WIDTH.get(chunk.physical_type, 8)
                expanded += max(int(chunk.num_values), 0) * width
            elif top == name_col:
                expanded += max(int(chunk.total_uncompressed_size), 0)
            else:
                continue
            packed += max(int(chunk.total_compressed_size), 0)
    where = f"{path} (columns {column}{', ' + name_col if name_col else ''})"
    if expanded > MAX_ARRAY_BYTES:
        raise InputError(
            f"{where}: decode to {_fmt_bytes(expanded)}, more than the "
            f"{_fmt_bytes(MAX_ARRAY_BYTES)} accepted"
        )
    check_expansion(packed, expanded, where)


# --------------------------------------------------------------------------- entry points


def read_array(path: str | Path) -> LoadedArray:
    """Read an (N, D) embeddings or (N, K) indices array from .npy/.npz/.safetensors/.parquet."""
    path = check_input_file(path)
    suffix = path.suffix.lower()
    # Sniff only where a pickle could pose as the file (safetensors/parquet have own headers).
    sniff = suffix not in (".safetensors", ".parquet")
    if suffix in PICKLE_SUFFIXES or (sniff and _is_pickle(path)):
        raise InputError(f"{path}: {PICKLE_HINT}")
    if suffix == ".npy":
        loaded = LoadedArray(_read_npy(path))
    elif suffix == ".npz":
        loaded = _read_npz(path)
    elif suffix == ".safetensors":
        loaded = _read_safetensors(path)
    elif suffix == ".parquet":
        loaded = _read_parquet(path)
    else:
        raise InputError(
            f"{path}: unsupported file type {suffix or '(none)'}; use one of "
            f"{', '.join(EMBEDDING_SUFFIXES)}"
        )
    if loaded.file_names is not None:
        check_unique_names(loaded.file_names, str(path))
    return loaded


def read_text(path: Path, what: str) -> str:
    """A UTF-8 text file (a BOM is accepted); other encodings get a message saying so."""
    data = path.read_bytes()
    if data[:2] in (b"\xff\xfe", b"\xfe\xff"):
        raise InputError(f"{path}: {what} is UTF-16 text; save it as UTF-8")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise InputError(
            f"{path}: {what} is not UTF-8 text (byte {data[e.start]:#04x} at offset {e.start}); "
            "save it as UTF-8"
        ) from e


def read_json(path: str | Path, what: str):
    """Parsed JSON of a UTF-8 file, or an ``InputError`` naming the file and the problem."""
    path = check_input_file(path)
    text = read_text(path, what)
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise InputError(f"{path}: {what} is not valid JSON ({e})") from e
    except RecursionError as e:
        raise InputError(f"{path}: {what} is nested too deeply") from e


RESULTS_FILE = "results.json"


def read_results(path: str | Path) -> dict:
    """A run's results.json (or the one inside a run folder), checked for what tables need."""
    path = Path(path)
    if path.is_dir():
        if not (path / RESULTS_FILE).exists():
            raise InputError(
                f"{path}: no {RESULTS_FILE} in this folder; pass a run folder written by "
                "gpr1200 evaluate"
            )
        path = path / RESULTS_FILE
    data = read_json(path, "results.json")
    problem = _results_problem(data)
    if problem:
        raise InputError(
            f"{path}: not a gpr1200 results.json ({problem}); pass the results.json that "
            "gpr1200 evaluate wrote, or its run folder"
        )
    return data


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and np.isfinite(v)


def _results_problem(data) -> str | None:
    if not isinstance(data, dict):
        return f"a JSON {type(data).__name__}, not an object"
    if not isinstance(data.get("model"), str) or not data["model"]:
        return "no model name"
    metrics = data.get("metrics")
    if not isinstance(metrics, dict) or "map" not in metrics:
        return "no metrics.map"
    for key, value in metrics.items():
        if value is not None and (not _is_number(value) or not 0 <= value <= 1):
            return f"metrics.{key} is {json.dumps(value)[:40]}, not a number in [0, 1]"
    for key in ("pooling", "dtype", "revision"):
        if data.get(key) is not None and not isinstance(data[key], str):
            return f"{key} is not a string"
    for key in ("data", "protocol"):
        if data.get(key) is not None and not isinstance(data[key], dict):
            return f"{key} is not an object"
    images = (data.get("data") or {}).get("num_images")
    if images is not None and (isinstance(images, bool) or not isinstance(images, int)):
        return "data.num_images is not an integer"
    return None


_INT = re.compile(r"-?[0-9]+")
_INT64 = (-(2**63), 2**63 - 1)


def read_labels(path: str | Path) -> np.ndarray:
    """Labels from .npy (no pickle), .json (a list) or text (one label per line)."""
    path = check_input_file(path)
    if path.suffix.lower() == ".npy":
        if _is_pickle(path):
            raise InputError(f"{path}: {PICKLE_HINT}")
        return _read_npy(path)
    if path.suffix.lower() == ".json":
        data = read_json(path, "the labels file")
        if not isinstance(data, list):
            raise InputError(f"{path}: a labels JSON must be a list, one label per row")
        kinds = {_label_kind(v) for v in data}
        if None in kinds:
            bad = next(v for v in data if _label_kind(v) is None)
            raise InputError(
                f"{path}: label {json.dumps(bad)[:40]} is not a number or a string; "
                "a labels JSON is a flat list of numbers or of strings"
            )
        if len(kinds) > 1:
            raise InputError(f"{path}: labels mix numbers and strings; use one kind")
        if kinds == {"int"} and any(not _INT64[0] <= v <= _INT64[1] for v in data):
            raise InputError(f"{path}: integer labels must fit in 64 bits")
        return np.asarray(data)
    text = read_text(path, "the labels file")
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    if lines and all(_INT.fullmatch(v) and _INT64[0] <= int(v) <= _INT64[1] for v in lines):
        return np.asarray([int(v) for v in lines], dtype=np.int64)
    return np.asarray(lines, dtype=str)


def _label_kind(v) -> str | None:
    if isinstance(v, bool):
        return None
    if isinstance(v, int):
        return "int"
    if isinstance(v, float):
        return "float"
    if isinstance(v, str):
        return "str"
    return None


def check_unique_names(names: list[str], where: str) -> None:
    """Refuse repeated file names (compared as canonical order does: without folders)."""
    base = [str(n).replace("\\", "/").rsplit("/", 1)[-1] for n in names]
    if len(set(base)) != len(base):
        name, count = Counter(base).most_common(1)[0]
        raise InputError(
            f"{where}: file name {name!r} appears {count} times; each row must be a different "
            "image with its own file name"
        )


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
    check_unique_names(loaded.file_names, "file names")
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
