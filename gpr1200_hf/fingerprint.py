"""Content fingerprints: what identifies the data and the model behind cached embeddings.

Names, sizes and mtimes are not identity (a file replaced by another of the same size with its
mtime restored looks unchanged), so every fingerprint here covers content: a zip's central
directory CRC32s (verified by ``zipfile`` on every read, so they cost nothing), the bytes of a
folder's files (SHA-256), or the image bytes of a loaded dataset.
"""

from __future__ import annotations

import hashlib
import os
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from .errors import DataError

# hashlib releases the GIL on large buffers: one thread per core (at most 4) keeps them busy.
HASH_THREADS = max(1, min(4, os.cpu_count() or 1))


def file_digest(path: str | Path) -> str:
    """SHA-256 of a file's bytes (hardware-accelerated on current x86 and ARM CPUs)."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def files_fingerprint(files: list[tuple[str, Path]]) -> str:
    """One digest over (name, content digest) of each file, in the given order."""
    with ThreadPoolExecutor(HASH_THREADS) as pool:
        digests = list(pool.map(file_digest, [p for _, p in files]))
    h = hashlib.sha256()
    for (name, _), digest in zip(files, digests, strict=True):
        h.update(f"{name}\0{digest}\n".encode())
    return h.hexdigest()


def zip_fingerprint(path: str | Path) -> str:
    """Names, sizes and CRC32s of every member, from the central directory (no decompression)."""
    try:
        with zipfile.ZipFile(path) as zf:
            infos = zf.infolist()
    except (zipfile.BadZipFile, OSError) as e:
        raise DataError(f"{path}: the zip archive is corrupt or truncated ({e})") from e
    h = hashlib.sha256(b"zip\n")
    for i in sorted(infos, key=lambda i: i.filename):
        h.update(f"{i.filename}\0{i.file_size}\0{i.CRC:08x}\n".encode())
    return h.hexdigest()


def folder_fingerprint(folder: str | Path) -> str:
    """Every file under ``folder`` (relative name and bytes), dotfiles included."""
    folder = Path(folder)
    files = sorted((p.relative_to(folder).as_posix(), p) for p in folder.rglob("*") if p.is_file())
    return files_fingerprint(files)


def source_fingerprint(source: str | Path) -> str:
    """Content fingerprint of a GPR1200 source: the official zip, an images folder (or a folder
    holding ``images/``: the images that the loader reads) or an exported dataset folder
    (README.md and ``data/``)."""
    source = Path(source)
    if source.is_file() and zipfile.is_zipfile(source):
        return "zip-" + zip_fingerprint(source)[:32]
    if source.is_dir():
        if (source / "data").is_dir() and (source / "README.md").is_file():
            files = [("README.md", source / "README.md")]
            data = source / "data"
            shards = [p for p in data.rglob("*") if p.is_file()]
            files += sorted(("data/" + p.relative_to(data).as_posix(), p) for p in shards)
            return "export-" + files_fingerprint(files)[:32]
        from .dataset import list_members

        # Exactly the files the loader reads (and nothing of an unrelated tree: the structure
        # check refuses it first).
        members = list_members(source, strict=False)
        return (
            "folder-" + files_fingerprint([(m.file_name, Path(m.location)) for m in members])[:32]
        )
    if source.is_file():  # not a zip: the loader refuses it with its own message
        return "file-" + files_fingerprint([(source.name, source)])[:32]
    raise DataError(f"{source} does not exist")


def images_fingerprint(dataset, column: str = "image") -> str:
    """The stored bytes (or, for path-only rows, the file bytes) of every image of a
    ``datasets.Dataset``, in row order. For datasets that come from elsewhere (the Hub)."""
    table = dataset.select_columns([column]).with_format("arrow")
    h = hashlib.sha256(b"images\n")
    for batch in table.iter(batch_size=256):
        for value in batch[column].to_pylist():
            data = value.get("bytes") if isinstance(value, dict) else None
            if data is None:
                path = value.get("path") if isinstance(value, dict) else value
                data = Path(path).read_bytes() if path and Path(path).is_file() else b""
                h.update(f"path:{path}\0".encode())
            h.update(hashlib.sha256(data).digest())
    return "images-" + h.hexdigest()[:32]
