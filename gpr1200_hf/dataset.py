"""GPR1200 as a Hugging Face ``datasets.Dataset``: read the official zip or ``images/`` folder.

datasets 5 refuses loading scripts, so the builder lives here and is instantiated directly.
Nothing is extracted and archive member names are never used as output paths: members are
read from the zip in memory, in canonical order.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import re
import stat
import warnings
import zipfile
import zlib
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import datasets
from PIL import Image, ImageFile, UnidentifiedImageError

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
# Caps on one image (the largest official GPR1200 images are a few MB and a few megapixels):
# a member above MAX_IMAGE_BYTES (declared in the zip directory, on disk, or actually read) is
# never read whole; an image whose header declares more than MAX_IMAGE_PIXELS is never decoded.
MAX_IMAGE_BYTES = 64 * 2**20
MAX_IMAGE_PIXELS = 8192 * 8192
READ_PIECE = 1 << 20
MAX_CATEGORIES_BYTES = 16 * 2**20  # the official category JSON is about 50 KB
SKIPPED_HEADER = "Skipped (strict=False), unreadable images:"
# An export-hub folder: data/test-0000i-of-0000n.parquet + README.md, written in a hidden
# EXPORT_PARTIAL folder first and moved into place README last.
SHARD_RE = re.compile(r"test-(\d{5})-of-(\d{5})\.parquet")
EXPORT_PARTIAL = ".export-partial"
logger = logging.getLogger("gpr1200_hf")


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


def _unique_pairs(path: Path):
    def hook(pairs: list[tuple[str, object]]) -> dict:
        seen: dict[str, object] = {}
        for key, value in pairs:
            if key in seen:
                raise DataError(f"category JSON {path}: key {key!r} appears more than once")
            seen[key] = value
        return seen

    return hook


def read_categories(path: str | Path, needed: set[int] | None = None) -> list[str]:
    """The 1200 category texts in ID order from a ``{"0": text, ...}`` JSON.

    Keys must be distinct ASCII decimal integers 0-1199 without leading zeros, values strings.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"category JSON {path} does not exist")
    if path.stat().st_size > MAX_CATEGORIES_BYTES:
        raise DataError(
            f"category JSON {path} is {path.stat().st_size} bytes, more than the "
            f"{MAX_CATEGORIES_BYTES} a list of 1200 category texts can need"
        )
    try:
        data = json.loads(path.read_text(encoding="utf-8"), object_pairs_hook=_unique_pairs(path))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DataError(f"category JSON {path} is not valid JSON ({e})") from e
    except RecursionError:
        raise DataError(f"category JSON {path} is nested too deeply") from None
    if not isinstance(data, dict):
        raise DataError(f"category JSON {path} must map category IDs to texts")
    texts = {}
    for key, value in data.items():
        if not re.fullmatch(r"0|[1-9][0-9]*", key) or int(key) >= protocol.NUM_CATEGORIES:
            raise DataError(
                f"category JSON {path}: key {key!r} is not a category ID "
                f"(a decimal integer 0-{protocol.NUM_CATEGORIES - 1} without leading zeros)"
            )
        if not isinstance(value, str):
            raise DataError(
                f"category JSON {path}: the value of key {key!r} is "
                f"{type(value).__name__}, not a text string"
            )
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


def label_names(texts: list[str]) -> list[str]:
    """ClassLabel names from the category texts: the texts themselves, except that texts shared
    by several categories (the official JSON gives 590 and 603 both "plate") get
    `` (category N)`` appended, since ClassLabel names must be unique. The ``category_text``
    column keeps every text exactly as in the JSON."""
    counts: dict[str, int] = {}
    for text in texts:
        counts[text] = counts.get(text, 0) + 1
    names = [t if counts[t] == 1 else f"{t} (category {i})" for i, t in enumerate(texts)]
    if len(set(names)) != len(names):  # a text that already reads like a disambiguated one
        names = [f"{t} (category {i})" for i, t in enumerate(texts)]
    return names


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


def _zip_entries(source: Path) -> list[tuple[str, str]]:
    """(name, member name) of a zip's files; symbolic-link members are refused."""
    try:
        with zipfile.ZipFile(source) as zf:
            infos = zf.infolist()
    except (zipfile.BadZipFile, OSError) as e:
        raise DataError(f"{source}: the zip archive is corrupt or truncated ({e})") from e
    for info in infos:
        if stat.S_ISLNK(info.external_attr >> 16):
            raise DataError(f"{source}: member {info.filename!r} is a symbolic link; refusing it")
    return [(i.filename, i.filename) for i in infos if not _skip(i.filename)]


