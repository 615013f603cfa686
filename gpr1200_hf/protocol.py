"""The GPR1200 protocol, stated once as data.

Everything that defines *what* GPR1200 is lives here: the category count, the images per
category, the canonical order and the six subsets. The ranking maths (``ranking.py``) and every
reader, exporter and report take these facts from this module.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

NUM_CATEGORIES = 1200
IMAGES_PER_CATEGORY = 10
NUM_IMAGES = NUM_CATEGORIES * IMAGES_PER_CATEGORY

PAPER = "GPR1200: A Benchmark for General-Purpose Content-Based Image Retrieval"
ARXIV_ID = "2111.13122"
CITATION = """@inproceedings{schall2022gpr1200,
  title     = {GPR1200: A Benchmark for General-Purpose Content-Based Image Retrieval},
  author    = {Schall, Konstantin and Barthel, Kai Uwe and Hezel, Nico and Jung, Klaus},
  booktitle = {MultiMedia Modeling (MMM 2022)},
  pages     = {205--216},
  year      = {2022},
  publisher = {Springer},
  eprint    = {2111.13122},
  archivePrefix = {arXiv}
}"""

DATA_URL = "https://visual-computing.com/files/GPR1200/GPR1200.zip"
CATEGORIES_URL = (
    "https://raw.githubusercontent.com/Visual-Computing/GPR1200/"
    "cbdda040967b9196188940e9680227acb8b64c4d/GPR1200_categoryNumber_to_text.json"
)
CATEGORIES_SHA256 = "79781df51c4dabb26127a0245a6e5b5e83f98115511249fcda74321e432ce3aa"
# sha256 of json.dumps(the 1200 official texts in ID order, ensure_ascii=False): how a loaded
# dataset shows it holds the official categories (its category_text column), whatever its form.
CATEGORY_TEXTS_SHA256 = "1b25d32b1face1bfdfbeacd1484872dc686d4c3798ef444065608c37728f1a9c"


def category_texts_digest(texts: list[str]) -> str:
    """The digest that ``CATEGORY_TEXTS_SHA256`` pins, of 1200 texts in category-ID order."""
    import hashlib
    import json

    return hashlib.sha256(json.dumps(list(texts), ensure_ascii=False).encode()).hexdigest()


@dataclass(frozen=True)
class Subset:
    """One of the six GPR1200 sources: a contiguous range of category IDs."""

    key: str
    display_name: str
    source: str
    first_category: int
    last_category: int  # inclusive

    @property
    def category_ids(self) -> range:
        return range(self.first_category, self.last_category + 1)

    def contains(self, category_ids: np.ndarray) -> np.ndarray:
        ids = np.asarray(category_ids)
        return (ids >= self.first_category) & (ids <= self.last_category)


SUBSETS: tuple[Subset, ...] = (
    Subset("landmarks", "GLDv2", "Google Landmarks v2", 0, 199),
    Subset("inat", "iNat", "iNaturalist", 200, 399),
    Subset("sketch", "IN-Sketch", "ImageNet-Sketch", 400, 599),
    Subset("instre", "INSTRE", "INSTRE", 600, 799),
    Subset("sop", "SOP", "Stanford Online Products", 800, 999),
    Subset("faces", "IMDB-Faces", "IMDB-WIKI faces", 1000, 1199),
)
SUBSET_KEYS: tuple[str, ...] = tuple(s.key for s in SUBSETS)
SUBSETS_BY_KEY: dict[str, Subset] = {s.key: s for s in SUBSETS}
# The paper's table order (Land., Sketch, iNat, INST, SOP, Faces).
PAPER_SUBSET_ORDER: tuple[str, ...] = ("landmarks", "sketch", "inat", "instre", "sop", "faces")


def canonical_labels() -> np.ndarray:
    """Category IDs of the 12000 images in canonical order: ``repeat(arange(1200), 10)``.

    Canonical order is ascending category ID, then file name. Any order that groups the
    categories in ascending ID order has these same labels.
    """
    return np.repeat(np.arange(NUM_CATEGORIES, dtype=np.int64), IMAGES_PER_CATEGORY)


def subset_of(category_id: int) -> Subset:
    """The subset a category ID belongs to; ``ValueError`` outside 0-1199."""
    for subset in SUBSETS:
        if subset.first_category <= category_id <= subset.last_category:
            return subset
    raise ValueError(f"category ID {category_id} is outside GPR1200's range 0-{NUM_CATEGORIES - 1}")


def subset_index(category_ids: np.ndarray) -> np.ndarray:
    """Index into ``SUBSETS`` for each category ID (vectorised ``subset_of``)."""
    ids = np.asarray(category_ids)
    if ids.size and (ids.min() < 0 or ids.max() >= NUM_CATEGORIES):
        raise ValueError(f"category IDs must lie in 0-{NUM_CATEGORIES - 1}")
    return ids // (NUM_CATEGORIES // len(SUBSETS))


def parse_file_name(name: str) -> tuple[int, str]:
    """``'{category ID}_{original name}'`` -> (category ID, original name).

    The original name may itself contain underscores; only the first one separates.
    Directories in ``name`` are ignored.
    """
    base = name.replace("\\", "/").rsplit("/", 1)[-1]
    prefix, sep, rest = base.partition("_")
    if not sep or not (prefix.isascii() and prefix.isdigit()) or not rest:
        raise ValueError(
            f"file name {name!r} does not match GPR1200's '{{category ID}}_{{original name}}' "
            "pattern (e.g. '17_abc.jpg')"
        )
    category = int(prefix)
    if category >= NUM_CATEGORIES:
        raise ValueError(
            f"file name {name!r} has category ID {category}, outside 0-{NUM_CATEGORIES - 1}"
        )
    return category, rest


def canonical_order(file_names: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """(permutation into canonical order, category IDs in that order) for GPR1200 file names.

    Canonical order: ascending category ID, then file name.
    """
    keys = []
    for i, name in enumerate(file_names):
        category, _ = parse_file_name(name)
        keys.append((category, name.replace("\\", "/").rsplit("/", 1)[-1], i))
    keys.sort()
    order = np.array([k[2] for k in keys], dtype=np.int64)
    return order, np.array([k[0] for k in keys], dtype=np.int64)
