"""A generated GPR1200-format sample: the test fixture and the offline quick start.

Images of a category share a prototype (shape, colours, texture); each image varies it
(position, scale, rotation, noise, crop, some grayscale), so a colour/texture baseline scores
clearly above chance and clearly below 1.0.
"""

from __future__ import annotations

import json
import os
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from . import protocol
from .errors import InputError

CATEGORIES_FILE = "GPR1200_categoryNumber_to_text.json"
SHAPES = ("circle", "square", "triangle", "cross", "ring", "diamond")
TEXTURES = ("plain", "stripes", "checker", "dots")
# The names make_demo gives its images: the only files it removes from an earlier sample.
DEMO_NAME = re.compile(rf"[0-9]+_({'|'.join(SHAPES)})_[0-9]{{2}}_demo\.jpg")
# The comment of make_demo's zip: the only GPR1200.zip it replaces.
DEMO_ZIP_COMMENT = b"gpr1200-hf make-demo sample"
# The texts make_demo writes to the category JSON: the only such JSON it replaces.
_DEMO_TEXT = re.compile(
    rf"not in this demo sample \(category [0-9]+\)"
    rf"|demo [^:]+: ({'|'.join(TEXTURES)}) ({'|'.join(SHAPES)}) \(#[0-9a-f]{{6}}\)"
)


@dataclass(frozen=True)
class Prototype:
    category_id: int
    shape: str
    texture: str
    background: tuple[int, int, int]
    foreground: tuple[int, int, int]
    accent: tuple[int, int, int]

    @property
    def text(self) -> str:
        subset = protocol.subset_of(self.category_id).display_name
        fg = "#" + "".join(f"{c:02x}" for c in self.foreground)
        return f"demo {subset}: {self.texture} {self.shape} ({fg})"


def _color(rng: np.random.Generator) -> tuple[int, int, int]:
    return tuple(int(c) for c in rng.integers(0, 256, 3))


def prototype(category_id: int, seed: int) -> Prototype:
    rng = np.random.default_rng([seed, category_id])
    return Prototype(
        category_id,
        SHAPES[int(rng.integers(len(SHAPES)))],
        TEXTURES[int(rng.integers(len(TEXTURES)))],
        _color(rng),
        _color(rng),
        _color(rng),
    )