def _folder_entries(source: Path) -> list[tuple[str, str]]:
    """(name, path) of a folder's files (its ``images/`` if present).

    Symbolic links are followed only while they stay inside the source folder; a link that
    leaves it (or is broken) is refused, so no outside file is ever read.
    """
    root = source.resolve()
    folder = source / "images" if (source / "images").is_dir() else source
    if not folder.resolve().is_relative_to(root):
        raise DataError(
            f"{source}: {folder.name}/ is a link to {folder.resolve()}, outside the source "
            "folder; pass that folder itself"
        )
    entries = []
    for p in sorted(folder.iterdir()):
        if _skip(p.name):
            continue
        target = p
        if stat.S_ISLNK(p.lstat().st_mode):
            target = p.resolve()
            if not target.is_relative_to(root):
                raise DataError(
                    f"{source}: {p.name!r} is a symbolic link to {target}, outside the source "
                    "folder; refusing it (copy the file in instead)"
                )
            if not target.exists():
                raise DataError(f"{source}: {p.name!r} is a broken symbolic link")
        if target.is_file():
            entries.append((p.name, str(target)))
    return entries


def list_members(source: str | Path, strict: bool = True) -> list[Member]:
    """Validate the structure of a zip or folder and list its images in canonical order."""
    source = Path(source)
    if zipfile.is_zipfile(source):
        entries = _zip_entries(source)
    elif source.is_dir():
        if not (source / "images").is_dir():
            _refuse_export_folder(source)
        entries = _folder_entries(source)
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
            f"{missing[:5]} are missing); for a sample pass strict=False (on the command "
            "line: --no-strict)"
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


class ImageProblem(DataError):
    """One image cannot be used (too large, a decompression bomb, truncated, undecodable).

    ``strict=True`` refuses the source; ``strict=False`` skips the image and reports it.
    """

    def __init__(self, where: str, reason: str):
        super().__init__(f"{where}: {reason}")
        self.where, self.reason = where, reason


def _too_large(size: int) -> str:
    return f"{size} bytes, more than the cap of {MAX_IMAGE_BYTES} bytes (MAX_IMAGE_BYTES)"


def _read_capped(f, where: str) -> bytes:
    """All of ``f``, read in bounded pieces; refused as soon as it passes MAX_IMAGE_BYTES."""
    pieces, total = [], 0
    while piece := f.read(min(READ_PIECE, MAX_IMAGE_BYTES + 1 - total)):
        total += len(piece)
        if total > MAX_IMAGE_BYTES:
            raise ImageProblem(where, f"holds more than {MAX_IMAGE_BYTES} bytes (MAX_IMAGE_BYTES)")
        pieces.append(piece)
    return pieces[0] if len(pieces) == 1 else b"".join(pieces)


def check_image(data: bytes, where: str) -> None:
    """Refuse bytes that are not one whole image of at most MAX_IMAGE_PIXELS pixels.

    The pixel count is taken from the header before anything is decoded. A JPEG whose last
    two bytes are its end-of-image marker (after the start of its scan data) is whole: that
    marker cannot occur inside entropy-coded data, so a truncated file cannot end with it.
    Any other image (a JPEG with bytes after its end marker, PNG, GIF, ...) is decoded
    completely, JPEG at 1/8 scale, which still reads all of its compressed data.
    """
    saved = ImageFile.LOAD_TRUNCATED_IMAGES
    ImageFile.LOAD_TRUNCATED_IMAGES = False  # a truncated file must raise, whatever was set
    try:
        _decode(data, where)
    except ImageProblem:
        raise
    except Image.DecompressionBombError as e:  # above PIL's own limit, refused at open
        raise ImageProblem(where, _bomb(str(e))) from None
    except UnidentifiedImageError:
        raise ImageProblem(where, "cannot be decoded as an image (unknown format)") from None
    except (OSError, SyntaxError, ValueError, EOFError, MemoryError) as e:
        raise ImageProblem(where, f"cannot be decoded as an image ({e})") from None
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = saved


