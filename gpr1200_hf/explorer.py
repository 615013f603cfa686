"""The logic behind the retrieval explorer Space: runs, queries, top-k and their relevance.

A *run* is a folder written by ``gpr1200 evaluate``: results.json, per_query.npz and the cached
embeddings it names. A run copied into a Space by ``gpr1200 export-space explorer`` carries its
embeddings next to results.json and an ``explorer.json`` saying where its images are (a Hub
dataset id, or a copied sample relative to the run folder). Everything here is plain
Python/numpy so it is tested without a browser.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np

from . import protocol
from .compare import PerQuery
from .errors import InputError
from .ranking import prepare

# The weight-free runs the explorer shows when it is given none (built on the demo sample).
DEMO_MODELS = ("baseline:color-hist", "baseline:color-only")
EMBEDDINGS = "embeddings.safetensors"
# In a run copied into a Space: {"data": {"location": ..., "categories": ..., "hub": bool}}.
SPACE_FILE = "explorer.json"


@dataclass
class Run:
    folder: Path
    results: dict
    per_query: PerQuery

    @property
    def name(self) -> str:
        """Model, pooling, dtype and every protocol option that is not the official default."""
        proto = self.results.get("protocol", {})
        parts = [self.results["pooling"], self.results["dtype"]]
        for key, default in (("metric", "cosine"), ("ties", "expected")):
            if proto.get(key, default) != default:
                parts.append(f"{key}={proto[key]}")
        if not proto.get("include_self", True):
            parts.append("query excluded")
        return f"{self.results['model']} ({', '.join(parts)})"

    @property
    def metric(self) -> str:
        return self.results["protocol"]["metric"]

    @property
    def embeddings_path(self) -> Path:
        """The run's embeddings: next to results.json (a Space copy), else the evaluate cache."""
        here = self.folder / EMBEDDINGS
        if here.is_file():
            return here
        return Path(self.results["embeddings_cache"]) / EMBEDDINGS

    @property
    def data(self) -> tuple[str, str | None]:
        """(location, categories) of the run's images, as ``runner.open_data`` takes them."""
        ref_file = self.folder / SPACE_FILE
        if not ref_file.is_file():
            data = self.results["data"]
            return data["location"], data.get("categories")
        ref = json.loads(ref_file.read_text())["data"]
        if ref.get("hub"):
            return ref["location"], None
        cats = ref.get("categories")
        here = str(self.folder)
        return (
            os.path.normpath(os.path.join(here, ref["location"])),
            os.path.normpath(os.path.join(here, cats)) if cats else None,
        )

    @cached_property
    def embeddings(self) -> np.ndarray:
        from safetensors.numpy import load_file

        path = self.embeddings_path
        if not path.is_file():
            raise InputError(f"{self.name}: the run's cached embeddings are gone; rerun evaluate")
        emb = load_file(str(path))["embeddings"]
        if emb.shape[0] != len(self.per_query.ap):
            raise InputError(
                f"{self.name}: {emb.shape[0]} embeddings for {len(self.per_query.ap)} queries; "
                "rerun evaluate"
            )
        return emb

    @cached_property
    def _scoring(self) -> tuple[np.ndarray, np.ndarray | None]:
        return prepare(self.embeddings, self.metric)

    def scores(self, query: int | np.ndarray) -> np.ndarray:
        """Scores of every image against a query (an index, or an embedding vector)."""
        v, offset = self._scoring
        q = v[query] if np.ndim(query) == 0 else np.asarray(query, dtype=v.dtype)
        if offset is None:
            return v @ q
        return 2 * (v @ q) - offset - float(q @ q)


def load_run(folder: str | Path) -> Run:
    folder = Path(folder)
    results = json.loads((folder / "results.json").read_text())
    return Run(folder, results, PerQuery.load(folder))


def discover_runs(root: str | Path) -> list[Run]:
    """Every run folder under ``root`` (sorted by mAP, best first)."""
    runs = [load_run(p.parent) for p in sorted(Path(root).glob("*/results.json"))]
    return sorted(runs, key=lambda r: -r.results["metrics"]["map"])


@dataclass(frozen=True)
class Hit:
    index: int
    rank: int
    score: float
    relevant: bool


def top_k(run: Run, query, k: int, category_id: int) -> list[Hit]:
    """The k best-scoring images for a query (ties in dataset order), marked relevant or not."""
    s = run.scores(query)
    order = np.argsort(-s, kind="stable")[:k]
    cats = run.per_query.category_id
    return [
        Hit(int(i), r + 1, float(s[i]), bool(cats[i] == category_id)) for r, i in enumerate(order)
    ]


def relevant_ranks(run: Run, query: int) -> list[tuple[int, int]]:
    """(dataset index, rank) of each image of the query's category, the query included.

    Rank = 1 + number of images scoring strictly higher (the best place a tie allows).
    """
    s = run.scores(query)
    cats = run.per_query.category_id
    rel = np.flatnonzero(cats == cats[query])
    ranks = [(int(i), int(np.count_nonzero(s > s[i])) + 1) for i in rel]
    return sorted(ranks, key=lambda t: t[1])


def query_choices(
    run: Run, texts: dict[int, str], subset: str = "all", search: str = "", limit: int = 400
) -> list[tuple[str, int]]:
    """(label, index) pairs of queries filtered by subset key and category text."""
    cats = run.per_query.category_id
    names = run.per_query.file_names
    out = []
    needle = search.strip().lower()
    for i, (c, n) in enumerate(zip(cats, names)):
        if subset != "all" and protocol.subset_of(int(c)).key != subset:
            continue
        text = texts.get(int(c), "")
        if needle and needle not in text.lower() and needle not in str(n).lower():
            continue
        out.append((f"#{i} {n} - {text}", i))
        if len(out) >= limit:
            break
    return out
