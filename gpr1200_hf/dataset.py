"""GPR1200 as a Hugging Face ``datasets.Dataset``: read the official zip or ``images/`` folder.

datasets 5 refuses loading scripts, so the builder lives here and is instantiated directly.
Nothing is extracted and archive member names are never used as output paths: members are
read from the zip in memory, in canonical order.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import zipfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import datasets
from PIL import Image, UnidentifiedImageError

from . import protocol
from .errors import DataError

FEATURES = datasets.Features(
    {
        "image": datasets.Image(),
        "label": datasets.ClassLabel(num_classes=protocol.NUM_CATEGORIES),  # names set per build
        "category_id": datasets.Value("int32"),
        "category_text": datasets.Value("string"),
        "subset": datasets.ClassLabel(names=list(protocol.SUBSET_KEYS)),
        "file_name": datasets.Value("string"),
    }
)
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff")


# --------------------------------------------------------------------------- category text


def sha256_of(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def fetch_categories(cache_dir: str | Path | None = None) -> Path:
    """Download the official category JSON (pinned commit) and verify its sha256."""
    target = Path(cache_dir or Path.home() / ".cache" / "gpr1200_hf") / "categories.json"
    if target.is_file() and sha256_of(target) == protocol.CATEGORIES_SHA256:
        return target
    import urllib.request

    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(".part")
    try:
        with urllib.request.urlopen(protocol.CATEGORIES_URL, timeout=60) as r:
            tmp.write_bytes(r.read())
    except OSError as e:
        raise DataError(
            f"could not download the category JSON from {protocol.CATEGORIES_URL} ({e}); "
            "download it yourself and pass its path (--categories / categories=)"
        ) from e
    digest = sha256_of(tmp)
    if digest != protocol.CATEGORIES_SHA256:
        tmp.unlink()
        raise DataError(
            f"the downloaded category JSON has sha256 {digest}, expected "
            f"{protocol.CATEGORIES_SHA256}; refusing it"
        )
    os.replace(tmp, target)
    return target


def read_categories(path: str | Path, needed: set[int] | None = None) -> list[str]:
    """The 1200 category texts in ID order from a ``{"0": text, ...}`` JSON."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"category JSON {path} does not exist")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DataError(f"category JSON {path} is not valid JSON ({e})") from e
    if not isinstance(data, dict):
        raise DataError(f"category JSON {path} must map category IDs to texts")
    texts = {}
    for key, value in data.items():
        if not str(key).isdigit() or not isinstance(value, str):
            raise DataError(f"category JSON {path}: entry {key!r} is not 'ID': 'text'")
        texts[int(key)] = value
    missing = sorted(set(range(protocol.NUM_CATEGORIES)) - set(texts))
    if needed is not None:
        missing_needed = sorted(needed - set(texts))
        if missing_needed:
            raise DataError(
                f"category JSON {path} has no text for category IDs {missing_needed[:10]}"
            )
    if missing and needed is None:
        raise DataError(f"category JSON {path} lacks {len(missing)} IDs, e.g. {missing[:5]}")
    return [texts.get(i, f"category {i}") for i in range(protocol.NUM_CATEGORIES)]


# --------------------------------------------------------------------------- the source


@dataclass(frozen=True)
class Member:
    """One image of the source: where to read it and what it is."""

    file_name: str  # basename, "{id}_{name}"
    category_id: int
    location: str  # path inside the zip, or path on disk


def _skip(name: str) -> bool:
    """Archive/folder clutter that is not data (directories, macOS metadata, dotfiles)."""
    base = name.rstrip("/").rsplit("/", 1)[-1]
    return name.endswith("/") or name.startswith("__MACOSX/") or base.startswith(".")


def list_members(source: str | Path, strict: bool = True) -> list[Member]:
    """Validate the structure of a zip or folder and list its images in canonical order."""
    source = Path(source)
    if zipfile.is_zipfile(source):
        try:
            with zipfile.ZipFile(source) as zf:
                names = [i.filename for i in zf.infolist()]
        except (zipfile.BadZipFile, OSError) as e:
            raise DataError(f"{source}: the zip archive is corrupt or truncated ({e})") from e
        entries = [(n, n) for n in names if not _skip(n)]
    elif source.is_dir():
        folder = source / "images" if (source / "images").is_dir() else source
        entries = [
            (p.name, str(p)) for p in sorted(folder.iterdir()) if p.is_file() and not _skip(p.name)
        ]
    elif source.exists():
        raise DataError(
            f"{source} is neither a zip archive nor a folder (a truncated download?); "
            f"get GPR1200.zip from {protocol.DATA_URL}"
        )
    else:
        raise DataError(f"{source} does not exist; get GPR1200.zip from {protocol.DATA_URL}")
    members, seen = [], {}
    for name, location in entries:
        base = name.rsplit("/", 1)[-1]
        if not base.lower().endswith(IMAGE_SUFFIXES):
            raise DataError(f"{source}: {name!r} is not an image file")
        try:
            category, _ = protocol.parse_file_name(base)
        except ValueError as e:
            raise DataError(f"{source}: {e}") from None
        if base in seen:
            raise DataError(f"{source}: {base!r} appears twice ({seen[base]!r} and {name!r})")
        seen[base] = name
        members.append(Member(base, category, location))
    if not members:
        raise DataError(f"{source}: no images found")
    counts = Counter(m.category_id for m in members)
    wrong = {c: n for c, n in sorted(counts.items()) if n != protocol.IMAGES_PER_CATEGORY}
    if wrong:
        c, n = next(iter(wrong.items()))
        raise DataError(
            f"{source}: category {c} has {n} images, expected {protocol.IMAGES_PER_CATEGORY} "
            f"({len(wrong)} categories are off)"
        )
    if strict and len(counts) != protocol.NUM_CATEGORIES:
        missing = sorted(set(range(protocol.NUM_CATEGORIES)) - set(counts))
        raise DataError(
            f"{source}: {len(counts)} categories instead of {protocol.NUM_CATEGORIES} (e.g. "
            f"{missing[:5]} are missing); pass strict=False (--no-strict) for a sample"
        )
    members.sort(key=lambda m: (m.category_id, m.file_name))
    return members