def _texture(draw: ImageDraw.ImageDraw, size: int, proto: Prototype, rng) -> None:
    step = max(4, size // int(rng.integers(6, 10)))
    if proto.texture == "stripes":
        for x in range(-size, 2 * size, step):
            draw.line([(x, 0), (x + size // 2, size)], fill=proto.accent, width=max(1, step // 3))
    elif proto.texture == "checker":
        for i in range(0, size, step):
            for j in range(0, size, step):
                if (i // step + j // step) % 2 == 0:
                    draw.rectangle([i, j, i + step - 1, j + step - 1], fill=proto.accent)
    elif proto.texture == "dots":
        for i in range(step // 2, size, step):
            for j in range(step // 2, size, step):
                r = max(1, step // 4)
                draw.ellipse([i - r, j - r, i + r, j + r], fill=proto.accent)


def _shape(draw: ImageDraw.ImageDraw, box, proto: Prototype) -> None:
    x0, y0, x1, y1 = box
    cx, cy, w = (x0 + x1) / 2, (y0 + y1) / 2, (x1 - x0)
    fg = proto.foreground
    if proto.shape == "circle":
        draw.ellipse(box, fill=fg)
    elif proto.shape == "square":
        draw.rectangle(box, fill=fg)
    elif proto.shape == "triangle":
        draw.polygon([(cx, y0), (x1, y1), (x0, y1)], fill=fg)
    elif proto.shape == "cross":
        t = w / 6
        draw.rectangle([cx - t, y0, cx + t, y1], fill=fg)
        draw.rectangle([x0, cy - t, x1, cy + t], fill=fg)
    elif proto.shape == "ring":
        draw.ellipse(box, outline=fg, width=max(2, int(w / 6)))
    else:
        draw.polygon([(cx, y0), (x1, cy), (cx, y1), (x0, cy)], fill=fg)


def render(proto: Prototype, index: int, seed: int, size: int) -> Image.Image:
    """One image of a category: the prototype with per-image variation."""
    rng = np.random.default_rng([seed, proto.category_id, index, 7])
    canvas = int(size * 1.25)
    img = Image.new("RGB", (canvas, canvas), proto.background)
    draw = ImageDraw.Draw(img)
    _texture(draw, canvas, proto, rng)
    scale = rng.uniform(0.35, 0.7) * canvas
    cx, cy = rng.uniform(scale / 2, canvas - scale / 2, 2)
    _shape(draw, [cx - scale / 2, cy - scale / 2, cx + scale / 2, cy + scale / 2], proto)
    img = img.rotate(float(rng.uniform(-30, 30)), fillcolor=proto.background)
    left, top = rng.integers(0, canvas - size + 1, 2)
    img = img.crop((int(left), int(top), int(left) + size, int(top) + size))
    arr = np.asarray(img, dtype=np.float32)
    arr = arr * rng.uniform(0.8, 1.2) + rng.normal(0, rng.uniform(4, 18), arr.shape)
    img = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))
    if rng.random() < 0.3:
        img = img.filter(ImageFilter.GaussianBlur(float(rng.uniform(0.5, 1.5))))
    if rng.random() < 0.2:
        img = img.convert("L")
    return img


def sample_categories(per_subset: int, seed: int) -> list[int]:
    rng = np.random.default_rng([seed, 1200])
    ids = []
    for subset in protocol.SUBSETS:
        pool = np.arange(subset.first_category, subset.last_category + 1)
        ids += sorted(int(i) for i in rng.choice(pool, per_subset, replace=False))
    return ids


def make_demo(
    out_dir: str | Path,
    *,
    per_subset: int = 4,
    seed: int = 0,
    size: tuple[int, int] = (96, 160),
    as_zip: bool = False,
    quality: int = 90,
    workers: int = 1,
) -> tuple[Path, Path]:
    """Write a sample in the official format; returns (images folder or zip, category JSON).

    ``per_subset`` categories from each subset's ID range, 10 images each, named
    ``{category ID}_{name}.jpg``; the JSON maps all 1200 IDs to a text. In an existing
    folder the files of an earlier sample are replaced; any other file in ``images/``, a
    ``GPR1200.zip`` or category JSON not written here (or a file at ``out_dir``) is an
    ``InputError`` and nothing is written.
    """
    if not 1 <= per_subset <= 200:
        raise InputError("per_subset must be between 1 and 200")
    out = Path(out_dir)
    _prepare_folder(out, as_zip)
    ids = sample_categories(per_subset, seed)
    texts = {str(i): f"not in this demo sample (category {i})" for i in range(1200)}
    for cid in ids:
        texts[str(cid)] = prototype(cid, seed).text
    jobs = [(cid, seed, size, quality) for cid in ids]
    if workers > 1:
        from multiprocessing import Pool

        with Pool(workers) as pool:
            rendered = pool.starmap(_category_files, jobs)
    else:
        rendered = [_category_files(*job) for job in jobs]
    files = [f for per_category in rendered for f in per_category]
    categories = out / CATEGORIES_FILE
    _write_atomic(categories, json.dumps(texts, indent=0, ensure_ascii=False).encode())
    if as_zip:
        target = out / "GPR1200.zip"
        part = target.with_name(target.name + ".part")
        with zipfile.ZipFile(part, "w", zipfile.ZIP_STORED) as zf:
            zf.comment = DEMO_ZIP_COMMENT
            for name, data in files:
                zf.writestr(f"images/{name}", data)
        os.replace(part, target)
        return target, categories
    images = out / "images"
    for old in images.iterdir():  # an earlier sample's images (checked: only make_demo's names)
        if DEMO_NAME.fullmatch(old.name):
            old.unlink()
    for name, data in files:
        (images / name).write_bytes(data)
    return images, categories


def _prepare_folder(out: Path, as_zip: bool) -> None:
    """Create ``out``; refuse a file there, or an ``images/`` holding files not made here.

    Images of an earlier sample (make_demo's own file names) are replaced, never mixed in;
    any other file stops the command before anything is written.
    """
    if out.exists() and not out.is_dir():
        raise InputError(f"{out} exists and is not a folder; choose a folder for the sample")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise InputError(f"cannot create the folder {out} ({e})") from None
    for name, ours in ((CATEGORIES_FILE, _is_demo_json), ("GPR1200.zip", _is_demo_zip)):
        path = out / name
        if name == "GPR1200.zip" and not as_zip:
            continue
        if path.is_symlink() or (path.exists() and not path.is_file()):
            raise InputError(f"{path} exists and is not a file; choose another folder")
        if path.exists() and not ours(path):
            raise InputError(
                f"{path} exists and was not written by make-demo; it would be overwritten: "
                "choose an empty folder"
            )
    if as_zip:
        return
    images = out / "images"
    if images.exists() and (images.is_symlink() or not images.is_dir()):
        raise InputError(f"{images} exists and is not a folder; choose another folder")
    images.mkdir(exist_ok=True)
    foreign = sorted(
        p.name for p in images.iterdir() if not (DEMO_NAME.fullmatch(p.name) and p.is_file())
    )
    if foreign:
        raise InputError(
            f"{images} holds files make-demo did not write (e.g. {foreign[:3]}); they would "
            "be mixed into the sample: choose an empty folder"
        )


def _is_demo_json(path: Path) -> bool:
    """Whether ``path`` is a category JSON written by make_demo (all 1200 of its texts)."""
    try:
        texts = json.loads(path.read_bytes())
    except (OSError, ValueError):
        return False
    return (
        isinstance(texts, dict)
        and sorted(texts) == sorted(str(i) for i in range(1200))
        and all(isinstance(t, str) and _DEMO_TEXT.fullmatch(t) for t in texts.values())
    )


def _is_demo_zip(path: Path) -> bool:
    """Whether ``path`` is a zip written by make_demo (its comment says so)."""
    try:
        with zipfile.ZipFile(path) as zf:
            return zf.comment == DEMO_ZIP_COMMENT
    except (OSError, zipfile.BadZipFile):
        return False


def _write_atomic(path: Path, data: bytes) -> None:
    part = path.with_name(path.name + ".part")
    part.write_bytes(data)
    os.replace(part, path)


def _category_files(cid: int, seed: int, size, quality: int) -> list[tuple[str, bytes]]:
    """The 10 encoded images of one category."""
    proto = prototype(cid, seed)
    files = []
    for j in range(protocol.IMAGES_PER_CATEGORY):
        rng = np.random.default_rng([seed, cid, j])
        side = int(rng.integers(size[0], size[1] + 1))
        files.append(
            (
                f"{cid}_{proto.shape}_{j:02d}_demo.jpg",
                _encode(render(proto, j, seed, side), quality),
            )
        )
    return files


def _encode(img: Image.Image, quality: int) -> bytes:
    import io

    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=quality)
    return buf.getvalue()