def _decode(data: bytes, where: str) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        with Image.open(io.BytesIO(data)) as im:
            width, height = im.size
            if width * height > MAX_IMAGE_PIXELS:
                raise ImageProblem(where, _bomb(f"{width}x{height}"))
            is_jpeg = im.format == "JPEG"
            im.verify()
        if is_jpeg and data.endswith(b"\xff\xd9") and len(data) - 2 > _jpeg_scan_start(data):
            return
        with Image.open(io.BytesIO(data)) as im:
            if is_jpeg:
                im.draft(im.mode, (1, 1))
            im.load()


def _jpeg_scan_start(data: bytes) -> int:
    """Offset of a JPEG's first start-of-scan marker (walking the segments from the start of
    image), or ``len(data)`` where the segments end before one: cut in the headers."""
    i = 2
    while i + 4 <= len(data) and data[i] == 0xFF:
        marker = data[i + 1]
        if marker == 0xDA:
            return i
        if marker == 0xFF:  # a fill byte
            i += 1
        elif 0xD0 <= marker <= 0xD8 or marker == 0x01:  # markers without a length
            i += 2
        else:
            i += 2 + int.from_bytes(data[i + 2 : i + 4], "big")
    return len(data)


def _bomb(size: str) -> str:
    return (
        f"has too many pixels ({size}), more than the cap of {MAX_IMAGE_PIXELS} "
        "(MAX_IMAGE_PIXELS); refusing to decode it"
    )


def iter_images(
    source: str | Path, members: list[Member]
) -> Iterator[tuple[Member, bytes | ImageProblem]]:
    """Yield (member, bytes) in the given order, or (member, problem) for an unusable image.

    Zip members are read in memory; sizes are capped (declared and read) before reading.
    """
    source = Path(source)
    if zipfile.is_zipfile(source):
        try:
            with zipfile.ZipFile(source) as zf:
                for m in members:
                    yield m, _zip_member(zf, m, f"{source}: {m.location}")
        except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError, zlib.error) as e:
            raise DataError(f"{source}: the zip archive is corrupt or truncated ({e})") from e
    else:
        for m in members:
            yield m, _folder_member(m, f"{source}: {m.file_name}")


def _zip_member(zf: zipfile.ZipFile, m: Member, where: str) -> bytes | ImageProblem:
    info = zf.getinfo(m.location)
    if info.file_size > MAX_IMAGE_BYTES:
        return ImageProblem(where, f"declares {_too_large(info.file_size)}")
    try:
        with zf.open(info) as f:
            return _read_capped(f, where)
    except ImageProblem as e:
        return e