def source_fingerprint(source: str | Path) -> str:
    """Cheap identity of a zip or folder (names, sizes, mtimes), for the builder's cache key."""
    source = Path(source)
    h = hashlib.sha256(str(source.resolve()).encode())
    paths = [source] if source.is_file() else sorted(p for p in source.rglob("*") if p.is_file())
    for p in paths:
        st = p.stat()
        h.update(f"{p.name}:{st.st_size}:{st.st_mtime_ns};".encode())
    return h.hexdigest()[:16]


def check_image(data: bytes, where: str) -> None:
    """Refuse bytes that are not an image (header and structure check, no full decode)."""
    try:
        with Image.open(io.BytesIO(data)) as im:
            im.verify()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise DataError(f"{where}: cannot be decoded as an image ({e})") from None


def iter_images(source: str | Path, members: list[Member]):
    """Yield (member, bytes) in the given order; zip members are read in memory."""
    source = Path(source)
    if zipfile.is_zipfile(source):
        try:
            with zipfile.ZipFile(source) as zf:
                for m in members:
                    yield m, zf.read(m.location)
        except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError) as e:
            raise DataError(f"{source}: the zip archive is corrupt or truncated ({e})") from e
    else:
        for m in members:
            yield m, Path(m.location).read_bytes()


# --------------------------------------------------------------------------- the builder


class GPR1200Config(datasets.BuilderConfig):
    """Where the data is: ``source`` (zip or folder) and ``categories`` (JSON path)."""

    def __init__(self, source: str = "", categories: str = "", strict: bool = True, **kwargs):
        super().__init__(**kwargs)
        self.source = source
        self.categories = categories
        self.strict = strict


class GPR1200(datasets.GeneratorBasedBuilder):
    """GPR1200: 12000 images of 1200 categories, one ``test`` split in canonical order."""

    BUILDER_CONFIG_CLASS = GPR1200Config
    VERSION = datasets.Version("1.0.0")

    def _info(self) -> datasets.DatasetInfo:
        features = FEATURES.copy()
        if self.config.categories:
            names = read_categories(self.config.categories, needed=set())
            features["label"] = datasets.ClassLabel(names=names)
        return datasets.DatasetInfo(
            description="GPR1200 general-purpose image-retrieval benchmark",
            features=features,
            citation=protocol.CITATION,
            homepage="https://github.com/Visual-Computing/GPR1200",
            license="Non-commercial research and educational use only",
        )

    def _split_generators(self, dl_manager):
        members = list_members(self.config.source, strict=self.config.strict)
        needed = {m.category_id for m in members}
        texts = read_categories(self.config.categories, needed=needed)
        return [
            datasets.SplitGenerator(
                name=datasets.Split.TEST, gen_kwargs={"members": members, "texts": texts}
            )
        ]

    def _generate_examples(self, members, texts):
        for idx, (m, data) in enumerate(iter_images(self.config.source, members)):
            check_image(data, f"{self.config.source}: {m.file_name}")
            yield (
                idx,
                {
                    "image": {"bytes": data, "path": m.file_name},
                    "label": m.category_id,
                    "category_id": m.category_id,
                    "category_text": texts[m.category_id],
                    "subset": protocol.SUBSET_KEYS.index(protocol.subset_of(m.category_id).key),
                    "file_name": m.file_name,
                },
            )


def load_gpr1200(
    source: str | Path,
    *,
    categories: str | Path | None = None,
    cache_dir: str | Path | None = None,
    strict: bool = True,
) -> datasets.Dataset:
    """GPR1200 from the official zip or ``images/`` folder as a ``datasets.Dataset``.

    ``categories`` is the path of the category JSON; ``None`` downloads the official one and
    verifies its sha256. One split (``test``), rows in canonical order (ascending category ID,
    then file name). ``strict=False`` accepts a sample with fewer categories (10 images each).
    """
    source = Path(source)
    list_members(source, strict=strict)  # fail fast, before anything is written
    categories = Path(categories) if categories else fetch_categories(cache_dir)
    read_categories(categories, needed=None if strict else set())
    builder = GPR1200(
        cache_dir=str(cache_dir) if cache_dir else None,
        # The name keys the cache: a changed zip/folder or JSON builds anew.
        config_name=f"gpr1200-{source_fingerprint(source)}-{sha256_of(categories)[:12]}",
        source=str(source.resolve()),
        categories=str(Path(categories).resolve()),
        strict=strict,
    )
    try:
        builder.download_and_prepare()
    except datasets.exceptions.DatasetGenerationError as e:
        cause = e.__cause__ or e.__context__
        if isinstance(cause, DataError):
            raise cause from None
        raise
    return builder.as_dataset(split="test")