def _folder_member(m: Member, where: str) -> bytes | ImageProblem:
    try:
        fd = os.open(m.location, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except OSError as e:  # gone, unreadable, or replaced by a link since it was listed
        raise DataError(f"{where}: cannot be read ({e})") from e
    with os.fdopen(fd, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        if size > MAX_IMAGE_BYTES:
            return ImageProblem(where, f"is {_too_large(size)}")
        try:
            return _read_capped(f, where)
        except ImageProblem as e:
            return e


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
            texts = read_categories(self.config.categories, needed=set())
            features["label"] = datasets.ClassLabel(names=label_names(texts))
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
        skipped = []
        for idx, (m, data) in enumerate(iter_images(self.config.source, members)):
            where = f"{self.config.source}: {m.file_name}"
            try:
                if isinstance(data, ImageProblem):
                    raise data
                check_image(data, where)
            except ImageProblem as e:
                if self.config.strict:
                    raise
                skipped.append(f"{m.file_name}: {e.reason}")
                continue
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
        if skipped:  # saved with the build's info, so a cached load reports them again
            self.info.description += "\n\n" + "\n".join([SKIPPED_HEADER, *skipped])


def skipped_images(ds: datasets.Dataset) -> list[str]:
    """``'file name: reason'`` for each image a ``strict=False`` build skipped."""
    _, _, tail = (ds.info.description or "").partition(SKIPPED_HEADER + "\n")
    return tail.splitlines()


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
    then file name). An image that is too large, truncated or undecodable stops the build
    with an error naming it. ``strict=False`` accepts a sample with fewer categories (10
    images each) and skips such images instead: each is logged as a warning and listed by
    ``skipped_images(ds)`` (and in ``ds.info.description``).
    """
    source = Path(source)
    list_members(source, strict=strict)  # fail fast, before anything is written
    categories = Path(categories) if categories else fetch_categories(cache_dir)
    read_categories(categories, needed=None if strict else set())
    mode = "strict" if strict else "lenient"
    builder = GPR1200(
        cache_dir=str(cache_dir) if cache_dir else None,
        # The name keys the cache: a changed zip/folder or JSON, or the mode, builds anew.
        config_name=f"gpr1200-{source_fingerprint(source)}-{sha256_of(categories)[:12]}-{mode}",
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
    ds = builder.as_dataset(split="test")
    for line in skipped_images(ds):
        logger.warning("warning: skipped %s: %s", source, line)
    if len(ds) == 0:
        raise DataError(f"{source}: none of its images can be used")
    return ds


# --------------------------------------------------------------------------- exported folders


def _refuse_export_folder(source: Path) -> None:
    """A folder that holds an export (complete or not) is not an images folder."""
    if not list((source / "data").glob("*.parquet")) and not (source / EXPORT_PARTIAL).exists():
        return
    if (source / "README.md").is_file():
        raise DataError(
            f"{source} is an exported dataset folder, not an images folder; load it with "
            "gpr1200_hf.dataset.load_exported (or --data, which does)"
        )
    raise DataError(
        f"{source} holds parquet shards but no README.md: an incomplete export-hub run; "
        "run export-hub again"
    )


def shard_files(data_dir: Path) -> list[Path]:
    """The shards of an exported folder, checked to be exactly test-00000..n-1-of-n."""
    found = sorted(p for p in data_dir.glob("*.parquet")) if data_dir.is_dir() else []
    if not found:
        raise DataError(f"{data_dir} holds no parquet shards; run export-hub again")
    counts = set()
    for p in found:
        match = SHARD_RE.fullmatch(p.name)
        if not match:
            raise DataError(f"{data_dir}: {p.name!r} is not an export-hub shard name")
        counts.add(int(match.group(2)))
    n = max(counts)
    want = [f"test-{i:05d}-of-{n:05d}.parquet" for i in range(n)]
    if [p.name for p in found] != want:
        missing = sorted(set(want) - {p.name for p in found})
        extra = sorted({p.name for p in found} - set(want))
        raise DataError(
            f"{data_dir}: the shards are incomplete or mixed (missing {missing[:3]}, "
            f"unexpected {extra[:3]}); run export-hub again"
        )
    return found


def load_exported(path: str | Path, *, cache_dir: str | Path | None = None) -> datasets.Dataset:
    """An ``export-hub`` folder as a ``datasets.Dataset``, refused unless README and shards agree.

    Refused: no README.md (an export stopped before its end), missing or foreign shards,
    a row count or features in the README that the shards do not have.
    """
    path = Path(path)
    if not (path / "README.md").is_file():
        raise DataError(f"{path}: no README.md, so not a complete export; run export-hub again")
    shard_files(path / "data")
    try:
        ds = datasets.load_dataset(
            str(path), split="test", cache_dir=str(cache_dir) if cache_dir else None
        )
    except datasets.exceptions.NonMatchingSplitsSizesError as e:
        raise DataError(f"{path}: README.md does not match the shards: {_sizes(e)}") from None
    except (ValueError, TypeError, KeyError, OSError, datasets.exceptions.DatasetsError) as e:
        raise DataError(
            f"{path}: README.md and the shards do not agree or are unreadable ({e})"
        ) from None
    _check_export_features(path, ds.features)
    return ds


def _sizes(e: Exception) -> str:
    """``it declares X rows, the shards hold Y`` from datasets' (stringified) split report."""
    found = re.findall(r"'(expected|recorded)': SplitInfo\(.*?num_examples=(\d+)", str(e))
    rows = dict(found)
    if set(rows) == {"expected", "recorded"}:
        return f"it declares {rows['expected']} rows, the shards hold {rows['recorded']}"
    return str(e)


def _check_export_features(path: Path, features: datasets.Features) -> None:
    """The features of load_gpr1200's datasets (category texts may differ)."""
    want = FEATURES.copy()
    label = features.get("label")
    if isinstance(label, datasets.ClassLabel) and label.num_classes == protocol.NUM_CATEGORIES:
        want["label"] = label
    if features != want:
        differ = sorted(
            k for k in set(want) | set(features) if str(want.get(k)) != str(features.get(k))
        )
        raise DataError(
            f"{path}: the features {differ} are not those of a GPR1200 export "
            f"(README.md or the shards were changed); run export-hub again"
        )
